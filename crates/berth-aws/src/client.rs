//! A small AWS JSON 1.1 client: SigV4-signed `POST`s with `X-Amz-Target`, for the agent (and
//! anything else that calls Berth's own AWS endpoints).
//!
//! An AWS error response (`{"__type", "message"}`, `x-amzn-ErrorType`) becomes
//! [`ClientError::Aws`] with its code and message; failures to connect, timeouts and broken
//! responses are their own variants, so callers can tell "the service said no" from "the
//! service could not be reached".

use std::time::{Duration, SystemTime};

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Uri};
use serde_json::Value;

use crate::credentials::Credentials;
use crate::json::CONTENT_TYPE_JSON_11;
use crate::sigv4::{sign, SigningParams};

/// Default per-request timeout (connect + response).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read.
const MAX_RESPONSE: usize = 16 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an AWS error.
    #[error("{code}: {message}")]
    Aws {
        /// HTTP status of the response.
        status: u16,
        /// The error's `__type` without namespace (`ClientException`).
        code: String,
        message: String,
        request_id: Option<String>,
    },
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {url} timed out")]
    Timeout { url: String },
    #[error("request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A response that is not AWS JSON (a proxy's error page, a truncated body, ...).
    #[error("invalid response from {url} (HTTP {status}): {reason}")]
    InvalidResponse {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("invalid endpoint url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot sign the request")]
    Sign(#[source] http::header::InvalidHeaderValue),
    #[error("cannot create the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl ClientError {
    /// The AWS error code, when the service answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Aws { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The AWS error message, when the service answered with one.
    pub fn aws_message(&self) -> Option<&str> {
        match self {
            ClientError::Aws { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The service could not be reached or did not answer in time (as opposed to answering).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Timeout { .. } | ClientError::Http { .. }
        )
    }

    /// Whether the same call may succeed later: transport failures, server faults and
    /// throttling. Client faults (bad input, unknown resources, bad signatures) are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::Http { .. }
            | ClientError::InvalidResponse { .. } => true,
            ClientError::Aws { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code.as_str(),
                        "ThrottlingException"
                            | "Throttling"
                            | "TooManyRequestsException"
                            | "RequestLimitExceeded"
                            | "ServiceUnavailable"
                            | "RequestTimeout"
                    )
            }
            ClientError::InvalidUrl { .. } | ClientError::Sign(_) | ClientError::Client(_) => false,
        }
    }
}

/// An AWS JSON 1.1 client for one endpoint, one key and one signing service.
#[derive(Clone)]
pub struct JsonClient {
    http: reqwest::Client,
    url: String,
    uri: Uri,
    credentials: Credentials,
    region: String,
    service: String,
    timeout: Duration,
}

impl std::fmt::Debug for JsonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonClient")
            .field("url", &self.url)
            .field("access_key_id", &self.credentials.access_key_id)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish()
    }
}

impl JsonClient {
    /// A client of the endpoint `url` (`http://host:port` or with a path), signing as
    /// `service` in `region` with `credentials`.
    pub fn new(
        url: &str,
        credentials: Credentials,
        region: impl Into<String>,
        service: impl Into<String>,
    ) -> Result<JsonClient, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let mut normalized = url.trim().to_string();
        let uri: Uri = normalized
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(invalid("the scheme must be http or https")),
        }
        if uri.authority().is_none() {
            return Err(invalid("no host"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query is not allowed"));
        }
        if uri.path().is_empty() || (uri.path() == "/" && !normalized.ends_with('/')) {
            normalized.push('/');
        }
        let uri: Uri = normalized
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Client)?;
        Ok(JsonClient {
            http,
            url: normalized,
            uri,
            credentials,
            region: region.into(),
            service: service.into(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client (sharing its connections) signing for another service.
    pub fn for_service(&self, service: impl Into<String>) -> JsonClient {
        JsonClient {
            service: service.into(),
            ..self.clone()
        }
    }

    /// Sets the default per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> JsonClient {
        self.timeout = timeout;
        self
    }

    /// The endpoint URL requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The signing service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Calls `prefix.operation` with `input` (a JSON object) under the default timeout.
    pub async fn call(
        &self,
        prefix: &str,
        operation: &str,
        input: &Value,
    ) -> Result<Value, ClientError> {
        self.call_with_timeout(prefix, operation, input, self.timeout)
            .await
    }

    /// Calls `prefix.operation` with `input`, giving up after `timeout` (for long polls).
    pub async fn call_with_timeout(
        &self,
        prefix: &str,
        operation: &str,
        input: &Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let body = serde_json::to_vec(input).map_err(|e| ClientError::InvalidResponse {
            url: self.url.clone(),
            status: 0,
            reason: format!("cannot encode the request: {e}"),
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON_11));
        headers.insert(
            "x-amz-target",
            HeaderValue::from_str(&format!("{prefix}.{operation}")).map_err(ClientError::Sign)?,
        );
        let params = SigningParams {
            access_key_id: &self.credentials.access_key_id,
            secret_access_key: &self.credentials.secret_access_key,
            region: &self.region,
            service: &self.service,
            time: SystemTime::now(),
        };
        sign(&Method::POST, &self.uri, &mut headers, &body, &params).map_err(ClientError::Sign)?;
        let request = self
            .http
            .post(&self.url)
            .headers(headers)
            .body(body)
            .timeout(timeout);
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let error_type = header_str(response.headers(), "x-amzn-errortype");
        let request_id = header_str(response.headers(), "x-amzn-requestid");
        let bytes = read_body(response).await.map_err(|e| match e {
            BodyError::Http(e) => self.transport(e),
            BodyError::TooLarge => ClientError::InvalidResponse {
                url: self.url.clone(),
                status,
                reason: format!("the response is larger than {MAX_RESPONSE} bytes"),
            },
        })?;
        let parsed: Option<Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
            Some(Value::Object(serde_json::Map::new()))
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        if (200..300).contains(&status) {
            return match parsed {
                Some(v @ Value::Object(_)) => Ok(v),
                _ => Err(ClientError::InvalidResponse {
                    url: self.url.clone(),
                    status,
                    reason: "the body is not a JSON object".into(),
                }),
            };
        }
        let body_type = parsed
            .as_ref()
            .and_then(|v| v.get("__type").or_else(|| v.get("code")))
            .and_then(Value::as_str)
            .map(str::to_string);
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("message").or_else(|| v.get("Message")))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match error_type.or(body_type) {
            Some(code) => Err(ClientError::Aws {
                status,
                code: error_code(&code),
                message,
                request_id,
            }),
            None => Err(ClientError::InvalidResponse {
                url: self.url.clone(),
                status,
                reason: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            }),
        }
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        let url = self.url.clone();
        if e.is_timeout() {
            ClientError::Timeout { url }
        } else if e.is_connect() {
            ClientError::Connect { url, source: e }
        } else {
            ClientError::Http { url, source: e }
        }
    }
}

fn header_str(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

enum BodyError {
    Http(reqwest::Error),
    TooLarge,
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Http)? {
        if out.len() + chunk.len() > MAX_RESPONSE {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The error code botocore shows: namespace (`com.amazonaws.ecs#`) and suffix (`:http://...`)
/// removed.
pub fn error_code(raw: &str) -> String {
    let code = raw.split(':').next().unwrap_or(raw);
    let code = code.rsplit('#').next().unwrap_or(code);
    code.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
        }
    }

    #[test]
    fn error_codes_are_normalized() {
        assert_eq!(error_code("ClientException"), "ClientException");
        assert_eq!(
            error_code("com.amazonaws.ecs#ClientException"),
            "ClientException"
        );
        assert_eq!(
            error_code("InvalidParameterException:http://internal.amazon.com/"),
            "InvalidParameterException"
        );
    }

    #[test]
    fn urls() {
        let c =
            JsonClient::new("http://127.0.0.1:7000", creds(), "us-east-1", "ecs").expect("client");
        assert_eq!(c.url(), "http://127.0.0.1:7000/");
        let c =
            JsonClient::new("https://h.example/api/", creds(), "us-east-1", "ecs").expect("client");
        assert_eq!(c.url(), "https://h.example/api/");
        assert_eq!(c.for_service("ecr").service(), "ecr");
        for bad in ["ftp://h/", "127.0.0.1:7000", "http://h/?a=b", "not a url"] {
            assert!(
                JsonClient::new(bad, creds(), "us-east-1", "ecs").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn retryable() {
        let aws = |status, code: &str| ClientError::Aws {
            status,
            code: code.into(),
            message: String::new(),
            request_id: None,
        };
        assert!(aws(500, "ServerException").is_retryable());
        assert!(aws(400, "ThrottlingException").is_retryable());
        assert!(!aws(400, "ClientException").is_retryable());
        assert!(!aws(400, "InvalidParameterException").is_retryable());
        assert!(ClientError::Timeout { url: "u".into() }.is_retryable());
        assert!(ClientError::Timeout { url: "u".into() }.is_unreachable());
        assert!(!aws(500, "ServerException").is_unreachable());
    }
}
