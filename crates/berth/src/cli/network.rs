//! `berth network create|ls|inspect|rm`, and the hidden `berth netd` (the network daemon that
//! serves published ports and DNS for containers whose `berth` process has exited).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use super::container::{blocking, open_engine, EngineArgs};

#[derive(Args, Debug)]
pub struct NetworkArgs {
    #[command(subcommand)]
    pub cmd: NetworkCommand,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a bridge network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks (and their containers) as JSON.
    Inspect(NamesArgs),
    /// Remove networks (refused while containers are attached).
    #[command(alias = "remove")]
    Rm(NamesArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Subnet in CIDR form (default: a free /16 or /24 from Docker's pools).
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address (default: the subnet's first address).
    #[arg(long)]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// No outside access (no masquerade, no forwarding out of the bridge).
    #[arg(long)]
    pub internal: bool,
    /// KEY=VALUE label.
    #[arg(long)]
    pub label: Vec<String>,
    /// Driver option; `com.docker.network.bridge.name=NAME` names the bridge device.
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    /// Only the bridge driver exists.
    #[arg(short, long, default_value = "bridge", value_parser = ["bridge"])]
    pub driver: String,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `berth netd --root DIR` (internal).
#[derive(Args, Debug)]
pub struct NetdArgs {
    #[arg(long)]
    pub root: PathBuf,
}

pub async fn run(a: NetworkArgs) -> anyhow::Result<()> {
    blocking(move || match a.cmd {
        NetworkCommand::Create(c) => {
            let engine = open_engine(&c.engine)?;
            let store = engine.network_store()?;
            let labels = super::parse_labels(&c.label);
            let mut bridge_name = None;
            for o in &c.opt {
                match o.split_once('=') {
                    Some(("com.docker.network.bridge.name", v)) => bridge_name = Some(v.to_string()),
                    _ => anyhow::bail!("unsupported network option {o:?}"),
                }
            }
            let subnet = c
                .subnet
                .as_deref()
                .map(|s| s.parse::<berth_net::Ipv4Net>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("invalid --subnet: {e}"))?;
            let info = store.create(
                &c.name,
                berth_net::CreateOptions {
                    subnet,
                    gateway: c.gateway,
                    internal: c.internal,
                    labels,
                    bridge_name,
                },
            )?;
            println!("{}", info.id);
            Ok(())
        }
        NetworkCommand::Ls(c) => {
            let engine = open_engine(&c.engine)?;
            let store = engine.network_store()?;
            // The default network exists from the start, as in Docker.
            store.ensure_default()?;
            let nets = store.list()?;
            if !c.quiet {
                println!("{:<14}{:<20}{:<10}SUBNET", "NETWORK ID", "NAME", "DRIVER");
            }
            for n in nets {
                if c.quiet {
                    println!("{}", n.short_id());
                } else {
                    println!("{:<14}{:<20}{:<10}{}", n.short_id(), n.name, n.driver, n.subnet);
                }
            }
            Ok(())
        }
        NetworkCommand::Inspect(c) => {
            let engine = open_engine(&c.engine)?;
            let store = engine.network_store()?;
            let mut out = Vec::new();
            for name in &c.names {
                let n = if name == berth_net::DEFAULT_NETWORK {
                    store.ensure_default()?
                } else {
                    store.get(name).with_context(|| format!("network {name}"))?
                };
                let mut containers = serde_json::Map::new();
                for (id, alloc) in store.endpoints(&n)? {
                    let cname = engine
                        .container(&id)
                        .map(|c| c.record.name)
                        .unwrap_or_default();
                    containers.insert(
                        id,
                        json!({
                            "Name": cname,
                            "IPv4Address": format!("{}/{}", alloc.ip, n.subnet.prefix_len()),
                        }),
                    );
                }
                out.push(json!({
                    "Name": n.name,
                    "Id": n.id,
                    "Created": n.created,
                    "Driver": n.driver,
                    "Internal": n.internal,
                    "IPAM": {"Driver": "default", "Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}]},
                    "Options": {"com.docker.network.bridge.name": n.bridge},
                    "Labels": n.labels,
                    "Containers": containers,
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        NetworkCommand::Rm(c) => {
            let engine = open_engine(&c.engine)?;
            let store = engine.network_store()?;
            for name in &c.names {
                if name == berth_net::DEFAULT_NETWORK {
                    anyhow::bail!("bridge is a pre-defined network and cannot be removed");
                }
                store.remove(name)?;
                println!("{name}");
            }
            Ok(())
        }
    })
    .await
}

/// `berth netd`: runs the network daemon (before any tokio runtime exists: it detaches first).
pub fn netd_main(a: NetdArgs) -> i32 {
    berth_net::daemon::detach_session();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth netd: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let mut cfg = berth_net::daemon::DaemonConfig::new(a.root);
    // How long the daemon stays up without endpoints (0: forever); the engine respawns it.
    if let Some(s) = std::env::var("BERTH_NETD_IDLE_EXIT_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        cfg.idle_exit = (s > 0).then(|| std::time::Duration::from_secs(s));
    }
    match rt.block_on(berth_net::daemon::run_with(cfg)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth netd: {e}");
            1
        }
    }
}
