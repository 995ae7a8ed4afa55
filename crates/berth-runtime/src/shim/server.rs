//! The shim process itself (`berth shim ...`): single-threaded, one per container.
//!
//! Start: detach (fork once; the first process exits so the engine reaps it at once), become a
//! child subreaper, bind the control socket, create the container with libcontainer (stdout and
//! stderr on pipes, or a pty through a console socket with `--tty`), start it, write
//! `state.json`, report `{"ok":true,"pid":..}` on the readiness pipe.
//!
//! Then one `poll(2)` loop over a signalfd (SIGCHLD; SIGTERM/SIGINT/SIGHUP are ignored: the shim
//! ends with its container), the output pipes, the control socket and its connections, the
//! attach socket and its clients, and the container's stdin when input is pending.
//!
//! Attach (`attach.sock`): every output byte goes to the log, to a replay buffer (the last
//! [`REPLAY_MAX`] bytes, sent first to a client that attaches later) and to each attached client
//! (raw: pty output, or stdout and stderr interleaved). Sockets are non-blocking; a client whose
//! unsent output exceeds [`CLIENT_QUEUE_MAX`] is dropped rather than stalling the container.
//! With `--stdin`, client bytes go to the container's stdin (the pty master, or the write end of
//! a stdin pipe); while [`INPUT_QUEUE_MAX`] bytes wait for the container, the shim stops reading
//! clients. A client that shuts down its write side closes the stdin pipe (not a terminal).
//! Clients stay attached across restarts (each run gets a new stdin pipe or pty, wired to the
//! same clients; the replay buffer is cleared when a restart is decided; a stdin pipe closed by
//! a client stays closed for later runs) and get EOF once the container exited for good: the
//! socket is unlinked, pending connections get the replay, queued output is flushed (bounded),
//! and every client is closed.
//!
//! Exit: when the init is a zombie (seen with `waitid(WNOWAIT)`, so its pid cannot be reused
//! while libcontainer looks at it): drain the output, read the OOM-kill counter, delete the
//! container, reap the init, remove the cgroup directories in every hierarchy. Then, if the
//! restart policy asks for it and no manual stop (kill request) came: write `last_exit.json` and
//! `state.json` (restarting), keep serving the socket during the back-off delay (a kill cancels
//! the restart), create and start the container again with the same bundle, log and state
//! directory, rewrite `state.json` (new pid, restart count, start time) and loop. Otherwise (or if
//! the restart fails): write `exit.json`, answer the waiters, remove the socket.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;

use crate::seccomp_bpf::{Filter, SeccompExecutor};
use libcontainer::container::Container;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::Spec;
use time::OffsetDateTime;

use super::restart::Backoff;
use super::{
    process_start_ticks, socket_path, sync_file, write_atomic, ExitInfo, Request, Response,
    RestartPolicy, ShimArgs, ShimError, StateFile, ATTACH_FILE, EXIT_FILE, LAST_EXIT_FILE,
    LOG_FILE, SOCKET_FILE, STATE_FILE,
};
use crate::cgroup::{self, CgroupMount};
use crate::logs::{self, JsonLogWriter, Stream};

/// How long the shim keeps reading output after the init exited (descendants outside the pid
/// namespace may hold the pipes open).
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// A control connection that sends no complete request within this time is dropped.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);
const CONSOLE_SOCKET: &str = "console.sock";
/// Output kept for clients that attach later (e.g. a shell prompt printed before the attach).
pub(crate) const REPLAY_MAX: usize = 64 * 1024;
/// Unsent output queued for one attached client; beyond it the client is dropped.
pub(crate) const CLIENT_QUEUE_MAX: usize = 1024 * 1024;
/// Client input waiting for the container's stdin; beyond it clients are not read.
pub(crate) const INPUT_QUEUE_MAX: usize = 64 * 1024;
/// How long the shim tries to flush queued output to attached clients at the end.
const CLIENT_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the shim must run single-threaded, found {0} threads")]
    Threads(usize),
    #[error("cannot fork the shim")]
    Fork(#[source] nix::Error),
    #[error("cannot prepare the shim process")]
    Setup(#[source] nix::Error),
    #[error("cannot create directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the spec in {path}")]
    Spec {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("the spec has no linux.cgroupsPath (the shim needs it to clean up)")]
    NoCgroupsPath,
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp_bpf::BpfError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("cannot listen on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the container log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create a pipe")]
    Pipe(#[source] nix::Error),
    #[error("cannot create the container")]
    Create(#[source] LibcontainerError),
    #[error("libcontainer reported no init pid")]
    NoPid,
    #[error("cannot start the container")]
    Start(#[source] LibcontainerError),
    #[error("cannot receive the container's terminal")]
    Console(#[source] io::Error),
    #[error("cannot set up signal handling")]
    Signals(#[source] nix::Error),
    #[error("cannot wait for events")]
    Poll(#[source] nix::Error),
    #[error(transparent)]
    State(#[from] ShimError),
}

/// The error and its sources in one line, without repeating a source already in a message.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !m.is_empty() && !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        src = s.source();
    }
    out
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn timestamp(t: OffsetDateTime) -> String {
    logs::rfc3339_nano(t).unwrap_or_default()
}

/// The readiness pipe: one JSON line, then closed.
struct Reporter {
    pipe: Option<File>,
}

impl Reporter {
    fn new(fd: Option<RawFd>) -> Self {
        Reporter {
            pipe: fd.and_then(adopt_fd).map(File::from),
        }
    }

    fn send(&mut self, r: &Response) {
        if let Some(mut f) = self.pipe.take() {
            if let Ok(mut line) = serde_json::to_vec(r) {
                line.push(b'\n');
                if let Err(e) = f.write_all(&line) {
                    tracing::warn!(error = %e, "cannot report to the engine");
                }
            }
        }
    }

    fn fail(&mut self, e: &dyn std::error::Error) {
        let message = error_chain(e);
        tracing::error!(error = %message, "container start failed");
        self.send(&Response {
            ok: false,
            error: Some(message),
            ..Default::default()
        });
    }
}

/// Takes ownership of the inherited readiness pipe (and stops it leaking into the container).
#[allow(unsafe_code)]
fn adopt_fd(fd: RawFd) -> Option<OwnedFd> {
    if fd <= 2 || fcntl(fd, FcntlArg::F_GETFD).is_err() {
        tracing::warn!(fd, "the readiness fd is not open");
        return None;
    }
    let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    // SAFETY: `fd` is open (checked above), above the stdio range, and was inherited from the
    // engine for this purpose only; nothing else in this process owns it, and it is adopted once.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn thread_count() -> usize {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// Forks; the parent returns `false` and exits, the child (the shim proper) gets `true`.
#[allow(unsafe_code)]
fn daemonize() -> Result<bool, ServerError> {
    // SAFETY: the process is single-threaded (checked by the caller), so the child may run any
    // code after fork: no lock can be held by a thread that does not exist in the child.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { .. }) => Ok(false),
        Ok(ForkResult::Child) => Ok(true),
        Err(e) => Err(ServerError::Fork(e)),
    }
}

/// Sets SIGPIPE's disposition (the shim ignores it, as Rust programs do, to get EPIPE instead).
#[allow(unsafe_code)]
fn set_sigpipe(handler: nix::sys::signal::SigHandler) {
    // SAFETY: only SIG_DFL or SIG_IGN are installed, no handler function runs.
    if let Err(e) = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, handler) } {
        tracing::warn!(error = %e, "cannot set SIGPIPE disposition");
    }
}

/// The signals this process ignores (the `SigIgn` mask of /proc/self/status).
fn ignored_signals() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 share this layout); all zeroes is
/// SIG_DFL with no flags and an empty mask.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Resets every ignored signal to its default: ignored dispositions survive fork and exec, so
/// whatever the engine (or Rust's runtime, for SIGPIPE) ignores would be ignored in the container.
/// Raw rt_sigaction(2), because glibc refuses its reserved real-time signals (32, 33).
#[allow(unsafe_code)]
pub(crate) fn reset_ignored_signals() {
    let ignored = ignored_signals();
    for sig in 1..=64i32 {
        if ignored & (1u64 << (sig - 1)) == 0 {
            continue;
        }
        let dfl = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: `dfl` is a valid kernel sigaction for the duration of the call, the old-action
        // pointer is null, and the size is the kernel's sigset size (8 bytes); installing
        // SIG_DFL runs no code in this process.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
        if rc != 0 {
            tracing::warn!(sig, error = %Errno::last(), "cannot reset an ignored signal");
        }
    }
}

/// kill(2) with any signal number (real-time signals included, e.g. STOPSIGNAL SIGRTMIN+3).
#[allow(unsafe_code)]
fn send_signal(pid: Pid, signal: i32) -> Result<(), Errno> {
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid.as_raw(), signal) };
    Errno::result(rc).map(drop)
}

/// Entry point of `berth shim`. Returns the process exit code.
pub fn shim_main(args: ShimArgs) -> i32 {
    shim_main_with(args, true)
}

/// A shim forked by the zygote: single-threaded, in its own session, and already away from
/// the engine (the zygote does not wait for it), so it does not fork again.
pub(super) fn shim_main_detached(args: ShimArgs) -> i32 {
    shim_main_with(args, false)
}

fn shim_main_with(args: ShimArgs, detach: bool) -> i32 {
    // One name for every shim, re-executed or forked by the zygote (whose command line is
    // its engine's): `pgrep -x berth-shim`.
    let _ = nix::sys::prctl::set_name(c"berth-shim");
    let mut reporter = Reporter::new(args.ready_fd);
    if detach {
        let threads = thread_count();
        if threads != 1 {
            reporter.fail(&ServerError::Threads(threads));
            return 1;
        }
        match daemonize() {
            Ok(false) => return 0,
            Ok(true) => {}
            Err(e) => {
                reporter.fail(&e);
                return 1;
            }
        }
    }
    let shim = match Shim::start(&args, &mut reporter) {
        Ok(shim) => shim,
        Err(e) => {
            reporter.fail(&e);
            return 1;
        }
    };
    let code = match shim.run() {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "shim failed");
            1
        }
    };
    run_on_exit(&args.on_exit);
    code
}

/// Starts the `--on-exit` command in its own process group, not waited for (it may remove the
/// shim's own directory).
fn run_on_exit(cmd: &[String]) {
    let Some((program, rest)) = cmd.split_first() else {
        return;
    };
    let spawned = std::process::Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        tracing::error!(error = %e, %program, "cannot start the on-exit command");
    }
}

fn bind_socket(dir: &Path, name: &str) -> Result<UnixListener, ServerError> {
    let path = dir.join(name);
    let _ = fs::remove_file(&path);
    let listen_err = |source| ServerError::Listen {
        path: path.clone(),
        source,
    };
    // Bound through an O_PATH descriptor of the directory when the path is too long.
    let (addr, _dir) = socket_path(dir, name).map_err(listen_err)?;
    let listener = UnixListener::bind(addr).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    Ok(listener)
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), ServerError> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(ServerError::Pipe)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(ServerError::Pipe)?;
    Ok(())
}

/// Receives the pty master that libcontainer's init sends over the console socket.
#[allow(unsafe_code)]
pub(crate) fn receive_console(listener: &UnixListener) -> Result<OwnedFd, ServerError> {
    listener
        .set_nonblocking(false)
        .map_err(ServerError::Console)?;
    let (conn, _) = listener.accept().map_err(ServerError::Console)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(ServerError::Console)?;
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| ServerError::Console(e.into()))?;
    let cmsgs = msg.cmsgs().map_err(|e| ServerError::Console(e.into()))?;
    for cmsg in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            let mut owned = fds.into_iter().map(|fd| {
                // SAFETY: SCM_RIGHTS installed these descriptors in this process just now;
                // nothing else refers to them.
                unsafe { OwnedFd::from_raw_fd(fd) }
            });
            if let Some(master) = owned.next() {
                return Ok(master);
            }
        }
    }
    Err(ServerError::Console(io::Error::new(
        io::ErrorKind::InvalidData,
        "no file descriptor in the console message",
    )))
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    since: Instant,
}

/// Whether a parked waiter is still connected (it sends nothing after its request).
fn waiter_open(stream: &mut UnixStream) -> bool {
    let mut b = [0u8; 64];
    match stream.read(&mut b) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

fn reply(stream: &mut UnixStream, r: &Response) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

/// An output source of the container: a pipe (stdout/stderr) or the pty master.
struct Output {
    fd: OwnedFd,
    stream: Stream,
}

/// A container created and started by [`launch`].
struct Launched {
    container: Container,
    init: Pid,
    outputs: Vec<Output>,
    /// A duplicate of the pty master (`--tty`): resize, and stdin with `--stdin`.
    pty: Option<OwnedFd>,
    /// The write end of the container's stdin pipe (`--stdin` without `--tty`), non-blocking.
    stdin_pipe: Option<OwnedFd>,
}

/// A client on `attach.sock`.
struct Client {
    stream: UnixStream,
    /// Output not yet written to the client.
    out: VecDeque<u8>,
    /// The client has not shut down its write side.
    input_open: bool,
    /// To be removed at the end of the loop turn (indices stay stable within a turn).
    dead: bool,
}

/// Writes what the socket takes of `c.out`; `false` when the client is gone.
fn flush_client(c: &mut Client) -> bool {
    while !c.out.is_empty() {
        let (head, _) = c.out.as_slices();
        match c.stream.write(head) {
            Ok(0) => return false,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}

/// TIOCSWINSZ on the pty master: the kernel sends SIGWINCH to the terminal's foreground group.
#[allow(unsafe_code)]
fn set_window_size(pty: &OwnedFd, rows: u16, cols: u16) -> Result<(), Errno> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `pty` is an open pty master owned by the shim; TIOCSWINSZ only reads one
    // `winsize` from the valid pointer for the duration of the call.
    let rc = unsafe {
        libc::ioctl(
            pty.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        )
    };
    Errno::result(rc).map(drop)
}

/// Entries of the poll set after the fixed part (signalfd, listener, outputs, conns, waiters).
#[derive(Clone, Copy)]
enum Slot {
    Attach,
    Client(usize),
    Input,
}

/// Deletes a container that failed half-way (or whose setup failed after it started), reaps its
/// init and removes its cgroups and libcontainer state.
fn abort_container(
    container: &mut Container,
    init: Pid,
    mounts: &[CgroupMount],
    cgroups_path: &Path,
    container_root: &Path,
) {
    if let Err(err) = container.delete(true) {
        tracing::warn!(error = %error_chain(&err), "cannot delete the failed container");
    }
    let _ = waitpid(init, None);
    cleanup_cgroups(mounts, cgroups_path);
    let _ = fs::remove_dir_all(container_root);
}

/// Creates and starts the container from `args.bundle` (the first time and on each restart).
/// Cleans up after itself on failure.
fn launch(
    args: &ShimArgs,
    mounts: &[CgroupMount],
    cgroups_path: &Path,
    seccomp: &Option<Filter>,
) -> Result<Launched, ServerError> {
    let mut builder = ContainerBuilder::new(args.id.clone(), SyscallType::Linux)
        .with_root_path(&args.root)
        .map_err(ServerError::Create)?
        .validate_id()
        .map_err(ServerError::Create)?
        .with_executor(SeccompExecutor::new(seccomp.clone()));
    let mut outputs = Vec::new();
    let mut stdin_pipe = None;
    if args.stdin && !args.tty {
        let (in_r, in_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ServerError::Pipe)?;
        set_nonblocking(&in_w)?;
        builder = builder.with_stdin(in_r);
        stdin_pipe = Some(in_w);
    }
    let console = if args.tty {
        let sockets = super::socket_dir(&args.state);
        let l = bind_socket(&sockets, CONSOLE_SOCKET)?;
        builder = builder.with_console_socket(Some(sockets.join(CONSOLE_SOCKET)));
        Some(l)
    } else {
        let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ServerError::Pipe)?;
        let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ServerError::Pipe)?;
        outputs.push(Output {
            fd: out_r,
            stream: Stream::Stdout,
        });
        outputs.push(Output {
            fd: err_r,
            stream: Stream::Stderr,
        });
        builder = builder.with_stdout(out_w).with_stderr(err_w);
        None
    };

    reset_ignored_signals();
    let built = builder
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    set_sigpipe(nix::sys::signal::SigHandler::SigIgn);
    // The builder owned the write ends of the pipes; they are closed now, so EOF on a pipe
    // means every process of the container closed it.
    let container_root = args.root.join(&args.id);
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            cleanup_cgroups(mounts, cgroups_path);
            return Err(ServerError::Create(e));
        }
    };
    let Some(init) = container.pid() else {
        let _ = container.delete(true);
        cleanup_cgroups(mounts, cgroups_path);
        return Err(ServerError::NoPid);
    };
    let mut abort = |e: ServerError| {
        abort_container(&mut container, init, mounts, cgroups_path, &container_root);
        e
    };

    let mut pty = None;
    if let Some(l) = &console {
        match receive_console(l).and_then(|master| {
            let dup = master.try_clone().map_err(ServerError::Console)?;
            Ok((master, dup))
        }) {
            Ok((master, dup)) => {
                outputs.push(Output {
                    fd: master,
                    stream: Stream::Stdout,
                });
                // Same open file description: non-blocking with the master below.
                pty = Some(dup);
            }
            Err(e) => return Err(abort(e)),
        }
    }
    drop(console);
    let _ = fs::remove_file(args.state.join(CONSOLE_SOCKET));
    for o in &outputs {
        if let Err(e) = set_nonblocking(&o.fd) {
            return Err(abort(e));
        }
    }

    if let Err(e) = container.start() {
        abort_container(&mut container, init, mounts, cgroups_path, &container_root);
        return Err(ServerError::Start(e));
    }
    Ok(Launched {
        container,
        init,
        outputs,
        pty,
        stdin_pipe,
    })
}

/// What ended a turn of the event loop.
enum Event {
    /// The init exited (a zombie, not reaped yet).
    Exited(WaitStatus),
    /// The restart back-off is over.
    BackoffOver,
    /// A manual stop arrived during the back-off.
    Stopped,
}

struct Shim {
    args: ShimArgs,
    /// Where `shim.sock` and `attach.sock` are (`super::socket_dir`).
    sockets: PathBuf,
    container_root: PathBuf,
    /// The container and its init while it runs; `None` during a restart back-off.
    running: Option<(Container, Pid)>,
    /// Pid and start time of the current (or last) init, for state.json.
    pid: i32,
    init_start_ticks: u64,
    shim_pid: i32,
    shim_start_ticks: u64,
    cgroups_path: PathBuf,
    /// The parent cgroup of a task sandbox the container runs in ([`SANDBOX_CGROUP_ANNOTATION`])
    /// and its OOM-kill counter when the current run started.
    sandbox_cgroup: Option<(PathBuf, u64)>,
    /// The spec has OCI hooks: only then does an exited run go through libcontainer's
    /// `delete` (which runs the poststop hooks); otherwise the shim's own cleanup does all it
    /// would do (cgroups, runtime state) without its ~600 system calls on the exit path.
    has_hooks: bool,
    mounts: Vec<CgroupMount>,
    /// The compiled seccomp program the spec names (installed by each run's init).
    seccomp: Option<Filter>,
    log: JsonLogWriter<File>,
    outputs: Vec<Output>,
    listener: UnixListener,
    conns: Vec<Conn>,
    waiters: Vec<UnixStream>,
    /// `attach.sock` and its clients.
    attach: UnixListener,
    clients: Vec<Client>,
    /// The last [`REPLAY_MAX`] bytes of output of the current run.
    replay: VecDeque<u8>,
    /// The current run's pty master (a duplicate) and stdin pipe, see [`Launched`].
    pty: Option<OwnedFd>,
    stdin_pipe: Option<OwnedFd>,
    /// Client input not yet taken by the container's stdin.
    input: Vec<u8>,
    /// A client closed its input: the stdin pipe is closed (also for later runs).
    stdin_closed: bool,
    sigfd: SignalFd,
    /// The signals read through `sigfd` (blocked, except while a restart creates the container).
    sigmask: SigSet,
    started_at: String,
    /// When the current run started (for the back-off reset).
    run_started: Instant,
    restart_count: u32,
    backoff: Backoff,
    /// A manual stop (kill) arrived: never restart again.
    stop_requested: bool,
    /// The exit that the pending restart follows.
    last_exit: Option<ExitInfo>,
}

impl Shim {
    fn start(args: &ShimArgs, reporter: &mut Reporter) -> Result<Shim, ServerError> {
        nix::unistd::chdir("/").map_err(ServerError::Setup)?;
        nix::sys::prctl::set_child_subreaper(true).map_err(ServerError::Setup)?;
        for dir in [&args.state, &args.root] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| ServerError::Dir {
                    path: dir.clone(),
                    source,
                })?;
        }
        let spec_path = args.bundle.join("config.json");
        let spec = Spec::load(&spec_path).map_err(|source| ServerError::Spec {
            path: spec_path,
            source,
        })?;
        let cgroups_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .ok_or(ServerError::NoCgroupsPath)?;
        cgroup::relative_path(&cgroups_path)?;
        let mounts = cgroup::mounts()?;
        let seccomp = Filter::from_spec(&spec)?;
        let has_hooks = spec.hooks().is_some();
        let sandbox_cgroup = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SANDBOX_CGROUP_ANNOTATION))
            .map(PathBuf::from)
            .filter(|p| cgroup::relative_path(p).is_ok())
            .map(|p| {
                let base = sandbox_oom_count(&mounts, &p);
                (p, base)
            });

        // The sockets on the volatile tmpfs when there is one (`super::socket_dir`).
        let sockets = super::socket_dir(&args.state);
        if sockets != args.state {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&sockets)
                .map_err(|source| ServerError::Dir {
                    path: sockets.clone(),
                    source,
                })?;
        }
        let remove_sockets = |sockets: &Path| {
            if sockets == args.state {
                let _ = fs::remove_file(sockets.join(SOCKET_FILE));
                let _ = fs::remove_file(sockets.join(ATTACH_FILE));
            } else {
                let _ = fs::remove_dir_all(sockets);
            }
        };
        let listener = match bind_socket(&sockets, SOCKET_FILE)
            .and_then(|l| Ok((l, bind_socket(&sockets, ATTACH_FILE)?)))
        {
            Ok(l) => l,
            Err(e) => {
                remove_sockets(&sockets);
                return Err(e);
            }
        };
        let (listener, attach) = listener;
        let log_path = args.state.join(LOG_FILE);
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&log_path)
            .map_err(|source| ServerError::Log {
                path: log_path,
                source,
            })?;

        catch_stop_signals();
        let Launched {
            mut container,
            init,
            outputs,
            pty,
            stdin_pipe,
        } = match launch(args, &mounts, &cgroups_path, &seccomp) {
            Ok(l) => l,
            Err(e) => {
                remove_sockets(&sockets);
                return Err(e);
            }
        };
        let started_at = timestamp(now());
        let container_root = args.root.join(&args.id);

        // SIGCHLD (and the signals the shim ignores) through a signalfd from now on. Blocked only
        // after the container exists: blocked signals are inherited across fork and exec.
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        let sigfd = match mask.thread_block().and_then(|()| {
            SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        }) {
            Ok(fd) => fd,
            Err(e) => {
                abort_container(
                    &mut container,
                    init,
                    &mounts,
                    &cgroups_path,
                    &container_root,
                );
                return Err(ServerError::Signals(e));
            }
        };

        let shim_pid = nix::unistd::getpid().as_raw();
        let mut shim = Shim {
            args: args.clone(),
            sockets,
            container_root,
            running: Some((container, init)),
            pid: init.as_raw(),
            init_start_ticks: process_start_ticks(init.as_raw()).unwrap_or(0),
            shim_pid,
            shim_start_ticks: process_start_ticks(shim_pid).unwrap_or(0),
            cgroups_path,
            sandbox_cgroup,
            has_hooks,
            mounts,
            seccomp,
            log: JsonLogWriter::new(log_file),
            outputs,
            listener,
            conns: Vec::new(),
            waiters: Vec::new(),
            attach,
            clients: Vec::new(),
            replay: VecDeque::new(),
            pty,
            stdin_pipe,
            input: Vec::new(),
            stdin_closed: false,
            sigfd,
            sigmask: mask,
            started_at,
            run_started: Instant::now(),
            restart_count: 0,
            backoff: Backoff::default(),
            stop_requested: false,
            last_exit: None,
        };
        if let Err(e) = shim.write_state(false) {
            if let Some((mut container, init)) = shim.running.take() {
                abort_container(
                    &mut container,
                    init,
                    &shim.mounts,
                    &shim.cgroups_path,
                    &shim.container_root,
                );
            }
            return Err(e.into());
        }

        tracing::info!(id = %args.id, pid = init.as_raw(), restart = %args.restart, "container started");
        reporter.send(&Response {
            ok: true,
            pid: Some(init.as_raw()),
            shim_pid: Some(shim_pid),
            ..Default::default()
        });
        Ok(shim)
    }

    /// Writes `state.json` for the current (or, `restarting`, the last) init.
    fn write_state(&self, restarting: bool) -> Result<(), ShimError> {
        let state = StateFile {
            id: self.args.id.clone(),
            pid: self.pid,
            shim_pid: self.shim_pid,
            shim_start_ticks: self.shim_start_ticks,
            init_start_ticks: self.init_start_ticks,
            started_at: self.started_at.clone(),
            restart_count: self.restart_count,
            restarting,
        };
        let bytes = serde_json::to_vec(&state).map_err(|e| ShimError::Write {
            path: self.args.state.join(STATE_FILE),
            source: io::Error::other(e),
        })?;
        write_atomic(&self.args.state, STATE_FILE, &bytes)
    }

    fn init(&self) -> Option<Pid> {
        self.running.as_ref().map(|(_, init)| *init)
    }

    /// The event loop; returns once the container exited for good and everything is cleaned up.
    fn run(mut self) -> Result<(), ServerError> {
        let mut backoff_until = None;
        loop {
            match self.serve(backoff_until)? {
                Event::Exited(status) => {
                    let ran_for = self.run_started.elapsed();
                    let exit = self.reap(status, now());
                    let policy = self.args.restart;
                    if self.stop_requested
                        || !policy.should_restart(exit.exit_code, self.restart_count)
                    {
                        return self.finish(exit);
                    }
                    self.release();
                    self.restart_count += 1;
                    let delay = self.backoff.next(ran_for);
                    tracing::info!(
                        id = %self.args.id,
                        exit_code = exit.exit_code,
                        restart_count = self.restart_count,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        %policy,
                        "restarting the container"
                    );
                    if let Err(e) = self.write_last_exit(&exit) {
                        tracing::warn!(error = %error_chain(&e), "cannot record the last exit");
                    }
                    self.last_exit = Some(exit);
                    // Attached clients saw this run's output; a late one gets the next run's.
                    self.replay.clear();
                    if let Err(e) = self.write_state(true) {
                        tracing::warn!(error = %error_chain(&e), "cannot update the state file");
                    }
                    backoff_until = Some(Instant::now() + delay);
                }
                Event::Stopped => {
                    tracing::info!(id = %self.args.id, "restart cancelled by a stop");
                    return self.finish_last();
                }
                Event::BackoffOver => {
                    backoff_until = None;
                    if let Err(e) = self.relaunch() {
                        tracing::error!(
                            id = %self.args.id,
                            error = %error_chain(&e),
                            "cannot restart the container"
                        );
                        // Whatever libcontainer left of the failed attempt.
                        self.release();
                        return self.finish_last();
                    }
                }
            }
        }
    }

    /// Ends the shim with the exit that preceded a cancelled or failed restart.
    fn finish_last(self) -> Result<(), ServerError> {
        match self.last_exit.clone() {
            Some(exit) => self.finish(exit),
            None => Ok(()),
        }
    }

    fn write_last_exit(&self, exit: &ExitInfo) -> Result<(), ShimError> {
        let bytes = serde_json::to_vec(exit).map_err(|e| ShimError::Write {
            path: self.args.state.join(LAST_EXIT_FILE),
            source: io::Error::other(e),
        })?;
        write_atomic(&self.args.state, LAST_EXIT_FILE, &bytes)
    }

    /// Creates and starts the container again after a back-off.
    fn relaunch(&mut self) -> Result<(), ServerError> {
        // The container must not inherit the shim's blocked signals (SIGTERM blocked in the
        // init would make `stop` wait for SIGKILL). While they are unblocked, SIGTERM/INT/HUP
        // reach the no-op handler and SIGCHLD is discarded: the loop polls waitid(2) anyway.
        self.sigmask
            .thread_unblock()
            .map_err(ServerError::Signals)?;
        let launched = launch(&self.args, &self.mounts, &self.cgroups_path, &self.seccomp);
        let blocked = self.sigmask.thread_block();
        let Launched {
            mut container,
            init,
            outputs,
            pty,
            stdin_pipe,
        } = launched?;
        if let Err(e) = blocked {
            abort_container(
                &mut container,
                init,
                &self.mounts,
                &self.cgroups_path,
                &self.container_root,
            );
            return Err(ServerError::Signals(e));
        }
        self.started_at = timestamp(now());
        self.run_started = Instant::now();
        if let Some((path, base)) = &mut self.sandbox_cgroup {
            *base = sandbox_oom_count(&self.mounts, path);
        }
        self.pid = init.as_raw();
        self.init_start_ticks = process_start_ticks(init.as_raw()).unwrap_or(0);
        self.running = Some((container, init));
        self.outputs = outputs;
        self.pty = pty;
        // A stdin closed by a client stays closed: the new run reads EOF at once.
        self.stdin_pipe = stdin_pipe.filter(|_| !self.stdin_closed);
        if let Err(e) = self.write_state(false) {
            tracing::warn!(error = %error_chain(&e), "cannot update the state file");
        }
        tracing::info!(
            id = %self.args.id,
            pid = init.as_raw(),
            restart_count = self.restart_count,
            "container restarted"
        );
        Ok(())
    }

    /// Serves output, requests and signals until the init exits, or (no init: restart back-off)
    /// until `deadline` or a manual stop.
    fn serve(&mut self, deadline: Option<Instant>) -> Result<Event, ServerError> {
        loop {
            if self.running.is_some() {
                if let Some(status) = self.check_children() {
                    return Ok(Event::Exited(status));
                }
            } else {
                self.reap_strays();
                if self.stop_requested {
                    return Ok(Event::Stopped);
                }
            }
            let mut wait = (!self.conns.is_empty()).then_some(Duration::from_secs(1));
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Event::BackoffOver);
                }
                wait = Some(wait.map_or(left, |w| w.min(left)));
            }
            let timeout = match wait {
                // Rounded up, so the loop does not spin through the last millisecond.
                Some(d) => PollTimeout::from(
                    u16::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u16::MAX),
                ),
                None => PollTimeout::NONE,
            };
            let mut slots = Vec::new();
            let extra_base;
            let revents = {
                let mut fds = vec![
                    PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                ];
                fds.extend(
                    self.outputs
                        .iter()
                        .map(|o| PollFd::new(o.fd.as_fd(), PollFlags::POLLIN)),
                );
                fds.extend(
                    self.conns
                        .iter()
                        .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)),
                );
                fds.extend(
                    self.waiters
                        .iter()
                        .map(|w| PollFd::new(w.as_fd(), PollFlags::POLLIN)),
                );
                extra_base = fds.len();
                slots.push(Slot::Attach);
                fds.push(PollFd::new(self.attach.as_fd(), PollFlags::POLLIN));
                let read_clients = self.reading_clients();
                for (i, c) in self.clients.iter().enumerate() {
                    let mut events = PollFlags::empty();
                    if c.input_open && read_clients {
                        events |= PollFlags::POLLIN;
                    }
                    if !c.out.is_empty() {
                        events |= PollFlags::POLLOUT;
                    }
                    // Not polled at all when there is nothing to do: a hung-up client would
                    // otherwise wake the loop until its input can be read.
                    if !events.is_empty() {
                        slots.push(Slot::Client(i));
                        fds.push(PollFd::new(c.stream.as_fd(), events));
                    }
                }
                if !self.input.is_empty() {
                    if let Some(fd) = self.input_target() {
                        slots.push(Slot::Input);
                        fds.push(PollFd::new(fd, PollFlags::POLLOUT));
                    }
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(ServerError::Poll(e)),
                }
                fds.iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect::<Vec<_>>()
            };
            let ready = |i: usize| !revents[i].is_empty();
            let n_out = self.outputs.len();

            // Output first, so lines written just before an exit are in the log.
            for i in (0..n_out).rev() {
                if ready(2 + i) {
                    self.read_output(i);
                }
            }
            for (k, slot) in slots.iter().enumerate() {
                let rev = revents[extra_base + k];
                if rev.is_empty() {
                    continue;
                }
                match *slot {
                    Slot::Attach => self.accept_attach(),
                    Slot::Client(i) => self.client_event(i, rev),
                    Slot::Input => self.flush_input(),
                }
            }
            self.clients.retain(|c| !c.dead);
            let n_conns = self.conns.len();
            // A waiter that hung up (its wait timed out) is dropped, so repeated short waits do
            // not pile up sockets in a long-lived shim.
            for i in (0..self.waiters.len()).rev() {
                if ready(2 + n_out + n_conns + i) && !waiter_open(&mut self.waiters[i]) {
                    self.waiters.remove(i);
                }
            }
            for i in (0..n_conns).rev() {
                if ready(2 + n_out + i) {
                    self.read_conn(i);
                }
            }
            self.conns.retain(|c| c.since.elapsed() < CONN_TIMEOUT);
            if ready(1) {
                self.accept();
            }
            if ready(0) {
                while let Ok(Some(info)) = self.sigfd.read_signal() {
                    if info.ssi_signo != libc::SIGCHLD as u32 {
                        tracing::info!(
                            signal = info.ssi_signo,
                            "ignoring signal (the shim ends with its container)"
                        );
                    }
                }
            }
        }
    }

    /// Where client input goes: the pty master or the stdin pipe (`--stdin` only).
    fn input_target(&self) -> Option<BorrowedFd<'_>> {
        if !self.args.stdin {
            return None;
        }
        if self.args.tty {
            self.pty.as_ref().map(|f| f.as_fd())
        } else {
            self.stdin_pipe.as_ref().map(|f| f.as_fd())
        }
    }

    /// Whether client input is read now: not while [`INPUT_QUEUE_MAX`] bytes wait for the
    /// container, nor during a restart back-off with `--stdin` (the input is for the next run).
    fn reading_clients(&self) -> bool {
        self.input.len() < INPUT_QUEUE_MAX && !(self.args.stdin && self.running.is_none())
    }

    /// Accepts clients on `attach.sock`; each gets the replay buffer first.
    fn accept_attach(&mut self) {
        loop {
            match self.attach.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let mut c = Client {
                        stream,
                        out: self.replay.clone(),
                        input_open: true,
                        dead: false,
                    };
                    c.dead = !flush_client(&mut c);
                    tracing::debug!(replayed = self.replay.len(), "client attached");
                    self.clients.push(c);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// Output of the container: into the replay buffer and to every attached client.
    fn broadcast(&mut self, data: &[u8]) {
        self.replay.extend(data);
        if self.replay.len() > REPLAY_MAX {
            let excess = self.replay.len() - REPLAY_MAX;
            self.replay.drain(..excess);
        }
        for c in self.clients.iter_mut().filter(|c| !c.dead) {
            if c.out.len() + data.len() > CLIENT_QUEUE_MAX {
                tracing::warn!(
                    queued = c.out.len(),
                    "dropping an attached client that does not keep up with the output"
                );
                c.dead = true;
                continue;
            }
            c.out.extend(data);
            c.dead = !flush_client(c);
        }
    }

    fn client_event(&mut self, i: usize, rev: PollFlags) {
        if self.clients[i].dead {
            return;
        }
        if rev.contains(PollFlags::POLLOUT) && !flush_client(&mut self.clients[i]) {
            self.clients[i].dead = true;
            return;
        }
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR;
        if self.clients[i].input_open && (rev.contains(PollFlags::POLLIN) || rev.intersects(gone)) {
            self.read_client(i);
        } else if rev.intersects(gone) {
            self.clients[i].dead = true;
        }
    }

    /// Reads one chunk of input from client `i` into the input queue (discarded without a
    /// stdin); EOF closes the stdin pipe.
    fn read_client(&mut self, i: usize) {
        let mut chunk = [0u8; 16 * 1024];
        let res = self.clients[i].stream.read(&mut chunk);
        match res {
            Ok(0) => {
                self.clients[i].input_open = false;
                self.close_stdin();
            }
            Ok(n) => {
                if self.input_target().is_some() {
                    self.input.extend_from_slice(&chunk[..n]);
                    self.flush_input();
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => self.clients[i].dead = true,
        }
    }

    /// A client closed its input: close the stdin pipe once the queued input is written (a
    /// terminal stays open: the client sends ^D itself if it wants to).
    fn close_stdin(&mut self) {
        if !self.args.stdin || self.args.tty {
            return;
        }
        if !self.stdin_closed {
            tracing::debug!("client closed its input: closing the container's stdin");
        }
        self.stdin_closed = true;
        if self.input.is_empty() {
            self.stdin_pipe = None;
        }
    }

    /// Writes queued input to the container's stdin as far as it takes it.
    fn flush_input(&mut self) {
        let mut written = 0;
        let mut broken = false;
        if let Some(fd) = self.input_target() {
            while written < self.input.len() {
                match nix::unistd::write(fd, &self.input[written..]) {
                    Ok(0) => break,
                    Ok(n) => written += n,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => break,
                    // EPIPE: the container closed its stdin; EIO: the terminal is gone.
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
        }
        self.input.drain(..written);
        if broken {
            self.input.clear();
            if !self.args.tty {
                self.stdin_pipe = None;
            }
        }
        if self.input.is_empty() && self.stdin_closed {
            self.stdin_pipe = None;
        }
    }

    /// The container exited for good: no new clients (the socket is unlinked), connections
    /// made before get the replay, queued output is flushed for at most
    /// [`CLIENT_FLUSH_TIMEOUT`], then every client is closed (EOF).
    fn close_attach(&mut self) {
        let _ = fs::remove_file(self.sockets.join(ATTACH_FILE));
        self.accept_attach();
        let deadline = Instant::now() + CLIENT_FLUSH_TIMEOUT;
        loop {
            self.clients.retain(|c| !c.dead && !c.out.is_empty());
            let left = deadline.saturating_duration_since(Instant::now());
            if self.clients.is_empty() || left.is_zero() {
                break;
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let revents = {
                let mut fds: Vec<PollFd> = self
                    .clients
                    .iter()
                    .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLOUT))
                    .collect();
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(_) => break,
                }
                fds.iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect::<Vec<_>>()
            };
            for (c, rev) in self.clients.iter_mut().zip(revents) {
                if !rev.is_empty() {
                    c.dead = !flush_client(c);
                }
            }
        }
        if self.clients.iter().any(|c| !c.out.is_empty()) {
            tracing::warn!("attached clients did not take the last output in time");
        }
        self.clients.clear();
    }

    /// Reaps children other than the init; returns the init's status once it is a zombie
    /// (left unreaped, so its pid stays reserved).
    fn check_children(&mut self) -> Option<WaitStatus> {
        let init = self.init()?;
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::All, flags) {
                Ok(WaitStatus::StillAlive) | Err(_) => return None,
                Ok(status) => match status.pid() {
                    Some(pid) if pid == init => return Some(status),
                    Some(pid) => {
                        let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
                    }
                    None => return None,
                },
            }
        }
    }

    /// Reaps whatever exited (no init to keep as a zombie).
    fn reap_strays(&mut self) {
        while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if s == WaitStatus::StillAlive {
                break;
            }
        }
    }

    /// Reads what is available on output `i`; drops it at EOF (or EIO: the pty's other side
    /// is closed).
    fn read_output(&mut self, i: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let res = nix::unistd::read(self.outputs[i].fd.as_raw_fd(), &mut buf);
            match res {
                Ok(0) | Err(Errno::EIO) => {
                    let o = self.outputs.remove(i);
                    if let Err(e) = self.log.finish(o.stream, now()) {
                        tracing::warn!(error = %error_chain(&e), "cannot write the container log");
                    }
                    return;
                }
                Ok(n) => {
                    let stream = self.outputs[i].stream;
                    if let Err(e) = self.log.write(stream, &buf[..n], now()) {
                        tracing::warn!(error = %error_chain(&e), "cannot write the container log");
                    }
                    self.broadcast(&buf[..n]);
                    if n < buf.len() {
                        return;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.conns.push(Conn {
                            stream,
                            buf: Vec::new(),
                            since: Instant::now(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn read_conn(&mut self, i: usize) {
        let mut chunk = [0u8; 1024];
        let conn = &mut self.conns[i];
        match conn.stream.read(&mut chunk) {
            Ok(0) => {
                self.conns.remove(i);
                return;
            }
            Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => {
                self.conns.remove(i);
                return;
            }
        }
        let Some(end) = conn.buf.iter().position(|&b| b == b'\n') else {
            if conn.buf.len() > 64 * 1024 {
                self.conns.remove(i);
            }
            return;
        };
        let mut conn = self.conns.remove(i);
        let request: Result<Request, _> = serde_json::from_slice(&conn.buf[..end]);
        match request {
            Ok(Request::Kill { signal }) => {
                // A manual stop: no restart from now on, and a pending one is cancelled.
                if !self.stop_requested && self.args.restart != RestartPolicy::No {
                    tracing::info!(signal, "manual stop: the container will not be restarted");
                }
                self.stop_requested = true;
                let r = match self.init() {
                    Some(init) => self.signal_init(init, signal),
                    None => Response {
                        ok: true,
                        ..Default::default()
                    },
                };
                tracing::debug!(signal, ok = r.ok, "kill request");
                reply(&mut conn.stream, &r);
            }
            Ok(Request::Signal { signal }) => {
                let r = match self.init() {
                    Some(init) => self.signal_init(init, signal),
                    None => not_running(None),
                };
                tracing::debug!(signal, ok = r.ok, "signal request");
                reply(&mut conn.stream, &r);
            }
            Ok(Request::State) => reply(
                &mut conn.stream,
                &Response {
                    ok: true,
                    pid: self.init().map(Pid::as_raw),
                    shim_pid: Some(self.shim_pid),
                    restarting: self.running.is_none(),
                    restart_count: self.restart_count,
                    ..Default::default()
                },
            ),
            Ok(Request::Wait) => self.waiters.push(conn.stream),
            Ok(Request::Resize { rows, cols }) => {
                let r = match &self.pty {
                    Some(pty) => match set_window_size(pty, rows, cols) {
                        Ok(()) => Response {
                            ok: true,
                            ..Default::default()
                        },
                        Err(e) => Response {
                            ok: false,
                            error: Some(format!("cannot resize the terminal: {e}")),
                            ..Default::default()
                        },
                    },
                    None if self.args.tty => not_running(None),
                    None => Response {
                        ok: false,
                        error: Some("the container has no terminal".into()),
                        ..Default::default()
                    },
                };
                tracing::debug!(rows, cols, ok = r.ok, "resize request");
                reply(&mut conn.stream, &r);
            }
            Err(e) => reply(
                &mut conn.stream,
                &Response {
                    ok: false,
                    error: Some(format!("invalid request: {e}")),
                    ..Default::default()
                },
            ),
        }
    }

    fn signal_init(&self, init: Pid, signal: i32) -> Response {
        // The init is not reaped before the loop sees its exit, so its pid is still its own.
        match send_signal(init, signal) {
            Ok(()) => Response {
                ok: true,
                ..Default::default()
            },
            Err(Errno::ESRCH) => not_running(None),
            Err(e) => Response {
                ok: false,
                error: Some(format!("cannot send signal {signal}: {e}")),
                ..Default::default()
            },
        }
    }

    /// Reads the remaining output until every writer closed it or [`DRAIN_TIMEOUT`] passed.
    fn drain_outputs(&mut self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while !self.outputs.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let revents = {
                let mut fds: Vec<PollFd> = self
                    .outputs
                    .iter()
                    .map(|o| PollFd::new(o.fd.as_fd(), PollFlags::POLLIN))
                    .collect();
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(_) => break,
                }
                fds.iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect::<Vec<_>>()
            };
            for i in (0..revents.len()).rev() {
                if !revents[i].is_empty() {
                    self.read_output(i);
                }
            }
        }
        for o in std::mem::take(&mut self.outputs) {
            if let Err(e) = self.log.finish(o.stream, now()) {
                tracing::warn!(error = %error_chain(&e), "cannot write the container log");
            }
        }
    }

    /// Removes the exited container's cgroups and libcontainer state ([`Self::reap`] first):
    /// before a restart, or after [`Self::finish`] answered the waiters.
    fn release(&self) {
        cleanup_cgroups(&self.mounts, &self.cgroups_path);
        if self.container_root.exists() {
            if let Err(e) = fs::remove_dir_all(&self.container_root) {
                tracing::warn!(error = %e, dir = %self.container_root.display(), "cannot remove the container's runtime state");
            }
        }
    }

    /// After the init exited: drains the output, reads the OOM-kill counter, deletes the
    /// container (hooks only) and reaps the init. Its cgroups and libcontainer state stay
    /// for [`Self::release`].
    fn reap(&mut self, status: WaitStatus, finished_at: OffsetDateTime) -> ExitInfo {
        self.drain_outputs();
        // This run's stdin is gone; attached clients stay (for a restart, or until `finish`).
        self.pty = None;
        self.stdin_pipe = None;
        self.input.clear();
        let own_oom = match cgroup::oom_kill_count(&self.mounts, &self.cgroups_path) {
            Ok(n) => n.unwrap_or(0) > 0,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot read the OOM-kill counter");
                false
            }
        };
        // The kernel counts a kill in the victim's own cgroup (v1 and v2 alike), also when the
        // sandbox's limit was hit; as a fallback, a SIGKILLed init while the sandbox's counter
        // rose during this run counts as OOM-killed too.
        let sigkilled = matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _));
        let sandbox_oom = sigkilled
            && self
                .sandbox_cgroup
                .as_ref()
                .is_some_and(|(p, base)| sandbox_oom_count(&self.mounts, p) > *base);
        let oom_killed = own_oom || sandbox_oom;
        if let Some((mut container, init)) = self.running.take() {
            // The init is a zombie: libcontainer sees it stopped, and its pid is not reused yet.
            // Without hooks, what `delete` does (remove the cgroups and `run/<id>`) is done
            // below, from the cgroup mounts read at the start.
            if self.has_hooks {
                if let Err(e) = container.delete(true) {
                    tracing::warn!(error = %error_chain(&e), "cannot delete the container");
                }
            }
            let _ = waitpid(init, None);
        }
        self.reap_strays();

        let (exit_code, signal) = match status {
            WaitStatus::Exited(_, code) => (code, None),
            WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
            _ => (255, None),
        };
        ExitInfo {
            exit_code,
            signal,
            oom_killed,
            started_at: self.started_at.clone(),
            finished_at: timestamp(finished_at),
        }
    }

    /// Records `exit` in `exit.json`, answers the waiters and pending requests, removes the
    /// socket.
    fn finish(mut self, exit: ExitInfo) -> Result<(), ServerError> {
        let bytes = serde_json::to_vec(&exit).map_err(|e| ShimError::Write {
            path: self.args.state.join(EXIT_FILE),
            source: io::Error::other(e),
        })?;
        write_atomic(&self.args.state, EXIT_FILE, &bytes)?;
        if self.restart_count > 0 {
            // state.json said "restarting" if a restart was cancelled or failed.
            if let Err(e) = self.write_state(false) {
                tracing::warn!(error = %error_chain(&e), "cannot update the state file");
            }
        }
        tracing::info!(
            id = %self.args.id,
            exit_code = exit.exit_code,
            signal = ?exit.signal,
            oom_killed = exit.oom_killed,
            restart_count = self.restart_count,
            "container exited"
        );

        let answer = Response {
            ok: true,
            exit: Some(exit),
            ..Default::default()
        };
        for mut w in std::mem::take(&mut self.waiters) {
            reply(&mut w, &answer);
        }
        self.close_attach();
        // Requests that arrived meanwhile: waits get the exit, kills "not running".
        self.accept();
        for mut c in std::mem::take(&mut self.conns) {
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_read_timeout(Some(Duration::from_millis(100)));
            let mut rest = [0u8; 1024];
            while !c.buf.contains(&b'\n') {
                match c.stream.read(&mut rest) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => c.buf.extend_from_slice(&rest[..n]),
                }
            }
            let end = c
                .buf
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(c.buf.len());
            let r = match serde_json::from_slice::<Request>(&c.buf[..end]) {
                Ok(Request::Wait) => answer.clone(),
                _ => not_running(answer.exit.clone()),
            };
            reply(&mut c.stream, &r);
        }
        // The waiters have the exit: the cgroups and libcontainer's state go now, off their
        // path (the engine's removal waits for this process to end, except a foreground
        // `run --rm`, which leaves both to it).
        self.release();
        if self.sockets == self.args.state {
            let _ = fs::remove_file(self.sockets.join(SOCKET_FILE));
        } else {
            let _ = fs::remove_dir_all(&self.sockets);
        }
        // Durable after the waiters were answered: they need not wait for the disk.
        if let Err(e) = sync_file(&self.args.state, EXIT_FILE) {
            tracing::warn!(error = %e, "cannot sync the exit record");
        }
        Ok(())
    }
}

fn not_running(exit: Option<ExitInfo>) -> Response {
    Response {
        ok: false,
        not_running: true,
        error: Some("the container is not running".into()),
        exit,
        ..Default::default()
    }
}

/// A no-op handler: SIGTERM/SIGINT/SIGHUP must not kill the shim while they are unblocked
/// (during a restart), and caught signals are reset to the default on exec, so the container
/// does not inherit anything (unlike SIG_IGN).
extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs [`ignore_signal`] for the signals the shim otherwise reads through its signalfd.
#[allow(unsafe_code)]
fn catch_stop_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler};
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler does nothing, so it is async-signal-safe and touches no state.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            tracing::warn!(?sig, error = %e, "cannot install a signal handler");
        }
    }
}

/// The spec annotation naming the parent cgroup of the task sandbox a container runs in
/// (its OOM-kill counter is checked too when the container is SIGKILLed).
pub const SANDBOX_CGROUP_ANNOTATION: &str = "org.berth.sandbox.cgroup";

/// The OOM-kill counter of a sandbox's cgroup (0 when unreadable).
fn sandbox_oom_count(mounts: &[CgroupMount], path: &Path) -> u64 {
    match cgroup::oom_kill_count(mounts, path) {
        Ok(n) => n.unwrap_or(0),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "cannot read the sandbox's OOM-kill counter");
            0
        }
    }
}

fn cleanup_cgroups(mounts: &[CgroupMount], cgroups_path: &Path) {
    if let Err(e) = cgroup::remove_all(mounts, cgroups_path) {
        tracing::warn!(error = %error_chain(&e), "cgroup directories left behind");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_skips_repeated_sources() {
        let inner = io::Error::other("boom");
        let e = ServerError::Log {
            path: PathBuf::from("/x"),
            source: inner,
        };
        assert_eq!(error_chain(&e), "cannot open the container log /x: boom");
    }
}
