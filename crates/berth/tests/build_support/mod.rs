//! Support of the build corpus tests (`e2e_build.rs`): the corpus cases, the base images
//! (busybox from Debian's busybox-static, Debian bookworm minbase from debootstrap), the
//! buildah reference builds, and berth commands with a private engine root.
//!
//! Both tools get their base images from the same bytes: the rootfs tar is imported into berth
//! (`berth image import`), saved (`berth save --format oci-archive`) and pulled into buildah
//! from that archive.

#![allow(dead_code)]

pub mod image;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `BERTH_REQUIRE_ROOT=1` (scripts/test): a missing prerequisite fails instead of skipping.
pub fn required() -> bool {
    std::env::var("BERTH_REQUIRE_ROOT").as_deref() == Ok("1")
}

/// Fails (under `BERTH_REQUIRE_ROOT=1`) or prints a skip notice; returns false to skip.
pub fn prerequisites() -> bool {
    let mut missing = vec![];
    if !is_root() {
        missing.push("root".to_string());
    }
    for tool in ["buildah", "runc", "debootstrap", "tar"] {
        if which(tool).is_none() {
            missing.push(tool.to_string());
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        missing.push("busybox-static (/bin/busybox)".into());
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !required(),
        "BERTH_REQUIRE_ROOT=1 but the build tests lack: {} (apt-get install buildah runc debootstrap busybox-static)",
        missing.join(", ")
    );
    eprintln!("SKIP: build tests need {}", missing.join(", "));
    false
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build_corpus")
}

pub fn bad_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build_corpus_bad")
}

/// Where the Debian rootfs tar is cached between runs (`BERTH_TEST_CACHE` overrides).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("BERTH_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("berth-build-cache"))
}

pub fn out_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        out_text(&out)
    );
    out
}

// ---- corpus ------------------------------------------------------------------------------------

/// One `build_corpus/<name>/` directory and its optional `case.json`.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    /// Dockerfile name in the context (`-f`), default `Dockerfile`.
    pub dockerfile: String,
    /// Dockerfile buildah builds instead (buildah 1.28 lacks heredocs); its history text is
    /// then not compared.
    pub reference_dockerfile: Option<String>,
    pub compare_history: bool,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// "busybox" or "debian": the base images the case needs (busybox is always there).
    pub base: String,
    /// Images built first with both tools (`-f dockerfile -t tag`, same context).
    pub prebuild: Vec<(String, String)>,
    /// `berth run --rm IMAGE` must print exactly this on stdout.
    pub run_stdout: Option<String>,
    /// Fields of the reference's normalized config replaced before comparing (documented,
    /// intended departures from buildah).
    pub reference_overrides: BTreeMap<String, Value>,
    /// `"hardlinks": [["a", "b"], ...]`: context files that must be hard links of each other
    /// (`b` is made a link of `a` when the case is loaded; git checkouts lose hard links).
    pub hardlinks: Vec<(String, String)>,
}

impl Case {
    pub fn load(name: &str) -> Case {
        let dir = corpus_dir().join(name);
        assert!(dir.is_dir(), "no corpus case {}", dir.display());
        let cj = dir.join("case.json");
        let v: Value = if cj.is_file() {
            serde_json::from_str(&std::fs::read_to_string(&cj).expect("case.json"))
                .unwrap_or_else(|e| panic!("{}: {e}", cj.display()))
        } else {
            Value::Object(Default::default())
        };
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let map = |k: &str| -> BTreeMap<String, Value> {
            v[k].as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        let case = Case {
            name: name.to_string(),
            dockerfile: s("dockerfile").unwrap_or_else(|| "Dockerfile".into()),
            reference_dockerfile: s("reference_dockerfile"),
            compare_history: v["compare_history"].as_bool().unwrap_or(true),
            build_args: map("build_args")
                .into_iter()
                .map(|(k, v)| (k, v.as_str().expect("build arg value").to_string()))
                .collect(),
            target: s("target"),
            base: s("base").unwrap_or_else(|| "busybox".into()),
            prebuild: v["prebuild"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            (
                                p["dockerfile"]
                                    .as_str()
                                    .expect("prebuild dockerfile")
                                    .into(),
                                p["tag"].as_str().expect("prebuild tag").into(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            run_stdout: v["run"]["stdout"].as_str().map(str::to_string),
            reference_overrides: map("reference_overrides"),
            hardlinks: v["hardlinks"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| {
                            Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            dir,
        };
        case.ensure_hardlinks();
        assert!(
            ["busybox", "debian"].contains(&case.base.as_str()),
            "{name}: unknown base {}",
            case.base
        );
        case
    }

    /// Makes the `hardlinks` pairs hard links (idempotent).
    fn ensure_hardlinks(&self) {
        use std::os::unix::fs::MetadataExt;
        for (a, b) in &self.hardlinks {
            let (pa, pb) = (self.dir.join(a), self.dir.join(b));
            let ino = |p: &Path| std::fs::metadata(p).map(|m| m.ino()).ok();
            if ino(&pa).is_some() && ino(&pa) == ino(&pb) {
                continue;
            }
            let tmp = self.dir.join(format!("{b}.link-tmp"));
            let _ = std::fs::remove_file(&tmp);
            std::fs::hard_link(&pa, &tmp).expect("hard link");
            std::fs::rename(&tmp, &pb).expect("rename the hard link");
        }
    }

    /// Every case directory, sorted.
    pub fn all() -> Vec<Case> {
        list_dirs(&corpus_dir())
            .iter()
            .map(|n| Case::load(n))
            .collect()
    }

    /// The tag both tools give the result.
    pub fn tag(&self) -> String {
        format!("corpus-{}:latest", self.name)
    }

    pub fn compare_options(&self) -> image::CompareOptions {
        image::CompareOptions {
            history_text: self.compare_history && self.reference_dockerfile.is_none(),
        }
    }

    /// `-f DF [--build-arg K=V]... [--target T]` (the flags berth and buildah share).
    pub fn build_flags(&self, dockerfile: &str) -> Vec<String> {
        let mut a = vec![
            "-f".to_string(),
            self.dir.join(dockerfile).display().to_string(),
        ];
        for (k, v) in &self.build_args {
            a.push("--build-arg".into());
            a.push(format!("{k}={v}"));
        }
        if let Some(t) = &self.target {
            a.push("--target".into());
            a.push(t.clone());
        }
        a
    }
}

pub fn list_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// One `build_corpus_bad/<name>/`: `Dockerfile` (or `expect.json`'s "dockerfile"), the
/// substrings the error must contain, build args.
#[derive(Debug, Clone)]
pub struct BadCase {
    pub name: String,
    pub dir: PathBuf,
    pub dockerfile: String,
    pub error_contains: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
}

impl BadCase {
    pub fn all() -> Vec<BadCase> {
        list_dirs(&bad_corpus_dir())
            .into_iter()
            .map(|name| {
                let dir = bad_corpus_dir().join(&name);
                let p = dir.join("expect.json");
                let v: Value =
                    serde_json::from_str(&std::fs::read_to_string(&p).expect("expect.json"))
                        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                BadCase {
                    dockerfile: v["dockerfile"].as_str().unwrap_or("Dockerfile").into(),
                    error_contains: v["error_contains"]
                        .as_array()
                        .expect("error_contains")
                        .iter()
                        .map(|s| s.as_str().expect("string").to_string())
                        .collect(),
                    build_args: v["build_args"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().expect("arg").into()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    target: v["target"].as_str().map(str::to_string),
                    name,
                    dir,
                }
            })
            .collect()
    }

    pub fn build_flags(&self) -> Vec<String> {
        let mut a = vec![
            "-f".to_string(),
            self.dir.join(&self.dockerfile).display().to_string(),
        ];
        for (k, v) in &self.build_args {
            a.push("--build-arg".into());
            a.push(format!("{k}={v}"));
        }
        if let Some(t) = &self.target {
            a.push("--target".into());
            a.push(t.clone());
        }
        a
    }

    /// The build context: `context/` when the case has one, else the case directory.
    pub fn context(&self) -> PathBuf {
        let c = self.dir.join("context");
        if c.is_dir() {
            c
        } else {
            self.dir.clone()
        }
    }
}

// ---- base root filesystems -------------------------------------------------------------------

/// A busybox rootfs like the official image's: /bin/busybox + one symlink per applet,
/// /etc/passwd, /etc/group, /etc/shadow (root, nobody), /root, /tmp (1777), /home, /var, /usr.
/// Fixed owners and mtimes, so the tar is the same on every run.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let fs = dir.join("busybox-rootfs");
    for d in [
        "bin", "etc", "tmp", "root", "home", "var", "usr/bin", "usr/sbin",
    ] {
        std::fs::create_dir_all(fs.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", fs.join("bin/busybox")).expect("copy busybox");
    let list = run_ok(Command::new("/bin/busybox").arg("--list"));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", fs.join("bin").join(applet)).expect("symlink");
        }
    }
    let w = |p: &str, s: &str| std::fs::write(fs.join(p), s).expect("write");
    w(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    );
    w("etc/group", "root:x:0:\nnogroup:x:65534:\n");
    w(
        "etc/shadow",
        "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
    );
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &str, m: u32| {
        std::fs::set_permissions(fs.join(p), std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    chmod("tmp", 0o1777);
    chmod("root", 0o700);
    chmod("etc/shadow", 0o640);
    let tar = dir.join("busybox-rootfs.tar");
    run_ok(
        Command::new("tar")
            .args([
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "--mtime=@1700000000",
            ])
            .arg("-C")
            .arg(&fs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    tar
}

/// The apt mirror this machine uses (first `deb.debian.org`-like URI for bookworm in
/// /etc/apt/sources.list(.d)), or `BERTH_DEBIAN_MIRROR`.
pub fn debian_mirror() -> String {
    if let Ok(m) = std::env::var("BERTH_DEBIAN_MIRROR") {
        return m;
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        v.sort();
        files.extend(v);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        // deb822: "URIs: X" + "Suites: bookworm ..."; one-line: "deb [opts] X bookworm main".
        let mut uri: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(u) = line.strip_prefix("URIs:") {
                uri = Some(u.trim().to_string());
            } else if let Some(s) = line.strip_prefix("Suites:") {
                if let Some(u) = &uri {
                    if s.split_whitespace().any(|s| s == "bookworm") && !u.contains("security") {
                        return u.clone();
                    }
                }
            } else if line.is_empty() {
                uri = None;
            } else if let Some(rest) = line.strip_prefix("deb ") {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with('['))
                    .collect();
                if words.len() >= 2
                    && words[1] == "bookworm"
                    && words[0].contains("debian")
                    && !words[0].contains("security")
                {
                    return words[0].to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// Debian bookworm minbase (debootstrap) as a rootfs tar: cached in [`cache_dir`]; made once
/// under an exclusive lock (several test processes may ask at the same time).
pub fn debian_rootfs_tar() -> PathBuf {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).expect("cache dir");
    let tar = cache.join("debian-bookworm-minbase.tar");
    let lock_file = std::fs::File::create(cache.join("debian.lock")).expect("lock file");
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock");
    if tar.is_file() {
        return tar;
    }
    let work = tempfile::Builder::new()
        .prefix("berth-debootstrap-")
        .tempdir_in(&cache)
        .expect("tempdir");
    let rootfs = work.path().join("rootfs");
    let mirror = debian_mirror();
    let t = std::time::Instant::now();
    run_ok(
        Command::new(which("debootstrap").expect("debootstrap"))
            .args(["--variant=minbase", "bookworm"])
            .arg(&rootfs)
            .arg(&mirror),
    );
    eprintln!("debootstrap bookworm from {mirror}: {:.0?}", t.elapsed());
    // Host-specific files debootstrap copies in, and caches an image does not ship.
    for f in ["etc/resolv.conf", "etc/hostname"] {
        let _ = std::fs::remove_file(rootfs.join(f));
    }
    let part = cache.join("debian-bookworm-minbase.tar.part");
    run_ok(
        Command::new("tar")
            .arg("--numeric-owner")
            .args([
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "--exclude=./run/*",
                "--exclude=./tmp/*",
                "--exclude=./var/cache/apt/*.bin",
                "--exclude=./var/lib/apt/lists/*",
                "--exclude=./var/log/*",
                "--exclude=./debootstrap",
            ])
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&part)
            .arg("."),
    );
    std::fs::rename(&part, &tar).expect("rename the rootfs tar into the cache");
    tar
}

// ---- berth ---------------------------------------------------------------------------------------

/// A private berth engine root (removed, with its mounts and daemons, on drop).
pub struct Berth {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub tmp: PathBuf,
}

impl Berth {
    pub fn new(prefix: &str) -> Berth {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("mkdir");
        Berth {
            root: dir.path().join("root"),
            tmp,
            _dir: dir,
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.env("BERTH_ROOT", &self.root)
            .env("BERTH_NETWORK", "none")
            .env("RUST_LOG", "error")
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawning berth")
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        out_text(&run_ok(&mut self.cmd(args)))
    }

    /// `berth build -t TAG FLAGS... CONTEXT` (stdout+stderr, success or not).
    pub fn build(&self, tag: &str, flags: &[String], context: &Path) -> Output {
        let mut c = self.cmd(&["build", "-t", tag]);
        c.args(flags).arg(context);
        c.output().expect("spawning berth build")
    }

    /// `berth save --format oci-archive -o FILE NAME` → FILE.
    pub fn save(&self, name: &str) -> PathBuf {
        let file = self
            .tmp
            .join(format!("{}.oci.tar", name.replace(['/', ':'], "_")));
        let f = file.to_str().expect("utf-8 path");
        self.ok(&["save", "--format", "oci-archive", "-o", f, name]);
        file
    }

    /// `berth image import TAR NAME --change CMD` (the base images).
    pub fn import(&self, tar: &Path, name: &str, cmd: &str) {
        self.ok(&[
            "image",
            "import",
            "--change",
            &format!("CMD {cmd}"),
            tar.to_str().expect("utf-8 path"),
            name,
        ]);
    }

    /// (repository:tag, image id) of every row of `berth images`.
    pub fn images(&self) -> Vec<(String, String)> {
        self.ok(&["images"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() >= 3).then(|| (format!("{}:{}", w[0], w[1]), w[2].to_string()))
            })
            .collect()
    }

    /// The image id `berth images` shows for `name` (`repo:tag`).
    pub fn image_id(&self, name: &str) -> Option<String> {
        let want = if name.contains(':') {
            name.to_string()
        } else {
            format!("{name}:latest")
        };
        self.images()
            .into_iter()
            .find(|(n, _)| *n == want || n.ends_with(&format!("/{want}")))
            .map(|(_, id)| id)
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if let Ok(out) = self.cmd(&["ps", "-a", "-q", "--no-trunc"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.cmd(&["rm", "-f", id]).output();
            }
        }
        umount_under(&self.root);
    }
}

/// Unmounts (lazily) everything mounted under `dir`, deepest first.
pub fn umount_under(dir: &Path) {
    let d = dir.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&d))
        .map(str::to_string)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
}

// ---- buildah ---------------------------------------------------------------------------------------

/// buildah 1.28 (Debian 12) with private storage under a temporary directory.
///
/// Host pitfalls (see BUILDAH-NOTES.md): no systemd → `cgroup_manager = "cgroupfs"`; crun 1.8
/// refuses hybrid cgroup hosts → `--runtime runc`; `--isolation chroot` cannot do
/// `--network none`, so the default OCI isolation with runc is used.
pub struct Buildah {
    dir: tempfile::TempDir,
}

impl Buildah {
    pub fn new() -> Buildah {
        let dir = tempfile::Builder::new()
            .prefix("berth-buildah-")
            .tempdir()
            .expect("tempdir");
        for d in ["root", "run", "tmp"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let hard = run_ok(Command::new("sh").args(["-c", "ulimit -Hn"]));
        let hard = String::from_utf8_lossy(&hard.stdout).trim().to_string();
        std::fs::write(
            dir.path().join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile={hard}:{hard}\"]\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{}/events.log\"\n",
                dir.path().display()
            ),
        )
        .expect("containers.conf");
        std::fs::write(
            dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
                dir.path().display()
            ),
        )
        .expect("storage.conf");
        Buildah { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        let d = self.dir.path();
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("TMPDIR", d.join("tmp"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "overlay"]);
        c
    }

    /// `buildah pull oci-archive:FILE` then tag it `docker.io/library/NAME:latest`.
    pub fn import_archive(&self, archive: &Path, name: &str) {
        let out = run_ok(
            self.cmd()
                .args(["pull", "-q"])
                .arg(format!("oci-archive:{}", archive.display())),
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        run_ok(
            self.cmd()
                .args(["tag", &id, &format!("docker.io/library/{name}:latest")]),
        );
    }

    /// `buildah bud --layers --format docker --network none --pull=never --runtime runc`.
    pub fn bud(&self, tag: &str, flags: &[String], context: &Path) -> Output {
        self.cmd()
            .args(["bud", "--layers", "--format", "docker", "--network", "none"])
            .args(["--pull=never", "--runtime", "runc", "-t", tag])
            .args(flags)
            .arg(context)
            .output()
            .expect("spawning buildah bud")
    }

    /// `buildah push NAME dir:OUT` (keeps the Docker config: Healthcheck, OnBuild, Shell).
    pub fn push_dir(&self, name: &str, out: &Path) {
        let _ = std::fs::remove_dir_all(out);
        run_ok(
            self.cmd()
                .args(["push", "-q", name])
                .arg(format!("dir:{}", out.display())),
        );
    }

    /// `buildah push NAME oci-archive:FILE` (OCI config: what `berth load` reads).
    pub fn push_oci_archive(&self, name: &str, file: &Path) {
        let _ = std::fs::remove_file(file);
        run_ok(
            self.cmd()
                .args(["push", "-q", name])
                .arg(format!("oci-archive:{}", file.display())),
        );
    }
}

impl Default for Buildah {
    fn default() -> Self {
        Buildah::new()
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-a"]).output();
        let _ = self.cmd().args(["rmi", "-a", "-f"]).output();
        umount_under(self.dir.path());
    }
}

// ---- the harness -------------------------------------------------------------------------------------

/// Bumped when what the reference cache holds changes meaning.
const REF_CACHE_SCHEMA: &str = "refs-v1";

/// One test's engine root and (lazily) buildah storage, both holding the base images; the
/// reference builds are cached on disk (`cache_dir()/refs/<key>`, a `buildah push dir:`
/// export) keyed by the case's files, the base images and the buildah version, so a second
/// run (or a second test of the same run) does not rebuild them. Everything else is removed
/// when the harness is dropped.
pub struct Harness {
    pub berth: Berth,
    buildah: OnceLock<Buildah>,
    /// Scratch files (rootfs tars, exports).
    pub work: tempfile::TempDir,
    /// base name → (rootfs tar, CMD, cache key part) for the bases imported into berth.
    bases: Mutex<BTreeMap<String, (PathBuf, String, String)>>,
    /// Bases (and prebuilt tags) present in the buildah storage.
    in_buildah: Mutex<std::collections::BTreeSet<String>>,
}

impl Harness {
    /// A harness with the busybox base imported into berth.
    pub fn new() -> Harness {
        let work = tempfile::Builder::new()
            .prefix("berth-build-corpus-")
            .tempdir()
            .expect("tempdir");
        let h = Harness {
            berth: Berth::new("berth-build-root-"),
            buildah: OnceLock::new(),
            work,
            bases: Mutex::new(BTreeMap::new()),
            in_buildah: Mutex::new(Default::default()),
        };
        h.ensure_base("busybox");
        h
    }

    /// Imports `base` ("busybox" or "debian") into berth if not done yet.
    pub fn ensure_base(&self, base: &str) {
        let mut bases = self.bases.lock().unwrap_or_else(|e| e.into_inner());
        if bases.contains_key(base) {
            return;
        }
        let (tar, cmd) = match base {
            "busybox" => (busybox_rootfs_tar(self.work.path()), r#"["sh"]"#),
            "debian" => (debian_rootfs_tar(), r#"["bash"]"#),
            other => panic!("unknown base {other}"),
        };
        self.berth.import(&tar, base, cmd);
        let saved = image::load(&self.berth.save(base)).expect("reading berth's saved base");
        let key = format!(
            "{base} {} {}",
            sha256_file(&tar),
            sha256_hex(image::dump_config(&saved).as_bytes())
        );
        bases.insert(base.to_string(), (tar, cmd.to_string(), key));
    }

    /// The buildah storage, with every base berth has (same bytes: `berth save` → pull).
    pub fn buildah(&self) -> &Buildah {
        let b = self.buildah.get_or_init(Buildah::new);
        let bases = self.bases.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut have = self.in_buildah.lock().unwrap_or_else(|e| e.into_inner());
        for name in bases.keys() {
            if have.insert(name.clone()) {
                b.import_archive(&self.berth.save(name), name);
            }
        }
        b
    }

    fn ref_key(&self, case: &Case) -> String {
        let bases = self.bases.lock().unwrap_or_else(|e| e.into_inner());
        let mut h = format!("{REF_CACHE_SCHEMA}\n{}\n", buildah_version());
        for (_, _, k) in bases.values().filter(|(_, _, k)| {
            k.starts_with("busybox ") || k.starts_with(&format!("{} ", case.base))
        }) {
            h.push_str(k);
            h.push('\n');
        }
        h.push_str(&tree_fingerprint(&case.dir));
        sha256_hex(h.as_bytes())
    }

    /// buildah's build of `case`, exported with `buildah push dir:` (from the cache when the
    /// case, its bases and buildah are unchanged). Err: buildah's output.
    pub fn reference(&self, case: &Case) -> Result<PathBuf, String> {
        self.ensure_base(&case.base);
        let refs = cache_dir().join("refs");
        std::fs::create_dir_all(&refs).expect("cache dir");
        let key = self.ref_key(case);
        let dest = refs.join(format!("{}-{}", case.name, &key[..16]));
        let lock_file =
            std::fs::File::create(refs.join(format!("{}.lock", case.name))).expect("lock file");
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("flock");
        if dest.join("manifest.json").is_file() {
            return Ok(dest);
        }
        let b = self.buildah();
        for (df, tag) in &case.prebuild {
            let mut have = self.in_buildah.lock().unwrap_or_else(|e| e.into_inner());
            if have.contains(tag) {
                continue;
            }
            let flags = vec!["-f".to_string(), case.dir.join(df).display().to_string()];
            let out = b.bud(tag, &flags, &case.dir);
            if !out.status.success() {
                return Err(format!("buildah prebuild {tag}:\n{}", out_text(&out)));
            }
            have.insert(tag.clone());
        }
        let df = case
            .reference_dockerfile
            .as_deref()
            .unwrap_or(&case.dockerfile);
        let tag = format!("ref-{}", case.tag());
        let out = b.bud(&tag, &case.build_flags(df), &case.dir);
        if !out.status.success() {
            return Err(format!("buildah bud {}:\n{}", case.name, out_text(&out)));
        }
        let part = refs.join(format!("{}-{}.part", case.name, &key[..16]));
        b.push_dir(&tag, &part);
        // Older references of this case are stale.
        if let Ok(rd) = std::fs::read_dir(&refs) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!("{}-", case.name))
                    && e.path() != part
                    && e.path().is_dir()
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        std::fs::rename(&part, &dest).expect("rename the reference into the cache");
        Ok(dest)
    }

    /// Prebuilds of `case` with berth (same tags as buildah's).
    pub fn berth_prebuild(&self, case: &Case) -> Result<(), String> {
        self.ensure_base(&case.base);
        for (df, tag) in &case.prebuild {
            let flags = vec!["-f".to_string(), case.dir.join(df).display().to_string()];
            let out = self.berth.build(tag, &flags, &case.dir);
            if !out.status.success() {
                return Err(format!("berth build (prebuild {tag}):\n{}", out_text(&out)));
            }
        }
        Ok(())
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

pub fn buildah_version() -> String {
    Command::new("buildah")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A fingerprint of every file under `dir`: relative path, type, permissions, content.
pub fn tree_fingerprint(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut lines = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).expect("prefix").display().to_string();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap_or_default();
                lines.push(format!("{rel} l {}", t.display()));
            } else if md.is_dir() {
                lines.push(format!("{rel} d {mode:o}"));
                stack.push(p);
            } else {
                let b = std::fs::read(&p).unwrap_or_default();
                // Hard links matter to the build (git does not keep them: see
                // `Case::ensure_hardlinks`).
                use std::os::unix::fs::MetadataExt;
                let links = if md.nlink() > 1 {
                    format!(" nlink {}", md.nlink())
                } else {
                    String::new()
                };
                lines.push(format!("{rel} f {mode:o} {}{links}", sha256_hex(&b)));
            }
        }
    }
    lines.sort();
    lines.join("\n")
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(b))
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest as _, Sha256};
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hashing");
    hex::encode(h.finalize())
}
