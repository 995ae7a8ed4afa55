//! The control plane as the agent sees it: a small trait (so the task runner is tested with an
//! in-process fake) and its HTTP implementation over [`JsonClient`].

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use berth_aws::client::{ClientError, JsonClient};
use berth_control::proto::{PollRequest, PollResponse, AGENT_TARGET_PREFIX, ECS_TARGET_PREFIX};
use serde_json::{json, Value};

/// `X-Amz-Target` prefix of ECR.
pub const ECR_TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";

/// Extra time the HTTP request of a long poll gets beyond its `waitSeconds`.
const POLL_SLACK: Duration = Duration::from_secs(15);

/// Registry credentials from ECR `GetAuthorizationToken`.
#[derive(Clone, PartialEq, Eq)]
pub struct EcrToken {
    /// `proxyEndpoint`, e.g. `http://127.0.0.1:5000` or `https://ACCOUNT.dkr.ecr.REGION...`.
    pub proxy_endpoint: String,
    pub username: String,
    pub password: String,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for EcrToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrToken")
            .field("proxy_endpoint", &self.proxy_endpoint)
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The calls the agent makes.
#[async_trait::async_trait]
pub trait ControlClient: Send + Sync + 'static {
    /// ECS `RegisterContainerInstance` (input and output in ECS's shapes).
    async fn register_container_instance(&self, input: &Value) -> Result<Value, ClientError>;
    /// `BerthAgent_V1.Poll` (a long poll of up to `waitSeconds`).
    async fn poll(&self, req: &PollRequest) -> Result<PollResponse, ClientError>;
    /// ECS `SubmitTaskStateChange`.
    async fn submit_task_state_change(&self, input: &Value) -> Result<(), ClientError>;
    /// ECR `GetAuthorizationToken`.
    async fn get_authorization_token(&self) -> Result<EcrToken, ClientError>;
}

/// [`ControlClient`] over HTTP: ECS and the agent protocol signed as `ecs`, ECR as `ecr`.
#[derive(Debug, Clone)]
pub struct HttpControl {
    ecs: JsonClient,
    ecr: JsonClient,
}

impl HttpControl {
    /// `client` signs as `ecs`; an `ecr` client sharing its connections is derived from it.
    pub fn new(client: JsonClient) -> HttpControl {
        let ecs = client.for_service("ecs");
        let ecr = client.for_service("ecr");
        HttpControl { ecs, ecr }
    }
}

fn invalid(client: &JsonClient, what: &str, reason: impl std::fmt::Display) -> ClientError {
    ClientError::InvalidResponse {
        url: client.url().to_string(),
        status: 200,
        reason: format!("{what}: {reason}"),
    }
}

#[async_trait::async_trait]
impl ControlClient for HttpControl {
    async fn register_container_instance(&self, input: &Value) -> Result<Value, ClientError> {
        self.ecs
            .call(ECS_TARGET_PREFIX, "RegisterContainerInstance", input)
            .await
    }

    async fn poll(&self, req: &PollRequest) -> Result<PollResponse, ClientError> {
        let input = serde_json::to_value(req).map_err(|e| invalid(&self.ecs, "poll", e))?;
        let timeout = Duration::from_secs(req.wait_seconds) + POLL_SLACK;
        let out = self
            .ecs
            .call_with_timeout(AGENT_TARGET_PREFIX, "Poll", &input, timeout)
            .await?;
        serde_json::from_value(out).map_err(|e| invalid(&self.ecs, "Poll response", e))
    }

    async fn submit_task_state_change(&self, input: &Value) -> Result<(), ClientError> {
        self.ecs
            .call(ECS_TARGET_PREFIX, "SubmitTaskStateChange", input)
            .await
            .map(|_| ())
    }

    async fn get_authorization_token(&self) -> Result<EcrToken, ClientError> {
        let out = self
            .ecr
            .call(ECR_TARGET_PREFIX, "GetAuthorizationToken", &json!({}))
            .await?;
        parse_authorization(&out).map_err(|e| invalid(&self.ecr, "GetAuthorizationToken", e))
    }
}

/// The first `authorizationData` entry: the base64 `user:password` token decoded.
pub fn parse_authorization(out: &Value) -> Result<EcrToken, String> {
    let data = out
        .get("authorizationData")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .ok_or("no authorizationData")?;
    let token = data
        .get("authorizationToken")
        .and_then(Value::as_str)
        .ok_or("no authorizationToken")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("authorizationToken is not base64 text")?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or("authorizationToken is not user:password")?;
    let proxy_endpoint = data
        .get("proxyEndpoint")
        .and_then(Value::as_str)
        .ok_or("no proxyEndpoint")?
        .to_string();
    let expires_at = data
        .get("expiresAt")
        .and_then(berth_aws::json::parse_epoch_seconds)
        .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(3600));
    Ok(EcrToken {
        proxy_endpoint,
        username: username.to_string(),
        password: password.to_string(),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_token() {
        let out = json!({"authorizationData": [{
            "authorizationToken": base64::engine::general_purpose::STANDARD.encode("AWS:pa:ss"),
            "expiresAt": 1700000000.5,
            "proxyEndpoint": "http://127.0.0.1:5000"
        }]});
        let t = parse_authorization(&out).expect("token");
        assert_eq!(t.username, "AWS");
        assert_eq!(t.password, "pa:ss");
        assert_eq!(t.proxy_endpoint, "http://127.0.0.1:5000");
        assert_eq!(
            t.expires_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("epoch")
                .as_millis(),
            1_700_000_000_500
        );
        assert!(!format!("{t:?}").contains("pa:ss"));
        assert!(parse_authorization(&json!({"authorizationData": []})).is_err());
        assert!(parse_authorization(&json!({"authorizationData": [{
            "authorizationToken": "!!", "proxyEndpoint": "x"}]}))
        .is_err());
    }
}
