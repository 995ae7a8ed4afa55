//! `berth pull|push|login|logout|tag|save|load` end to end: images built locally
//! (`tests/e2e/mkimage.py`, busybox-static for runnable ones) and pushed by the real skopeo to
//! a `berth registry` (or Debian's docker-registry) started by the test, then pulled and run
//! by the real `berth` binary with its own engine root, auth file and HOME.
//!
//! Running containers needs root: without it those steps are skipped with a notice, or fail
//! under `BERTH_REQUIRE_ROOT=1`. Missing clients fail under `BERTH_REQUIRE_E2E=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

struct Env {
    dir: tempfile::TempDir,
    srv: Server,
    sk: Skopeo,
    py: PathBuf,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Whether containers can be run here (root); panics under BERTH_REQUIRE_ROOT=1 otherwise.
fn can_run() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("BERTH_REQUIRE_ROOT").as_deref() != Ok("1"),
        "running containers needs root (BERTH_REQUIRE_ROOT=1)"
    );
    eprintln!("SKIP (run steps): running containers needs root");
    false
}

fn setup() -> Option<Env> {
    let sk = skopeo()?;
    let py = python(&[])?;
    assert!(
        Path::new("/bin/busybox").exists(),
        "busybox-static is not installed"
    );
    let dir = tempfile::Builder::new()
        .prefix("berth-e2e-pull-")
        .tempdir()
        .expect("tempdir");
    let srv = Server::registry(&dir.path().join("data"), &[]);
    let sk = Skopeo::new(sk, dir.path());
    Some(Env { dir, srv, sk, py })
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `berth ARGS` with engine root `root` (under the test dir), the test's auth file and HOME.
    fn berth_in(&self, root: &str, args: &[&str]) -> Command {
        let mut c = Command::new(berth_bin());
        c.env("BERTH_ROOT", self.path(root))
            .env("BERTH_CONFIG", self.path("auth.json"))
            .env("HOME", self.path("home"))
            .env_remove("DOCKER_CONFIG")
            .env_remove("BERTH_INSECURE_REGISTRIES")
            .env("RUST_LOG", "error")
            // Pull tests run containers without a network: parallel test roots must not
            // share the default bridge.
            .env("BERTH_NETWORK", "none")
            .args(args);
        c
    }

    fn berth(&self, args: &[&str]) -> Command {
        self.berth_in("root", args)
    }

    fn ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.berth(args))
    }

    fn fail(&self, args: &[&str]) -> String {
        run_fail(&mut self.berth(args))
    }

    fn login(&self) {
        let out = run_ok(&mut self.berth(&["login", "-u", AKID, "-p", SECRET, &self.srv.addr]));
        assert!(out.contains("Login Succeeded"), "{out}");
    }

    /// Builds an image (mkimage.py) and pushes it with skopeo to `repo_tag` on the registry.
    fn push_built(
        &self,
        name: &str,
        repo_tag: &str,
        layers: usize,
        size: usize,
        platforms: &[&str],
        busybox: bool,
    ) -> Built {
        let layout = self.path(&format!("layout-{name}"));
        let built = if busybox {
            build_busybox_image(&self.py, &layout, "t", layers, size, platforms)
        } else {
            build_image(&self.py, &layout, "t", layers, size, platforms)
        };
        let mut extra: Vec<&str> = Vec::new();
        if platforms.len() > 1 {
            extra.push("--all");
        }
        self.sk.push(
            &format!("oci:{}:t", layout.display()),
            &self.srv.docker_ref(repo_tag),
            &extra,
        );
        built
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.srv.addr)
    }

    fn inspect(&self, reference: &str) -> serde_json::Value {
        json(&self.ok(&["inspect", reference]))[0].clone()
    }

    /// Removes the containers of engine root `root` (cleanup after run steps).
    fn cleanup(&self, root: &str) {
        if let Ok(out) = self
            .berth_in(root, &["ps", "-a", "-q", "--no-trunc"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.berth_in(root, &["rm", "-f", id]).output();
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for root in ["root", "root2", "docker"] {
            self.cleanup(root);
        }
    }
}

/// mkimage.py with `--busybox`: a runnable image (busybox layer + `layers` random ones).
fn build_busybox_image(
    py: &Path,
    layout: &Path,
    tag: &str,
    layers: usize,
    layer_size: usize,
    platforms: &[&str],
) -> Built {
    build_image_with(
        py,
        layout,
        tag,
        layers,
        layer_size,
        platforms,
        &["--busybox"],
    )
}

fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64",
        other => panic!("no test platform for {other}"),
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pull_run_and_pull_again_is_up_to_date() {
    let e = need!(setup());
    let built = e.push_built("bb", "apps/bb:1", 1, 4096, &[host_platform()], true);
    let r = e.reference("apps/bb:1");

    // The registry is private: anonymous pulls are refused with a clear error.
    let err = e.fail(&["pull", &r]);
    assert!(err.contains("unauthorized"), "{err}");

    e.login();
    let out = e.ok(&["pull", &r]);
    // Not a tty: plain lines like docker's.
    assert!(out.contains("1: Pulling from apps/bb"), "{out}");
    assert_eq!(out.matches("Pulling fs layer").count(), 2, "{out}");
    assert_eq!(out.matches("Pull complete").count(), 2, "{out}");
    assert!(out.contains(&format!("Digest: {}", built.digest)), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {r}")),
        "{out}"
    );
    let images = e.ok(&["images"]);
    let repo = format!("{}/apps/bb", e.srv.addr);
    let line = images
        .lines()
        .find(|l| l.starts_with(&repo))
        .unwrap_or_else(|| panic!("{repo} not listed:\n{images}"));
    let config_hex = built.images[0].config.trim_start_matches("sha256:");
    assert!(line.contains(&config_hex[..12]), "{line}");
    assert_eq!(e.inspect(&r)["Id"], built.images[0].config.as_str());

    if can_run() {
        let out = e.ok(&["run", "--rm", &r, "/bin/echo", "hi"]);
        assert_eq!(out, "hi\n");
        // The image's own Cmd.
        let out = e.ok(&["run", "--rm", &r, "sh", "-c", "echo from sh"]);
        assert_eq!(out, "from sh\n");
    }

    // Again: nothing downloaded.
    let out = e.ok(&["pull", &r]);
    assert!(
        out.contains(&format!("Status: Image is up to date for {r}")),
        "{out}"
    );
    assert!(
        !out.contains("Downloading") && !out.contains("Pull complete"),
        "{out}"
    );

    // -q prints only the reference; a second tag of the same image reuses every layer.
    run_ok(&mut e.sk.cmd(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        &Skopeo::creds(),
        "--dest-creds",
        &Skopeo::creds(),
        &e.srv.docker_ref("apps/bb:1"),
        &e.srv.docker_ref("apps/bb:2"),
    ]));
    let r2 = e.reference("apps/bb:2");
    let out = e.ok(&["pull", &r2]);
    assert_eq!(out.matches("Already exists").count(), 2, "{out}");
    let out = e.ok(&["pull", "-q", &r2]);
    assert_eq!(out.trim(), r2);

    // Unknown tags.
    let err = e.fail(&["pull", &e.reference("apps/bb:nope")]);
    assert!(err.contains("manifest unknown"), "{err}");
}

#[test]
fn pull_of_a_multi_platform_index_picks_the_host() {
    let e = need!(setup());
    e.login();
    let built = e.push_built(
        "multi",
        "multi/app:1",
        1,
        2048,
        &["linux/arm64", "linux/amd64", "linux/s390x"],
        true,
    );
    let host = built
        .images
        .iter()
        .find(|i| i.platform == host_platform())
        .expect("host platform image");
    let r = e.reference("multi/app:1");
    let out = e.ok(&["pull", &r]);
    // docker prints the index digest.
    assert!(out.contains(&format!("Digest: {}", built.digest)), "{out}");
    let v = e.inspect(&r);
    assert_eq!(v["Id"], host.config.as_str());
    assert_eq!(v["ManifestDigest"], host.digest.as_str());
    // Another platform on request.
    let out = e.ok(&[
        "pull",
        "--platform",
        "linux/s390x",
        &e.reference("multi/app:1"),
    ]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    let s390x = built
        .images
        .iter()
        .find(|i| i.platform == "linux/s390x")
        .expect("s390x image");
    assert_eq!(e.inspect(&r)["Id"], s390x.config.as_str());
    let err = e.fail(&["pull", "--platform", "linux/riscv64", &r]);
    assert!(
        err.contains("no matching manifest for linux/riscv64"),
        "{err}"
    );
    if can_run() {
        e.ok(&["pull", &r]);
        assert_eq!(e.ok(&["run", "--rm", &r, "echo", "multi"]), "multi\n");
    }
}

#[test]
fn a_corrupted_blob_is_rejected() {
    let e = need!(setup());
    e.login();
    let built = e.push_built("bad", "bad/app:1", 2, 100_000, &[host_platform()], false);
    // Corrupt the second layer in the registry's storage (same size).
    let layer = &built.images[0].layers[1];
    let hex = layer.trim_start_matches("sha256:");
    let file = e.srv.data.join("blobs/sha256").join(&hex[..2]).join(hex);
    let mut bytes = std::fs::read(&file).expect("registry blob");
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&file, &bytes).expect("corrupting");
    let err = e.fail(&["pull", &e.reference("bad/app:1")]);
    assert!(err.contains(&format!("blob {layer}")), "{err}");
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!e.ok(&["images"]).contains("bad/app"));
    let blob = e.path("root/content/blobs/sha256").join(hex);
    assert!(!blob.exists(), "the corrupted blob was stored");
}

#[test]
fn push_then_skopeo_sees_the_same_manifest() {
    let e = need!(setup());
    // A local image from a rootfs tarball.
    let fs = e.path("fs");
    std::fs::create_dir_all(fs.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", fs.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", fs.join("bin/echo")).expect("symlink");
    let tar = e.path("rootfs.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&fs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    e.ok(&["image", "import", &tar.display().to_string(), "local/app:1"]);
    let r = e.reference("pushed/app:1");
    e.ok(&["tag", "local/app:1", &r]);

    let err = e.fail(&["push", &r]);
    assert!(err.contains("unauthorized"), "{err}");
    e.login();
    let out = e.ok(&["push", &r]);
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/pushed/app]",
            e.srv.addr
        )),
        "{out}"
    );
    assert_eq!(out.matches(": Pushed").count(), 2, "{out}");
    let local = e.inspect(&r);
    let digest = local["ManifestDigest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert!(
        out.contains(&format!("1: digest: {digest} size: ")),
        "{out}"
    );

    let raw = run_ok(&mut e.sk.cmd(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &Skopeo::creds(),
        &e.srv.docker_ref("pushed/app:1"),
    ]));
    assert_eq!(sha256_digest(raw.as_bytes()), digest);
    let v = e.sk.inspect(&e.srv.docker_ref("pushed/app:1"), false);
    assert_eq!(v["Digest"], digest.as_str());
    // Pushing again: every blob is already there.
    let out = e.ok(&["push", &r]);
    assert_eq!(out.matches("Layer already exists").count(), 2, "{out}");
    // Another repository of the registry: blobs mounted, not uploaded.
    let r2 = e.reference("pushed/other:1");
    e.ok(&["tag", &r, &r2]);
    let out = e.ok(&["push", &r2]);
    assert_eq!(out.matches("Mounted from pushed/app").count(), 2, "{out}");
    // And skopeo pulls it back intact.
    let dir = e.path("pulled");
    e.sk.pull(
        &e.srv.docker_ref("pushed/other:1"),
        &format!("dir:{}", dir.display()),
        &[],
    );
    let (config, _) = verify_dir_image(&dir, "manifest.json");
    assert_eq!(config, local["Id"].as_str().expect("id"));
}

#[test]
fn login_and_logout() {
    let e = need!(setup());
    let auth = e.path("auth.json");
    let err = e.fail(&["login", "-u", AKID, "-p", "wrong", &e.srv.addr]);
    assert!(err.contains("unauthorized"), "{err}");
    assert!(!auth.exists(), "a refused login wrote credentials");
    // --password-stdin
    let out = run_with_stdin(
        &mut e.berth(&["login", "-u", AKID, "--password-stdin", &e.srv.addr]),
        &format!("{SECRET}\n"),
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&auth)
        .expect("auth file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let v = json(&std::fs::read_to_string(&auth).expect("auth file"));
    assert!(v["auths"][e.srv.addr.as_str()]["auth"].is_string(), "{v}");

    // An ECR authorization token (AWS:<token>) works as a password too.
    let aws = need!(aws());
    let token = run_ok(
        aws_cmd(&aws, e.dir.path())
            .args(["ecr", "get-login-password", "--endpoint-url"])
            .arg(&e.srv.url),
    );
    let out = run_with_stdin(
        &mut e.berth(&["login", "-u", "AWS", "--password-stdin", &e.srv.addr]),
        &token,
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    e.push_built("li", "li/app:1", 1, 1000, &[host_platform()], false);
    e.ok(&["pull", &e.reference("li/app:1")]);

    let out = e.ok(&["logout", &e.srv.addr]);
    assert!(out.contains("Removing login credentials"), "{out}");
    let v = json(&std::fs::read_to_string(&auth).expect("auth file"));
    assert!(v["auths"].get(e.srv.addr.as_str()).is_none(), "{v}");
    let err = run_fail(&mut e.berth_in("root2", &["pull", &e.reference("li/app:1")]));
    assert!(err.contains("unauthorized"), "{err}");
    // docker's config.json is the fallback.
    let docker = e.path("home/.docker");
    std::fs::create_dir_all(&docker).expect("mkdir");
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            e.srv.addr,
            base64_encode(&format!("{AKID}:{SECRET}"))
        ),
    )
    .expect("docker config");
    run_ok(&mut e.berth_in("root2", &["pull", &e.reference("li/app:1")]));
}

fn base64_encode(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Debian's docker-registry (distribution 2.8) on a free port, anonymous, plain HTTP.
struct DockerRegistry {
    child: std::process::Child,
    addr: String,
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn docker_registry(dir: &Path) -> Option<DockerRegistry> {
    docker_registry_with(dir, "")
}

/// docker-registry with extra YAML (e.g. an `auth:` section).
fn docker_registry_with(dir: &Path, extra_yaml: &str) -> Option<DockerRegistry> {
    let bin = tool("docker-registry")?;
    for _ in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let cfg = dir.join("docker-registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{extra_yaml}",
                dir.join("docker-registry-data").display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.join("docker-registry.log")).expect("log");
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Some(DockerRegistry { child, addr });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "docker-registry did not start: {}",
        std::fs::read_to_string(dir.join("docker-registry.log")).unwrap_or_default()
    );
}

#[test]
fn pull_from_debian_docker_registry() {
    let e = need!(setup());
    let reg = need!(docker_registry(e.dir.path()));
    let layout = e.path("layout-dr");
    let built = build_busybox_image(&e.py, &layout, "t", 1, 50_000, &[host_platform()]);
    // Docker schema 2 on the wire, as docker pushes.
    run_ok(&mut e.sk.cmd(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &format!("oci:{}:t", layout.display()),
        &format!("docker://{}/dr/app:1", reg.addr),
    ]));
    let r = format!("{}/dr/app:1", reg.addr);
    let out = run_ok(&mut e.berth_in("docker", &["pull", &r]));
    assert!(out.contains("Downloaded newer image"), "{out}");
    let v = json(&run_ok(&mut e.berth_in("docker", &["inspect", &r])))[0].clone();
    assert_eq!(v["Id"], built.images[0].config.as_str());
    if can_run() {
        let out = run_ok(&mut e.berth_in("docker", &["run", "--rm", &r, "echo", "hi"]));
        assert_eq!(out, "hi\n");
    }
    // Push to it too, and pull back by digest.
    let r2 = format!("{}/dr/pushed:2", reg.addr);
    run_ok(&mut e.berth_in("docker", &["tag", &r, &r2]));
    let out = run_ok(&mut e.berth_in("docker", &["push", &r2]));
    assert!(out.contains("digest: sha256:"), "{out}");
    let digest = v["ManifestDigest"].as_str().expect("digest");
    let by_digest = format!("{}/dr/pushed@{digest}", reg.addr);
    let out = run_ok(&mut e.berth_in("root2", &["pull", "-q", &by_digest]));
    assert_eq!(out.trim(), by_digest);
}

/// Basic auth (htpasswd) instead of tokens: login, pull, push, and refusals.
#[test]
fn basic_auth_with_docker_registry() {
    let e = need!(setup());
    let hash = bcrypt::hash("alice-pw", 4).expect("bcrypt");
    let htpasswd = e.path("htpasswd");
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).expect("htpasswd");
    let reg = need!(docker_registry_with(
        e.dir.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
            htpasswd.display()
        )
    ));
    let layout = e.path("layout-basic");
    let built = build_image(&e.py, &layout, "t", 2, 10_000, &[host_platform()]);
    run_ok(&mut e.sk.cmd(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:alice-pw",
        &format!("oci:{}:t", layout.display()),
        &format!("docker://{}/basic/app:1", reg.addr),
    ]));
    let r = format!("{}/basic/app:1", reg.addr);
    let err = e.fail(&["pull", &r]);
    assert!(
        err.contains("unauthorized: authentication required") && err.contains("berth login"),
        "{err}"
    );
    let err = e.fail(&["login", "-u", "alice", "-p", "wrong", &reg.addr]);
    assert!(err.contains("unauthorized"), "{err}");
    e.ok(&["login", "-u", "alice", "-p", "alice-pw", &reg.addr]);
    e.ok(&["pull", &r]);
    assert_eq!(e.inspect(&r)["Id"], built.images[0].config.as_str());
    // A single-platform image is not silently taken for another platform.
    let err = e.fail(&["pull", "--platform", "linux/s390x", &r]);
    assert!(
        err.contains("does not match the specified platform"),
        "{err}"
    );
    let r2 = format!("{}/basic/copy:1", reg.addr);
    e.ok(&["tag", &r, &r2]);
    let out = e.ok(&["push", &r2]);
    assert!(out.contains(&format!("digest: {}", built.digest)), "{out}");
}

#[test]
fn save_load_round_trips_and_skopeo_reads_the_archives() {
    let e = need!(setup());
    e.login();
    let built = e.push_built("sv", "sv/app:1", 2, 30_000, &[host_platform()], true);
    let r = e.reference("sv/app:1");
    e.ok(&["pull", "-q", &r]);
    e.ok(&["tag", &r, "plain:latest"]);
    let id = e.inspect(&r)["Id"].as_str().expect("id").to_string();
    assert_eq!(id, built.images[0].config);
    for (format, transport) in [
        ("docker-archive", "docker-archive"),
        ("oci-archive", "oci-archive"),
    ] {
        let file = e.path(&format!("{format}.tar"));
        e.ok(&[
            "image",
            "save",
            "--format",
            format,
            "-o",
            &file.display().to_string(),
            &r,
            "plain",
        ]);
        // skopeo (containers/image, what podman uses) reads it.
        let src = if transport == "oci-archive" {
            format!("{transport}:{}:plain:latest", file.display())
        } else {
            format!("{transport}:{}", file.display())
        };
        let v = json(&run_ok(&mut e.sk.cmd(&["inspect", "--config", &src])));
        assert!(v["rootfs"]["diff_ids"].is_array(), "{format}: {v}");
        let out_dir = e.path(&format!("sk-{format}"));
        run_ok(
            &mut e
                .sk
                .cmd(&["copy", &src, &format!("dir:{}", out_dir.display())]),
        );
        let (config, _) = verify_dir_image(&out_dir, "manifest.json");
        assert_eq!(config, id, "{format}: skopeo sees another config");

        e.ok(&["rmi", &r, "plain"]);
        assert!(!e.ok(&["images"]).contains("sv/app"));
        let out = e.ok(&["load", "-i", &file.display().to_string()]);
        assert!(
            out.contains(&format!("Loaded image: {r}")),
            "{format}: {out}"
        );
        assert!(
            out.contains("Loaded image: plain:latest"),
            "{format}: {out}"
        );
        assert_eq!(e.inspect(&r)["Id"], id.as_str(), "{format}");
        assert_eq!(e.inspect("plain")["Id"], id.as_str(), "{format}");
    }
    // Archives written by skopeo (containers/image, what podman save uses) load too: its
    // docker-archive links layer.tar files to <digest>.tar, its oci-archive recompresses.
    for (i, transport) in ["docker-archive", "oci-archive"].iter().enumerate() {
        let file = e.path(&format!("skopeo-{transport}.tar"));
        let name = format!("example.com/from-skopeo:{i}");
        e.sk.pull(
            &e.srv.docker_ref("sv/app:1"),
            &format!("{transport}:{}:{name}", file.display()),
            &[],
        );
        let out = e.ok(&["load", "-i", &file.display().to_string()]);
        assert!(out.contains(&format!("Loaded image: {name}")), "{out}");
        assert_eq!(e.inspect(&name)["Id"], id.as_str(), "{transport}");
    }
    // stdin and stdout.
    let out = Command::new(berth_bin())
        .env("BERTH_ROOT", e.path("root"))
        .env("RUST_LOG", "error")
        .args(["save", &r])
        .output()
        .expect("save to stdout");
    assert!(out.status.success(), "{out:?}");
    let piped = e.path("piped.tar");
    std::fs::write(&piped, &out.stdout).expect("write");
    let mut c = e.berth_in("root2", &["load"]);
    c.stdin(std::fs::File::open(&piped).expect("open"));
    let out = c.output().expect("load from stdin");
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains(&format!("Loaded image: {r}")));
    if can_run() {
        let out = run_ok(&mut e.berth_in("root2", &["run", "--rm", &r, "echo", "loaded"]));
        assert_eq!(out, "loaded\n");
    }
}

#[test]
fn hostile_archive_is_refused() {
    let e = need!(setup());
    let py = e.py.clone();
    let bad = e.path("bad.tar");
    run_ok(Command::new(&py).arg("-c").arg(format!(
        r#"
import io, tarfile
with tarfile.open({bad:?}, "w") as t:
    for name, data in [("index.json", b'{{"schemaVersion":2,"manifests":[]}}'), ("oci-layout", b'{{}}'), ("../../escape", b"x")]:
        i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
"#,
        bad = bad.display().to_string()
    )));
    let err = e.fail(&["load", "-i", &bad.display().to_string()]);
    assert!(err.contains("escapes the archive"), "{err}");
    assert!(!e.path("escape").exists() && !Path::new("/escape").exists());
    let link = e.path("link.tar");
    run_ok(Command::new(&py).arg("-c").arg(format!(
        r#"
import tarfile
with tarfile.open({link:?}, "w") as t:
    i = tarfile.TarInfo("index.json"); i.type = tarfile.SYMTYPE; i.linkname = "/etc/passwd"; t.addfile(i)
"#,
        link = link.display().to_string()
    )));
    let err = e.fail(&["load", "-i", &link.display().to_string()]);
    assert!(err.contains("outside the archive"), "{err}");
    assert_eq!(e.ok(&["images", "-q"]), "");
}

/// Pull time of a 64 MiB image (4 layers of 16 MiB) by berth and by `skopeo copy` to a
/// directory, same registry, same run. Prints the figures; asserts only that both work.
#[test]
fn pull_time_against_skopeo() {
    let e = need!(setup());
    e.login();
    e.push_built("big", "big/app:1", 4, 16 << 20, &[host_platform()], false);
    let src = e.srv.docker_ref("big/app:1");
    let t = Instant::now();
    e.sk.pull(&src, &format!("dir:{}", e.path("sk-big").display()), &[]);
    let skopeo = t.elapsed();
    let t = Instant::now();
    e.ok(&["pull", "-q", &e.reference("big/app:1")]);
    let berth = t.elapsed();
    eprintln!(
        "pull of a 64 MiB image (4 x 16 MiB layers): berth {:.0} ms, skopeo copy to dir {:.0} ms (ratio {:.2})",
        berth.as_secs_f64() * 1e3,
        skopeo.as_secs_f64() * 1e3,
        berth.as_secs_f64() / skopeo.as_secs_f64()
    );
}
