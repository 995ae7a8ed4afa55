//! The task runner on a real engine (root only): real containers from a busybox image made
//! from Debian's busybox-static, a fake control plane in process that records the reports.
//! Each test has its own engine root, data directory and network names; `Env`'s `Drop`
//! removes containers, sandboxes, volumes, networks and mounts even when the test fails.
//! Without root: skipped with a notice, or failed when `BERTH_REQUIRE_ROOT=1`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_agent::runner::ESSENTIAL_EXITED;
use berth_agent::testing::FakeControl;
use berth_agent::{ControlClient, EngineRuntime, RunnerConfig, Runtime, TaskRunner};
use berth_control::proto::AssignedTask;
use berth_engine::{Engine, RegistryOptions};
use serde_json::{json, Value};

mod common;
use common::unique;

const APPLETS: &[&str] = &[
    "sh", "true", "false", "echo", "sleep", "cat", "httpd", "ls", "test", "touch", "grep", "wget",
    "seq",
];
/// A registry nothing listens on: pulls fail at once and the local image is used.
const IMAGE: &str = "localhost:1/agent-test/bb:1";

struct Env {
    dir: tempfile::TempDir,
    root: PathBuf,
    engine: Engine,
    networks: Vec<String>,
}

impl Env {
    fn new() -> Option<Env> {
        let (dir, root, engine) = common::engine_with_busybox(
            "agent engine tests",
            "berth-agent-test-",
            IMAGE,
            APPLETS,
            "hello from a task\n",
        )?;
        Some(Env {
            dir,
            root,
            engine,
            networks: Vec::new(),
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn runtime(&self) -> Arc<dyn Runtime> {
        Arc::new(EngineRuntime::new(
            self.engine.clone(),
            RegistryOptions::from_env(),
        ))
    }

    fn runner(&self, control: &Arc<FakeControl>, cleanup: Duration) -> TaskRunner {
        TaskRunner::new(
            RunnerConfig {
                cluster: "test".into(),
                data_dir: self.data(),
                task_cleanup_wait: cleanup,
            },
            self.runtime(),
            Arc::clone(control) as Arc<dyn ControlClient>,
        )
    }

    fn container_count(&self) -> usize {
        self.engine.containers(true).map(|c| c.len()).unwrap_or(0)
    }

    fn mounts_under_root(&self) -> Vec<String> {
        let root = self.root.display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(cs) = self.engine.containers(true) {
            for c in cs {
                let _ = self.engine.remove_with_volumes(&c.record.id, true, true);
            }
        }
        // Sandboxes of tasks a failed test left (this root's only).
        if let Ok(ss) = self.engine.sandboxes() {
            for s in ss {
                let _ = self.engine.remove_sandbox(&s.name);
            }
        }
        if let Ok(vs) = self.engine.volumes() {
            for v in vs {
                let _ = self.engine.volume_remove(&v.record.name, true);
            }
        }
        if let Ok(store) = self.engine.network_store() {
            for n in &self.networks {
                let _ = store.remove(n);
            }
        }
        // This root's network daemon (started by the engine for bridge networks), by pid.
        for pid in netd_pids(&self.root.join("netd")) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for m in self.mounts_under_root() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

/// Pids of processes whose arguments are `<exe> netd --root <netd_root>`.
fn netd_pids(netd_root: &Path) -> Vec<i32> {
    let want = netd_root.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.len() >= 4
                    && args[1] == b"netd"
                    && args[2] == b"--root"
                    && args[3] == want.as_bytes()
            })
        })
        .collect()
}

fn getrandom(b: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(b)
}

fn task(arn: &str, network_mode: &str, containers: Value, desired: &str) -> AssignedTask {
    AssignedTask {
        task_arn: arn.into(),
        desired_status: desired.into(),
        last_status: "PROVISIONING".into(),
        task_definition: json!({"family": "agent-test", "revision": 1,
            "networkMode": network_mode,
            "volumes": [{"name": "scratch"}],
            "containerDefinitions": containers}),
        overrides: None,
        network_configuration: None,
        stopped_reason: None,
        launch_type: None,
        stop_timeout_seconds: None,
    }
}

fn new_arn() -> String {
    format!(
        "arn:aws:ecs:us-east-1:000000000000:task/test/{}",
        unique("")
    )
}

async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn last_status(control: &FakeControl, arn: &str) -> Option<String> {
    control.statuses(arn).pop()
}

fn container<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["containerName"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_containers_run_report_and_stop() {
    let Some(env) = Env::new() else { return };
    let control = Arc::new(FakeControl::default());
    let mut runner = env.runner(&control, Duration::ZERO);
    let arn = new_arn();
    let containers = json!([
        {"name": "app", "image": IMAGE, "command": ["sleep", "1000"], "stopTimeout": 2,
         "memory": 64,
         "environment": [{"name": "GREETING", "value": "hi"}],
         "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/scratch"}]},
        {"name": "side", "image": IMAGE, "essential": false,
         "entryPoint": ["sh", "-c"], "command": ["echo $GREETING; exit 3"],
         "environment": [{"name": "GREETING", "value": "side"}]}
    ]);
    runner.apply(&[task(&arn, "none", containers.clone(), "RUNNING")], &[]);
    until("RUNNING, then the side container's exit", 60, || {
        let s = control.statuses(&arn);
        s.len() >= 4 || s.last().is_some_and(|l| l == "STOPPED")
    })
    .await;
    let statuses = control.statuses(&arn);
    assert_eq!(
        statuses[..4],
        ["PENDING", "ACTIVATING", "RUNNING", "RUNNING"],
        "{:#?}",
        control.reports_of(&arn)
    );
    let reports = control.reports_of(&arn);
    let running = &reports[2];
    for name in ["app", "side"] {
        let c = container(running, name);
        let id = c["runtimeId"].as_str().expect("runtimeId");
        assert_eq!(id.len(), 64);
        let info = env.engine.container(id).expect("engine container");
        assert!(info
            .record
            .name
            .starts_with(&format!("ecs-agent-test-1-{name}-")));
        assert!(c["imageDigest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")));
    }
    let change = &reports[3];
    assert_eq!(container(change, "side")["status"], "STOPPED");
    assert_eq!(container(change, "side")["exitCode"], 3);
    assert_eq!(container(change, "app")["status"], "RUNNING");
    // The side container's argv was entryPoint + command with its own environment.
    let side_id = container(running, "side")["runtimeId"]
        .as_str()
        .expect("id")
        .to_string();
    let log = std::fs::read_to_string(env.engine.log_path(&side_id)).expect("log");
    assert!(log.contains("side\\n"), "{log}");
    let app = env
        .engine
        .container(container(running, "app")["runtimeId"].as_str().expect("id"))
        .expect("app");
    assert!(app.state.is_running());
    assert!(app.record.env.contains(&"GREETING=hi".to_string()));
    assert_eq!(app.record.mounts.len(), 1);
    assert_eq!(app.record.options.memory, Some(64 << 20));
    let id = &app.record.id;
    // The container's cgroup is a child of its task's sandbox.
    let sandbox = format!("sandbox-ecs-{}", arn.rsplit('/').next().expect("task id"));
    assert_eq!(
        app.record.options.sandbox.as_deref(),
        sandbox.strip_prefix("sandbox-")
    );
    let limit = [
        format!("/sys/fs/cgroup/memory/berth/{sandbox}/{id}/memory.limit_in_bytes"),
        format!("/sys/fs/cgroup/berth/{sandbox}/{id}/memory.max"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok());
    assert_eq!(limit.as_deref().map(str::trim), Some("67108864"));
    assert_eq!(runner.known_tasks(), vec![arn.clone()]);

    runner.apply(&[task(&arn, "none", containers, "STOPPED")], &[]);
    until("STOPPED", 60, || {
        last_status(&control, &arn).as_deref() == Some("STOPPED")
    })
    .await;
    assert_eq!(
        control.statuses(&arn)[4..],
        ["DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"]
    );
    let stopped = control.reports_of(&arn).pop().expect("stopped");
    // sleep as PID 1 ignores SIGTERM: killed after its 2 s stopTimeout.
    let app_code = container(&stopped, "app")["exitCode"].as_i64();
    assert!(matches!(app_code, Some(137) | Some(143)), "{stopped}");
    assert_eq!(container(&stopped, "side")["exitCode"], 3);
    assert!(stopped["executionStoppedAt"].as_f64().is_some());
    // Cleanup (no wait): containers, the task volume and the record are gone.
    until("cleanup", 30, || runner.known_tasks().is_empty()).await;
    assert_eq!(env.container_count(), 0);
    assert!(env.engine.volumes().expect("volumes").is_empty());
    assert!(std::fs::read_dir(env.data().join("tasks"))
        .expect("tasks dir")
        .next()
        .is_none());
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn essential_exit_stops_the_task() {
    let Some(env) = Env::new() else { return };
    let control = Arc::new(FakeControl::default());
    let mut runner = env.runner(&control, Duration::from_secs(3));
    let arn = new_arn();
    runner.apply(
        &[task(
            &arn,
            "none",
            json!([
                {"name": "main", "image": IMAGE, "command": ["sh", "-c", "sleep 1; exit 5"]},
                {"name": "helper", "image": IMAGE, "essential": false,
                 "command": ["sleep", "1000"], "stopTimeout": 1}
            ]),
            "RUNNING",
        )],
        &[],
    );
    until("STOPPED", 60, || {
        last_status(&control, &arn).as_deref() == Some("STOPPED")
    })
    .await;
    let stopped = control.reports_of(&arn).pop().expect("stopped");
    assert_eq!(stopped["reason"], ESSENTIAL_EXITED);
    assert_eq!(container(&stopped, "main")["exitCode"], 5);
    assert!(container(&stopped, "helper")["exitCode"].as_i64().is_some());
    let statuses = control.statuses(&arn);
    assert!(statuses.contains(&"RUNNING".to_string()), "{statuses:?}");
    // Kept for the cleanup wait (3 s), not running; then removed.
    assert_eq!(env.container_count(), 2);
    assert!(env.engine.containers(false).expect("containers").is_empty());
    assert_eq!(runner.known_tasks(), vec![arn.clone()]);
    until("cleanup", 30, || runner.known_tasks().is_empty()).await;
    assert_eq!(env.container_count(), 0);
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_cannot_pull() {
    let Some(env) = Env::new() else { return };
    let control = Arc::new(FakeControl::default());
    let mut runner = env.runner(&control, Duration::ZERO);
    let arn = new_arn();
    runner.apply(
        &[task(
            &arn,
            "none",
            json!([{"name": "app", "image": "localhost:1/agent-test/missing:1"}]),
            "RUNNING",
        )],
        &[],
    );
    until("STOPPED", 60, || {
        last_status(&control, &arn).as_deref() == Some("STOPPED")
    })
    .await;
    assert_eq!(control.statuses(&arn), vec!["PENDING", "STOPPED"]);
    let stopped = control.reports_of(&arn).pop().expect("stopped");
    let reason = stopped["reason"].as_str().expect("reason");
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    assert_eq!(container(&stopped, "app")["reason"], reason);
    until("cleanup", 30, || runner.known_tasks().is_empty()).await;
    assert_eq!(env.container_count(), 0);

    // A command that does not exist: CannotStartContainerError.
    let arn2 = new_arn();
    runner.apply(
        &[task(
            &arn2,
            "none",
            json!([{"name": "app", "image": IMAGE, "command": ["/no/such/binary"]}]),
            "RUNNING",
        )],
        &[],
    );
    until("STOPPED", 60, || {
        last_status(&control, &arn2).as_deref() == Some("STOPPED")
    })
    .await;
    let stopped = control.reports_of(&arn2).pop().expect("stopped");
    let reason = stopped["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("CannotStartContainerError: "),
        "{reason}"
    );
    until("cleanup", 30, || runner.known_tasks().is_empty()).await;
    assert_eq!(env.container_count(), 0);
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_after_the_runner_is_recreated() {
    let Some(env) = Env::new() else { return };
    let control = Arc::new(FakeControl::default());
    let arn = new_arn();
    let containers = json!([
        {"name": "app", "image": IMAGE, "command": ["sleep", "1000"], "stopTimeout": 1},
        {"name": "late", "image": IMAGE, "essential": false,
         "command": ["sh", "-c", "sleep 3; exit 4"]}
    ]);
    let ids: Vec<String>;
    {
        let mut runner = env.runner(&control, Duration::ZERO);
        runner.apply(&[task(&arn, "none", containers.clone(), "RUNNING")], &[]);
        until("RUNNING", 60, || {
            control.statuses(&arn).contains(&"RUNNING".to_string())
        })
        .await;
        let running = control
            .reports_of(&arn)
            .into_iter()
            .find(|r| r["status"] == "RUNNING")
            .expect("running");
        ids = ["app", "late"]
            .iter()
            .map(|n| {
                container(&running, n)["runtimeId"]
                    .as_str()
                    .expect("id")
                    .to_string()
            })
            .collect();
        drop(runner);
    }
    // No runner while `late` exits.
    let late = env
        .engine
        .wait(&ids[1], Duration::from_secs(30))
        .expect("wait");
    assert_eq!(late.map(|e| e.exit_code), Some(4));
    assert!(env
        .engine
        .container(&ids[0])
        .expect("app")
        .state
        .is_running());

    let mut runner = env.runner(&control, Duration::ZERO);
    assert_eq!(runner.reload().expect("reload"), 1);
    assert_eq!(runner.known_tasks(), vec![arn.clone()]);
    until("the exit noticed after the restart", 30, || {
        control
            .reports_of(&arn)
            .iter()
            .any(|r| r["status"] == "RUNNING" && container(r, "late")["exitCode"] == 4)
    })
    .await;
    // Same containers, none started again.
    assert_eq!(env.container_count(), 2);
    runner.apply(&[task(&arn, "none", containers, "STOPPED")], &[]);
    until("STOPPED", 60, || {
        last_status(&control, &arn).as_deref() == Some("STOPPED")
    })
    .await;
    let stopped = control.reports_of(&arn).pop().expect("stopped");
    assert_eq!(container(&stopped, "app")["runtimeId"], ids[0]);
    assert!(container(&stopped, "app")["exitCode"].as_i64().is_some());
    until("cleanup", 30, || runner.known_tasks().is_empty()).await;
    assert_eq!(env.container_count(), 0);
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awsvpc_task_gets_its_subnet_network() {
    let Some(mut env) = Env::new() else { return };
    let subnet = unique("subnet-");
    env.networks.push(subnet.clone());
    // Created here with an address range of its own (automatic ones could collide with other
    // tests' roots creating networks at the same time); the runner finds it by name.
    let host_nets = berth_net::host_ipv4_networks().expect("host routes");
    let cidr = (0..64)
        .map(|_| {
            let mut b = [0u8; 1];
            let _ = getrandom(&mut b);
            format!("10.213.{}.0/24", b[0])
                .parse::<berth_net::Ipv4Net>()
                .expect("cidr")
        })
        .find(|c| !host_nets.iter().any(|h| h.overlaps(c)))
        .expect("a free /24 in 10.213.0.0/16");
    let opts = berth_net::CreateOptions {
        subnet: Some(cidr),
        ..Default::default()
    };
    env.engine
        .network_store()
        .expect("networks")
        .create(&subnet, opts)
        .expect("create the subnet's network");
    let control = Arc::new(FakeControl::default());
    let mut runner = env.runner(&control, Duration::ZERO);
    let arn = new_arn();
    let mut t = task(
        &arn,
        "awsvpc",
        json!([{"name": "web", "image": IMAGE, "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                "portMappings": [{"containerPort": 8080, "protocol": "tcp"}], "stopTimeout": 1}]),
        "RUNNING",
    );
    t.network_configuration = Some(json!({"awsvpcConfiguration": {"subnets": [subnet]}}));
    runner.apply(&[t.clone()], &[]);
    until("RUNNING", 60, || {
        let s = last_status(&control, &arn);
        s.as_deref() == Some("RUNNING") || s.as_deref() == Some("STOPPED")
    })
    .await;
    let running = control.reports_of(&arn).pop().expect("running");
    assert_eq!(running["status"], "RUNNING", "{running}");
    let binding = &container(&running, "web")["networkBindings"][0];
    assert_eq!(binding["containerPort"], 8080);
    assert_eq!(binding["hostPort"], 8080);
    let ip = binding["bindIP"].as_str().expect("bindIP").to_string();
    let net = env
        .engine
        .network_store()
        .expect("networks")
        .get(&subnet)
        .expect("the subnet's network");
    assert!(ip != "0.0.0.0", "{binding}");
    // Reachable from the host at the task's own address.
    let addr: std::net::SocketAddr = format!("{ip}:8080").parse().expect("addr");
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
            let _ = s.read_to_string(&mut body);
            if body.contains("hello from a task") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no answer from {addr}: {body:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(net.subnet, cidr);
    assert!(cidr.contains(ip.parse().expect("ip")), "{ip} in {cidr}");
    t.desired_status = "STOPPED".into();
    runner.apply(&[t], &[]);
    until("STOPPED", 60, || {
        last_status(&control, &arn).as_deref() == Some("STOPPED")
    })
    .await;
    until("cleanup", 30, || runner.known_tasks().is_empty()).await;
    assert_eq!(env.container_count(), 0);
    runner.shutdown().await;
}

/// Pids of processes whose argv is exactly `args`.
fn pids_with_args(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn health(report: &Value, name: &str) -> Option<String> {
    container(report, name)
        .get("healthStatus")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Real health checks through `exec`: a check that starts passing after 2 s goes UNKNOWN →
/// HEALTHY and releases a `dependsOn HEALTHY`; a failing one and one that times out (its
/// process killed) go UNHEALTHY; the task keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_run_in_the_container() {
    let Some(env) = Env::new() else { return };
    let control = Arc::new(FakeControl::default());
    let mut runner = env.runner(&control, Duration::ZERO);
    let arn = new_arn();
    let slow = unique("");
    let slow_secs = format!(
        "{}",
        3000 + u32::from_str_radix(&slow[..3], 16).unwrap_or(1)
    );
    let containers = json!([
        {"name": "app", "image": IMAGE, "stopTimeout": 1,
         "command": ["sh", "-c", "sleep 2; touch /tmp/ok; exec sleep 1000"],
         "healthCheck": {"command": ["CMD-SHELL", "test -f /tmp/ok"], "interval": 5,
                         "timeout": 2, "retries": 1}},
        {"name": "web", "image": IMAGE, "command": ["sleep", "1000"], "stopTimeout": 1,
         "dependsOn": [{"containerName": "app", "condition": "HEALTHY"}]},
        {"name": "bad", "image": IMAGE, "essential": false, "command": ["sleep", "1000"],
         "stopTimeout": 1,
         "healthCheck": {"command": ["CMD", "false"], "interval": 5, "timeout": 2, "retries": 1}},
        {"name": "slow", "image": IMAGE, "essential": false, "command": ["sleep", "1000"],
         "stopTimeout": 1,
         "healthCheck": {"command": ["CMD", "sleep", slow_secs], "interval": 5, "timeout": 2,
                         "retries": 1}}
    ]);
    let started = Instant::now();
    runner.apply(&[task(&arn, "none", containers.clone(), "RUNNING")], &[]);
    until("RUNNING", 60, || {
        control
            .statuses(&arn)
            .iter()
            .any(|s| s == "RUNNING" || s == "STOPPED")
    })
    .await;
    let reports = control.reports_of(&arn);
    let running = reports
        .iter()
        .find(|r| r["status"] == "RUNNING")
        .unwrap_or_else(|| panic!("not RUNNING: {reports:#?}"));
    // The first probe runs 5 s after the start: web could not start earlier.
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(health(running, "app").as_deref(), Some("HEALTHY"));
    assert_eq!(health(running, "web"), None);
    let activating: Vec<&Value> = reports
        .iter()
        .filter(|r| r["status"] == "ACTIVATING")
        .collect();
    assert_eq!(health(activating[0], "app").as_deref(), Some("UNKNOWN"));
    assert!(
        activating
            .iter()
            .any(|r| health(r, "app").as_deref() == Some("HEALTHY")
                && container(r, "web").get("runtimeId").is_none()),
        "HEALTHY reported before web started: {reports:#?}"
    );
    // The failing and the hanging checks: UNHEALTHY (timeout 2 s after the probe at 5 s).
    until("bad and slow UNHEALTHY", 60, || {
        control.reports_of(&arn).last().is_some_and(|r| {
            health(r, "bad").as_deref() == Some("UNHEALTHY")
                && health(r, "slow").as_deref() == Some("UNHEALTHY")
        })
    })
    .await;
    // The timed-out check's process was killed in the container (the next probe starts 5 s
    // after the last one ended, so between probes none may run).
    let args = ["sleep", slow_secs.as_str()];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_gone = false;
    while Instant::now() < deadline {
        if pids_with_args(&args).is_empty() {
            seen_gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_gone, "the timed-out check process lives on");
    // UNHEALTHY does not stop the task.
    assert_eq!(last_status(&control, &arn).as_deref(), Some("RUNNING"));
    let app_id = container(running, "app")["runtimeId"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(env
        .engine
        .container(&app_id)
        .expect("app")
        .state
        .is_running());

    runner.apply(&[task(&arn, "none", containers, "STOPPED")], &[]);
    until("STOPPED", 60, || {
        last_status(&control, &arn).as_deref() == Some("STOPPED")
    })
    .await;
    until("cleanup", 30, || runner.known_tasks().is_empty()).await;
    assert_eq!(env.container_count(), 0);
    assert!(pids_with_args(&args).is_empty());
    runner.shutdown().await;
}

/// A subnet network of its own (a /24 in 10.215.0.0/16 that no host route overlaps).
fn subnet_network(env: &mut Env) -> (String, berth_net::Ipv4Net) {
    let subnet = unique("subnet-");
    env.networks.push(subnet.clone());
    let host_nets = berth_net::host_ipv4_networks().expect("host routes");
    let cidr = (0..64)
        .map(|_| {
            let mut b = [0u8; 1];
            let _ = getrandom(&mut b);
            format!("10.215.{}.0/24", b[0])
                .parse::<berth_net::Ipv4Net>()
                .expect("cidr")
        })
        .find(|c| !host_nets.iter().any(|h| h.overlaps(c)))
        .expect("a free /24 in 10.215.0.0/16");
    let opts = berth_net::CreateOptions {
        subnet: Some(cidr),
        ..Default::default()
    };
    env.engine
        .network_store()
        .expect("networks")
        .create(&subnet, opts)
        .expect("create the subnet's network");
    (subnet, cidr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awsvpc_containers_share_localhost_and_tasks_get_their_own_address() {
    let Some(mut env) = Env::new() else { return };
    let (subnet, cidr) = subnet_network(&mut env);
    let control = Arc::new(FakeControl::default());
    let mut runner = env.runner(&control, Duration::ZERO);
    let nc = json!({"awsvpcConfiguration": {"subnets": [subnet]}});
    let (a, b) = (new_arn(), new_arn());
    let mut ta = task(
        &a,
        "awsvpc",
        json!([
            {"name": "web", "image": IMAGE, "command": ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
             "stopTimeout": 1},
            {"name": "client", "image": IMAGE, "essential": false, "command": ["sh", "-c",
             "for i in $(seq 1 100); do wget -q -O - http://127.0.0.1:8080/index.html && exit 0; sleep 0.1; done; exit 1"]}
        ]),
        "RUNNING",
    );
    ta.task_definition["memory"] = json!("128");
    ta.task_definition["cpu"] = json!("256");
    ta.network_configuration = Some(nc.clone());
    let mut tb = task(
        &b,
        "awsvpc",
        json!([{"name": "app", "image": IMAGE, "command": ["sleep", "60"], "stopTimeout": 1}]),
        "RUNNING",
    );
    tb.network_configuration = Some(nc);
    runner.apply(&[ta.clone(), tb.clone()], &[]);
    // The client reached the web container over the task's loopback and exited 0.
    until("the client's exit", 60, || {
        control.reports_of(&a).iter().any(|r| {
            r["containers"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["containerName"] == "client" && c["status"] == "STOPPED")
            })
        }) || last_status(&control, &a).as_deref() == Some("STOPPED")
    })
    .await;
    let ra = control.reports_of(&a).pop().expect("report");
    assert_eq!(container(&ra, "client")["exitCode"], 0, "{ra}");
    assert_eq!(ra["status"], "RUNNING", "{ra}");
    until("b RUNNING", 60, || {
        let s = last_status(&control, &b);
        s.as_deref() == Some("RUNNING") || s.as_deref() == Some("STOPPED")
    })
    .await;
    let rb = control.reports_of(&b).pop().expect("report");
    let ip_a = ra["taskNetwork"]["privateIpv4Address"]
        .as_str()
        .expect("taskNetwork of a")
        .to_string();
    let ip_b = rb["taskNetwork"]["privateIpv4Address"]
        .as_str()
        .expect("taskNetwork of b")
        .to_string();
    assert_ne!(ip_a, ip_b);
    for (r, ip) in [(&ra, &ip_a), (&rb, &ip_b)] {
        assert_eq!(r["taskNetwork"]["network"], subnet.as_str());
        assert!(r["taskNetwork"]["macAddress"].as_str().is_some(), "{r}");
        assert!(cidr.contains(ip.parse().expect("ip")), "{ip} in {cidr}");
    }
    // Task a's limits are its sandbox's.
    let id_a = a.rsplit('/').next().expect("id");
    let cg_a = format!("/berth/sandbox-ecs-{id_a}");
    let mounts = berth_runtime::cgroup::mounts().expect("mounts");
    let limits =
        berth_runtime::cgroup::read_parent_limits(&mounts, Path::new(&cg_a)).expect("limits");
    assert_eq!(limits.memory_bytes, Some(128 << 20));
    assert_eq!(limits.cpu_quota_us, Some(25_000));
    let sandboxes = env.engine.sandboxes().expect("sandboxes");
    assert_eq!(sandboxes.len(), 2);
    let netns: Vec<PathBuf> = sandboxes
        .iter()
        .filter_map(|s| s.netns().map(Path::to_path_buf))
        .collect();
    assert_eq!(netns.len(), 2);

    ta.desired_status = "STOPPED".into();
    tb.desired_status = "STOPPED".into();
    runner.apply(&[ta, tb], &[]);
    until("cleanup", 60, || runner.known_tasks().is_empty()).await;
    assert_eq!(env.container_count(), 0);
    assert!(env.engine.sandboxes().expect("sandboxes").is_empty());
    for ns in &netns {
        assert!(!ns.exists(), "{}", ns.display());
    }
    let dirs = berth_runtime::cgroup::dirs(&mounts, Path::new(&cg_a)).expect("dirs");
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?}");
    let store = env.engine.network_store().expect("store");
    let net = store.get(&subnet).expect("net");
    assert!(store.endpoints(&net).expect("endpoints").is_empty());
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fargate_tasks_write_into_their_ephemeral_storage() {
    let Some(env) = Env::new() else { return };
    let control = Arc::new(FakeControl::default());
    let mut runner = env.runner(&control, Duration::ZERO);
    let arn = new_arn();
    let mut t = task(
        &arn,
        "none",
        json!([{"name": "app", "image": IMAGE, "command": ["sh", "-c", "echo data > /file; sleep 60"],
                "stopTimeout": 1}]),
        "RUNNING",
    );
    t.launch_type = Some("FARGATE".into());
    t.task_definition["ephemeralStorage"] = json!({"sizeInGiB": 21});
    runner.apply(std::slice::from_ref(&t), &[]);
    until("RUNNING", 60, || {
        let s = last_status(&control, &arn);
        s.as_deref() == Some("RUNNING") || s.as_deref() == Some("STOPPED")
    })
    .await;
    let running = control.reports_of(&arn).pop().expect("report");
    assert_eq!(running["status"], "RUNNING", "{running}");
    let sandboxes = env.engine.sandboxes().expect("sandboxes");
    assert_eq!(sandboxes.len(), 1);
    let sb = &sandboxes[0];
    assert_eq!(sb.storage_bytes, Some(21 << 30));
    let scratch = sb.scratch.clone().expect("scratch");
    let id = container(&running, "app")["runtimeId"]
        .as_str()
        .expect("id")
        .to_string();
    let file = scratch.join(&id).join("upper/file");
    until("the container's write", 30, || file.exists()).await;
    t.desired_status = "STOPPED".into();
    runner.apply(&[t], &[]);
    until("cleanup", 60, || runner.known_tasks().is_empty()).await;
    assert!(env.engine.sandboxes().expect("sandboxes").is_empty());
    assert!(!scratch.exists(), "{}", scratch.display());
    runner.shutdown().await;
}
