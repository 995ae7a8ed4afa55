//! `berth exec`: run one more process in a running container.
//!
//! libcontainer's tenant builder joins the container's namespaces and cgroup and execs the
//! process described by a `process.json` (an OCI `Process`: args, env, cwd, user, capabilities,
//! no_new_privs, rlimits, terminal). Like the shim, this must run in a single-threaded process
//! (libcontainer forks): the `berth` binary calls [`exec`] before it starts its async runtime.
//!
//! Without a terminal the process inherits this process's stdout and stderr (and stdin with
//! `-i`, `/dev/null` otherwise), so output streams straight to the user. With a terminal,
//! libcontainer sends the pty master over a console socket; [`exec`] puts the user's terminal in
//! raw mode and copies bytes both ways until the process exits. The return value is the
//! process's exit code (128 + signal when killed), as `docker exec` reports it.

use std::fs::{self, File};
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use crate::shim::{receive_console, reset_ignored_signals, thread_count};

const CONSOLE_SOCKET: &str = "exec-console.sock";

/// Errors of [`exec`].
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("exec must run in a single-threaded process ({0} threads)")]
    Threads(usize),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the process in the container")]
    Start(#[source] LibcontainerError),
    #[error("cannot set up the terminal")]
    Terminal(#[source] io::Error),
    #[error("cannot wait for the process")]
    Wait(#[source] Errno),
    /// `timeout` passed: the process was killed.
    #[error("the process did not finish within {0:?} and was killed")]
    TimedOut(std::time::Duration),
}

/// One `exec`.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The container's id (its libcontainer id).
    pub id: String,
    /// libcontainer's root directory (the shim's `--root`).
    pub runtime_root: PathBuf,
    /// The process to run; `terminal` decides between a pty and inherited stdio.
    pub process: Process,
    /// A private directory for `process.json` and the console socket (removed afterwards by
    /// the caller).
    pub work_dir: PathBuf,
    /// `-i`: connect this process's stdin.
    pub stdin: bool,
    /// The container's compiled seccomp program (its spec names one; see [`crate::seccomp_bpf`]).
    pub seccomp: Option<crate::seccomp_bpf::Filter>,
    /// Without a terminal: SIGKILL the process when it runs longer than this (from its start),
    /// and fail with [`ExecError::TimedOut`] (health checks).
    pub timeout: Option<std::time::Duration>,
}

/// Runs the process and returns its exit code. The calling process must be single-threaded.
pub fn exec(req: &ExecRequest) -> Result<i32, ExecError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(ExecError::Threads(threads));
    }
    // The process is forked twice on its way into the container; as a subreaper this process
    // gets it back as a child whatever libcontainer's intermediate processes do.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| ExecError::Terminal(io::Error::from(e)))?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExecError::Write { path, source }
    };
    fs::create_dir_all(&req.work_dir).map_err(write_err(&req.work_dir))?;
    let process_path = req.work_dir.join("process.json");
    let tty = req.process.terminal().unwrap_or(false);
    let mut process = req.process.clone();
    if tty {
        if let Some(size) = terminal_size() {
            process.set_console_size(Some(size));
        }
    }
    let json = serde_json::to_vec(&process).map_err(|e| ExecError::Write {
        path: process_path.clone(),
        source: io::Error::other(e),
    })?;
    fs::write(&process_path, json).map_err(write_err(&process_path))?;

    let mut builder = ContainerBuilder::new(req.id.clone(), SyscallType::Linux)
        .with_root_path(&req.runtime_root)
        .map_err(ExecError::Start)?
        .with_executor(crate::seccomp_bpf::SeccompExecutor::new(
            req.seccomp.clone(),
        ));
    let console = if tty {
        let path = req.work_dir.join(CONSOLE_SOCKET);
        let _ = fs::remove_file(&path);
        // Socket paths are limited to 108 bytes: bind through an O_PATH descriptor of the dir.
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&req.work_dir)
            .map_err(ExecError::Terminal)?;
        let short = format!("/proc/self/fd/{}/{CONSOLE_SOCKET}", dir.as_raw_fd());
        let listener = UnixListener::bind(short).map_err(ExecError::Terminal)?;
        drop(dir);
        builder = builder.with_console_socket(Some(&path));
        Some(listener)
    } else {
        if !req.stdin {
            let null = File::open("/dev/null").map_err(write_err(Path::new("/dev/null")))?;
            builder = builder.with_stdin(OwnedFd::from(null));
        }
        None
    };
    reset_ignored_signals();
    let pid = builder
        .as_tenant()
        .with_process(Some(&process_path))
        .with_detach(tty)
        .build()
        .map_err(ExecError::Start)?;

    let code = match console {
        Some(listener) => {
            let master = receive_console(&listener)
                .map_err(|e| ExecError::Terminal(io::Error::other(e.to_string())))?;
            drop(listener);
            let _ = fs::remove_file(req.work_dir.join(CONSOLE_SOCKET));
            let raw = RawMode::enable();
            let copied = copy_pty(&master, pid, req.stdin);
            drop(raw);
            copied?
        }
        None => match req.timeout {
            Some(t) => wait_timeout(pid, t)?.ok_or(ExecError::TimedOut(t))?,
            None => wait_code(pid, None)?,
        },
    };
    Ok(code)
}

/// A pidfd of `pid` (`None` on kernels before 5.3).
#[allow(unsafe_code)]
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1; nothing
    // else is touched.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let raw = i32::try_from(raw).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `raw` is a descriptor just returned to us and owned by nobody else.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// Waits for `pid` at most `timeout` (a pidfd polled with the time left); kills and reaps it
/// after that and returns `None`.
fn wait_timeout(pid: Pid, timeout: std::time::Duration) -> Result<Option<i32>, ExecError> {
    let deadline = std::time::Instant::now() + timeout;
    let pidfd = pidfd_open(pid);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = wait_code(pid, None);
            return Ok(None);
        }
        match &pidfd {
            Some(fd) => {
                let ms = u16::try_from(left.as_millis().clamp(1, u128::from(u16::MAX)))
                    .unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(0) | Err(Errno::EINTR) => continue,
                    Ok(_) => return wait_code(pid, None).map(Some),
                    Err(e) => return Err(ExecError::Wait(e)),
                }
            }
            // Kernels before 5.3: poll the child.
            None => match wait_code(pid, Some(WaitPidFlag::WNOHANG))? {
                -1 => std::thread::sleep(left.min(std::time::Duration::from_millis(10))),
                code => return Ok(Some(code)),
            },
        }
    }
}

fn wait_code(pid: Pid, flags: Option<WaitPidFlag>) -> Result<i32, ExecError> {
    loop {
        match waitpid(pid, flags) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(WaitStatus::StillAlive) => return Ok(-1),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(ExecError::Wait(e)),
        }
    }
}

/// The user's terminal (stdin) in raw mode, restored on drop; does nothing when stdin is not a
/// terminal. Also used by `berth run -it`.
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub fn enable() -> RawMode {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return RawMode { saved: None };
        }
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return RawMode { saved: None };
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// The size of the user's terminal (stdout, else stdin), for the pty: height = rows,
/// width = columns.
#[allow(unsafe_code)]
pub fn terminal_size() -> Option<oci_spec::runtime::Box> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the valid, exclusively borrowed `ws`.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if rc == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return oci_spec::runtime::BoxBuilder::default()
                .height(u64::from(ws.ws_row))
                .width(u64::from(ws.ws_col))
                .build()
                .ok();
        }
    }
    None
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Copies stdin → pty master and pty master → stdout until the process exits; returns its
/// exit code.
fn copy_pty(master: &OwnedFd, pid: Pid, with_stdin: bool) -> Result<i32, ExecError> {
    let stdout = io::stdout();
    let stdin = io::stdin();
    let mut stdin_open = with_stdin;
    let mut buf = vec![0u8; 32 * 1024];
    let mut master_open = true;
    loop {
        // The process may exit while descendants keep the pty open: check on every round.
        if let Ok(status) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            match status {
                WaitStatus::Exited(_, code) => {
                    drain(master, &stdout, &mut buf);
                    return Ok(code);
                }
                WaitStatus::Signaled(_, sig, _) => {
                    drain(master, &stdout, &mut buf);
                    return Ok(128 + sig as i32);
                }
                _ => {}
            }
        }
        if !master_open {
            return wait_code(pid, None);
        }
        let (master_ready, stdin_ready) = {
            let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(ExecError::Terminal(io::Error::from(e))),
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            (ready(0), ready(1))
        };
        if master_ready {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(Errno::EIO) => master_open = false,
                Ok(n) => {
                    let _ = write_all(stdout.as_fd(), &buf[..n]);
                }
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                Err(_) => master_open = false,
            }
        }
        if stdin_ready {
            match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    // End of input: send EOF (^D) to the terminal's reader, as docker does.
                    stdin_open = false;
                    let _ = write_all(master.as_fd(), &[4]);
                }
                Ok(n) => {
                    if !write_all(master.as_fd(), &buf[..n]) {
                        stdin_open = false;
                    }
                }
            }
        }
    }
}

/// Copies what is left on the pty master to stdout (bounded: the pty's buffer).
fn drain(master: &OwnedFd, stdout: &io::Stdout, buf: &mut [u8]) {
    for _ in 0..64 {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(50u16)) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        match nix::unistd::read(master.as_raw_fd(), buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let _ = write_all(stdout.as_fd(), &buf[..n]);
            }
        }
    }
}
