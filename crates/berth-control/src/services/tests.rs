//! The service controller driven in process: the ECS API for the calls, a fake agent that
//! moves tasks through their states, and a fake load balancer whose target health the test
//! sets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_aws::AwsError;
use berth_lb::{TargetHealth, TargetState};
use serde_json::{json, Value};

use super::{Controller, TargetGroupInfo, TargetRegistry};
use crate::control::{Control, ControlConfig};
use crate::ecs::{dispatch, Ctx};
use crate::store::RedbStore;

const TG: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";

/// (id, port) → state.
type Targets = BTreeMap<(String, u16), TargetState>;

#[derive(Default)]
struct FakeLb {
    /// target group → targets.
    groups: Mutex<HashMap<String, Targets>>,
    delay: Duration,
}

impl FakeLb {
    fn set_all(&self, from: TargetState, to: TargetState) {
        let mut g = self.groups.lock().expect("lock");
        for m in g.values_mut() {
            for s in m.values_mut() {
                if *s == from {
                    *s = to;
                }
            }
        }
    }

    fn forget_draining(&self) {
        let mut g = self.groups.lock().expect("lock");
        for m in g.values_mut() {
            m.retain(|_, s| *s != TargetState::Draining);
        }
    }

    fn count(&self, state: TargetState) -> usize {
        let g = self.groups.lock().expect("lock");
        g.values()
            .flat_map(|m| m.values())
            .filter(|s| **s == state)
            .count()
    }
}

#[async_trait::async_trait]
impl TargetRegistry for FakeLb {
    fn target_group(&self, _region: &str, arn: &str) -> Option<TargetGroupInfo> {
        (arn == TG).then(|| TargetGroupInfo {
            arn: arn.to_string(),
            target_type: "instance".into(),
            port: Some(80),
            has_load_balancer: true,
            deregistration_delay: self.delay,
        })
    }

    fn target_health(&self, _region: &str, arn: &str) -> Result<Vec<TargetHealth>, AwsError> {
        let g = self.groups.lock().expect("lock");
        Ok(g.get(arn)
            .map(|m| {
                m.iter()
                    .map(|((id, port), s)| TargetHealth {
                        id: id.clone(),
                        port: *port,
                        state: *s,
                        reason: None,
                        description: None,
                        in_flight: 0,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn register_targets(
        &self,
        _region: &str,
        arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), AwsError> {
        let mut g = self.groups.lock().expect("lock");
        let m = g.entry(arn.to_string()).or_default();
        for t in targets {
            m.insert(t.clone(), TargetState::Initial);
        }
        Ok(())
    }

    async fn deregister_targets(
        &self,
        _region: &str,
        arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), AwsError> {
        let mut g = self.groups.lock().expect("lock");
        let m = g.entry(arn.to_string()).or_default();
        for t in targets {
            if let Some(s) = m.get_mut(t) {
                *s = TargetState::Draining;
            }
        }
        Ok(())
    }
}

struct T {
    _dir: tempfile::TempDir,
    control: Arc<Control>,
    lb: Arc<FakeLb>,
    controller: Arc<Controller>,
    next_port: Mutex<u16>,
}

impl T {
    fn new() -> T {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"));
        let control = Control::open(store, ControlConfig::default()).expect("open");
        let lb = Arc::new(FakeLb::default());
        let controller = Controller::new(&control, Some(lb.clone() as Arc<dyn TargetRegistry>));
        let t = T {
            _dir: dir,
            control,
            lb,
            controller,
            next_port: Mutex::new(32768),
        };
        t.ok("CreateCluster", json!({"clusterName": "default"}));
        t
    }

    fn call(&self, op: &str, input: Value) -> Result<Value, AwsError> {
        let c = Ctx {
            control: &self.control,
            region: "us-east-1",
            account: "123456789012",
            lb: Some(self.lb.as_ref()),
        };
        dispatch(&c, op, input)
    }

    fn ok(&self, op: &str, input: Value) -> Value {
        self.call(op, input)
            .unwrap_or_else(|e| panic!("{op} failed: {e}"))
    }

    fn err(&self, op: &str, input: Value, code: &str) -> String {
        match self.call(op, input) {
            Ok(v) => panic!("{op} succeeded, expected {code}: {v}"),
            Err(e) => {
                assert_eq!(e.code, code, "{op}: {e}");
                e.message
            }
        }
    }

    fn instance(&self) -> String {
        let v = self.ok(
            "RegisterContainerInstance",
            json!({
                "cluster": "default",
                "totalResources": [
                    {"name": "CPU", "type": "INTEGER", "integerValue": 4096},
                    {"name": "MEMORY", "type": "INTEGER", "integerValue": 8192},
                ],
                "attributes": [
                    {"name": "ecs.capability.container-health-check"},
                    {"name": "com.amazonaws.ecs.capability.docker-remote-api.1.24"},
                ],
            }),
        );
        v["containerInstance"]["containerInstanceArn"]
            .as_str()
            .expect("arn")
            .to_string()
    }

    /// Registers family `web` with `image` (an image named `bad` never starts).
    fn taskdef(&self, image: &str) -> String {
        let v = self.ok(
            "RegisterTaskDefinition",
            json!({
                "family": "web",
                "containerDefinitions": [{
                    "name": "app", "image": image, "memory": 64,
                    "portMappings": [{"containerPort": 80, "hostPort": 0}],
                }],
            }),
        );
        v["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .expect("arn")
            .to_string()
    }

    fn tasks(&self) -> Vec<crate::model::Task> {
        self.control.read(|s| {
            s.region("us-east-1")
                .and_then(|r| r.tasks.get("default"))
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// The fake agent: starts what should run (`bad` images fail), stops what should stop.
    fn agent(&self) {
        for task in self.tasks() {
            if task.is_stopped() {
                continue;
            }
            if task.desired_status == "STOPPED" {
                self.ok(
                    "SubmitTaskStateChange",
                    json!({"task": task.arn, "status": "STOPPED",
                           "containers": [{"containerName": "app", "status": "STOPPED", "exitCode": 143}]}),
                );
            } else if task.last_status != "RUNNING" {
                if task.containers[0].image == "bad" {
                    self.ok(
                        "SubmitTaskStateChange",
                        json!({"task": task.arn, "status": "STOPPED", "reason": "CannotPullContainerError",
                               "containers": [{"containerName": "app", "status": "STOPPED"}]}),
                    );
                    continue;
                }
                let port = {
                    let mut p = self.next_port.lock().expect("lock");
                    *p += 1;
                    *p
                };
                self.ok(
                    "SubmitTaskStateChange",
                    json!({"task": task.arn, "status": "RUNNING",
                           "containers": [{"containerName": "app", "status": "RUNNING",
                             "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": port, "protocol": "tcp"}]}]}),
                );
            }
        }
    }

    async fn round(&self) {
        self.controller.reconcile_all().await;
    }

    /// Rounds of controller, agent and healthy targets until `done` (at most 30).
    async fn settle(&self, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..30 {
            self.round().await;
            self.agent();
            self.lb.set_all(TargetState::Initial, TargetState::Healthy);
            self.lb.forget_draining();
            self.round().await;
            let sv = self.service();
            if done(&sv) {
                return sv;
            }
        }
        panic!("service did not settle: {}", self.service());
    }

    fn service(&self) -> Value {
        self.ok("DescribeServices", json!({"services": ["web"]}))["services"][0].clone()
    }

    fn running(&self) -> Vec<crate::model::Task> {
        self.tasks()
            .into_iter()
            .filter(|t| t.desired_status == "RUNNING" && !t.is_stopped())
            .collect()
    }
}

/// What `aws ecs wait services-stable` waits for, and the rollout done.
fn stable(sv: &Value) -> bool {
    sv["deployments"].as_array().map(|a| a.len()) == Some(1)
        && sv["runningCount"] == sv["desiredCount"]
        && sv["pendingCount"] == 0
        && sv["deployments"][0]["rolloutState"] == "COMPLETED"
}

fn events(sv: &Value) -> Vec<String> {
    sv["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn replica_service_starts_scales_and_replaces() {
    let t = T::new();
    t.instance();
    let td = t.taskdef("app:1");
    let created = t.ok(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 3}),
    );
    assert_eq!(created["service"]["status"], "ACTIVE");
    assert_eq!(created["service"]["deployments"][0]["status"], "PRIMARY");
    assert_eq!(
        created["service"]["deployments"][0]["rolloutState"],
        "IN_PROGRESS"
    );
    t.round().await;
    assert_eq!(t.running().len(), 3, "three tasks started in one round");
    assert!(t.running().iter().all(|x| x.group == "service:web"
        && x.started_by
            .as_deref()
            .is_some_and(|s| s.starts_with("ecs-svc/"))));
    let sv = t.settle(stable).await;
    assert_eq!(sv["runningCount"], 3);
    assert_eq!(sv["deployments"][0]["rolloutState"], "COMPLETED");
    let ev = events(&sv);
    assert!(
        ev.iter().any(|e| e.contains("has reached a steady state")),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| e.contains("has started 3 tasks")),
        "{ev:?}"
    );

    // A task that exits on its own is replaced.
    let victim = t.running()[0].clone();
    t.ok(
        "SubmitTaskStateChange",
        json!({"task": victim.arn, "status": "STOPPED", "reason": "Essential container in task exited",
               "containers": [{"containerName": "app", "status": "STOPPED", "exitCode": 1}]}),
    );
    t.round().await;
    let running = t.running();
    assert_eq!(running.len(), 3);
    assert!(running.iter().all(|x| x.id != victim.id));
    t.settle(stable).await;

    // Scale out and in.
    t.ok(
        "UpdateService",
        json!({"service": "web", "desiredCount": 10}),
    );
    let sv = t.settle(|s| stable(s) && s["runningCount"] == 10).await;
    assert_eq!(sv["deployments"].as_array().map(|a| a.len()), Some(1));
    t.ok(
        "UpdateService",
        json!({"service": "web", "desiredCount": 1}),
    );
    t.settle(|s| stable(s) && s["runningCount"] == 1).await;
    assert_eq!(t.running().len(), 1);
    let stopped: Vec<_> = t
        .tasks()
        .into_iter()
        .filter(|x| {
            x.desired_status == "STOPPED"
                && x.stop_code.as_deref() == Some("ServiceSchedulerInitiated")
        })
        .collect();
    assert!(
        stopped.len() >= 9,
        "scale-in stops with ServiceSchedulerInitiated"
    );

    // Delete: refused while scaled up, then forced; the service drains to INACTIVE.
    t.err(
        "DeleteService",
        json!({"service": "web"}),
        "InvalidParameterException",
    );
    let d = t.ok("DeleteService", json!({"service": "web", "force": true}));
    assert_eq!(d["service"]["status"], "DRAINING");
    t.settle(|s| s["status"] == "INACTIVE").await;
    assert!(t.running().is_empty());
    assert_eq!(t.ok("ListServices", json!({}))["serviceArns"], json!([]));
    // The name can be used again.
    t.ok(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 0}),
    );
}

#[tokio::test]
async fn rolling_deployment_keeps_healthy_targets_and_drains() {
    let t = T::new();
    t.instance();
    let td1 = t.taskdef("app:1");
    t.ok(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": td1, "desiredCount": 2,
               "loadBalancers": [{"targetGroupArn": TG, "containerName": "app", "containerPort": 80}]}),
    );
    let sv = t.settle(stable).await;
    assert_eq!(t.lb.count(TargetState::Healthy), 2, "both tasks registered");
    assert_eq!(sv["loadBalancers"][0]["targetGroupArn"], TG);
    let old: Vec<String> = t.running().iter().map(|x| x.id.clone()).collect();

    let td2 = t.taskdef("app:2");
    let u = t.ok(
        "UpdateService",
        json!({"service": "web", "taskDefinition": td2}),
    );
    assert_eq!(
        u["service"]["deployments"].as_array().map(|a| a.len()),
        Some(2)
    );
    assert_eq!(u["service"]["deployments"][1]["status"], "ACTIVE");
    // Round 1: two new tasks (maximumPercent 200), old ones untouched (minimumHealthy 100).
    t.round().await;
    assert_eq!(t.running().len(), 4);
    t.agent();
    t.round().await;
    // New targets registered but not healthy yet: the old ones stay in.
    assert_eq!(t.lb.count(TargetState::Initial), 2);
    assert_eq!(t.lb.count(TargetState::Healthy), 2);
    assert_eq!(t.lb.count(TargetState::Draining), 0);
    t.lb.set_all(TargetState::Initial, TargetState::Healthy);
    t.round().await;
    // Old targets now drain before their tasks stop (delay 0 here: stopped next round).
    assert_eq!(t.lb.count(TargetState::Draining), 2);
    let draining: Vec<_> = t
        .running()
        .into_iter()
        .filter(|x| x.service_drain_until.is_some())
        .map(|x| x.id)
        .collect();
    assert_eq!(draining.len(), 2);
    assert!(draining.iter().all(|id| old.contains(id)));
    let sv = t.settle(stable).await;
    assert_eq!(sv["taskDefinition"], td2);
    assert_eq!(sv["deployments"][0]["rolloutState"], "COMPLETED");
    assert!(t.running().iter().all(|x| x.task_definition_arn == td2));
    assert!(events(&sv)
        .iter()
        .any(|e| e.contains("deregistered 1 targets")));
}

#[tokio::test]
async fn circuit_breaker_rolls_back() {
    let t = T::new();
    t.instance();
    let good = t.taskdef("app:1");
    t.ok(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": good, "desiredCount": 2,
               "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
    );
    t.settle(stable).await;
    let bad = t.taskdef("bad");
    t.ok(
        "UpdateService",
        json!({"service": "web", "taskDefinition": bad}),
    );
    let sv = t
        .settle(|s| stable(s) && s["taskDefinition"] != json!(bad))
        .await;
    assert_eq!(sv["taskDefinition"], good);
    let ev = events(&sv);
    assert!(
        ev.iter()
            .any(|e| e.contains("deployment failed: tasks failed to start")),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| e.contains("rolling back to deployment")),
        "{ev:?}"
    );
    assert!(t.running().iter().all(|x| x.task_definition_arn == good));
    let failed_bad = t
        .tasks()
        .into_iter()
        .filter(|x| x.task_definition_arn == bad && x.is_stopped())
        .count();
    assert!(
        failed_bad >= 3,
        "threshold is 3 failed tasks, saw {failed_bad}"
    );
}

#[tokio::test]
async fn unhealthy_target_is_replaced() {
    let t = T::new();
    t.instance();
    let td = t.taskdef("app:1");
    t.ok(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 1,
               "loadBalancers": [{"targetGroupArn": TG, "containerName": "app", "containerPort": 80}]}),
    );
    t.settle(stable).await;
    let first = t.running()[0].id.clone();
    t.lb.set_all(TargetState::Healthy, TargetState::Unhealthy);
    t.round().await;
    let stopped = t.tasks().into_iter().find(|x| x.id == first).expect("task");
    assert_eq!(stopped.desired_status, "STOPPED");
    assert!(stopped
        .stopped_reason
        .as_deref()
        .is_some_and(|r| r.contains("failed ELB health checks")));
    let sv = t.settle(stable).await;
    assert!(t.running().iter().all(|x| x.id != first));
    assert!(events(&sv)
        .iter()
        .any(|e| e.contains("is unhealthy in (target-group")));
}

#[tokio::test]
async fn daemon_runs_one_task_per_instance() {
    let t = T::new();
    t.instance();
    t.instance();
    let td = t.taskdef("app:1");
    t.err(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 2, "schedulingStrategy": "DAEMON"}),
        "InvalidParameterException",
    );
    t.ok(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": td, "schedulingStrategy": "DAEMON"}),
    );
    let sv = t.settle(|s| stable(s) && s["runningCount"] == 2).await;
    assert_eq!(sv["desiredCount"], 2);
    let mut per: Vec<String> = t
        .running()
        .iter()
        .filter_map(|x| x.container_instance_arn.clone())
        .collect();
    per.sort();
    per.dedup();
    assert_eq!(per.len(), 2, "one task on each instance");
    // A third instance gets its task.
    t.instance();
    t.settle(|s| stable(s) && s["runningCount"] == 3).await;
}

#[tokio::test]
async fn bad_service_input_is_refused_and_stores_nothing() {
    let t = T::new();
    t.instance();
    let td = t.taskdef("app:1");
    for (input, code) in [
        (
            json!({"serviceName": "web", "taskDefinition": td}),
            "InvalidParameterException",
        ),
        (
            json!({"serviceName": "bad name", "taskDefinition": td, "desiredCount": 1}),
            "InvalidParameterException",
        ),
        (
            json!({"serviceName": "web", "desiredCount": 1}),
            "InvalidParameterException",
        ),
        (
            json!({"serviceName": "web", "taskDefinition": "nope:1", "desiredCount": 1}),
            "ClientException",
        ),
        (
            json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 1,
                "loadBalancers": [{"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/x/1", "containerName": "app", "containerPort": 80}]}),
            "InvalidParameterException",
        ),
        (
            json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 1,
                "loadBalancers": [{"targetGroupArn": TG, "containerName": "app", "containerPort": 81}]}),
            "InvalidParameterException",
        ),
        (
            json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 1,
                "deploymentConfiguration": {"minimumHealthyPercent": 150}}),
            "InvalidParameterException",
        ),
        (
            json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 1, "launchType": "FARGATE"}),
            "InvalidParameterException",
        ),
        (
            json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 1, "bogus": 1}),
            "InvalidParameterException",
        ),
    ] {
        t.err("CreateService", input, code);
    }
    assert_eq!(t.ok("ListServices", json!({}))["serviceArns"], json!([]));
    t.ok(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 1}),
    );
    let m = t.err(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 1}),
        "InvalidParameterException",
    );
    assert!(m.contains("idempotent"), "{m}");
    t.err(
        "UpdateService",
        json!({"service": "nope", "desiredCount": 1}),
        "ServiceNotFoundException",
    );
    let d = t.ok("DescribeServices", json!({"services": ["web", "nope"]}));
    assert_eq!(d["failures"][0]["reason"], "MISSING");
    // Tags on services.
    let arn = d["services"][0]["serviceArn"]
        .as_str()
        .expect("arn")
        .to_string();
    t.ok(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "a", "value": "b"}]}),
    );
    let d = t.ok(
        "DescribeServices",
        json!({"services": ["web"], "include": ["TAGS"]}),
    );
    assert_eq!(d["services"][0]["tags"][0]["key"], "a");
}

#[tokio::test]
async fn unhealthy_container_is_replaced_after_the_grace_period() {
    let t = T::new();
    t.instance();
    let v = t.ok(
        "RegisterTaskDefinition",
        json!({
            "family": "web",
            "containerDefinitions": [{
                "name": "app", "image": "app:1", "memory": 64,
                "healthCheck": {"command": ["CMD-SHELL", "true"]},
            }],
        }),
    );
    let td = v["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("arn")
        .to_string();
    t.ok(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 1}),
    );
    t.round().await;
    t.agent();
    t.round().await;
    // RUNNING but health UNKNOWN: not yet healthy, so the rollout is not complete.
    let sv = t.service();
    assert_eq!(sv["runningCount"], 1);
    assert_eq!(sv["deployments"][0]["rolloutState"], "IN_PROGRESS");
    let first = t.running()[0].arn.clone();
    let health = |arn: &str, status: &str| {
        t.ok(
            "SubmitTaskStateChange",
            json!({"task": arn, "containers": [{"containerName": "app", "healthStatus": status}]}),
        );
    };
    health(&first, "HEALTHY");
    t.round().await;
    assert_eq!(t.service()["deployments"][0]["rolloutState"], "COMPLETED");
    health(&first, "UNHEALTHY");
    t.round().await;
    let stopped = t
        .tasks()
        .into_iter()
        .find(|x| x.arn == first)
        .expect("task");
    assert_eq!(stopped.desired_status, "STOPPED");
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("Task failed container health checks")
    );
    assert!(events(&t.service())
        .iter()
        .any(|e| e.contains("failed container health checks")));
    // Its replacement starts in the same round.
    assert_eq!(t.running().len(), 1);
    assert_ne!(t.running()[0].arn, first);

    // With a grace period, an UNHEALTHY container of a fresh task is left alone.
    t.ok(
        "UpdateService",
        json!({"service": "web", "healthCheckGracePeriodSeconds": 3600}),
    );
    t.agent();
    t.round().await;
    let second = t.running()[0].arn.clone();
    health(&second, "UNHEALTHY");
    t.round().await;
    assert_eq!(t.running()[0].arn, second, "inside the grace period");
}

#[tokio::test]
async fn stop_task_behind_a_load_balancer_drains_first() {
    let mut t = T::new();
    t.lb = Arc::new(FakeLb {
        delay: Duration::from_secs(3600),
        ..FakeLb::default()
    });
    t.controller = Controller::new(&t.control, Some(t.lb.clone() as Arc<dyn TargetRegistry>));
    t.instance();
    let td = t.taskdef("app:1");
    t.ok(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 1,
               "loadBalancers": [{"targetGroupArn": TG, "containerName": "app", "containerPort": 80}]}),
    );
    t.settle(stable).await;
    let victim = t.running()[0].arn.clone();
    let out = t.ok("StopTask", json!({"task": victim, "reason": "by hand"}))["task"].clone();
    assert_eq!(out["desiredStatus"], "STOPPED");
    // Its containers keep running while its target drains (a long delay here).
    t.round().await;
    t.agent();
    t.round().await;
    assert_eq!(t.lb.count(TargetState::Draining), 1);
    let d = t.ok("DescribeTasks", json!({"tasks": [victim]}))["tasks"][0].clone();
    assert_eq!(d["lastStatus"], "DEACTIVATING", "{d}");
    assert_eq!(d["desiredStatus"], "STOPPED");
    assert_eq!(d["stoppedReason"], "by hand");
    let internal = t
        .tasks()
        .into_iter()
        .find(|x| x.arn == victim)
        .expect("task");
    assert_eq!(internal.last_status, "RUNNING");
    assert!(internal.service_drain_until.is_some());
    // A replacement starts meanwhile.
    assert_eq!(
        t.running()
            .iter()
            .filter(|x| x.service_drain_until.is_none())
            .count(),
        1
    );
    // When the delay is over it stops, with the user's code and reason.
    t.control
        .write(crate::store::Durability::Immediate, |tx| {
            let mut x = internal.clone();
            x.service_drain_until = Some(0.0);
            tx.put_task(x);
            Ok::<_, AwsError>(())
        })
        .expect("write");
    t.round().await;
    t.agent();
    let d = t.ok("DescribeTasks", json!({"tasks": [victim]}))["tasks"][0].clone();
    assert_eq!(d["lastStatus"], "STOPPED", "{d}");
    assert_eq!(d["stopCode"], "UserInitiated");
    assert_eq!(d["stoppedReason"], "by hand");
}
