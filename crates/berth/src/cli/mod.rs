//! The command line: `berth serve`, `berth registry [gc|user|repo]`, images (`berth image
//! import|load|save`, `build`, `pull`, `push`, `tag`, `login`, `logout`, `images`, `rmi`) and containers
//! (`run`, `ps`, `logs`, `stop`, `kill`, `rm`, `inspect`).

mod agent;
mod build;
pub(crate) mod container;
mod distribution;
mod image;
pub(crate) mod network;
mod registry;
mod sandbox;
mod serve;
mod volume;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "Containers, an OCI registry and ECS-compatible orchestration in one binary"
)]
pub struct Cli {
    /// Log format: text or json (level from RUST_LOG, default info).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything on this host: the AWS APIs (ECR) and the OCI registry.
    Serve(serve::ServeArgs),
    /// Run this host's agent: join a cluster of a Berth control plane and run its tasks.
    Agent(agent::AgentArgs),
    /// Run the OCI registry alone (with the ECR API on the same port), or manage one.
    Registry(registry::RegistryArgs),
    /// Manage images (import, load, save, pull, push, tag, ls, rm).
    Image(image::ImageArgs),
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// Download an image from a registry.
    Pull(distribution::PullArgs),
    /// Upload an image to a registry.
    Push(distribution::PushArgs),
    /// Give an image another name (SOURCE TARGET).
    Tag(distribution::TagArgs),
    /// Log in to a registry (credentials kept in $BERTH_CONFIG or ~/.config/berth/auth.json).
    Login(distribution::LoginArgs),
    /// Forget the credentials of a registry.
    Logout(distribution::LogoutArgs),
    /// Write images to a tar archive (docker-archive or oci-archive).
    Save(distribution::SaveArgs),
    /// Load images from a tar archive (docker-archive or oci-archive).
    Load(distribution::LoadArgs),
    /// List images.
    Images(image::ImagesArgs),
    /// Remove images.
    Rmi(image::RmiArgs),
    /// Run a command in a new container (its exit code becomes berth's).
    Run(Box<container::RunArgs>),
    /// List containers.
    Ps(container::PsArgs),
    /// Show a container's output.
    Logs(container::LogsArgs),
    /// Stop containers (stop signal, then SIGKILL after the timeout).
    Stop(container::StopArgs),
    /// Send a signal to containers.
    Kill(container::KillArgs),
    /// Remove containers.
    Rm(container::RmArgs),
    /// Manage networks.
    Network(network::NetworkArgs),
    /// Manage volumes.
    Volume(volume::VolumeArgs),
    /// Show or remove task sandboxes (a task's shared network namespace and cgroup).
    Sandbox(sandbox::SandboxArgs),
    /// Run a command in a running container.
    Exec(container::ExecArgs),
    /// Show containers or images as JSON.
    Inspect(container::InspectArgs),
    /// Internal: the network daemon (published ports, DNS) the engine starts on demand.
    #[command(hide = true)]
    Netd(network::NetdArgs),
    /// Internal: the per-container shim the engine starts (runs without the async runtime).
    #[command(hide = true)]
    Shim(berth_runtime::shim::ShimArgs),
    /// Internal: the shim's on-exit hook of a networked container (releases its network).
    #[command(hide = true)]
    ContainerExited(container::ContainerExitedArgs),
}

/// Credentials and identity shared by the servers.
#[derive(Args, Debug, Clone)]
pub struct AccountArgs {
    /// Access key id accepted by the AWS APIs (else BERTH_ACCESS_KEY_ID, else generated into
    /// <data>/credentials on first start).
    #[arg(long, env = "BERTH_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// Secret access key matching --access-key-id.
    #[arg(long, env = "BERTH_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// Account id in ARNs and the ECR registry id.
    #[arg(long, default_value = "000000000000")]
    pub account_id: String,
}

#[derive(Args, Debug, Clone)]
pub struct RegistryServerArgs {
    /// Data directory (blobs, metadata, credentials).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// URL clients use to reach the registry (token realm, ECR proxyEndpoint, repositoryUri).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Refuse pushes to repositories that do not exist (ECR's behaviour) instead of creating them.
    #[arg(long)]
    pub no_auto_create: bool,
    /// Unreferenced blobs younger than this many seconds are never garbage collected.
    #[arg(long, default_value_t = 3600)]
    pub gc_grace: u64,
    /// Seconds between scheduled garbage collections and lifecycle policy runs (0: never).
    #[arg(long, default_value_t = 3600)]
    pub gc_interval: u64,
}

/// `berth run ...` parsed against a command tree of `run` alone: the whole tree (every
/// subcommand and its arguments) costs ~0.5 ms to build, on every container start. `None`
/// when that parse fails or asks for help or the version: the full parser then gives the
/// user its complete answer.
pub fn parse_run() -> Option<Cli> {
    parse_run_from(std::env::args_os())
}

fn parse_run_from<I, T>(args: I) -> Option<Cli>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{Args, FromArgMatches};
    // [`Cli::log_format`] as the derive declares it (`run_parse_matches_the_full_parse`
    // checks that both parsers agree).
    let log_format = clap::Arg::new("log_format")
        .long("log-format")
        .global(true)
        .default_value("text")
        .value_parser(["text", "json"]);
    let cmd = clap::Command::new("berth")
        .arg(log_format)
        .subcommand(container::RunArgs::augment_args(clap::Command::new("run")));
    let matches = cmd.try_get_matches_from(args).ok()?;
    Cli::from_arg_matches(&matches).ok()
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Command::Serve(a) => serve::serve(a).await,
        Command::Agent(a) => agent::run(a).await,
        Command::Registry(a) => registry::run(a).await,
        Command::Image(a) => image::run(a).await,
        Command::Images(a) => image::images(a).await,
        Command::Build(a) => build::build(a).await,
        Command::ContainerExited(a) => container::container_exited(a).await,
        Command::Pull(a) => distribution::pull(a).await,
        Command::Push(a) => distribution::push(a).await,
        Command::Tag(a) => distribution::tag(a).await,
        Command::Login(a) => distribution::login(a).await,
        Command::Logout(a) => distribution::logout(a).await,
        Command::Save(a) => distribution::save(a).await,
        Command::Load(a) => distribution::load(a).await,
        Command::Rmi(a) => image::rmi(a).await,
        Command::Run(a) => {
            // Everything `run` started is finished (or detached on purpose): exit here, not
            // through the runtime's shutdown, which wakes and joins each worker thread
            // (~0.5 ms of every `berth run`). process::exit flushes stdout.
            let code = container::run(*a).await?;
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::process::exit(code);
        }
        Command::Ps(a) => container::ps(a).await,
        Command::Logs(a) => container::logs(a).await,
        Command::Stop(a) => container::stop(a).await,
        Command::Kill(a) => container::kill(a).await,
        Command::Rm(a) => container::rm(a).await,
        Command::Inspect(a) => container::inspect(a).await,
        Command::Volume(a) => volume::run(a).await,
        Command::Sandbox(a) => sandbox::run(a).await,
        Command::Network(a) => network::run(a).await,
        Command::Netd(_) => anyhow::bail!("`berth netd` must run before the async runtime starts"),
        Command::Exec(_) => anyhow::bail!("`berth exec` must run before the async runtime starts"),
        Command::Shim(_) => anyhow::bail!("`berth shim` must run before the async runtime starts"),
    }
}

pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // libcontainer logs from the container's init before exec, whose stderr is already
        // the container's: keep its expected warnings (e.g. syscalls this libseccomp does not
        // know) out of container output unless RUST_LOG asks for them.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,libcontainer=error,libcgroups=error")
        });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

pub(crate) fn parse_addr(s: &str) -> anyhow::Result<SocketAddr> {
    s.parse()
        .map_err(|e| anyhow::anyhow!("invalid address {s:?}: {e}"))
}

/// `--label KEY=VALUE` values (a bare `KEY` gets an empty value, as in docker).
pub(crate) fn parse_labels(labels: &[String]) -> std::collections::BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_lb_threads_is_a_positive_count() {
        let threads = |args: &[&str]| {
            let line = ["berth", "serve"].iter().chain(args).copied();
            match Cli::try_parse_from(line).map(|c| c.cmd) {
                Ok(Command::Serve(a)) => Ok(a.lb_threads),
                Ok(other) => panic!("parsed as {other:?}"),
                Err(e) => Err(e.kind()),
            }
        };
        assert_eq!(threads(&[]), Ok(None));
        assert_eq!(threads(&["--lb-threads", "3"]), Ok(Some(3)));
        assert_eq!(
            threads(&["--lb-threads", "0"]),
            Err(clap::error::ErrorKind::ValueValidation)
        );
        assert_eq!(
            threads(&["--lb-threads", "many"]),
            Err(clap::error::ErrorKind::ValueValidation)
        );
    }

    #[test]
    fn run_parse_matches_the_full_parse() {
        let lines: &[&[&str]] = &[
            &["berth", "run", "--rm", "bb:1", "/bin/true"],
            &[
                "berth",
                "--log-format",
                "json",
                "run",
                "-d",
                "--name",
                "x",
                "bb:1",
            ],
            &[
                "berth",
                "run",
                "--log-format",
                "json",
                "-e",
                "A=1",
                "-p",
                "8080:80",
                "img",
            ],
            &[
                "berth",
                "run",
                "--network",
                "none",
                "--memory",
                "64m",
                "img",
                "sh",
                "-c",
                "x",
            ],
            &[
                "berth",
                "run",
                "-it",
                "--entrypoint",
                "",
                "img",
                "--flag-of-the-cmd",
            ],
        ];
        for line in lines {
            let fast = parse_run_from(line.iter().copied()).expect("the run-only parse");
            let full = Cli::try_parse_from(line.iter().copied()).expect("the full parse");
            assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{line:?}");
        }
        // Help, version, errors and other commands go to the full parser.
        for line in [
            &["berth", "run", "--help"][..],
            &["berth", "--version"],
            &["berth", "run"],
            &["berth", "run", "--log-format", "xml", "img"],
            &["berth", "ps"],
        ] {
            assert!(parse_run_from(line.iter().copied()).is_none(), "{line:?}");
        }
    }
}
