//! `berth sandbox ls|inspect|rm`: the task sandboxes an agent made (a task's shared network
//! namespace and its cgroup with the task's limits). The agent creates and removes them; these
//! commands show them and clear what a killed agent left.

use clap::{Args, Subcommand};

use super::container::{blocking, open_engine};
// The same arguments as `berth volume ls` / `inspect`.
use super::volume::{LsArgs, NamesArgs};

#[derive(Args, Debug)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub cmd: SandboxCommand,
}

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// List sandboxes (name, address, limits).
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show sandboxes as JSON.
    Inspect(NamesArgs),
    /// Remove sandboxes (their namespace, address and cgroup).
    #[command(alias = "remove")]
    Rm(NamesArgs),
}

pub async fn run(a: SandboxArgs) -> anyhow::Result<()> {
    blocking(move || match a.cmd {
        SandboxCommand::Ls(c) => {
            let engine = open_engine(&c.engine)?;
            if !c.quiet {
                println!(
                    "{:<44} {:<16} {:>10} {:>12}",
                    "NAME", "ADDRESS", "CPU QUOTA", "MEMORY"
                );
            }
            for s in engine.sandboxes()? {
                if c.quiet {
                    println!("{}", s.name);
                    continue;
                }
                let ip = s.network.as_ref().map(|n| n.ip.to_string());
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                println!(
                    "{:<44} {:<16} {:>10} {:>12}",
                    s.name,
                    opt(ip),
                    opt(s.cpu_quota_us.map(|q| format!("{q}us"))),
                    opt(s.memory_bytes.map(|m| m.to_string())),
                );
            }
            Ok(())
        }
        SandboxCommand::Inspect(c) => {
            let engine = open_engine(&c.engine)?;
            let mut out = Vec::new();
            for n in &c.names {
                out.push(engine.sandbox(n)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        SandboxCommand::Rm(c) => {
            let engine = open_engine(&c.engine)?;
            let mut failed = false;
            for n in &c.names {
                match engine.remove_sandbox(n) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            anyhow::ensure!(!failed, "some sandboxes were not removed");
            Ok(())
        }
    })
    .await
}
