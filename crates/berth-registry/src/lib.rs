//! The Berth registry: an OCI distribution (spec 1.1) server with users, token auth, online
//! garbage collection, and the ECR control API.
//!
//! Layers: `dist` (HTTP routes of the distribution API) → `Registry` (this file: shared state
//! and the blob write path) → `meta` (transactional metadata) + `storage` (blob files).

pub mod admin;
pub mod auth;
mod dist;
pub mod ecr;
pub mod error;
pub mod gc;
pub mod lifecycle;
pub mod meta;
pub mod storage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::Router;
use berth_aws::credentials::Credentials;

pub use error::{ApiError, Error, Result};
use meta::Meta;
use storage::BlobStore;

/// Registry settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Account in ARNs and the ECR registry id.
    pub account_id: String,
    /// Explicit access key; when `None`, `<data>/credentials` is loaded or created.
    pub credentials: Option<Credentials>,
    /// The URL clients use to reach the registry (token realm, ECR proxyEndpoint). When
    /// `None`, derived from each request's Host header.
    pub public_url: Option<String>,
    /// Pushing to a repository that does not exist creates it (as docker-registry does). ECR
    /// refuses such pushes; set false for that behaviour.
    pub auto_create_repos: bool,
    /// Unreferenced blobs younger than this (since upload or last use) are never collected.
    pub gc_grace: Duration,
    /// Upload sessions idle longer than this are removed by GC.
    pub upload_ttl: Duration,
    pub max_manifest_bytes: usize,
    /// Service name in bearer tokens.
    pub service: String,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            account_id: "000000000000".into(),
            credentials: None,
            public_url: None,
            auto_create_repos: true,
            gc_grace: Duration::from_secs(3600),
            upload_ttl: Duration::from_secs(24 * 3600),
            max_manifest_bytes: 4 << 20,
            service: "berth-registry".into(),
        }
    }
}

/// The registry's shared state.
pub struct Registry {
    pub cfg: Config,
    pub meta: Arc<Meta>,
    pub store: BlobStore,
    pub auth: Arc<auth::Auth>,
    pub credentials: Credentials,
    /// Set when this start generated the credentials file.
    pub credentials_created: Option<PathBuf>,
    /// Held shared while a blob is renamed into place and recorded; held exclusively while
    /// GC deletes records and files, so the two never interleave.
    finalize: tokio::sync::RwLock<()>,
    /// Digest -> last time (ms) a client learnt that the blob exists (HEAD, mount, upload).
    touched: Mutex<HashMap<String, u64>>,
    uploads: dist::Uploads,
}

impl Registry {
    /// Opens the data directory (creating it), the metadata store, the blob store, the token
    /// secret and the access key.
    pub fn open(cfg: Config) -> Result<Arc<Registry>> {
        create_private_dir(&cfg.data_dir)?;
        let meta = Arc::new(Meta::open(&cfg.data_dir.join("meta.redb"))?);
        let store = BlobStore::open(&cfg.data_dir)?;
        let secret = load_or_create_secret(&cfg.data_dir.join("secret"))?;
        let (credentials, credentials_created) = match &cfg.credentials {
            Some(c) => (c.clone(), None),
            None => {
                let path = cfg.data_dir.join("credentials");
                let (c, created) = berth_aws::credentials::load_or_create(&path)?;
                (c, created.then_some(path))
            }
        };
        let auth = Arc::new(auth::Auth::new(
            secret,
            meta.clone(),
            credentials.clone(),
            cfg.service.clone(),
        ));
        Ok(Arc::new(Registry {
            cfg,
            meta,
            store,
            auth,
            credentials,
            credentials_created,
            finalize: tokio::sync::RwLock::new(()),
            touched: Mutex::new(HashMap::new()),
            uploads: dist::Uploads::default(),
        }))
    }

    /// The HTTP routes: `/v2/...`, the token endpoint `/token`, and the admin API
    /// `/berth/v1/...`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .merge(admin::router())
            .merge(dist::router())
            .layer(DefaultBodyLimit::disable())
            .layer(axum::middleware::map_response(
                |mut r: axum::response::Response| async move {
                    r.headers_mut().insert(
                        "docker-distribution-api-version",
                        HeaderValue::from_static("registry/2.0"),
                    );
                    r
                },
            ))
            .with_state(self.clone())
    }

    pub(crate) fn touch(&self, digest: &str) {
        if let Ok(mut t) = self.touched.lock() {
            t.insert(digest.to_string(), meta::now_ms());
        }
    }

    pub(crate) fn last_touch(&self, digest: &str) -> Option<u64> {
        self.touched.lock().ok()?.get(digest).copied()
    }

    pub(crate) fn forget_touches_before(&self, cutoff_ms: u64) {
        if let Ok(mut t) = self.touched.lock() {
            t.retain(|_, v| *v >= cutoff_ms);
        }
    }
}

/// Runs blocking store work off the async runtime.
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> std::result::Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?.map_err(Into::into)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })
}

fn load_or_create_secret(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) if b.len() >= 32 => return Ok(b),
        Ok(_) => {
            return Err(Error::Config(format!(
                "{} is shorter than 32 bytes",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let mut secret = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    storage::write_atomic(path, &secret, 0o600)?;
    Ok(secret)
}
