//! The agent over real HTTP: `run_with` + `HttpControl` against an in-process control plane
//! stub behind `AwsEndpoint` (SigV4 verified, `X-Amz-Target` routed, service scopes checked),
//! with a fake engine (no root). The agent's ECS inputs are validated against botocore's ECS
//! model when a venv with botocore is found (`BERTH_VENV`; required under `BERTH_REQUIRE_E2E=1`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_agent::testing::FakeRuntime;
use berth_agent::{AgentConfig, ControlClient, HttpControl, Runtime};
use berth_aws::client::JsonClient;
use berth_aws::json::{AwsEndpoint, AwsError, JsonApi, RequestContext};
use berth_aws::{Credentials, StaticKeys};
use berth_control::proto::{
    AssignedTask, PollRequest, PollResponse, AGENT_TARGET_PREFIX, ECS_TARGET_PREFIX,
};
use serde_json::{json, Value};

const AKID: &str = "AKIAAGENTTEST0000001";
const SECRET: &str = "agentTestSecret/0123456789abcdefghijKLMNO";
const TASK: &str = "arn:aws:ecs:eu-west-3:000000000000:task/prod/5f5e";
const INSTANCE: &str = "arn:aws:ecs:eu-west-3:000000000000:container-instance/prod/1234";

type Calls = Arc<Mutex<Vec<(String, Value)>>>;

struct Stub {
    prefix: &'static str,
    signing: &'static str,
    calls: Calls,
    desired: Arc<Mutex<String>>,
}

fn assigned(desired: &str) -> AssignedTask {
    AssignedTask {
        task_arn: TASK.into(),
        desired_status: desired.into(),
        last_status: "PENDING".into(),
        task_definition: json!({"family": "web", "revision": 2, "networkMode": "none",
            "containerDefinitions": [
                {"name": "app", "image": "127.0.0.1:5999/web:2", "command": ["sleep"]}]}),
        overrides: None,
        network_configuration: None,
        stopped_reason: None,
        launch_type: None,
        stop_timeout_seconds: None,
    }
}

#[async_trait::async_trait]
impl JsonApi for Stub {
    fn target_prefix(&self) -> &'static str {
        self.prefix
    }

    fn signing_name(&self) -> Option<&'static str> {
        Some(self.signing)
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        input: Value,
    ) -> Result<Value, AwsError> {
        assert_eq!(ctx.region, "eu-west-3");
        self.calls
            .lock()
            .expect("lock")
            .push((operation.to_string(), input.clone()));
        match operation {
            "RegisterContainerInstance" => Ok(json!({"containerInstance": {
                "containerInstanceArn": INSTANCE, "status": "ACTIVE", "agentConnected": true}})),
            "SubmitTaskStateChange" => Ok(json!({"acknowledgment": "ACK"})),
            "Poll" => {
                let req: PollRequest = serde_json::from_value(input)
                    .map_err(|e| AwsError::client("InvalidParameterException", e.to_string()))?;
                assert_eq!(req.container_instance_arn, INSTANCE);
                let desired = self.desired.lock().expect("lock").clone();
                let version = if desired == "RUNNING" { 1 } else { 2 };
                if req.known_version == Some(version) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let resp = PollResponse {
                    version,
                    tasks: vec![assigned(&desired)],
                    unknown_tasks: vec![],
                    heartbeat_seconds: 30,
                    prepull_images: Vec::new(),
                };
                serde_json::to_value(resp).map_err(|e| AwsError::internal(e.to_string()))
            }
            "GetAuthorizationToken" => {
                let expires = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("time")
                    .as_secs()
                    + 43200;
                Ok(json!({"authorizationData": [{
                    "authorizationToken": "QVdTOnNlY3JldC10b2tlbg==",
                    "expiresAt": expires,
                    "proxyEndpoint": "http://127.0.0.1:5999"}]}))
            }
            other => Err(AwsError::unknown_operation(format!("no {other}"))),
        }
    }
}

async fn serve(calls: &Calls, desired: &Arc<Mutex<String>>) -> String {
    let mut keys = StaticKeys::new();
    keys.0.insert(AKID.into(), SECRET.into());
    let stub = |prefix, signing| -> Arc<dyn JsonApi> {
        Arc::new(Stub {
            prefix,
            signing,
            calls: Arc::clone(calls),
            desired: Arc::clone(desired),
        })
    };
    let endpoint = Arc::new(AwsEndpoint::new(
        vec![
            stub(ECS_TARGET_PREFIX, "ecs"),
            stub(AGENT_TARGET_PREFIX, "ecs"),
            stub("AmazonEC2ContainerRegistry_V20150921", "ecr"),
        ],
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

// ---- botocore's ECS model ------------------------------------------------------------------

fn model() -> Option<&'static Value> {
    static MODEL: OnceLock<Option<Value>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let mut venvs: Vec<PathBuf> = Vec::new();
            if let Some(v) = std::env::var_os("BERTH_VENV") {
                venvs.push(v.into());
            }
            venvs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
            venvs.push("/opt/berth-venv".into());
            let script = "import json, botocore.loaders as l; \
                          print(json.dumps(l.Loader().load_service_model('ecs', 'service-2')))";
            for v in venvs {
                let python = v.join("bin/python");
                let Ok(out) = Command::new(&python).args(["-c", script]).output() else {
                    continue;
                };
                if out.status.success() {
                    if let Ok(m) = serde_json::from_slice::<Value>(&out.stdout) {
                        return Some(m);
                    }
                }
            }
            assert!(
                std::env::var("BERTH_REQUIRE_E2E").as_deref() != Ok("1"),
                "botocore's ECS model is required (BERTH_REQUIRE_E2E=1) but no venv has botocore"
            );
            eprintln!("botocore not found: agent inputs are not validated against the ECS model");
            None
        })
        .as_ref()
}

/// Checks `value` against the model shape `shape` (members, types, enums, required).
fn validate(model: &Value, shape: &str, value: &Value, path: &str) {
    let s = &model["shapes"][shape];
    assert!(s.is_object(), "{path}: unknown shape {shape}");
    match s["type"].as_str().unwrap_or_default() {
        "structure" => {
            let obj = value
                .as_object()
                .unwrap_or_else(|| panic!("{path}: expected a structure ({shape}), got {value}"));
            let members = s["members"].as_object().expect("members");
            for (k, v) in obj {
                let m = members
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}: {shape} has no member {k:?}"));
                validate(
                    model,
                    m["shape"].as_str().expect("shape"),
                    v,
                    &format!("{path}.{k}"),
                );
            }
            for r in s["required"].as_array().into_iter().flatten() {
                let r = r.as_str().expect("name");
                assert!(
                    obj.contains_key(r),
                    "{path}: required member {r} of {shape} missing"
                );
            }
        }
        "list" => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("{path}: expected a list ({shape}), got {value}"));
            let member = s["member"]["shape"].as_str().expect("member");
            for (i, v) in items.iter().enumerate() {
                validate(model, member, v, &format!("{path}[{i}]"));
            }
        }
        "string" => {
            let text = value
                .as_str()
                .unwrap_or_else(|| panic!("{path}: expected a string ({shape}), got {value}"));
            if let Some(allowed) = s["enum"].as_array() {
                assert!(
                    allowed.iter().any(|a| a == text),
                    "{path}: {text:?} is not one of {shape}'s values {allowed:?}"
                );
            }
        }
        "integer" | "long" => assert!(
            value.is_i64() || value.is_u64(),
            "{path}: expected an integer ({shape}), got {value}"
        ),
        "double" | "float" => assert!(value.is_number(), "{path}: expected a number, got {value}"),
        "boolean" => assert!(
            value.is_boolean(),
            "{path}: expected a boolean, got {value}"
        ),
        "timestamp" => assert!(
            value.is_number(),
            "{path}: expected epoch seconds, got {value}"
        ),
        other => panic!("{path}: shape type {other} not handled"),
    }
}

fn input_shape(model: &Value, operation: &str) -> String {
    model["operations"][operation]["input"]["shape"]
        .as_str()
        .expect("input shape")
        .to_string()
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_over_http_registers_polls_pulls_with_ecr_token_and_reports() {
    let calls: Calls = Arc::default();
    let desired = Arc::new(Mutex::new("RUNNING".to_string()));
    let url = serve(&calls, &desired).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = Credentials {
        access_key_id: AKID.into(),
        secret_access_key: SECRET.into(),
    };
    let mut cfg = AgentConfig::new("prod", url.clone(), creds.clone(), "/nonexistent");
    cfg.data_dir = dir.path().join("agent");
    cfg.region = "eu-west-3".into();
    cfg.task_cleanup_wait = Duration::ZERO;
    cfg.poll_wait = Duration::from_secs(1);
    cfg.attributes = vec![("rack".into(), Some("r7".into()))];
    let client = JsonClient::new(&url, creds, "eu-west-3", "ecs").expect("client");
    let control: Arc<dyn ControlClient> = Arc::new(HttpControl::new(client));
    let rt = FakeRuntime::with_images(&[], &["127.0.0.1:5999/web:2"]);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = {
        let rt = Arc::clone(&rt) as Arc<dyn Runtime>;
        tokio::spawn(async move {
            berth_agent::run_with(&cfg, control, rt, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let ops = || -> Vec<(String, Value)> { calls.lock().expect("lock").clone() };
    let statuses = || -> Vec<String> {
        ops()
            .into_iter()
            .filter(|(op, _)| op == "SubmitTaskStateChange")
            .map(|(_, v)| v["status"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    until("RUNNING", || statuses().contains(&"RUNNING".to_string())).await;
    *desired.lock().expect("lock") = "STOPPED".into();
    until("STOPPED", || {
        statuses().last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    assert_eq!(
        statuses(),
        vec![
            "PENDING",
            "ACTIVATING",
            "RUNNING",
            "DEACTIVATING",
            "STOPPING",
            "DEPROVISIONING",
            "STOPPED"
        ]
    );
    // The pull of the ECR image used the token's password as basic auth.
    let auth = rt.lock().auths[0].clone().expect("ECR credentials");
    assert_eq!(auth.domain, "127.0.0.1:5999");
    assert_eq!(
        (auth.username.as_str(), auth.password.as_str()),
        ("AWS", "secret-token")
    );
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("agent stops")
        .expect("join")
        .expect("agent");

    let all = ops();
    let register = &all
        .iter()
        .find(|(op, _)| op == "RegisterContainerInstance")
        .expect("registered")
        .1;
    assert_eq!(register["cluster"], "prod");
    assert!(register["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .any(|a| a["name"] == "rack" && a["value"] == "r7"));
    assert!(all.iter().any(|(op, _)| op == "Poll"));
    assert!(all.iter().any(|(op, _)| op == "GetAuthorizationToken"));
    if let Some(m) = model() {
        let shape = input_shape(m, "RegisterContainerInstance");
        validate(m, &shape, register, "RegisterContainerInstance");
        let shape = input_shape(m, "SubmitTaskStateChange");
        for (_, v) in all.iter().filter(|(op, _)| op == "SubmitTaskStateChange") {
            validate(m, &shape, v, "SubmitTaskStateChange");
        }
    }
}
