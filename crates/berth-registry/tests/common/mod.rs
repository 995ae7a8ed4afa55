//! A registry on a random loopback port for one test, and small HTTP clients to drive it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use berth_aws::credentials::Credentials;
use berth_registry::{Config, Registry};
use rand::RngCore;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha512};

pub const AKID: &str = "AKIDCONFORMANCE00001";
pub const SECRET: &str = "conformance/secret+key";
pub const SERVICE: &str = "berth-registry";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// A registry served on `127.0.0.1:0` inside the test's runtime.
pub struct Server {
    pub reg: Arc<Registry>,
    pub addr: SocketAddr,
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// A fresh registry in its own temporary directory.
pub async fn setup() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;
    (dir, server)
}

pub async fn start(dir: &Path) -> Server {
    start_with(dir, |_| {}).await
}

pub async fn start_with(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Server {
    // `RUST_LOG=berth_registry=debug` shows the server's side of a failing test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut cfg = Config::new(dir);
    cfg.credentials = Some(Credentials {
        access_key_id: AKID.into(),
        secret_access_key: SECRET.into(),
    });
    cfg.gc_grace = Duration::from_secs(2);
    tweak(&mut cfg);
    let reg = Registry::open(cfg).expect("open registry");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = reg.router();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
    });
    Server {
        reg,
        addr,
        base: format!("http://{addr}"),
        stop,
        task,
    }
}

impl Server {
    /// Stops serving and drops the registry, closing its database. Clients must be dropped
    /// first (or be idle).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("graceful shutdown timed out")
            .expect("server task");
        let reg = self.reg;
        for _ in 0..250 {
            if Arc::strong_count(&reg) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(Arc::strong_count(&reg), 1, "registry still referenced");
        drop(reg);
    }

    /// The account (access key) over basic auth.
    pub fn api(&self) -> Api {
        Api::new(&self.base, Cred::Basic(AKID.into(), SECRET.into()))
    }

    pub fn anon(&self) -> Api {
        Api::new(&self.base, Cred::None)
    }

    pub fn basic(&self, user: &str, pass: &str) -> Api {
        Api::new(&self.base, Cred::Basic(user.into(), pass.into()))
    }

    pub fn bearer(&self, token: &str) -> Api {
        Api::new(&self.base, Cred::Bearer(token.into()))
    }

    /// Creates a registry user through the admin API.
    pub async fn add_user(&self, name: &str, password: &str, grants: Value) {
        let r = self
            .api()
            .req(Method::PUT, &format!("/berth/v1/users/{name}"))
            .json(&json!({ "password": password, "grants": grants }))
            .send()
            .await
            .expect("put user");
        check(r, 204).await;
    }

    pub fn blob_file(&self, digest: &str) -> std::path::PathBuf {
        self.reg.store.blob_path(&digest.parse().expect("digest"))
    }
}

#[derive(Clone)]
pub enum Cred {
    None,
    Basic(String, String),
    Bearer(String),
}

/// An HTTP client with fixed credentials.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub cred: Cred,
}

impl Api {
    pub fn new(base: &str, cred: Cred) -> Api {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        Api {
            http,
            base: base.to_string(),
            cred,
        }
    }

    /// A request to `path` (absolute, or relative to the server like a `Location` header).
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        };
        let b = self.http.request(method, url);
        match &self.cred {
            Cred::None => b,
            Cred::Basic(u, p) => b.basic_auth(u, Some(p)),
            Cred::Bearer(t) => b.bearer_auth(t),
        }
    }

    pub async fn send(&self, method: Method, path: &str) -> Response {
        self.req(method, path).send().await.expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path).await
    }

    pub async fn head(&self, path: &str) -> Response {
        self.send(Method::HEAD, path).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send(Method::DELETE, path).await
    }

    /// Monolithic upload (`POST ?digest=`) of a sha256 blob; returns its digest.
    pub async fn upload(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self.upload_mono(repo, &d, data).await;
        let h = check(r, 201).await.0;
        assert_eq!(hdr(&h, "docker-content-digest"), d);
        d
    }

    pub async fn upload_mono(&self, repo: &str, digest: &str, data: &[u8]) -> Response {
        self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .query(&[("digest", digest)])
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("upload")
    }

    /// Opens an upload session; returns its Location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .await;
        let h = check(r, 202).await.0;
        hdr(&h, "location")
    }

    pub async fn patch(&self, location: &str, range: Option<(u64, u64)>, data: &[u8]) -> Response {
        let mut b = self
            .req(Method::PATCH, location)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(data.to_vec());
        if let Some((a, z)) = range {
            b = b.header("content-range", format!("{a}-{z}"));
        }
        b.send().await.expect("patch")
    }

    pub async fn finish(&self, location: &str, digest: &str, data: &[u8]) -> Response {
        self.req(Method::PUT, &with_query(location, "digest", digest))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("put upload")
    }

    /// Chunked upload: POST, one PATCH per chunk with Content-Range, PUT.
    pub async fn upload_chunked(&self, repo: &str, digest: &str, data: &[u8], chunk: usize) {
        let loc = self.start_upload(repo).await;
        let mut off = 0u64;
        for c in data.chunks(chunk.max(1)) {
            let end = off + c.len() as u64 - 1;
            let h = check(self.patch(&loc, Some((off, end)), c).await, 202)
                .await
                .0;
            assert_eq!(hdr(&h, "range"), format!("0-{end}"));
            off = end + 1;
        }
        let h = check(self.finish(&loc, digest, b"").await, 201).await.0;
        assert_eq!(hdr(&h, "docker-content-digest"), digest);
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header(CONTENT_TYPE, media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest")
    }

    /// GET /token with this client's credentials.
    pub async fn token(&self, scopes: &[&str]) -> Response {
        let mut q: Vec<(&str, &str)> = vec![("service", SERVICE)];
        q.extend(scopes.iter().map(|s| ("scope", *s)));
        self.req(Method::GET, "/token")
            .query(&q)
            .send()
            .await
            .expect("token")
    }
}

/// Reads the body and asserts the status (showing the body when it differs).
pub async fn check(r: Response, status: u16) -> (HeaderMap, Vec<u8>) {
    let st = r.status().as_u16();
    let h = r.headers().clone();
    let body = r.bytes().await.expect("body").to_vec();
    assert_eq!(
        st,
        status,
        "unexpected status; body: {}",
        String::from_utf8_lossy(&body)
    );
    (h, body)
}

/// Asserts an OCI error response: status and `{"errors":[{"code":..,"message":..}]}`.
pub async fn expect_error(r: Response, status: u16, code: &str) -> (HeaderMap, Value) {
    let (h, body) = check(r, status).await;
    let v = error_body(&body, code);
    assert_eq!(hdr(&h, "content-type"), "application/json");
    (h, v)
}

pub fn error_body(body: &[u8], code: &str) -> Value {
    let text = String::from_utf8_lossy(body);
    let v: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("error body {text:?}: {e}"));
    let errs = v["errors"].as_array().expect("errors array");
    assert_eq!(errs.len(), 1, "{text}");
    assert_eq!(errs[0]["code"], code, "{text}");
    assert!(errs[0]["message"].is_string(), "{text}");
    v
}

/// A header as a string ("" when absent).
pub fn hdr(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .map(|v| v.to_str().expect("ascii header").to_string())
        .unwrap_or_default()
}

pub fn with_query(location: &str, k: &str, v: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    let v = percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC);
    format!("{location}{sep}{k}={v}")
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

pub fn sha512(b: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(b)))
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

pub fn desc(media_type: &str, digest: &str, size: usize) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

pub fn oci_manifest(config: Value, layers: Vec<Value>) -> Value {
    json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers })
}

pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

pub fn random_config() -> Vec<u8> {
    to_bytes(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [] },
        "config": { "Labels": { "nonce": hex::encode(random_bytes(8)) } },
    }))
}

/// An image whose blobs are uploaded but whose manifest is not pushed yet.
pub struct Staged {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// Uploads a random config and layer to `repo` and builds an OCI manifest for them.
pub async fn stage_image(api: &Api, repo: &str) -> Staged {
    let config = random_config();
    let layer = random_bytes(512 + (rand::random::<usize>() % 2048));
    let cd = api.upload(repo, &config).await;
    let ld = api.upload(repo, &layer).await;
    let manifest = to_bytes(&oci_manifest(
        desc(OCI_CONFIG, &cd, config.len()),
        vec![desc(OCI_LAYER, &ld, layer.len())],
    ));
    Staged {
        digest: sha256(&manifest),
        manifest,
        blobs: vec![(cd, config), (ld, layer)],
    }
}

/// Uploads a random image and tags it; returns it.
pub async fn push_image(api: &Api, repo: &str, tag: &str) -> Staged {
    let img = stage_image(api, repo).await;
    let h = check(
        api.put_manifest(repo, tag, OCI_MANIFEST, &img.manifest)
            .await,
        201,
    )
    .await
    .0;
    assert_eq!(hdr(&h, "docker-content-digest"), img.digest);
    img
}

/// The claims of a JWT.
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("jwt payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims")
}

pub fn basic_header(user: &str, pass: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
}

/// The target of a `Link: <url>; rel="next"` header.
pub fn next_link(h: &HeaderMap) -> Option<String> {
    let l = hdr(h, "link");
    if l.is_empty() {
        return None;
    }
    let (url, rel) = l.split_once(';').expect("link parameters");
    assert_eq!(rel.trim(), "rel=\"next\"", "{l}");
    let url = url.trim();
    assert!(url.starts_with('<') && url.ends_with('>'), "{l}");
    Some(url[1..url.len() - 1].to_string())
}

/// A raw HTTP/1.1 exchange, for requests an HTTP client would normalise away (dot segments,
/// bad headers). `extra` is appended verbatim to the request head (each line ending in CRLF).
/// Returns the status, the lowercased response head and the body.
pub async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    extra: &[u8],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(extra);
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    s.write_all(&req).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("raw response timed out")
        .expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, buf[split + 4..].to_vec())
}
