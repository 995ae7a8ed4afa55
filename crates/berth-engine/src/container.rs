//! Containers: create + start (`berth run`), list, logs, stop, kill, remove.
//!
//! A container is the directory `containers/<id>/`; its state comes from the shim's state
//! directory (`state/`), so any process can read it back.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_net::{NetworkInfo, PortMapping};
use berth_oci::layer::{apply_layer, ApplyOptions, WhiteoutMode};
use berth_oci::Digest;
use berth_runtime::shim::{self, ContainerStatus, ExitInfo, RestartPolicy, ShimError, ShimRequest};
use berth_runtime::spec::{
    build_spec, EtcFiles, ExtraHost, HostInfo, MountSpec, NetMode, RootfsUserDb, RunOptions,
    SpecError,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::image::{ImageError, ResolvedImage};
use crate::network::NetworkAttachment;
use crate::overlay::{self, MountError};
use crate::sandbox::SandboxInfo;
use crate::volume::{parse_volume, MountRecord, VolumeSpec};
use crate::{fsutil, Engine};

const RECORD: &str = "config.json";
/// How long `berth rm` waits for an exited container's shim to finish its own cleanup.
const SHIM_EXIT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("container reference {0} is ambiguous")]
    Ambiguous(String),
    #[error("invalid container name {0:?}, only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("the container name {name:?} is already in use by container {id}")]
    NameInUse { name: String, id: String },
    #[error("you cannot remove a running container {0}: stop the container before removing or force remove")]
    Running(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("exec: {0}")]
    Exec(String),
    #[error("{0}")]
    Volume(String),
    #[error("no such volume: {0}")]
    NoSuchVolume(String),
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no such sandbox: {0}")]
    NoSuchSandbox(String),
    #[error("sandbox: {0}")]
    Sandbox(String),
    #[error("{0}")]
    InvalidOption(String),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot unpack layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: berth_oci::store::StoreError,
    },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot write the runtime spec")]
    SaveSpec(#[source] oci_spec::OciSpecError),
    #[error(transparent)]
    Seccomp(#[from] berth_runtime::seccomp_bpf::BpfError),
    #[error("invalid container record {path}")]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The container's process could not be started; `exit_code` is Docker's (127: command
    /// not found, 126: not executable, 125: anything else).
    #[error("failed to start container {id}: {message}")]
    StartFailed {
        id: String,
        message: String,
        exit_code: i32,
    },
    #[error(transparent)]
    Shim(#[from] ShimError),
}

impl ContainerError {
    /// The exit code `berth run` reports for this error (Docker's convention).
    pub fn exit_code(&self) -> i32 {
        match self {
            ContainerError::StartFailed { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// `--network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A fresh network namespace with only loopback (Docker's `none`).
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A bridge network by name (`bridge` is the default one).
    Bridge(String),
}

impl Network {
    /// Docker's `NetworkMode` string.
    pub fn mode(&self) -> &str {
        match self {
            Network::None => "none",
            Network::Host => "host",
            Network::Bridge(n) => n,
        }
    }
}

/// Releases a container's network unless disarmed (a failed start leaves nothing behind).
struct NetGuard<'a> {
    engine: &'a Engine,
    id: &'a str,
    attachment: Option<NetworkAttachment>,
}

impl Drop for NetGuard<'_> {
    fn drop(&mut self) {
        if let Some(att) = self.attachment.take() {
            self.engine.release_network(self.id, &att);
        }
    }
}

/// What `berth run` asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub image: String,
    /// Command after the image (empty: the image's).
    pub cmd: Vec<String>,
    pub name: Option<String>,
    /// `-e` entries (`K=V`; a bare `K` unsets).
    pub env: Vec<String>,
    pub network: Network,
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// `--entrypoint` (`Some("")` drops the image's entrypoint).
    pub entrypoint: Option<String>,
    pub hostname: Option<String>,
    /// `--rm`: carried out by the foreground `berth run`, or with [`RunSpec::detach`] by the
    /// shim once the container exited for good.
    pub auto_remove: bool,
    /// `-d`: nobody waits for the container (with `auto_remove`, the shim removes it).
    #[serde(default)]
    pub detach: bool,
    /// `-v` values (`SRC:DST[:ro]`, `NAME:DST`, `DST`).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `--tmpfs DST[:OPTIONS]`.
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// `-p` values (`[IP:][HOST:]CTR[/PROTO]`).
    #[serde(default)]
    pub publish: Vec<String>,
    /// `--restart` (carried out by the container's shim).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `-t`: a terminal (pty) for the container's stdio, `TERM=xterm`.
    #[serde(default)]
    pub tty: bool,
    /// `-i`: the container's stdin stays open and takes what clients of
    /// [`Engine::attach`] send.
    #[serde(default)]
    pub interactive: bool,
    /// `--cpu-shares` (relative CPU weight, 1024 the default).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// `--memory-reservation` in bytes (soft limit).
    #[serde(default)]
    pub memory_reservation: Option<i64>,
    /// `--memory-swap` in bytes (memory + swap, `-1` unlimited); `None`: no swap.
    #[serde(default)]
    pub memory_swap: Option<i64>,
    /// `--ulimit`s.
    #[serde(default)]
    pub ulimits: Vec<berth_runtime::spec::Ulimit>,
    /// `--read-only`: a read-only root file system.
    #[serde(default)]
    pub read_only: bool,
    /// `--privileged`.
    #[serde(default)]
    pub privileged: bool,
    /// `--cap-add` (`NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--add-host NAME:IP` entries for `/etc/hosts`.
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// `--label`s.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--shm-size` in bytes (`None`: 64 MiB).
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// `--dns` servers (replace the `nameserver` lines of the container's resolv.conf).
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--dns-search` domains (replace its `search` line).
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// The task sandbox ([`Engine::create_sandbox`]) the container runs in: its cgroup is a
    /// child of the sandbox's, and when the sandbox has a network the container joins its
    /// namespace (then `network` must be `None` and nothing can be published).
    #[serde(default)]
    pub sandbox: Option<String>,
}

/// Parses `--add-host` values (`NAME:IP`, or docker's newer `NAME=IP`; IPv6 allowed, in
/// brackets or not).
pub fn parse_extra_host(s: &str) -> Result<ExtraHost, ContainerError> {
    let bad = || ContainerError::InvalidOption(format!("invalid argument {s:?} for --add-host"));
    let (name, ip) = match s.split_once('=') {
        Some(p) => p,
        None => s.split_once(':').ok_or_else(bad)?,
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad());
    }
    if ip == "host-gateway" {
        return Err(ContainerError::InvalidOption(format!(
            "--add-host {s}: host-gateway is not supported"
        )));
    }
    let ip = ip.parse().map_err(|_| bad())?;
    Ok(ExtraHost {
        name: name.to_string(),
        ip,
    })
}

/// `containers/<id>/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image id (config digest).
    pub image_id: Digest,
    pub manifest_digest: Digest,
    pub created: String,
    /// The process as built: args, env, cwd, user.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub stop_signal: i32,
    pub options: RunSpec,
    /// Volumes and bind mounts (inspect's `Mounts`).
    #[serde(default)]
    pub mounts: Vec<MountRecord>,
    /// Address, namespace and published ports on a bridge network.
    #[serde(default)]
    pub network_attachment: Option<NetworkAttachment>,
    /// The image's labels overlaid by `--label`s (inspect's `Config.Labels`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The state of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started (or its start failed).
    Created,
    Running {
        pid: i32,
    },
    Exited(ExitInfo),
    /// The shim is gone without an exit status.
    Lost {
        pid: i32,
    },
}

impl ContainerState {
    /// Docker's `State.Status`.
    pub fn status(&self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running { .. } => "running",
            ContainerState::Exited(_) => "exited",
            ContainerState::Lost { .. } => "dead",
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, ContainerState::Running { .. })
    }
}

/// A container and its state.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub record: ContainerRecord,
    pub state: ContainerState,
    /// When the container's process started (RFC 3339), once it did.
    pub started_at: Option<String>,
    /// Restarts done by its restart policy.
    pub restart_count: u32,
}

/// One json-file log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Reads `container.log` incrementally (complete lines only).
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LogReader {
    pub fn new(path: PathBuf) -> Self {
        LogReader {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The entries appended since the last call.
    pub fn read_new(&mut self) -> io::Result<Vec<LogEntry>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        let n = file.read_to_end(&mut buf)?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let complete: Vec<u8> = self.partial.drain(..=last).collect();
        Ok(complete
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect())
    }
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nifty", "proud", "quiet", "sharp", "swift", "tender", "vivid", "witty", "zealous", "bold",
];
const NOUNS: &[&str] = &[
    "anchor", "buoy", "cove", "dock", "ferry", "harbor", "jetty", "keel", "mast", "pier", "quay",
    "rudder", "sail", "tide", "wharf", "hull", "bow", "stern", "cargo", "crane",
];

fn generate_name() -> String {
    let mut rng = rand::thread_rng();
    let a = ADJECTIVES[(rng.next_u32() as usize) % ADJECTIVES.len()];
    let n = NOUNS[(rng.next_u32() as usize) % NOUNS.len()];
    format!("{a}_{n}")
}

pub(crate) fn generate_id() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Docker's exit code for a start failure, from the runtime's message.
fn start_exit_code(message: &str) -> i32 {
    let m = message.to_ascii_lowercase();
    if m.contains("permission denied") || m.contains("not executable") {
        126
    } else if m.contains("not found") || m.contains("no such file") {
        127
    } else {
        125
    }
}

impl Engine {
    fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `containers/<id>/`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// How many times the container's shim restarted it (its restart policy).
    pub fn restart_count(&self, id: &str) -> u32 {
        shim::read_state(&self.state_dir(id))
            .ok()
            .flatten()
            .map(|s| s.restart_count)
            .unwrap_or(0)
    }

    /// The shim's state directory of a container.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("state")
    }

    /// The json-file log of a container.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.state_dir(id).join(shim::LOG_FILE)
    }

    /// Connects to a running container's stdio (see `berth_runtime::shim::attach`): output
    /// (after a replay of the last 64 KiB) until the container exited for good; input goes to
    /// its stdin if it runs with `interactive`. `NotFound`/`ConnectionRefused`: the shim is
    /// gone (the container exited; its output is in the log).
    pub fn attach(&self, id: &str) -> io::Result<std::os::unix::net::UnixStream> {
        shim::attach(&self.state_dir(id))
    }

    /// Sets the window size of a container's terminal (`-t`).
    pub fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), ContainerError> {
        Ok(shim::resize(&self.state_dir(id), rows, cols)?)
    }

    fn read_record(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        let path = self.container_dir(id).join(RECORD);
        let data = fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&data).map_err(|source| ContainerError::Record { path, source })
    }

    pub(crate) fn records(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        let dir = self.containers_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let entry = entry.map_err(io_err("read", &dir))?;
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match self.read_record(&id) {
                Ok(r) => out.push(r),
                // Being created or removed right now.
                Err(ContainerError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound => {}
                // Only written, not synced, when a crash came (a placeholder, a `--rm` one).
                Err(e @ ContainerError::Record { .. }) => {
                    tracing::warn!(error = %e, "skipping a damaged container record");
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(out)
    }

    /// (container id, manifest digest) of every container, for `rmi`.
    pub(crate) fn container_images(&self) -> io::Result<Vec<(String, Digest)>> {
        self.records()
            .map(|rs| rs.into_iter().map(|r| (r.id, r.manifest_digest)).collect())
            .map_err(io::Error::other)
    }

    fn state_of(&self, id: &str) -> Result<ContainerState, ContainerError> {
        match shim::status(&self.state_dir(id)) {
            Ok(ContainerStatus::Running { pid }) => Ok(ContainerState::Running { pid }),
            // Only with a restart policy, which the engine does not pass yet: Docker shows a
            // restarting container as running with pid 0.
            Ok(ContainerStatus::Restarting { .. }) => Ok(ContainerState::Running { pid: 0 }),
            Ok(ContainerStatus::Exited(e)) => Ok(ContainerState::Exited(e)),
            Ok(ContainerStatus::Lost { pid }) => Ok(ContainerState::Lost { pid }),
            Err(ShimError::NoState(_)) => Ok(ContainerState::Created),
            Err(e) => Err(e.into()),
        }
    }

    /// Every container (`all`: stopped ones too), newest first.
    pub fn containers(&self, all: bool) -> Result<Vec<ContainerInfo>, ContainerError> {
        let mut out = Vec::new();
        for record in self.records()? {
            let info = self.info(record)?;
            if all || info.state.is_running() {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// A container by full id, name or unique id prefix.
    pub fn container(&self, query: &str) -> Result<ContainerInfo, ContainerError> {
        // A full id (what `berth run` itself passes for `--rm`, signals and waits): its record
        // alone, not every container's.
        if query.len() == 64 && query.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(record) = self.read_record(query) {
                return self.info(record);
            }
        }
        let records = self.records()?;
        let found = if let Some(r) = records.iter().find(|r| r.id == query || r.name == query) {
            r.clone()
        } else {
            let mut matches = records
                .iter()
                .filter(|r| !query.is_empty() && r.id.starts_with(query));
            let first = matches
                .next()
                .ok_or_else(|| ContainerError::NotFound(query.to_string()))?;
            if matches.next().is_some() {
                return Err(ContainerError::Ambiguous(query.to_string()));
            }
            first.clone()
        };
        self.info(found)
    }

    fn info(&self, record: ContainerRecord) -> Result<ContainerInfo, ContainerError> {
        let state = self.state_of(&record.id)?;
        let started_at = match &state {
            ContainerState::Exited(e) => Some(e.started_at.clone()),
            ContainerState::Created => None,
            _ => shim::read_state(&self.state_dir(&record.id))?.map(|s| s.started_at),
        };
        let restart_count = self.restart_count(&record.id);
        Ok(ContainerInfo {
            record,
            state,
            started_at,
            restart_count,
        })
    }

    /// Unpacks the image's layers into snapshots (once), returning them top-down.
    fn prepare_layers(&self, image: &ResolvedImage) -> Result<Vec<PathBuf>, ContainerError> {
        self.prepare_layer_stack(&image.layers)
    }

    /// Unpacks `layers` (bottom first) into snapshots where not done yet, returning the
    /// snapshot directories top-down (the order of overlayfs' `lowerdir`).
    pub fn prepare_layer_stack(
        &self,
        layers: &[crate::image::LayerRef],
    ) -> Result<Vec<PathBuf>, ContainerError> {
        let mut lower = Vec::with_capacity(layers.len());
        for layer in layers {
            let prepared = self
                .store
                .prepare_snapshot(&layer.chain_id, |dir| {
                    let blob = self.store.open(&layer.digest)?;
                    let mut opts = ApplyOptions::new(WhiteoutMode::Overlay);
                    opts.media_type = Some(layer.media_type.clone());
                    opts.expected_digest = Some(layer.digest.clone());
                    opts.expected_diff_id = Some(layer.diff_id.clone());
                    opts.expected_size = Some(layer.size);
                    apply_layer(io::BufReader::new(blob), dir, &opts)
                        .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                })
                .map_err(|source| ContainerError::Unpack {
                    digest: layer.digest.to_string(),
                    source,
                })?;
            lower.push(prepared.path);
        }
        lower.reverse();
        Ok(lower)
    }

    /// Creates and starts a container; returns its record once its process runs.
    /// On any failure nothing is left behind (no mount, no directory).
    pub fn run(&self, spec: &RunSpec) -> Result<ContainerRecord, ContainerError> {
        if spec.auto_remove && spec.restart != RestartPolicy::No {
            return Err(ContainerError::Conflict(
                "conflicting options: --restart and --rm".into(),
            ));
        }
        let image = self.resolve_image(&spec.image)?;
        let volumes = spec
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ports = Vec::new();
        for p in &spec.publish {
            ports.extend(
                berth_net::parse_publish(p).map_err(|e| ContainerError::Network(e.to_string()))?,
            );
        }
        if !ports.is_empty() && !matches!(spec.network, Network::Bridge(_)) {
            return Err(ContainerError::Network(format!(
                "published ports need a bridge network, not --network {}",
                spec.network.mode()
            )));
        }
        let sandbox = spec
            .sandbox
            .as_deref()
            .map(|s| self.sandbox(s))
            .transpose()?;
        if let Some(sb) = sandbox.as_ref().filter(|sb| sb.network.is_some()) {
            if !ports.is_empty() {
                return Err(ContainerError::Network(format!(
                    "published ports are not possible in sandbox {}, which has its own network",
                    sb.name
                )));
            }
            if spec.network != Network::None {
                return Err(ContainerError::Conflict(format!(
                    "conflicting options: --network {} and sandbox {}, which has its own network",
                    spec.network.mode(),
                    sb.name
                )));
            }
        }
        let network = match &spec.network {
            Network::Bridge(n) => Some(self.resolve_network(n)?),
            _ => None,
        };
        let id = generate_id();
        let dir = self.container_dir(&id);
        let name = {
            let _lock = self.lock().map_err(io_err("lock", &self.root))?;
            let records = self.records()?;
            let name = match &spec.name {
                Some(n) => {
                    let n = n.strip_prefix('/').unwrap_or(n);
                    if !valid_name(n) {
                        return Err(ContainerError::InvalidName(n.to_string()));
                    }
                    if let Some(r) = records.iter().find(|r| r.name == n) {
                        return Err(ContainerError::NameInUse {
                            name: n.to_string(),
                            id: r.id.clone(),
                        });
                    }
                    n.to_string()
                }
                None => loop {
                    let n = generate_name();
                    if !records.iter().any(|r| r.name == n) {
                        break n;
                    }
                    let n = format!("{n}_{}", &generate_id()[..6]);
                    if !records.iter().any(|r| r.name == n) {
                        break n;
                    }
                },
            };
            // The directory claims the name (records() lists it once config.json is there).
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            let placeholder = ContainerRecord {
                id: id.clone(),
                name: name.clone(),
                image: spec.image.clone(),
                image_id: image.id.clone(),
                manifest_digest: image.manifest_digest.clone(),
                created: fsutil::now(),
                args: Vec::new(),
                env: Vec::new(),
                working_dir: String::new(),
                user: String::new(),
                hostname: String::new(),
                stop_signal: libc::SIGTERM,
                options: spec.clone(),
                mounts: Vec::new(),
                network_attachment: None,
                labels: spec.labels.clone(),
            };
            if let Err(e) = self.write_record(&placeholder, false) {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
            name
        };
        let net = network.map(|n| (n, ports));
        let sandbox = sandbox.as_ref();
        match self.create_and_start(&id, &name, spec, &volumes, net.as_ref(), sandbox, &image) {
            Ok(record) => Ok(record),
            Err(e) => {
                if let Err(cleanup) = self.cleanup(&id) {
                    tracing::warn!(%id, error = %cleanup, "cleanup after a failed start");
                }
                Err(e)
            }
        }
    }

    /// Writes the record atomically; `durable` also fsyncs it (not for `--rm` containers and
    /// placeholders, which a crash may lose: [`Engine::records`] skips a damaged record).
    fn write_record(&self, record: &ContainerRecord, durable: bool) -> Result<(), ContainerError> {
        let path = self.container_dir(&record.id).join(RECORD);
        let data = serde_json::to_vec_pretty(record).map_err(|source| ContainerError::Record {
            path: path.clone(),
            source,
        })?;
        if durable {
            fsutil::write_atomic(&path, &data).map_err(io_err("write", &path))
        } else {
            fsutil::write_replace(&path, &data).map_err(io_err("write", &path))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_and_start(
        &self,
        id: &str,
        name: &str,
        spec: &RunSpec,
        volumes: &[VolumeSpec],
        net: Option<&(NetworkInfo, Vec<PortMapping>)>,
        sandbox: Option<&SandboxInfo>,
        image: &ResolvedImage,
    ) -> Result<ContainerRecord, ContainerError> {
        let dir = self.container_dir(id);
        let lower = self.prepare_layers(image)?;
        // In a sandbox with ephemeral storage, what the container writes goes there.
        let writable = match sandbox.and_then(|s| s.scratch.as_ref()) {
            Some(scratch) => scratch.join(id),
            None => dir.clone(),
        };
        let (upper, work, rootfs, bundle) = (
            writable.join("upper"),
            writable.join("work"),
            dir.join("rootfs"),
            self.bundle_dir(id),
        );
        for d in [&upper, &work, &rootfs, &bundle] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        fs::set_permissions(&upper, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &upper))?;
        overlay::mount_overlay(&lower, &upper, &work, &rootfs, spec.auto_remove)?;
        let image_volumes = image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.volumes().clone())
            .unwrap_or_default();
        let mounts = self.prepare_volumes(volumes, &image_volumes, &rootfs)?;
        match self.start_prepared(
            id,
            name,
            spec,
            net,
            sandbox,
            image,
            &rootfs,
            &bundle,
            mounts.clone(),
        ) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.remove_anonymous_volumes(&mounts);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_prepared(
        &self,
        id: &str,
        name: &str,
        spec: &RunSpec,
        net: Option<&(NetworkInfo, Vec<PortMapping>)>,
        sandbox: Option<&SandboxInfo>,
        image: &ResolvedImage,
        rootfs: &Path,
        bundle: &Path,
        mounts: Vec<MountRecord>,
    ) -> Result<ContainerRecord, ContainerError> {
        let mut user_mounts: Vec<MountSpec> = mounts
            .iter()
            .map(|m| MountSpec::Bind {
                source: PathBuf::from(&m.source),
                destination: m.destination.clone(),
                readonly: !m.rw,
            })
            .collect();
        for t in &spec.tmpfs {
            let (destination, options) = t.split_once(':').unwrap_or((t.as_str(), ""));
            user_mounts.push(MountSpec::Tmpfs {
                destination: destination.to_string(),
                options: options.to_string(),
            });
        }

        let hostname = match (&spec.hostname, &spec.network) {
            (Some(h), _) => h.clone(),
            (None, Network::Host) => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            (None, _) => id[..12].to_string(),
        };
        let mut guard = NetGuard {
            engine: self,
            id,
            attachment: None,
        };
        let sandbox_net = sandbox.and_then(|s| s.network.as_ref());
        let net_mode = match net {
            _ if sandbox_net.is_some() => {
                NetMode::Path(sandbox_net.map(|n| n.netns.clone()).unwrap_or_default())
            }
            Some((info, ports)) => {
                let att = self.attach_network(id, name, info, ports)?;
                let path = att.netns.clone();
                guard.attachment = Some(att);
                NetMode::Path(path)
            }
            None if spec.network == Network::Host => NetMode::Host,
            None => NetMode::NewNs,
        };
        let (ip, dns) = match guard.attachment.as_ref().or(sandbox_net) {
            Some(a) => (Some(a.ip), Some(a.gateway)),
            None => (None, None),
        };
        let extra_hosts = spec
            .extra_hosts
            .iter()
            .map(|h| parse_extra_host(h))
            .collect::<Result<Vec<_>, _>>()?;
        let etc = self.write_etc_files(
            id,
            &hostname,
            ip,
            &crate::network::DnsConfig {
                gateway: dns,
                servers: &spec.dns,
                search: &spec.dns_search,
            },
            &extra_hosts,
        )?;
        let opts = RunOptions {
            hostname: hostname.clone(),
            env: spec.env.clone(),
            cmd: spec.cmd.clone(),
            entrypoint: spec.entrypoint.as_ref().map(|e| {
                if e.is_empty() {
                    Vec::new()
                } else {
                    vec![e.clone()]
                }
            }),
            user: spec.user.clone(),
            workdir: spec.workdir.clone(),
            cpus: spec.cpus,
            memory: spec.memory,
            memory_swap: spec.memory_swap,
            memory_reservation: spec.memory_reservation,
            cpu_shares: spec.cpu_shares,
            ulimits: spec.ulimits.clone(),
            pids_limit: spec.pids_limit,
            readonly_rootfs: spec.read_only,
            privileged: spec.privileged,
            devices: if spec.privileged {
                berth_runtime::spec::host::host_devices()
            } else {
                Vec::new()
            },
            cap_add: spec.cap_add.clone(),
            cap_drop: spec.cap_drop.clone(),
            labels: spec.labels.clone(),
            shm_size: spec.shm_size,
            tty: spec.tty,
            network: net_mode,
            cgroups_path: match sandbox {
                Some(sb) => format!("{}/{id}", sb.cgroups_path),
                None => format!("/berth/{id}"),
            },
            mounts: user_mounts,
            etc_files: EtcFiles {
                hosts: Some(etc.hosts),
                hostname: Some(etc.hostname),
                resolv_conf: Some(etc.resolv_conf),
            },
            ..RunOptions::default()
        };
        let built = build_spec(
            &image.config,
            &opts,
            rootfs,
            &RootfsUserDb::new(rootfs),
            &HostInfo::detect(),
        )?;
        let process = built.spec.process().clone().unwrap_or_default();
        let cwd = process.cwd().clone();
        // The working directory must exist; Docker creates it owned by the user.
        if let Ok(path) = berth_runtime::spec::user::resolve_in_root(rootfs, Path::new(&cwd)) {
            if !path.exists() {
                fs::create_dir_all(&path).map_err(io_err("create", &path))?;
                chown(&path, Some(built.user.uid), Some(built.user.gid))
                    .map_err(io_err("chown", &path))?;
            }
        }
        let mut runtime_spec = built.spec;
        if let Some(sb) = sandbox {
            let mut annotations = runtime_spec.annotations().clone().unwrap_or_default();
            annotations.insert(
                shim::SANDBOX_CGROUP_ANNOTATION.to_string(),
                sb.cgroups_path.clone(),
            );
            runtime_spec.set_annotations(Some(annotations));
        }
        berth_runtime::seccomp_bpf::precompile(&mut runtime_spec, &self.root.join("seccomp"))?;
        runtime_spec
            .save(bundle.join("config.json"))
            .map_err(ContainerError::SaveSpec)?;
        let record = ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            image: spec.image.clone(),
            image_id: image.id.clone(),
            manifest_digest: image.manifest_digest.clone(),
            created: fsutil::now(),
            args: process.args().clone().unwrap_or_default(),
            env: process.env().clone().unwrap_or_default(),
            working_dir: cwd.display().to_string(),
            user: spec
                .user
                .clone()
                .or_else(|| {
                    image
                        .config
                        .config()
                        .as_ref()
                        .and_then(|c| c.user().clone())
                })
                .unwrap_or_default(),
            hostname,
            stop_signal: built.stop_signal,
            options: spec.clone(),
            mounts,
            network_attachment: guard.attachment.clone(),
            labels: runtime_spec
                .annotations()
                .as_ref()
                .map(|a| {
                    a.iter()
                        .filter(|(k, _)| !k.starts_with("org.berth."))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        self.write_record(&record, !spec.auto_remove)?;

        let mut req = ShimRequest::new(id, bundle, self.state_dir(id), self.runtime.clone());
        req.restart = spec.restart;
        req.tty = spec.tty;
        req.stdin = spec.interactive;
        let hook = |args: &[&str]| {
            let mut v = vec![self.shim_exe.display().to_string()];
            v.extend(args.iter().map(|a| a.to_string()));
            v.extend([
                "--root".to_string(),
                self.root.display().to_string(),
                id.to_string(),
            ]);
            v
        };
        if spec.auto_remove && spec.detach {
            req.on_exit = hook(&["rm", "-v"]);
        } else if record.network_attachment.is_some() && !spec.auto_remove {
            // Like Docker: a container that exited gives its address and ports back (a
            // foreground `--rm` run releases them itself when it removes the container).
            req.on_exit = hook(&["container-exited"]);
        }
        match shim::spawn(&self.shim_exe, &req) {
            Ok(handle) => {
                tracing::debug!(%id, pid = handle.pid, "container started");
                guard.attachment = None;
                Ok(record)
            }
            Err(ShimError::StartFailed { message, .. }) => Err(ContainerError::StartFailed {
                id: id[..12].to_string(),
                exit_code: start_exit_code(&message),
                message,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Unmounts the rootfs and deletes the container's directories.
    fn cleanup(&self, id: &str) -> Result<(), ContainerError> {
        let record = self.read_record(id).ok();
        self.cleanup_with(id, record.as_ref(), true)
    }

    /// Removes a container that is not running. Its shim may still be finishing (it removes
    /// the cgroups and libcontainer's state after answering the waiters): with `wait_shim`
    /// this waits for it to end (at most [`SHIM_EXIT_WAIT`]), so nothing of the container
    /// is left when `berth rm` returns; without, the shim's part is left to it.
    fn cleanup_with(
        &self,
        id: &str,
        record: Option<&ContainerRecord>,
        wait_shim: bool,
    ) -> Result<(), ContainerError> {
        let shim_running = match shim::read_state(&self.state_dir(id)) {
            Ok(Some(st)) if wait_shim => {
                !shim::wait_process_gone(st.shim_pid, st.shim_start_ticks, SHIM_EXIT_WAIT)
            }
            Ok(Some(st)) => shim::process_start_ticks(st.shim_pid) == Some(st.shim_start_ticks),
            _ => false,
        };
        let dir = self.container_dir(id);
        // The namespace file is a mount point in the directory: release it first.
        if let Some(att) = record.and_then(|r| r.network_attachment.as_ref()) {
            self.release_network(id, att);
        }
        let netns = dir.join("netns");
        if berth_net::is_netns_mount(&netns) {
            let _ = berth_net::delete_netns(&netns);
        }
        overlay::unmount(&dir.join("rootfs"))?;
        // Its writable layer in its sandbox's ephemeral storage.
        if let Some(sb) = record.and_then(|r| r.options.sandbox.as_ref()) {
            let scratch = self
                .root
                .join("sandboxes")
                .join(sb)
                .join("scratch")
                .join(id);
            if scratch.exists() {
                fs::remove_dir_all(&scratch).map_err(io_err("remove", &scratch))?;
            }
        }
        // libcontainer's state: the shim removes it itself, unless it is gone (crashed).
        if !shim_running {
            // A killed shim's sockets (a shim that ends removes them itself).
            shim::remove_socket_dir(&self.state_dir(id));
            for runtime in self.runtime_dirs(id) {
                fsutil::remove_dir_if_present(&runtime).map_err(io_err("remove", &runtime))?;
            }
        }
        self.remove_volatile(id)
            .map_err(io_err("remove the volatile state of", &dir))?;
        fsutil::discard_dir(&self.root, &dir).map_err(io_err("remove", &dir))
    }

    /// Waits for a container to exit (`None`: still running after `timeout`).
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<Option<ExitInfo>, ContainerError> {
        Ok(shim::wait_exit(&self.state_dir(id), timeout)?)
    }

    /// `berth stop`: the stop signal, then SIGKILL after `timeout` (default 10 s).
    pub fn stop(
        &self,
        query: &str,
        timeout: Option<Duration>,
    ) -> Result<ContainerInfo, ContainerError> {
        let info = self.container(query)?;
        if info.state.is_running() {
            shim::stop(
                &self.state_dir(&info.record.id),
                info.record.stop_signal,
                timeout.unwrap_or(Duration::from_secs(10)),
            )?;
        }
        // Docker releases the address and the published ports of a stopped container.
        if let Some(att) = &info.record.network_attachment {
            self.release_network(&info.record.id, att);
        }
        self.container(&info.record.id)
    }

    /// `berth kill`: sends `signal` to the container's init.
    pub fn kill(&self, query: &str, signal: i32) -> Result<ContainerInfo, ContainerError> {
        let info = self.container(query)?;
        match shim::kill(&self.state_dir(&info.record.id), signal) {
            Ok(()) => Ok(info),
            Err(ShimError::NotRunning) | Err(ShimError::NoState(_)) => {
                Err(ContainerError::NotRunning(query.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `berth rm`: refuses a running container unless `force` (then kills it first).
    pub fn remove(&self, query: &str, force: bool) -> Result<String, ContainerError> {
        self.remove_with_volumes(query, force, false)
    }

    /// `berth rm [-f] [-v]`: `volumes` also removes the container's anonymous volumes.
    pub fn remove_with_volumes(
        &self,
        query: &str,
        force: bool,
        volumes: bool,
    ) -> Result<String, ContainerError> {
        self.remove_inner(query, force, volumes, true)
    }

    /// What the foreground `berth run --rm` does once it has the exit: as `rm -f -v`, but
    /// without waiting for the shim, which removes the container's cgroups and libcontainer
    /// state after it answered (so the command returns ~1 ms sooner; they go a moment later).
    pub fn remove_after_run(&self, id: &str) -> Result<String, ContainerError> {
        self.remove_inner(id, true, true, false)
    }

    fn remove_inner(
        &self,
        query: &str,
        force: bool,
        volumes: bool,
        wait_shim: bool,
    ) -> Result<String, ContainerError> {
        let info = self.container(query)?;
        let id = info.record.id.clone();
        let state_dir = self.state_dir(&id);
        match &info.state {
            ContainerState::Running { .. } if !force => {
                return Err(ContainerError::Running(query.to_string()))
            }
            ContainerState::Running { .. } => {
                match shim::kill(&state_dir, libc::SIGKILL) {
                    Ok(()) | Err(ShimError::NotRunning) => {}
                    Err(e) => return Err(e.into()),
                }
                if shim::wait_exit(&state_dir, shim::KILL_TIMEOUT)?.is_none() {
                    return Err(ShimError::StopTimeout(shim::KILL_TIMEOUT).into());
                }
            }
            ContainerState::Lost { pid } => {
                // The shim is gone: kill the orphaned init if it is still that process.
                if let Ok(Some(state)) = shim::read_state(&state_dir) {
                    if shim::process_start_ticks(*pid) == Some(state.init_start_ticks) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(*pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            ContainerState::Created | ContainerState::Exited(_) => {}
        }
        self.cleanup_with(&id, Some(&info.record), wait_shim)?;
        if volumes {
            self.remove_anonymous_volumes(&info.record.mounts);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_hosts() {
        let h = parse_extra_host("db:10.0.0.5").expect("host");
        assert_eq!(
            (h.name.as_str(), h.ip.to_string()),
            ("db", "10.0.0.5".to_string())
        );
        let h = parse_extra_host("v6:::1").expect("host");
        assert_eq!(h.ip.to_string(), "::1");
        let h = parse_extra_host("v6=[fe80::1]").expect("host");
        assert_eq!(h.ip.to_string(), "fe80::1");
        for bad in [
            "db",
            "db:",
            ":1.2.3.4",
            "db:nope",
            "a b:1.2.3.4",
            "gw:host-gateway",
        ] {
            assert!(parse_extra_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn old_records_without_new_options_load() {
        let spec: RunSpec = serde_json::from_value(serde_json::json!({
            "image": "bb", "cmd": [], "name": null, "env": [], "network": "none",
            "memory": null, "cpus": null, "pids_limit": null, "user": null, "workdir": null,
            "entrypoint": null, "hostname": null, "auto_remove": false
        }))
        .expect("old RunSpec");
        assert!(!spec.privileged && spec.ulimits.is_empty() && spec.cpu_shares.is_none());
    }

    #[test]
    fn names() {
        assert!(valid_name("web-1"));
        assert!(valid_name("a.b_c"));
        assert!(!valid_name("a"));
        assert!(!valid_name("-a"));
        assert!(!valid_name("a/b"));
        assert!(valid_name(&generate_name()));
        assert_eq!(generate_id().len(), 64);
    }

    #[test]
    fn start_codes() {
        assert_eq!(start_exit_code("executable 'x' not found in $PATH"), 127);
        assert_eq!(start_exit_code("exec: Permission denied"), 126);
        assert_eq!(start_exit_code("cgroup trouble"), 125);
    }

    #[test]
    fn log_reader_partial_lines() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("log");
        let mut r = LogReader::new(path.clone());
        assert!(r.read_new().expect("read").is_empty());
        fs::write(
            &path,
            "{\"log\":\"a\\n\",\"stream\":\"stdout\",\"time\":\"t\"}\n{\"log\"",
        )
        .expect("write");
        let e = r.read_new().expect("read");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].log, "a\n");
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b":\"b\",\"stream\":\"stderr\",\"time\":\"t\"}\n")
            .expect("write");
        let e = r.read_new().expect("read");
        assert_eq!(e[0].stream, "stderr");
    }
}
