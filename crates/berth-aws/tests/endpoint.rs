//! The AWS JSON 1.1 endpoint end to end through axum, with a fake service behind it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::Router;
use berth_aws::json::{AwsEndpoint, AwsError, JsonApi, RequestContext};
use berth_aws::sigv4::{sign, SigningParams};
use berth_aws::StaticKeys;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const ACCOUNT: &str = "123456789012";
const PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";

/// Echoes what it was called with; `Fail` returns a service error.
struct FakeEcr;

#[async_trait::async_trait]
impl JsonApi for FakeEcr {
    fn target_prefix(&self) -> &'static str {
        PREFIX
    }

    fn signing_name(&self) -> Option<&'static str> {
        Some("ecr")
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        input: Value,
    ) -> Result<Value, AwsError> {
        if operation == "Fail" {
            return Err(AwsError::client(
                "RepositoryNotFoundException",
                "The repository with name 'x' does not exist",
            ));
        }
        Ok(json!({
            "operation": operation,
            "input": input,
            "accessKeyId": ctx.access_key_id,
            "region": ctx.region,
            "accountId": ctx.account_id,
            "requestId": ctx.request_id,
        }))
    }
}

fn keys() -> Arc<StaticKeys> {
    let mut keys = StaticKeys::new();
    keys.0.insert(AKID.into(), SECRET.into());
    Arc::new(keys)
}

fn router() -> Router {
    Arc::new(AwsEndpoint::new(vec![Arc::new(FakeEcr)], keys(), ACCOUNT).with_max_body(1024))
        .router()
}

struct Call<'a> {
    target: Option<&'a str>,
    body: &'a [u8],
    secret: &'a str,
    access_key_id: &'a str,
    service: &'a str,
    signed: bool,
}

impl Default for Call<'_> {
    fn default() -> Self {
        Call {
            target: Some("AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"),
            body: br#"{"repositoryNames":["app"]}"#,
            secret: SECRET,
            access_key_id: AKID,
            service: "ecr",
            signed: true,
        }
    }
}

fn request(call: Call<'_>) -> Request<Body> {
    let uri: http::Uri = "/".parse().expect("uri");
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_static("localhost:5000"),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Some(target) = call.target {
        headers.insert(
            "x-amz-target",
            HeaderValue::from_str(target).expect("target"),
        );
    }
    if call.signed {
        sign(
            &Method::POST,
            &uri,
            &mut headers,
            call.body,
            &SigningParams {
                access_key_id: call.access_key_id,
                secret_access_key: call.secret,
                region: "us-west-2",
                service: call.service,
                time: SystemTime::now(),
            },
        )
        .expect("sign");
    }
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .body(Body::from(call.body.to_vec()))
        .expect("request");
    *req.headers_mut() = headers;
    req
}

async fn send(router: Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = router.oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).expect("json body");
    (status, headers, body)
}

async fn expect_error(req: Request<Body>, status: StatusCode, code: &str) -> Value {
    let (got, headers, body) = send(router(), req).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["__type"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(headers["x-amzn-errortype"], code);
    assert_eq!(headers["content-type"], "application/x-amz-json-1.1");
    assert!(headers.contains_key("x-amzn-requestid"));
    body
}

#[tokio::test]
async fn signed_request_reaches_the_api() {
    let (status, headers, body) = send(router(), request(Call::default())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/x-amz-json-1.1");
    let request_id = headers["x-amzn-requestid"].to_str().expect("ascii");
    assert_eq!(body["requestId"], request_id);
    assert_eq!(body["operation"], "DescribeRepositories");
    assert_eq!(body["input"], json!({"repositoryNames": ["app"]}));
    assert_eq!(body["accessKeyId"], AKID);
    assert_eq!(body["region"], "us-west-2");
    assert_eq!(body["accountId"], ACCOUNT);
    assert!(!headers.contains_key("x-amzn-errortype"));
}

#[tokio::test]
async fn empty_body_is_an_empty_object() {
    let (status, _, body) = send(
        router(),
        request(Call {
            body: b"",
            ..Call::default()
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["input"], json!({}));
}

#[tokio::test]
async fn api_errors_pass_through() {
    let body = expect_error(
        request(Call {
            target: Some("AmazonEC2ContainerRegistry_V20150921.Fail"),
            ..Call::default()
        }),
        StatusCode::BAD_REQUEST,
        "RepositoryNotFoundException",
    )
    .await;
    assert_eq!(
        body["message"],
        "The repository with name 'x' does not exist"
    );
}

#[tokio::test]
async fn unsigned_request_is_rejected() {
    let body = expect_error(
        request(Call {
            signed: false,
            ..Call::default()
        }),
        StatusCode::FORBIDDEN,
        "MissingAuthenticationTokenException",
    )
    .await;
    assert_eq!(body["message"], "Missing Authentication Token");
}

#[tokio::test]
async fn wrong_secret_is_rejected() {
    expect_error(
        request(Call {
            secret: "wrong",
            ..Call::default()
        }),
        StatusCode::FORBIDDEN,
        "InvalidSignatureException",
    )
    .await;
}

#[tokio::test]
async fn tampered_body_is_rejected() {
    let mut req = request(Call::default());
    *req.body_mut() = Body::from(r#"{"repositoryNames":["evil"]}"#);
    expect_error(req, StatusCode::FORBIDDEN, "InvalidSignatureException").await;
}

#[tokio::test]
async fn unknown_access_key_is_rejected() {
    let body = expect_error(
        request(Call {
            access_key_id: "AKIAUNKNOWNUNKNOWN00",
            ..Call::default()
        }),
        StatusCode::BAD_REQUEST,
        "UnrecognizedClientException",
    )
    .await;
    assert_eq!(
        body["message"],
        "The security token included in the request is invalid."
    );
}

#[tokio::test]
async fn wrong_service_scope_is_rejected() {
    expect_error(
        request(Call {
            service: "ecs",
            ..Call::default()
        }),
        StatusCode::FORBIDDEN,
        "InvalidSignatureException",
    )
    .await;
}

#[tokio::test]
async fn unknown_or_missing_target_is_rejected() {
    for target in [
        Some("AmazonEC2ContainerServiceV20141113.ListClusters"),
        Some("NoDotAtAll"),
        Some("AmazonEC2ContainerRegistry_V20150921."),
        None,
    ] {
        expect_error(
            request(Call {
                target,
                ..Call::default()
            }),
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
        )
        .await;
    }
}

#[tokio::test]
async fn invalid_json_is_rejected() {
    for body in [&b"{not json"[..], b"[1,2]", b"\"s\""] {
        expect_error(
            request(Call {
                body,
                ..Call::default()
            }),
            StatusCode::BAD_REQUEST,
            "SerializationException",
        )
        .await;
    }
}

#[tokio::test]
async fn oversized_body_is_rejected() {
    let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(2000));
    expect_error(
        request(Call {
            body: big.as_bytes(),
            ..Call::default()
        }),
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
    )
    .await;
    // Also when no Content-Length announces it (streamed body).
    let mut req = request(Call {
        body: big.as_bytes(),
        ..Call::default()
    });
    req.headers_mut().remove(http::header::CONTENT_LENGTH);
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .as_bytes()
        .chunks(100)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    *req.body_mut() = Body::from_stream(futures::stream::iter(chunks));
    expect_error(req, StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge").await;
}

fn botocore_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_715_938_215 + 5)
}

/// The exact request botocore 1.43 sent for
/// `ecr.describe_repositories(repositoryNames=['app', 'web/frontend'])` to
/// `http://127.0.0.1:4566` at 2024-05-17T09:30:15Z (see `sigv4::tests` for how it was made).
#[tokio::test]
async fn recorded_botocore_request_is_served() {
    let endpoint =
        AwsEndpoint::new(vec![Arc::new(FakeEcr)], keys(), ACCOUNT).with_clock(botocore_now);
    let body = r#"{"repositoryNames": ["app", "web/frontend"]}"#;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/")
        .header("Host", "127.0.0.1:4566")
        .header("Accept-Encoding", "identity")
        .header("X-Amz-Target", "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("User-Agent", "Botocore/1.43.11 ua/2.1 os/linux#6.18.44-fc-v782 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/D,Z,N,b,e cfg/retry-mode#legacy")
        .header("X-Amz-Date", "20240517T093015Z")
        .header("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240517/us-east-1/ecr/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=000bf1083c222ba4cacaf1bcabe4eff0881ca2bbaa5cc5e880765b6de1b5d96c")
        .header("amz-sdk-invocation-id", "6f3bd32e-7529-407d-a715-32f0e8a273c9")
        .header("amz-sdk-request", "attempt=1")
        .header("Content-Length", "44")
        .body(Body::from(body))
        .expect("request");
    let (status, _, out) = send(Arc::new(endpoint).router(), req).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        out["input"],
        json!({"repositoryNames": ["app", "web/frontend"]})
    );
    assert_eq!(out["region"], "us-east-1");
}

#[tokio::test]
async fn root_router_merges_with_a_router_that_has_a_fallback() {
    let endpoint = Arc::new(AwsEndpoint::new(vec![Arc::new(FakeEcr)], keys(), ACCOUNT));
    let other = Router::new()
        .route("/v2/", axum::routing::get(|| async { "registry" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "nope") });
    let app = other.merge(endpoint.root_router());

    let (status, _, body) = send(app.clone(), request(Call::default())).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let response = app
        .oneshot(Request::get("/v2/").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
}
