//! The AWS JSON 1.1 protocol: `POST /` with `X-Amz-Target: Prefix.Operation`, a JSON object in,
//! a JSON object out, errors as `{"__type": ..., "message": ...}`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::query::{self, QueryApi};
use crate::sigv4::{self, AuthError, KeyLookup};

/// Media type of AWS JSON 1.1 requests and responses.
pub const CONTENT_TYPE_JSON_11: &str = "application/x-amz-json-1.1";
/// Default request body limit of an [`AwsEndpoint`].
pub const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;

const REQUEST_ID: &str = "x-amzn-requestid";
const ERROR_TYPE: &str = "x-amzn-errortype";
const TARGET: &str = "x-amz-target";

/// An error as an AWS service puts it on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: StatusCode,
    /// The `__type`, e.g. `RepositoryNotFoundException`.
    pub code: String,
    pub message: String,
}

impl AwsError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A client fault (HTTP 400) with a service-specific code.
    pub fn client(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A server fault (HTTP 500) with a service-specific code (e.g. `ServerException`).
    pub fn server(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
    }

    /// The generic AWS server fault `InternalFailure` (HTTP 500).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::server("InternalFailure", message)
    }

    /// The request body could not be understood (HTTP 400 `SerializationException`).
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::client("SerializationException", message)
    }

    /// `X-Amz-Target` names no operation this endpoint serves (HTTP 400).
    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self::client("UnknownOperationException", message)
    }

    /// The response for this error, tagged with `request_id`.
    pub fn to_response(&self, request_id: &str) -> Response {
        let body = serde_json::json!({ "__type": self.code, "message": self.message });
        let mut response = json_response(self.status, body.to_string().into_bytes(), request_id);
        if let Ok(v) = HeaderValue::from_str(&self.code) {
            response.headers_mut().insert(ERROR_TYPE, v);
        }
        response
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AwsError {}

impl From<AuthError> for AwsError {
    fn from(e: AuthError) -> Self {
        e.aws_error()
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        self.to_response(&new_request_id())
    }
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn json_response(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON_11));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, v);
    }
    response
}

/// Who is calling, where, and under which request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub access_key_id: String,
    /// Region of the signature's credential scope.
    pub region: String,
    pub request_id: String,
    pub account_id: String,
}

/// One AWS JSON 1.1 service (ECR, ECS, ...).
#[async_trait::async_trait]
pub trait JsonApi: Send + Sync {
    /// The `X-Amz-Target` prefix, e.g. `AmazonEC2ContainerRegistry_V20150921`.
    fn target_prefix(&self) -> &'static str;

    /// The SigV4 service name requests must be scoped to (e.g. `ecr`); `None` accepts any.
    fn signing_name(&self) -> Option<&'static str> {
        None
    }

    /// Runs `operation` (the part of `X-Amz-Target` after the prefix) on `input`, a JSON object.
    async fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        input: serde_json::Value,
    ) -> Result<serde_json::Value, AwsError>;
}

/// Serves a set of [`JsonApi`]s (requests with `X-Amz-Target`) and [`QueryApi`]s (form-encoded
/// requests, routed by the SigV4 scope's service) behind SigV4 verification.
pub struct AwsEndpoint {
    apis: Vec<Arc<dyn JsonApi>>,
    query_apis: Vec<Arc<dyn QueryApi>>,
    keys: Arc<dyn KeyLookup>,
    account_id: String,
    max_body: usize,
    clock: fn() -> SystemTime,
}

impl AwsEndpoint {
    pub fn new(
        apis: Vec<Arc<dyn JsonApi>>,
        keys: Arc<dyn KeyLookup>,
        account_id: impl Into<String>,
    ) -> Self {
        Self {
            apis,
            query_apis: Vec::new(),
            keys,
            account_id: account_id.into(),
            max_body: DEFAULT_MAX_BODY,
            clock: SystemTime::now,
        }
    }

    /// Replaces the clock signatures are checked against (tests replay recorded requests).
    pub fn with_clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.clock = clock;
        self
    }

    /// Adds query-protocol APIs (ELBv2), chosen by the signing name of the request's scope.
    pub fn with_query_apis(mut self, apis: Vec<Arc<dyn QueryApi>>) -> Self {
        self.query_apis.extend(apis);
        self
    }

    /// Sets the largest request body accepted (larger ones get HTTP 413).
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    /// A router that serves every path and method (AWS clients POST to `/`); serve it alone.
    pub fn router(self: Arc<Self>) -> Router {
        let fallback = Arc::clone(&self);
        self.root_router()
            .fallback(move |req: Request| async move { fallback.handle(req).await })
    }

    /// A router that serves only `/`, without a fallback, to merge into another router.
    pub fn root_router(self: Arc<Self>) -> Router {
        Router::new().route(
            "/",
            any(move |req: Request| async move { self.handle(req).await }),
        )
    }

    /// Whether `parts` is a query-protocol request: no `X-Amz-Target`, and a form-encoded POST
    /// or a GET with a query string naming an `Action`.
    fn is_query(&self, parts: &http::request::Parts) -> bool {
        if self.query_apis.is_empty() || parts.headers.contains_key(TARGET) {
            return false;
        }
        if parts.method == http::Method::POST {
            return parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.trim_start()
                        .to_ascii_lowercase()
                        .starts_with(query::CONTENT_TYPE_FORM)
                });
        }
        parts.method == http::Method::GET
            && parts
                .uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p.starts_with("Action=")))
    }

    /// The query API a request is probably for, from its credential scope (before the
    /// signature is checked: only to pick the error document's namespace).
    fn guess_query_api(&self, parts: &http::request::Parts) -> Option<&Arc<dyn QueryApi>> {
        let from_header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.split("Credential=").nth(1))
            .map(str::to_string);
        let from_query = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|p| p.strip_prefix("X-Amz-Credential="))
                .map(|c| {
                    percent_encoding::percent_decode_str(c)
                        .decode_utf8_lossy()
                        .into_owned()
                })
        });
        let service = from_header
            .or(from_query)
            .and_then(|c| c.split('/').nth(3).map(str::to_string));
        service
            .and_then(|s| self.query_apis.iter().find(|a| a.signing_name() == s))
            .or_else(|| self.query_apis.first())
    }

    /// Handles one query-protocol request: body, signature, API by scope, Action, call, XML.
    async fn handle_query(&self, parts: http::request::Parts, body: Body) -> Response {
        let started = Instant::now();
        let request_id = new_request_id();
        let xmlns = self
            .guess_query_api(&parts)
            .map(|a| a.xmlns())
            .unwrap_or_default();
        let mut action = String::new();
        let result = match self.read_body(&parts.headers, body).await {
            Ok(body) => {
                self.dispatch_query(&parts, &body, &request_id, &mut action)
                    .await
            }
            Err(e) => Err(e),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok((xmlns, result)) => {
                tracing::info!(%request_id, action = %action, status = 200, latency_ms, "aws call");
                query::success_response(&action, &result, xmlns, &request_id)
            }
            Err(err) => {
                if err.status.is_server_error() {
                    tracing::error!(%request_id, action = %action, status = err.status.as_u16(),
                        code = %err.code, message = %err.message, latency_ms, "aws call failed");
                } else {
                    tracing::info!(%request_id, action = %action, status = err.status.as_u16(),
                        code = %err.code, latency_ms, "aws call rejected");
                }
                query::error_response(&err, xmlns, &request_id)
            }
        }
    }

    async fn dispatch_query(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        request_id: &str,
        action_out: &mut String,
    ) -> Result<(&'static str, String), AwsError> {
        let verified = sigv4::verify(
            &parts.method,
            &parts.uri,
            &parts.headers,
            body,
            self.keys.as_ref(),
            (self.clock)(),
        )?;
        let api = self
            .query_apis
            .iter()
            .find(|a| a.signing_name() == verified.service)
            .ok_or_else(|| {
                AwsError::client(
                    "InvalidAction",
                    format!("No query API is served for service '{}'", verified.service),
                )
            })?;
        let params = if parts.method == http::Method::GET {
            query::Params::parse(parts.uri.query().unwrap_or_default().as_bytes())?
        } else {
            query::Params::parse(body)?
        };
        let action = params
            .action()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| AwsError::client("InvalidAction", "Missing Action parameter"))?;
        *action_out = action.to_string();
        if let Some(v) = params.version() {
            if v != api.version() {
                return Err(AwsError::client(
                    "InvalidAction",
                    format!(
                        "Version {v} is not supported; this API is version {}",
                        api.version()
                    ),
                ));
            }
        }
        let ctx = RequestContext {
            access_key_id: verified.access_key_id,
            region: verified.region,
            request_id: request_id.to_string(),
            account_id: self.account_id.clone(),
        };
        let out = api.call(&ctx, action, &params).await?;
        Ok((api.xmlns(), out))
    }

    /// Handles one request end to end: body, signature, target, JSON, call, response.
    pub async fn handle(&self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        if self.is_query(&parts) {
            return self.handle_query(parts, body).await;
        }
        let req = Request::from_parts(parts, body);
        let started = Instant::now();
        let request_id = new_request_id();
        let (parts, body) = req.into_parts();
        let target = parts
            .headers
            .get(TARGET)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();

        let result = match self.read_body(&parts.headers, body).await {
            Ok(body) => self.dispatch(&parts, &body, &request_id, &target).await,
            Err(e) => Err(e),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(output) => {
                let body = match serde_json::to_vec(&output) {
                    Ok(b) => b,
                    Err(e) => {
                        let err = AwsError::internal(format!("cannot encode response: {e}"));
                        return err.to_response(&request_id);
                    }
                };
                tracing::info!(%request_id, target = %target, status = 200, latency_ms, "aws call");
                json_response(StatusCode::OK, body, &request_id)
            }
            Err(err) => {
                if err.status.is_server_error() {
                    tracing::error!(%request_id, target = %target, status = err.status.as_u16(),
                        code = %err.code, message = %err.message, latency_ms, "aws call failed");
                } else {
                    tracing::info!(%request_id, target = %target, status = err.status.as_u16(),
                        code = %err.code, latency_ms, "aws call rejected");
                }
                err.to_response(&request_id)
            }
        }
    }

    async fn read_body(&self, headers: &http::HeaderMap, body: Body) -> Result<Bytes, AwsError> {
        let too_large = || {
            AwsError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!(
                    "Request body is larger than the limit of {} bytes",
                    self.max_body
                ),
            )
        };
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large());
        }
        match Limited::new(body, self.max_body).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
            Err(e) => Err(AwsError::serialization(format!(
                "Could not read the request body: {e}"
            ))),
        }
    }

    async fn dispatch(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        request_id: &str,
        target: &str,
    ) -> Result<serde_json::Value, AwsError> {
        let verified = sigv4::verify(
            &parts.method,
            &parts.uri,
            &parts.headers,
            body,
            self.keys.as_ref(),
            (self.clock)(),
        )?;

        let (prefix, operation) = target.rsplit_once('.').unwrap_or(("", target));
        let api = self
            .apis
            .iter()
            .find(|api| !prefix.is_empty() && api.target_prefix() == prefix)
            .ok_or_else(|| {
                AwsError::unknown_operation(if target.is_empty() {
                    "Missing X-Amz-Target header".to_string()
                } else {
                    format!("Unknown operation {target}")
                })
            })?;
        if operation.is_empty() {
            return Err(AwsError::unknown_operation(format!(
                "Unknown operation {target}"
            )));
        }
        if let Some(name) = api.signing_name() {
            if verified.service != name {
                return Err(AuthError::InvalidSignature(format!(
                    "Credential should be scoped to correct service: '{name}'. "
                ))
                .into());
            }
        }

        let input = parse_input(body)?;
        let ctx = RequestContext {
            access_key_id: verified.access_key_id,
            region: verified.region,
            request_id: request_id.to_string(),
            account_id: self.account_id.clone(),
        };
        api.call(&ctx, operation, input).await
    }
}

/// Parses a request body: empty means `{}`, otherwise it must be a JSON object.
pub fn parse_input(body: &[u8]) -> Result<serde_json::Value, AwsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err(AwsError::serialization(
            "Start of structure or map found where not expected",
        )),
        Err(e) => Err(AwsError::serialization(format!(
            "Invalid JSON in request body: {e}"
        ))),
    }
}

/// An AWS JSON timestamp: epoch seconds as a number with millisecond precision.
pub fn epoch_seconds(t: SystemTime) -> serde_json::Value {
    let millis = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as f64,
        Err(e) => -(e.duration().as_millis() as f64),
    };
    serde_json::Value::from(millis / 1000.0)
}

/// Reads an AWS JSON timestamp (epoch seconds, integer or fractional).
pub fn parse_epoch_seconds(v: &serde_json::Value) -> Option<SystemTime> {
    let secs = v.as_f64()?;
    if !secs.is_finite() {
        return None;
    }
    let d = Duration::try_from_secs_f64(secs.abs()).ok()?;
    if secs >= 0.0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_has_millisecond_precision() {
        let t = UNIX_EPOCH + Duration::from_micros(1_715_938_215_123_456);
        assert_eq!(epoch_seconds(t), serde_json::json!(1_715_938_215.123));
        assert_eq!(epoch_seconds(UNIX_EPOCH), serde_json::json!(0.0));
        let back = parse_epoch_seconds(&epoch_seconds(t)).expect("parse");
        let diff = back
            .duration_since(UNIX_EPOCH + Duration::from_millis(1_715_938_215_123))
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_micros(1));
        assert_eq!(
            parse_epoch_seconds(&serde_json::json!(10)),
            Some(UNIX_EPOCH + Duration::from_secs(10))
        );
        assert_eq!(parse_epoch_seconds(&serde_json::json!("10")), None);
    }

    #[test]
    fn input_parsing() {
        assert_eq!(parse_input(b"").expect("empty"), serde_json::json!({}));
        assert_eq!(parse_input(b" \n").expect("blank"), serde_json::json!({}));
        assert_eq!(
            parse_input(br#"{"a": 1}"#).expect("object"),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            parse_input(b"[1]").expect_err("array").code,
            "SerializationException"
        );
        assert_eq!(
            parse_input(b"{").expect_err("truncated").code,
            "SerializationException"
        );
    }

    #[tokio::test]
    async fn error_response_shape() {
        let err = AwsError::client("RepositoryNotFoundException", "no such repository");
        let response = err.to_response("req-1");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let h = response.headers();
        assert_eq!(h[CONTENT_TYPE], CONTENT_TYPE_JSON_11);
        assert_eq!(h["x-amzn-RequestId"], "req-1");
        assert_eq!(h["x-amzn-ErrorType"], "RepositoryNotFoundException");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"__type": "RepositoryNotFoundException", "message": "no such repository"})
        );
        let generated = AwsError::internal("boom").into_response();
        assert_eq!(generated.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = generated.headers()["x-amzn-requestid"]
            .to_str()
            .expect("ascii");
        assert!(uuid::Uuid::parse_str(id).is_ok());
    }
}
