//! `berth pull|push|login|logout|tag|save|load` (also under `berth image`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use berth_engine::distribution::{self, Credentials, NoProgress};
use berth_engine::{ArchiveFormat, PlatformSpec, Progress, ProgressEvent, RegistryOptions};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::container::{blocking, open_engine, EngineArgs};

#[derive(Args, Debug, Clone)]
pub struct RegistryFlags {
    /// Use plain HTTP for the registry (loopback registries and those in
    /// BERTH_INSECURE_REGISTRIES always do).
    #[arg(long)]
    pub insecure: bool,
}

impl RegistryFlags {
    fn options(&self) -> RegistryOptions {
        let mut o = RegistryOptions::from_env();
        o.insecure = self.insecure;
        o
    }
}

#[derive(Args, Debug)]
pub struct PullArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Platform os/arch[/variant] to pick from a multi-platform image (default: this host).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image reference.
    #[arg(short, long)]
    pub quiet: bool,
    /// NAME[:TAG|@DIGEST], e.g. busybox, localhost:5000/app:1.
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Print only the digest.
    #[arg(short, long)]
    pub quiet: bool,
    /// NAME[:TAG] of a local image, e.g. localhost:5000/app:1.
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// User name (prompted for when missing).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry (default: Docker Hub).
    pub server: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry (default: Docker Hub).
    pub server: Option<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Existing image: NAME[:TAG] or id.
    pub source: String,
    /// New name: NAME[:TAG].
    pub target: String,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Write to this file (atomically) instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// docker-archive (what `docker load` reads) or oci-archive (an OCI image layout).
    #[arg(long, default_value = "docker-archive")]
    pub format: ArchiveFormat,
    /// Images: NAME[:TAG] or ids.
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Read from this file instead of stdin (docker-archive or oci-archive, plain or gzip).
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Print nothing.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pull,
    Push,
}

/// Renders progress like docker: one bar per layer on a terminal, plain lines otherwise.
struct Bars {
    mode: Mode,
    tty: bool,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// Layers whose "Downloading"/"Pushing" line was printed (plain mode).
    started: Mutex<HashSet<String>>,
    /// Status lines that come after the bars (printed below them when done; tty mode).
    after: Mutex<Vec<String>>,
}

impl Drop for Bars {
    fn drop(&mut self) {
        if let Ok(mut bars) = self.bars.lock() {
            for b in bars.values() {
                if !b.is_finished() {
                    b.abandon();
                }
            }
            // indicatif leaves the cursor at the end of the last bar.
            if self.tty && !bars.is_empty() {
                println!();
            }
            bars.clear();
        }
        if let Ok(after) = self.after.lock() {
            for line in after.iter() {
                println!("{line}");
            }
        }
    }
}

impl Bars {
    fn new(mode: Mode) -> Bars {
        let tty = std::io::stdout().is_terminal();
        Bars {
            mode,
            tty,
            multi: MultiProgress::with_draw_target(if tty {
                ProgressDrawTarget::stdout()
            } else {
                ProgressDrawTarget::hidden()
            }),
            bars: Mutex::new(HashMap::new()),
            started: Mutex::new(HashSet::new()),
            after: Mutex::new(Vec::new()),
        }
    }

    fn bar(&self, id: &str) -> ProgressBar {
        let Ok(mut bars) = self.bars.lock() else {
            return ProgressBar::hidden();
        };
        bars.entry(id.to_string())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(0));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix}: {msg:<18} {wide_bar} {bytes}/{total_bytes}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_prefix(id.to_string());
                b
            })
            .clone()
    }

    fn text_only(&self, id: &str, msg: &'static str) {
        let b = self.bar(id);
        b.set_style(
            ProgressStyle::with_template("{prefix}: {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.finish_with_message(msg);
    }

    fn line(&self, s: String) {
        let any_bars = self.bars.lock().is_ok_and(|b| !b.is_empty());
        if self.tty && any_bars {
            if let Ok(mut after) = self.after.lock() {
                after.push(s);
            }
        } else {
            println!("{s}");
        }
    }
}

impl Progress for Bars {
    fn event(&self, event: ProgressEvent) {
        let (waiting, exists, active, done) = match self.mode {
            Mode::Pull => (
                "Pulling fs layer",
                "Already exists",
                "Downloading",
                "Pull complete",
            ),
            Mode::Push => ("Preparing", "Layer already exists", "Pushing", "Pushed"),
        };
        match event {
            ProgressEvent::Status(s) => self.line(s),
            ProgressEvent::Waiting { id, size } => {
                if self.tty {
                    let b = self.bar(&id);
                    b.set_length(size);
                    b.set_message(waiting);
                } else {
                    println!("{id}: {waiting}");
                }
            }
            ProgressEvent::Exists { id } => {
                if self.tty {
                    self.text_only(&id, exists);
                } else {
                    println!("{id}: {exists}");
                }
            }
            ProgressEvent::Transfer { id, current, total } => {
                if self.tty {
                    let b = self.bar(&id);
                    b.set_length(total);
                    b.set_position(current);
                    b.set_message(active);
                } else if self.started.lock().is_ok_and(|mut s| s.insert(id.clone())) {
                    println!("{id}: {active}");
                }
            }
            ProgressEvent::Retrying { id, attempt } => {
                if self.tty {
                    self.bar(&id).set_message(format!("Retrying ({attempt})"));
                } else {
                    println!("{id}: Retrying (attempt {attempt})");
                }
            }
            ProgressEvent::Done { id } => {
                if self.tty {
                    let b = self.bar(&id);
                    if let Some(len) = b.length() {
                        b.set_position(len);
                    }
                    b.finish_with_message(done);
                } else {
                    println!("{id}: {done}");
                }
            }
            ProgressEvent::Mounted { id, from } => {
                if self.tty {
                    let b = self.bar(&id);
                    b.finish_with_message(format!("Mounted from {from}"));
                } else {
                    println!("{id}: Mounted from {from}");
                }
            }
        }
    }
}

pub async fn pull(a: PullArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        let platform = a.platform.as_deref().map(PlatformSpec::parse).transpose()?;
        let opts = a.registry.options();
        let progress: Box<dyn Progress> = if a.quiet {
            Box::new(NoProgress)
        } else {
            Box::new(Bars::new(Mode::Pull))
        };
        let r = engine.pull(&a.reference, platform.as_ref(), &opts, &*progress)?;
        drop(progress);
        println!("{}", r.full_reference);
        Ok(())
    })
    .await
}

pub async fn push(a: PushArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        let opts = a.registry.options();
        let progress: Arc<dyn Progress> = if a.quiet {
            Arc::new(NoProgress)
        } else {
            Arc::new(Bars::new(Mode::Push))
        };
        let r = engine.push(&a.reference, &opts, progress)?;
        if a.quiet {
            println!("{}", r.digest);
        }
        Ok(())
    })
    .await
}

/// Reads one line from the terminal (without echo for passwords).
fn prompt(label: &str, secret: bool) -> anyhow::Result<String> {
    use nix::sys::termios;
    let stdin = std::io::stdin();
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let saved = if secret && stdin.is_terminal() {
        let t = termios::tcgetattr(&stdin).ok();
        if let Some(mut quiet) = t.clone() {
            quiet.local_flags.remove(termios::LocalFlags::ECHO);
            let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &quiet);
        }
        t
    } else {
        None
    };
    let mut line = String::new();
    let res = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &t);
        eprintln!();
    }
    res.context("reading from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn login(a: LoginArgs) -> anyhow::Result<()> {
    blocking(move || {
        let server = a.server.clone().unwrap_or_else(|| "docker.io".to_string());
        let domain = distribution::normalize_domain(&server);
        let username = match a.username {
            Some(u) => u,
            None if a.password_stdin => {
                anyhow::bail!("--password-stdin needs --username")
            }
            None => prompt("Username: ", false)?,
        };
        let password = match (a.password, a.password_stdin) {
            (Some(p), _) => {
                eprintln!(
                    "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
                );
                p
            }
            (None, true) => {
                let mut s = String::new();
                std::io::stdin()
                    .take(64 << 10)
                    .read_to_string(&mut s)
                    .context("reading the password from stdin")?;
                s.trim_end_matches(['\r', '\n']).to_string()
            }
            (None, false) => prompt("Password: ", true)?,
        };
        if username.is_empty() || password.is_empty() {
            anyhow::bail!("username and password must not be empty");
        }
        let opts = a.registry.options();
        distribution::login(&domain, Credentials { username, password }, &opts)?;
        println!("Login Succeeded");
        Ok(())
    })
    .await
}

pub async fn logout(a: LogoutArgs) -> anyhow::Result<()> {
    blocking(move || {
        let server = a.server.unwrap_or_else(|| "docker.io".to_string());
        let domain = distribution::normalize_domain(&server);
        let opts = RegistryOptions::from_env();
        if distribution::logout(&domain, &opts)? {
            println!("Removing login credentials for {domain}");
        } else {
            println!("Not logged in to {domain}");
        }
        Ok(())
    })
    .await
}

pub async fn tag(a: TagArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        engine.tag_image(&a.source, &a.target)?;
        Ok(())
    })
    .await
}

pub async fn save(a: SaveArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        match &a.output {
            Some(path) => {
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                let mut tmp = tempfile::Builder::new()
                    .prefix(".berth-save-")
                    .tempfile_in(dir)
                    .with_context(|| format!("cannot create a file in {}", dir.display()))?;
                {
                    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
                    engine.save(&a.images, a.format, &mut w)?;
                    w.flush().context("writing the archive")?;
                }
                tmp.as_file().sync_all().context("syncing the archive")?;
                tmp.persist(path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            None => {
                let stdout = std::io::stdout();
                if stdout.is_terminal() {
                    anyhow::bail!(
                        "refusing to write an archive to a terminal: use -o FILE or redirect stdout"
                    );
                }
                let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                engine.save(&a.images, a.format, &mut w)?;
                w.flush().context("writing the archive")?;
            }
        }
        Ok(())
    })
    .await
}

pub async fn load(a: LoadArgs) -> anyhow::Result<()> {
    blocking(move || {
        let engine = open_engine(&a.engine)?;
        let loaded = match &a.input {
            Some(p) => {
                let f = std::fs::File::open(p)
                    .with_context(|| format!("cannot open {}", p.display()))?;
                engine.load(f)?
            }
            None => {
                if std::io::stdin().is_terminal() {
                    anyhow::bail!("requested load from stdin, but stdin is empty (use -i FILE)");
                }
                engine.load(std::io::stdin().lock())?
            }
        };
        if !a.quiet {
            for img in loaded {
                for n in img.names {
                    println!("Loaded image: {n}");
                }
            }
        }
        Ok(())
    })
    .await
}
