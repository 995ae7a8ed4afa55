//! The shim zygote: a single-threaded child that `berth` forks at startup, before any other
//! thread exists, and that forks shims on request instead of [`super::spawn`] re-executing the
//! binary.
//!
//! Re-executing costs a fork of the (multi-threaded, large) engine process, an `execve`, the
//! dynamic loader and the command-line parser: ~2 ms of every container start, more than a
//! fifth of a `berth run` here. The zygote is forked while the process is still small and
//! single-threaded, so its children may run any code, exactly like the re-executed shim.
//!
//! Protocol: a `SOCK_SEQPACKET` socket pair. One message per shim: the JSON array of the
//! `berth shim` arguments (as [`super::spawn`] would pass them, without the program and the
//! `shim` word) with two descriptors attached (`SCM_RIGHTS`): the write end of the readiness
//! pipe and the shim's log file. The zygote forks; the child starts a new session, takes
//! `/dev/null` as stdin/stdout and the log as stderr, parses the arguments and runs the shim
//! (without the second fork a re-executed shim makes to leave its parent: the zygote's
//! children are already detached), which reports on the readiness pipe as always. The zygote
//! ignores SIGCHLD, so the kernel reaps its children when they end, and nothing waits for
//! them; when the zygote exits (the socket closed: the engine process ended) they are
//! re-parented like any orphan. If the zygote is gone, [`super::spawn`] re-executes the
//! binary as before.
//!
//! A message without descriptors is a detached command instead ([`run_detached`]: the
//! background `rm -rf` of a removed container's directory): the zygote forks and the child
//! (new session, `/dev/null` stdio) executes the command. The engine does not pay for a fork
//! and exec of its own large multi-threaded process.

use std::ffi::OsString;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use clap::Parser;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::unistd::{dup2, fork, setsid, ForkResult};

use super::ShimArgs;

/// The largest request (the arguments of one shim as JSON).
const MAX_REQUEST: usize = 64 * 1024;

/// The engine's end of the zygote's socket; `None` before [`start`] or once the zygote is gone.
static ZYGOTE: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Forks the zygote. Call it only while the process is single-threaded (first thing in
/// `main`, before any runtime or thread): the zygote is a copy of the process at that moment.
/// An error leaves shims to be re-executed. `init` runs in each shim once its stderr is the
/// shim's log (the binary sets up logging there, as a re-executed shim does).
#[allow(unsafe_code)]
pub fn start(init: fn()) -> nix::Result<()> {
    if super::server::thread_count() != 1 {
        return Err(nix::errno::Errno::EBUSY);
    }
    let (engine_end, zygote_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: the caller guarantees a single-threaded process, so no lock can be held by a
    // thread that does not exist in the child.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(engine_end);
            serve(zygote_end, init)
        }
        ForkResult::Parent { .. } => {
            drop(zygote_end);
            if let Ok(mut z) = ZYGOTE.lock() {
                *z = Some(engine_end);
            }
            Ok(())
        }
    }
}

/// Asks the zygote for a shim with these arguments; false if there is no zygote (or it is
/// gone), and the caller re-executes the binary instead.
pub(super) fn spawn(args: &[OsString], ready: BorrowedFd<'_>, log: BorrowedFd<'_>) -> bool {
    let args: Vec<String> = match args.iter().map(|a| a.clone().into_string()).collect() {
        Ok(a) => a,
        Err(_) => return false, // not UTF-8: the exec path passes it as is
    };
    send(&args, &[ready.as_raw_fd(), log.as_raw_fd()])
}

/// Has the zygote run `argv` (an absolute program path, then its arguments) detached: its
/// own session, `/dev/null` stdio, reaped by nobody here. False if there is no zygote; the
/// caller starts the command itself.
pub fn run_detached(argv: &[&str]) -> bool {
    if !argv.first().is_some_and(|p| p.starts_with('/')) {
        return false;
    }
    let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
    send(&argv, &[])
}

fn send(args: &[String], fds: &[RawFd]) -> bool {
    let Ok(mut guard) = ZYGOTE.lock() else {
        return false;
    };
    let Some(sock) = guard.as_ref() else {
        return false;
    };
    let Ok(msg) = serde_json::to_vec(args) else {
        return false;
    };
    if msg.len() > MAX_REQUEST {
        return false;
    }
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsg: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    match sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&msg)],
        cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "the shim zygote is gone");
            *guard = None;
            false
        }
    }
}

/// The zygote's loop. Never returns.
fn serve(sock: OwnedFd, init: fn()) -> ! {
    let _ = nix::sys::prctl::set_name(c"berth-zygote");
    // Let go of the engine's stdio at once: a caller reading `berth run -d`'s output waits for
    // EOF, which must not depend on this process.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    if let Ok(null) = &null {
        for fd in 0..3 {
            let _ = dup2(null.as_raw_fd(), fd);
        }
    }
    drop(null);
    // The kernel reaps the children: a shim lives on as a child of this process, which does
    // not wait for it (it stays a zombie otherwise until the zygote exits).
    set_sigchld(SigHandler::SigIgn);
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let (args, fds) = match receive(&sock, &mut buf) {
            Ok(Some(r)) => r,
            Ok(None) => std::process::exit(0),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(1),
        };
        let Some(args) = args else {
            continue;
        };
        if fds.is_empty() {
            fork_detached(&sock, args);
            continue;
        }
        let [ready, log] = match <[OwnedFd; 2]>::try_from(fds) {
            Ok(f) => f,
            Err(_) => continue, // malformed: the engine times out on its readiness pipe
        };
        fork_shim(&sock, args, ready, log, init);
    }
}

/// One request: the arguments (`None` if they do not parse) and the attached descriptors.
/// `Ok(None)` at EOF.
type Request = (Option<Vec<String>>, Vec<OwnedFd>);

fn receive(sock: &OwnedFd, buf: &mut [u8]) -> nix::Result<Option<Request>> {
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = c {
            for fd in received {
                // SAFETY: the kernel just installed this descriptor in our table for us.
                #[allow(unsafe_code)]
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let n = msg.bytes;
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    let args = serde_json::from_slice::<Vec<String>>(&iov[0][..n]).ok();
    Ok(Some((args, fds)))
}

/// SIGCHLD's disposition: ignored in the zygote (its children are reaped by the kernel), the
/// default again in each child (a shim waits for its container; a command inherits it).
#[allow(unsafe_code)]
fn set_sigchld(handler: SigHandler) {
    // SAFETY: only SIG_DFL or SIG_IGN are installed, no handler function runs.
    let _ = unsafe { signal(Signal::SIGCHLD, handler) };
}

/// Forks one shim, not waited for (the kernel reaps it).
#[allow(unsafe_code)]
fn fork_shim(sock: &OwnedFd, args: Vec<String>, ready: OwnedFd, log: OwnedFd, init: fn()) {
    // SAFETY: the zygote is single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            set_sigchld(SigHandler::SigDfl);
            let _ = nix::unistd::close(sock.as_raw_fd());
            let _ = setsid();
            let _ = std::env::set_current_dir("/");
            let _ = dup2(log.as_raw_fd(), 2);
            drop(log);
            init();
            let argv = std::iter::once("shim".to_owned()).chain(args);
            let code = match ShimArgs::try_parse_from(argv) {
                Ok(mut a) => {
                    a.ready_fd = Some(ready.as_raw_fd());
                    // The shim owns the descriptor from here (its reporter closes it).
                    std::mem::forget(ready);
                    super::server::shim_main_detached(a)
                }
                Err(e) => {
                    eprintln!("berth shim (zygote): {e}");
                    2
                }
            };
            std::process::exit(code)
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(ready);
            drop(log);
        }
        Err(_) => {
            // Dropping the readiness pipe's write end ends the engine's wait with no report.
        }
    }
}

/// Runs a detached command: the child executes `argv` in its own session with `/dev/null`
/// stdio; not waited for (the kernel reaps it).
#[allow(unsafe_code)]
fn fork_detached(sock: &OwnedFd, argv: Vec<String>) {
    let Ok(cargs) = argv
        .iter()
        .map(|a| std::ffi::CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let Some(program) = cargs.first().cloned() else {
        return;
    };
    // SAFETY: the zygote is single-threaded.
    if let Ok(ForkResult::Child) = unsafe { fork() } {
        set_sigchld(SigHandler::SigDfl);
        let _ = nix::unistd::close(sock.as_raw_fd());
        let _ = setsid();
        let _ = nix::unistd::execv(&program, &cargs);
        // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers.
        unsafe { libc::_exit(127) }
    }
}
