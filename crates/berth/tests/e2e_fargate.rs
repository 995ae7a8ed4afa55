//! End to end: Fargate with the unmodified `aws` CLI against `berth serve` running real
//! containers as root. Ten FARGATE tasks get ten distinct addresses on their subnet's network
//! (shown as ENI attachments), answer from the host and from each other, share one network
//! namespace inside a task (localhost), and run under the task's cpu/memory as cgroup limits
//! with their writable layers on the task's 20 GiB of ephemeral storage;
//! a memory hog is OOM-killed with ECS's reason. A FARGATE_SPOT service behind the load
//! balancer registers its tasks' IPs (target type ip), answers through the listener, and
//! replaces a task when Spot capacity is reclaimed.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::ecs::*;
use common::{python, run_ok};
use serde_json::{json as j, Value};

const VPC: &str = "awsvpcConfiguration={subnets=[subnet-fargate],securityGroups=[sg-1]}";

fn register_fargate(e: &Ecs, family: &str, cpu: &str, memory: &str, containers: Value) {
    let v = e.register_with(
        family,
        containers,
        &[
            "--requires-compatibilities",
            "FARGATE",
            "--network-mode",
            "awsvpc",
            "--cpu",
            cpu,
            "--memory",
            memory,
        ],
    );
    assert_eq!(
        v["taskDefinition"]["compatibilities"],
        j!(["EC2", "FARGATE"]),
        "{v}"
    );
}

fn detail(task: &Value, name: &str) -> Option<String> {
    task["attachments"][0]["details"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == name)?["value"]
        .as_str()
        .map(str::to_string)
}

fn container<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {task}"))
}

/// The tightest limit over a cgroup and its ancestors, read from `file` in `hierarchy` (v1:
/// the controller's mount, v2: the unified one) for the cgroup of process `pid`.
fn effective_limit(pid: i64, controller: &str, read: impl Fn(&Path) -> Option<f64>) -> f64 {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let (root, rel): (PathBuf, String) = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            if ctrls.split(',').any(|c| c == controller) {
                let mount = if controller == "cpu" {
                    "/sys/fs/cgroup/cpu,cpuacct"
                } else {
                    "/sys/fs/cgroup/memory"
                };
                let mount = if Path::new(mount).exists() {
                    mount.to_string()
                } else {
                    format!("/sys/fs/cgroup/{controller}")
                };
                Some((PathBuf::from(mount), path.to_string()))
            } else {
                None
            }
        })
        .or_else(|| {
            cgroups.lines().find_map(|l| {
                l.strip_prefix("0::")
                    .map(|p| (PathBuf::from("/sys/fs/cgroup"), p.to_string()))
            })
        })
        .expect("the process's cgroup");
    let mut dir = root.join(rel.trim_start_matches('/'));
    let mut best = f64::INFINITY;
    while dir.starts_with(&root) {
        if let Some(v) = read(&dir) {
            best = best.min(v);
        }
        if !dir.pop() {
            break;
        }
    }
    best
}

fn read_num(p: &Path) -> Option<f64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Memory limit in bytes (v1 memory.limit_in_bytes, v2 memory.max).
fn memory_limit(pid: i64) -> f64 {
    effective_limit(pid, "memory", |d| {
        read_num(&d.join("memory.limit_in_bytes")).or_else(|| read_num(&d.join("memory.max")))
    })
}

/// CPU limit in CPUs (v1 cfs_quota/cfs_period, v2 cpu.max).
fn cpu_limit(pid: i64) -> f64 {
    effective_limit(pid, "cpu", |d| {
        if let (Some(q), Some(p)) = (
            read_num(&d.join("cpu.cfs_quota_us")),
            read_num(&d.join("cpu.cfs_period_us")),
        ) {
            return (q > 0.0).then(|| q / p);
        }
        let max = std::fs::read_to_string(d.join("cpu.max")).ok()?;
        let mut it = max.split_whitespace();
        let q: f64 = it.next()?.parse().ok()?;
        let p: f64 = it.next()?.parse().ok()?;
        Some(q / p)
    })
}

fn pid_of(e: &Ecs, runtime_id: &str) -> i64 {
    let v = common::json(&e.agent_berth(&["inspect", runtime_id]));
    let v = if v.is_array() { v[0].clone() } else { v };
    v["State"]["Pid"].as_i64().expect("pid")
}

fn run_fargate(e: &Ecs, family: &str, count: &str) -> Vec<String> {
    let r = e.ok(&[
        "run-task",
        "--task-definition",
        family,
        "--count",
        count,
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        VPC,
    ]);
    assert_eq!(r["failures"], j!([]), "{r}");
    r["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            assert_eq!(t["launchType"], "FARGATE");
            assert!(t.get("containerInstanceArn").is_none(), "{t}");
            t["taskArn"].as_str().expect("arn").to_string()
        })
        .collect()
}

#[test]
fn fargate_tasks_get_their_own_addresses_limits_and_oom() {
    let Some(e) = Ecs::start(&[]) else { return };
    let image = e.push_busybox("app:1");
    e.wait_instance("default", 1);
    register_fargate(
        &e,
        "fg",
        "256",
        "512",
        j!([
            {"name": "app", "image": image, "stopTimeout": 2,
             "command": ["sh", "-c", "mkdir -p /www && cat /proc/sys/kernel/hostname > /www/id && exec httpd -f -p 8080 -h /www"],
             "portMappings": [{"containerPort": 8080}]},
            // Reaches the app container on localhost: one network namespace per task.
            {"name": "probe", "image": image, "essential": false,
             "command": ["sh", "-c", "for i in $(busybox seq 1 200); do busybox wget -q -O /dev/null http://127.0.0.1:8080/id && exit 0; sleep 0.1; done; exit 1"]},
        ]),
    );
    let t0 = Instant::now();
    let arns = run_fargate(&e, "fg", "10");
    let tasks: Vec<Value> = arns
        .iter()
        .map(|a| e.wait_status(a, "RUNNING", 60))
        .collect();
    eprintln!("10 FARGATE tasks RUNNING after {:?}", t0.elapsed());

    // Ten distinct addresses, attached, each answering from the host.
    let mut ips = BTreeSet::new();
    for t in &tasks {
        let t = e.describe_task(t["taskArn"].as_str().expect("arn"));
        assert_eq!(t["attachments"][0]["type"], "ElasticNetworkInterface");
        assert_eq!(t["attachments"][0]["status"], "ATTACHED", "{t}");
        assert_eq!(detail(&t, "subnetId").as_deref(), Some("subnet-fargate"));
        let ip = detail(&t, "privateIPv4Address").expect("address");
        assert_eq!(
            container(&t, "app")["networkInterfaces"][0]["privateIpv4Address"],
            ip.as_str()
        );
        let r = http_get(&format!("{ip}:8080"), "/id").expect("GET the task's address");
        assert!(r.starts_with("HTTP/1.") && r.contains(" 200 "), "{r}");
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 10, "distinct task addresses: {ips:?}");

    // Tasks reach each other by address.
    let first = e.describe_task(&arns[0]);
    let other = ips
        .iter()
        .find(|ip| Some(ip.as_str()) != detail(&first, "privateIPv4Address").as_deref())
        .expect("another task");
    let app_id = container(&first, "app")["runtimeId"]
        .as_str()
        .expect("runtime id")
        .to_string();
    let got = e.agent_berth(&[
        "exec",
        &app_id,
        "busybox",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{other}:8080/id"),
    ]);
    assert!(!got.trim().is_empty(), "task to task: {got:?}");

    // The task's cpu and memory are cgroup limits over all its containers.
    let pid = pid_of(&e, &app_id);
    assert_eq!(memory_limit(pid), 512.0 * 1024.0 * 1024.0);
    let cpus = cpu_limit(pid);
    assert!((cpus - 0.25).abs() < 0.01, "cpu limit {cpus}");

    // The writable layer is the task's ephemeral storage (20 GiB by default): overlayfs
    // reports the size of the filesystem under its upper layer.
    let df = e.agent_berth(&["exec", &app_id, "busybox", "df", "-k", "/"]);
    let total_kib: f64 = df
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("df: {df}"));
    let gib = total_kib / 1024.0 / 1024.0;
    assert!(
        (18.0..=20.5).contains(&gib),
        "ephemeral storage {gib:.2} GiB: {df}"
    );

    // The probe reached its task's app on localhost.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = e.describe_task(&arns[0]);
        let probe = container(&t, "probe");
        if probe["lastStatus"] == "STOPPED" {
            assert_eq!(probe["exitCode"], 0, "{t}");
            break;
        }
        assert!(Instant::now() < deadline, "probe still running: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }

    for a in &arns {
        e.ok(&["stop-task", "--task", a]);
    }
    for a in &arns {
        let t = e.wait_status(a, "STOPPED", 60);
        assert_eq!(t["attachments"][0]["status"], "DELETED", "{t}");
    }

    // A memory hog over the task's 512 MiB.
    register_fargate(
        &e,
        "hog",
        "256",
        "512",
        j!([{"name": "hog", "image": image,
             "command": ["busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=1024M", "count=1"]}]),
    );
    let hog = run_fargate(&e, "hog", "1").remove(0);
    let t = e.wait_status(&hog, "STOPPED", 60);
    let c = container(&t, "hog");
    assert_eq!(c["exitCode"], 137, "{t}");
    assert_eq!(
        c["reason"], "OutOfMemoryError: Container killed due to memory usage",
        "{t}"
    );
    assert_eq!(t["stopCode"], "EssentialContainerExited");

    // Bad input: the AWS errors, nothing started.
    let m = e.err(
        &[
            "run-task",
            "--task-definition",
            "fg",
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            VPC,
            "--overrides",
            r#"{"cpu": "256", "memory": "8192"}"#,
        ],
        "ClientException",
    );
    assert!(m.contains("No Fargate configuration exists"), "{m}");
    e.err(
        &[
            "run-task",
            "--task-definition",
            "fg",
            "--launch-type",
            "FARGATE",
        ],
        "InvalidParameterException",
    );
}

/// `BerthFargate_V1.ReclaimSpotCapacity` signed with SigV4 by botocore.
fn reclaim_spot(e: &Ecs, input: &Value) -> Value {
    let Some(py) = python(&["botocore"]) else {
        panic!("python3 with botocore is required (pip install -r tests/requirements.txt)");
    };
    let script = r#"
import json, sys
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
import urllib.request
url, body = sys.argv[1], sys.argv[2]
creds = botocore.session.get_session().get_credentials()
req = AWSRequest(method="POST", url=url, data=body, headers={
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "BerthFargate_V1.ReclaimSpotCapacity"})
SigV4Auth(creds, "ecs", "us-east-1").add_auth(req)
r = urllib.request.urlopen(urllib.request.Request(url, data=body.encode(), headers=dict(req.headers), method="POST"))
print(r.read().decode())
"#;
    let out = run_ok(
        e.with_key(&py)
            .args(["-c", script, e.api(), &input.to_string()]),
    );
    common::json(&out)
}

#[test]
fn fargate_spot_service_behind_the_load_balancer_is_replaced_when_reclaimed() {
    let Some(e) = Ecs::start(&[]) else { return };
    let image = e.push_busybox("web:1");
    e.wait_instance("default", 1);
    register_fargate(
        &e,
        "web",
        "256",
        "512",
        j!([{"name": "web", "image": image, "stopTimeout": 2,
             "command": ["sh", "-c", "mkdir -p /www && cat /proc/sys/kernel/hostname > /www/id && exec httpd -f -p 8080 -h /www"],
             "portMappings": [{"containerPort": 8080}]}]),
    );
    let Lb {
        tg: tg_arn,
        listener,
        ..
    } = e.load_balancer("fg", &["subnet-fargate"], "ip", 1);
    e.ok(&[
        "put-cluster-capacity-providers",
        "--cluster",
        "default",
        "--capacity-providers",
        "FARGATE",
        "FARGATE_SPOT",
        "--default-capacity-provider-strategy",
        "capacityProvider=FARGATE_SPOT,weight=1",
    ]);
    e.ok(&[
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        "web",
        "--desired-count",
        "2",
        "--capacity-provider-strategy",
        "capacityProvider=FARGATE_SPOT,weight=1",
        "--network-configuration",
        VPC,
        "--load-balancers",
        &format!("targetGroupArn={tg_arn},containerName=web,containerPort=8080"),
    ]);
    let healthy_ips = |e: &Ecs| -> BTreeSet<String> {
        e.elbv2(&["describe-target-health", "--target-group-arn", &tg_arn])
            ["TargetHealthDescriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["TargetHealth"]["State"] == "healthy")
            .filter_map(|t| t["Target"]["Id"].as_str().map(str::to_string))
            .collect()
    };
    let wait_healthy = |e: &Ecs, not: &BTreeSet<String>| -> BTreeSet<String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ips = healthy_ips(e);
            if ips.len() == 2 && ips.is_disjoint(not) {
                return ips;
            }
            assert!(
                Instant::now() < deadline,
                "healthy ip targets: {ips:?}\n{}",
                e.srv.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let before = wait_healthy(&e, &BTreeSet::new());
    for ip in &before {
        assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "ip target {ip}");
    }
    let sv = e.ok(&["describe-services", "--services", "web"])["services"][0].clone();
    assert_eq!(
        sv["capacityProviderStrategy"][0]["capacityProvider"],
        "FARGATE_SPOT"
    );
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let r = http_get(&listener, "/id").expect("GET through the listener");
        assert!(r.contains(" 200 "), "{r}");
        seen.insert(r.lines().last().unwrap_or_default().to_string());
    }
    assert_eq!(seen.len(), 2, "both tasks answer: {seen:?}");

    // Reclaim one Spot task: it is interrupted, the service replaces it.
    let r = reclaim_spot(&e, &j!({"count": 1, "noticeSeconds": 2}));
    let reclaimed = r["tasks"][0].as_str().expect("reclaimed task").to_string();
    let t = e.wait_status(&reclaimed, "STOPPED", 60);
    assert_eq!(t["stopCode"], "SpotInterruption");
    assert_eq!(t["stoppedReason"], "Your Spot Task was interrupted.");
    let gone = detail(&t, "privateIPv4Address").expect("address");
    let after = wait_healthy(&e, &BTreeSet::from([gone.clone()]));
    assert!(!after.contains(&gone));
    e.ok(&["delete-service", "--service", "web", "--force"]);
}
