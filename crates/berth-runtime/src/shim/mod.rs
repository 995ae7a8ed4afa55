//! One single-threaded shim process per container (like containerd-shim or conmon).
//!
//! youki's libcontainer forks, changes the working directory and waits on children; driven from a
//! multi-threaded tokio process it deadlocked after a few dozen containers. So the engine calls
//! [`spawn`], which re-executes the `berth` binary as `berth shim --id .. --bundle .. --state ..
//! --root ..` (or has the [`zygote`] fork it with those arguments); that process
//! ([`shim_main`]) detaches (new session, forks once so the engine never
//! has to reap it; a zygote's child is detached already), creates and starts the container with libcontainer, and then:
//! - copies the container's stdout/stderr into `STATE_DIR/container.log` as Docker json-file lines;
//! - answers requests on `shim.sock` (kill, state, wait for the exit, resize);
//! - serves `attach.sock`: attached clients get the container's output (after a replay
//!   of the last 64 KiB) and, with `--stdin`, their bytes go to the container's stdin;
//! - reaps the container's init and records `STATE_DIR/exit.json` (exit code, signal, OOM kill);
//! - deletes the container and removes its cgroup directories in every hierarchy;
//! - with a [`RestartPolicy`] that asks for it, waits a back-off delay and creates and starts the
//!   container again from the same bundle (same log, same state directory), until the policy says
//!   no or the user stops it ([`stop`] and [`kill`] are manual stops, as in Docker);
//! - then exits.
//!
//! It keeps working when the engine that spawned it exits. The engine side is [`status`],
//! [`kill`], [`signal`], [`wait_exit`] and [`stop`], which only need the state directory.
//!
//! Files in the state directory: `state.json` (init pid, shim pid, restart count; written once
//! the container runs and again on each restart), `last_exit.json` (the latest exit that was
//! followed by a restart), `exit.json` (written atomically once the container exited for good and
//! was cleaned up), `container.log`, `shim.log` (the shim's own diagnostics). The sockets
//! (`shim.sock`, `attach.sock`, `console.sock` with a terminal) are in [`socket_dir`]: on the
//! volatile tmpfs (`/run/berth/volatile/sockets/<hash of STATE_DIR>`) when there is one, else
//! in the state directory; clients look in both places.

mod restart;
mod server;
pub mod zygote;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

pub use restart::{
    ParseRestartPolicyError, RestartPolicy, BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_RESET_AFTER,
};
pub(crate) use server::{receive_console, reset_ignored_signals, thread_count};
pub use server::{shim_main, SANDBOX_CGROUP_ANNOTATION};

/// File names in a container's state directory.
pub const STATE_FILE: &str = "state.json";
pub const EXIT_FILE: &str = "exit.json";
pub const LAST_EXIT_FILE: &str = "last_exit.json";
pub const LOG_FILE: &str = "container.log";
pub const SHIM_LOG_FILE: &str = "shim.log";
pub const SOCKET_FILE: &str = "shim.sock";
pub const ATTACH_FILE: &str = "attach.sock";

/// How long [`spawn`] waits for the shim to report by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`stop`] waits after SIGKILL before giving up.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one request on the shim's socket (other than waiting for the exit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot create the state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the readiness pipe")]
    Pipe(#[source] nix::Error),
    #[error("cannot start the shim {exe}")]
    Exec {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the shim's report")]
    ReadReport(#[source] io::Error),
    #[error("container {id} failed to start: {message}")]
    StartFailed { id: String, message: String },
    #[error("the shim of container {id} exited without a report{log}")]
    NoReport { id: String, log: String },
    #[error("the shim of container {id} did not report within {timeout:?}")]
    StartTimeout { id: String, timeout: Duration },
    #[error("invalid {path}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no container state in {0}")]
    NoState(PathBuf),
    #[error("the container is not running")]
    NotRunning,
    #[error("the shim of the container in {0} is gone and left no exit status")]
    Lost(PathBuf),
    #[error("cannot talk to the shim at {path}")]
    Control {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the shim refused the request: {0}")]
    Refused(String),
    #[error("the container did not exit within {0:?} of SIGKILL")]
    StopTimeout(Duration),
}

/// Arguments of `berth shim` (built by [`spawn`], parsed by the binary).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "shim")]
pub struct ShimArgs {
    /// Container id (libcontainer's id: letters, digits, `_+-.`).
    #[arg(long)]
    pub id: String,
    /// OCI bundle directory (config.json and the rootfs).
    #[arg(long)]
    pub bundle: PathBuf,
    /// Directory for the shim's files (state, exit status, logs, socket).
    #[arg(long)]
    pub state: PathBuf,
    /// libcontainer's root directory (it keeps its own state in ROOT/ID).
    #[arg(long)]
    pub root: PathBuf,
    /// The container has a terminal (process.terminal in the spec); its output is logged as stdout.
    #[arg(long)]
    pub tty: bool,
    /// Keep the container's stdin open for attached clients (the pty with `--tty`, else a pipe).
    #[arg(long)]
    pub stdin: bool,
    /// Restart policy: no, on-failure[:max-retries], always or unless-stopped.
    #[arg(long, default_value_t = RestartPolicy::No)]
    pub restart: RestartPolicy,
    /// Inherited pipe on which the shim reports the start (one JSON line), then closes.
    #[arg(long)]
    pub ready_fd: Option<i32>,
    /// A command (program, then its arguments, one per `--on-exit`) started once the container
    /// exited for good and its exit is recorded (`berth run -d --rm` removes the container).
    #[arg(long = "on-exit", allow_hyphen_values = true)]
    pub on_exit: Vec<String>,
}

/// What the engine asks [`spawn`] to run.
#[derive(Debug, Clone)]
pub struct ShimRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    /// libcontainer's root directory (e.g. `/run/berth/runtime`).
    pub runtime_root: PathBuf,
    pub tty: bool,
    /// `-i`: the container's stdin stays open and takes what attached clients send.
    pub stdin: bool,
    /// What the shim does when the container exits (default: [`RestartPolicy::No`]).
    pub restart: RestartPolicy,
    pub start_timeout: Duration,
    /// See [`ShimArgs::on_exit`].
    pub on_exit: Vec<String>,
}

impl ShimRequest {
    pub fn new(
        id: impl Into<String>,
        bundle: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        runtime_root: impl Into<PathBuf>,
    ) -> Self {
        ShimRequest {
            id: id.into(),
            bundle: bundle.into(),
            state_dir: state_dir.into(),
            runtime_root: runtime_root.into(),
            tty: false,
            stdin: false,
            restart: RestartPolicy::No,
            start_timeout: DEFAULT_START_TIMEOUT,
            on_exit: Vec::new(),
        }
    }
}

/// A started container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimHandle {
    pub id: String,
    pub state_dir: PathBuf,
    /// The container's init process (host pid namespace).
    pub pid: i32,
    pub shim_pid: i32,
}

impl ShimHandle {
    pub fn status(&self) -> Result<ContainerStatus, ShimError> {
        status(&self.state_dir)
    }

    pub fn kill(&self, signal: i32) -> Result<(), ShimError> {
        kill(&self.state_dir, signal)
    }

    pub fn signal(&self, signal: i32) -> Result<(), ShimError> {
        self::signal(&self.state_dir, signal)
    }

    pub fn wait(&self, timeout: Duration) -> Result<Option<ExitInfo>, ShimError> {
        wait_exit(&self.state_dir, timeout)
    }

    pub fn stop(&self, signal: i32, timeout: Duration) -> Result<ExitInfo, ShimError> {
        stop(&self.state_dir, signal, timeout)
    }
}

/// How a container ended (`exit.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitInfo {
    /// The exit status, or 128 + the signal that killed the init (as Docker reports it).
    pub exit_code: i32,
    /// The signal that killed the init, if one did.
    pub signal: Option<i32>,
    /// The kernel OOM-killed a process of the container (its cgroup's `oom_kill` counter).
    pub oom_killed: bool,
    /// RFC 3339 (nanoseconds, UTC).
    pub started_at: String,
    pub finished_at: String,
}

/// `state.json`: written by the shim once the container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateFile {
    pub id: String,
    pub pid: i32,
    pub shim_pid: i32,
    /// The shim's start time in clock ticks since boot (/proc/PID/stat field 22), to tell the
    /// shim from a later process that got its pid.
    pub shim_start_ticks: u64,
    /// The init's start time, likewise: to kill an orphaned init safely when the shim is lost.
    pub init_start_ticks: u64,
    /// When the current run of the container started.
    pub started_at: String,
    /// How many times the shim restarted the container (counted when it decides to restart, as
    /// Docker does).
    #[serde(default)]
    pub restart_count: u32,
    /// The init exited and the shim waits for the back-off delay before restarting it; `pid`
    /// and `init_start_ticks` are those of the exited init.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarting: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerStatus {
    Running {
        pid: i32,
    },
    /// The init exited and the shim restarts it after the back-off delay (Docker's
    /// "restarting"; a manual stop ends it, [`wait_exit`] keeps waiting).
    Restarting {
        restart_count: u32,
        /// The exit that caused the restart.
        last_exit: Option<ExitInfo>,
    },
    Exited(ExitInfo),
    /// The shim died without recording an exit (killed, or the host's pid 1 reaped it
    /// mid-flight); the container may still run, orphaned.
    Lost {
        pid: i32,
    },
}

/// Requests on the shim's socket: one JSON line each way.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub(crate) enum Request {
    /// A manual stop: disables restarting for good, then signals the init (if it runs).
    Kill {
        signal: i32,
    },
    /// Signals the init and leaves the restart policy alone.
    Signal {
        signal: i32,
    },
    State,
    Wait,
    /// Sets the window size of the container's terminal (TIOCSWINSZ on the pty master).
    Resize {
        rows: u16,
        cols: u16,
    },
}

/// Answers on the socket, and the start report on the readiness pipe.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarting: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Writes `data` to `dir/name` through a temporary file and a rename, without fsync: the
/// runtime state means nothing after a reboot; [`sync_file`] makes an exit record durable
/// once the waiters have it.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), ShimError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, &path)
    })();
    res.map_err(|source| ShimError::Write { path, source })
}

/// fsyncs `dir/name` and `dir`.
pub(crate) fn sync_file(dir: &Path, name: &str) -> io::Result<()> {
    File::open(dir.join(name))?.sync_all()?;
    File::open(dir)?.sync_all()
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ShimError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| ShimError::Decode {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ShimError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `exit.json` of a container, if it exited.
pub fn read_exit(state_dir: &Path) -> Result<Option<ExitInfo>, ShimError> {
    read_json(&state_dir.join(EXIT_FILE))
}

/// `last_exit.json` of a container: the latest exit after which the shim restarted it.
pub fn read_last_exit(state_dir: &Path) -> Result<Option<ExitInfo>, ShimError> {
    read_json(&state_dir.join(LAST_EXIT_FILE))
}

/// `state.json` of a container, if it started.
pub fn read_state(state_dir: &Path) -> Result<Option<StateFile>, ShimError> {
    read_json(&state_dir.join(STATE_FILE))
}

/// Start time (clock ticks since boot) of a live, non-zombie process.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); starttime is field 22.
    fields.nth(22 - 4)?.parse().ok()
}

/// Waits until the process `pid` that started at `start_ticks` has ended (a zombie counts as
/// ended); true when it has (or never was), false after `timeout`. Waits on a pidfd.
#[allow(unsafe_code)]
pub fn wait_process_gone(pid: i32, start_ticks: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let Ok(raw) = i32::try_from(raw) else {
        return false;
    };
    if raw < 0 {
        // ESRCH: gone already.
        return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: the kernel just returned this new descriptor, owned by nobody else.
    let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // Gone, or the pid is another process's by now.
    if process_start_ticks(pid) != Some(start_ticks) {
        return true;
    }
    match readable_before(pidfd.as_fd(), deadline) {
        Ok(ended) => ended,
        Err(_) => process_start_ticks(pid) != Some(start_ticks),
    }
}

/// Waits until `fd` is readable (true) or `deadline` passed (false); EINTR is retried.
fn readable_before(fd: BorrowedFd<'_>, deadline: Instant) -> nix::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Starts a shim for `req`, forked by the [`zygote`] if this process started one, else by
/// re-executing `exe shim ...`, and waits until it reports the container started (or failed). Blocking: call it from a blocking thread in async code.
pub fn spawn(exe: &Path, req: &ShimRequest) -> Result<ShimHandle, ShimError> {
    fs::create_dir_all(&req.state_dir).map_err(|source| ShimError::StateDir {
        path: req.state_dir.clone(),
        source,
    })?;
    let shim_log_path = req.state_dir.join(SHIM_LOG_FILE);
    let shim_log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&shim_log_path)
        .map_err(|source| ShimError::Open {
            path: shim_log_path.clone(),
            source,
        })?;
    let (report_rd, report_wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ShimError::Pipe)?;
    let wr_fd = report_wr.as_raw_fd();

    let mut args: Vec<OsString> = vec![
        "--id".into(),
        req.id.clone().into(),
        "--bundle".into(),
        req.bundle.clone().into(),
        "--state".into(),
        req.state_dir.clone().into(),
        "--root".into(),
        req.runtime_root.clone().into(),
        "--restart".into(),
        req.restart.to_string().into(),
    ];
    if req.tty {
        args.push("--tty".into());
    }
    if req.stdin {
        args.push("--stdin".into());
    }
    for a in &req.on_exit {
        args.push("--on-exit".into());
        args.push(a.into());
    }
    let report = if zygote::spawn(&args, report_wr.as_fd(), shim_log.as_fd()) {
        drop(report_wr);
        drop(shim_log);
        read_report(report_rd, req.start_timeout)
    } else {
        let mut cmd = Command::new(exe);
        cmd.arg("shim")
            .args(&args)
            .arg("--ready-fd")
            .arg(wr_fd.to_string());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(shim_log))
            .current_dir("/");
        detach_and_pass_fd(&mut cmd, wr_fd);
        let mut child = cmd.spawn().map_err(|source| ShimError::Exec {
            exe: exe.to_path_buf(),
            source,
        })?;
        drop(report_wr);
        let report = read_report(report_rd, req.start_timeout);
        // The first shim process forks the real shim and exits at once (or failed early).
        let _ = child.wait();
        report
    };
    let report = match report {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(ShimError::NoReport {
                id: req.id.clone(),
                log: log_tail(&shim_log_path),
            })
        }
        Err(ReportError::Timeout) => {
            return Err(ShimError::StartTimeout {
                id: req.id.clone(),
                timeout: req.start_timeout,
            })
        }
        Err(ReportError::Io(e)) => return Err(ShimError::ReadReport(e)),
    };
    match (report.ok, report.pid, report.shim_pid) {
        (true, Some(pid), Some(shim_pid)) => Ok(ShimHandle {
            id: req.id.clone(),
            state_dir: req.state_dir.clone(),
            pid,
            shim_pid,
        }),
        _ => Err(ShimError::StartFailed {
            id: req.id.clone(),
            message: report
                .error
                .unwrap_or_else(|| "no pid in the shim's report".to_owned()),
        }),
    }
}

/// Makes the child a session leader (so it leaves the engine's process group and terminal) and
/// lets it inherit the readiness pipe `fd` across exec.
#[allow(unsafe_code)]
fn detach_and_pass_fd(cmd: &mut Command, fd: i32) {
    // SAFETY: the closure runs between fork and exec in the child of a possibly multi-threaded
    // process; it only makes the async-signal-safe syscalls setsid(2) and fcntl(2), and allocates
    // nothing (an io::Error from a raw errno does not allocate).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            // `fd` is the write end of the readiness pipe, open in the parent and so here.
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            Ok(())
        });
    }
}

enum ReportError {
    Timeout,
    Io(io::Error),
}

/// Reads the shim's one-line report until EOF (both shim processes closed the pipe).
fn read_report(fd: OwnedFd, timeout: Duration) -> Result<Option<Response>, ReportError> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut file = File::from(fd);
    loop {
        match readable_before(file.as_fd(), deadline) {
            Ok(true) => {}
            Ok(false) => return Err(ReportError::Timeout),
            Err(e) => return Err(ReportError::Io(io::Error::from(e))),
        }
        let mut chunk = [0u8; 4096];
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReportError::Io(e)),
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    if line.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(line)
        .map(Some)
        .map_err(|e| ReportError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    if tail.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = tail.into_iter().rev().collect();
        format!(" (shim log: {})", lines.join(" | "))
    }
}

/// Where the shim of `state_dir` binds its sockets: the volatile tmpfs when there is one
/// ([`crate::volatile::socket_dir`]: creating a socket inode costs nothing there, ~0.1 ms each
/// on this project's ext4 test hosts), else the state directory itself.
pub fn socket_dir(state_dir: &Path) -> PathBuf {
    if crate::volatile::on_tmpfs(Path::new(crate::volatile::VOLATILE_DIR)) {
        crate::volatile::socket_dir(state_dir)
    } else {
        state_dir.to_path_buf()
    }
}

/// Removes the volatile socket directory of the shim of `state_dir`, if any (the shim does
/// it when it ends; this is for a shim that was killed).
pub fn remove_socket_dir(state_dir: &Path) {
    let dir = crate::volatile::socket_dir(state_dir);
    if let Err(e) = fs::remove_dir_all(&dir) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot remove a shim's socket directory");
        }
    }
}

/// The path of socket `name` of the shim of `state_dir` (in its volatile socket directory, or
/// in `state_dir` for a shim that had none), through /proc/self/fd when the real path is too
/// long for `sun_path`; the returned directory handle must stay open while the path is used.
pub(crate) fn socket_path(
    state_dir: &Path,
    name: &str,
) -> Result<(PathBuf, Option<File>), io::Error> {
    let volatile = crate::volatile::socket_dir(state_dir).join(name);
    if volatile.exists() {
        return Ok((volatile, None));
    }
    let path = state_dir.join(name);
    if path.as_os_str().len() < 100 {
        return Ok((path, None));
    }
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(state_dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()));
    Ok((short, Some(dir)))
}

fn connect(state_dir: &Path) -> Result<UnixStream, io::Error> {
    let (path, _dir) = socket_path(state_dir, SOCKET_FILE)?;
    UnixStream::connect(path)
}

/// Attaches to the container's stdio (`STATE_DIR/attach.sock`): the stream delivers the
/// container's output (first the last 64 KiB produced before the attach), and what is written
/// to it goes to the container's stdin when the shim was started with `stdin`. Shutting down
/// the write side closes a stdin pipe (not a terminal). The stream ends (EOF) once the
/// container exited for good and its output was drained. `NotFound`/`ConnectionRefused`: the
/// shim is gone (the container exited; its output is in `container.log`).
pub fn attach(state_dir: &Path) -> Result<UnixStream, io::Error> {
    let (path, _dir) = socket_path(state_dir, ATTACH_FILE)?;
    UnixStream::connect(path)
}

/// Sets the window size of the container's terminal (the container gets SIGWINCH).
/// [`ShimError::Refused`] when the container has no terminal.
pub fn resize(state_dir: &Path, rows: u16, cols: u16) -> Result<(), ShimError> {
    send_request(state_dir, &Request::Resize { rows, cols })
}

/// One request/response exchange. `Ok(None)`: the shim closed the connection without answering.
fn request(
    state_dir: &Path,
    req: &Request,
    timeout: Option<Duration>,
) -> Result<Option<Response>, io::Error> {
    let mut stream = connect(state_dir)?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_read_timeout(timeout)?;
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    match reader.read_line(&mut answer) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
        Err(e) => return Err(e),
    }
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The container's status from its state files and the shim's liveness.
pub fn status(state_dir: &Path) -> Result<ContainerStatus, ShimError> {
    if let Some(exit) = read_exit(state_dir)? {
        return Ok(ContainerStatus::Exited(exit));
    }
    let Some(state) = read_state(state_dir)? else {
        return Err(ShimError::NoState(state_dir.to_path_buf()));
    };
    if process_start_ticks(state.shim_pid) == Some(state.shim_start_ticks) {
        if state.restarting {
            return Ok(ContainerStatus::Restarting {
                restart_count: state.restart_count,
                last_exit: read_last_exit(state_dir)?,
            });
        }
        return Ok(ContainerStatus::Running { pid: state.pid });
    }
    // The shim may have written exit.json just before it went away.
    match read_exit(state_dir)? {
        Some(exit) => Ok(ContainerStatus::Exited(exit)),
        None => Ok(ContainerStatus::Lost { pid: state.pid }),
    }
}

/// `docker kill`: a manual stop. The shim stops restarting the container for good (whatever its
/// restart policy, as Docker does after `docker kill`), then sends `signal` to the init. During
/// a restart back-off there is no init: the restart is cancelled and the shim ends with the last
/// exit. `berth stop` ([`stop`]) and `berth rm -f` go through this too.
pub fn kill(state_dir: &Path, signal: i32) -> Result<(), ShimError> {
    send_request(state_dir, &Request::Kill { signal })
}

/// Sends `signal` to the container's init without touching the restart policy (e.g. SIGHUP to
/// reload a configuration); [`ShimError::NotRunning`] during a restart back-off.
pub fn signal(state_dir: &Path, signal: i32) -> Result<(), ShimError> {
    send_request(state_dir, &Request::Signal { signal })
}

fn send_request(state_dir: &Path, req: &Request) -> Result<(), ShimError> {
    let control = |source| ShimError::Control {
        path: socket_dir(state_dir).join(SOCKET_FILE),
        source,
    };
    match request(state_dir, req, Some(REQUEST_TIMEOUT)) {
        Ok(Some(r)) if r.ok => Ok(()),
        Ok(Some(r)) if r.not_running => Err(ShimError::NotRunning),
        Ok(Some(r)) => Err(ShimError::Refused(r.error.unwrap_or_default())),
        Ok(None) => Err(ShimError::NotRunning),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            if read_exit(state_dir)?.is_some() {
                Err(ShimError::NotRunning)
            } else {
                Err(control(e))
            }
        }
        Err(e) => Err(control(e)),
    }
}

/// Waits up to `timeout` for the container to exit (and its shim to clean up).
/// `Ok(None)`: still running at the deadline.
pub fn wait_exit(state_dir: &Path, timeout: Duration) -> Result<Option<ExitInfo>, ShimError> {
    if let Some(exit) = read_exit(state_dir)? {
        return Ok(Some(exit));
    }
    if timeout.is_zero() {
        return Ok(None);
    }
    match request(state_dir, &Request::Wait, Some(timeout)) {
        Ok(Some(Response {
            exit: Some(exit), ..
        })) => return Ok(Some(exit)),
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            tracing::debug!(state_dir = %state_dir.display(), error = %e, "shim socket unavailable");
        }
    }
    // The shim answered without an exit, closed the connection or is gone: exit.json decides.
    match read_exit(state_dir)? {
        Some(exit) => Ok(Some(exit)),
        None => match status(state_dir)? {
            ContainerStatus::Exited(exit) => Ok(Some(exit)),
            ContainerStatus::Lost { .. } => Err(ShimError::Lost(state_dir.to_path_buf())),
            ContainerStatus::Running { .. } | ContainerStatus::Restarting { .. } => Ok(None),
        },
    }
}

/// Stops a container like `docker stop`: `signal` (SIGTERM or the image's STOPSIGNAL), then
/// SIGKILL if it has not exited after `timeout`. A manual stop: the container is not restarted
/// (and a pending restart is cancelled at once).
pub fn stop(state_dir: &Path, signal: i32, timeout: Duration) -> Result<ExitInfo, ShimError> {
    match kill(state_dir, signal) {
        Ok(()) | Err(ShimError::NotRunning) => {}
        Err(e) => return Err(e),
    }
    if let Some(exit) = wait_exit(state_dir, timeout)? {
        return Ok(exit);
    }
    tracing::debug!(state_dir = %state_dir.display(), "container ignored the stop signal, killing it");
    match kill(state_dir, libc::SIGKILL) {
        Ok(()) | Err(ShimError::NotRunning) => {}
        Err(e) => return Err(e),
    }
    wait_exit(state_dir, KILL_TIMEOUT)?.ok_or(ShimError::StopTimeout(KILL_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines() {
        let r = serde_json::to_string(&Request::Kill { signal: 15 }).expect("encode");
        assert_eq!(r, r#"{"op":"kill","signal":15}"#);
        let r = serde_json::to_string(&Request::Signal { signal: 1 }).expect("encode");
        assert_eq!(r, r#"{"op":"signal","signal":1}"#);
        let r = serde_json::to_string(&Request::Wait).expect("encode");
        assert_eq!(r, r#"{"op":"wait"}"#);
        let r = serde_json::to_string(&Request::Resize { rows: 24, cols: 80 }).expect("encode");
        assert_eq!(r, r#"{"op":"resize","rows":24,"cols":80}"#);
        let ok = serde_json::to_string(&Response {
            ok: true,
            ..Default::default()
        })
        .expect("encode");
        assert_eq!(ok, r#"{"ok":true}"#);
        let state = serde_json::to_string(&Response {
            ok: true,
            restarting: true,
            restart_count: 2,
            ..Default::default()
        })
        .expect("encode");
        assert_eq!(state, r#"{"ok":true,"restarting":true,"restartCount":2}"#);
    }

    #[test]
    fn exit_json_shape() {
        let e = ExitInfo {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            started_at: "a".into(),
            finished_at: "b".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).expect("encode"),
            r#"{"exitCode":137,"signal":9,"oomKilled":true,"startedAt":"a","finishedAt":"b"}"#
        );
    }

    #[test]
    fn own_start_ticks() {
        let me = i32::try_from(std::process::id()).expect("pid fits");
        assert!(process_start_ticks(me).is_some());
        assert_eq!(process_start_ticks(i32::MAX), None);
    }

    #[test]
    fn status_without_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(matches!(status(tmp.path()), Err(ShimError::NoState(_))));
        write_atomic(
            tmp.path(),
            STATE_FILE,
            br#"{"id":"x","pid":1,"shimPid":2147483647,"shimStartTicks":1,"initStartTicks":1,"startedAt":"t"}"#,
        )
        .expect("write");
        assert_eq!(
            status(tmp.path()).expect("status"),
            ContainerStatus::Lost { pid: 1 }
        );
        assert_eq!(
            read_state(tmp.path())
                .expect("read")
                .map(|s| s.restart_count),
            Some(0)
        );
        assert!(matches!(
            wait_exit(tmp.path(), Duration::from_millis(10)),
            Err(ShimError::Lost(_))
        ));
    }
}
