//! The task runner: one async actor per task drives it through ECS's lifecycle on the engine
//! (pull → create/start in `dependsOn` order → watch → stop in reverse order → clean up),
//! records every step in `tasks/<id>.json` and queues a report of every transition.
//!
//! Containers are watched without sleeps: a plain thread per container blocks in the engine's
//! `wait` (through the shim's socket) and sends the exit into the task's channel. Engine calls
//! run on `spawn_blocking`. Dropping the runner stops the actors, never the containers: a new
//! runner over the same data directory reattaches to them ([`TaskRunner::reload`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_control::proto::{AssignedTask, TaskNetwork};
use berth_engine::{ImageRef, SandboxSpec};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use crate::control::{ControlClient, EcrToken};
use crate::error_chain;
use crate::health::{self, HealthStatus};
use crate::order::Condition;
use crate::report::{Report, Reporter};
use crate::runtime::{Container, Exit, RegistryAuth, Runtime, RuntimeError, State};
use crate::spec::{
    ephemeral_storage_bytes, plan_task, sandbox_name, task_id, NetworkPlan, TaskPlan,
    SANDBOX_PREFIX,
};
use crate::state::{
    ContainerRecord, ContainerStatus, NetworkBinding, StateError, TaskRecord, TaskStatus, TaskStore,
};

/// How long one engine `wait` blocks before the watcher checks whether anyone still listens.
const WAIT_SLICE: Duration = Duration::from_secs(30);
/// Consecutive `wait` errors after which a container is taken as lost.
const WAIT_ERRORS: u32 = 5;
/// ECR tokens are renewed this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// After a failed `GetAuthorizationToken`, registries are used without it for this long.
const TOKEN_RETRY: Duration = Duration::from_secs(60);
/// How long `shutdown` lets queued reports go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The reason of a task stopped because an essential container exited (ECS's wording).
pub const ESSENTIAL_EXITED: &str = "Essential container in task exited";
const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";

/// Settings of the task runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Cluster name or ARN, sent with every report.
    pub cluster: String,
    /// The agent's data directory (`tasks/` lives there).
    pub data_dir: PathBuf,
    /// How long a stopped task's containers are kept before they are removed.
    pub task_cleanup_wait: Duration,
}

/// Errors of the runner.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    State(#[from] StateError),
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

/// The ECS `SubmitTaskStateChange` input for a task's current state.
pub fn task_state_change(cluster: &str, rec: &TaskRecord) -> Value {
    let containers: Vec<Value> = rec
        .containers
        .iter()
        .map(|c| {
            let mut v = json!({
                "containerName": c.name,
                "status": c.status.as_str(),
                "networkBindings": c.network_bindings,
            });
            if let Some(obj) = v.as_object_mut() {
                if let Some(id) = &c.runtime_id {
                    obj.insert("runtimeId".into(), json!(id));
                }
                if let Some(code) = c.exit_code {
                    obj.insert("exitCode".into(), json!(code));
                }
                if let Some(r) = &c.reason {
                    obj.insert("reason".into(), json!(truncate(r, 255)));
                }
                if let Some(d) = &c.image_digest {
                    obj.insert("imageDigest".into(), json!(d));
                }
                // Berth's extension of ECS's ContainerStateChange (see ARCHITECTURE.md).
                if let Some(h) = c.health_status {
                    obj.insert("healthStatus".into(), json!(h.as_str()));
                }
            }
            v
        })
        .collect();
    let mut v = json!({
        "cluster": cluster,
        "task": rec.task_arn,
        "status": rec.status.as_str(),
        "containers": containers,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(r) = &rec.stopped_reason {
            obj.insert("reason".into(), json!(truncate(r, 255)));
        }
        // Berth's extension of SubmitTaskStateChange: the task's address (awsvpc).
        if let Some(n) = &rec.task_network {
            obj.insert("taskNetwork".into(), json!(n));
        }
        for (k, t) in [
            ("pullStartedAt", rec.pull_started_at),
            ("pullStoppedAt", rec.pull_stopped_at),
            ("executionStoppedAt", rec.execution_stopped_at),
        ] {
            if let Some(t) = t {
                obj.insert(k.into(), json!(t));
            }
        }
    }
    v
}

/// At most `max` bytes of `s`, cut at a character boundary (ECS limits reasons to 255).
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// ECR credentials from the control plane, cached until shortly before they expire.
struct EcrAuth {
    control: Arc<dyn ControlClient>,
    state: Mutex<EcrState>,
}

enum EcrState {
    Unknown,
    Token { domain: String, token: EcrToken },
    Failed { at: tokio::time::Instant },
}

impl EcrAuth {
    /// Credentials for `image` when its registry is the ECR `proxyEndpoint`.
    async fn auth_for(&self, image: &str) -> Option<RegistryAuth> {
        let domain = image.parse::<ImageRef>().ok()?.domain;
        let mut state = self.state.lock().await;
        let refresh = match &*state {
            EcrState::Unknown => true,
            EcrState::Token { token, .. } => token.expires_at <= SystemTime::now() + TOKEN_MARGIN,
            EcrState::Failed { at } => at.elapsed() >= TOKEN_RETRY,
        };
        if refresh {
            *state = match self.control.get_authorization_token().await {
                Ok(token) => EcrState::Token {
                    domain: berth_engine::distribution::normalize_domain(&token.proxy_endpoint),
                    token,
                },
                Err(e) => {
                    tracing::info!(error = %error_chain(&e),
                        "no ECR authorization token; pulling with the engine's credentials");
                    EcrState::Failed {
                        at: tokio::time::Instant::now(),
                    }
                }
            };
        }
        match &*state {
            EcrState::Token { domain: d, token } if *d == domain => Some(RegistryAuth {
                domain,
                username: token.username.clone(),
                password: token.password.clone(),
            }),
            _ => None,
        }
    }
}

struct Ctx {
    cfg: RunnerConfig,
    store: TaskStore,
    runtime: Arc<dyn Runtime>,
    reporter: Reporter,
    ecr: EcrAuth,
    finished: mpsc::UnboundedSender<String>,
}

enum Cmd {
    /// The control plane's desired status (`RUNNING`/`STOPPED`) and stop reason.
    Desired {
        status: String,
        reason: Option<String>,
        /// The control plane's stop timeout, when it sets one.
        stop_timeout: Option<u64>,
    },
    /// The control plane no longer knows the task (or knows it as stopped): it must not run.
    /// Cleaned up after the usual wait, so its containers can still be looked at.
    Forget,
    /// A report of this status was accepted.
    Acked(TaskStatus),
}

struct TaskHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    join: JoinHandle<()>,
}

/// Runs the tasks assigned to this instance.
pub struct TaskRunner {
    ctx: Arc<Ctx>,
    tasks: HashMap<String, TaskHandle>,
    finished: mpsc::UnboundedReceiver<String>,
    /// Tasks this runner ran to the end (never started again).
    done: HashSet<String>,
    /// Assigned tasks the runner has no actor for, already reported STOPPED.
    reported_stopped: HashSet<String>,
    reporter_join: Option<JoinHandle<()>>,
    /// Prepull images in flight, and those pulled already (not pulled again).
    prepull: Arc<std::sync::Mutex<Prepull>>,
}

#[derive(Default)]
struct Prepull {
    in_flight: HashSet<String>,
    done: HashSet<String>,
}

impl TaskRunner {
    /// A runner over `runtime`, reporting to `control`.
    pub fn new(
        cfg: RunnerConfig,
        runtime: Arc<dyn Runtime>,
        control: Arc<dyn ControlClient>,
    ) -> TaskRunner {
        let (reporter, reporter_join) = Reporter::spawn(Arc::clone(&control));
        let (finished_tx, finished) = mpsc::unbounded_channel();
        let store = TaskStore::new(&cfg.data_dir);
        TaskRunner {
            ctx: Arc::new(Ctx {
                cfg,
                store,
                runtime,
                reporter,
                ecr: EcrAuth {
                    control,
                    state: Mutex::new(EcrState::Unknown),
                },
                finished: finished_tx,
            }),
            tasks: HashMap::new(),
            finished,
            done: HashSet::new(),
            reported_stopped: HashSet::new(),
            reporter_join: Some(reporter_join),
            prepull: Arc::default(),
        }
    }

    /// Takes over the tasks recorded in the data directory (after a restart): reattaches to
    /// their containers, notices those that exited meanwhile, resumes starts and stops.
    /// Returns how many tasks were found.
    pub fn reload(&mut self) -> Result<usize, RunnerError> {
        let records = self.ctx.store.load_all()?;
        let n = records.len();
        self.sweep_sandboxes(&records);
        for rec in records {
            if self.tasks.contains_key(&rec.task_arn) {
                continue;
            }
            tracing::info!(task = %rec.task_arn, status = rec.status.as_str(), "reattaching to a task");
            let arn = rec.task_arn.clone();
            let handle = spawn_actor(Arc::clone(&self.ctx), rec, None, true);
            self.tasks.insert(arn, handle);
        }
        Ok(n)
    }

    /// Removes the agent's sandboxes (`ecs-...`) that belong to no recorded task: left by a
    /// cleanup that failed, or by a crash. Runs before any task starts (blocking, a few ms
    /// per sandbox).
    fn sweep_sandboxes(&self, records: &[TaskRecord]) {
        let keep: HashSet<String> = records
            .iter()
            .flat_map(|r| [r.sandbox.clone(), Some(sandbox_name(&task_id(&r.task_arn)))])
            .flatten()
            .collect();
        let names = match self.ctx.runtime.sandboxes() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot list the engine's sandboxes");
                return;
            }
        };
        for name in names {
            if !name.starts_with(SANDBOX_PREFIX) || keep.contains(&name) {
                continue;
            }
            tracing::info!(sandbox = %name, "removing the sandbox of a task this agent no longer has");
            if let Err(e) = self.ctx.runtime.remove_sandbox(&name) {
                tracing::warn!(sandbox = %name, error = %error_chain(&e), "cannot remove a leftover sandbox");
            }
        }
    }

    /// Pulls, in the background, the images of `images` that the engine does not have (the
    /// poll's `prepullImages`), with the same registry credentials as a task's pull; each at
    /// most once at a time, and not again once pulled. Failures are logged.
    pub fn prepull(&self, images: &[String]) {
        for image in images {
            {
                let mut p = self.prepull.lock().unwrap_or_else(|p| p.into_inner());
                if p.done.contains(image) || !p.in_flight.insert(image.clone()) {
                    continue;
                }
            }
            let ctx = Arc::clone(&self.ctx);
            let state = Arc::clone(&self.prepull);
            let image = image.clone();
            tokio::spawn(async move {
                let rt = Arc::clone(&ctx.runtime);
                let img = image.clone();
                let present = tokio::task::spawn_blocking(move || rt.local_image(&img).is_some())
                    .await
                    .unwrap_or(false);
                let ok = if present {
                    true
                } else {
                    let auth = ctx.ecr.auth_for(&image).await;
                    let rt = Arc::clone(&ctx.runtime);
                    let img = image.clone();
                    let res = tokio::task::spawn_blocking(move || rt.pull(&img, auth.as_ref()))
                        .await
                        .map_err(|e| RuntimeError::Other(format!("pull task failed: {e}")))
                        .and_then(|r| r);
                    match res {
                        Ok(digest) => {
                            tracing::info!(%image, %digest, "prepulled an image");
                            true
                        }
                        Err(e) => {
                            tracing::warn!(%image, error = %error_chain(&e), "cannot prepull an image");
                            false
                        }
                    }
                };
                let mut p = state.lock().unwrap_or_else(|p| p.into_inner());
                p.in_flight.remove(&image);
                if ok {
                    p.done.insert(image);
                }
            });
        }
    }

    fn reap(&mut self) {
        while let Ok(arn) = self.finished.try_recv() {
            self.tasks.remove(&arn);
            self.done.insert(arn);
        }
        self.tasks.retain(|_, h| !h.join.is_finished());
    }

    /// Task ARNs whose containers the runner has (running or not cleaned up yet).
    pub fn known_tasks(&mut self) -> Vec<String> {
        self.reap();
        let mut v: Vec<String> = self.tasks.keys().cloned().collect();
        v.sort();
        v
    }

    /// Acts on a poll: starts new tasks, passes desired statuses on, stops the tasks the
    /// control plane no longer knows (their containers are removed after the cleanup wait).
    pub fn apply(&mut self, assigned: &[AssignedTask], unknown_tasks: &[String]) {
        self.reap();
        for t in assigned {
            if let Some(h) = self.tasks.get(&t.task_arn) {
                let _ = h.tx.send(Cmd::Desired {
                    status: t.desired_status.clone(),
                    reason: t.stopped_reason.clone(),
                    stop_timeout: t.stop_timeout_seconds,
                });
                continue;
            }
            if t.desired_status == "RUNNING" && !self.done.contains(&t.task_arn) {
                tracing::info!(task = %t.task_arn, "task assigned");
                let rec = new_record(t);
                let handle = spawn_actor(Arc::clone(&self.ctx), rec, None, false);
                self.tasks.insert(t.task_arn.clone(), handle);
                continue;
            }
            // Nothing of it here (never started, or already cleaned up): it is stopped.
            if self.reported_stopped.insert(t.task_arn.clone()) {
                let mut rec = new_record(t);
                rec.status = TaskStatus::Stopped;
                rec.stopped_reason = t
                    .stopped_reason
                    .clone()
                    .or_else(|| Some("The task is not running on this container instance".into()));
                rec.execution_stopped_at = Some(now_epoch());
                tracing::info!(task = %t.task_arn, "reporting an absent task as stopped");
                self.ctx.reporter.submit(
                    Report {
                        task_arn: rec.task_arn.clone(),
                        status: TaskStatus::Stopped,
                        body: task_state_change(&self.ctx.cfg.cluster, &rec),
                    },
                    None,
                );
            }
        }
        self.reported_stopped
            .retain(|a| assigned.iter().any(|t| t.task_arn == *a));
        for arn in unknown_tasks {
            if let Some(h) = self.tasks.get(arn) {
                tracing::info!(task = %arn, "the control plane no longer knows the task");
                let _ = h.tx.send(Cmd::Forget);
            }
        }
    }

    /// Stops the actors (not the containers) and lets queued reports go out for a moment.
    pub async fn shutdown(mut self) {
        for (_, h) in self.tasks.drain() {
            h.join.abort();
            let _ = h.join.await;
        }
        let join = self.reporter_join.take();
        drop(self);
        if let Some(mut join) = join {
            if tokio::time::timeout(FLUSH_TIMEOUT, &mut join)
                .await
                .is_err()
            {
                join.abort();
            }
        }
    }
}

impl Drop for TaskRunner {
    fn drop(&mut self) {
        for h in self.tasks.values() {
            h.join.abort();
        }
    }
}

fn new_record(t: &AssignedTask) -> TaskRecord {
    TaskRecord {
        task_arn: t.task_arn.clone(),
        family: t
            .task_definition
            .get("family")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        revision: t
            .task_definition
            .get("revision")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
        desired_status: t.desired_status.clone(),
        status: TaskStatus::None,
        acked_status: None,
        stopped_reason: None,
        containers: Vec::new(),
        pull_started_at: None,
        pull_stopped_at: None,
        execution_stopped_at: None,
        task_volumes: Vec::new(),
        task_definition: t.task_definition.clone(),
        overrides: t.overrides.clone(),
        network_configuration: t.network_configuration.clone(),
        launch_type: t.launch_type.clone(),
        stop_timeout_override: t.stop_timeout_seconds,
        task_network: None,
        sandbox: None,
    }
}

fn spawn_actor(
    ctx: Arc<Ctx>,
    rec: TaskRecord,
    plan: Option<TaskPlan>,
    reattach: bool,
) -> TaskHandle {
    let (tx, cmds) = mpsc::unbounded_channel();
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let (health_tx, health) = mpsc::unbounded_channel();
    let actor = Actor {
        ctx,
        rec,
        plan,
        cmds,
        self_tx: tx.clone(),
        exits_tx,
        exits,
        health_tx,
        health,
        checkers: HashMap::new(),
        watched: HashSet::new(),
        stop_reason: None,
    };
    let join = tokio::spawn(actor.run(reattach));
    TaskHandle { tx, join }
}

/// Why a start did not complete.
enum StartError {
    /// A stop was asked for meanwhile.
    Interrupted,
    /// The task fails: this reason (and, for one container, its reason).
    Failed {
        reason: String,
        container: Option<String>,
    },
}

struct Actor {
    ctx: Arc<Ctx>,
    rec: TaskRecord,
    plan: Option<TaskPlan>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    self_tx: mpsc::UnboundedSender<Cmd>,
    exits_tx: mpsc::UnboundedSender<(String, Exit)>,
    exits: mpsc::UnboundedReceiver<(String, Exit)>,
    /// Health changes from the containers' checkers.
    health_tx: mpsc::UnboundedSender<(String, HealthStatus)>,
    health: mpsc::UnboundedReceiver<(String, HealthStatus)>,
    /// Running health checkers, by container name (aborted when it stops, and on drop).
    checkers: HashMap<String, JoinHandle<()>>,
    /// Containers with a watcher thread.
    watched: HashSet<String>,
    /// A stop asked for (reason).
    stop_reason: Option<String>,
}

impl Drop for Actor {
    fn drop(&mut self) {
        for h in self.checkers.values() {
            h.abort();
        }
    }
}

impl Actor {
    fn arn(&self) -> &str {
        &self.rec.task_arn
    }

    fn save(&self) {
        if let Err(e) = self.ctx.store.save(&self.rec) {
            tracing::error!(task = %self.arn(), error = %error_chain(&e), "cannot save the task state");
        }
    }

    /// Saves, then queues a report of the current state.
    fn report(&self) {
        self.save();
        let tx = self.self_tx.clone();
        self.ctx.reporter.submit(
            Report {
                task_arn: self.rec.task_arn.clone(),
                status: self.rec.status,
                body: task_state_change(&self.ctx.cfg.cluster, &self.rec),
            },
            Some(Box::new(move |r: &Report| {
                let _ = tx.send(Cmd::Acked(r.status));
            })),
        );
    }

    fn set_status(&mut self, status: TaskStatus) {
        tracing::info!(task = %self.arn(), status = status.as_str(), "task status");
        self.rec.status = status;
        self.report();
    }

    fn on_ack(&mut self, status: TaskStatus) {
        if self.rec.acked_status.is_none_or(|a| a < status) {
            self.rec.acked_status = Some(status);
            self.save();
        }
    }

    /// Handles a command; returns true when the task must stop.
    fn on_cmd(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Desired {
                status,
                reason,
                stop_timeout,
            } => {
                let timeout_changed =
                    stop_timeout.is_some() && stop_timeout != self.rec.stop_timeout_override;
                if timeout_changed {
                    self.rec.stop_timeout_override = stop_timeout;
                }
                if status != self.rec.desired_status || timeout_changed {
                    self.rec.desired_status = status.clone();
                    self.save();
                }
                if status == "STOPPED" {
                    if self.stop_reason.is_none() {
                        self.stop_reason =
                            Some(reason.unwrap_or_else(|| "Task stopped".to_string()));
                    }
                    return true;
                }
                false
            }
            Cmd::Forget => {
                if self.stop_reason.is_none() {
                    self.stop_reason = Some("The task is unknown to the control plane".to_string());
                }
                true
            }
            Cmd::Acked(s) => {
                self.on_ack(s);
                false
            }
        }
    }

    /// Takes the commands already queued; returns true when the task must stop.
    fn drain_cmds(&mut self) -> bool {
        let mut stop = false;
        while let Ok(cmd) = self.cmds.try_recv() {
            stop |= self.on_cmd(cmd);
        }
        stop
    }

    async fn run(mut self, reattach: bool) {
        if reattach
            && self.rec.acked_status != Some(self.rec.status)
            && self.rec.status != TaskStatus::None
        {
            // What the control plane may not have heard yet.
            self.report();
        }
        if self.rec.desired_status == "STOPPED" && self.stop_reason.is_none() {
            self.stop_reason = Some("Task stopped".into());
        }
        let status = self.rec.status;
        if status < TaskStatus::Running {
            if self.stop_reason.is_some() || self.drain_cmds() {
                self.stop_task().await;
            } else {
                match self.start().await {
                    Ok(()) => {}
                    Err(StartError::Interrupted) => self.stop_task().await,
                    Err(StartError::Failed { reason, container }) => {
                        tracing::warn!(task = %self.arn(), %reason, "task failed to start");
                        if let Some(name) = container {
                            if let Some(c) = self.rec.container_mut(&name) {
                                c.reason = Some(reason.clone());
                            }
                        }
                        self.stop_reason = Some(reason);
                        self.stop_task().await;
                    }
                }
            }
        } else if status == TaskStatus::Running {
            self.reattach().await;
        } else if status < TaskStatus::Stopped {
            if self.stop_reason.is_none() {
                self.stop_reason = self.rec.stopped_reason.clone();
            }
            self.stop_task().await;
        }
        if self.rec.status == TaskStatus::Running {
            if self.drain_cmds() {
                self.stop_task().await;
            } else {
                self.watch().await;
            }
        }
        if self.rec.status == TaskStatus::Stopped {
            self.wait_cleanup().await;
            self.cleanup().await;
        }
    }

    fn plan(&mut self) -> Result<TaskPlan, StartError> {
        if let Some(p) = &self.plan {
            return Ok(p.clone());
        }
        let plan = plan_task(
            &self.rec.task_arn,
            &self.rec.task_definition,
            self.rec.overrides.as_ref(),
            self.rec.network_configuration.as_ref(),
        )
        .map_err(|e| StartError::Failed {
            reason: format!("CannotCreateContainerError: {}", error_chain(&e)),
            container: None,
        })?;
        if !plan.unsupported.is_empty() {
            tracing::info!(task = %self.rec.task_arn, unsupported = ?plan.unsupported,
                "task fields not carried out by the engine (ignored)");
        }
        // Container records: names kept from an earlier run of this task.
        let mut containers = Vec::with_capacity(plan.containers.len());
        for (level, idxs) in plan.levels.iter().enumerate() {
            for &i in idxs {
                let c = &plan.containers[i];
                let existing = self.rec.container(&c.name).cloned();
                containers.push((
                    i,
                    existing.unwrap_or_else(|| ContainerRecord {
                        name: c.name.clone(),
                        engine_name: c.run.name.clone().unwrap_or_default(),
                        runtime_id: None,
                        essential: c.essential,
                        status: ContainerStatus::Pending,
                        exit_code: None,
                        reason: None,
                        image_digest: None,
                        network_bindings: Vec::new(),
                        stop_timeout_secs: c.stop_timeout.as_secs(),
                        level,
                        health_status: c.health_check.as_ref().map(|_| HealthStatus::Unknown),
                    }),
                ));
            }
        }
        containers.sort_by_key(|(i, _)| *i);
        let mut plan = plan;
        for (i, rec) in &mut containers {
            plan.containers[*i].run.name = Some(rec.engine_name.clone());
            if rec.health_status.is_none() && plan.containers[*i].health_check.is_some() {
                rec.health_status = Some(HealthStatus::Unknown);
            }
        }
        self.rec.containers = containers.into_iter().map(|(_, r)| r).collect();
        self.rec.family = plan.family.clone();
        self.rec.revision = plan.revision;
        self.rec.task_volumes = plan.task_volumes.clone();
        self.save();
        self.plan = Some(plan.clone());
        Ok(plan)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Runtime) -> T + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let rt = Arc::clone(&self.ctx.runtime);
        tokio::task::spawn_blocking(move || f(rt.as_ref()))
            .await
            .map_err(|e| RuntimeError::Other(format!("engine call failed: {e}")))
    }

    async fn start(&mut self) -> Result<(), StartError> {
        let plan = self.plan()?;
        if self.rec.status < TaskStatus::Pending {
            self.rec.pull_started_at = Some(now_epoch());
            self.set_status(TaskStatus::Pending);
        }
        // Pull: always try the registry, fall back to a local image.
        let mut digests: HashMap<String, String> = HashMap::new();
        for c in &plan.containers {
            if self.drain_cmds() {
                return Err(StartError::Interrupted);
            }
            let image = c.run.image.clone();
            if let Some(d) = digests.get(&image) {
                let d = d.clone();
                if let Some(r) = self.rec.container_mut(&c.name) {
                    r.image_digest = Some(d);
                }
                continue;
            }
            let auth = self.ctx.ecr.auth_for(&image).await;
            let img = image.clone();
            let pulled = self
                .blocking(move |rt| match rt.pull(&img, auth.as_ref()) {
                    Ok(d) => Ok(d),
                    Err(e) => match rt.local_image(&img) {
                        Some(local) => {
                            tracing::info!(image = %img, error = %error_chain(&e),
                                "pull failed; using the local image");
                            Ok(local)
                        }
                        None => Err(e),
                    },
                })
                .await;
            let digest = match pulled {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    return Err(StartError::Failed {
                        reason: format!("CannotPullContainerError: {}", error_chain(&e)),
                        container: Some(c.name.clone()),
                    })
                }
                Err(e) => {
                    return Err(StartError::Failed {
                        reason: format!("CannotPullContainerError: {}", error_chain(&e)),
                        container: Some(c.name.clone()),
                    })
                }
            };
            tracing::debug!(task = %self.arn(), image = %image, %digest, "image ready");
            digests.insert(image, digest.clone());
            if let Some(r) = self.rec.container_mut(&c.name) {
                r.image_digest = Some(digest);
            }
        }
        if self.rec.status < TaskStatus::Activating {
            self.rec.pull_stopped_at = Some(now_epoch());
            self.set_status(TaskStatus::Activating);
        }
        if let NetworkPlan::Awsvpc { network } = &plan.network {
            let name = network.clone();
            let res = self.blocking(move |rt| rt.ensure_network(&name)).await;
            if let Err(e) = res.and_then(|r| r) {
                return Err(StartError::Failed {
                    reason: format!("ResourceInitializationError: {}", error_chain(&e)),
                    container: None,
                });
            }
        }
        self.create_sandbox(&plan).await?;
        for idx in plan.start_order() {
            if self.drain_cmds() {
                return Err(StartError::Interrupted);
            }
            let c = &plan.containers[idx];
            // Resumed start: a container already created.
            if let Some(found) = self.find_existing(&c.name).await {
                self.adopt(&c.name, found);
                continue;
            }
            for (dep, cond) in &c.depends_on {
                if *cond == Condition::Healthy {
                    self.wait_healthy(dep, &c.name).await?;
                    continue;
                }
                if !cond.needs_exit() {
                    continue;
                }
                let exit = self.wait_exit(dep).await?;
                if *cond == Condition::Success && exit.exit_code != Some(0) {
                    return Err(StartError::Failed {
                        reason: format!(
                            "CannotStartContainerError: dependency {dep} of container {} exited with {} (condition SUCCESS)",
                            c.name,
                            exit.exit_code.map_or("an unknown code".to_string(), |c| format!("code {c}"))
                        ),
                        container: Some(c.name.clone()),
                    });
                }
            }
            let spec = c.run.clone();
            let res = self.blocking(move |rt| rt.run(&spec)).await;
            match res.and_then(|r| r) {
                Ok(container) => {
                    tracing::info!(task = %self.arn(), container = %c.name, id = %container.id, "container started");
                    self.adopt(&c.name, container);
                }
                Err(e) => {
                    let kind = match &e {
                        RuntimeError::Container(berth_engine::ContainerError::StartFailed {
                            ..
                        }) => "CannotStartContainerError",
                        _ => "CannotCreateContainerError",
                    };
                    return Err(StartError::Failed {
                        reason: format!("{kind}: {}", error_chain(&e)),
                        container: Some(c.name.clone()),
                    });
                }
            }
        }
        self.set_status(TaskStatus::Running);
        Ok(())
    }

    /// Creates the task's sandbox (idempotent: a resumed start finds it again); records its
    /// name before (so cleanup removes even a half-made one) and its address after.
    async fn create_sandbox(&mut self, plan: &TaskPlan) -> Result<(), StartError> {
        if self.rec.sandbox.is_none() {
            self.rec.sandbox = Some(plan.sandbox.name.clone());
            self.save();
        }
        let spec = SandboxSpec {
            name: plan.sandbox.name.clone(),
            network: plan.sandbox.network.clone(),
            cpu_units: plan.sandbox.cpu_units,
            memory_bytes: plan.sandbox.memory_bytes,
            storage_bytes: ephemeral_storage_bytes(
                &self.rec.task_definition,
                self.rec.launch_type.as_deref(),
            ),
        };
        let res = self.blocking(move |rt| rt.create_sandbox(&spec)).await;
        match res.and_then(|r| r) {
            Ok(addr) => {
                let net = addr.map(|a| TaskNetwork {
                    network: a.network,
                    private_ipv4_address: a.ip.to_string(),
                    mac_address: Some(a.mac),
                });
                if net != self.rec.task_network {
                    self.rec.task_network = net;
                    self.save();
                }
                Ok(())
            }
            Err(e) => Err(StartError::Failed {
                reason: format!("ResourceInitializationError: {}", error_chain(&e)),
                container: None,
            }),
        }
    }

    /// A container of this task the engine already has (created before a restart).
    async fn find_existing(&self, name: &str) -> Option<Container> {
        let rec = self.rec.container(name)?;
        let key = rec
            .runtime_id
            .clone()
            .unwrap_or_else(|| rec.engine_name.clone());
        if key.is_empty() {
            return None;
        }
        match self.blocking(move |rt| rt.inspect(&key)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(task = %self.arn(), container = %name, error = %error_chain(&e),
                    "cannot inspect a container");
                None
            }
        }
    }

    /// Records a created container and watches it (or records its exit).
    fn adopt(&mut self, name: &str, container: Container) {
        let ports = self
            .plan
            .as_ref()
            .and_then(|p| p.containers.iter().find(|c| c.name == name))
            .map(|c| c.ports.clone())
            .unwrap_or_default();
        let network = self.plan.as_ref().map(|p| p.network.clone());
        let task_ip = self
            .rec
            .task_network
            .as_ref()
            .map(|n| n.private_ipv4_address.clone());
        let Some(rec) = self.rec.container_mut(name) else {
            return;
        };
        rec.runtime_id = Some(container.id.clone());
        rec.network_bindings = if !container.published.is_empty() {
            container.published.clone()
        } else {
            let bind_ip = match (&network, container.ip, &task_ip) {
                (Some(NetworkPlan::Awsvpc { .. }), _, Some(ip)) => ip.clone(),
                (Some(NetworkPlan::Awsvpc { .. }), Some(ip), None) => ip.to_string(),
                _ => "0.0.0.0".to_string(),
            };
            ports
                .iter()
                .map(|p| NetworkBinding {
                    bind_ip: bind_ip.clone(),
                    container_port: p.container_port,
                    host_port: p.host_port,
                    protocol: p.protocol.clone(),
                })
                .collect()
        };
        match container.state {
            State::Running | State::Created => {
                rec.status = ContainerStatus::Running;
                let id = container.id;
                self.save();
                self.watch_container(name, &id);
                self.start_health(name, &id);
            }
            State::Exited(exit) => {
                self.save();
                // Through the channel, so the usual exit handling applies.
                let _ = self.exits_tx.send((name.to_string(), exit));
            }
        }
    }

    fn watch_container(&mut self, name: &str, id: &str) {
        if !self.watched.insert(name.to_string()) {
            return;
        }
        let rt = Arc::clone(&self.ctx.runtime);
        let tx = self.exits_tx.clone();
        let (name, id) = (name.to_string(), id.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("wait-{}", &id[..id.len().min(12)]))
            .spawn(move || {
                let mut errors = 0;
                loop {
                    if tx.is_closed() {
                        return;
                    }
                    match rt.wait(&id, WAIT_SLICE) {
                        Ok(Some(exit)) => {
                            let _ = tx.send((name, exit));
                            return;
                        }
                        Ok(None) => errors = 0,
                        Err(e) => {
                            errors += 1;
                            if errors >= WAIT_ERRORS {
                                let _ = tx.send((
                                    name,
                                    Exit::lost(format!(
                                        "cannot wait for the container: {}",
                                        error_chain(&e)
                                    )),
                                ));
                                return;
                            }
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            });
        if let Err(e) = thread {
            tracing::error!(task = %self.arn(), error = %e, "cannot start a container watcher");
        }
    }

    /// Starts the container's health checker (if it has a health check and none runs).
    fn start_health(&mut self, name: &str, id: &str) {
        if self.checkers.contains_key(name) {
            return;
        }
        let Some(check) = self
            .plan
            .as_ref()
            .and_then(|p| p.containers.iter().find(|c| c.name == name))
            .and_then(|c| c.health_check.clone())
        else {
            return;
        };
        let initial = self
            .rec
            .container(name)
            .and_then(|c| c.health_status)
            .unwrap_or_default();
        // A container already found healthy or unhealthy (after an agent restart) is past its
        // start period.
        let start_period_left = if initial == HealthStatus::Unknown {
            check.start_period
        } else {
            Duration::ZERO
        };
        tracing::debug!(task = %self.arn(), container = %name, ?check, "starting health checks");
        let join = tokio::spawn(health::run_checks(
            Arc::clone(&self.ctx.runtime),
            name.to_string(),
            id.to_string(),
            check,
            initial,
            start_period_left,
            self.health_tx.clone(),
        ));
        self.checkers.insert(name.to_string(), join);
    }

    fn stop_health(&mut self, name: &str) {
        if let Some(h) = self.checkers.remove(name) {
            h.abort();
        }
    }

    /// Records a health change of a running container and reports it (the task's status does
    /// not change: an UNHEALTHY essential container does not stop the task, as in ECS).
    fn on_health(&mut self, name: &str, status: HealthStatus) {
        let Some(c) = self.rec.container_mut(name) else {
            return;
        };
        if c.status == ContainerStatus::Stopped || c.health_status == Some(status) {
            return;
        }
        c.health_status = Some(status);
        tracing::info!(task = %self.rec.task_arn, container = %name, health = status.as_str(),
            "container health");
        self.report();
    }

    /// Waits (during a start) for a dependency to be HEALTHY; fails the start when it exits
    /// first or turns UNHEALTHY.
    async fn wait_healthy(&mut self, dep: &str, container: &str) -> Result<(), StartError> {
        loop {
            let problem = match self.rec.container(dep) {
                Some(c) if c.health_status == Some(HealthStatus::Healthy) => return Ok(()),
                Some(c) if c.status == ContainerStatus::Stopped => Some("exited"),
                Some(c) if c.health_status == Some(HealthStatus::Unhealthy) => Some("is UNHEALTHY"),
                Some(_) => None,
                None => Some("is not in the task"),
            };
            if let Some(p) = problem {
                return Err(StartError::Failed {
                    reason: format!(
                        "CannotStartContainerError: dependency {dep} of container {container} {p} (condition HEALTHY)"
                    ),
                    container: Some(container.to_string()),
                });
            }
            tokio::select! {
                Some((n, exit)) = self.exits.recv() => {
                    self.record_exit(&n, &exit);
                }
                Some((n, status)) = self.health.recv() => self.on_health(&n, status),
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => if self.on_cmd(cmd) { return Err(StartError::Interrupted) },
                    None => std::future::pending::<()>().await,
                },
            }
        }
    }

    /// Records an exit; returns whether it is news.
    fn record_exit(&mut self, name: &str, exit: &Exit) -> bool {
        self.stop_health(name);
        let Some(c) = self.rec.container_mut(name) else {
            return false;
        };
        if c.status == ContainerStatus::Stopped {
            return false;
        }
        c.status = ContainerStatus::Stopped;
        c.exit_code = exit.exit_code;
        if exit.oom_killed {
            c.reason = Some(OOM_REASON.into());
        } else if let Some(r) = &exit.reason {
            c.reason = Some(r.clone());
        }
        tracing::info!(task = %self.rec.task_arn, container = %name, exit_code = ?exit.exit_code,
            "container exited");
        self.save();
        true
    }

    /// Waits (during a start) for a dependency to exit.
    async fn wait_exit(&mut self, name: &str) -> Result<Exit, StartError> {
        loop {
            if let Some(c) = self.rec.container(name) {
                if c.status == ContainerStatus::Stopped {
                    return Ok(Exit {
                        exit_code: c.exit_code,
                        oom_killed: false,
                        reason: c.reason.clone(),
                    });
                }
            }
            tokio::select! {
                Some((n, exit)) = self.exits.recv() => {
                    self.record_exit(&n, &exit);
                }
                Some((n, status)) = self.health.recv() => self.on_health(&n, status),
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => if self.on_cmd(cmd) { return Err(StartError::Interrupted) },
                    None => std::future::pending::<()>().await,
                },
            }
        }
    }

    /// After a restart: watch the running containers again, take note of those that exited.
    async fn reattach(&mut self) {
        // The plan gives the health checks and ports (container records are kept as they are).
        if let Err(StartError::Failed { reason, .. }) = self.plan() {
            tracing::warn!(task = %self.arn(), %reason, "cannot plan the task again; no health checks");
        }
        let names: Vec<String> = self
            .rec
            .containers
            .iter()
            .filter(|c| c.status != ContainerStatus::Stopped)
            .map(|c| c.name.clone())
            .collect();
        for name in names {
            match self.find_existing(&name).await {
                Some(found) => self.adopt(&name, found),
                None => {
                    let _ = self.exits_tx.send((
                        name,
                        Exit::lost("the container is gone (found missing after an agent restart)"),
                    ));
                }
            }
        }
    }

    /// While RUNNING: container exits and commands.
    async fn watch(&mut self) {
        while self.rec.status == TaskStatus::Running {
            tokio::select! {
                Some((name, exit)) = self.exits.recv() => {
                    if !self.record_exit(&name, &exit) {
                        continue;
                    }
                    let essential = self.rec.container(&name).is_some_and(|c| c.essential);
                    if essential {
                        self.stop_reason.get_or_insert_with(|| ESSENTIAL_EXITED.to_string());
                        self.stop_task().await;
                    } else {
                        // A container state change; the task stays RUNNING.
                        self.report();
                    }
                }
                Some((name, status)) = self.health.recv() => self.on_health(&name, status),
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => if self.on_cmd(cmd) { self.stop_task().await },
                    // The runner is gone: leave the containers as they are.
                    None => std::future::pending::<()>().await,
                },
            }
        }
    }

    /// Stops the task: DEACTIVATING, STOPPING, containers stopped in reverse dependency
    /// order, DEPROVISIONING, STOPPED (a task that never ran goes to STOPPED directly).
    async fn stop_task(&mut self) {
        for (_, h) in self.checkers.drain() {
            h.abort();
        }
        if self.rec.stopped_reason.is_none() {
            self.rec.stopped_reason = self.stop_reason.clone();
        }
        let ran = self.rec.status >= TaskStatus::Running;
        if ran && self.rec.status < TaskStatus::Deactivating {
            self.set_status(TaskStatus::Deactivating);
        }
        if ran && self.rec.status < TaskStatus::Stopping {
            self.set_status(TaskStatus::Stopping);
        }
        self.stop_containers().await;
        if ran && self.rec.status < TaskStatus::Deprovisioning {
            self.set_status(TaskStatus::Deprovisioning);
        }
        for c in &mut self.rec.containers {
            c.status = ContainerStatus::Stopped;
        }
        self.rec.execution_stopped_at = Some(now_epoch());
        self.set_status(TaskStatus::Stopped);
    }

    async fn stop_containers(&mut self) {
        let max_level = self
            .rec
            .containers
            .iter()
            .map(|c| c.level)
            .max()
            .unwrap_or(0);
        for level in (0..=max_level).rev() {
            let batch: Vec<(String, String, Duration)> = self
                .rec
                .containers
                .iter()
                .filter(|c| c.level == level && c.status != ContainerStatus::Stopped)
                .filter_map(|c| {
                    let secs = self
                        .rec
                        .stop_timeout_override
                        .unwrap_or(c.stop_timeout_secs);
                    c.runtime_id
                        .clone()
                        .map(|id| (c.name.clone(), id, Duration::from_secs(secs)))
                })
                .collect();
            let mut joins = Vec::new();
            for (name, id, timeout) in batch {
                let rt = Arc::clone(&self.ctx.runtime);
                joins.push((
                    name,
                    tokio::task::spawn_blocking(move || rt.stop(&id, timeout)),
                ));
            }
            for (name, join) in joins {
                let exit = match join.await {
                    Ok(Ok(Some(exit))) => exit,
                    Ok(Ok(None)) => Exit::lost("the container is gone"),
                    Ok(Err(e)) => {
                        tracing::error!(task = %self.arn(), container = %name, error = %error_chain(&e),
                            "cannot stop a container");
                        Exit::lost(format!("cannot stop the container: {}", error_chain(&e)))
                    }
                    Err(e) => Exit::lost(format!("cannot stop the container: {e}")),
                };
                self.record_exit(&name, &exit);
            }
        }
    }

    /// Waits `task_cleanup_wait` after the stop.
    async fn wait_cleanup(&mut self) {
        let stopped = self.rec.execution_stopped_at.unwrap_or_else(now_epoch);
        let elapsed = Duration::from_secs_f64((now_epoch() - stopped).max(0.0));
        let left = self.ctx.cfg.task_cleanup_wait.saturating_sub(elapsed);
        let deadline = tokio::time::Instant::now() + left;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => { self.on_cmd(cmd); }
                    None => std::future::pending::<()>().await,
                },
                Some(_) = self.exits.recv() => {}
            }
        }
    }

    /// Removes the containers and task-scoped volumes, then the task's record.
    async fn cleanup(&mut self) {
        tracing::info!(task = %self.arn(), "cleaning up the task's containers");
        let keys: Vec<String> = self
            .rec
            .containers
            .iter()
            .filter_map(|c| {
                c.runtime_id
                    .clone()
                    .or_else(|| Some(c.engine_name.clone()).filter(|n| !n.is_empty()))
            })
            .collect();
        let volumes = self.rec.task_volumes.clone();
        let arn = self.rec.task_arn.clone();
        let sandbox = self.rec.sandbox.clone();
        let res = self
            .blocking(move |rt| {
                for k in &keys {
                    if let Err(e) = rt.remove(k) {
                        tracing::warn!(task = %arn, container = %k, error = %error_chain(&e),
                            "cannot remove a container");
                    }
                }
                if let Some(sb) = &sandbox {
                    if let Err(e) = rt.remove_sandbox(sb) {
                        tracing::warn!(task = %arn, sandbox = %sb, error = %error_chain(&e),
                            "cannot remove the task's sandbox");
                    }
                }
                for v in &volumes {
                    if let Err(e) = rt.remove_volume(v) {
                        tracing::warn!(task = %arn, volume = %v, error = %error_chain(&e),
                            "cannot remove a task volume");
                    }
                }
            })
            .await;
        if let Err(e) = res {
            tracing::warn!(task = %self.arn(), error = %error_chain(&e), "cleanup failed");
        }
        if let Err(e) = self.ctx.store.remove(&self.rec.task_arn) {
            tracing::warn!(task = %self.arn(), error = %error_chain(&e), "cannot remove the task state file");
        }
        let _ = self.ctx.finished.send(self.rec.task_arn.clone());
    }
}

#[cfg(test)]
mod tests;
