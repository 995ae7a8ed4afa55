//! The network daemon (`berth netd --root DIR`): serves published ports and per-network DNS for
//! containers whose `berth` process has exited.
//!
//! - singleton per root: `flock` on `<root>/netd.lock` for its whole life;
//! - listens on `<root>/netd.sock` (0600; a stale socket of a dead daemon is replaced);
//! - desired state in `<root>/endpoints/<container_id>.json` (written by the daemon, atomically,
//!   with ephemeral ports resolved), restored at start; what cannot be bound at start (bridge not
//!   there yet, port taken) is retried every few seconds;
//! - exits after [`DaemonConfig::idle_exit`] without endpoints (the client respawns it).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;
use tokio::time::{timeout, Instant};
use tracing::{debug, error, info, warn};

use crate::dns::{DnsServer, DnsTable};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::ports::PortMapping;
use crate::proto::{valid_container_id, DaemonError, EndpointRecord, Request, Response};
use crate::proxy::{Bound, ProxyHandle};

/// Largest accepted request line.
const MAX_LINE: usize = 1 << 20;
const LINE_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY_INTERVAL: Duration = Duration::from_secs(3);
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Paths of the daemon's files under `root`.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("netd.sock")
}
pub(crate) fn lock_path(root: &Path) -> PathBuf {
    root.join("netd.lock")
}
pub(crate) fn endpoints_dir(root: &Path) -> PathBuf {
    root.join("endpoints")
}
/// The daemon's log when spawned by [`crate::NetdClient::connect_or_spawn`].
pub fn log_path(root: &Path) -> PathBuf {
    root.join("netd.log")
}

/// Settings of [`run_with`].
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub root: PathBuf,
    /// Exit after this long without endpoints; `None`: never (`berth serve`).
    pub idle_exit: Option<Duration>,
    /// Upstream resolvers; `None`: the host's ([`crate::dns::host_upstreams`]).
    pub upstreams: Option<Vec<SocketAddr>>,
    /// DNS port on the gateways (53; tests may change it).
    pub dns_port: u16,
}

impl DaemonConfig {
    /// Defaults: idle exit after 60 s, the host's resolvers, port 53.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DaemonConfig {
            root: root.into(),
            idle_exit: Some(Duration::from_secs(60)),
            upstreams: None,
            dns_port: 53,
        }
    }
}

/// Makes the calling process a session leader (leaves the spawner's terminal and process group).
/// For `berth netd` to call first thing; harmless if it already is one.
pub fn detach_session() {
    let _ = nix::unistd::setsid();
}

/// Runs the daemon for `root` with [`DaemonConfig::new`] until it goes idle.
pub async fn run(root: PathBuf) -> Result<()> {
    run_with(DaemonConfig::new(root)).await
}

struct Active {
    record: EndpointRecord,
    _proxies: Vec<ProxyHandle>,
    /// false: restored but not (fully) bound yet; retried
    bound: bool,
}

struct NetDns {
    gateway: Ipv4Addr,
    table: Arc<RwLock<DnsTable>>,
    server: Option<DnsServer>,
}

struct State {
    cfg: DaemonConfig,
    upstreams: Vec<SocketAddr>,
    endpoints: HashMap<String, Active>,
    dns: HashMap<String, NetDns>,
    empty_since: Option<Instant>,
}

/// Runs the daemon. Returns `Ok(())` when it exits idle, or at once when another daemon holds
/// the root's lock.
pub async fn run_with(cfg: DaemonConfig) -> Result<()> {
    fsutil::create_dir(&endpoints_dir(&cfg.root))?;
    let lock_file = lock_path(&cfg.root);
    let deadline = Instant::now() + LOCK_WAIT;
    let _lock = loop {
        if let Some(l) = fsutil::try_lock(&lock_file)? {
            break l;
        }
        if Instant::now() >= deadline {
            info!(root = %cfg.root.display(), "another network daemon is running");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sock_path = socket_path(&cfg.root);
    match std::fs::remove_file(&sock_path) {
        Ok(()) => debug!("removed a stale socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove stale socket", &sock_path, e)),
    }
    let listener = UnixListener::bind(&sock_path).map_err(|e| Error::io("bind", &sock_path, e))?;
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod", &sock_path, e))?;
    let upstreams = cfg
        .upstreams
        .clone()
        .unwrap_or_else(crate::dns::host_upstreams);
    info!(root = %cfg.root.display(), pid = std::process::id(), ?upstreams, "network daemon started");
    let state = Arc::new(Mutex::new(State {
        cfg: cfg.clone(),
        upstreams,
        endpoints: HashMap::new(),
        dns: HashMap::new(),
        empty_since: Some(Instant::now()),
    }));
    restore(&state).await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_retry = Instant::now();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    while conns.try_join_next().is_some() {}
                    let st = state.clone();
                    conns.spawn(async move {
                        if let Err(e) = serve_conn(s, st).await {
                            debug!(error = %e, "connection");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = tick.tick() => {
                let mut st = state.lock().await;
                if last_retry.elapsed() >= RETRY_INTERVAL {
                    last_retry = Instant::now();
                    retry_pending(&mut st).await;
                }
                if let (Some(idle), Some(since)) = (st.cfg.idle_exit, st.empty_since) {
                    if st.endpoints.is_empty() && since.elapsed() >= idle {
                        // remove the socket while still holding the state and the lock, so no
                        // client reaches a daemon that is going away
                        let _ = std::fs::remove_file(&sock_path);
                        info!("no endpoints for {idle:?}: exiting");
                        conns.abort_all();
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn serve_conn(s: UnixStream, state: Arc<Mutex<State>>) -> io::Result<()> {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    // bounded: one connection serves at most 1000 requests
    for _ in 0..1000 {
        let mut line = Vec::new();
        let n = match timeout(
            LINE_TIMEOUT,
            (&mut r)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let resp = if line.len() > MAX_LINE {
            Response::Error {
                error: DaemonError::Invalid {
                    message: "request too long".into(),
                },
            }
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => handle(req, &state).await,
                Err(e) => Response::Error {
                    error: DaemonError::Invalid {
                        message: format!("bad request: {e}"),
                    },
                },
            }
        };
        let mut out = serde_json::to_vec(&resp).map_err(io::Error::other)?;
        out.push(b'\n');
        w.write_all(&out).await?;
        if line.len() > MAX_LINE {
            return Ok(());
        }
    }
    Ok(())
}

async fn handle(req: Request, state: &Mutex<State>) -> Response {
    let mut st = state.lock().await;
    match req {
        Request::Ping => Response::Pong {
            pid: std::process::id(),
        },
        Request::List => Response::Endpoints {
            endpoints: st.endpoints.values().map(|a| a.record.clone()).collect(),
        },
        Request::Publish { endpoint } => match publish(&mut st, endpoint).await {
            Ok(ports) => Response::Published { ports },
            Err(error) => Response::Error { error },
        },
        Request::Remove { container_id } => {
            if !valid_container_id(&container_id) {
                return Response::Error {
                    error: DaemonError::Invalid {
                        message: format!("invalid container id {container_id:?}"),
                    },
                };
            }
            match remove(&mut st, &container_id) {
                Ok(()) => Response::Removed,
                Err(e) => Response::Error {
                    error: DaemonError::Internal {
                        message: e.to_string(),
                    },
                },
            }
        }
    }
}

fn overlaps(a: &PortMapping, b: &PortMapping) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified())
}

/// Binds every port of `rec` (all or nothing); the resolved mappings and the bound sockets.
async fn bind_all(
    st: &State,
    rec: &EndpointRecord,
) -> std::result::Result<(Vec<PortMapping>, Vec<Bound>), DaemonError> {
    let mut resolved = Vec::new();
    let mut bound = Vec::new();
    for m in &rec.ports {
        if m.host_port != 0 {
            let holder = st.endpoints.iter().find(|(id, a)| {
                **id != rec.container_id && a.record.ports.iter().any(|p| overlaps(p, m))
            });
            if let Some((id, _)) = holder {
                return Err(DaemonError::PortInUse {
                    ip: m.host_ip,
                    port: m.host_port,
                    protocol: m.protocol,
                    by: id.clone(),
                });
            }
        }
        let b = Bound::bind(m).await.map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                DaemonError::PortInUse {
                    ip: m.host_ip,
                    port: m.host_port,
                    protocol: m.protocol,
                    by: "another program".into(),
                }
            } else {
                DaemonError::Internal {
                    message: Error::Bind {
                        ip: m.host_ip,
                        port: m.host_port,
                        protocol: m.protocol,
                        message: e.to_string(),
                    }
                    .to_string(),
                }
            }
        })?;
        let port = b.port().map_err(|e| DaemonError::Internal {
            message: format!("local address: {e}"),
        })?;
        resolved.push(PortMapping {
            host_port: port,
            ..*m
        });
        bound.push(b);
    }
    Ok((resolved, bound))
}

fn validate(rec: &EndpointRecord) -> std::result::Result<(), DaemonError> {
    let bad = |m: String| Err(DaemonError::Invalid { message: m });
    if !valid_container_id(&rec.container_id) {
        return bad(format!("invalid container id {:?}", rec.container_id));
    }
    if rec.network.is_empty() || rec.network.contains('/') {
        return bad(format!("invalid network name {:?}", rec.network));
    }
    if rec.ports.iter().any(|p| p.container_port == 0) {
        return bad("container port 0".into());
    }
    Ok(())
}

async fn publish(
    st: &mut State,
    rec: EndpointRecord,
) -> std::result::Result<Vec<PortMapping>, DaemonError> {
    validate(&rec)?;
    // a repeated publish replaces the endpoint: release its ports first so it can rebind them
    let previous = st.endpoints.remove(&rec.container_id);
    let (resolved, bound) = match bind_all(st, &rec).await {
        Ok(x) => x,
        Err(e) => {
            if let Some(p) = previous {
                st.endpoints.insert(rec.container_id.clone(), p);
            }
            return Err(e);
        }
    };
    drop(previous);
    let rec = EndpointRecord {
        ports: resolved.clone(),
        ..rec
    };
    if let Err(e) = ensure_dns(st, &rec.network, rec.gateway).await {
        rebuild_tables(st);
        return Err(DaemonError::Internal { message: e });
    }
    let path = endpoints_dir(&st.cfg.root).join(format!("{}.json", rec.container_id));
    if let Err(e) = fsutil::write_json(&path, &rec) {
        return Err(DaemonError::Internal {
            message: e.to_string(),
        });
    }
    let proxies = bound
        .into_iter()
        .zip(&resolved)
        .map(|(b, m)| b.serve(SocketAddrV4::new(rec.ip, m.container_port)))
        .collect();
    info!(container = %rec.container_id, network = %rec.network, ports = ?resolved, "endpoint published");
    st.endpoints.insert(
        rec.container_id.clone(),
        Active {
            record: rec,
            _proxies: proxies,
            bound: true,
        },
    );
    st.empty_since = None;
    rebuild_tables(st);
    Ok(resolved)
}

/// Starts the DNS server of `network` on `gateway` if it is not running.
async fn ensure_dns(
    st: &mut State,
    network: &str,
    gateway: Ipv4Addr,
) -> std::result::Result<(), String> {
    let running = st
        .dns
        .get(network)
        .is_some_and(|d| d.gateway == gateway && d.server.is_some());
    if running {
        return Ok(());
    }
    let table = st
        .dns
        .get(network)
        .filter(|d| d.gateway == gateway)
        .map(|d| d.table.clone())
        .unwrap_or_default();
    // drop a server on an old gateway before binding the new one
    st.dns.remove(network);
    let addr = SocketAddr::from((gateway, st.cfg.dns_port));
    let server = DnsServer::start(addr, table.clone(), st.upstreams.clone()).await;
    let (server, err) = match server {
        Ok(s) => (Some(s), None),
        Err(e) => (
            None,
            Some(format!(
                "cannot serve DNS for network {network} on {addr}: {e}"
            )),
        ),
    };
    st.dns.insert(
        network.to_owned(),
        NetDns {
            gateway,
            table,
            server,
        },
    );
    match err {
        Some(e) => Err(e),
        None => {
            info!(network, %addr, "dns serving");
            Ok(())
        }
    }
}

/// Recomputes every network's names from the endpoints; stops DNS for networks without any.
fn rebuild_tables(st: &mut State) {
    let mut tables: HashMap<&str, DnsTable> = HashMap::new();
    for a in st.endpoints.values() {
        let r = &a.record;
        let t = tables.entry(r.network.as_str()).or_default();
        for name in std::iter::once(&r.container_name).chain(&r.aliases) {
            if name.is_empty() {
                continue;
            }
            t.insert(name, r.ip);
            t.insert(&format!("{name}.{}", r.network), r.ip);
        }
    }
    let networks: Vec<String> = st.dns.keys().cloned().collect();
    for n in networks {
        match tables.remove(n.as_str()) {
            Some(t) => {
                if let Some(d) = st.dns.get(&n) {
                    if let Ok(mut w) = d.table.write() {
                        *w = t;
                    }
                }
            }
            None => {
                st.dns.remove(&n);
                info!(network = %n, "dns stopped (no endpoints)");
            }
        }
    }
}

fn remove(st: &mut State, container_id: &str) -> Result<()> {
    let path = endpoints_dir(&st.cfg.root).join(format!("{container_id}.json"));
    fsutil::remove_file(&path)?;
    if st.endpoints.remove(container_id).is_some() {
        info!(container = container_id, "endpoint removed");
    }
    if st.endpoints.is_empty() {
        st.empty_since = Some(Instant::now());
    }
    rebuild_tables(st);
    Ok(())
}

async fn restore(state: &Mutex<State>) {
    let mut st = state.lock().await;
    let dir = endpoints_dir(&st.cfg.root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            error!(dir = %dir.display(), error = %e, "cannot read endpoints");
            return;
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            // a temp file of an interrupted write
            let _ = std::fs::remove_file(&p);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        match fsutil::read_json::<EndpointRecord>(&p) {
            Ok(Some(rec)) => {
                st.endpoints.insert(
                    rec.container_id.clone(),
                    Active {
                        record: rec,
                        _proxies: Vec::new(),
                        bound: false,
                    },
                );
                st.empty_since = None;
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "skipping endpoint record"),
        }
    }
    let n = st.endpoints.len();
    retry_pending(&mut st).await;
    info!(endpoints = n, "restored");
}

/// Binds the ports and starts the DNS of endpoints that are not fully up.
async fn retry_pending(st: &mut State) {
    let pending: Vec<String> = st
        .endpoints
        .iter()
        .filter(|(_, a)| !a.bound)
        .map(|(id, _)| id.clone())
        .collect();
    for id in pending {
        let Some(a) = st.endpoints.remove(&id) else {
            continue;
        };
        let rec = a.record.clone();
        match bind_all(st, &rec).await {
            Ok((resolved, bound)) => {
                let proxies = bound
                    .into_iter()
                    .zip(&resolved)
                    .map(|(b, m)| b.serve(SocketAddrV4::new(rec.ip, m.container_port)))
                    .collect();
                st.endpoints.insert(
                    id.clone(),
                    Active {
                        record: rec,
                        _proxies: proxies,
                        bound: true,
                    },
                );
                info!(container = %id, "endpoint restored");
            }
            Err(e) => {
                debug!(container = %id, error = ?e, "endpoint not restored yet");
                st.endpoints.insert(id, a);
            }
        }
    }
    rebuild_tables_and_dns(st).await;
}

async fn rebuild_tables_and_dns(st: &mut State) {
    let nets: Vec<(String, Ipv4Addr)> = {
        let mut v: Vec<(String, Ipv4Addr)> = st
            .endpoints
            .values()
            .map(|a| (a.record.network.clone(), a.record.gateway))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    for (n, gw) in nets {
        if let Err(e) = ensure_dns(st, &n, gw).await {
            debug!(error = %e, "dns not up yet");
        }
    }
    rebuild_tables(st);
}
