//! The engine as the task runner sees it: a small blocking trait (so the runner's logic is
//! tested without root through a fake) and its implementation over [`berth_engine::Engine`].
//!
//! Every method blocks (the engine is synchronous and spawns a shim per container): the runner
//! calls them from `spawn_blocking` or its own threads.

use std::time::Duration;

use berth_engine::distribution::{Credentials, NoProgress};
use berth_engine::{
    ContainerError, ContainerInfo, ContainerState, DistributionError, Engine, ImageError,
    RegistryOptions, RunSpec, SandboxSpec,
};
use berth_runtime::shim::ShimError;

use crate::state::NetworkBinding;

/// Errors of the engine behind the runner.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Distribution(#[from] DistributionError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot create network {name}")]
    Network {
        name: String,
        #[source]
        source: berth_net::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Registry credentials for one pull.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry domain (`127.0.0.1:5000`).
    pub domain: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("domain", &self.domain)
            .field("username", &self.username)
            .finish()
    }
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// `None` when unknown (the container was lost).
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    /// Set when the exit is not a plain process exit (lost container).
    pub reason: Option<String>,
}

impl Exit {
    pub fn code(code: i32) -> Exit {
        Exit {
            exit_code: Some(code),
            oom_killed: false,
            reason: None,
        }
    }

    pub fn lost(reason: impl Into<String>) -> Exit {
        Exit {
            exit_code: None,
            oom_killed: false,
            reason: Some(reason.into()),
        }
    }
}

/// A container's state in the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Created, never started.
    Created,
    Running,
    Exited(Exit),
}

/// A container as the engine has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Published ports with their actual host ports.
    pub published: Vec<NetworkBinding>,
    /// Its address on a bridge network.
    pub ip: Option<std::net::Ipv4Addr>,
    pub state: State,
}

/// Where a task's sandbox is on its network (ECS's task ENI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxAddress {
    pub network: String,
    pub ip: std::net::Ipv4Addr,
    pub mac: String,
}

/// The result of one health-check probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The command ran to its end with this exit code.
    Exit { code: i32 },
    /// It ran longer than the timeout and was killed.
    TimedOut,
    /// It could not be run.
    Error(String),
}

/// A probe that has not returned this long after the check's timeout is abandoned: `berth
/// exec` kills the command at the timeout itself; this bounds its own start-up too.
const EXEC_GRACE: Duration = Duration::from_secs(2);
/// The most output of a failed probe that is logged.
const PROBE_OUTPUT: usize = 1024;

/// What the runner asks of the engine.
///
/// Every method but [`Runtime::exec_check`] blocks (call them from `spawn_blocking`).
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Pulls `image` from its registry; returns the digest the reference resolved to.
    fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<String, RuntimeError>;
    /// The manifest digest of `image` if it is present locally.
    fn local_image(&self, image: &str) -> Option<String>;
    /// Creates the bridge network `name` unless it exists.
    fn ensure_network(&self, name: &str) -> Result<(), RuntimeError>;
    /// Creates the task sandbox `spec.name` unless it exists (idempotent); returns its address
    /// when it has a network.
    fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Option<SandboxAddress>, RuntimeError>;
    /// Removes a sandbox (its namespace, address, cgroups); a missing one is not an error.
    fn remove_sandbox(&self, name: &str) -> Result<(), RuntimeError>;
    /// The names of the engine's sandboxes.
    fn sandboxes(&self) -> Result<Vec<String>, RuntimeError>;
    /// Creates and starts a container (detached).
    fn run(&self, spec: &RunSpec) -> Result<Container, RuntimeError>;
    /// A container by name or id; `None` when there is none.
    fn inspect(&self, name_or_id: &str) -> Result<Option<Container>, RuntimeError>;
    /// Waits up to `timeout` for a container to exit (`None`: still running).
    fn wait(&self, id: &str, timeout: Duration) -> Result<Option<Exit>, RuntimeError>;
    /// The stop signal, then SIGKILL after `timeout`. `None`: no such container.
    fn stop(&self, id: &str, timeout: Duration) -> Result<Option<Exit>, RuntimeError>;
    /// Removes a container (killing it if needed) and its anonymous volumes; a missing one is
    /// not an error.
    fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Removes a volume; a missing one is not an error.
    fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;
    /// Runs `cmd` in the running container `id` (a health check), killing it after `timeout`.
    /// Returns within about `timeout`; dropping the future kills what it started.
    async fn exec_check(&self, id: &str, cmd: &[String], timeout: Duration) -> Probe;
}

/// [`Runtime`] over the engine.
#[derive(Debug, Clone)]
pub struct EngineRuntime {
    engine: Engine,
    registry: RegistryOptions,
}

impl EngineRuntime {
    pub fn new(engine: Engine, registry: RegistryOptions) -> EngineRuntime {
        EngineRuntime { engine, registry }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

fn container_of(info: &ContainerInfo) -> Container {
    let att = info.record.network_attachment.as_ref();
    Container {
        id: info.record.id.clone(),
        published: att
            .map(|a| {
                a.ports
                    .iter()
                    .map(|p| NetworkBinding {
                        bind_ip: p.host_ip.to_string(),
                        container_port: p.container_port,
                        host_port: p.host_port,
                        protocol: p.protocol.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ip: att.map(|a| a.ip),
        state: match &info.state {
            ContainerState::Created => State::Created,
            ContainerState::Running { .. } => State::Running,
            ContainerState::Exited(e) => State::Exited(Exit {
                exit_code: Some(e.exit_code),
                oom_killed: e.oom_killed,
                reason: None,
            }),
            ContainerState::Lost { .. } => State::Exited(Exit::lost(LOST)),
        },
    }
}

const LOST: &str = "the container's shim is gone without an exit status";

#[async_trait::async_trait]
impl Runtime for EngineRuntime {
    fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<String, RuntimeError> {
        let mut opts = self.registry.clone();
        if let Some(a) = auth {
            opts.auth = opts.auth.with_credentials(
                &a.domain,
                Credentials {
                    username: a.username.clone(),
                    password: a.password.clone(),
                },
            );
        }
        let r = self.engine.pull(image, None, &opts, &NoProgress)?;
        Ok(r.digest.to_string())
    }

    fn local_image(&self, image: &str) -> Option<String> {
        self.engine
            .resolve_image(image)
            .ok()
            .map(|i| i.manifest_digest.to_string())
    }

    fn ensure_network(&self, name: &str) -> Result<(), RuntimeError> {
        let store = self.engine.network_store()?;
        let err = |source| RuntimeError::Network {
            name: name.to_string(),
            source,
        };
        match store.get(name) {
            Ok(_) => return Ok(()),
            Err(berth_net::Error::NetworkNotFound(_)) => {}
            Err(e) => return Err(err(e)),
        }
        let mut opts = berth_net::CreateOptions::default();
        opts.labels
            .insert("com.amazonaws.ecs.network".into(), "awsvpc".into());
        match store.create(name, opts) {
            Ok(info) => {
                tracing::info!(network = %name, subnet = %info.subnet, "created the network of an awsvpc subnet");
                Ok(())
            }
            Err(berth_net::Error::NetworkExists(_)) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Option<SandboxAddress>, RuntimeError> {
        let info = self.engine.create_sandbox(spec)?;
        Ok(info.network.map(|n| SandboxAddress {
            network: n.network,
            ip: n.ip,
            mac: n.mac,
        }))
    }

    fn remove_sandbox(&self, name: &str) -> Result<(), RuntimeError> {
        Ok(self.engine.remove_sandbox(name)?)
    }

    fn sandboxes(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .engine
            .sandboxes()?
            .into_iter()
            .map(|s| s.name)
            .collect())
    }

    fn run(&self, spec: &RunSpec) -> Result<Container, RuntimeError> {
        let record = self.engine.run(spec)?;
        match self.engine.container(&record.id) {
            Ok(info) => Ok(container_of(&info)),
            // Gone already (removed by someone): report what was started.
            Err(ContainerError::NotFound(_)) => Ok(Container {
                id: record.id.clone(),
                published: Vec::new(),
                ip: None,
                state: State::Exited(Exit::lost("the container was removed")),
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn inspect(&self, name_or_id: &str) -> Result<Option<Container>, RuntimeError> {
        match self.engine.container(name_or_id) {
            Ok(info) => Ok(Some(container_of(&info))),
            Err(ContainerError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn wait(&self, id: &str, timeout: Duration) -> Result<Option<Exit>, RuntimeError> {
        match self.engine.wait(id, timeout) {
            Ok(Some(e)) => Ok(Some(Exit {
                exit_code: Some(e.exit_code),
                oom_killed: e.oom_killed,
                reason: None,
            })),
            Ok(None) => Ok(None),
            Err(ContainerError::Shim(ShimError::Lost(_))) => Ok(Some(Exit::lost(LOST))),
            Err(e) => {
                // The container may have been removed meanwhile.
                match self.engine.container(id) {
                    Err(ContainerError::NotFound(_)) => {
                        Ok(Some(Exit::lost("the container was removed")))
                    }
                    _ => Err(e.into()),
                }
            }
        }
    }

    fn stop(&self, id: &str, timeout: Duration) -> Result<Option<Exit>, RuntimeError> {
        match self.engine.stop(id, Some(timeout)) {
            Ok(info) => Ok(match container_of(&info).state {
                State::Exited(e) => Some(e),
                State::Created => Some(Exit::lost("the container never started")),
                State::Running => Some(Exit::lost("the container did not stop")),
            }),
            Err(ContainerError::NotFound(_)) => Ok(None),
            Err(ContainerError::Shim(ShimError::Lost(_))) => Ok(Some(Exit::lost(LOST))),
            Err(e) => Err(e.into()),
        }
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self.engine.remove_with_volumes(id, true, true) {
            Ok(_) | Err(ContainerError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        match self.engine.volume_remove(name, false) {
            Ok(()) | Err(ContainerError::NoSuchVolume(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `<shim_exe> exec --root ROOT --timeout SECONDS ID CMD...` in a fresh process (exec uses
    /// libcontainer's tenant builder, which forks and must start from a single-threaded
    /// process); `berth exec` kills the command at the timeout and exits with 124.
    async fn exec_check(&self, id: &str, cmd: &[String], timeout: Duration) -> Probe {
        let mut command = tokio::process::Command::new(self.engine.shim_exe());
        command
            .arg("exec")
            .arg("--root")
            .arg(self.engine.root())
            .arg("--timeout")
            .arg(format!("{:.3}", timeout.as_secs_f64()))
            .arg(id)
            .args(cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Probe::Error(format!(
                    "cannot run {}: {e}",
                    self.engine.shim_exe().display()
                ))
            }
        };
        match tokio::time::timeout(timeout + EXEC_GRACE, child.wait_with_output()).await {
            // The child is killed when the future is dropped.
            Err(_) => Probe::TimedOut,
            Ok(Err(e)) => Probe::Error(format!("cannot wait for the health check: {e}")),
            Ok(Ok(out)) => {
                use std::os::unix::process::ExitStatusExt;
                let code = out
                    .status
                    .code()
                    .or_else(|| out.status.signal().map(|s| 128 + s))
                    .unwrap_or(-1);
                if code != 0 {
                    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&out.stderr));
                    let cut = text.len().min(PROBE_OUTPUT);
                    let cut = (0..=cut)
                        .rev()
                        .find(|i| text.is_char_boundary(*i))
                        .unwrap_or(0);
                    tracing::debug!(container = %id, code, output = %text[..cut].trim_end(),
                        "health check output");
                    if code == 124 && text.contains("did not finish within") {
                        return Probe::TimedOut;
                    }
                }
                Probe::Exit { code }
            }
        }
    }
}
