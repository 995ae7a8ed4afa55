//! The agent's main loop: register the container instance, then long-poll the control plane
//! for assignments and hand them to the task runner. Every poll is the heartbeat. When the
//! control plane cannot be reached the agent backs off and keeps polling; it never stops
//! containers for that.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_aws::client::{ClientError, JsonClient};
use berth_aws::Credentials;
use berth_control::proto::PollRequest;
use berth_engine::{Engine, RegistryOptions};
use rand::Rng;
use serde_json::Value;

use crate::control::{ControlClient, HttpControl};
use crate::runner::{RunnerConfig, RunnerError, TaskRunner};
use crate::runtime::{EngineRuntime, Runtime};
use crate::state::{AgentState, StateError};
use crate::{error_chain, host};

/// Default data directory of `berth agent`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth/agent";
/// Default `--task-cleanup-wait`.
pub const DEFAULT_TASK_CLEANUP_WAIT: Duration = Duration::from_secs(60);
/// How long each poll waits for a change.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(20);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Everything `berth agent` (or `berth serve`'s local agent) needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Cluster name or ARN.
    pub cluster: String,
    /// The control plane's AWS endpoint, e.g. `http://127.0.0.1:7000`.
    pub control_url: String,
    /// The agent's state (`agent.json`, `tasks/`).
    pub data_dir: PathBuf,
    /// The engine's root directory.
    pub engine_root: PathBuf,
    /// The `berth` binary (the engine starts `<shim_exe> shim ...` per container).
    pub shim_exe: PathBuf,
    /// SigV4 region.
    pub region: String,
    /// The access key requests are signed with.
    pub credentials: Credentials,
    /// Extra instance attributes (`NAME[=VALUE]`).
    pub attributes: Vec<(String, Option<String>)>,
    /// How long a stopped task's containers are kept.
    pub task_cleanup_wait: Duration,
    /// How long each long poll waits for a change.
    pub poll_wait: Duration,
    /// Registry credentials and TLS settings of pulls (ECR tokens are added per pull).
    pub registry: RegistryOptions,
    /// The address other hosts reach this host's published ports on (the `berth.address`
    /// attribute); `None`: the local address of the route to the control plane.
    pub address: Option<std::net::IpAddr>,
    /// This agent also offers Fargate platform capacity: registers with the attribute
    /// `berth.platform=true`.
    pub platform: bool,
}

impl AgentConfig {
    /// A configuration with the defaults: data in [`DEFAULT_DATA_DIR`], the engine's default
    /// root, `us-east-1`, 60 s cleanup wait, 20 s polls, registry credentials from the
    /// environment (`berth login`).
    pub fn new(
        cluster: impl Into<String>,
        control_url: impl Into<String>,
        credentials: Credentials,
        shim_exe: impl Into<PathBuf>,
    ) -> AgentConfig {
        AgentConfig {
            cluster: cluster.into(),
            control_url: control_url.into(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            engine_root: PathBuf::from(berth_engine::DEFAULT_ROOT),
            shim_exe: shim_exe.into(),
            region: "us-east-1".into(),
            credentials,
            attributes: Vec::new(),
            task_cleanup_wait: DEFAULT_TASK_CLEANUP_WAIT,
            poll_wait: DEFAULT_POLL_WAIT,
            registry: RegistryOptions::from_env(),
            address: None,
            platform: false,
        }
    }
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the engine at {path}")]
    Engine {
        path: PathBuf,
        #[source]
        source: berth_engine::OpenError,
    },
    #[error("engine task failed: {0}")]
    Join(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    State(#[from] StateError),
}

fn create_data_dir(path: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| AgentError::DataDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Runs the agent until `shutdown` completes. Containers keep running when it returns.
pub async fn run(cfg: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    create_data_dir(&cfg.data_dir)?;
    let (root, exe) = (cfg.engine_root.clone(), cfg.shim_exe.clone());
    let engine = tokio::task::spawn_blocking(move || Engine::open(&root, exe))
        .await
        .map_err(|e| AgentError::Join(e.to_string()))?
        .map_err(|source| AgentError::Engine {
            path: cfg.engine_root.clone(),
            source,
        })?;
    let client = JsonClient::new(
        &cfg.control_url,
        cfg.credentials.clone(),
        cfg.region.clone(),
        "ecs",
    )?;
    let control: Arc<dyn ControlClient> = Arc::new(HttpControl::new(client));
    let runtime: Arc<dyn Runtime> = Arc::new(EngineRuntime::new(engine, cfg.registry.clone()));
    run_with(&cfg, control, runtime, shutdown).await
}

/// [`run`] over a given control client and runtime.
pub async fn run_with(
    cfg: &AgentConfig,
    control: Arc<dyn ControlClient>,
    runtime: Arc<dyn Runtime>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    create_data_dir(&cfg.data_dir)?;
    tokio::pin!(shutdown);
    let mut arn = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        r = register(cfg, control.as_ref()) => r?,
    };
    let mut runner = TaskRunner::new(
        RunnerConfig {
            cluster: cfg.cluster.clone(),
            data_dir: cfg.data_dir.clone(),
            task_cleanup_wait: cfg.task_cleanup_wait,
        },
        runtime,
        Arc::clone(&control),
    );
    let reloaded = runner.reload()?;
    if reloaded > 0 {
        tracing::info!(tasks = reloaded, "reattached to the tasks of the last run");
    }
    let mut known_version: Option<u64> = None;
    let mut failures: u32 = 0;
    loop {
        let req = PollRequest {
            cluster: cfg.cluster.clone(),
            container_instance_arn: arn.clone(),
            known_version,
            wait_seconds: cfg.poll_wait.as_secs(),
            known_tasks: runner.known_tasks(),
        };
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            _ = &mut shutdown => break,
            r = control.poll(&req) => r,
        };
        match result {
            Ok(resp) => {
                if failures > 0 {
                    tracing::info!("the control plane answers again");
                }
                failures = 0;
                let unchanged = known_version == Some(resp.version);
                runner.apply(&resp.tasks, &resp.unknown_tasks);
                runner.prepull(&resp.prepull_images);
                known_version = Some(resp.version);
                // A control plane that answers at once without news must not make us spin.
                if unchanged && started.elapsed() < Duration::from_millis(100) {
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(failures, error = %error_chain(&e),
                        "cannot poll the control plane; containers keep running, retrying");
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(retry_delay(failures)) => {}
                }
                if needs_registration(&e) {
                    tracing::info!("registering the container instance again");
                    arn = tokio::select! {
                        _ = &mut shutdown => break,
                        r = register(cfg, control.as_ref()) => r?,
                    };
                    known_version = None;
                }
            }
        }
    }
    runner.shutdown().await;
    tracing::info!("agent stopped; containers keep running");
    Ok(())
}

/// The control plane refused the poll itself (not a transport failure): register again.
fn needs_registration(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some("InvalidParameterException" | "ClientException" | "ClusterNotFoundException")
    )
}

/// 1 s doubling to 30 s, with up to 25% jitter.
fn retry_delay(failures: u32) -> Duration {
    let base = crate::report::backoff(failures).min(MAX_RETRY_DELAY);
    let jitter = rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 4);
    base + Duration::from_millis(jitter)
}

/// `berth.address` (configured, else found from the route to the control plane), then the
/// configured attributes (an explicit `berth.address` attribute wins).
async fn instance_attributes(cfg: &AgentConfig) -> Vec<(String, Option<String>)> {
    let address = match cfg.address {
        Some(a) => Some(a),
        None => host::local_address_for(&cfg.control_url).await,
    };
    let mut attrs = Vec::with_capacity(cfg.attributes.len() + 1);
    match address {
        Some(a) => attrs.push((host::ADDRESS_ATTRIBUTE.to_string(), Some(a.to_string()))),
        None => tracing::warn!(control = %cfg.control_url,
            "cannot tell this host's address from the control URL; no berth.address attribute"),
    }
    if cfg.platform {
        attrs.push((
            host::PLATFORM_ATTRIBUTE.to_string(),
            Some("true".to_string()),
        ));
    }
    attrs.extend(cfg.attributes.iter().cloned());
    attrs
}

/// Registers (again, with the stored ARN when there is one for this cluster) until it works.
async fn register(cfg: &AgentConfig, control: &dyn ControlClient) -> Result<String, AgentError> {
    let stored = AgentState::load(&cfg.data_dir)?.filter(|s| {
        let same = s.cluster == cfg.cluster;
        if !same {
            tracing::warn!(stored = %s.cluster, cluster = %cfg.cluster,
                "the stored container instance belongs to another cluster; registering anew");
        }
        same
    });
    let mut previous = stored.map(|s| s.container_instance_arn);
    let mut failures = 0u32;
    loop {
        let input = host::register_input(
            &cfg.cluster,
            previous.as_deref(),
            &instance_attributes(cfg).await,
        );
        let err = match control.register_container_instance(&input).await {
            Ok(out) => match out
                .pointer("/containerInstance/containerInstanceArn")
                .and_then(Value::as_str)
            {
                Some(arn) => {
                    let state = AgentState {
                        cluster: cfg.cluster.clone(),
                        container_instance_arn: arn.to_string(),
                    };
                    state.save(&cfg.data_dir)?;
                    tracing::info!(container_instance = %arn, cluster = %cfg.cluster,
                        reregistered = previous.as_deref() == Some(arn), "registered");
                    return Ok(arn.to_string());
                }
                None => ClientError::InvalidResponse {
                    url: cfg.control_url.clone(),
                    status: 200,
                    reason: "RegisterContainerInstance returned no containerInstanceArn".into(),
                },
            },
            Err(e) => e,
        };
        failures += 1;
        if previous.is_some() && !err.is_retryable() {
            tracing::warn!(error = %error_chain(&err),
                "re-registration with the stored container instance ARN refused; registering anew");
            previous = None;
            continue;
        }
        if failures.is_power_of_two() {
            tracing::warn!(failures, error = %error_chain(&err),
                "cannot register the container instance; retrying");
        }
        tokio::time::sleep(retry_delay(failures)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeControl;

    #[tokio::test(start_paused = true)]
    async fn registers_once_then_reuses_the_arn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = AgentConfig::new(
            "prod",
            "http://127.0.0.1:1",
            Credentials {
                access_key_id: "AKID".into(),
                secret_access_key: "s".into(),
            },
            "/nonexistent",
        );
        cfg.data_dir = dir.path().join("agent");
        cfg.attributes = vec![("rack".into(), Some("r1".into()))];
        let control = Arc::new(FakeControl::default());
        let arn = register(&cfg, control.as_ref()).await.expect("register");
        let state = AgentState::load(&cfg.data_dir)
            .expect("load")
            .expect("state");
        assert_eq!(state.container_instance_arn, arn);
        let again = register(&cfg, control.as_ref()).await.expect("register");
        assert_eq!(again, arn);
        let regs = control.registrations();
        assert!(regs[0].get("containerInstanceArn").is_none());
        let attr = |r: &Value, n: &str| {
            r["attributes"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == n))
                .map(|x| x["value"].clone())
        };
        // Loopback control URL: the address is loopback's.
        assert_eq!(
            attr(&regs[0], "berth.address"),
            Some(Value::from("127.0.0.1"))
        );
        assert_eq!(attr(&regs[0], "rack"), Some(Value::from("r1")));
        assert_eq!(attr(&regs[0], "berth.platform"), None);
        assert_eq!(regs[1]["containerInstanceArn"], arn);
        // Another cluster: not reused. A configured address wins.
        cfg.cluster = "other".into();
        cfg.address = Some(std::net::IpAddr::from([10, 1, 2, 3]));
        register(&cfg, control.as_ref()).await.expect("register");
        let regs = control.registrations();
        assert!(regs[2].get("containerInstanceArn").is_none());
        assert_eq!(
            attr(&regs[2], "berth.address"),
            Some(Value::from("10.1.2.3"))
        );
        // An explicit attribute wins over both.
        cfg.attributes
            .push(("berth.address".into(), Some("192.0.2.9".into())));
        register(&cfg, control.as_ref()).await.expect("register");
        let regs = control.registrations();
        assert_eq!(
            attr(&regs[3], "berth.address"),
            Some(Value::from("192.0.2.9"))
        );
        assert_eq!(
            regs[3]["attributes"]
                .as_array()
                .map(|a| a.iter().filter(|x| x["name"] == "berth.address").count()),
            Some(1)
        );
        // `--platform`: Fargate platform capacity.
        cfg.platform = true;
        register(&cfg, control.as_ref()).await.expect("register");
        let regs = control.registrations();
        assert_eq!(attr(&regs[4], "berth.platform"), Some(Value::from("true")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polls_apply_assignments_and_survive_control_plane_errors() {
        use crate::testing::FakeRuntime;
        use berth_control::proto::AssignedTask;
        use serde_json::json;

        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = AgentConfig::new(
            "prod",
            "http://127.0.0.1:1",
            Credentials {
                access_key_id: "AKID".into(),
                secret_access_key: "s".into(),
            },
            "/nonexistent",
        );
        cfg.data_dir = dir.path().join("agent");
        cfg.task_cleanup_wait = Duration::ZERO;
        let control = Arc::new(FakeControl::default());
        let rt = FakeRuntime::with_images(&["bb"], &[]);
        let arn = "arn:aws:ecs:us-east-1:000000000000:task/prod/0a0b";
        let assigned = |desired: &str| AssignedTask {
            task_arn: arn.into(),
            desired_status: desired.into(),
            last_status: "PENDING".into(),
            task_definition: json!({"family": "f", "revision": 1, "networkMode": "none",
                "containerDefinitions": [{"name": "app", "image": "bb", "command": ["sleep"]}]}),
            overrides: None,
            network_configuration: None,
            stopped_reason: Some("Scaling down".into()),
            launch_type: None,
            stop_timeout_seconds: None,
        };
        control.set_assignment(1, vec![assigned("RUNNING")], vec![]);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let agent = {
            let (cfg, control, rt) = (cfg.clone(), Arc::clone(&control), Arc::clone(&rt));
            tokio::spawn(async move {
                run_with(&cfg, control, rt, async {
                    let _ = stop_rx.await;
                })
                .await
            })
        };
        let until = |what: &'static str, f: Box<dyn Fn() -> bool + Send>| async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !f() {
                assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let c = Arc::clone(&control);
        until(
            "RUNNING",
            Box::new(move || c.statuses(arn).contains(&"RUNNING".to_string())),
        )
        .await;
        // Polls carry the version acted on and the task the agent has.
        let c = Arc::clone(&control);
        until(
            "a poll knowing the task",
            Box::new(move || {
                c.polls()
                    .iter()
                    .any(|p| p.known_version == Some(1) && p.known_tasks == vec![arn.to_string()])
            }),
        )
        .await;
        let first = &control.polls()[0];
        assert_eq!(
            first.container_instance_arn,
            "arn:aws:ecs:us-east-1:000000000000:container-instance/default/fake"
        );
        assert_eq!(first.wait_seconds, 20);
        assert_eq!(first.known_version, None);
        // The control plane goes away for a while: the container keeps running.
        control.fail_next_polls(vec![
            ClientError::Timeout { url: "u".into() },
            ClientError::Timeout { url: "u".into() },
        ]);
        control.set_assignment(2, vec![assigned("RUNNING")], vec![]);
        let c = Arc::clone(&control);
        until(
            "polls after the errors",
            Box::new(move || c.polls().iter().any(|p| p.known_version == Some(2))),
        )
        .await;
        assert!(rt
            .lock()
            .containers
            .values()
            .all(|(_, exit)| exit.is_none()));
        assert_eq!(
            control.statuses(arn).last().map(String::as_str),
            Some("RUNNING")
        );
        // Stopped by the control plane, then cleaned up and no longer known.
        control.set_assignment(3, vec![assigned("STOPPED")], vec![]);
        let c = Arc::clone(&control);
        until(
            "STOPPED",
            Box::new(move || c.statuses(arn).last().map(String::as_str) == Some("STOPPED")),
        )
        .await;
        let stopped = control.reports_of(arn).pop().expect("report");
        assert_eq!(stopped["reason"], "Scaling down");
        control.set_assignment(4, vec![], vec![]);
        let c = Arc::clone(&control);
        until(
            "task forgotten",
            Box::new(move || {
                c.polls()
                    .last()
                    .is_some_and(|p| p.known_version == Some(4) && p.known_tasks.is_empty())
            }),
        )
        .await;
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(10), agent)
            .await
            .expect("agent stops")
            .expect("join")
            .expect("agent result");
        assert_eq!(control.registrations().len(), 1);
    }

    #[test]
    fn retry_delays_are_bounded() {
        for f in 1..50 {
            let d = retry_delay(f);
            assert!(
                d >= Duration::from_secs(1) && d <= MAX_RETRY_DELAY * 5 / 4,
                "{d:?}"
            );
        }
    }
}
