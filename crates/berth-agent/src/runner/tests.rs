//! The runner's lifecycle logic against a fake engine and a fake control plane (no root).

use berth_control::proto::AssignedTask;
use serde_json::json;

use super::*;
use crate::health::HealthStatus;
use crate::testing::{FakeControl, FakeRuntime};

const ARN: &str =
    "arn:aws:ecs:us-east-1:000000000000:task/default/11112222333344445555666677778888";

fn task(containers: serde_json::Value, desired: &str) -> AssignedTask {
    AssignedTask {
        task_arn: ARN.into(),
        desired_status: desired.into(),
        last_status: "PROVISIONING".into(),
        task_definition: json!({"family": "fam", "revision": 1, "networkMode": "none",
            "volumes": [{"name": "scratch"}],
            "containerDefinitions": containers}),
        overrides: None,
        network_configuration: None,
        stopped_reason: None,
        launch_type: None,
        stop_timeout_seconds: None,
    }
}

fn runner(
    dir: &std::path::Path,
    rt: &Arc<FakeRuntime>,
    control: &Arc<FakeControl>,
    cleanup: Duration,
) -> TaskRunner {
    TaskRunner::new(
        RunnerConfig {
            cluster: "default".into(),
            data_dir: dir.to_path_buf(),
            task_cleanup_wait: cleanup,
        },
        Arc::clone(rt) as Arc<dyn Runtime>,
        Arc::clone(control) as Arc<dyn ControlClient>,
    )
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn container<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["containerName"] == name))
        .expect("container in report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_start_exit_stop_cleanup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
    let containers = json!([
        {"name": "app", "image": "bb", "command": ["sleep"], "mountPoints": [
            {"sourceVolume": "scratch", "containerPath": "/s"}]},
        {"name": "side", "image": "bb", "essential": false, "command": ["exit", "3"]}
    ]);
    r.apply(&[task(containers.clone(), "RUNNING")], &[]);
    until("RUNNING and the side exit", || {
        let s = control.statuses(ARN);
        s.len() >= 4 && s[..4] == ["PENDING", "ACTIVATING", "RUNNING", "RUNNING"]
    })
    .await;
    let reports = control.reports_of(ARN);
    assert!(reports[0]["pullStartedAt"].as_f64().is_some());
    assert!(reports[1]["pullStoppedAt"].as_f64().is_some());
    let running = &reports[2];
    assert_eq!(running["cluster"], "default");
    assert!(container(running, "app")["runtimeId"].as_str().is_some());
    assert!(container(running, "app")["imageDigest"].as_str().is_some());
    let side = container(&reports[3], "side");
    assert_eq!(side["status"], "STOPPED");
    assert_eq!(side["exitCode"], 3);
    assert_eq!(container(&reports[3], "app")["status"], "RUNNING");
    assert_eq!(r.known_tasks(), vec![ARN.to_string()]);
    // The pull failed (no registry) and the local image was used.
    assert!(rt.events().iter().any(|e| e == "pull bb"));
    let record = TaskStore::new(dir.path()).load_all().expect("load");
    assert_eq!(record[0].status, TaskStatus::Running);

    r.apply(&[task(containers, "STOPPED")], &[]);
    until("STOPPED", || {
        control.statuses(ARN).last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    assert_eq!(
        control.statuses(ARN)[4..],
        ["DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"]
    );
    let stopped = control.reports_of(ARN).pop().expect("report");
    assert_eq!(container(&stopped, "app")["exitCode"], 143);
    assert_eq!(container(&stopped, "side")["exitCode"], 3);
    assert_eq!(stopped["reason"], "Task stopped");
    assert!(stopped["executionStoppedAt"].as_f64().is_some());
    until("cleanup", || r.known_tasks().is_empty()).await;
    assert!(rt.lock().containers.is_empty());
    assert_eq!(rt.lock().volumes_removed.len(), 1);
    assert!(TaskStore::new(dir.path())
        .load_all()
        .expect("load")
        .is_empty());
    // Listed again by a late poll: reported as stopped, never started again.
    r.apply(
        &[task(json!([{"name": "app", "image": "bb"}]), "RUNNING")],
        &[],
    );
    until("re-report", || control.statuses(ARN).len() == 9).await;
    assert_eq!(control.statuses(ARN)[8], "STOPPED");
    assert!(r.known_tasks().is_empty());
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn essential_exit_stops_the_task_in_reverse_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&[], &["bb"]);
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::from_secs(3600));
    r.apply(
        &[task(
            json!([
                {"name": "web", "image": "bb", "command": ["sleep"],
                 "dependsOn": [{"containerName": "db", "condition": "START"}]},
                {"name": "db", "image": "bb", "command": ["sleep"]}
            ]),
            "RUNNING",
        )],
        &[],
    );
    until("RUNNING", || {
        control.statuses(ARN).contains(&"RUNNING".to_string())
    })
    .await;
    rt.exit_container("ecs-fam-1-db-", 1);
    until("STOPPED", || {
        control.statuses(ARN).last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    let stopped = control.reports_of(ARN).pop().expect("report");
    assert_eq!(stopped["reason"], ESSENTIAL_EXITED);
    assert_eq!(container(&stopped, "db")["exitCode"], 1);
    assert_eq!(container(&stopped, "web")["exitCode"], 143);
    let ev: Vec<String> = rt
        .events()
        .into_iter()
        .filter(|e| e.starts_with("run") || e.starts_with("stop"))
        .collect();
    // db starts first; web (which depends on db) stops first; db had exited already.
    assert_eq!(ev, vec!["run db", "run web", "stop web"]);
    // Not cleaned up yet (1 h wait): still known, containers kept.
    assert_eq!(r.known_tasks(), vec![ARN.to_string()]);
    assert_eq!(rt.lock().containers.len(), 2);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_the_control_plane_forgot_is_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::from_millis(300));
    r.apply(
        &[task(
            json!([{"name": "app", "image": "bb", "command": ["sleep"]}]),
            "RUNNING",
        )],
        &[],
    );
    until("RUNNING", || {
        control.statuses(ARN).contains(&"RUNNING".to_string())
    })
    .await;
    r.apply(&[], &[ARN.to_string()]);
    until("STOPPED", || {
        control.statuses(ARN).last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    let stopped = control.reports_of(ARN).pop().expect("report");
    assert_eq!(
        stopped["reason"],
        "The task is unknown to the control plane"
    );
    assert_eq!(container(&stopped, "app")["exitCode"], 143);
    // Kept for the cleanup wait, then removed.
    assert_eq!(rt.lock().containers.len(), 1);
    until("cleanup", || r.known_tasks().is_empty()).await;
    assert!(rt.lock().containers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_failure_and_start_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
    r.apply(
        &[task(
            json!([{"name": "app", "image": "nothere"}]),
            "RUNNING",
        )],
        &[],
    );
    until("STOPPED", || {
        control.statuses(ARN).last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    assert_eq!(control.statuses(ARN), vec!["PENDING", "STOPPED"]);
    let stopped = control.reports_of(ARN).pop().expect("report");
    let reason = stopped["reason"].as_str().expect("reason");
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    assert_eq!(container(&stopped, "app")["reason"], reason);
    assert!(container(&stopped, "app").get("runtimeId").is_none());
    until("cleanup", || r.known_tasks().is_empty()).await;

    let other = "arn:aws:ecs:us-east-1:000000000000:task/default/99990000";
    let mut t = task(
        json!([{"name": "ok", "image": "bb", "command": ["sleep"]},
               {"name": "broken", "image": "bb", "command": ["bad"],
                "dependsOn": [{"containerName": "ok", "condition": "START"}]}]),
        "RUNNING",
    );
    t.task_arn = other.into();
    r.apply(&[t], &[]);
    until("STOPPED", || {
        control.statuses(other).last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    assert_eq!(
        control.statuses(other),
        vec!["PENDING", "ACTIVATING", "STOPPED"]
    );
    let stopped = control.reports_of(other).pop().expect("report");
    let reason = stopped["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("CannotCreateContainerError: "),
        "{reason}"
    );
    // The container that had started was stopped.
    assert_eq!(container(&stopped, "ok")["exitCode"], 143);
    assert_eq!(container(&stopped, "broken")["status"], "STOPPED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_dependency_gates_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
    let containers = |code: &str| {
        json!([
            {"name": "app", "image": "bb", "command": ["sleep"],
             "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
            {"name": "init", "image": "bb", "essential": false, "command": ["exit", code]}
        ])
    };
    r.apply(&[task(containers("0"), "RUNNING")], &[]);
    until("RUNNING", || {
        control.statuses(ARN).contains(&"RUNNING".to_string())
    })
    .await;
    let ev: Vec<String> = rt
        .events()
        .into_iter()
        .filter(|e| e.starts_with("run"))
        .collect();
    assert_eq!(ev, vec!["run init", "run app"]);
    let running = control
        .reports_of(ARN)
        .into_iter()
        .find(|r| r["status"] == "RUNNING")
        .expect("running");
    assert_eq!(container(&running, "init")["exitCode"], 0);

    let other = "arn:aws:ecs:us-east-1:000000000000:task/default/77770000";
    let mut t = task(containers("2"), "RUNNING");
    t.task_arn = other.into();
    r.apply(&[t], &[]);
    until("STOPPED", || {
        control.statuses(other).last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    let stopped = control.reports_of(other).pop().expect("report");
    assert!(stopped["reason"]
        .as_str()
        .is_some_and(|r| r.contains("dependency init") && r.contains("code 2")));
    assert_eq!(container(&stopped, "init")["exitCode"], 2);
    assert!(container(&stopped, "app").get("runtimeId").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_after_a_restart_notices_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    let containers = json!([
        {"name": "app", "image": "bb", "command": ["sleep"]},
        {"name": "side", "image": "bb", "essential": false, "command": ["sleep"]}
    ]);
    {
        let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
        r.apply(&[task(containers.clone(), "RUNNING")], &[]);
        until("RUNNING", || {
            control.statuses(ARN).contains(&"RUNNING".to_string())
        })
        .await;
        let path = TaskStore::new(dir.path()).path(ARN);
        until("acked", || {
            std::fs::read(&path)
                .ok()
                .and_then(|d| serde_json::from_slice::<TaskRecord>(&d).ok())
                .and_then(|r| r.acked_status)
                == Some(TaskStatus::Running)
        })
        .await;
        r.shutdown().await;
    }
    // While no agent runs, the side container exits.
    rt.exit_container("ecs-fam-1-side-", 7);
    let n = control.reports().len();
    let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
    assert_eq!(r.reload().expect("reload"), 1);
    assert_eq!(r.known_tasks(), vec![ARN.to_string()]);
    until("side exit reported", || control.reports().len() > n).await;
    let report = control.reports_of(ARN).pop().expect("report");
    assert_eq!(report["status"], "RUNNING");
    assert_eq!(container(&report, "side")["exitCode"], 7);
    // The app container is watched again: its exit stops the task.
    rt.exit_container("ecs-fam-1-app-", 0);
    until("STOPPED", || {
        control.statuses(ARN).last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    let stopped = control.reports_of(ARN).pop().expect("report");
    assert_eq!(stopped["reason"], ESSENTIAL_EXITED);
    // No container was started twice.
    assert_eq!(
        rt.events().iter().filter(|e| e.starts_with("run")).count(),
        2
    );
    until("cleanup", || r.known_tasks().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_token_is_used_for_its_registry_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&[], &["127.0.0.1:5000/app:1", "busybox"]);
    let control = Arc::new(FakeControl::default());
    control.set_ecr_token(EcrToken {
        proxy_endpoint: "http://127.0.0.1:5000".into(),
        username: "AWS".into(),
        password: "tok".into(),
        expires_at: SystemTime::now() + Duration::from_secs(3600),
    });
    let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
    r.apply(
        &[task(
            json!([{"name": "a", "image": "127.0.0.1:5000/app:1", "command": ["sleep"]},
                   {"name": "b", "image": "busybox", "command": ["sleep"]}]),
            "RUNNING",
        )],
        &[],
    );
    until("RUNNING", || {
        control.statuses(ARN).contains(&"RUNNING".to_string())
    })
    .await;
    let auths = rt.lock().auths.clone();
    assert_eq!(auths.len(), 2);
    let a = auths[0].as_ref().expect("ECR credentials");
    assert_eq!(
        (a.domain.as_str(), a.username.as_str(), a.password.as_str()),
        ("127.0.0.1:5000", "AWS", "tok")
    );
    assert!(auths[1].is_none());
    r.shutdown().await;
}

/// Waits in paused time (the clock jumps to the next timer when everything is idle).
async fn until_paused(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn health_of(report: &Value, name: &str) -> Option<String> {
    container(report, name)
        .get("healthStatus")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `dependsOn HEALTHY` waits for the dependency's health check; health changes are reported
/// with the task's current status; an UNHEALTHY essential container does not stop the task.
#[tokio::test(start_paused = true)]
async fn health_checks_gate_healthy_dependencies_and_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
    let containers = json!([
        {"name": "web", "image": "bb", "command": ["sleep"],
         "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
        {"name": "db", "image": "bb", "command": ["sleep"],
         "healthCheck": {"command": ["CMD", "flag", "db-ready"], "interval": 5, "timeout": 2,
                         "retries": 2}}
    ]);
    r.apply(&[task(containers.clone(), "RUNNING")], &[]);
    until_paused("db started", || rt.id_of("ecs-fam-1-db-").is_some()).await;
    let db = rt.id_of("ecs-fam-1-db-").expect("db");
    // Failing checks: db stays UNKNOWN (then UNHEALTHY would fail the start; let one fail).
    until_paused("a probe", || !rt.probe_times(&db).is_empty()).await;
    assert_eq!(rt.probe_times(&db), vec![5]);
    assert!(rt.id_of("ecs-fam-1-web-").is_none(), "web waits for db");
    assert_eq!(control.statuses(ARN), vec!["PENDING", "ACTIVATING"]);
    let activating = control.reports_of(ARN).pop().expect("report");
    assert_eq!(health_of(&activating, "db").as_deref(), Some("UNKNOWN"));
    assert_eq!(
        health_of(&activating, "web"),
        None,
        "no health check: no healthStatus"
    );
    rt.set_flag("db-ready", true);
    until_paused("RUNNING", || {
        control.statuses(ARN).contains(&"RUNNING".to_string())
    })
    .await;
    let reports = control.reports_of(ARN);
    // The health change went out by itself (status still ACTIVATING), before web started.
    let healthy = &reports[2];
    assert_eq!(healthy["status"], "ACTIVATING");
    assert_eq!(health_of(healthy, "db").as_deref(), Some("HEALTHY"));
    assert!(container(healthy, "web").get("runtimeId").is_none());
    assert_eq!(rt.probe_times(&db), vec![5, 10]);
    let running = &reports[3];
    assert_eq!(running["status"], "RUNNING");
    assert_eq!(health_of(running, "db").as_deref(), Some("HEALTHY"));
    let events: Vec<String> = rt
        .events()
        .into_iter()
        .filter(|e| e.starts_with("run"))
        .collect();
    assert_eq!(events, vec!["run db", "run web"]);

    // Failing again: UNHEALTHY after 2 failures, reported; the task keeps running.
    rt.set_flag("db-ready", false);
    until_paused("UNHEALTHY", || {
        control
            .reports_of(ARN)
            .last()
            .and_then(|r| health_of(r, "db"))
            .as_deref()
            == Some("UNHEALTHY")
    })
    .await;
    let unhealthy = control.reports_of(ARN).pop().expect("report");
    assert_eq!(unhealthy["status"], "RUNNING");
    assert_eq!(rt.probe_times(&db), vec![5, 10, 15, 20]);
    let record = TaskStore::new(dir.path()).load_all().expect("load");
    assert_eq!(
        record[0].container("db").and_then(|c| c.health_status),
        Some(HealthStatus::Unhealthy)
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(control.statuses(ARN).iter().all(|s| s != "STOPPED"));
    assert!(rt.lock().containers.values().all(|(_, e)| e.is_none()));
    // Probes go on (every 5 s) and see the recovery.
    rt.set_flag("db-ready", true);
    until_paused("HEALTHY again", || {
        control
            .reports_of(ARN)
            .last()
            .and_then(|r| health_of(r, "db"))
            .as_deref()
            == Some("HEALTHY")
    })
    .await;

    // Stopping the task stops the probes.
    r.apply(&[task(containers, "STOPPED")], &[]);
    until_paused("STOPPED", || {
        control.statuses(ARN).last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    let probes = rt.lock().probes.len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(rt.lock().probes.len(), probes);
    r.shutdown().await;
}

/// A HEALTHY dependency that turns UNHEALTHY (or has failing checks from the start) fails
/// the task's start.
#[tokio::test(start_paused = true)]
async fn unhealthy_dependency_fails_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::from_secs(3600));
    let containers = json!([
        {"name": "web", "image": "bb", "command": ["sleep"],
         "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
        {"name": "db", "image": "bb", "command": ["sleep"],
         "healthCheck": {"command": ["CMD", "hang"], "interval": 5, "timeout": 2,
                         "retries": 2, "startPeriod": 10}}
    ]);
    r.apply(&[task(containers, "RUNNING")], &[]);
    until_paused("STOPPED", || {
        control.statuses(ARN).last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    let stopped = control.reports_of(ARN).pop().expect("report");
    assert_eq!(
        stopped["reason"],
        "CannotStartContainerError: dependency db of container web is UNHEALTHY (condition HEALTHY)"
    );
    assert_eq!(health_of(&stopped, "db").as_deref(), Some("UNHEALTHY"));
    assert!(container(&stopped, "web").get("runtimeId").is_none());
    // The timeout of the probe at 5 s ended (7 s) within the 10 s start period: not counted.
    // The next ones (12 s, 19 s; Docker judges a result by when it arrives) made it UNHEALTHY.
    let db = rt.id_of("ecs-fam-1-db-").expect("db");
    assert_eq!(rt.probe_times(&db), vec![5, 12, 19]);
    assert_eq!(
        control.statuses(ARN),
        vec!["PENDING", "ACTIVATING", "ACTIVATING", "STOPPED"]
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awsvpc_task_runs_in_one_sandbox_and_reports_its_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
    let mut t = task(
        json!([
            {"name": "web", "image": "bb", "command": ["sleep"],
             "portMappings": [{"containerPort": 8080}]},
            {"name": "side", "image": "bb", "command": ["sleep"]}
        ]),
        "RUNNING",
    );
    t.task_definition["networkMode"] = json!("awsvpc");
    t.task_definition["cpu"] = json!("256");
    t.task_definition["memory"] = json!("512");
    t.network_configuration = Some(json!({"awsvpcConfiguration": {"subnets": ["subnet-a"]}}));
    r.apply(std::slice::from_ref(&t), &[]);
    until("RUNNING", || {
        control.statuses(ARN).contains(&"RUNNING".to_string())
    })
    .await;
    let sandbox = sandbox_name(&task_id(ARN));
    {
        let i = rt.lock();
        let (spec, addr) = i.sandboxes.get(&sandbox).expect("the task's sandbox");
        assert_eq!(spec.network.as_deref(), Some("subnet-a"));
        assert_eq!(spec.cpu_units, Some(256));
        assert_eq!(spec.memory_bytes, Some(512 << 20));
        assert!(addr.is_some());
        // Both containers in it, without a network of their own.
        assert_eq!(i.containers.len(), 2);
        for (spec, _) in i.containers.values() {
            assert_eq!(spec.sandbox.as_deref(), Some(sandbox.as_str()));
            assert_eq!(spec.network, berth_engine::Network::None);
        }
    }
    let reports = control.reports_of(ARN);
    // Before the sandbox exists (PENDING) no taskNetwork; from then on, in every report.
    assert!(reports[0].get("taskNetwork").is_none(), "{}", reports[0]);
    let running = reports
        .iter()
        .find(|r| r["status"] == "RUNNING")
        .expect("RUNNING report");
    assert_eq!(
        running["taskNetwork"],
        json!({"network": "subnet-a", "privateIpv4Address": "10.9.0.2",
               "macAddress": "02:42:0a:09:00:02"})
    );
    let binding = &container(running, "web")["networkBindings"][0];
    assert_eq!(binding["bindIP"], "10.9.0.2");
    assert_eq!(binding["hostPort"], 8080);
    // Kept in the task record (a restarted agent reports it too).
    let rec = TaskStore::new(dir.path()).load_all().expect("load");
    assert_eq!(
        rec[0]
            .task_network
            .as_ref()
            .map(|n| n.private_ipv4_address.as_str()),
        Some("10.9.0.2")
    );

    t.desired_status = "STOPPED".into();
    r.apply(&[t], &[]);
    until("cleanup", || r.known_tasks().is_empty()).await;
    let stopped = control.reports_of(ARN).pop().expect("report");
    assert_eq!(stopped["status"], "STOPPED");
    assert_eq!(stopped["taskNetwork"]["privateIpv4Address"], "10.9.0.2");
    assert!(rt.lock().sandboxes.is_empty(), "sandbox left behind");
    assert!(rt.events().contains(&format!("remove-sandbox {sandbox}")));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_tasks_get_a_sandbox_with_the_task_limits_and_no_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
    let mut t = task(
        json!([{"name": "app", "image": "bb", "command": ["sleep"]}]),
        "RUNNING",
    );
    t.task_definition["networkMode"] = json!("bridge");
    t.task_definition["memory"] = json!("512");
    t.overrides = Some(json!({"cpu": "1024", "memory": "128"}));
    r.apply(std::slice::from_ref(&t), &[]);
    until("RUNNING", || {
        control.statuses(ARN).contains(&"RUNNING".to_string())
    })
    .await;
    {
        let i = rt.lock();
        let (spec, addr) = i.sandboxes.values().next().expect("a sandbox");
        assert_eq!(spec.network, None);
        assert_eq!(addr, &None);
        assert_eq!(spec.cpu_units, Some(1024));
        assert_eq!(spec.memory_bytes, Some(128 << 20));
    }
    assert!(control
        .reports_of(ARN)
        .iter()
        .all(|r| r.get("taskNetwork").is_none()));
    r.apply(&[], &[ARN.to_string()]);
    until("cleanup", || r.known_tasks().is_empty()).await;
    assert!(rt.lock().sandboxes.is_empty(), "sandbox left behind");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sandbox_fails_the_start_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    rt.lock().fail_sandboxes = true;
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
    r.apply(
        &[task(
            json!([{"name": "app", "image": "bb", "command": ["sleep"]}]),
            "RUNNING",
        )],
        &[],
    );
    until("cleanup", || r.known_tasks().is_empty()).await;
    let stopped = control.reports_of(ARN).pop().expect("report");
    assert_eq!(stopped["status"], "STOPPED");
    assert!(
        stopped["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("ResourceInitializationError")),
        "{stopped}"
    );
    assert!(rt.lock().containers.is_empty());
    assert!(rt.events().iter().any(|e| e.starts_with("remove-sandbox")));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_planes_stop_timeout_replaces_stop_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    let mut r = runner(dir.path(), &rt, &control, Duration::from_secs(3600));
    let mut t = task(
        json!([{"name": "app", "image": "bb", "command": ["sleep"], "stopTimeout": 90}]),
        "RUNNING",
    );
    r.apply(std::slice::from_ref(&t), &[]);
    until("RUNNING", || {
        control.statuses(ARN).contains(&"RUNNING".to_string())
    })
    .await;
    t.desired_status = "STOPPED".into();
    t.stop_timeout_seconds = Some(2);
    r.apply(&[t], &[]);
    until("STOPPED", || {
        control.statuses(ARN).last().map(String::as_str) == Some("STOPPED")
    })
    .await;
    let timeouts = rt.lock().stop_timeouts.clone();
    assert_eq!(timeouts.len(), 1, "{timeouts:?}");
    assert_eq!(timeouts[0].1, Duration::from_secs(2));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepull_pulls_missing_images_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["local"], &["remote"]);
    let control = Arc::new(FakeControl::default());
    let r = runner(dir.path(), &rt, &control, Duration::ZERO);
    let images = vec!["local".to_string(), "remote".into(), "missing".into()];
    r.prepull(&images);
    r.prepull(&images);
    until("prepulls", || {
        let p = r.prepull.lock().unwrap_or_else(|p| p.into_inner());
        p.in_flight.is_empty()
    })
    .await;
    let pulls = |img: &str| {
        rt.events()
            .iter()
            .filter(|e| **e == format!("pull {img}"))
            .count()
    };
    // Present: not pulled; missing: pulled (at most once per call while in flight).
    assert_eq!(pulls("local"), 0);
    assert_eq!(pulls("remote"), 1);
    assert!(rt.local_image("remote").is_some());
    assert!((1..=2).contains(&pulls("missing")));
    // Pulled ones are not pulled again; a failed one is tried again.
    r.prepull(&images);
    until("prepulls", || {
        let p = r.prepull.lock().unwrap_or_else(|p| p.into_inner());
        p.in_flight.is_empty()
    })
    .await;
    assert_eq!(pulls("remote"), 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removes_sandboxes_of_tasks_it_no_longer_has() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = FakeRuntime::with_images(&["bb"], &[]);
    let control = Arc::new(FakeControl::default());
    for name in ["ecs-gone", "other-owner"] {
        rt.create_sandbox(&berth_engine::SandboxSpec {
            name: name.into(),
            ..Default::default()
        })
        .expect("sandbox");
    }
    let mut r = runner(dir.path(), &rt, &control, Duration::ZERO);
    r.reload().expect("reload");
    let left: Vec<String> = rt.lock().sandboxes.keys().cloned().collect();
    assert_eq!(left, vec!["other-owner".to_string()]);
    r.shutdown().await;
}
