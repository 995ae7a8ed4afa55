//! End to end: the unmodified `aws ecs` CLI against `berth serve` (control plane + registry +
//! local agent), running real containers as root. An image built locally (busybox httpd) is
//! pushed to the Berth registry with an ECR token, registered in a task definition, run, fetched
//! from its published port, stopped; failures (essential exit, missing image, bad input) show
//! ECS's codes; a restart of the control plane loses nothing and the agent reattaches; a vanished
//! agent is marked disconnected and its tasks STOPPED.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::ecs::*;
use common::*;
use serde_json::json as j;

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
    let body = http_get(&format!("127.0.0.1:{host_port}"), "/").expect("GET the published port");
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
    assert!(http_get(&format!("127.0.0.1:{host_port}"), "/").is_none_or(|b| !b.contains("hello")));
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
