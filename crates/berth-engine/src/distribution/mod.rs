//! Image distribution: pulling from and pushing to OCI/Docker registries, registry
//! credentials, and image archives (`docker save`-style tars and OCI layouts).
//!
//! The code is blocking (like the rest of the engine): the CLI calls it from a blocking
//! thread. Progress is reported through [`Progress`], which the CLI renders with progress
//! bars.

pub mod archive;
pub mod auth;
pub mod client;
mod pull;
mod push;
pub mod reference;

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use berth_oci::store::StoreError;
use berth_oci::Digest;

pub use archive::{ArchiveError, ArchiveFormat};
pub use auth::{AuthFileError, AuthStore, Credentials};
pub use pull::PullResult;
pub use push::PushResult;
pub use reference::{ImageRef, InvalidReference};

use crate::image::ImageError;

/// Layers transferred at the same time.
pub const CONCURRENT_LAYERS: usize = 3;
/// Attempts per blob transfer when the network fails mid-way.
const BLOB_ATTEMPTS: usize = 3;

/// Leftovers of crashed pulls and loads older than this are removed from the store's `tmp/`.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl crate::Engine {
    /// Removes what crashed writers left in the content store's `tmp/` (best effort).
    pub(crate) fn sweep_tmp(&self) {
        match self.store.cleanup_tmp(STALE_TMP) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed stale temporary files"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep the content store's tmp/"),
        }
    }
}

/// Errors of pulls, pushes and logins.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    #[error(transparent)]
    Reference(#[from] InvalidReference),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("cannot reach registry {registry}")]
    Network {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("reading {what} from registry {registry}")]
    Read {
        what: String,
        registry: String,
        #[source]
        source: io::Error,
    },
    #[error("registry {registry} answered {status} to {what}: {message}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error("invalid {what} from registry {registry}: {reason}")]
    InvalidResponse {
        registry: String,
        what: String,
        reason: String,
    },
    #[error("blob {digest} from registry {registry} rejected")]
    Blob {
        registry: String,
        digest: Digest,
        #[source]
        source: StoreError,
    },
    #[error("no matching manifest for {0} in the manifest list entries")]
    NoMatchingPlatform(String),
    #[error("image with reference {reference} was found but does not match the specified platform: wanted {wanted}, actual: {actual}")]
    PlatformMismatch {
        reference: String,
        wanted: String,
        actual: String,
    },
    #[error("invalid platform {0:?} (expected os/arch[/variant])")]
    InvalidPlatform(String),
    #[error("cannot create the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("content store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Auth(#[from] AuthFileError),
    #[error("cancelled")]
    Cancelled,
}

/// What happens to one layer (or blob) of a pull or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A line of text: `Pulling from library/busybox`, `Digest: ...`, `Status: ...`.
    Status(String),
    /// A layer will be transferred (`Pulling fs layer` / `Preparing`).
    Waiting { id: String, size: u64 },
    /// A layer is already there (`Already exists` / `Layer already exists`).
    Exists { id: String },
    /// Bytes transferred so far.
    Transfer {
        id: String,
        current: u64,
        total: u64,
    },
    /// The transfer of a layer was restarted after a network error.
    Retrying { id: String, attempt: usize },
    /// A layer is complete (`Pull complete` / `Pushed`).
    Done { id: String },
    /// A layer was mounted from another repository of the registry.
    Mounted { id: String, from: String },
}

/// Receives progress of pulls and pushes (called from several threads).
pub trait Progress: Send + Sync {
    fn event(&self, event: ProgressEvent);
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: ProgressEvent) {}
}

/// The short id of a layer in progress output (12 hex digits, like docker).
pub fn short_id(digest: &Digest) -> String {
    digest.hex().chars().take(12).collect()
}

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Where credentials are.
    pub auth: AuthStore,
    /// Plain HTTP for every registry (else only loopback hosts and
    /// `BERTH_INSECURE_REGISTRIES`).
    pub insecure: bool,
}

impl RegistryOptions {
    /// Credentials from the environment's files, https except for loopback registries.
    pub fn from_env() -> RegistryOptions {
        RegistryOptions {
            auth: AuthStore::from_env(),
            insecure: false,
        }
    }

    pub(crate) fn repo(&self, r: &ImageRef, push: bool) -> Result<client::Repo, DistributionError> {
        let creds = self.auth.get(&r.domain)?;
        let http = client::http_client().map_err(DistributionError::Client)?;
        Ok(client::Repo::new(
            http,
            &r.domain,
            r.api_host(),
            r.path.as_str(),
            creds,
            self.insecure,
            push,
        ))
    }
}

/// `berth login`: checks `creds` against the registry `domain` (`GET /v2/`, and the token
/// endpoint when it uses tokens), then stores them. `docker.io` means Docker Hub.
pub fn login(
    domain: &str,
    creds: Credentials,
    opts: &RegistryOptions,
) -> Result<(), DistributionError> {
    let domain = normalize_domain(domain);
    let probe: ImageRef = format!("{domain}/berth-login-probe").parse()?;
    let http = client::http_client().map_err(DistributionError::Client)?;
    let repo = client::Repo::new(
        http,
        &probe.domain,
        probe.api_host(),
        probe.path.as_str(),
        Some(creds.clone()),
        opts.insecure,
        false,
    );
    repo.ping(true)?;
    opts.auth.store(&probe.domain, &creds)?;
    tracing::info!(registry = %probe.domain, path = %opts.auth.path().display(), "login succeeded");
    Ok(())
}

/// `berth logout`: forgets the credentials of `domain`. Returns whether there were any.
pub fn logout(domain: &str, opts: &RegistryOptions) -> Result<bool, DistributionError> {
    Ok(opts.auth.remove(&normalize_domain(domain))?)
}

/// A registry as given on the command line: `https://` and paths dropped, Docker Hub's
/// names mapped to `docker.io`.
pub fn normalize_domain(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => reference::DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

/// A platform `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// This host: `linux/<arch>`.
    pub fn host() -> PlatformSpec {
        PlatformSpec {
            os: "linux".into(),
            architecture: crate::image::host_arch().into(),
            variant: None,
        }
    }

    pub fn parse(s: &str) -> Result<PlatformSpec, DistributionError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| !p.is_empty();
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(PlatformSpec {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(PlatformSpec {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(DistributionError::InvalidPlatform(s.to_string())),
        }
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Counts bytes read through it, reports them, and stops when `cancel` is set.
pub(crate) struct ProgressReader<'a, R> {
    pub inner: R,
    pub id: &'a str,
    pub total: u64,
    pub current: u64,
    pub progress: &'a dyn Progress,
    pub cancel: &'a AtomicBool,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.current += n as u64;
            self.progress.event(ProgressEvent::Transfer {
                id: self.id.to_string(),
                current: self.current,
                total: self.total,
            });
        }
        Ok(n)
    }
}

/// Runs `work` on every item with at most `parallel` threads; the first error cancels the
/// rest (through `cancel`) and is returned.
pub(crate) fn for_each_concurrently<T: Sync>(
    items: &[T],
    parallel: usize,
    cancel: &AtomicBool,
    work: &(dyn Fn(&T) -> Result<(), DistributionError> + Sync),
) -> Result<(), DistributionError> {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<DistributionError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else {
                    return;
                };
                if let Err(e) = work(item) {
                    cancel.store(true, Ordering::Relaxed);
                    if let Ok(mut slot) = first_error.lock() {
                        // Keep the root cause, not a later "cancelled".
                        if slot.is_none() || matches!(*slot, Some(DistributionError::Cancelled)) {
                            *slot = Some(e);
                        }
                    }
                    return;
                }
            });
        }
    });
    match first_error.into_inner() {
        Ok(Some(e)) => Err(e),
        Ok(None) if cancel.load(Ordering::Relaxed) => Err(DistributionError::Cancelled),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_and_domains() {
        assert_eq!(
            PlatformSpec::parse("linux/arm64/v8")
                .expect("ok")
                .to_string(),
            "linux/arm64/v8"
        );
        assert!(PlatformSpec::parse("linux").is_err());
        assert!(PlatformSpec::parse("linux//x").is_err());
        assert_eq!(normalize_domain("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_domain("localhost:5000"), "localhost:5000");
        assert_eq!(normalize_domain("http://127.0.0.1:1/x"), "127.0.0.1:1");
    }

    #[test]
    fn concurrency_stops_at_the_first_error() {
        let cancel = AtomicBool::new(false);
        let items: Vec<u32> = (0..50).collect();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let r = for_each_concurrently(&items, 3, &cancel, &|i| {
            if *i == 5 {
                return Err(DistributionError::NoMatchingPlatform("x".into()));
            }
            done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        assert!(matches!(r, Err(DistributionError::NoMatchingPlatform(_))));
        assert!(done.load(Ordering::Relaxed) < 50);
        let cancel = AtomicBool::new(false);
        for_each_concurrently(&items, 4, &cancel, &|_| Ok(())).expect("all ok");
    }
}
