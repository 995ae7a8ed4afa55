//! `berth image import` / `run` / `ps` / `logs` / `stop` / `kill` / `rm` / `inspect` / `rmi`
//! with real containers (root only). Each test has its own engine root and image, runs in
//! parallel with the others, and removes its containers and mounts in `Drop`, even on failure.
//! Without root: skipped with a notice, or failed when `BERTH_REQUIRE_ROOT=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const APPLETS: &[&str] = &[
    "sh", "true", "false", "echo", "sleep", "cat", "id", "hostname", "ls", "head", "tail", "dd",
    "env", "pwd", "grep", "tty", "httpd", "wget", "mkdir", "touch", "test",
];

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

/// A private engine root with a busybox image `bb:1`.
struct Env {
    /// Removed (with the engine root) when the test ends.
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    fn new() -> Option<Env> {
        if !is_root() {
            assert!(
                std::env::var("BERTH_REQUIRE_ROOT").as_deref() != Ok("1"),
                "engine tests need root (BERTH_REQUIRE_ROOT=1)"
            );
            eprintln!("skipping: engine tests need root");
            return None;
        }
        assert!(
            Path::new("/bin/busybox").exists(),
            "busybox-static is not installed"
        );
        let dir = tempfile::Builder::new()
            .prefix("berth-engine-test-")
            .tempdir()
            .expect("tempdir");
        let tar = common::busybox_rootfs_tar(dir.path(), APPLETS, &[]);
        let env = Env {
            root: dir.path().join("root"),
            _dir: dir,
        };
        let out = env
            .berth(&["image", "import", "--change", r#"CMD ["/bin/sh"]"#])
            .arg(&tar)
            .arg("bb:1")
            .output()
            .expect("import");
        assert_ok(&out);
        Some(env)
    }

    fn berth(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        // Tests that do not name a network stay off bridges (no netd, no veths).
        c.env("BERTH_ROOT", &self.root)
            .env("BERTH_NETWORK", "none")
            .env("RUST_LOG", "error")
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.berth(args).output().expect("run berth")
    }

    fn stdout(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_ok(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn mounts_under_root(&self) -> Vec<String> {
        let root = self.root.display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .map(str::to_string)
            .collect()
    }

    fn container_dirs(&self) -> usize {
        std::fs::read_dir(self.root.join("containers"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn inspect(&self, what: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.stdout(&["inspect", what])).expect("inspect json");
        v[0].clone()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(out) = self.berth(&["ps", "-a", "-q", "--no-trunc"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.berth(&["rm", "-f", id]).output();
            }
        }
        if let Ok(out) = self.berth(&["network", "ls", "-q"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            for id in ids {
                let _ = self.berth(&["network", "rm", &id]).output();
            }
        }
        // The test root's network daemon (it would exit by itself after a minute idle).
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(format!("netd --root {}/netd", self.root.display()))
            .status();
        for m in self.mounts_under_root() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "berth failed ({:?}): stdout {:?} stderr {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_exit_codes_output_and_failed_start() {
    let Some(env) = Env::new() else { return };
    let out = env.run(&["run", "--rm", "bb:1", "/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(env.container_dirs(), 0, "--rm removes the container");

    let out = env.run(&["run", "--rm", "bb:1", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    let out = env.run(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));

    // A missing binary: a clear error, 127, nothing left behind.
    let out = env.run(&["run", "--rm", "bb:1", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent"));
    assert!(
        env.mounts_under_root().is_empty(),
        "{:?}",
        env.mounts_under_root()
    );
    assert_eq!(env.container_dirs(), 0);

    // Without --rm the exited container stays listed.
    let out = env.run(&["run", "--name", "three", "bb:1", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let ps = env.stdout(&["ps", "-a"]);
    assert!(ps.contains("Exited (3)") && ps.contains("three"), "{ps}");
    assert!(!env.stdout(&["ps"]).contains("three"));
    let out = env.run(&["run", "--name", "three", "bb:1", "true"]);
    assert!(!out.status.success(), "duplicate names are refused");
    assert_ok(&env.run(&["rm", "three"]));
    assert!(env.mounts_under_root().is_empty());
}

#[test]
fn run_flags_take_effect() {
    let Some(env) = Env::new() else { return };
    let out = env.stdout(&["run", "--rm", "-e", "FOO=bar", "bb:1", "env"]);
    assert!(out.lines().any(|l| l == "FOO=bar"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("PATH=")), "{out}");
    assert_eq!(
        env.stdout(&["run", "--rm", "-w", "/tmp/new", "bb:1", "pwd"]),
        "/tmp/new\n"
    );
    assert_eq!(
        env.stdout(&["run", "--rm", "--user", "1000", "bb:1", "id", "-u"]),
        "1000\n"
    );
    assert_eq!(
        env.stdout(&["run", "--rm", "--hostname", "boat", "bb:1", "hostname"]),
        "boat\n"
    );
    // The image's CMD (from --change) and --entrypoint.
    assert_eq!(
        env.stdout(&["run", "--rm", "--entrypoint", "/bin/echo", "bb:1", "hi"]),
        "hi\n"
    );
    let out = env.stdout(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb:1",
        "cat",
        "/proc/net/dev",
    ]);
    assert!(!out.contains("eth0"), "{out}");
    let out = env.stdout(&[
        "run",
        "--rm",
        "--pids-limit",
        "50",
        "--cpus",
        "0.5",
        "bb:1",
        "true",
    ]);
    assert_eq!(out, "");
}

#[test]
fn detached_ps_logs_stop_rm() {
    let Some(env) = Env::new() else { return };
    let id = env.stdout(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "bb:1",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo started; while true; do sleep 0.1; done",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ps = env.stdout(&["ps"]);
    assert!(
        ps.contains(&id[..12]) && ps.contains("Up") && ps.contains("sleeper"),
        "{ps}"
    );
    // `berth run` forked the shim from its zygote: named `berth-shim`, carrying the command
    // line of the `berth run` that started it (a re-executed shim's is `berth shim --id ..`).
    let shim_state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            env.root
                .join("containers")
                .join(&id)
                .join("state/state.json"),
        )
        .expect("shim state"),
    )
    .expect("shim state json");
    let shim_pid = shim_state["shimPid"].as_i64().expect("shim_pid");
    let comm = std::fs::read_to_string(format!("/proc/{shim_pid}/comm")).expect("comm");
    assert_eq!(comm.trim(), "berth-shim");
    let cmdline = std::fs::read(format!("/proc/{shim_pid}/cmdline")).expect("cmdline");
    let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(
        argv.get(1),
        Some(&&b"run"[..]),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = env.stdout(&["logs", "sleeper"]);
        if logs.contains("started") {
            break;
        }
        assert!(Instant::now() < deadline, "no output in logs: {logs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ts = env.stdout(&["logs", "--timestamps", &id[..12]]);
    assert!(ts.starts_with("20") && ts.contains(" started"), "{ts}");
    let state = env.inspect("sleeper");
    assert_eq!(state["State"]["Running"], true);
    assert!(state["State"]["Pid"].as_i64().unwrap_or(0) > 1);
    assert!(state["State"]["StartedAt"]
        .as_str()
        .unwrap_or("")
        .starts_with("20"));

    let out = env.run(&["rm", "sleeper"]);
    assert!(!out.status.success(), "rm refuses a running container");

    let t = Instant::now();
    assert_ok(&env.run(&["stop", "-t", "20", "sleeper"]));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    let state = env.inspect(&id);
    assert_eq!(state["State"]["Status"], "exited");
    assert_eq!(state["State"]["ExitCode"], 0);
    assert!(env.stdout(&["logs", "sleeper"]).contains("bye"));
    assert!(env.stdout(&["ps", "-a"]).contains("Exited (0)"));

    assert_ok(&env.run(&["rm", "sleeper"]));
    assert!(
        env.mounts_under_root().is_empty(),
        "{:?}",
        env.mounts_under_root()
    );
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/berth/{id}")).exists());
    assert!(!Path::new(&format!("/sys/fs/cgroup/berth/{id}")).exists());
    assert_eq!(env.container_dirs(), 0);

    // `-d --rm`: the shim removes the container (and its anonymous volume) once it exited.
    let id = env.stdout(&[
        "run",
        "-d",
        "--rm",
        "-v",
        "/data",
        "bb:1",
        "sh",
        "-c",
        "sleep 0.3",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert!(env.stdout(&["ps"]).contains(&id[..12]));
    let deadline = Instant::now() + Duration::from_secs(15);
    while env.stdout(&["ps", "-a", "-q"]).contains(&id[..12]) {
        assert!(Instant::now() < deadline, "-d --rm container not removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(env.container_dirs(), 0);
    assert!(env.mounts_under_root().is_empty());
    assert!(
        env.stdout(&["volume", "ls", "-q"]).trim().is_empty(),
        "anonymous volume left"
    );
}

#[test]
fn kill_and_force_remove() {
    let Some(env) = Env::new() else { return };
    let id = env.stdout(&["run", "-d", "bb:1", "sleep", "1000"]);
    let id = id.trim();
    assert_ok(&env.run(&["kill", "-s", "TERM", id]));
    let deadline = Instant::now() + Duration::from_secs(10);
    // PID 1 without a handler ignores TERM: still running.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(env.inspect(id)["State"]["Running"], true);
    assert_ok(&env.run(&["rm", "-f", id]));
    assert!(Instant::now() < deadline);
    assert!(env.mounts_under_root().is_empty());
    assert_eq!(env.container_dirs(), 0);
}

#[test]
fn foreground_run_forwards_signals_and_removes() {
    let Some(env) = Env::new() else { return };
    let mut child = Reap(
        env.berth(&[
            "run",
            "--rm",
            "bb:1",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn"),
    );
    let mut stdout = std::io::BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("read");
    assert_eq!(line, "ready\n");
    let st = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .expect("kill");
    assert!(st.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read");
    assert_eq!(rest, "got-term\n");
    // The child handle was consumed for stdout; wait until the container is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.container_dirs() > 0 {
        assert!(
            Instant::now() < deadline,
            "--rm did not remove the container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(env.mounts_under_root().is_empty());
}

#[test]
fn memory_hog_is_oom_killed() {
    let Some(env) = Env::new() else { return };
    let out = env.run(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        "bb:1",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=256M",
        "count=1",
    ]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    let state = env.inspect("hog");
    assert_eq!(state["State"]["OOMKilled"], true, "{state}");
    assert_eq!(state["State"]["ExitCode"], 137);
    assert_eq!(state["HostConfig"]["Memory"], 32 << 20);
    assert_ok(&env.run(&["rm", "hog"]));
}

#[test]
fn images_and_rmi() {
    let Some(env) = Env::new() else { return };
    let images = env.stdout(&["images"]);
    assert!(images.starts_with("REPOSITORY"), "{images}");
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("bb ") && l.contains(" 1 ")),
        "{images}"
    );
    let img = env.inspect("bb:1");
    assert_eq!(img["Config"]["Cmd"][0], "/bin/sh");
    assert_eq!(img["Os"], "linux");

    assert_ok(&env.run(&["run", "--name", "user", "bb:1", "true"]));
    let out = env.run(&["rmi", "bb:1"]);
    assert!(
        !out.status.success(),
        "rmi refuses an image a container uses"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("being used"));
    assert_ok(&env.run(&["rm", "user"]));
    let out = env.stdout(&["rmi", "bb:1"]);
    assert!(
        out.contains("Untagged: bb:1") && out.contains("Deleted: sha256:"),
        "{out}"
    );
    assert_eq!(env.stdout(&["images", "-q"]), "");
    let blobs = std::fs::read_dir(env.root.join("content/blobs/sha256"))
        .expect("blobs")
        .count();
    assert_eq!(blobs, 0);
    let out = env.run(&["run", "--rm", "bb:1", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such image"));
}

/// Kills and reaps a spawned `berth` if a test fails before waiting for it.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exec_joins_the_running_container() {
    let Some(env) = Env::new() else { return };
    let id = env.stdout(&[
        "run", "-d", "--name", "box", "-e", "FOO=bar", "-w", "/tmp", "bb:1", "sleep", "1000",
    ]);
    let id = id.trim().to_string();

    let out = env.stdout(&[
        "exec",
        "box",
        "sh",
        "-c",
        "echo $FOO; pwd; hostname; cat /proc/1/cmdline; echo; grep CapEff /proc/self/status",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "bar", "{out}");
    assert_eq!(lines[1], "/tmp", "{out}");
    assert_eq!(lines[2], &id[..12], "same UTS namespace: {out}");
    assert!(lines[3].starts_with("sleep"), "same pid namespace: {out}");
    assert!(
        lines[4].ends_with("00000000a80425fb"),
        "Docker's caps: {out}"
    );

    let out = env.run(&["exec", "box", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        env.stdout(&["exec", "-e", "FOO=baz", "box", "sh", "-c", "echo $FOO"]),
        "baz\n"
    );
    assert_eq!(
        env.stdout(&[
            "exec",
            "-u",
            "1000:1001",
            "-w",
            "/",
            "box",
            "sh",
            "-c",
            "id; pwd"
        ]),
        "uid=1000 gid=1001 groups=1001\n/\n"
    );
    let out = env.run(&["exec", "box", "/no/such/binary"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("berth:"),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.run(&["exec", "-w", "/missing", "box", "true"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{out:?}"
    );

    // stdin: connected with -i, /dev/null without.
    let mut child = env
        .berth(&["exec", "-i", "box", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello through stdin\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello through stdin\n"
    );
    let out = env
        .berth(&["exec", "box", "cat"])
        .stdin(std::process::Stdio::piped())
        .output()
        .expect("exec");
    assert_ok(&out);
    assert!(out.stdout.is_empty());

    // -t: a pty inside the container; `script` gives berth a terminal of its own.
    let cmd = format!(
        "BERTH_ROOT={} {} exec -it box sh -c 'tty; echo $TERM; exit 3'",
        env.root.display(),
        env!("CARGO_BIN_EXE_berth")
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .output()
        .expect("script (bsdutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("xterm"), "{text:?}");
    assert_eq!(out.status.code(), Some(3), "{text:?}");

    let exec_dir = env.root.join("containers").join(&id).join("exec");
    let left = std::fs::read_dir(&exec_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "exec directories left in {}", exec_dir.display());

    assert_ok(&env.run(&["kill", "box"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.inspect("box")["State"]["Running"] == true {
        assert!(Instant::now() < deadline, "box did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = env.run(&["exec", "box", "true"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{out:?}"
    );
}

fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "2", url])
        .output()
        .expect("curl is installed");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn links() -> String {
    let out = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bridge_network_dns_published_port_and_cleanup() {
    let Some(env) = Env::new() else { return };
    let net = format!("tn{:08x}", rand_u32());
    let net_id = env.stdout(&["network", "create", &net]).trim().to_string();
    assert_eq!(net_id.len(), 64);
    let bridge = format!("br-{}", &net_id[..12]);
    assert!(env.stdout(&["network", "ls"]).contains(&net));

    let web = env.stdout(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        &net,
        "-p",
        "127.0.0.1::80",
        "bb:1",
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    let web = web.trim().to_string();
    let info = env.inspect("web");
    let ip = info["NetworkSettings"]["IPAddress"]
        .as_str()
        .expect("ip")
        .to_string();
    let port = info["HostConfig"]["PortBindings"][0]["HostPort"]
        .as_str()
        .expect("host port")
        .to_string();
    assert_ne!(port, "0");
    assert!(links().contains(&bridge), "bridge {bridge} exists");

    // The published port, from the host, through the proxy.
    let url = format!("http://127.0.0.1:{port}/index.html");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        if let Some(b) = curl(&url) {
            break b;
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(body, "hello-from-web\n");

    // Another container on the network reaches it by name (embedded DNS) and by IP.
    let probe =
        "for i in $(seq 50); do wget -qO- http://web/index.html && break; sleep 0.1; done; \
                 wget -qO- http://$WEB_IP/index.html; cat /etc/resolv.conf";
    let out = env.stdout(&[
        "run",
        "--rm",
        "--network",
        &net,
        "-e",
        &format!("WEB_IP={ip}"),
        "bb:1",
        "sh",
        "-c",
        probe,
    ]);
    assert!(
        out.starts_with("hello-from-web\nhello-from-web\n"),
        "by name and by IP: {out}"
    );
    assert!(out.contains("nameserver "), "{out}");
    // --network none has no route to it.
    let out = env.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb:1",
        "wget",
        "-T",
        "1",
        "-qO-",
        &format!("http://{ip}/index.html"),
    ]);
    assert!(!out.status.success());

    // A second container cannot take the same host port.
    let out = env.run(&[
        "run",
        "-d",
        "--network",
        &net,
        "-p",
        &format!("127.0.0.1:{port}:80"),
        "bb:1",
        "sleep",
        "5",
    ]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already allocated"),
        "{out:?}"
    );

    // stop releases the address, the veth, the namespace and the port.
    assert_ok(&env.run(&["stop", "-t", "1", "web"]));
    assert!(curl(&url).is_none(), "port still served after stop");
    let netns = env.root.join("containers").join(&web).join("netns");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .contains(&netns.display().to_string());
    assert!(!mounted, "netns still mounted");
    assert_ok(&env.run(&["rm", "web"]));

    // A container that exits on its own gives its address and namespace back (the shim's
    // on-exit hook), without stop or rm.
    let short = env.stdout(&[
        "run",
        "-d",
        "--network",
        &net,
        "bb:1",
        "sh",
        "-c",
        "sleep 0.3",
    ]);
    let short = short.trim().to_string();
    let netns = env.root.join("containers").join(&short).join("netns");
    let ipam = env
        .root
        .join("networks")
        .join("ipam")
        .join(format!("{net_id}.json"));
    assert!(
        std::fs::read_to_string(&ipam)
            .expect("ipam")
            .contains(&short),
        "no address allocated"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let held = std::fs::read_to_string(&ipam)
            .expect("ipam")
            .contains(&short);
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .contains(&netns.display().to_string());
        if !held && !mounted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exited container still holds its network (ipam {held}, netns {mounted})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ok(&env.run(&["rm", &short]));
    assert_ok(&env.run(&["network", "rm", &net]));
    assert!(!links().contains(&bridge), "bridge {bridge} left behind");
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("urandom");
    u32::from_ne_bytes(b)
}

#[test]
fn volumes_named_anonymous_bind_and_copy_up() {
    let Some(env) = Env::new() else { return };
    // A named volume outlives the container that wrote it; `:ro` is enforced.
    assert_ok(&env.run(&[
        "run",
        "--rm",
        "-v",
        "data1:/data",
        "bb:1",
        "sh",
        "-c",
        "echo persisted > /data/f",
    ]));
    assert_eq!(
        env.stdout(&[
            "run",
            "--rm",
            "-v",
            "data1:/data:ro",
            "bb:1",
            "cat",
            "/data/f"
        ]),
        "persisted\n"
    );
    let out = env.run(&[
        "run",
        "--rm",
        "-v",
        "data1:/data:ro",
        "bb:1",
        "sh",
        "-c",
        "echo x > /data/g",
    ]);
    assert!(!out.status.success(), "read-only volume was writable");
    let vol = env.root.join("volumes/data1/_data/f");
    assert_eq!(
        std::fs::read_to_string(&vol).expect("volume file"),
        "persisted\n"
    );

    // A bind mount of a host directory (created when missing).
    let host = env.root.join("host-dir");
    let spec = format!("{}:/mnt", host.display());
    assert_ok(&env.run(&[
        "run",
        "--rm",
        "-v",
        &spec,
        "bb:1",
        "sh",
        "-c",
        "echo from-container > /mnt/out",
    ]));
    assert_eq!(
        std::fs::read_to_string(host.join("out")).expect("bind file"),
        "from-container\n"
    );

    // An empty volume is filled with what the image has at that path.
    assert_ok(&env.run(&["run", "--rm", "-v", "bins:/bin", "bb:1", "/bin/true"]));
    assert!(
        env.root.join("volumes/bins/_data/busybox").is_file(),
        "copy-up"
    );
    assert!(
        env.root.join("volumes/bins/_data/sh").is_symlink(),
        "symlinks copied as links"
    );

    // Anonymous volumes go with `rm -v`; a volume in use cannot be removed.
    assert_ok(&env.run(&[
        "run",
        "-d",
        "--name",
        "anon",
        "-v",
        "/scratch",
        "-v",
        "data1:/data",
        "bb:1",
        "sleep",
        "100",
    ]));
    let mounts = env.inspect("anon")["Mounts"].clone();
    let anon = mounts
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["Destination"] == "/scratch")
        .expect("anonymous mount")
        .clone();
    assert_eq!(anon["Anonymous"], true);
    let anon_name = anon["Name"].as_str().expect("name").to_string();
    assert!(env.stdout(&["volume", "ls", "-q"]).contains(&anon_name));
    let out = env.run(&["volume", "rm", "data1"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );
    assert_ok(&env.run(&["rm", "-f", "-v", "anon"]));
    let vols = env.stdout(&["volume", "ls", "-q"]);
    assert!(!vols.contains(&anon_name), "{vols}");
    assert_ok(&env.run(&["volume", "rm", "data1", "bins"]));
    assert!(!env.root.join("volumes/data1").exists());

    let out = env.run(&["run", "--rm", "-v", "x:/d:bogus", "bb:1", "true"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("invalid volume"),
        "{out:?}"
    );
    assert_eq!(env.container_dirs(), 0);
}

#[test]
fn restart_policy_on_failure_and_always() {
    let Some(env) = Env::new() else { return };
    // on-failure:2 — two restarts, then the last exit stays.
    assert_ok(&env.run(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "bb:1",
        "sh",
        "-c",
        "echo run; exit 3",
    ]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let i = env.inspect("flaky");
        if i["State"]["Status"] == "exited" {
            assert_eq!(i["State"]["ExitCode"], 3);
            assert_eq!(i["RestartCount"], 2, "{i}");
            break;
        }
        assert!(Instant::now() < deadline, "never settled: {i}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(env.stdout(&["logs", "flaky"]), "run\nrun\nrun\n");

    // always — restarts a clean exit until `stop`, which is final.
    assert_ok(&env.run(&[
        "run",
        "-d",
        "--name",
        "loop",
        "--restart",
        "always",
        "bb:1",
        "sh",
        "-c",
        "sleep 0.2",
    ]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.inspect("loop")["RestartCount"].as_u64().unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "no restarts");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ok(&env.run(&["stop", "-t", "1", "loop"]));
    let i = env.inspect("loop");
    assert_eq!(i["State"]["Status"], "exited", "{i}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        env.inspect("loop")["State"]["Status"],
        "exited",
        "restarted after stop"
    );

    let out = env.run(&["run", "--rm", "--restart", "always", "bb:1", "true"]);
    assert!(!out.status.success(), "--rm with --restart is refused");
    let out = env.run(&["run", "--restart", "sometimes", "bb:1", "true"]);
    assert!(!out.status.success());
}

#[test]
fn stop_honours_stopsignal_and_timeout_and_state_outlives_the_daemon() {
    let Some(env) = Env::new() else { return };
    // An image whose STOPSIGNAL is SIGUSR1: `stop` sends it, the container exits cleanly.
    let tar = env.root.parent().expect("dir").join("rootfs.tar");
    let out = env
        .berth(&["image", "import", "--change", "STOPSIGNAL SIGUSR1"])
        .arg(&tar)
        .arg("bb:usr1")
        .output()
        .expect("import");
    assert_ok(&out);
    assert_ok(&env.run(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "bb:usr1",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 0' USR1; echo ready; while true; do sleep 0.05; done",
    ]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.stdout(&["logs", "usr1"]).contains("ready") {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    assert_ok(&env.run(&["stop", "-t", "10", "usr1"]));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(env.inspect("usr1")["State"]["ExitCode"], 0);
    assert!(env.stdout(&["logs", "usr1"]).contains("got-usr1"));

    // A container that ignores SIGTERM is killed after the timeout: 137.
    assert_ok(&env.run(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "bb:1",
        "sh",
        "-c",
        "trap '' TERM; echo ready; while true; do sleep 0.05; done",
    ]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.stdout(&["logs", "stubborn"]).contains("ready") {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    assert_ok(&env.run(&["stop", "-t", "1", "stubborn"]));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(5),
        "stop -t 1 took {took:?}"
    );
    let i = env.inspect("stubborn");
    assert_eq!(i["State"]["ExitCode"], 137, "{i}");

    // The network daemon dies (kill -9): the container keeps running, and the next `ps`
    // brings the daemon back with the published port.
    let net = format!("tn{:08x}", rand_u32());
    assert_ok(&env.run(&["network", "create", &net]));
    assert_ok(&env.run(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        &net,
        "-p",
        "127.0.0.1::80",
        "bb:1",
        "sh",
        "-c",
        "mkdir -p /www && echo alive > /www/index.html && exec httpd -f -p 80 -h /www",
    ]));
    let port = env.inspect("srv")["HostConfig"]["PortBindings"][0]["HostPort"]
        .as_str()
        .expect("port")
        .to_string();
    let url = format!("http://127.0.0.1:{port}/index.html");
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if curl(&url).as_deref() == Some("alive\n") {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {url} never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("first start");
    let st = Command::new("pkill")
        .arg("-9")
        .arg("-f")
        .arg(format!("netd --root {}/netd", env.root.display()))
        .status()
        .expect("pkill");
    assert!(st.success(), "the network daemon was running");
    assert!(
        env.stdout(&["ps"]).contains("srv"),
        "the container outlived the daemon"
    );
    wait_for("after the daemon restarted");
    assert!(env.stdout(&["logs", "srv"]).is_empty());
    assert_ok(&env.run(&["rm", "-f", "srv"]));
    assert_ok(&env.run(&["network", "rm", &net]));
}

/// Runs `berth ARGS` under `script`, which gives it a terminal, feeding `input` to the terminal.
fn berth_in_terminal(env: &Env, args: &str, input: &[u8]) -> Output {
    let cmd = format!(
        "BERTH_ROOT={} BERTH_NETWORK=none RUST_LOG=error {} {args}",
        env.root.display(),
        env!("CARGO_BIN_EXE_berth")
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (bsdutils)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write");
    }
    // Bounded: a hung berth fails the test instead of hanging it.
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("script"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            panic!("berth {args} did not finish within 60 s");
        }
    }
}

#[test]
fn run_interactive_and_tty() {
    let Some(env) = Env::new() else { return };

    // -i: stdin goes to the container through a pipe; its EOF ends `cat`.
    let mut child = env
        .berth(&["run", "-i", "--rm", "bb:1", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(env.container_dirs(), 0, "--rm removes the container");

    // -it: a pty in the container, its exit code.
    let out = berth_in_terminal(&env, "run -it --rm bb:1 sh -c 'tty; exit 5'", b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert_eq!(out.status.code(), Some(5), "{text:?}");

    // An interactive shell driven through the terminal.
    let out = berth_in_terminal(&env, "run -it --rm bb:1 sh", b"echo $((6*7))\nexit 3\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("42"), "{text:?}");
    assert_eq!(out.status.code(), Some(3), "{text:?}");
    assert_eq!(env.container_dirs(), 0, "--rm removes the container");

    // -t alone: the pty's output, no terminal needed on our side.
    let out = env.run(&["run", "-t", "--rm", "bb:1", "sh", "-c", "tty; echo $TERM"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/") && text.contains("xterm\r\n"),
        "{text:?}"
    );

    // -d -i: the shim keeps stdin open, so `cat` keeps running.
    let id = env.stdout(&["run", "-d", "-i", "--name", "icat", "bb:1", "cat"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.inspect("icat")["State"]["Running"], true);
    let id = env.stdout(&["run", "-d", "-it", "--name", "ish", "bb:1", "sh"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.inspect("ish")["State"]["Running"], true);
    assert_ok(&env.run(&["rm", "-f", "icat", "ish"]));
}

/// The `CapEff` mask of `berth run ... grep CapEff /proc/self/status`.
fn cap_eff(env: &Env, args: &[&str]) -> u64 {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["bb:1", "grep", "CapEff", "/proc/self/status"]);
    let out = env.stdout(&all);
    let hex = out
        .trim()
        .strip_prefix("CapEff:")
        .map(str::trim)
        .unwrap_or_else(|| panic!("no CapEff in {out:?}"));
    u64::from_str_radix(hex, 16).expect("hex mask")
}

/// A cgroup file of a container, v1 (`<controller>/berth/<id>/<v1>`) or v2 (`berth/<id>/<v2>`).
fn cgroup_value(id: &str, controllers: &[&str], v1: &str, v2: &str) -> Option<String> {
    let mut paths: Vec<String> = controllers
        .iter()
        .map(|c| format!("/sys/fs/cgroup/{c}/berth/{id}/{v1}"))
        .collect();
    paths.push(format!("/sys/fs/cgroup/berth/{id}/{v2}"));
    paths
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
}

#[test]
fn ulimits_read_only_add_host_dns_and_shm() {
    let Some(env) = Env::new() else { return };
    // --ulimit: soft and hard limits inside the container.
    let out = env.stdout(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:2048",
        "--ulimit",
        "nproc=77",
        "bb:1",
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn; ulimit -u",
    ]);
    assert_eq!(out, "1024\n2048\n77\n");
    let out = env.run(&["run", "--rm", "--ulimit", "nofile=10:5", "bb:1", "true"]);
    assert!(!out.status.success(), "soft above hard is refused");
    // --read-only: / is read-only; a --tmpfs, /dev/shm and a volume stay writable.
    let out = env.stdout(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-v",
        "rodata:/data",
        "bb:1",
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo root-writable; touch /tmp/y && echo tmp; \
         touch /dev/shm/z && echo shm; touch /data/a && echo volume; \
         touch /etc/hosts 2>/dev/null && echo hosts-writable; true",
    ]);
    assert_eq!(out, "tmp\nshm\nvolume\n");
    // Without it, / is writable.
    assert_eq!(
        env.stdout(&["run", "--rm", "bb:1", "sh", "-c", "touch /x && echo ok"]),
        "ok\n"
    );
    // --add-host, --dns, --dns-search, --shm-size.
    let out = env.stdout(&[
        "run",
        "--rm",
        "--add-host",
        "db.local:10.1.2.3",
        "--add-host",
        "v6=[fe80::1]",
        "bb:1",
        "cat",
        "/etc/hosts",
    ]);
    assert!(out.lines().any(|l| l == "10.1.2.3\tdb.local"), "{out}");
    assert!(out.lines().any(|l| l == "fe80::1\tv6"), "{out}");
    let out = env.stdout(&[
        "run",
        "--rm",
        "--dns",
        "10.0.0.2",
        "--dns-search",
        "corp.example",
        "bb:1",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(
        out.starts_with("nameserver 10.0.0.2\nsearch corp.example\n"),
        "{out}"
    );
    assert_eq!(out.matches("nameserver").count(), 1, "{out}");
    let out = env.stdout(&[
        "run",
        "--rm",
        "--shm-size",
        "16m",
        "bb:1",
        "grep",
        "/dev/shm",
        "/proc/mounts",
    ]);
    assert!(out.contains("size=16384k"), "{out}");
}

#[test]
fn capabilities_and_privileged() {
    let Some(env) = Env::new() else { return };
    const CHOWN: u64 = 1 << 0;
    const NET_ADMIN: u64 = 1 << 12;
    const SYS_ADMIN: u64 = 1 << 21;
    let default = cap_eff(&env, &[]);
    // Docker's 14 default capabilities.
    assert_eq!(default, 0xa80425fb, "{default:x}");
    let changed = cap_eff(&env, &["--cap-add", "NET_ADMIN", "--cap-drop", "CAP_CHOWN"]);
    assert_eq!(changed, (default | NET_ADMIN) & !CHOWN, "{changed:x}");
    assert_eq!(cap_eff(&env, &["--cap-drop", "ALL"]), 0);
    assert_eq!(
        cap_eff(&env, &["--cap-drop", "ALL", "--cap-add", "chown"]),
        CHOWN
    );
    let out = env.run(&["run", "--rm", "--cap-add", "NOT_A_CAP", "bb:1", "true"]);
    assert!(!out.status.success());
    // --privileged: every capability of this kernel, host devices, no seccomp.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("cap_last_cap")
        .trim()
        .parse()
        .expect("number");
    // Every capability of this kernel that berth itself holds (this host's root may lack some,
    // e.g. CAP_SYS_RESOURCE; granting those fails, so "all" is what the caller has).
    let bounding = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| {
            l.strip_prefix("CapBnd:")
                .map(|h| u64::from_str_radix(h.trim(), 16))
        })
        .expect("CapBnd")
        .expect("hex");
    let all = ((1u64 << (last + 1)) - 1) & bounding;
    let privileged = cap_eff(&env, &["--privileged"]);
    assert_eq!(privileged, all, "{privileged:x}");
    assert!(privileged & SYS_ADMIN != 0);
    let seccomp = env.stdout(&[
        "run",
        "--rm",
        "--privileged",
        "bb:1",
        "grep",
        "Seccomp:",
        "/proc/self/status",
    ]);
    assert!(seccomp.trim().ends_with('0'), "{seccomp}");
    let seccomp = env.stdout(&[
        "run",
        "--rm",
        "bb:1",
        "grep",
        "Seccomp:",
        "/proc/self/status",
    ]);
    assert!(seccomp.trim().ends_with('2'), "{seccomp}");
    if Path::new("/dev/kmsg").exists() {
        let probe = "test -c /dev/kmsg && echo present || echo absent";
        assert_eq!(
            env.stdout(&["run", "--rm", "--privileged", "bb:1", "sh", "-c", probe]),
            "present\n"
        );
        assert_eq!(
            env.stdout(&["run", "--rm", "bb:1", "sh", "-c", probe]),
            "absent\n"
        );
    }
}

#[test]
fn cpu_shares_memory_reservation_labels_in_cgroups_and_inspect() {
    let Some(env) = Env::new() else { return };
    let id = env.stdout(&[
        "run",
        "-d",
        "--name",
        "opts",
        "--cpu-shares",
        "512",
        "--memory",
        "64m",
        "--memory-reservation",
        "32m",
        "--memory-swap",
        "128m",
        "--ulimit",
        "nofile=100:200",
        "--read-only",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "MKNOD",
        "--add-host",
        "x:1.2.3.4",
        "--shm-size",
        "16m",
        "--label",
        "team=web",
        "--label",
        "tier=front",
        "--dns",
        "10.0.0.2",
        "--hostname",
        "opts-host",
        "bb:1",
        "sleep",
        "1000",
    ]);
    let id = id.trim();
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let shares = cgroup_value(id, &["cpu", "cpu,cpuacct"], "cpu.shares", "cpu.weight");
    // v2: libcgroups converts shares to a weight (512 → 59 with crun's formula); v1 as given.
    if unified {
        let w: u64 = shares
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("cpu.weight");
        assert!((1..100).contains(&w), "cpu.weight {w}");
    } else {
        assert_eq!(shares.as_deref(), Some("512"));
    }
    let soft = cgroup_value(id, &["memory"], "memory.soft_limit_in_bytes", "memory.low");
    assert_eq!(soft.as_deref(), Some("33554432"));
    if let Some(memsw) = cgroup_value(
        id,
        &["memory"],
        "memory.memsw.limit_in_bytes",
        "memory.swap.max",
    ) {
        // v1: memory + swap; v2: the swap alone.
        let want = if unified { "67108864" } else { "134217728" };
        assert_eq!(memsw, want);
    }
    let c = env.inspect("opts");
    let h = &c["HostConfig"];
    assert_eq!(h["CpuShares"], 512);
    assert_eq!(h["Memory"], 64 << 20);
    assert_eq!(h["MemoryReservation"], 32 << 20);
    assert_eq!(h["MemorySwap"], 128 << 20);
    assert_eq!(
        h["Ulimits"],
        serde_json::json!([{"Name": "nofile", "Soft": 100, "Hard": 200}])
    );
    assert_eq!(h["ReadonlyRootfs"], true);
    assert_eq!(h["Privileged"], false);
    assert_eq!(h["CapAdd"], serde_json::json!(["NET_ADMIN"]));
    assert_eq!(h["CapDrop"], serde_json::json!(["MKNOD"]));
    assert_eq!(h["ExtraHosts"], serde_json::json!(["x:1.2.3.4"]));
    assert_eq!(h["ShmSize"], 16 << 20);
    assert_eq!(h["Dns"], serde_json::json!(["10.0.0.2"]));
    assert_eq!(
        c["Config"]["Labels"],
        serde_json::json!({"team": "web", "tier": "front"})
    );
    assert_eq!(c["Config"]["Hostname"], "opts-host");
    // `exec --timeout` (the agent's health checks): killed and 124 when it runs longer.
    let started = Instant::now();
    let out = env.run(&["exec", "--timeout", "1", "opts", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not finish within"));
    let out = env.run(&["exec", "--timeout", "5", "opts", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_ok(&env.run(&["rm", "-f", "opts"]));
    // The container's cgroup is gone with it.
    assert!(cgroup_value(id, &["memory"], "memory.soft_limit_in_bytes", "memory.low").is_none());
}
