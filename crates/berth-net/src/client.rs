//! The engine's synchronous client of the network daemon.

use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::daemon::{endpoints_dir, log_path, socket_path};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::proto::{valid_container_id, EndpointRecord, PublishedPort, Request, Response};

/// Bound on one request (binding ports and starting DNS take milliseconds).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a freshly spawned daemon gets to answer.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection handle to the network daemon of one root. Each request uses its own short
/// unix-socket connection; no async runtime is needed (callable from anywhere, including from
/// inside tokio via `spawn_blocking`).
#[derive(Clone, Debug)]
pub struct NetdClient {
    root: PathBuf,
    exe: Option<PathBuf>,
}

impl NetdClient {
    /// Connects to the daemon of `root`, spawning `exe netd --root <root>` (detached, stdio to
    /// `<root>/netd.log`) if none answers, and waiting until it does. A daemon that went away
    /// (crashed, killed, exited idle) is respawned by later requests too.
    pub fn connect_or_spawn(root: &Path, exe: &Path) -> Result<Self> {
        let c = NetdClient {
            root: root.to_owned(),
            exe: Some(exe.to_owned()),
        };
        c.ping()?;
        Ok(c)
    }

    /// Connects to a running daemon, never spawning one.
    pub fn connect(root: &Path) -> Result<Self> {
        let c = NetdClient {
            root: root.to_owned(),
            exe: None,
        };
        c.ping()?;
        Ok(c)
    }

    /// The daemon's pid.
    pub fn ping(&self) -> Result<u32> {
        match self.request(&Request::Ping)? {
            Response::Pong { pid } => Ok(pid),
            other => Err(unexpected(other)),
        }
    }

    /// Publishes an endpoint: the daemon binds its ports (all or none), starts DNS for its
    /// network if needed, adds its names, records it, and only then answers. Returns the ports
    /// with ephemeral host ports resolved. Publishing a container again replaces its endpoint.
    /// A taken port is [`Error::PortInUse`] (`by`: the container id or `another program`).
    pub fn publish_endpoint(&self, endpoint: &EndpointRecord) -> Result<Vec<PublishedPort>> {
        match self.request(&Request::Publish {
            endpoint: endpoint.clone(),
        })? {
            Response::Published { ports } => Ok(ports),
            Response::Error { error } => Err(error.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Unpublishes a container's ports and names. Idempotent; does not spawn a daemon when there
    /// is nothing to remove.
    pub fn remove_endpoint(&self, container_id: &str) -> Result<()> {
        if !valid_container_id(container_id) {
            return Err(Error::Daemon(format!(
                "invalid container id {container_id:?}"
            )));
        }
        let record = endpoints_dir(&self.root).join(format!("{container_id}.json"));
        if !record.exists() && self.try_request(&Request::Ping).is_err() {
            return Ok(());
        }
        match self.request(&Request::Remove {
            container_id: container_id.to_owned(),
        })? {
            Response::Removed => Ok(()),
            Response::Error { error } => Err(error.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Every endpoint the daemon serves.
    pub fn list_endpoints(&self) -> Result<Vec<EndpointRecord>> {
        match self.request(&Request::List)? {
            Response::Endpoints { endpoints } => Ok(endpoints),
            Response::Error { error } => Err(error.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `req`, spawning the daemon when none answers (if allowed) and retrying once when a
    /// daemon went away mid-request (requests are idempotent).
    fn request(&self, req: &Request) -> Result<Response> {
        match self.try_request(req) {
            Ok(r) => Ok(r),
            Err(e) => {
                let Some(exe) = &self.exe else {
                    return Err(e);
                };
                debug!(error = %e, "network daemon not answering; spawning it");
                self.spawn(exe)?;
                let deadline = Instant::now() + SPAWN_TIMEOUT;
                loop {
                    match self.try_request(req) {
                        Ok(r) => return Ok(r),
                        Err(e) if Instant::now() >= deadline => {
                            return Err(Error::Daemon(format!(
                                "no answer from the network daemon within {SPAWN_TIMEOUT:?} (see {}): {e}",
                                log_path(&self.root).display()
                            )))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(25)),
                    }
                }
            }
        }
    }

    fn try_request(&self, req: &Request) -> Result<Response> {
        let path = socket_path(&self.root);
        let io_err = |op| move |e: io::Error| Error::DaemonIo { op, source: e };
        let mut s = UnixStream::connect(&path).map_err(io_err("connect"))?;
        s.set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(io_err("set timeout"))?;
        s.set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(io_err("set timeout"))?;
        let mut line = serde_json::to_vec(req).map_err(|e| Error::Daemon(e.to_string()))?;
        line.push(b'\n');
        s.write_all(&line).map_err(io_err("send"))?;
        let mut r = BufReader::new(s);
        let mut resp = String::new();
        let n = r.read_line(&mut resp).map_err(io_err("receive"))?;
        if n == 0 {
            return Err(Error::DaemonIo {
                op: "receive",
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        serde_json::from_str(&resp).map_err(|e| Error::Daemon(format!("bad response: {e}")))
    }

    fn spawn(&self, exe: &Path) -> Result<()> {
        fsutil::create_dir(&self.root)?;
        let log = log_path(&self.root);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::io("open", &log, e))?;
        let err = out.try_clone().map_err(|e| Error::io("open", &log, e))?;
        let mut child = Command::new(exe)
            .arg("netd")
            .arg("--root")
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::io("spawn", exe, e))?;
        debug!(pid = child.id(), root = %self.root.display(), "network daemon spawned");
        // reap it if it exits while we live (it outlives short-lived CLIs, reparented to init)
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }
}

fn unexpected(r: Response) -> Error {
    Error::Daemon(format!("unexpected response {r:?}"))
}
