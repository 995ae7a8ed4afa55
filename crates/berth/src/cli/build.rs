//! `berth build`: a Dockerfile built on the local engine (the executor is `berth_build::build`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use berth_build::build::{BuildError, BuildOptions};
use berth_engine::Network;
use clap::Args;

use super::container::{blocking, open_engine, EngineArgs};

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Name of the image, NAME[:TAG] (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variable KEY=VALUE (a bare KEY takes this process's value).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build this stage (and what it needs) instead of the last one.
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step, ignoring the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Progress output: plain or tty (tty is printed like plain for now).
    #[arg(long, default_value = "plain", value_parser = ["plain", "tty", "auto"])]
    pub progress: String,
    /// Network of RUN steps: bridge, a network's name, host, or none.
    #[arg(long, env = "BERTH_NETWORK", default_value = "bridge")]
    pub network: String,
    /// Only print the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// The build context directory.
    pub context: PathBuf,
}

pub async fn build(a: BuildArgs) -> anyhow::Result<()> {
    let engine = open_engine(&a.engine)?;
    let mut build_args = BTreeMap::new();
    for kv in &a.build_args {
        match kv.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(kv) {
                    build_args.insert(kv.clone(), v);
                }
            }
        }
    }
    let network = match a.network.as_str() {
        "none" => Network::None,
        "host" => Network::Host,
        "default" => Network::Bridge("bridge".into()),
        n => Network::Bridge(n.to_string()),
    };
    let opts = BuildOptions {
        context: a.context.clone(),
        dockerfile: a.file.clone(),
        tags: a.tags.clone(),
        build_args,
        target: a.target.clone(),
        no_cache: a.no_cache,
        network,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cancelling the build");
            flag.store(true, Ordering::Relaxed);
        }
    });
    let quiet = a.quiet;
    let result = blocking(move || {
        let mut err = std::io::stderr();
        let mut sink = std::io::sink();
        let out: &mut dyn std::io::Write = if quiet { &mut sink } else { &mut err };
        Ok(berth_build::build::build(&engine, &opts, out, &cancel))
    })
    .await?;
    match result {
        Ok(done) => {
            tracing::debug!(executed = done.executed, cached = done.cached, "build done");
            println!("{}", done.image_id);
            Ok(())
        }
        Err(e @ BuildError::Cancelled) => Err(anyhow::Error::from(e)),
        Err(e) => Err(anyhow::Error::from(e)).context("build failed"),
    }
}
