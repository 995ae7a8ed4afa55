//! `berth image import|load|save|pull|push|tag|ls|rm`, `berth images`, `berth rmi`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::container::{blocking, human_age, open_engine, EngineArgs};
use super::distribution;

#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub cmd: ImageCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import a root file system tarball (plain or gzip) as a one-layer image, like `docker
    /// import`.
    Import(ImportArgs),
    /// Load images from a tar archive (docker-archive or oci-archive).
    Load(distribution::LoadArgs),
    /// Write images to a tar archive (docker-archive or oci-archive).
    Save(distribution::SaveArgs),
    /// Download an image from a registry.
    Pull(distribution::PullArgs),
    /// Upload an image to a registry.
    Push(distribution::PushArgs),
    /// Give an image another name.
    Tag(distribution::TagArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove images.
    Rm(RmiArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Dockerfile instruction applied to the image config: CMD, ENTRYPOINT, ENV, WORKDIR, USER,
    /// STOPSIGNAL (e.g. `--change 'CMD ["/bin/sh"]'`).
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// The tarball.
    pub file: PathBuf,
    /// NAME[:TAG] (tag defaults to latest).
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Only show image ids.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Untag even when containers use the image (their layers are kept).
    #[arg(short, long)]
    pub force: bool,
    /// NAME[:TAG] or image id.
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.cmd {
        ImageCommand::Import(a) => import(a).await,
        ImageCommand::Load(a) => distribution::load(a).await,
        ImageCommand::Save(a) => distribution::save(a).await,
        ImageCommand::Pull(a) => distribution::pull(a).await,
        ImageCommand::Push(a) => distribution::push(a).await,
        ImageCommand::Tag(a) => distribution::tag(a).await,
        ImageCommand::Ls(a) => images(a).await,
        ImageCommand::Rm(a) => rmi(a).await,
    }
}

pub async fn import(a: ImportArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        let image = engine.import_image(&a.file, &a.reference, &a.changes)?;
        println!("{}", image.id);
        Ok(())
    })
    .await
}

pub async fn images(a: ImagesArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        let images = engine.images()?;
        if a.quiet {
            for i in images {
                println!("{}", &i.id.hex()[..12]);
            }
            return Ok(());
        }
        println!(
            "{:<30} {:<12} {:<14} {:<24} SIZE",
            "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
        );
        for i in images {
            println!(
                "{:<30} {:<12} {:<14} {:<24} {}",
                i.repository,
                i.tag,
                &i.id.hex()[..12],
                human_age(&i.created),
                human_size(i.size)
            );
        }
        Ok(())
    })
    .await
}

pub async fn rmi(a: RmiArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        let mut failed = None;
        for image in &a.images {
            match engine.remove_image(image, a.force) {
                Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
                Err(e) => {
                    eprintln!("Error response: {e}");
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    })
    .await
}

fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.3}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.3}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.3}kB", b / 1e3)
    } else {
        format!("{bytes}B")
    }
}
