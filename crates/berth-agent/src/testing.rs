//! In-process fakes for tests: a control plane that records every call (answers reports with
//! scripted failures, serves an ECR token and an assignment when given them), and an engine.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use berth_aws::client::ClientError;
use berth_control::proto::{AssignedTask, PollRequest, PollResponse};
use serde_json::{json, Value};

use berth_engine::{RunSpec, SandboxSpec};

use crate::control::{ControlClient, EcrToken};
use crate::runtime::{
    Container, Exit, Probe, RegistryAuth, Runtime, RuntimeError, SandboxAddress, State,
};

#[derive(Default)]
struct Inner {
    attempts: Vec<Value>,
    accepted: Vec<Value>,
    report_failures: VecDeque<Option<ClientError>>,
    registrations: Vec<Value>,
    polls: Vec<PollRequest>,
    poll_failures: VecDeque<ClientError>,
    assignment: (u64, Vec<AssignedTask>, Vec<String>),
    ecr: Option<EcrToken>,
}

/// A [`ControlClient`] that records what it is sent.
#[derive(Default)]
pub struct FakeControl {
    inner: Mutex<Inner>,
    changed: tokio::sync::Notify,
}

impl FakeControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next reports get these answers in turn (`None`: accepted).
    pub fn fail_next_reports(&self, answers: Vec<Option<ClientError>>) {
        self.lock().report_failures.extend(answers);
    }

    /// Every `SubmitTaskStateChange` input received, accepted or not.
    pub fn attempts(&self) -> Vec<Value> {
        self.lock().attempts.clone()
    }

    /// The accepted `SubmitTaskStateChange` inputs, in order.
    pub fn reports(&self) -> Vec<Value> {
        self.lock().accepted.clone()
    }

    /// The accepted reports of one task.
    pub fn reports_of(&self, task_arn: &str) -> Vec<Value> {
        self.reports()
            .into_iter()
            .filter(|r| r["task"] == task_arn)
            .collect()
    }

    /// The statuses reported for one task, in order.
    pub fn statuses(&self, task_arn: &str) -> Vec<String> {
        self.reports_of(task_arn)
            .iter()
            .map(|r| r["status"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn registrations(&self) -> Vec<Value> {
        self.lock().registrations.clone()
    }

    pub fn polls(&self) -> Vec<PollRequest> {
        self.lock().polls.clone()
    }

    /// What polls return from now on (a long poll waiting on `version` returns at once).
    pub fn set_assignment(&self, version: u64, tasks: Vec<AssignedTask>, unknown: Vec<String>) {
        self.lock().assignment = (version, tasks, unknown);
        self.changed.notify_waiters();
    }

    /// The next polls fail with these errors.
    pub fn fail_next_polls(&self, errors: Vec<ClientError>) {
        self.lock().poll_failures.extend(errors);
    }

    pub fn set_ecr_token(&self, token: EcrToken) {
        self.lock().ecr = Some(token);
    }
}

#[async_trait::async_trait]
impl ControlClient for FakeControl {
    async fn register_container_instance(&self, input: &Value) -> Result<Value, ClientError> {
        let mut inner = self.lock();
        inner.registrations.push(input.clone());
        let arn = input
            .get("containerInstanceArn")
            .and_then(Value::as_str)
            .unwrap_or("arn:aws:ecs:us-east-1:000000000000:container-instance/default/fake")
            .to_string();
        Ok(json!({"containerInstance": {"containerInstanceArn": arn, "status": "ACTIVE"}}))
    }

    async fn poll(&self, req: &PollRequest) -> Result<PollResponse, ClientError> {
        let changed = self.changed.notified();
        let (unchanged, failure) = {
            let mut inner = self.lock();
            inner.polls.push(req.clone());
            (
                req.known_version == Some(inner.assignment.0),
                inner.poll_failures.pop_front(),
            )
        };
        if let Some(e) = failure {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Err(e);
        }
        if unchanged {
            let wait = Duration::from_secs(req.wait_seconds.min(2));
            let _ = tokio::time::timeout(wait, changed).await;
        }
        let inner = self.lock();
        let (version, tasks, unknown) = inner.assignment.clone();
        Ok(PollResponse {
            version,
            tasks,
            unknown_tasks: unknown,
            heartbeat_seconds: 30,
            prepull_images: Vec::new(),
        })
    }

    async fn submit_task_state_change(&self, input: &Value) -> Result<(), ClientError> {
        let mut inner = self.lock();
        inner.attempts.push(input.clone());
        match inner.report_failures.pop_front().flatten() {
            Some(e) => Err(e),
            None => {
                inner.accepted.push(input.clone());
                Ok(())
            }
        }
    }

    async fn get_authorization_token(&self) -> Result<EcrToken, ClientError> {
        self.lock().ecr.clone().ok_or_else(|| ClientError::Aws {
            status: 400,
            code: "UnknownOperationException".into(),
            message: "no ECR here".into(),
            request_id: None,
        })
    }
}

/// The engine's state in [`FakeRuntime`].
#[derive(Default)]
pub struct FakeInner {
    pub containers: HashMap<String, (RunSpec, Option<Exit>)>,
    pub next: u32,
    pub local: HashSet<String>,
    pub registry: HashSet<String>,
    pub events: Vec<String>,
    pub volumes_removed: Vec<String>,
    pub auths: Vec<Option<RegistryAuth>>,
    /// Flags that `["flag", NAME]` health checks read.
    pub flags: HashSet<String>,
    /// When each container was created (tokio time).
    pub created: HashMap<String, tokio::time::Instant>,
    /// Health-check probes: (container id, command, when it started).
    pub probes: Vec<(String, Vec<String>, tokio::time::Instant)>,
    /// Sandboxes that exist, with the spec they were created with and their address.
    pub sandboxes: std::collections::BTreeMap<String, (SandboxSpec, Option<SandboxAddress>)>,
    /// The stop timeout each `stop` was given, by container name.
    pub stop_timeouts: Vec<(String, Duration)>,
    /// Sandbox creations fail (`ResourceInitializationError`).
    pub fail_sandboxes: bool,
}

/// A fake engine. Commands: `["sleep"]` runs until stopped, `["exit", "N"]` exits with N at once,
/// `["bad"]` fails to start. Health checks: `["pass"]`, `["fail"]`, `["hang"]` (times out),
/// `["flag", NAME]` (passes while [`FakeRuntime::set_flag`] set NAME).
#[derive(Default)]
pub struct FakeRuntime {
    inner: Mutex<FakeInner>,
    cv: Condvar,
}

impl FakeRuntime {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn with_images(local: &[&str], registry: &[&str]) -> Arc<FakeRuntime> {
        let rt = FakeRuntime::default();
        {
            let mut i = rt.lock();
            i.local = local.iter().map(|s| s.to_string()).collect();
            i.registry = registry.iter().map(|s| s.to_string()).collect();
        }
        Arc::new(rt)
    }

    pub fn events(&self) -> Vec<String> {
        self.lock().events.clone()
    }

    pub fn set_flag(&self, name: &str, on: bool) {
        let mut i = self.lock();
        if on {
            i.flags.insert(name.to_string());
        } else {
            i.flags.remove(name);
        }
    }

    /// Whole seconds after the container's creation at which its probes started.
    pub fn probe_times(&self, id: &str) -> Vec<u64> {
        let i = self.lock();
        let Some(created) = i.created.get(id).copied() else {
            return Vec::new();
        };
        i.probes
            .iter()
            .filter(|(p, _, _)| p == id)
            .map(|(_, _, at)| at.duration_since(created).as_secs())
            .collect()
    }

    /// The id of the container whose engine name starts with `name_prefix`.
    pub fn id_of(&self, name_prefix: &str) -> Option<String> {
        self.lock()
            .containers
            .iter()
            .find(|(_, (spec, _))| {
                spec.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(name_prefix))
            })
            .map(|(id, _)| id.clone())
    }

    pub fn exit_container(&self, name_prefix: &str, code: i32) {
        let mut i = self.lock();
        for (spec, exit) in i.containers.values_mut() {
            if spec
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(name_prefix))
                && exit.is_none()
            {
                *exit = Some(Exit::code(code));
            }
        }
        self.cv.notify_all();
    }

    fn container(&self, id: &str) -> Option<Container> {
        let i = self.lock();
        i.containers.get(id).map(|(_, exit)| Container {
            id: id.to_string(),
            published: Vec::new(),
            ip: None,
            state: match exit {
                Some(e) => State::Exited(e.clone()),
                None => State::Running,
            },
        })
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<String, RuntimeError> {
        let mut i = self.lock();
        i.auths.push(auth.cloned());
        i.events.push(format!("pull {image}"));
        if i.registry.contains(image) {
            i.local.insert(image.to_string());
            Ok(format!("sha256:{}", "1".repeat(64)))
        } else {
            Err(RuntimeError::Other(format!("manifest unknown: {image}")))
        }
    }

    fn local_image(&self, image: &str) -> Option<String> {
        self.lock()
            .local
            .contains(image)
            .then(|| format!("sha256:{}", "2".repeat(64)))
    }

    fn ensure_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.lock().events.push(format!("network {name}"));
        Ok(())
    }

    fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Option<SandboxAddress>, RuntimeError> {
        let mut i = self.lock();
        i.events.push(format!("sandbox {}", spec.name));
        if i.fail_sandboxes {
            return Err(RuntimeError::Other("no addresses left".into()));
        }
        if let Some((_, addr)) = i.sandboxes.get(&spec.name) {
            return Ok(addr.clone());
        }
        let n = u8::try_from(i.sandboxes.len() % 250).unwrap_or(0) + 2;
        let addr = spec.network.as_ref().map(|net| SandboxAddress {
            network: net.clone(),
            ip: std::net::Ipv4Addr::new(10, 9, 0, n),
            mac: format!("02:42:0a:09:00:{n:02x}"),
        });
        i.sandboxes
            .insert(spec.name.clone(), (spec.clone(), addr.clone()));
        Ok(addr)
    }

    fn remove_sandbox(&self, name: &str) -> Result<(), RuntimeError> {
        let mut i = self.lock();
        i.events.push(format!("remove-sandbox {name}"));
        if i.containers
            .values()
            .any(|(s, e)| s.sandbox.as_deref() == Some(name) && e.is_none())
        {
            return Err(RuntimeError::Other(format!(
                "sandbox {name} still has running containers"
            )));
        }
        i.sandboxes.remove(name);
        Ok(())
    }

    fn sandboxes(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self.lock().sandboxes.keys().cloned().collect())
    }

    fn run(&self, spec: &RunSpec) -> Result<Container, RuntimeError> {
        let id = {
            let mut i = self.lock();
            if let Some(sb) = &spec.sandbox {
                if !i.sandboxes.contains_key(sb) {
                    return Err(RuntimeError::Other(format!("no such sandbox: {sb}")));
                }
            }
            if spec.cmd.first().map(String::as_str) == Some("bad") {
                return Err(RuntimeError::Other("exec: \"bad\": not found".into()));
            }
            if !i.local.contains(&spec.image) {
                return Err(RuntimeError::Other(format!("no such image {}", spec.image)));
            }
            i.next += 1;
            let id = format!("{:064x}", i.next);
            let exit = match spec.cmd.as_slice() {
                [e, code] if e == "exit" => Some(Exit::code(code.parse().unwrap_or(1))),
                _ => None,
            };
            let name = spec.name.clone().unwrap_or_default();
            i.events
                .push(format!("run {}", name.split('-').nth(3).unwrap_or(&name)));
            i.containers.insert(id.clone(), (spec.clone(), exit));
            i.created.insert(id.clone(), tokio::time::Instant::now());
            id
        };
        self.cv.notify_all();
        Ok(self.container(&id).expect("just created"))
    }

    fn inspect(&self, name_or_id: &str) -> Result<Option<Container>, RuntimeError> {
        let id = {
            let i = self.lock();
            i.containers
                .iter()
                .find(|(id, (spec, _))| {
                    *id == name_or_id || spec.name.as_deref() == Some(name_or_id)
                })
                .map(|(id, _)| id.clone())
        };
        Ok(id.and_then(|id| self.container(&id)))
    }

    fn wait(&self, id: &str, timeout: Duration) -> Result<Option<Exit>, RuntimeError> {
        let i = self.lock();
        let (i, _) = self
            .cv
            .wait_timeout_while(i, timeout, |i| {
                i.containers.get(id).is_some_and(|(_, e)| e.is_none())
            })
            .unwrap_or_else(|p| p.into_inner());
        match i.containers.get(id) {
            Some((_, e)) => Ok(e.clone()),
            None => Ok(Some(Exit::lost("removed"))),
        }
    }

    fn stop(&self, id: &str, timeout: Duration) -> Result<Option<Exit>, RuntimeError> {
        let mut i = self.lock();
        let name = i
            .containers
            .get(id)
            .and_then(|(s, _)| s.name.clone())
            .unwrap_or_default();
        i.stop_timeouts.push((name.clone(), timeout));
        i.events
            .push(format!("stop {}", name.split('-').nth(3).unwrap_or(&name)));
        let out = i
            .containers
            .get_mut(id)
            .map(|(_, exit)| exit.get_or_insert_with(|| Exit::code(143)).clone());
        self.cv.notify_all();
        Ok(out)
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut i = self.lock();
        i.containers.remove(id);
        i.events.push("remove".into());
        self.cv.notify_all();
        Ok(())
    }

    fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.lock().volumes_removed.push(name.to_string());
        Ok(())
    }

    async fn exec_check(&self, id: &str, cmd: &[String], timeout: Duration) -> Probe {
        let passed = {
            let mut i = self.lock();
            i.probes
                .push((id.to_string(), cmd.to_vec(), tokio::time::Instant::now()));
            if !i.containers.get(id).is_some_and(|(_, e)| e.is_none()) {
                return Probe::Error(format!("container {id} is not running"));
            }
            match cmd {
                [c] if c == "pass" => Some(true),
                [c] if c == "fail" => Some(false),
                [c] if c == "hang" => None,
                [c, flag] if c == "flag" => Some(i.flags.contains(flag)),
                _ => return Probe::Error(format!("unknown check {cmd:?}")),
            }
        };
        match passed {
            Some(p) => Probe::Exit {
                code: if p { 0 } else { 1 },
            },
            None => {
                tokio::time::sleep(timeout).await;
                Probe::TimedOut
            }
        }
    }
}
