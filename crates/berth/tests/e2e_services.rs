//! End to end: ECS services with the unmodified `aws ecs` CLI against `berth serve` running real
//! containers as root: a service of busybox httpd tasks reaches a steady state (the CLI's own
//! `wait services-stable`), every task answers on its published port, scales 3 → 10 → 1, a
//! killed container is replaced, a rollout of a broken image trips the circuit breaker and rolls
//! back, and a deleted service drains to INACTIVE with nothing left on the host. Behind the
//! built-in load balancer (aws elbv2): all tasks answer through the listener, their targets are
//! registered and healthy, a rolling deployment under a load generator fails no request, and a
//! killed task is replaced in the target group.

mod common;

use std::time::{Duration, Instant};

use common::ecs::*;
use serde_json::{json as j, Value};

fn describe(e: &Ecs, name: &str) -> Value {
    e.ok(&["describe-services", "--services", name])["services"][0].clone()
}

/// Polls DescribeServices (bounded) until `done`; returns the service and the time it took.
fn wait_service(e: &Ecs, name: &str, secs: u64, done: impl Fn(&Value) -> bool) -> (Value, f64) {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    loop {
        let sv = describe(e, name);
        if done(&sv) {
            return (sv, t0.elapsed().as_secs_f64());
        }
        assert!(
            Instant::now() < deadline,
            "service {name} not there after {secs} s: {sv}\n{}",
            e.srv.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the CLI's `services-stable` waiter checks, with the rollout done.
fn stable(sv: &Value, n: u64) -> bool {
    sv["desiredCount"] == n
        && sv["runningCount"] == n
        && sv["pendingCount"] == 0
        && sv["deployments"].as_array().map(|a| a.len()) == Some(1)
        && sv["deployments"][0]["rolloutState"] == "COMPLETED"
}

fn events(sv: &Value) -> Vec<String> {
    sv["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["message"].as_str().map(String::from))
        .collect()
}

fn service_tasks(e: &Ecs, name: &str) -> Vec<Value> {
    let arns = e.ok(&["list-tasks", "--service-name", name])["taskArns"].clone();
    let arns: Vec<&str> = arns
        .as_array()
        .expect("arns")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    if arns.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["describe-tasks", "--tasks"];
    args.extend(arns);
    e.ok(&args)["tasks"].as_array().cloned().unwrap_or_default()
}

#[test]
fn ecs_service_scales_replaces_rolls_back_and_drains() {
    let Some(e) = Ecs::start(&[]) else { return };
    let image = e.push_busybox("web:1");
    e.wait_instance("default", 1);
    let web = |img: &str| {
        j!([{
            "name": "web", "image": img, "memory": 32, "stopTimeout": 1,
            "command": ["sh", "-c", "cat /proc/sys/kernel/hostname > /www/id && exec httpd -f -p 8080 -h /www"],
            "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        }])
    };
    e.register("web", web(&image));
    let created = e.ok(&[
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        "web",
        "--desired-count",
        "3",
        "--deployment-configuration",
        "deploymentCircuitBreaker={enable=true,rollback=true},maximumPercent=200,minimumHealthyPercent=100",
    ]);
    assert_eq!(created["service"]["status"], "ACTIVE");
    assert_eq!(created["service"]["schedulingStrategy"], "REPLICA");
    let (_, up3) = wait_service(&e, "web", 60, |s| stable(s, 3));
    // The CLI's own waiter agrees (its first check is immediate).
    e.ok(&["wait", "services-stable", "--services", "web"]);

    // Every task is a real container answering on its own host port.
    let tasks = service_tasks(&e, "web");
    assert_eq!(tasks.len(), 3);
    let mut ids = Vec::new();
    for t in &tasks {
        assert_eq!(t["group"], "service:web");
        assert!(
            t["startedBy"]
                .as_str()
                .is_some_and(|s| s.starts_with("ecs-svc/")),
            "{t}"
        );
        let port = t["containers"][0]["networkBindings"][0]["hostPort"]
            .as_u64()
            .expect("host port");
        let body = http_get(&format!("127.0.0.1:{port}"), "/id").expect("GET a task");
        ids.push(body.lines().last().unwrap_or_default().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct containers: {ids:?}");

    // Scale out and back in.
    e.ok(&[
        "update-service",
        "--service",
        "web",
        "--desired-count",
        "10",
    ]);
    let (_, up10) = wait_service(&e, "web", 120, |s| stable(s, 10));
    e.ok(&["update-service", "--service", "web", "--desired-count", "1"]);
    let (sv, down1) = wait_service(&e, "web", 120, |s| stable(s, 1));
    eprintln!("service web: 0 -> 3 in {up3:.2} s, 3 -> 10 in {up10:.2} s, 10 -> 1 in {down1:.2} s");
    assert!(events(&sv)
        .iter()
        .any(|m| m.contains("has reached a steady state")));

    // A killed container is replaced.
    let tasks = service_tasks(&e, "web");
    assert_eq!(tasks.len(), 1);
    let victim = tasks[0]["taskArn"].as_str().expect("arn").to_string();
    let rid = tasks[0]["containers"][0]["runtimeId"]
        .as_str()
        .expect("runtime id")
        .to_string();
    e.agent_berth(&["kill", &rid]);
    let t = e.wait_status(&victim, "STOPPED", 30);
    assert_eq!(t["stopCode"], "EssentialContainerExited", "{t}");
    wait_service(&e, "web", 60, |s| {
        stable(s, 1)
            && service_tasks(&e, "web")
                .iter()
                .all(|t| t["taskArn"] != victim.as_str())
    });

    // A broken image: the circuit breaker stops the rollout and rolls back to revision 1.
    let reg = e.register("web", web(&format!("{}/web:missing", e.srv.addr)));
    assert_eq!(reg["taskDefinition"]["revision"], 2);
    e.ok(&[
        "update-service",
        "--service",
        "web",
        "--task-definition",
        "web:2",
    ]);
    let (sv, _) = wait_service(&e, "web", 120, |s| {
        stable(s, 1)
            && s["taskDefinition"]
                .as_str()
                .is_some_and(|t| t.ends_with("task-definition/web:1"))
    });
    let ev = events(&sv);
    assert!(
        ev.iter()
            .any(|m| m.contains("deployment failed: tasks failed to start")),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|m| m.contains("rolling back to deployment")),
        "{ev:?}"
    );
    let stopped = e.ok(&[
        "list-tasks",
        "--service-name",
        "web",
        "--desired-status",
        "STOPPED",
    ]);
    let mut args = vec!["describe-tasks", "--tasks"];
    let arns: Vec<String> = stopped["taskArns"]
        .as_array()
        .expect("arns")
        .iter()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    args.extend(arns.iter().map(String::as_str));
    let failed = e.ok(&args)["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["stopCode"] == "TaskFailedToStart")
        .count();
    assert!(
        failed >= 3,
        "the breaker trips after 3 failed tasks, saw {failed}"
    );

    // Bad input stores nothing.
    e.err(
        &[
            "create-service",
            "--service-name",
            "web",
            "--task-definition",
            "web:1",
            "--desired-count",
            "1",
        ],
        "InvalidParameterException",
    );
    e.err(
        &["delete-service", "--service", "web"],
        "InvalidParameterException",
    );
    // Delete: the service drains to INACTIVE and its tasks stop.
    let d = e.ok(&["delete-service", "--service", "web", "--force"]);
    assert_eq!(d["service"]["status"], "DRAINING");
    e.ok(&["wait", "services-inactive", "--services", "web"]);
    assert_eq!(e.ok(&["list-services"])["serviceArns"], j!([]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !e.agent_containers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "containers left: {:?}",
            e.agent_containers()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends requests to `addr` until `stop`; returns (requests, failures, first failure).
fn load_generator(
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64, Option<String>)> {
    std::thread::spawn(move || {
        let (mut n, mut failed, mut first) = (0u64, 0u64, None);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            match try_http_get(&addr, "/id") {
                Ok(r) if r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200") => {}
                other => {
                    failed += 1;
                    first.get_or_insert_with(|| format!("{other:?}"));
                }
            }
        }
        (n, failed, first)
    })
}

fn healthy_targets(e: &Ecs, tg: &str) -> usize {
    e.elbv2(&["describe-target-health", "--target-group-arn", tg])["TargetHealthDescriptions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["TargetHealth"]["State"] == "healthy")
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn ecs_service_behind_the_load_balancer_rolls_without_failed_requests() {
    let Some(e) = Ecs::start(&[]) else { return };
    let image = e.push_busybox("web:1");
    e.wait_instance("default", 1);
    let web = |version: &str| {
        j!([{
            "name": "web", "image": image, "memory": 32, "stopTimeout": 1,
            "environment": [{"name": "VERSION", "value": version}],
            "command": ["sh", "-c", "cat /proc/sys/kernel/hostname > /www/id && exec httpd -f -p 8080 -h /www"],
            "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        }])
    };
    e.register("web", web("1"));

    // The load balancer, a target group and an HTTP listener.
    let Lb {
        arn: lb_arn,
        tg: tg_arn,
        listener,
    } = e.load_balancer("web", &["subnet-a", "subnet-b"], "instance", 2);

    // A service of 3 tasks behind it.
    e.ok(&[
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        "web",
        "--desired-count",
        "3",
        "--health-check-grace-period-seconds",
        "30",
        "--load-balancers",
        &format!("targetGroupArn={tg_arn},containerName=web,containerPort=8080"),
    ]);
    wait_service(&e, "web", 90, |s| stable(s, 3));
    assert_eq!(healthy_targets(&e, &tg_arn), 3);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let r = http_get(&listener, "/id").expect("GET through the listener");
        assert!(
            r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"),
            "{r}"
        );
        seen.insert(r.lines().last().unwrap_or_default().to_string());
    }
    assert_eq!(
        seen.len(),
        3,
        "all three tasks answer through the listener: {seen:?}"
    );

    // Roll a new task definition while a load generator runs: no request fails.
    e.register("web", web("2"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gen = load_generator(listener.clone(), stop.clone());
    e.ok(&[
        "update-service",
        "--service",
        "web",
        "--task-definition",
        "web:2",
    ]);
    let (sv, took) = wait_service(&e, "web", 120, |s| {
        stable(s, 3)
            && s["taskDefinition"]
                .as_str()
                .is_some_and(|t| t.ends_with("task-definition/web:2"))
    });
    // Let the old tasks' draining and stop pass under load too.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, failed, first) = gen.join().expect("load generator");
    eprintln!("rolling deployment under load: {n} requests, {failed} failed, {took:.1} s");
    assert!(n > 50, "the load generator ran ({n} requests)");
    assert_eq!(
        failed, 0,
        "failed requests during the rollout; first: {first:?}"
    );
    assert!(events(&sv)
        .iter()
        .any(|m| m.contains("has begun draining connections")));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let r = http_get(&listener, "/id").expect("GET through the listener");
        seen.insert(r.lines().last().unwrap_or_default().to_string());
    }
    assert_eq!(seen.len(), 3, "three new tasks: {seen:?}");
    assert!(ids_disjoint(&seen, &service_tasks(&e, "web")));

    // A killed task is replaced, and the target group follows.
    let victim = service_tasks(&e, "web")[0].clone();
    let arn = victim["taskArn"].as_str().expect("arn").to_string();
    let rid = victim["containers"][0]["runtimeId"]
        .as_str()
        .expect("runtime id")
        .to_string();
    e.agent_berth(&["kill", &rid]);
    e.wait_status(&arn, "STOPPED", 30);
    wait_service(&e, "web", 90, |s| {
        stable(s, 3)
            && healthy_targets(&e, &tg_arn) == 3
            && service_tasks(&e, "web")
                .iter()
                .all(|t| t["taskArn"] != arn.as_str())
    });

    e.ok(&["delete-service", "--service", "web", "--force"]);
    e.ok(&["wait", "services-inactive", "--services", "web"]);
    e.elbv2(&["delete-load-balancer", "--load-balancer-arn", &lb_arn]);
    e.elbv2(&["delete-target-group", "--target-group-arn", &tg_arn]);
    assert!(
        http_get(&listener, "/id").is_none(),
        "the listener is closed"
    );
}

/// Whether the task containers' hostnames are exactly `seen` (a check that the ids are theirs).
fn ids_disjoint(seen: &std::collections::BTreeSet<String>, tasks: &[Value]) -> bool {
    tasks.len() == seen.len()
        && tasks.iter().all(|t| {
            t["containers"][0]["runtimeId"].as_str().is_some_and(|r| {
                seen.iter()
                    .any(|s| r.starts_with(s.as_str()) || s.starts_with(r))
            })
        })
}
