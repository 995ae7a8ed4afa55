//! `berth volume create|ls|inspect|rm|prune`.

use clap::{Args, Subcommand};
use serde_json::json;

use super::container::{blocking, open_engine, EngineArgs};
use berth_engine::VolumeInfo;

#[derive(Args, Debug)]
pub struct VolumeArgs {
    #[command(subcommand)]
    pub cmd: VolumeCommand,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume (a random name when none is given).
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes as JSON.
    Inspect(NamesArgs),
    /// Remove volumes (refused while a container uses them, unless -f).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove anonymous volumes no container uses (-a: every unused volume).
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// KEY=VALUE label.
    #[arg(long)]
    pub label: Vec<String>,
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Only names.
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

#[derive(Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Remove even when containers use the volume.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Named volumes too.
    #[arg(short, long)]
    pub all: bool,
}

fn volume_json(v: &VolumeInfo) -> serde_json::Value {
    json!({
        "Name": v.record.name,
        "Driver": "local",
        "Mountpoint": v.mountpoint,
        "CreatedAt": v.record.created,
        "Labels": v.record.labels,
        "Scope": "local",
        "Anonymous": v.record.anonymous,
    })
}

pub async fn run(a: VolumeArgs) -> anyhow::Result<()> {
    blocking(move || match a.cmd {
        VolumeCommand::Create(c) => {
            let engine = open_engine(&c.engine)?;
            let labels = super::parse_labels(&c.label);
            let v = engine.volume_create(c.name.as_deref(), labels)?;
            println!("{}", v.record.name);
            Ok(())
        }
        VolumeCommand::Ls(c) => {
            let engine = open_engine(&c.engine)?;
            let vols = engine.volumes()?;
            if !c.quiet {
                println!("{:<10}VOLUME NAME", "DRIVER");
            }
            for v in vols {
                if c.quiet {
                    println!("{}", v.record.name);
                } else {
                    println!("{:<10}{}", "local", v.record.name);
                }
            }
            Ok(())
        }
        VolumeCommand::Inspect(c) => {
            let engine = open_engine(&c.engine)?;
            let mut out = Vec::new();
            let mut missing = None;
            for n in &c.names {
                match engine.volume(n) {
                    Ok(v) => out.push(volume_json(&v)),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        missing = Some(n.clone());
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            match missing {
                Some(n) => anyhow::bail!("no such volume: {n}"),
                None => Ok(()),
            }
        }
        VolumeCommand::Rm(c) => {
            let engine = open_engine(&c.engine)?;
            let mut failed = false;
            for n in &c.names {
                match engine.volume_remove(n, c.force) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                anyhow::bail!("some volumes were not removed");
            }
            Ok(())
        }
        VolumeCommand::Prune(c) => {
            let engine = open_engine(&c.engine)?;
            let removed = engine.volume_prune(c.all)?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &removed {
                    println!("{n}");
                }
            }
            println!("Total: {} volumes removed", removed.len());
            Ok(())
        }
    })
    .await
}
