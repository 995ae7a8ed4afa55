//! `berth run|ps|logs|stop|kill|rm|inspect`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use berth_engine::{
    ContainerError, ContainerInfo, ContainerState, Engine, LogEntry, LogReader, Network, RunSpec,
};
use clap::Args;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Where the engine keeps its state.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Engine state directory (images, containers, runtime state).
    #[arg(long, env = "BERTH_ROOT", default_value = berth_engine::DEFAULT_ROOT)]
    pub root: PathBuf,
}

pub(crate) fn open_engine(a: &EngineArgs) -> anyhow::Result<Engine> {
    let exe = std::env::current_exe().context("cannot find the berth binary")?;
    Engine::open(&a.root, exe)
        .with_context(|| format!("cannot open the engine at {}", a.root.display()))
}

/// Runs blocking engine work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("engine task failed")?
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Keep stdin open and connect it to the container.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal for the container.
    #[arg(short, long)]
    pub tty: bool,
    /// Remove the container when it exits (foreground only).
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    /// Container name.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable NAME=VALUE (a bare NAME takes this process's value).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Network: bridge (the default network), a network's name, host, or none (own namespace,
    /// loopback only).
    #[arg(long, alias = "net", env = "BERTH_NETWORK", default_value = "bridge")]
    pub network: String,
    /// Publish a container port: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp], ranges allowed.
    #[arg(short, long = "publish")]
    pub publish: Vec<String>,
    /// Memory limit: bytes or with a unit (b, k, m, g), e.g. 512m.
    #[arg(short, long, value_parser = parse_bytes)]
    pub memory: Option<i64>,
    /// Number of CPUs (fractional).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// User: name|uid[:group|gid].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Override the image's entrypoint ("" drops it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Bind mount or volume: /host/path:/dst[:ro], NAME:/dst[:ro] or /dst (anonymous volume).
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Restart policy: no, on-failure[:MAX_RETRIES], always, unless-stopped.
    #[arg(long, default_value = "no")]
    pub restart: berth_runtime::shim::RestartPolicy,
    /// A tmpfs mount: /dst[:size=64m,mode=1777,...].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// CPU shares (relative weight, default 1024).
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<u64>,
    /// Memory soft limit (bytes or with a unit).
    #[arg(long, value_parser = parse_bytes)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit (bytes or with a unit; -1: unlimited swap); default: no swap.
    #[arg(long, value_parser = parse_swap, allow_hyphen_values = true)]
    pub memory_swap: Option<i64>,
    /// Resource limit NAME=SOFT[:HARD] (nofile, nproc, core, memlock, stack, ...; -1: unlimited).
    #[arg(long, value_parser = parse_ulimit)]
    pub ulimit: Vec<berth_runtime::spec::Ulimit>,
    /// Mount the container's root file system read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Give the container every capability and the host's devices, without seccomp or
    /// masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// Add a Linux capability (NET_ADMIN, CAP_SYS_TIME, ALL).
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (CHOWN, ALL).
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Add a line to the container's /etc/hosts: NAME:IP.
    #[arg(long)]
    pub add_host: Vec<String>,
    /// Container label KEY=VALUE.
    #[arg(short, long)]
    pub label: Vec<String>,
    /// Size of /dev/shm (bytes or with a unit; default 64m).
    #[arg(long, value_parser = parse_bytes)]
    pub shm_size: Option<i64>,
    /// DNS server for the container's resolv.conf (replaces the default ones).
    #[arg(long)]
    pub dns: Vec<String>,
    /// DNS search domain for the container's resolv.conf.
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// Image: NAME[:TAG] or id.
    pub image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

fn parse_swap(s: &str) -> Result<i64, String> {
    if s.trim() == "-1" {
        return Ok(-1);
    }
    parse_bytes(s)
}

fn parse_ulimit(s: &str) -> Result<berth_runtime::spec::Ulimit, String> {
    berth_runtime::spec::Ulimit::parse(s).map_err(|e| e.to_string())
}

pub(crate) fn parse_bytes(s: &str) -> Result<i64, String> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').filter(|r| !r.is_empty()).unwrap_or(&s);
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1i64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid size: {s}"))?;
    if n < 0.0 {
        return Err(format!("invalid size: {s}"));
    }
    Ok((n * mult as f64) as i64)
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Show all containers (default: running only).
    #[arg(short, long)]
    pub all: bool,
    /// Only show ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Full ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Follow the output until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Seconds to wait before killing.
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Signal (name or number).
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    /// Also remove the container's anonymous volumes.
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Keep stdin open (connect it to the process).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Environment variable NAME=VALUE (a bare NAME takes this process's value).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// User: name|uid[:group|gid] (default: the container's).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container (default: the container's).
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Kill the process after this many seconds and exit with 124 (not with -t).
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Container name or id.
    pub container: String,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("invalid timeout {s:?}: a positive number of seconds"))
}

/// `-e NAME` takes this process's value, as the docker CLI does.
fn resolve_env(env: &[String]) -> Vec<String> {
    env.iter()
        .map(|e| match (e.contains('='), std::env::var(e)) {
            (false, Ok(v)) => format!("{e}={v}"),
            _ => e.clone(),
        })
        .collect()
}

/// `berth exec`, run before the async runtime starts (libcontainer forks: the process must be
/// single-threaded). Returns the process's exit code; 126/127 when it cannot be started.
pub fn exec_sync(a: ExecArgs) -> i32 {
    let prepared = open_engine(&a.engine).and_then(|engine| {
        let spec = berth_engine::ExecSpec {
            cmd: a.cmd.clone(),
            env: resolve_env(&a.env),
            user: a.user.clone(),
            workdir: a.workdir.clone(),
            tty: a.tty,
            stdin: a.interactive,
            timeout: a.timeout,
        };
        Ok(engine.prepare_exec(&a.container, &spec)?)
    });
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berth: {e:#}");
            return 1;
        }
    };
    let result = berth_runtime::exec::exec(&prepared.request);
    prepared.cleanup();
    match result {
        Ok(code) => code,
        Err(e @ berth_runtime::exec::ExecError::TimedOut(_)) => {
            eprintln!("berth: {e}");
            124
        }
        Err(e) => {
            let msg = format!("{:#}", anyhow::Error::from(e));
            eprintln!("berth: {msg}");
            if msg.contains("not found") || msg.contains("No such file") {
                127
            } else {
                126
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct ContainerExitedArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    pub container: String,
}

/// The shim's on-exit hook: see `Engine::container_exited`.
pub async fn container_exited(a: ContainerExitedArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        engine.container_exited(&a.container)?;
        Ok(())
    })
    .await
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Containers or images.
    #[arg(required = true)]
    pub objects: Vec<String>,
}

/// `berth run`: returns the process exit code (the container's). In the foreground, SIGINT,
/// SIGTERM and SIGHUP received by `berth` are forwarded to the container (Docker's sig-proxy).
/// With `-i` or `-t` in the foreground, `berth` attaches to the container's stdio through its
/// shim (output to stdout; with `-i`, stdin to the container; with `-it` on a terminal, the
/// terminal in raw mode and its size passed on, also on SIGWINCH); otherwise it follows the
/// container's log.
pub async fn run(a: RunArgs) -> anyhow::Result<i32> {
    let (detach, rm, interactive, tty) = (a.detach, a.rm, a.interactive, a.tty);
    let started = blocking(move || {
        let engine = open_engine(&a.engine)?;
        let env = resolve_env(&a.env);
        let spec = RunSpec {
            image: a.image.clone(),
            cmd: a.cmd.clone(),
            name: a.name.clone(),
            env,
            network: match a.network.as_str() {
                "host" => Network::Host,
                "none" => Network::None,
                n => Network::Bridge(n.to_string()),
            },
            publish: a.publish.clone(),
            restart: a.restart,
            memory: a.memory,
            cpus: a.cpus,
            pids_limit: a.pids_limit,
            user: a.user.clone(),
            workdir: a.workdir.clone(),
            entrypoint: a.entrypoint.clone(),
            hostname: a.hostname.clone(),
            auto_remove: a.rm,
            detach: a.detach,
            volumes: a.volume.clone(),
            tmpfs: a.tmpfs.clone(),
            tty: a.tty,
            interactive: a.interactive,
            cpu_shares: a.cpu_shares,
            memory_reservation: a.memory_reservation,
            memory_swap: a.memory_swap,
            ulimits: a.ulimit.clone(),
            read_only: a.read_only,
            privileged: a.privileged,
            cap_add: a.cap_add.clone(),
            cap_drop: a.cap_drop.clone(),
            extra_hosts: a.add_host.clone(),
            labels: super::parse_labels(&a.label),
            shm_size: a
                .shm_size
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0),
            dns: a.dns.clone(),
            dns_search: a.dns_search.clone(),
            sandbox: None,
        };
        match engine.run(&spec) {
            Ok(r) => Ok(Ok((engine, r.id))),
            Err(e @ ContainerError::StartFailed { .. }) => {
                eprintln!("berth: {e}");
                Ok(Err(e.exit_code()))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    let (engine, id) = match started {
        Ok(started) => started,
        Err(code) => return Ok(code),
    };
    if detach {
        println!("{id}");
        return Ok(0);
    }
    let stream = if interactive || tty {
        let (engine, id) = (engine.clone(), id.clone());
        blocking(move || match engine.attach(&id) {
            Ok(s) => Ok(Some(s)),
            // The container already exited (and its shim is gone): its output is in the log.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(anyhow::Error::from(e).context("cannot attach to the container")),
        })
        .await?
    } else {
        None
    };
    let attached = stream.is_some();
    // Like docker: raw mode only when the terminal's input goes to the container's terminal
    // (with -t alone, ^C must still reach berth, which forwards SIGINT).
    let raw = (attached && interactive && tty).then(berth_runtime::exec::RawMode::enable);
    let resize = |engine: &Engine, id: &String| {
        let (engine, id) = (engine.clone(), id.clone());
        tokio::task::spawn_blocking(move || send_resize(&engine, &id));
    };
    if attached && tty {
        resize(&engine, &id);
    }
    // Without a raw terminal to restore first, `--rm` removes the container on the thread
    // that learnt the exit (no hop back to the runtime and out to another blocking thread).
    let remove_here = rm && !(attached && interactive && tty);
    let follow = {
        let (engine, id) = (engine.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            let exit = match stream {
                Some(stream) => {
                    if interactive {
                        let input = stream
                            .try_clone()
                            .context("cannot attach to the container")?;
                        // A plain thread, not spawn_blocking: it may block on stdin forever,
                        // and the runtime waits for its blocking tasks when it shuts down.
                        std::thread::spawn(move || pump_stdin(input, tty));
                    }
                    attached_output(&engine, &id, stream)
                }
                None => follow_logs(&engine, &id, false),
            };
            if remove_here {
                remove_after_run(&engine, &id);
            }
            exit
        })
    };
    tokio::pin!(follow);
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut sigwinch = signal(SignalKind::window_change()).context("cannot handle SIGWINCH")?;
    let forward = |sig: i32| {
        let (engine, id) = (engine.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = engine.kill(&id, sig) {
                tracing::debug!(error = %e, signal = sig, "signal not forwarded");
            }
        });
    };
    let exit = loop {
        tokio::select! {
            r = &mut follow => break r.context("log task failed")??,
            _ = sigint.recv() => forward(libc_signal::SIGINT),
            _ = sigterm.recv() => forward(libc_signal::SIGTERM),
            _ = sighup.recv() => forward(libc_signal::SIGHUP),
            _ = sigwinch.recv() => if attached && tty { resize(&engine, &id) },
        }
    };
    // Restores the terminal before anything else is printed (and before process::exit).
    drop(raw);
    if rm && !remove_here {
        blocking(move || {
            remove_after_run(&engine, &id);
            Ok(())
        })
        .await?;
    }
    Ok(exit.map(|e| e.exit_code).unwrap_or(0))
}

/// `--rm` once the foreground container exited; a failure is reported, not fatal (the exit
/// code stays the container's).
fn remove_after_run(engine: &Engine, id: &str) {
    if let Err(e) = engine.remove_after_run(id) {
        eprintln!("berth: cannot remove container {}: {e:#}", &id[..12]);
    }
}

/// Passes the user's terminal size (if stdout or stdin is one) to the container's terminal.
fn send_resize(engine: &Engine, id: &str) {
    let Some(size) = berth_runtime::exec::terminal_size() else {
        return;
    };
    let rows = u16::try_from(size.height()).unwrap_or(u16::MAX);
    let cols = u16::try_from(size.width()).unwrap_or(u16::MAX);
    if let Err(e) = engine.resize(id, rows, cols) {
        tracing::debug!(error = %e, rows, cols, "terminal size not passed on");
    }
}

/// Copies this process's stdin to the attach socket. At EOF: ^D for a terminal (as `berth exec
/// -it` does), then the write side is shut down (which closes a stdin pipe).
fn pump_stdin(mut socket: UnixStream, tty: bool) {
    let mut stdin = std::io::stdin();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if socket.write_all(&buf[..n]).is_err() {
                    // The container exited (the shim closed the attach).
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read stdin");
                break;
            }
        }
    }
    if tty {
        let _ = socket.write_all(&[4]);
    }
    let _ = socket.shutdown(std::net::Shutdown::Write);
}

/// Copies the attach socket to stdout until the shim closes it (the container exited for good
/// and its output was drained), then returns the container's exit.
fn attached_output(
    engine: &Engine,
    id: &str,
    mut socket: UnixStream,
) -> anyhow::Result<Option<berth_runtime::shim::ExitInfo>> {
    let mut buf = vec![0u8; 32 * 1024];
    let stdout = std::io::stdout();
    loop {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut out = stdout.lock();
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    // Nobody reads our output any more; keep waiting for the exit.
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "attach connection failed");
                break;
            }
        }
    }
    drop(socket);
    loop {
        match engine.wait(id, Duration::from_secs(3600))? {
            Some(exit) => return Ok(Some(exit)),
            None => continue,
        }
    }
}

/// Signal numbers (Linux, every architecture Berth builds for).
mod libc_signal {
    pub const SIGHUP: i32 = 1;
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

fn write_entries(entries: &[LogEntry], timestamps: bool) {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for e in entries {
        let w: &mut dyn Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if timestamps {
            let _ = write!(w, "{} ", e.time);
        }
        let _ = w.write_all(e.log.as_bytes());
    }
    let _ = out.flush();
    let _ = err.flush();
}

/// Prints the container's log as it grows until the container exited (and its log is drained).
fn follow_logs(
    engine: &Engine,
    id: &str,
    timestamps: bool,
) -> anyhow::Result<Option<berth_runtime::shim::ExitInfo>> {
    let (tx, rx) = mpsc::channel();
    {
        let engine = engine.clone();
        let id = id.to_string();
        std::thread::spawn(move || loop {
            match engine.wait(&id, Duration::from_secs(3600)) {
                Ok(Some(exit)) => {
                    let _ = tx.send(Ok(exit));
                    return;
                }
                Ok(None) => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        });
    }
    let mut reader = LogReader::new(engine.log_path(id));
    loop {
        let entries = reader.read_new().context("cannot read the container log")?;
        write_entries(&entries, timestamps);
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(result) => {
                // The shim drained the output before recording the exit.
                let entries = reader.read_new().context("cannot read the container log")?;
                write_entries(&entries, timestamps);
                return Ok(Some(result?));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
        }
    }
}

pub async fn ps(a: PsArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        let list = engine.containers(a.all)?;
        if a.quiet {
            for c in list {
                println!(
                    "{}",
                    if a.no_trunc {
                        &c.record.id[..]
                    } else {
                        &c.record.id[..12]
                    }
                );
            }
            return Ok(());
        }
        if let Err(e) = engine.ensure_network_daemon() {
            eprintln!("berth: warning: the network daemon does not run: {e}");
        }
        println!(
            "{:<14}{:<20}{:<24}{:<24}{:<26}{:<28}NAMES",
            "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS"
        );
        for c in list {
            let ports = c
                .record
                .network_attachment
                .as_ref()
                .filter(|_| c.state.is_running())
                .map(|a| {
                    a.ports
                        .iter()
                        .map(|p| {
                            format!(
                                "{}:{}->{}/{}",
                                p.host_ip, p.host_port, p.container_port, p.protocol
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let mut command = c.record.args.join(" ");
            if !a.no_trunc && command.chars().count() > 20 {
                command = command.chars().take(19).collect::<String>() + "…";
            }
            println!(
                "{:<14}{:<20}{:<24}{:<24}{:<26}{:<28}{}",
                &c.record.id[..12],
                c.record.image,
                format!("\"{command}\""),
                human_age(&c.record.created),
                status_line(&c.state),
                ports,
                c.record.name
            );
        }
        Ok(())
    })
    .await
}

fn status_line(state: &ContainerState) -> String {
    match state {
        ContainerState::Created => "Created".into(),
        // The shim reports a container between restarts as running without a pid.
        ContainerState::Running { pid: 0 } => "Restarting".into(),
        ContainerState::Running { .. } => "Up".into(),
        ContainerState::Exited(e) => {
            format!("Exited ({}) {}", e.exit_code, human_age(&e.finished_at))
        }
        ContainerState::Lost { .. } => "Dead".into(),
    }
}

/// "5 seconds ago" from an RFC 3339 time.
pub(crate) fn human_age(t: &str) -> String {
    let Ok(t) = OffsetDateTime::parse(t, &Rfc3339) else {
        return String::new();
    };
    let secs = (OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    let (n, unit) = match secs {
        0..=1 => return "Less than a second ago".into(),
        2..=59 => (secs, "seconds"),
        60..=3599 => (secs / 60, "minutes"),
        3600..=86399 => (secs / 3600, "hours"),
        _ => (secs / 86400, "days"),
    };
    format!("{n} {unit} ago")
}

pub async fn logs(a: LogsArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        let info = engine.container(&a.container)?;
        if a.follow && info.state.is_running() {
            follow_logs(&engine, &info.record.id, a.timestamps)?;
        } else {
            let entries = LogReader::new(engine.log_path(&info.record.id))
                .read_new()
                .context("cannot read the container log")?;
            write_entries(&entries, a.timestamps);
        }
        Ok(())
    })
    .await
}

fn for_each(
    engine: &Engine,
    names: &[String],
    mut f: impl FnMut(&Engine, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut last = None;
    for n in names {
        match f(engine, n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("Error response: {e:#}");
                last = Some(e);
            }
        }
    }
    last.map_or(Ok(()), Err)
}

pub async fn stop(a: StopArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        for_each(&engine, &a.containers, |e, c| {
            e.stop(c, Some(Duration::from_secs(a.time)))?;
            Ok(())
        })
    })
    .await
}

pub async fn kill(a: KillArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        let sig = a.signal.to_ascii_uppercase();
        let sig = if sig.starts_with("SIG") || sig.parse::<i32>().is_ok() {
            sig
        } else {
            format!("SIG{sig}")
        };
        let signal = berth_runtime::spec::parse_signal(&sig)?;
        for_each(&engine, &a.containers, |e, c| {
            e.kill(c, signal)?;
            Ok(())
        })
    })
    .await
}

pub async fn rm(a: RmArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        for_each(&engine, &a.containers, |e, c| {
            e.remove_with_volumes(c, a.force, a.volumes)?;
            Ok(())
        })
    })
    .await
}

fn container_json(c: &ContainerInfo) -> serde_json::Value {
    let r = &c.record;
    let (pid, exit) = match &c.state {
        ContainerState::Running { pid } | ContainerState::Lost { pid } => (*pid, None),
        ContainerState::Exited(e) => (0, Some(e)),
        ContainerState::Created => (0, None),
    };
    let started = c.started_at.clone().unwrap_or_default();
    json!({
        "Id": r.id,
        "Created": r.created,
        "RestartCount": c.restart_count,
        "Path": r.args.first(),
        "Args": r.args.get(1..).unwrap_or_default(),
        "Name": format!("/{}", r.name),
        "Image": r.image_id.to_string(),
        "State": {
            "Status": c.state.status(),
            "Running": c.state.is_running(),
            "Pid": pid,
            "ExitCode": exit.map(|e| e.exit_code).unwrap_or(0),
            "OOMKilled": exit.map(|e| e.oom_killed).unwrap_or(false),
            "Dead": matches!(c.state, ContainerState::Lost { .. }),
            "StartedAt": started,
            "FinishedAt": exit.map(|e| e.finished_at.clone()).unwrap_or_default(),
        },
        "Config": {
            "Hostname": r.hostname,
            "User": r.user,
            "Env": r.env,
            "Cmd": r.options.cmd,
            "Entrypoint": r.options.entrypoint,
            "Image": r.image,
            "WorkingDir": r.working_dir,
            "StopSignal": r.stop_signal,
            "Tty": r.options.tty,
            "OpenStdin": r.options.interactive,
            "Labels": r.labels,
        },
        "HostConfig": {
            "NetworkMode": r.options.network.mode(),
            "PortBindings": r.network_attachment.as_ref().map(|a| a.ports.iter().map(|p| json!({
                "HostIp": p.host_ip.to_string(),
                "HostPort": p.host_port.to_string(),
                "ContainerPort": format!("{}/{}", p.container_port, p.protocol),
            })).collect::<Vec<_>>()),
            "Memory": r.options.memory.unwrap_or(0),
            "NanoCpus": r.options.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
            "PidsLimit": r.options.pids_limit,
            "AutoRemove": r.options.auto_remove,
            "RestartPolicy": {
                "Name": r.options.restart.to_string(),
            },
            "Binds": r.options.volumes,
            "Tmpfs": r.options.tmpfs,
            "CpuShares": r.options.cpu_shares.unwrap_or(0),
            "MemoryReservation": r.options.memory_reservation.unwrap_or(0),
            "MemorySwap": r.options.memory_swap.unwrap_or(0),
            "Ulimits": r.options.ulimits,
            "ReadonlyRootfs": r.options.read_only,
            "Privileged": r.options.privileged,
            "CapAdd": r.options.cap_add,
            "CapDrop": r.options.cap_drop,
            "ExtraHosts": r.options.extra_hosts,
            "ShmSize": r.options.shm_size.unwrap_or(berth_runtime::spec::DEFAULT_SHM_SIZE),
            "Dns": r.options.dns,
            "DnsSearch": r.options.dns_search,
        },
        "Mounts": r.mounts,
        "NetworkSettings": r.network_attachment.as_ref().map(|a| json!({
            "IPAddress": a.ip.to_string(),
            "IPPrefixLen": a.prefix_len,
            "Gateway": a.gateway.to_string(),
            "MacAddress": a.mac,
            "SandboxKey": a.netns,
            "Networks": { a.network.clone(): {
                "NetworkID": a.network_id,
                "IPAddress": a.ip.to_string(),
                "Gateway": a.gateway.to_string(),
                "MacAddress": a.mac,
            }},
        })),
    })
}

pub async fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        let mut out = Vec::new();
        let mut missing = None;
        for o in &a.objects {
            match engine.container(o) {
                Ok(c) => out.push(container_json(&c)),
                Err(ContainerError::NotFound(_)) => match engine.resolve_image(o) {
                    Ok(i) => out.push(json!({
                        "Id": i.id.to_string(),
                        "RepoTags": [i.reference],
                        "RepoDigests": [],
                        "ManifestDigest": i.manifest_digest.to_string(),
                        "Created": i.raw_config.get("created"),
                        "Architecture": i.raw_config.get("architecture"),
                        "Os": i.raw_config.get("os"),
                        "Config": i.raw_config.get("config"),
                        "RootFS": i.raw_config.get("rootfs"),
                        "Size": i.layers.iter().map(|l| l.size).sum::<u64>(),
                    })),
                    Err(_) => {
                        eprintln!("Error: no such object: {o}");
                        missing = Some(o.clone());
                    }
                },
                Err(e) => return Err(e.into()),
            }
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        match missing {
            Some(o) => anyhow::bail!("no such object: {o}"),
            None => Ok(()),
        }
    })
    .await
}
