//! Real containers through the shim (needs root; skipped otherwise unless BERTH_REQUIRE_ROOT=1).
//!
//! Each test gets its own tempdir (busybox rootfs, bundle, state, libcontainer root) and a unique
//! container id and cgroup (`/berth-test-<id>` in every hierarchy), so tests run in parallel.
//! A guard kills and cleans up whatever a failing test leaves; every test then checks that no
//! cgroup directory, mount or shim process is left.

use std::fs;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_runtime::cgroup;
use berth_runtime::shim::{
    self, ContainerStatus, ExitInfo, RestartPolicy, ShimError, ShimHandle, ShimRequest,
};
use oci_spec::runtime::{LinuxMemory, Spec};

/// The shim executable: this crate's test binary, or `BERTH_SHIM_EXE` (e.g. target/release/berth)
/// to run the same tests through `berth shim`.
fn shim_exe() -> PathBuf {
    std::env::var_os("BERTH_SHIM_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth-runtime-test-shim")))
}
const APPLETS: &[&str] = &[
    "sh", "true", "false", "echo", "sleep", "cat", "id", "hostname", "ps", "ls", "head", "dd",
    "tail", "printf", "tty", "stty",
];
const SPAWN_CHILD_ENV: &str = "BERTH_TEST_SPAWN_FROM_CHILD";

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("BERTH_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test}: needs root (BERTH_REQUIRE_ROOT=1)");
    }
    eprintln!("skipping {test}: needs root");
    false
}

fn unique_id(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "berth-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bundle with a busybox rootfs, cleaned up (container killed, cgroups removed) on drop.
struct Fixture {
    tmp: tempfile::TempDir,
    id: String,
    spec: Spec,
    restart: RestartPolicy,
    stdin: bool,
    handle: Option<ShimHandle>,
}

impl Fixture {
    fn new(name: &str, args: &[&str]) -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rootfs = tmp.path().join("bundle/rootfs");
        fs::create_dir_all(rootfs.join("bin")).expect("mkdir rootfs");
        fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("copy /bin/busybox (apt install busybox-static)");
        for applet in APPLETS {
            symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink applet");
        }
        let id = unique_id(name);
        let mut spec = Spec::default();
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_path(rootfs);
        root.set_readonly(Some(false));
        spec.set_root(Some(root));
        spec.set_hostname(Some("berth-test".to_owned()));
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(args.iter().map(|s| (*s).to_owned()).collect()));
        process.set_terminal(Some(false));
        spec.set_process(Some(process));
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(Some(PathBuf::from(format!("/{id}"))));
        spec.set_linux(Some(linux));
        Fixture {
            tmp,
            id,
            spec,
            restart: RestartPolicy::No,
            stdin: false,
            handle: None,
        }
    }

    fn bundle(&self) -> PathBuf {
        self.tmp.path().join("bundle")
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn cgroups_path(&self) -> PathBuf {
        PathBuf::from(format!("/{}", self.id))
    }

    fn with_memory_limit(mut self, bytes: i64) -> Self {
        let mut linux = self.spec.linux().clone().unwrap_or_default();
        let mut res = linux.resources().clone().unwrap_or_default();
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(bytes));
        mem.set_swap(Some(bytes));
        res.set_memory(Some(mem));
        linux.set_resources(Some(res));
        self.spec.set_linux(Some(linux));
        self
    }

    fn with_restart(mut self, policy: &str) -> Self {
        self.restart = policy.parse().expect("restart policy");
        self
    }

    fn with_terminal(mut self) -> Self {
        let mut process = self.spec.process().clone().unwrap_or_default();
        process.set_terminal(Some(true));
        self.spec.set_process(Some(process));
        self
    }

    /// `--stdin`: attached clients write to the container's stdin.
    fn with_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    fn request(&self) -> ShimRequest {
        let tty = self
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let mut req = ShimRequest::new(
            &self.id,
            self.bundle(),
            self.state(),
            self.tmp.path().join("run"),
        );
        req.tty = tty;
        req.stdin = self.stdin;
        req.restart = self.restart;
        req
    }

    fn write_spec(&self) {
        self.spec
            .save(self.bundle().join("config.json"))
            .expect("write config.json");
    }

    fn spawn(&mut self) -> Result<ShimHandle, ShimError> {
        self.write_spec();
        let h = shim::spawn(&shim_exe(), &self.request())?;
        self.handle = Some(h.clone());
        Ok(h)
    }

    fn run_to_exit(&mut self) -> ExitInfo {
        let h = self.spawn().expect("spawn");
        h.wait(Duration::from_secs(30))
            .expect("wait")
            .expect("container exits")
    }

    /// (stream, log) of every entry in container.log.
    fn log(&self) -> Vec<(String, String)> {
        let text = fs::read_to_string(self.state().join(shim::LOG_FILE)).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json log line");
                assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
                (
                    v["stream"].as_str().unwrap_or_default().to_owned(),
                    v["log"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    fn stream(&self, stream: &str) -> String {
        self.log()
            .into_iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, l)| l)
            .collect()
    }

    /// No cgroup directory, mount, libcontainer state or shim process left. The shim removes
    /// the cgroups and libcontainer's state after it answered the waiters, then ends: its end
    /// comes first.
    fn assert_clean(&self) {
        if let Some(h) = &self.handle {
            assert!(
                wait_gone(h.shim_pid, Duration::from_secs(5)),
                "shim {} still running",
                h.shim_pid
            );
        }
        let mounts = cgroup::mounts().expect("cgroup mounts");
        for dir in cgroup::dirs(&mounts, &self.cgroups_path()).expect("cgroup dirs") {
            assert!(!dir.exists(), "cgroup directory left: {}", dir.display());
        }
        let tmp = self.tmp.path().to_string_lossy().into_owned();
        let proc_mounts = fs::read_to_string("/proc/mounts").expect("/proc/mounts");
        assert!(
            !proc_mounts.contains(&tmp),
            "mounts left under {tmp}: {proc_mounts}"
        );
        assert!(
            !self.tmp.path().join("run").join(&self.id).exists(),
            "libcontainer state left"
        );
        if let Some(h) = &self.handle {
            assert!(!alive(h.pid), "container init {} still running", h.pid);
            let sockets = shim::socket_dir(&self.state());
            assert!(!sockets.join(shim::SOCKET_FILE).exists());
            assert!(!sockets.join(shim::ATTACH_FILE).exists());
            if sockets != self.state() {
                assert!(
                    !sockets.exists(),
                    "the volatile socket directory is removed"
                );
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cleanup();
    }
}

impl Fixture {
    /// Kills what a (failed) test left running and removes its cgroups; idempotent.
    fn cleanup(&mut self) {
        let state = self.state();
        if std::thread::panicking() || std::env::var_os("BERTH_TEST_SHIM_LOG").is_some() {
            let log = fs::read_to_string(state.join(shim::SHIM_LOG_FILE)).unwrap_or_default();
            eprintln!("--- shim.log of {} ---\n{log}", self.id);
        }
        if let Ok(ContainerStatus::Running { .. } | ContainerStatus::Restarting { .. }) =
            shim::status(&state)
        {
            let _ = shim::kill(&state, libc::SIGKILL);
            let _ = shim::wait_exit(&state, Duration::from_secs(10));
        }
        if let Ok(Some(st)) = shim::read_state(&state) {
            for (pid, ticks) in [
                (st.pid, st.init_start_ticks),
                (st.shim_pid, st.shim_start_ticks),
            ] {
                if shim::process_start_ticks(pid) == Some(ticks) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::SIGKILL,
                    );
                    wait_gone(pid, Duration::from_secs(5));
                }
            }
        }
        if let Ok(mounts) = cgroup::mounts() {
            let _ = cgroup::remove_all(&mounts, &self.cgroups_path());
        }
        // A shim killed above (or by the test) leaves its volatile sockets.
        shim::remove_socket_dir(&state);
    }
}

/// The process exists and is not a zombie (this host's pid 1 does not reap orphans).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn true_exits_zero_and_false_exits_one() {
    if !root_or_skip("true_exits_zero_and_false_exits_one") {
        return;
    }
    let mut t = Fixture::new("true", &["/bin/true"]);
    let exit = t.run_to_exit();
    assert_eq!(exit.exit_code, 0);
    assert_eq!(exit.signal, None);
    assert!(!exit.oom_killed);
    assert!(exit.started_at <= exit.finished_at);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&fs::read(t.state().join(shim::EXIT_FILE)).expect("exit.json"))
            .expect("json");
    assert_eq!(on_disk["exitCode"], 0);
    assert_eq!(on_disk["oomKilled"], false);
    t.assert_clean();

    let mut f = Fixture::new("false", &["/bin/false"]);
    let exit = f.run_to_exit();
    assert_eq!(exit.exit_code, 1);
    assert!(matches!(
        shim::status(&f.state()).expect("status"),
        ContainerStatus::Exited(ExitInfo { exit_code: 1, .. })
    ));
    assert!(matches!(
        shim::kill(&f.state(), libc::SIGTERM),
        Err(ShimError::NotRunning)
    ));
    f.assert_clean();
}

#[test]
fn stdout_and_stderr_land_in_the_json_log() {
    if !root_or_skip("stdout_and_stderr_land_in_the_json_log") {
        return;
    }
    let mut t = Fixture::new(
        "logs",
        &[
            "/bin/sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2; printf 'no newline'",
        ],
    );
    let exit = t.run_to_exit();
    assert_eq!(exit.exit_code, 0);
    assert_eq!(t.stream("stdout"), "out1\nout2\nno newline");
    assert_eq!(t.stream("stderr"), "err1\n");
    let log = t.log();
    assert!(log.contains(&("stdout".to_owned(), "out1\n".to_owned())));
    assert!(log.contains(&("stdout".to_owned(), "no newline".to_owned())));
    t.assert_clean();
}

#[test]
fn container_has_its_own_pid_and_uts_namespaces() {
    if !root_or_skip("container_has_its_own_pid_and_uts_namespaces") {
        return;
    }
    let mut t = Fixture::new("ns", &["/bin/sh", "-c", "echo $$; hostname"]);
    let exit = t.run_to_exit();
    let out = t.stream("stdout");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "output: {out:?} ({exit:?})");
    assert_eq!(lines.next(), Some("berth-test"), "output: {out:?}");
    let host = nix::unistd::gethostname().expect("hostname");
    assert_ne!(host.to_string_lossy(), "berth-test");
    t.assert_clean();
}

#[test]
fn container_signals_are_clean() {
    if !root_or_skip("container_signals_are_clean") {
        return;
    }
    // The shim ignores SIGPIPE (Rust's default) and blocks SIGCHLD; neither may leak.
    let mut t = Fixture::new("sigs", &["/bin/cat", "/proc/self/status"]);
    let exit = t.run_to_exit();
    assert_eq!(exit.exit_code, 0);
    let out = t.stream("stdout");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(field("SigIgn:"), "0000000000000000", "{out}");
    assert_eq!(field("SigBlk:"), "0000000000000000", "{out}");
    t.assert_clean();
}

#[test]
fn memory_hog_is_oom_killed() {
    if !root_or_skip("memory_hog_is_oom_killed") {
        return;
    }
    let mut t = Fixture::new("oom", &["/bin/sh", "-c", "head -c 200m /dev/zero | tail"])
        .with_memory_limit(32 * 1024 * 1024);
    let exit = t.run_to_exit();
    assert_eq!(exit.exit_code, 137, "{exit:?}");
    assert!(exit.oom_killed, "{exit:?}");
    t.assert_clean();
}

#[test]
fn stop_escalates_to_sigkill_after_the_timeout() {
    if !root_or_skip("stop_escalates_to_sigkill_after_the_timeout") {
        return;
    }
    let mut t = Fixture::new(
        "stopkill",
        &["/bin/sh", "-c", "trap '' TERM; echo ready; sleep 1000"],
    );
    let h = t.spawn().expect("spawn");
    assert!(matches!(
        h.status().expect("status"),
        ContainerStatus::Running { pid } if pid == h.pid
    ));
    assert_eq!(h.wait(Duration::from_millis(100)).expect("wait"), None);
    let timeout = Duration::from_secs(2);
    let start = Instant::now();
    let exit = h.stop(libc::SIGTERM, timeout).expect("stop");
    let took = start.elapsed();
    assert_eq!(exit.exit_code, 137, "{exit:?}");
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert!(!exit.oom_killed);
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "stop took {took:?}"
    );
    eprintln!("stop with an ignored SIGTERM and a {timeout:?} timeout took {took:?}");
    t.assert_clean();
}

#[test]
fn stop_returns_early_when_the_container_handles_sigterm() {
    if !root_or_skip("stop_returns_early_when_the_container_handles_sigterm") {
        return;
    }
    let mut t = Fixture::new(
        "stopterm",
        &[
            "/bin/sh",
            "-c",
            "trap 'echo bye; exit 3' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    );
    let h = t.spawn().expect("spawn");
    // Until the trap is set, SIGTERM is ignored (the default action of a pid namespace's init).
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = t.state().join(shim::LOG_FILE);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(Instant::now() < deadline, "the shell never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let exit = h
        .stop(libc::SIGTERM, Duration::from_secs(10))
        .expect("stop");
    assert_eq!(exit.exit_code, 3, "{exit:?}");
    assert_eq!(exit.signal, None);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(t.stream("stdout"), "ready\nbye\n");
    t.assert_clean();
}

#[test]
fn timed_out_waits_do_not_leak_sockets_in_the_shim() {
    if !root_or_skip("timed_out_waits_do_not_leak_sockets_in_the_shim") {
        return;
    }
    let mut t = Fixture::new("waits", &["/bin/sleep", "1000"]);
    let h = t.spawn().expect("spawn");
    let fds = || {
        fs::read_dir(format!("/proc/{}/fd", h.shim_pid))
            .expect("shim fds")
            .count()
    };
    let before = fds();
    for _ in 0..50 {
        assert_eq!(h.wait(Duration::from_millis(5)).expect("wait"), None);
    }
    // Let the shim notice the hang-ups.
    std::thread::sleep(Duration::from_millis(200));
    let after = fds();
    assert!(
        after <= before + 2,
        "shim fds: {before} before, {after} after"
    );
    let exit = h.stop(libc::SIGKILL, Duration::from_secs(5)).expect("stop");
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    t.assert_clean();
}

#[test]
fn a_killed_shim_is_reported_lost() {
    if !root_or_skip("a_killed_shim_is_reported_lost") {
        return;
    }
    let mut t = Fixture::new("lost", &["/bin/sleep", "1000"]);
    let h = t.spawn().expect("spawn");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.shim_pid),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill the shim");
    assert!(wait_gone(h.shim_pid, Duration::from_secs(5)));
    assert_eq!(
        h.status().expect("status"),
        ContainerStatus::Lost { pid: h.pid }
    );
    assert!(matches!(
        h.wait(Duration::from_secs(1)),
        Err(ShimError::Lost(_))
    ));
    assert!(matches!(
        h.kill(libc::SIGTERM),
        Err(ShimError::Control { .. })
    ));
    // The orphaned init is still there; the engine kills it by pid (checked with its start
    // time) and removes the cgroups, as the cleanup does.
    assert!(alive(h.pid));
    t.cleanup();
    assert!(!alive(h.pid));
    let mounts = cgroup::mounts().expect("cgroup mounts");
    for dir in cgroup::dirs(&mounts, &t.cgroups_path()).expect("cgroup dirs") {
        assert!(!dir.exists(), "cgroup directory left: {}", dir.display());
    }
}

#[test]
fn terminal_output_is_logged_as_stdout() {
    if !root_or_skip("terminal_output_is_logged_as_stdout") {
        return;
    }
    let mut t = Fixture::new("tty", &["/bin/sh", "-c", "echo hi; echo there >&2"]).with_terminal();
    let exit = t.run_to_exit();
    assert_eq!(exit.exit_code, 0);
    assert_eq!(t.stream("stdout"), "hi\r\nthere\r\n");
    assert_eq!(t.stream("stderr"), "");
    t.assert_clean();
}

#[test]
fn start_failure_is_reported_and_cleaned_up() {
    if !root_or_skip("start_failure_is_reported_and_cleaned_up") {
        return;
    }
    let mut t = Fixture::new("nonexistent", &["/bin/does-not-exist"]);
    match t.spawn() {
        Err(ShimError::StartFailed { message, .. }) => {
            assert!(message.contains("does-not-exist"), "{message}")
        }
        other => panic!("expected a start failure, got {other:?}"),
    }
    assert!(shim::read_exit(&t.state()).expect("read").is_none());
    // Give the failed shim a moment to exit, then nothing may be left.
    std::thread::sleep(Duration::from_millis(100));
    t.assert_clean();
    let ps = Command::new("ps").args(["-eo", "args"]).output();
    if let Ok(ps) = ps {
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(!ps.lines().any(|l| l.contains(&t.id)), "shim left: {ps}");
    }
}

/// Not a test on its own: the body of the child process of `shim_survives_its_spawner`.
#[test]
fn zz_spawn_from_child_helper() {
    let Ok(dir) = std::env::var(SPAWN_CHILD_ENV) else {
        return;
    };
    let req: serde_json::Value =
        serde_json::from_slice(&fs::read(Path::new(&dir).join("request.json")).expect("request"))
            .expect("request json");
    let s = |k: &str| req[k].as_str().expect("field").to_owned();
    let request = ShimRequest::new(s("id"), s("bundle"), s("state"), s("root"));
    let h = shim::spawn(&shim_exe(), &request).expect("spawn from child");
    println!("SPAWNED {} {}", h.pid, h.shim_pid);
    // Exit at once, without running destructors: the spawner is gone, the shim must not care.
    std::process::exit(0);
}

#[test]
fn shim_survives_its_spawner() {
    if !root_or_skip("shim_survives_its_spawner") {
        return;
    }
    let mut t = Fixture::new(
        "orphan",
        &[
            "/bin/sh",
            "-c",
            "echo before; sleep 1; echo after; sleep 1000",
        ],
    );
    t.write_spec();
    let req = t.request();
    let request = serde_json::json!({
        "id": req.id,
        "bundle": req.bundle,
        "state": req.state_dir,
        "root": req.runtime_root,
    });
    fs::write(t.tmp.path().join("request.json"), request.to_string()).expect("write request");
    let out = Command::new(std::env::current_exe().expect("test exe"))
        .args(["--exact", "zz_spawn_from_child_helper", "--nocapture"])
        .env(SPAWN_CHILD_ENV, t.tmp.path())
        .output()
        .expect("run the spawner");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spawner failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SPAWNED "))
        .expect("spawner output");
    let mut nums = line.split(' ').map(|n| n.parse::<i32>().expect("pid"));
    let (pid, shim_pid) = (nums.next().expect("pid"), nums.next().expect("shim pid"));
    t.handle = Some(ShimHandle {
        id: t.id.clone(),
        state_dir: t.state(),
        pid,
        shim_pid,
    });

    // The spawner is gone; the container runs and its output is still collected.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        shim::status(&t.state()).expect("status"),
        ContainerStatus::Running { pid }
    );
    assert!(alive(shim_pid));
    assert_eq!(t.stream("stdout"), "before\nafter\n");
    let exit = shim::stop(&t.state(), libc::SIGKILL, Duration::from_secs(5)).expect("stop");
    assert_eq!(exit.exit_code, 137);
    t.assert_clean();
}

#[test]
fn many_containers_spawned_from_many_threads() {
    if !root_or_skip("many_containers_spawned_from_many_threads") {
        return;
    }
    // The engine is a multi-threaded tokio process: spawning from several threads at once must
    // work (libcontainer itself deadlocked there, which is why the shim exists).
    const THREADS: usize = 4;
    const PER_THREAD: usize = 8;
    let results: Vec<Vec<(String, i32, String)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|th| {
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let word = format!("w{th}x{i}");
                            let mut t = Fixture::new(
                                &format!("many{th}x{i}"),
                                &["/bin/sh", "-c", &format!("echo {word}")],
                            );
                            let exit = t.run_to_exit();
                            let out = t.stream("stdout");
                            t.assert_clean();
                            (word, exit.exit_code, out)
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    for (word, code, out) in results.into_iter().flatten() {
        assert_eq!(code, 0, "{word}");
        assert_eq!(out, format!("{word}\n"));
    }
}

#[test]
fn spawn_to_exit_timing() {
    if !root_or_skip("spawn_to_exit_timing") {
        return;
    }
    const RUNS: usize = 20;
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let mut t = Fixture::new(&format!("timing{i}"), &["/bin/true"]);
        t.write_spec();
        let start = Instant::now();
        let h = shim::spawn(&shim_exe(), &t.request()).expect("spawn");
        let spawned = start.elapsed();
        t.handle = Some(h.clone());
        let exit = h
            .wait(Duration::from_secs(30))
            .expect("wait")
            .expect("exit");
        let total = start.elapsed();
        assert_eq!(exit.exit_code, 0);
        times.push((total, spawned));
        t.assert_clean();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut spawns: Vec<Duration> = times.iter().map(|t| t.1).collect();
    spawns.sort();
    println!(
        "shim spawn->exit of /bin/true over {RUNS} runs: median {:.1} ms, min {:.1} ms, max {:.1} ms \
         (spawn->started: median {:.1} ms)",
        ms(times[RUNS / 2].0),
        ms(times[0].0),
        ms(times[RUNS - 1].0),
        ms(spawns[RUNS / 2]),
    );
}

/// The restart count in state.json.
fn restart_count(state: &Path) -> u32 {
    shim::read_state(state)
        .expect("read state")
        .expect("state.json")
        .restart_count
}

/// Polls the container's status until `pred` holds (bounded).
fn wait_for_status(
    state: &Path,
    timeout: Duration,
    pred: impl Fn(&ContainerStatus) -> bool,
) -> ContainerStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let st = shim::status(state).expect("status");
        if pred(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "status still {st:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn restart_policy_syntax() {
    use clap::Parser;
    let p = |s: &str| s.parse::<RestartPolicy>();
    assert_eq!(p("no"), Ok(RestartPolicy::No));
    assert_eq!(p("always"), Ok(RestartPolicy::Always));
    assert_eq!(p("unless-stopped"), Ok(RestartPolicy::UnlessStopped));
    assert_eq!(
        p("on-failure"),
        Ok(RestartPolicy::OnFailure { max_retries: None })
    );
    assert_eq!(
        p("on-failure:2"),
        Ok(RestartPolicy::OnFailure {
            max_retries: Some(2)
        })
    );
    for bad in ["yes", "always:2", "on-failure:two", "on-failure:-1"] {
        let err = p(bad).expect_err(bad).to_string();
        assert!(err.contains(bad), "{err}");
    }
    for s in [
        "no",
        "on-failure",
        "on-failure:2",
        "always",
        "unless-stopped",
    ] {
        assert_eq!(p(s).expect(s).to_string(), s);
    }

    let base = [
        "shim", "--id", "x", "--bundle", "/b", "--state", "/s", "--root", "/r",
    ];
    let args = shim::ShimArgs::try_parse_from(base).expect("no --restart");
    assert_eq!(args.restart, RestartPolicy::No);
    let args = shim::ShimArgs::try_parse_from(base.iter().chain(&["--restart", "on-failure:3"]))
        .expect("--restart on-failure:3");
    assert_eq!(
        args.restart,
        RestartPolicy::OnFailure {
            max_retries: Some(3)
        }
    );
    let err = shim::ShimArgs::try_parse_from(base.iter().chain(&["--restart", "sometimes"]))
        .expect_err("bad policy")
        .to_string();
    assert!(err.contains("expected no, on-failure"), "{err}");
    assert_eq!(
        ShimRequest::new("i", "/b", "/s", "/r").restart,
        RestartPolicy::No
    );
}

#[test]
fn no_restart_policy_runs_once() {
    if !root_or_skip("no_restart_policy_runs_once") {
        return;
    }
    let mut t =
        Fixture::new("norestart", &["/bin/sh", "-c", "echo run; exit 3"]).with_restart("no");
    let exit = t.run_to_exit();
    assert_eq!(exit.exit_code, 3);
    assert_eq!(t.stream("stdout"), "run\n");
    assert_eq!(restart_count(&t.state()), 0);
    assert!(shim::read_last_exit(&t.state()).expect("read").is_none());
    t.assert_clean();
}

#[test]
fn on_failure_restarts_up_to_the_limit() {
    if !root_or_skip("on_failure_restarts_up_to_the_limit") {
        return;
    }
    let mut t = Fixture::new("onfailure", &["/bin/sh", "-c", "echo run; exit 3"])
        .with_restart("on-failure:2");
    let start = Instant::now();
    let h = t.spawn().expect("spawn");
    let exit = h
        .wait(Duration::from_secs(30))
        .expect("wait")
        .expect("exits for good");
    let took = start.elapsed();
    assert_eq!(exit.exit_code, 3, "{exit:?}");
    assert_eq!(restart_count(&t.state()), 2);
    assert_eq!(t.stream("stdout"), "run\nrun\nrun\n");
    let last = shim::read_last_exit(&t.state())
        .expect("read")
        .expect("last_exit.json");
    assert_eq!(last.exit_code, 3);
    let on_disk = shim::read_exit(&t.state())
        .expect("read")
        .expect("exit.json");
    assert_eq!(on_disk, exit);
    assert!(
        matches!(shim::status(&t.state()).expect("status"), ContainerStatus::Exited(e) if e.exit_code == 3)
    );
    // Back-off 100 ms + 200 ms.
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    eprintln!("on-failure:2 with 3 runs took {took:?}");
    t.assert_clean();
}

#[test]
fn on_failure_does_not_restart_a_clean_exit() {
    if !root_or_skip("on_failure_does_not_restart_a_clean_exit") {
        return;
    }
    let mut t =
        Fixture::new("onfailure0", &["/bin/sh", "-c", "echo run"]).with_restart("on-failure");
    let exit = t.run_to_exit();
    assert_eq!(exit.exit_code, 0);
    assert_eq!(restart_count(&t.state()), 0);
    assert_eq!(t.stream("stdout"), "run\n");
    t.assert_clean();
}

#[test]
fn always_restarts_until_stopped() {
    if !root_or_skip("always_restarts_until_stopped") {
        return;
    }
    let mut t = Fixture::new("always", &["/bin/sh", "-c", "echo tick"]).with_restart("always");
    let h = t.spawn().expect("spawn");
    let state = t.state();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw_restarting = false;
    while restart_count(&state) < 2 {
        assert!(Instant::now() < deadline, "no second restart");
        if let ContainerStatus::Restarting { last_exit, .. } = shim::status(&state).expect("status")
        {
            saw_restarting = true;
            if let Some(e) = last_exit {
                assert_eq!(e.exit_code, 0);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(saw_restarting, "never saw the restarting state");
    // A waiter does not return on an exit that is followed by a restart.
    assert_eq!(h.wait(Duration::from_millis(50)).expect("wait"), None);

    let exit = h.stop(libc::SIGKILL, Duration::from_secs(5)).expect("stop");
    assert!(exit.exit_code == 0 || exit.exit_code == 137, "{exit:?}");
    let count = restart_count(&state);
    let runs = t.stream("stdout").matches("tick").count();
    assert!(count >= 2);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(restart_count(&state), count, "restarted after the stop");
    assert_eq!(t.stream("stdout").matches("tick").count(), runs);
    assert!(
        runs == count as usize || runs == count as usize + 1,
        "{runs} runs for {count} restarts"
    );
    assert!(matches!(
        shim::status(&state).expect("status"),
        ContainerStatus::Exited(_)
    ));
    assert!(matches!(h.kill(libc::SIGTERM), Err(ShimError::NotRunning)));
    t.assert_clean();
}

#[test]
fn stop_during_the_backoff_is_prompt() {
    if !root_or_skip("stop_during_the_backoff_is_prompt") {
        return;
    }
    let mut t = Fixture::new("backoffstop", &["/bin/sh", "-c", "echo run; exit 1"])
        .with_restart("on-failure");
    let h = t.spawn().expect("spawn");
    // The 6th restart waits 3.2 s.
    let st = wait_for_status(
        &t.state(),
        Duration::from_secs(20),
        |s| matches!(s, ContainerStatus::Restarting { restart_count, .. } if *restart_count >= 6),
    );
    let ContainerStatus::Restarting {
        restart_count: count,
        last_exit,
    } = st
    else {
        panic!("not restarting: {st:?}");
    };
    assert_eq!(last_exit.map(|e| e.exit_code), Some(1));
    let start = Instant::now();
    let exit = h
        .stop(libc::SIGTERM, Duration::from_secs(10))
        .expect("stop");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    eprintln!("stop during a restart back-off took {took:?}");
    assert_eq!(exit.exit_code, 1, "{exit:?}");
    assert_eq!(restart_count(&t.state()), count);
    assert_eq!(t.stream("stdout").matches("run").count(), count as usize);
    t.assert_clean();
}

#[test]
fn kill_is_a_manual_stop_and_signal_is_not() {
    if !root_or_skip("kill_is_a_manual_stop_and_signal_is_not") {
        return;
    }
    let mut t = Fixture::new("killstop", &["/bin/sh", "-c", "echo run; exec sleep 1000"])
        .with_restart("always");
    let h = t.spawn().expect("spawn");
    // `signal` leaves the policy alone: the container is restarted with a new init.
    h.signal(libc::SIGKILL).expect("signal");
    let st = wait_for_status(
        &t.state(),
        Duration::from_secs(10),
        |s| matches!(s, ContainerStatus::Running { pid } if *pid != h.pid),
    );
    assert_eq!(restart_count(&t.state()), 1);
    let ContainerStatus::Running { pid } = st else {
        panic!("{st:?}");
    };
    assert!(alive(pid));
    let last = shim::read_last_exit(&t.state())
        .expect("read")
        .expect("last exit");
    assert_eq!(last.exit_code, 137);
    // `kill` (docker kill) is a manual stop, as in Docker: no restart.
    h.kill(libc::SIGKILL).expect("kill");
    let exit = h
        .wait(Duration::from_secs(10))
        .expect("wait")
        .expect("exits for good");
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert_eq!(restart_count(&t.state()), 1);
    assert!(wait_gone(pid, Duration::from_secs(5)));
    t.assert_clean();
}

#[test]
fn a_failed_restart_ends_with_the_last_exit() {
    if !root_or_skip("a_failed_restart_ends_with_the_last_exit") {
        return;
    }
    // The command removes itself: the restart cannot start it.
    let mut t = Fixture::new(
        "vanish",
        &["/bin/sh", "-c", "echo once; rm /bin/sh; exit 4"],
    )
    .with_restart("always");
    let exit = t.run_to_exit();
    assert_eq!(exit.exit_code, 4, "{exit:?}");
    assert_eq!(t.stream("stdout"), "once\n");
    assert_eq!(restart_count(&t.state()), 1);
    let shim_log = fs::read_to_string(t.state().join(shim::SHIM_LOG_FILE)).unwrap_or_default();
    assert!(shim_log.contains("cannot restart"), "{shim_log}");
    t.assert_clean();
}

#[test]
fn restarted_containers_get_clean_signals_and_a_terminal() {
    if !root_or_skip("restarted_containers_get_clean_signals_and_a_terminal") {
        return;
    }
    let mut t = Fixture::new(
        "restartsigs",
        &["/bin/sh", "-c", "cat /proc/self/status; exit 2"],
    )
    .with_restart("on-failure:1");
    let exit = t.run_to_exit();
    assert_eq!(exit.exit_code, 2);
    let out = t.stream("stdout");
    for field in ["SigIgn:", "SigBlk:"] {
        let values: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix(field))
            .map(str::trim)
            .collect();
        assert_eq!(values, ["0000000000000000"; 2], "{field} in {out}");
    }
    t.assert_clean();

    let mut tty = Fixture::new("restarttty", &["/bin/sh", "-c", "echo hi; exit 2"])
        .with_terminal()
        .with_restart("on-failure:1");
    let exit = tty.run_to_exit();
    assert_eq!(exit.exit_code, 2);
    assert_eq!(tty.stream("stdout"), "hi\r\nhi\r\n");
    assert_eq!(restart_count(&tty.state()), 1);
    tty.assert_clean();
}

/// Connects to the container's attach socket, with a read timeout so a broken shim fails the
/// test instead of hanging it.
fn attach(state: &Path) -> UnixStream {
    let s = shim::attach(state).expect("attach");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// Reads from the attach socket until the output contains `want`; returns all of it.
fn read_until(s: &mut UnixStream, want: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(want) {
        match s.read(&mut buf) {
            Ok(0) => panic!("EOF before {want:?}: {:?}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "reading for {want:?}: {e}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn read_to_eof(s: &mut UnixStream) -> String {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read to EOF");
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn attach_pipes_stdin_and_eof_ends_the_container() {
    if !root_or_skip("attach_pipes_stdin_and_eof_ends_the_container") {
        return;
    }
    let mut t = Fixture::new("attachcat", &["/bin/cat"]).with_stdin();
    let h = t.spawn().expect("spawn");
    let mut s = attach(&t.state());
    s.write_all(b"hello\n").expect("write");
    read_until(&mut s, "hello\n");
    // No terminal: no resize.
    assert!(matches!(
        shim::resize(&t.state(), 24, 80),
        Err(ShimError::Refused(_))
    ));
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(read_to_eof(&mut s), "");
    // EOF on the socket comes after exit.json.
    let exit = shim::read_exit(&t.state())
        .expect("read exit")
        .expect("exited before the attach ended");
    assert_eq!(exit.exit_code, 0);
    assert_eq!(h.wait(Duration::from_secs(5)).expect("wait"), Some(exit));
    assert_eq!(t.stream("stdout"), "hello\n");
    t.assert_clean();
}

#[test]
fn attach_replays_output_from_before_the_attach() {
    if !root_or_skip("attach_replays_output_from_before_the_attach") {
        return;
    }
    let mut t = Fixture::new(
        "attachreplay",
        &[
            "/bin/sh",
            "-c",
            "echo early; echo err >&2; read x; echo late $x",
        ],
    )
    .with_stdin();
    t.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.stream("stderr").contains("err") {
        assert!(Instant::now() < deadline, "no output: {:?}", t.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut s = attach(&t.state());
    s.write_all(b"go\n").expect("write");
    let out = read_to_eof(&mut s);
    // stdout and stderr interleaved, in the order the shim read them.
    assert!(out.contains("early\n") && out.contains("err\n"), "{out:?}");
    assert!(out.ends_with("late go\n"), "{out:?}");
    assert_eq!(t.stream("stdout"), "early\nlate go\n");
    t.assert_clean();
}

#[test]
fn attach_to_a_terminal_and_resize_it() {
    if !root_or_skip("attach_to_a_terminal_and_resize_it") {
        return;
    }
    let mut t = Fixture::new("attachtty", &["/bin/sh", "-c", "read x; tty; stty size"])
        .with_terminal()
        .with_stdin();
    let h = t.spawn().expect("spawn");
    let mut s = attach(&t.state());
    shim::resize(&t.state(), 33, 101).expect("resize");
    s.write_all(b"go\n").expect("write");
    let out = read_to_eof(&mut s);
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("33 101\r\n"), "{out:?}");
    assert_eq!(
        h.wait(Duration::from_secs(5))
            .expect("wait")
            .map(|e| e.exit_code),
        Some(0)
    );
    assert!(t.stream("stdout").contains("33 101"));
    t.assert_clean();
}

#[test]
fn a_client_that_does_not_read_is_dropped_not_waited_for() {
    if !root_or_skip("a_client_that_does_not_read_is_dropped_not_waited_for") {
        return;
    }
    // 3 MiB of output for a client that never reads: more than the socket buffer plus the
    // shim's per-client queue.
    let mut t = Fixture::new(
        "attachslow",
        &[
            "/bin/sh",
            "-c",
            "read x; dd if=/dev/zero bs=65536 count=48 2>/dev/null; echo done",
        ],
    )
    .with_stdin();
    let h = t.spawn().expect("spawn");
    let mut stuck = attach(&t.state());
    stuck.write_all(b"go\n").expect("write");
    let exit = h
        .wait(Duration::from_secs(30))
        .expect("wait")
        .expect("the container exits although a client does not read");
    assert_eq!(exit.exit_code, 0);
    let shim_log = fs::read_to_string(t.state().join(shim::SHIM_LOG_FILE)).unwrap_or_default();
    assert!(shim_log.contains("does not keep up"), "{shim_log}");
    drop(stuck);
    t.assert_clean();
}

#[test]
fn attached_clients_follow_restarts() {
    if !root_or_skip("attached_clients_follow_restarts") {
        return;
    }
    let mut t = Fixture::new(
        "attachrestart",
        &["/bin/sh", "-c", "read x; echo got $x; exit 2"],
    )
    .with_stdin()
    .with_restart("on-failure:1");
    let h = t.spawn().expect("spawn");
    let mut s = attach(&t.state());
    s.write_all(b"a\n").expect("write");
    read_until(&mut s, "got a\n");
    // Input for the second run only once it runs (the first one's stdin dies with it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(shim::read_state(&t.state()), Ok(Some(st)) if st.restart_count == 1 && !st.restarting)
    {
        assert!(Instant::now() < deadline, "no restart");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.write_all(b"b\n").expect("write");
    let rest = read_to_eof(&mut s);
    assert!(rest.ends_with("got b\n"), "{rest:?}");
    assert_eq!(
        h.wait(Duration::from_secs(5))
            .expect("wait")
            .map(|e| e.exit_code),
        Some(2)
    );
    assert_eq!(t.stream("stdout"), "got a\ngot b\n");
    t.assert_clean();
}
