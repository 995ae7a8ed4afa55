//! `JsonClient` against a real `AwsEndpoint` on a loopback port: signatures verified by our
//! SigV4 verifier, AWS errors typed, transport failures told apart.

use std::sync::Arc;
use std::time::Duration;

use berth_aws::client::{ClientError, JsonClient};
use berth_aws::json::{AwsEndpoint, AwsError, JsonApi, RequestContext};
use berth_aws::{Credentials, StaticKeys};
use serde_json::{json, Value};

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const PREFIX: &str = "AmazonEC2ContainerServiceV20141113";

struct FakeEcs;

#[async_trait::async_trait]
impl JsonApi for FakeEcs {
    fn target_prefix(&self) -> &'static str {
        PREFIX
    }

    fn signing_name(&self) -> Option<&'static str> {
        Some("ecs")
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        input: Value,
    ) -> Result<Value, AwsError> {
        match operation {
            "Fail" => Err(AwsError::client(
                "InvalidParameterException",
                "The referenced task was not found.",
            )),
            "Boom" => Err(AwsError::server("ServerException", "boom")),
            "Slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(json!({}))
            }
            _ => Ok(json!({
                "operation": operation,
                "input": input,
                "accessKeyId": ctx.access_key_id,
                "region": ctx.region,
            })),
        }
    }
}

async fn serve() -> String {
    let mut keys = StaticKeys::new();
    keys.0.insert(AKID.into(), SECRET.into());
    let endpoint = Arc::new(AwsEndpoint::new(
        vec![Arc::new(FakeEcs)],
        Arc::new(keys),
        "000000000000",
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, endpoint.router()).await;
    });
    format!("http://{addr}")
}

fn creds(secret: &str) -> Credentials {
    Credentials {
        access_key_id: AKID.into(),
        secret_access_key: secret.into(),
    }
}

#[tokio::test]
async fn signed_calls_errors_and_timeouts() {
    let url = serve().await;
    let client = JsonClient::new(&url, creds(SECRET), "eu-west-3", "ecs").expect("client");

    let out = client
        .call(PREFIX, "ListClusters", &json!({"maxResults": 2}))
        .await
        .expect("call");
    assert_eq!(out["operation"], "ListClusters");
    assert_eq!(out["input"]["maxResults"], 2);
    assert_eq!(out["accessKeyId"], AKID);
    assert_eq!(out["region"], "eu-west-3");

    let err = client
        .call(PREFIX, "Fail", &json!({}))
        .await
        .expect_err("fails");
    match &err {
        ClientError::Aws {
            status,
            code,
            message,
            request_id,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(code, "InvalidParameterException");
            assert_eq!(message, "The referenced task was not found.");
            assert!(request_id.is_some());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!err.is_unreachable());

    let err = client
        .call(PREFIX, "Boom", &json!({}))
        .await
        .expect_err("fails");
    assert_eq!(err.code(), Some("ServerException"));
    assert!(err.is_retryable());

    // Wrong secret: the verifier's error, typed.
    let bad = JsonClient::new(&url, creds("nope"), "us-east-1", "ecs").expect("client");
    let err = bad
        .call(PREFIX, "ListClusters", &json!({}))
        .await
        .expect_err("bad signature");
    assert_eq!(err.code(), Some("InvalidSignatureException"), "{err:?}");

    // Scoped to the wrong service.
    let err = client
        .for_service("ecr")
        .call(PREFIX, "ListClusters", &json!({}))
        .await
        .expect_err("wrong service");
    assert_eq!(err.code(), Some("InvalidSignatureException"), "{err:?}");

    let err = client
        .call_with_timeout(PREFIX, "Slow", &json!({}), Duration::from_millis(300))
        .await
        .expect_err("times out");
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(err.is_unreachable());
}

#[tokio::test]
async fn connection_refused_is_not_an_aws_error() {
    // Bind and drop to get a port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let client = JsonClient::new(
        &format!("http://127.0.0.1:{port}"),
        creds(SECRET),
        "us-east-1",
        "ecs",
    )
    .expect("client");
    let err = client
        .call(PREFIX, "ListClusters", &json!({}))
        .await
        .expect_err("refused");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err.is_unreachable() && err.is_retryable());
    assert_eq!(err.code(), None);
}
