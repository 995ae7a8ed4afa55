//! Shared harness of the end-to-end tests: starts the real `berth` binary on a free port with
//! its own data directory, finds the real clients (skopeo, aws, python with boto3/oras), builds
//! test images locally, and pushes/verifies images over plain HTTP.
//!
//! A missing client skips the test with a notice, unless `BERTH_REQUIRE_E2E=1` (set by
//! `scripts/test`), where it fails.

#![allow(dead_code)]

pub mod ecs;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The account key every test server is started with (`--access-key-id/--secret-access-key`).
pub const AKID: &str = "AKIABERTHE2ETEST0001";
pub const SECRET: &str = "berthE2eSecretKey/0123456789abcdefghijKLMN";
pub const REGION: &str = "us-east-1";

/// How long a server may take to answer `GET /v2/` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

/// The repository root (`/work/main`), where `tests/e2e/*` helpers live.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

pub fn e2e_script(name: &str) -> PathBuf {
    repo_root().join("tests/e2e").join(name)
}

pub fn required() -> bool {
    std::env::var("BERTH_REQUIRE_E2E").is_ok_and(|v| v == "1")
}

/// A client is missing: fail under `BERTH_REQUIRE_E2E=1`, else print a skip notice.
pub fn missing(what: &str) {
    if required() {
        panic!("BERTH_REQUIRE_E2E=1 but {what} is not available (run scripts/test, or put the venv's bin first on PATH)");
    }
    eprintln!("SKIP: {what} is not available; set BERTH_REQUIRE_E2E=1 to make this a failure");
}

/// Unwraps a client lookup or returns from the test (after [`missing`] decided).
#[macro_export]
macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn venv_bin(name: &str) -> Option<PathBuf> {
    let v = std::env::var_os("BERTH_VENV")?;
    let p = PathBuf::from(v).join("bin").join(name);
    p.is_file().then_some(p)
}

/// A command-line tool from the venv (`BERTH_VENV`) or PATH.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = venv_bin(name).or_else(|| on_path(name));
    if found.is_none() {
        missing(name);
    }
    found
}

pub fn skopeo() -> Option<PathBuf> {
    tool("skopeo")
}

pub fn aws() -> Option<PathBuf> {
    tool("aws")
}

/// `aws` with the test account key in the environment, us-east-1, and no host configuration
/// (`dir` gets the empty config paths).
pub fn aws_cmd(aws: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(aws);
    cmd.env("AWS_ACCESS_KEY_ID", AKID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", dir.join("aws-config-none"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("aws-credentials-none"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL");
    cmd
}

/// A python3 that can import every module in `modules`.
pub fn python(modules: &[&str]) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = venv_bin("python3") {
        candidates.push(p);
    }
    if let Some(p) = on_path("python3") {
        candidates.push(p);
    }
    let probe = if modules.is_empty() {
        "pass".to_string()
    } else {
        format!("import {}", modules.join(", "))
    };
    for c in candidates {
        let ok = Command::new(&c)
            .args(["-c", &probe])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(c);
        }
    }
    missing(&format!("python3 with {modules:?}"));
    None
}

// ---- processes ---------------------------------------------------------------------------------

/// Runs `cmd`, returning its output whatever the exit status.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

/// Runs `cmd` and panics (with its output) unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` and panics unless it fails; returns stderr (plus stdout).
pub fn run_fail(cmd: &mut Command) -> String {
    let out = run(cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    if out.status.success() {
        panic!("{cmd:?} succeeded but should have failed:\n{text}");
    }
    text
}

/// Runs `cmd` with `input` on stdin and panics unless it succeeds; returns stdout.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("waiting for the command");
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("invalid JSON ({e}): {s}"))
}

// ---- the server --------------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (the OS picks it; the server binds it right after, and a lost
/// race is retried by [`Server`]).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// One HTTP/1.1 request over a raw socket; returns the status code, if any answer came.
fn probe(addr: &str, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 12 {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&got);
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// `berth registry --addr A --data D --access-key-id .. --secret-access-key ..`
    Registry,
    /// `berth serve --registry-addr A --api-addr B --data D` (generated credentials).
    Serve,
}

/// A running `berth` process; killed (SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    pub kind: Kind,
    /// `127.0.0.1:PORT` of the registry.
    pub addr: String,
    /// `http://127.0.0.1:PORT` of the registry.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the AWS API port (`berth serve` only).
    pub api_url: Option<String>,
    pub data: PathBuf,
    /// stdout+stderr of the process.
    pub log: PathBuf,
}

impl Server {
    /// `berth registry` with the test access key, data in `data`, and `extra` flags.
    pub fn registry(data: &Path, extra: &[&str]) -> Server {
        Server::start(Kind::Registry, data, extra)
    }

    /// `berth serve` with data in `data` (the access key is generated into `<data>/credentials`).
    pub fn serve(data: &Path, extra: &[&str]) -> Server {
        Server::start(Kind::Serve, data, extra)
    }

    pub fn start(kind: Kind, data: &Path, extra: &[&str]) -> Server {
        Server::start_at(kind, data, extra, None)
    }

    /// `berth serve` again on the same ports and data (after [`Server::kill9`]).
    pub fn restart_serve(&mut self, extra: &[&str]) {
        self.kill9();
        let port: u16 = self
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("registry port");
        let api: u16 = self
            .api_url
            .as_deref()
            .and_then(|u| u.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("api port");
        let s = Server::start_at(Kind::Serve, &self.data, extra, Some((port, api)));
        *self = s;
    }

    fn start_at(kind: Kind, data: &Path, extra: &[&str], ports: Option<(u16, u16)>) -> Server {
        let parent = data.parent().expect("data dir has a parent");
        std::fs::create_dir_all(parent).expect("creating the test dir");
        let mut last_log = String::new();
        for attempt in 0..8 {
            let port = ports.map(|p| p.0).unwrap_or_else(free_port);
            let addr = format!("127.0.0.1:{port}");
            let api_port =
                (kind == Kind::Serve).then(|| ports.map(|p| p.1).unwrap_or_else(free_port));
            let log = parent.join(format!("berth-{port}.log"));
            let logf = std::fs::File::create(&log).expect("creating the server log");
            let mut cmd = Command::new(berth_bin());
            match kind {
                Kind::Registry => {
                    cmd.args(["registry", "--addr", &addr, "--access-key-id", AKID]);
                    cmd.args(["--secret-access-key", SECRET]);
                }
                Kind::Serve => {
                    let api = format!("127.0.0.1:{}", api_port.expect("api port"));
                    cmd.args(["serve", "--registry-addr", &addr, "--api-addr", &api]);
                }
            }
            cmd.arg("--data").arg(data).args(extra);
            cmd.env_remove("BERTH_ACCESS_KEY_ID")
                .env_remove("BERTH_SECRET_ACCESS_KEY")
                .env(
                    "RUST_LOG",
                    std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null())
                .stdout(logf.try_clone().expect("log fd"))
                .stderr(logf);
            let child = cmd.spawn().expect("starting berth");
            let mut s = Server {
                child: Some(child),
                kind,
                url: format!("http://{addr}"),
                addr,
                api_url: api_port.map(|p| format!("http://127.0.0.1:{p}")),
                data: data.to_path_buf(),
                log,
            };
            match s.wait_ready() {
                Ok(()) => return s,
                Err(log) => {
                    s.child = None; // exited already
                    let conflict = log.contains("in use") || log.contains("cannot listen");
                    if !conflict {
                        panic!("berth {kind:?} exited during startup (attempt {attempt}):\n{log}");
                    }
                    last_log = log;
                }
            }
        }
        panic!("berth could not bind a free port after retries:\n{last_log}");
    }

    /// Polls `GET /v2/` (and the API port) until they answer; Err(log) if the process exited.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("{status}\n{}", self.log_text()));
                }
            }
            let reg = probe(&self.addr, "GET", "/v2/").is_some();
            let api = match &self.api_url {
                Some(u) => probe(u.trim_start_matches("http://"), "GET", "/").is_some(),
                None => true,
            };
            if reg && api {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.log_text();
                self.kill9();
                panic!(
                    "berth did not answer GET /v2/ on {} within {READY_TIMEOUT:?}:\n{log}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `docker://127.0.0.1:PORT/<rest>`
    pub fn docker_ref(&self, rest: &str) -> String {
        format!("docker://{}/{rest}", self.addr)
    }

    /// `berth registry <args> --server URL --data DIR` with the account key in the environment.
    pub fn admin(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(berth_bin());
        cmd.arg("registry").args(args);
        cmd.args(["--server", &self.url])
            .arg("--data")
            .arg(&self.data);
        if self.kind == Kind::Registry {
            cmd.env("BERTH_ACCESS_KEY_ID", AKID)
                .env("BERTH_SECRET_ACCESS_KEY", SECRET);
        } else {
            cmd.env_remove("BERTH_ACCESS_KEY_ID")
                .env_remove("BERTH_SECRET_ACCESS_KEY");
        }
        cmd
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: String = {
                let start = log.len().saturating_sub(20_000);
                let start = (start..log.len())
                    .find(|i| log.is_char_boundary(*i))
                    .unwrap_or(0);
                log[start..].to_string()
            };
            eprintln!(
                "---- berth log ({}) ----\n{tail}\n---- end of berth log ----",
                self.log.display()
            );
        }
    }
}

/// A busybox rootfs tarball for images the tests build: `<dir>/fs` (made once: busybox-static
/// with `applets` linked to it, an empty `/tmp`, and `files` as (path, contents)) packed into
/// `<dir>/rootfs.tar`, which is returned.
pub fn busybox_rootfs_tar(dir: &Path, applets: &[&str], files: &[(&str, &str)]) -> PathBuf {
    let fs = dir.join("fs");
    if !fs.exists() {
        std::fs::create_dir_all(fs.join("bin")).expect("mkdir");
        std::fs::create_dir_all(fs.join("tmp")).expect("mkdir");
        std::fs::copy("/bin/busybox", fs.join("bin/busybox")).expect("copy busybox-static");
        for a in applets {
            std::os::unix::fs::symlink("busybox", fs.join("bin").join(a)).expect("symlink");
        }
        for (path, contents) in files {
            let p = fs.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&p, contents).expect("write");
        }
    }
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&fs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success(), "tar of {}", fs.display());
    tar
}

// ---- skopeo -----------------------------------------------------------------------------------

/// skopeo with a private policy (accept anything) and auth file, so the host's configuration
/// and ~/.docker never matter.
pub struct Skopeo {
    pub bin: PathBuf,
    pub dir: PathBuf,
}

impl Skopeo {
    pub fn new(bin: PathBuf, dir: &Path) -> Skopeo {
        let dir = dir.join("skopeo");
        std::fs::create_dir_all(&dir).expect("creating the skopeo dir");
        std::fs::write(
            dir.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("writing policy.json");
        std::fs::write(dir.join("auth.json"), r#"{"auths":{}}"#).expect("writing auth.json");
        Skopeo { bin, dir }
    }

    /// `skopeo --policy P <args>` with `REGISTRY_AUTH_FILE` pointing at an empty auth file.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--policy").arg(self.dir.join("policy.json"));
        c.args(args);
        c.env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"));
        c.env("TMPDIR", &self.dir);
        // A blob-info cache of this test's own: as root skopeo shares
        // /var/lib/containers/cache between every process, and parallel tests starting on an
        // empty cache lose each other's records (seen as missing cross-repo mounts). The
        // "rootless uid" makes containers/image take the cache from XDG_DATA_HOME instead.
        c.env("_CONTAINERS_ROOTLESS_UID", "4242");
        c.env("XDG_DATA_HOME", self.dir.join("data"));
        c
    }

    pub fn creds() -> String {
        format!("{AKID}:{SECRET}")
    }

    /// `skopeo copy SRC docker://DEST` with the account key.
    pub fn push(&self, src: &str, dest: &str, extra: &[&str]) -> String {
        let creds = Skopeo::creds();
        let mut args = vec!["copy", "--dest-tls-verify=false", "--dest-creds", &creds];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[src, dest]);
        run_ok(&mut self.cmd(&args))
    }

    /// `skopeo copy docker://SRC DEST` with the account key.
    pub fn pull(&self, src: &str, dest: &str, extra: &[&str]) -> String {
        let creds = Skopeo::creds();
        let mut args = vec!["copy", "--src-tls-verify=false", "--src-creds", &creds];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[src, dest]);
        run_ok(&mut self.cmd(&args))
    }

    /// `skopeo inspect [--raw] docker://REF` → JSON.
    pub fn inspect(&self, reference: &str, raw: bool) -> Value {
        let creds = Skopeo::creds();
        let mut args = vec!["inspect", "--tls-verify=false", "--creds", &creds];
        if raw {
            args.push("--raw");
        }
        args.push(reference);
        json(&run_ok(&mut self.cmd(&args)))
    }
}

// ---- test images ------------------------------------------------------------------------------

/// What `tests/e2e/mkimage.py` wrote.
#[derive(Debug, Clone)]
pub struct Built {
    /// Digest of the top manifest (image manifest, or index with several platforms).
    pub digest: String,
    pub media_type: String,
    pub images: Vec<BuiltImage>,
}

#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub platform: String,
    pub digest: String,
    pub config: String,
    pub layers: Vec<String>,
}

/// Writes (or adds `tag` to) an OCI layout at `layout` with random layers.
pub fn build_image(
    py: &Path,
    layout: &Path,
    tag: &str,
    layers: usize,
    layer_size: usize,
    platforms: &[&str],
) -> Built {
    build_image_with(py, layout, tag, layers, layer_size, platforms, &[])
}

/// [`build_image`] with extra mkimage.py options (e.g. `--busybox` for a runnable image).
pub fn build_image_with(
    py: &Path,
    layout: &Path,
    tag: &str,
    layers: usize,
    layer_size: usize,
    platforms: &[&str],
    extra: &[&str],
) -> Built {
    let mut cmd = Command::new(py);
    cmd.arg(e2e_script("mkimage.py")).arg(layout);
    cmd.args(extra);
    cmd.args([
        "--tag",
        tag,
        "--layers",
        &layers.to_string(),
        "--layer-size",
        &layer_size.to_string(),
    ]);
    for p in platforms {
        cmd.args(["--platform", p]);
    }
    let v = json(&run_ok(&mut cmd));
    let s = |v: &Value, k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("mkimage: no {k}"))
            .to_string()
    };
    Built {
        digest: s(&v, "digest"),
        media_type: s(&v, "mediaType"),
        images: v["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| BuiltImage {
                platform: s(i, "platform"),
                digest: s(i, "digest"),
                config: s(i, "config"),
                layers: i["layers"]
                    .as_array()
                    .expect("layers")
                    .iter()
                    .map(|l| l.as_str().expect("layer digest").to_string())
                    .collect(),
            })
            .collect(),
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("reading");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Checks a `skopeo copy ... dir:OUT` result: `manifest` (a file in OUT) names a config and
/// layers, each present in OUT with the right sha256. Returns (config, layers).
pub fn verify_dir_image(out: &Path, manifest: &str) -> (String, Vec<String>) {
    let m =
        json(&std::fs::read_to_string(out.join(manifest)).expect("reading the pulled manifest"));
    let config = m["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string();
    let layers: Vec<String> = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest").to_string())
        .collect();
    for d in std::iter::once(&config).chain(layers.iter()) {
        let hexd = d.strip_prefix("sha256:").expect("sha256 digest");
        let f = out.join(hexd);
        assert!(f.is_file(), "pulled blob {d} missing in {}", out.display());
        assert_eq!(&sha256_file(&f), d, "pulled blob {d} has wrong content");
    }
    (config, layers)
}

// ---- plain HTTP --------------------------------------------------------------------------------

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// A GET with the account key; returns (status, headers, body).
pub async fn get(
    c: &reqwest::Client,
    url: &str,
    accept: Option<&str>,
) -> reqwest::Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
    let mut r = c.get(url).basic_auth(AKID, Some(SECRET));
    if let Some(a) = accept {
        r = r.header("accept", a);
    }
    let resp = r.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?.to_vec();
    Ok((status, headers, body))
}

/// Accept header covering every manifest type.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// One image to push over HTTP: config + layers, all random bytes.
#[derive(Debug, Clone)]
pub struct HttpImage {
    pub repo: String,
    pub tag: String,
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
}

impl HttpImage {
    /// `nlayers` layers of random sizes in `sizes` (bytes), plus a small config.
    pub fn random(
        repo: &str,
        tag: &str,
        nlayers: usize,
        sizes: std::ops::Range<usize>,
    ) -> HttpImage {
        use rand::{Rng, RngCore};
        let mut rng = rand::thread_rng();
        let layers = (0..nlayers)
            .map(|_| {
                let mut b = vec![0u8; rng.gen_range(sizes.clone())];
                rng.fill_bytes(&mut b);
                b
            })
            .collect();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"nonce":"{}"}}}}}}"#,
            rng.gen::<u64>()
        )
        .into_bytes();
        HttpImage {
            repo: repo.into(),
            tag: tag.into(),
            config,
            layers,
        }
    }

    pub fn manifest(&self) -> Vec<u8> {
        let desc = |mt: &str, b: &[u8]| serde_json::json!({ "mediaType": mt, "digest": sha256_digest(b), "size": b.len() });
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json", &self.config),
            "layers": self.layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>(),
        }))
        .expect("manifest JSON")
    }

    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest())
    }

    pub fn blobs(&self) -> impl Iterator<Item = &Vec<u8>> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

/// Why an HTTP push did not end in 201.
#[derive(Debug)]
pub enum PushError {
    /// Transport error (server gone, connection reset).
    Transport(String),
    /// The registry answered something else; `code` is the first OCI error code.
    Status {
        step: String,
        status: u16,
        code: String,
        body: String,
    },
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Transport(e) => write!(f, "transport: {e}"),
            PushError::Status {
                step,
                status,
                code,
                body,
            } => write!(f, "{step}: {status} {code}: {body}"),
        }
    }
}

impl From<reqwest::Error> for PushError {
    fn from(e: reqwest::Error) -> Self {
        PushError::Transport(format!("{e:?}"))
    }
}

async fn expect_status(
    step: &str,
    resp: reqwest::Response,
    want: u16,
) -> Result<reqwest::Response, PushError> {
    if resp.status().as_u16() == want {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    Err(PushError::Status {
        step: step.into(),
        status,
        code,
        body,
    })
}

/// Uploads one blob (POST + monolithic PUT), unless `skip_existing` and HEAD finds it.
pub async fn upload_blob(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    blob: &[u8],
    skip_existing: bool,
) -> Result<(), PushError> {
    let digest = sha256_digest(blob);
    if skip_existing {
        let r = c
            .head(format!("{base}/v2/{repo}/blobs/{digest}"))
            .basic_auth(AKID, Some(SECRET))
            .send()
            .await?;
        if r.status().as_u16() == 200 {
            return Ok(());
        }
    }
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .basic_auth(AKID, Some(SECRET))
        .header("content-length", "0")
        .send()
        .await?;
    let r = expect_status("blob upload POST", r, 202).await?;
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| PushError::Transport("upload POST without Location".into()))?
        .to_string();
    let url = if loc.starts_with("http") {
        loc
    } else {
        format!("{base}{loc}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{url}{sep}digest={digest}"))
        .basic_auth(AKID, Some(SECRET))
        .header("content-type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await?;
    expect_status("blob upload PUT", r, 201).await?;
    Ok(())
}

/// Pushes `img` (blobs, then the manifest by tag); Ok(digest from Docker-Content-Digest) on 201.
pub async fn push_http(
    c: &reqwest::Client,
    base: &str,
    img: &HttpImage,
    skip_existing: bool,
) -> Result<String, PushError> {
    for b in img.blobs() {
        upload_blob(c, base, &img.repo, b, skip_existing).await?;
    }
    put_manifest(c, base, img).await
}

pub async fn put_manifest(
    c: &reqwest::Client,
    base: &str,
    img: &HttpImage,
) -> Result<String, PushError> {
    let r = c
        .put(format!("{base}/v2/{}/manifests/{}", img.repo, img.tag))
        .basic_auth(AKID, Some(SECRET))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(img.manifest())
        .send()
        .await?;
    let r = expect_status("manifest PUT", r, 201).await?;
    Ok(r.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string())
}

/// Pulls `repo:reference` over HTTP and checks the manifest digest (when `want_digest` is
/// given) and every blob's content. Err(description) on any mismatch.
pub async fn verify_http(
    c: &reqwest::Client,
    base: &str,
    img: &HttpImage,
    reference: &str,
    want_digest: Option<&str>,
) -> Result<(), String> {
    let url = format!("{base}/v2/{}/manifests/{reference}", img.repo);
    let (status, headers, body) = get(c, &url, Some(ACCEPT_ALL))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if status != 200 {
        return Err(format!(
            "GET {url}: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let got = sha256_digest(&body);
    if body != img.manifest() {
        return Err(format!(
            "GET {url}: manifest body differs from the one pushed (digest {got})"
        ));
    }
    if let Some(w) = want_digest {
        if got != w {
            return Err(format!("GET {url}: digest {got}, pushed {w}"));
        }
    }
    let hd = headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if hd != got {
        return Err(format!(
            "GET {url}: Docker-Content-Digest {hd:?} but body hashes to {got}"
        ));
    }
    for b in img.blobs() {
        let d = sha256_digest(b);
        let url = format!("{base}/v2/{}/blobs/{d}", img.repo);
        let (status, _, body) = get(c, &url, None)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if status != 200 {
            return Err(format!(
                "GET {url}: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        if sha256_digest(&body) != d || body.len() != b.len() {
            return Err(format!(
                "GET {url}: content does not match ({} bytes)",
                body.len()
            ));
        }
    }
    Ok(())
}

/// The OCI error code of a registry error body, if any.
pub fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `berth registry gc --grace G` against `s`; returns the JSON report.
pub fn gc(s: &Server, grace: u64) -> Value {
    let g = grace.to_string();
    json(&run_ok(&mut s.admin(&["gc", "--grace", &g])))
}

/// A one-line summary of a GC report.
pub fn summary(report: &Value) -> String {
    format!(
        "{} blobs ({} bytes) deleted, {} links removed, {} orphan files, {} stale uploads, {} ms",
        report["blobs_deleted"].as_array().map_or(0, Vec::len),
        report["bytes_freed"],
        report["links_removed"],
        report["orphan_files_removed"],
        report["stale_uploads_removed"],
        report["duration_ms"]
    )
}
