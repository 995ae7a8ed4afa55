//! End to end: the unmodified `aws ecs` CLI against `berth serve` (control plane + registry +
//! local agent), running real containers as root. An image built locally (busybox httpd) is
//! pushed to the Berth registry with an ECR token, registered in a task definition, run, fetched
//! from its published port, stopped; failures (essential exit, missing image, bad input) show
//! ECS's codes; a restart of the control plane loses nothing and the agent reattaches; a vanished
//! agent is marked disconnected and its tasks STOPPED.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json as j, Value};

struct Ecs {
    dir: tempfile::TempDir,
    srv: Server,
    aws: PathBuf,
    key: (String, String),
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips (or fails under BERTH_REQUIRE_ROOT=1) without root.
fn need_root() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("BERTH_REQUIRE_ROOT").as_deref() != Ok("1"),
        "ECS end-to-end tests run containers and need root (BERTH_REQUIRE_ROOT=1)"
    );
    eprintln!("skipping: needs root");
    false
}

/// The generated key from `<data>/credentials` (AWS shared-credentials INI).
fn read_key(data: &Path) -> (String, String) {
    let text = std::fs::read_to_string(data.join("credentials")).expect("credentials");
    let get = |k: &str| {
        text.lines()
            .find_map(|l| {
                let (a, b) = l.split_once('=')?;
                (a.trim() == k).then(|| b.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{k} in credentials"))
    };
    (get("aws_access_key_id"), get("aws_secret_access_key"))
}

impl Ecs {
    fn start(extra: &[&str]) -> Option<Ecs> {
        if !need_root() {
            return None;
        }
        let aws = aws()?;
        let dir = tempfile::Builder::new()
            .prefix("berth-ecs-e2e-")
            .tempdir()
            .expect("tempdir");
        let mut args = vec!["--task-cleanup-wait", "0"];
        args.extend_from_slice(extra);
        let srv = Server::serve(&dir.path().join("data"), &args);
        let key = read_key(&srv.data);
        Some(Ecs { dir, srv, aws, key })
    }

    fn api(&self) -> &str {
        self.srv.api_url.as_deref().expect("api url")
    }

    fn aws_cmd(&self) -> Command {
        let mut cmd = aws_cmd(&self.aws, self.dir.path());
        cmd.env("AWS_ACCESS_KEY_ID", &self.key.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.key.1);
        cmd
    }

    fn ecs(&self, args: &[&str]) -> Result<Value, String> {
        let mut cmd = self.aws_cmd();
        cmd.arg("ecs")
            .args(args)
            .args(["--endpoint-url", self.api(), "--output", "json"]);
        let out = run(&mut cmd);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let s = String::from_utf8_lossy(&out.stdout);
        Ok(if s.trim().is_empty() {
            Value::Null
        } else {
            json(&s)
        })
    }

    fn ok(&self, args: &[&str]) -> Value {
        self.ecs(args)
            .unwrap_or_else(|e| panic!("aws ecs {args:?} failed:\n{e}\n{}", self.srv.log_text()))
    }

    fn err(&self, args: &[&str], code: &str) -> String {
        match self.ecs(args) {
            Ok(v) => panic!("aws ecs {args:?} succeeded, expected {code}: {v}"),
            Err(e) => {
                assert!(
                    e.contains(&format!("({code})")),
                    "aws ecs {args:?}: expected {code}, got:\n{e}"
                );
                e
            }
        }
    }

    /// `berth` against a client engine root of its own (not the agent's).
    fn berth(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth_bin());
        c.env("BERTH_ROOT", self.dir.path().join("client"))
            .env("BERTH_CONFIG", self.dir.path().join("auth.json"))
            .env("BERTH_NETWORK", "none")
            .env("RUST_LOG", "error")
            .args(args);
        c
    }

    /// Builds a busybox image locally and pushes it as `<registry>/<name>` with an ECR token.
    fn push_busybox(&self, name: &str) -> String {
        let fs = self.dir.path().join("fs");
        if !fs.exists() {
            std::fs::create_dir_all(fs.join("bin")).expect("mkdir");
            std::fs::create_dir_all(fs.join("www")).expect("mkdir");
            std::fs::create_dir_all(fs.join("tmp")).expect("mkdir");
            std::fs::copy("/bin/busybox", fs.join("bin/busybox")).expect("busybox-static");
            for a in ["sh", "httpd", "sleep", "echo", "cat", "true"] {
                std::os::unix::fs::symlink("busybox", fs.join("bin").join(a)).expect("symlink");
            }
            std::fs::write(fs.join("www/index.html"), "hello from an ECS task\n").expect("write");
        }
        let tar = self.dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&fs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(st.success());
        let reference = format!("{}/{name}", self.srv.addr);
        run_ok(
            self.berth(&["image", "import", "--change", r#"CMD ["/bin/sh"]"#])
                .arg(&tar)
                .arg(&reference),
        );
        // Log in the way ECR users do: `aws ecr get-login-password | docker login -u AWS`.
        let mut pw = self.aws_cmd();
        pw.args(["ecr", "get-login-password", "--endpoint-url", self.api()]);
        let password = run_ok(&mut pw);
        run_with_stdin(
            &mut self.berth(&["login", "-u", "AWS", "--password-stdin", &self.srv.addr]),
            password.trim(),
        );
        run_ok(&mut self.berth(&["push", &reference]));
        reference
    }

    /// Waits (bounded) until the local agent has registered, and returns its instance ARN.
    fn wait_instance(&self, cluster: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.ok(&["list-container-instances", "--cluster", cluster]);
            let arns: Vec<String> = v["containerInstanceArns"]
                .as_array()
                .expect("arns")
                .iter()
                .map(|a| a.as_str().expect("arn").to_string())
                .collect();
            if arns.len() >= count {
                return arns;
            }
            assert!(
                Instant::now() < deadline,
                "no container instance registered in {cluster}:\n{}",
                self.srv.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn describe_task(&self, arn: &str) -> Value {
        let v = self.ok(&["describe-tasks", "--tasks", arn]);
        v["tasks"][0].clone()
    }

    /// Polls DescribeTasks (bounded) until lastStatus is `status`.
    fn wait_status(&self, arn: &str, status: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.describe_task(arn);
            if t["lastStatus"] == status {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "task {arn} not {status} after {secs} s: {t}\n{}",
                self.srv.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn register(&self, family: &str, containers: Value) -> Value {
        self.register_with(family, containers, &[])
    }

    fn register_with(&self, family: &str, containers: Value, extra: &[&str]) -> Value {
        let c = containers.to_string();
        let mut args = vec![
            "register-task-definition",
            "--family",
            family,
            "--container-definitions",
            &c,
        ];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    fn run_task(&self, family: &str) -> String {
        let r = self.ok(&["run-task", "--task-definition", family]);
        assert_eq!(r["failures"], j!([]), "{r}");
        r["tasks"][0]["taskArn"]
            .as_str()
            .expect("taskArn")
            .to_string()
    }

    fn engine_root(&self) -> PathBuf {
        self.srv.data.join("engine")
    }

    fn agent_berth(&self, args: &[&str]) -> String {
        run_ok(
            Command::new(berth_bin())
                .env("BERTH_ROOT", self.engine_root())
                .env("RUST_LOG", "error")
                .args(args),
        )
    }

    /// Ids of every container of the agent's engine (`berth ps -a -q --no-trunc`).
    fn agent_containers(&self) -> Vec<String> {
        self.agent_berth(&["ps", "-a", "-q", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Removes what the engine roots under `dir` left: containers, networks (the default bridge
/// too), network daemons, mounts.
fn clean_engine(root: &Path) {
    let berth = |args: &[&str]| {
        Command::new(berth_bin())
            .env("BERTH_ROOT", root)
            .env("RUST_LOG", "error")
            .args(args)
            .output()
    };
    if let Ok(out) = berth(&["ps", "-a", "-q", "--no-trunc"]) {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = berth(&["rm", "-f", id]);
        }
    }
    if let Ok(out) = berth(&["network", "ls", "-q"]) {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = berth(&["network", "rm", id]);
        }
    }
    let _ = Command::new("pkill")
        .arg("-f")
        .arg(format!("netd --root {}/netd", root.display()))
        .status();
    let prefix = root.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
}

impl Drop for Ecs {
    fn drop(&mut self) {
        // The server (and its agent) first, so nothing starts containers again.
        self.srv.kill9();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(format!("agent --cluster c2 --control {}", self.api()))
            .status();
        clean_engine(&self.engine_root());
        clean_engine(&self.dir.path().join("agent2/engine"));
        clean_engine(&self.dir.path().join("client"));
    }
}

fn http_get(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn ecs_cli_runs_a_pushed_image_serves_it_and_stops_it() {
    let Some(e) = Ecs::start(&[]) else { return };
    let image = e.push_busybox("web:1");
    let instances = e.wait_instance("default", 1);
    let host_port = free_port();
    let td = e.register(
        "web",
        j!([{
            "name": "web",
            "image": image,
            "memory": 64,
            "essential": true,
            "stopTimeout": 2,
            "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
            "portMappings": [{"containerPort": 8080, "hostPort": host_port}],
        }]),
    );
    assert_eq!(td["taskDefinition"]["revision"], 1);
    assert_eq!(td["taskDefinition"]["status"], "ACTIVE");

    let r = e.ok(&[
        "run-task",
        "--task-definition",
        "web",
        "--started-by",
        "e2e",
    ]);
    let task = &r["tasks"][0];
    assert_eq!(task["lastStatus"], "PROVISIONING", "{r}");
    assert_eq!(task["containerInstanceArn"], instances[0].as_str());
    let arn = task["taskArn"].as_str().expect("arn").to_string();

    // The CLI's own waiter.
    e.ok(&["wait", "tasks-running", "--tasks", &arn]);
    let t = e.describe_task(&arn);
    assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    for k in ["createdAt", "pullStartedAt", "pullStoppedAt", "startedAt"] {
        assert!(t[k].is_number(), "{k} missing: {t}");
    }
    assert!(t["pullStartedAt"].as_f64() <= t["pullStoppedAt"].as_f64());
    assert!(t["pullStoppedAt"].as_f64() <= t["startedAt"].as_f64());
    let c = &t["containers"][0];
    assert_eq!(c["lastStatus"], "RUNNING");
    assert_eq!(c["networkBindings"][0]["hostPort"], host_port);
    let runtime_id = c["runtimeId"].as_str().expect("runtimeId").to_string();

    // A real container on the host...
    assert_eq!(e.agent_containers(), vec![runtime_id.clone()]);
    let inspect = json(&e.agent_berth(&["inspect", &runtime_id]));
    let state = if inspect.is_array() {
        &inspect[0]["State"]
    } else {
        &inspect["State"]
    };
    assert_eq!(state["Status"], "running", "{inspect}");
    // ...serving its published port.
    let body = http_get(&format!("127.0.0.1:{host_port}")).expect("GET the published port");
    assert!(body.contains("hello from an ECS task"), "{body}");

    // Counts.
    let cl = e.ok(&["describe-clusters", "--clusters", "default"]);
    assert_eq!(cl["clusters"][0]["runningTasksCount"], 1, "{cl}");
    assert_eq!(cl["clusters"][0]["registeredContainerInstancesCount"], 1);
    let ci = e.ok(&[
        "describe-container-instances",
        "--container-instances",
        &instances[0],
    ]);
    let ci = &ci["containerInstances"][0];
    assert_eq!(ci["agentConnected"], true);
    assert_eq!(ci["runningTasksCount"], 1);
    let reg_mem = ci["registeredResources"][1]["integerValue"]
        .as_i64()
        .expect("mem");
    let rem_mem = ci["remainingResources"][1]["integerValue"]
        .as_i64()
        .expect("mem");
    assert_eq!(reg_mem - rem_mem, 64);
    assert_eq!(
        e.ok(&["list-tasks", "--started-by", "e2e"])["taskArns"],
        j!([arn.clone()])
    );

    // Stop: httpd as PID 1 ignores SIGTERM, so SIGKILL after stopTimeout (2 s): exit 137.
    let s = e.ok(&["stop-task", "--task", &arn, "--reason", "e2e done"]);
    assert_eq!(s["task"]["desiredStatus"], "STOPPED");
    e.ok(&["wait", "tasks-stopped", "--tasks", &arn]);
    let t = e.describe_task(&arn);
    assert_eq!(t["lastStatus"], "STOPPED");
    assert_eq!(t["stopCode"], "UserInitiated");
    assert_eq!(t["stoppedReason"], "e2e done");
    assert_eq!(t["containers"][0]["exitCode"], 137, "{t}");
    for k in ["stoppingAt", "stoppedAt", "executionStoppedAt"] {
        assert!(t[k].is_number(), "{k} missing: {t}");
    }
    assert!(http_get(&format!("127.0.0.1:{host_port}")).is_none_or(|b| !b.contains("hello")));
    // The agent cleans up (cleanup wait 0): no container left.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !e.agent_containers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "containers left: {:?}",
            e.agent_containers()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ecs_failures_show_ecs_stop_codes_and_bad_input_stores_nothing() {
    let Some(e) = Ecs::start(&[]) else { return };
    let image = e.push_busybox("tools:1");
    e.wait_instance("default", 1);

    // An essential container exiting stops the task with its exit code.
    e.register(
        "exit3",
        j!([{"name": "main", "image": image, "memory": 32, "command": ["sh", "-c", "exit 3"]}]),
    );
    let a = e.run_task("exit3");
    // A non-essential sidecar that exits does not stop its task.
    e.register(
        "sidecar",
        j!([
            {"name": "main", "image": image, "memory": 32, "command": ["sleep", "600"], "stopTimeout": 1},
            {"name": "once", "image": image, "memory": 32, "essential": false, "command": ["sh", "-c", "exit 4"]},
        ]),
    );
    let b = e.run_task("sidecar");
    // A missing image never starts.
    e.register(
        "ghost",
        j!([{"name": "main", "image": format!("{}/nope:1", e.srv.addr), "memory": 32}]),
    );
    let c = e.run_task("ghost");

    let ta = e.wait_status(&a, "STOPPED", 60);
    assert_eq!(ta["stopCode"], "EssentialContainerExited", "{ta}");
    assert_eq!(ta["stoppedReason"], "Essential container in task exited");
    assert_eq!(ta["containers"][0]["exitCode"], 3);

    let tc = e.wait_status(&c, "STOPPED", 60);
    assert_eq!(tc["stopCode"], "TaskFailedToStart", "{tc}");
    assert!(
        tc["stoppedReason"]
            .as_str()
            .unwrap_or("")
            .starts_with("CannotPullContainerError"),
        "{tc}"
    );

    e.wait_status(&b, "RUNNING", 60);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = e.describe_task(&b);
        let once = t["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .find(|c| c["name"] == "once")
            .cloned()
            .expect("once");
        if once["lastStatus"] == "STOPPED" {
            assert_eq!(once["exitCode"], 4, "{t}");
            assert_eq!(t["lastStatus"], "RUNNING", "{t}");
            break;
        }
        assert!(Instant::now() < deadline, "sidecar exit not reported: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    e.ok(&["stop-task", "--task", &b]);
    e.ok(&["wait", "tasks-stopped", "--tasks", &b]);

    // Bad task definitions: AWS errors, nothing stored.
    let before = e.ok(&["list-task-definitions"]);
    e.err(
        &["register-task-definition", "--family", "bad", "--container-definitions",
          &j!([{"name": "a", "image": image, "memory": 32}, {"name": "a", "image": image, "memory": 32}]).to_string()],
        "ClientException",
    );
    e.err(
        &[
            "register-task-definition",
            "--family",
            "bad",
            "--container-definitions",
            &j!([{"name": "a", "image": image}]).to_string(),
        ],
        "ClientException",
    );
    e.err(
        &[
            "register-task-definition",
            "--family",
            "bad",
            "--container-definitions",
            &j!([{"name": "a", "memory": 32, "image": ""}]).to_string(),
        ],
        "ClientException",
    );
    e.err(
        &[
            "register-task-definition",
            "--family",
            "bad",
            "--cpu",
            "lots",
            "--container-definitions",
            &j!([{"name": "a", "image": image, "memory": 32}]).to_string(),
        ],
        "ClientException",
    );
    assert_eq!(e.ok(&["list-task-definitions"]), before);
    e.err(
        &["describe-task-definition", "--task-definition", "bad"],
        "ClientException",
    );

    // Nothing fits: failures, not a lie.
    e.register(
        "huge",
        j!([{"name": "a", "image": image, "memory": 100_000_000}]),
    );
    let r = e.ok(&["run-task", "--task-definition", "huge"]);
    assert_eq!(r["tasks"], j!([]));
    assert_eq!(r["failures"][0]["reason"], "RESOURCE:MEMORY", "{r}");

    // Unsigned and wrongly signed calls get the AWS errors.
    let mut cmd = e.aws_cmd();
    cmd.args([
        "ecs",
        "list-clusters",
        "--no-sign-request",
        "--endpoint-url",
        e.api(),
    ]);
    let err = run_fail(&mut cmd);
    assert!(
        err.contains("(MissingAuthenticationTokenException)"),
        "{err}"
    );
    let mut cmd = e.aws_cmd();
    cmd.env(
        "AWS_SECRET_ACCESS_KEY",
        "wrong-secret-wrong-secret-wrong-secret00",
    )
    .args(["ecs", "list-clusters", "--endpoint-url", e.api()]);
    let err = run_fail(&mut cmd);
    assert!(err.contains("(InvalidSignatureException)"), "{err}");
}

#[test]
fn ecs_control_plane_restart_loses_nothing_and_agents_reattach() {
    let Some(mut e) = Ecs::start(&["--heartbeat-grace", "2", "--agent-timeout", "6"]) else {
        return;
    };
    let image = e.push_busybox("sleepy:1");
    e.wait_instance("default", 1);
    // Two engine roots on one host: keep their tasks off the shared default bridge.
    e.register_with(
        "sleepy",
        j!([{"name": "main", "image": image, "memory": 32, "command": ["sleep", "600"], "stopTimeout": 1}]),
        &["--network-mode", "none"],
    );
    let arn = e.run_task("sleepy");
    let t = e.wait_status(&arn, "RUNNING", 60);
    let runtime_id = t["containers"][0]["runtimeId"]
        .as_str()
        .expect("id")
        .to_string();

    // kill -9 the whole server (control plane and local agent); the container keeps running.
    e.srv.restart_serve(&[
        "--task-cleanup-wait",
        "0",
        "--heartbeat-grace",
        "2",
        "--agent-timeout",
        "6",
    ]);
    let t = e.describe_task(&arn);
    assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    assert_eq!(t["containers"][0]["runtimeId"], runtime_id.as_str());
    assert_eq!(
        e.wait_instance("default", 1).len(),
        1,
        "re-registered as the same instance"
    );

    // A second host: `berth agent` in its own process and engine root, joining cluster c2.
    e.ok(&["create-cluster", "--cluster-name", "c2"]);
    let agent_dir = e.dir.path().join("agent2");
    let spawn_agent = |e: &Ecs| {
        Command::new(berth_bin())
            .args([
                "agent",
                "--cluster",
                "c2",
                "--control",
                e.api(),
                "--task-cleanup-wait",
                "0",
            ])
            .arg("--data")
            .arg(agent_dir.join("data"))
            .arg("--engine-root")
            .arg(agent_dir.join("engine"))
            .env("BERTH_ACCESS_KEY_ID", &e.key.0)
            .env("BERTH_SECRET_ACCESS_KEY", &e.key.1)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(e.dir.path().join("agent2.log")).expect("log"))
            .spawn()
            .expect("berth agent")
    };
    let mut agent = spawn_agent(&e);
    let inst = e.wait_instance("c2", 1)[0].clone();
    e.register_with(
        "sleepy2",
        j!([{"name": "main", "image": image, "memory": 32, "command": ["sleep", "600"], "stopTimeout": 1}]),
        &["--network-mode", "none"],
    );
    let r = e.ok(&[
        "run-task",
        "--cluster",
        "c2",
        "--task-definition",
        "sleepy2",
    ]);
    let arn2 = r["tasks"][0]["taskArn"].as_str().expect("arn").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = e.ok(&["describe-tasks", "--cluster", "c2", "--tasks", &arn2]);
        if t["tasks"][0]["lastStatus"] == "RUNNING" {
            break;
        }
        assert!(Instant::now() < deadline, "c2 task not running: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The agent vanishes: disconnected after the grace, its tasks STOPPED after the timeout.
    let _ = agent.kill();
    let _ = agent.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ci = e.ok(&[
            "describe-container-instances",
            "--cluster",
            "c2",
            "--container-instances",
            &inst,
        ]);
        if ci["containerInstances"][0]["agentConnected"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "agent still connected: {ci}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = e.ok(&["describe-tasks", "--cluster", "c2", "--tasks", &arn2]);
        if t["tasks"][0]["lastStatus"] == "STOPPED" {
            assert_eq!(t["tasks"][0]["stopCode"], "TerminationNotice", "{t}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task of the lost agent not stopped: {t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The agent comes back: same instance, and it removes the containers of its stopped task.
    let mut agent = spawn_agent(&e);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ci = e.ok(&[
            "describe-container-instances",
            "--cluster",
            "c2",
            "--container-instances",
            &inst,
        ]);
        let leftovers = run_ok(
            Command::new(berth_bin())
                .env("BERTH_ROOT", agent_dir.join("engine"))
                .env("RUST_LOG", "error")
                .args(["ps", "-a", "-q"]),
        );
        if ci["containerInstances"][0]["agentConnected"] == true && leftovers.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent did not come back or clean up: {ci} {leftovers}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = agent.kill();
    let _ = agent.wait();

    // The reattached local agent still controls the first task.
    e.ok(&["stop-task", "--task", &arn]);
    let t = e.wait_status(&arn, "STOPPED", 30);
    assert_eq!(t["containers"][0]["exitCode"], 137, "{t}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !e.agent_containers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "containers left: {:?}",
            e.agent_containers()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
