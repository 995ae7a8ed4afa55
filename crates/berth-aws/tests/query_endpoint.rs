//! The query protocol through `AwsEndpoint` and axum, with a fake query service next to a fake
//! JSON service: routing by content type and scope, XML documents, auth errors as XML.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::Router;
use berth_aws::json::{AwsEndpoint, AwsError, JsonApi, RequestContext};
use berth_aws::query::{Params, QueryApi, XmlWriter};
use berth_aws::sigv4::{sign, SigningParams};
use berth_aws::StaticKeys;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const XMLNS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

struct FakeElb;

#[async_trait::async_trait]
impl QueryApi for FakeElb {
    fn version(&self) -> &'static str {
        "2015-12-01"
    }
    fn xmlns(&self) -> &'static str {
        XMLNS
    }
    fn signing_name(&self) -> &'static str {
        "elasticloadbalancing"
    }
    async fn call(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &Params,
    ) -> Result<String, AwsError> {
        if action != "Echo" {
            return Err(AwsError::client(
                "InvalidAction",
                format!("Could not find operation {action}"),
            ));
        }
        let names = params.root().str_list("Names")?.unwrap_or_default();
        let mut w = XmlWriter::new();
        w.elem("Region", &ctx.region).str_list("Names", &names);
        Ok(w.finish())
    }
}

struct FakeJson;

#[async_trait::async_trait]
impl JsonApi for FakeJson {
    fn target_prefix(&self) -> &'static str {
        "Fake_V1"
    }
    async fn call(&self, _: &RequestContext, op: &str, _: Value) -> Result<Value, AwsError> {
        Ok(json!({ "op": op }))
    }
}

fn router() -> Router {
    let mut keys = StaticKeys::new();
    keys.0.insert(AKID.into(), SECRET.into());
    Arc::new(
        AwsEndpoint::new(vec![Arc::new(FakeJson)], Arc::new(keys), "123456789012")
            .with_query_apis(vec![Arc::new(FakeElb)]),
    )
    .router()
}

async fn send(
    method: Method,
    uri: &str,
    body: &str,
    service: Option<&str>,
    extra: &[(&str, &str)],
) -> (StatusCode, String, HeaderMap) {
    let uri: Uri = uri.parse().expect("uri");
    let mut headers = HeaderMap::new();
    if method == Method::POST && !extra.iter().any(|(k, _)| *k == "x-amz-target") {
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
    }
    for (k, v) in extra {
        headers.insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("header"),
        );
    }
    if let Some(service) = service {
        sign(
            &method,
            &uri,
            &mut headers,
            body.as_bytes(),
            &SigningParams {
                access_key_id: AKID,
                secret_access_key: SECRET,
                region: "eu-west-3",
                service,
                time: SystemTime::now(),
            },
        )
        .expect("sign");
    }
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    let resp = router()
        .oneshot(req.body(Body::from(body.to_string())).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let h = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), h)
}

const ELB: Option<&str> = Some("elasticloadbalancing");

#[tokio::test]
async fn signed_form_post_gets_an_xml_result() {
    let (status, body, h) = send(
        Method::POST,
        "http://127.0.0.1:7000/",
        "Action=Echo&Version=2015-12-01&Names.member.1=a%26b&Names.member.2=c",
        ELB,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h["content-type"], "text/xml");
    assert!(h.contains_key("x-amzn-requestid"));
    assert!(
        body.starts_with(&format!(
            "<EchoResponse xmlns=\"{XMLNS}\"><EchoResult><Region>eu-west-3</Region>\
             <Names><member>a&amp;b</member><member>c</member></Names></EchoResult>\
             <ResponseMetadata><RequestId>"
        )),
        "{body}"
    );
}

#[tokio::test]
async fn get_with_a_query_string_works_too() {
    let (status, body, _) = send(
        Method::GET,
        "http://127.0.0.1:7000/?Action=Echo&Version=2015-12-01&Names.member.1=x",
        "",
        ELB,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<Names><member>x</member></Names>"), "{body}");
}

#[tokio::test]
async fn errors_are_xml() {
    // Unsigned.
    let (status, body, _) = send(
        Method::POST,
        "http://h/",
        "Action=Echo&Version=2015-12-01",
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.starts_with(&format!("<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>Sender</Type><Code>MissingAuthenticationToken</Code>")),
        "{body}"
    );
    // Missing and unknown actions, wrong version, malformed lists.
    for (form, code) in [
        ("Version=2015-12-01", "InvalidAction"),
        ("Action=Nope&Version=2015-12-01", "InvalidAction"),
        ("Action=Echo&Version=2010-01-01", "InvalidAction"),
        ("Action=Echo&Names.member.2=x", "ValidationError"),
        ("Action=Echo&Action=Echo", "ValidationError"),
    ] {
        let (status, body, _) = send(Method::POST, "http://h/", form, ELB, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form}: {body}");
        assert!(
            body.contains(&format!("<Code>{code}</Code>")),
            "{form}: {body}"
        );
        assert!(body.contains("<RequestId>"), "{body}");
    }
    // Signed for a service that has no query API here.
    let (status, body, _) = send(Method::POST, "http://h/", "Action=Echo", Some("ecs"), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("<Code>InvalidAction</Code>"), "{body}");
    // A bad signature.
    let (status, body, _) = send(
        Method::POST,
        "http://h/",
        "Action=Echo",
        None,
        &[("x-amz-date", "20240101T000000Z"), ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/elasticloadbalancing/aws4_request, SignedHeaders=host, Signature=00")],
    )
    .await;
    assert!(status.is_client_error(), "{body}");
    assert!(body.starts_with("<ErrorResponse"), "{body}");
}

#[tokio::test]
async fn json_requests_still_go_to_json_apis() {
    let (status, body, h) = send(
        Method::POST,
        "http://h/",
        "{}",
        Some("fake"),
        &[
            ("x-amz-target", "Fake_V1.Op"),
            ("content-type", "application/x-amz-json-1.1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h["content-type"], "application/x-amz-json-1.1");
    assert_eq!(body, r#"{"op":"Op"}"#);
}
