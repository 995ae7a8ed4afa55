//! The ECS API driven in process (no HTTP): semantics, errors, durability across a reopen.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{dispatch, Ctx};
use crate::control::{Control, ControlConfig};
use crate::store::RedbStore;

pub(crate) struct T {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    pub(crate) control: Arc<Control>,
}

impl T {
    pub(crate) fn new() -> T {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let control = open(&path);
        T {
            _dir: dir,
            path,
            control,
        }
    }

    pub(crate) fn call(&self, op: &str, input: Value) -> Result<Value, berth_aws::AwsError> {
        let c = Ctx {
            control: &self.control,
            region: "us-east-1",
            account: "123456789012",
            lb: None,
        };
        dispatch(&c, op, input)
    }

    pub(crate) fn call_fargate(
        &self,
        op: &str,
        input: Value,
    ) -> Result<Value, berth_aws::AwsError> {
        let c = Ctx {
            control: &self.control,
            region: "us-east-1",
            account: "123456789012",
            lb: None,
        };
        super::dispatch_fargate(&c, op, input)
    }

    pub(crate) fn ok(&self, op: &str, input: Value) -> Value {
        self.call(op, input)
            .unwrap_or_else(|e| panic!("{op} failed: {e}"))
    }

    pub(crate) fn err(&self, op: &str, input: Value, code: &str) -> String {
        match self.call(op, input) {
            Ok(v) => panic!("{op} succeeded, expected {code}: {v}"),
            Err(e) => {
                assert_eq!(e.code, code, "{op}: {e}");
                e.message
            }
        }
    }

    fn reopen(&mut self) {
        // Drop the old control (and its database) first.
        let placeholder = Control::open(
            Arc::new(RedbStore::open(&self._dir.path().join("other.redb")).expect("store")),
            ControlConfig::default(),
        )
        .expect("open");
        self.control = placeholder;
        self.control = open(&self.path);
    }
}

fn open(path: &std::path::Path) -> Arc<Control> {
    let store = Arc::new(RedbStore::open(path).expect("store"));
    Control::open(store, ControlConfig::default()).expect("open")
}

pub(crate) fn register_instance(t: &T, cluster: &str, memory: i64) -> String {
    let v = t.ok(
        "RegisterContainerInstance",
        json!({
            "cluster": cluster,
            "totalResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
                {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22"]},
            ],
            "attributes": [{"name": "ecs.availability-zone", "value": "az-1"}],
        }),
    );
    v["containerInstance"]["containerInstanceArn"]
        .as_str()
        .expect("arn")
        .to_string()
}

fn web_taskdef(t: &T, memory: i64) -> Value {
    t.ok(
        "RegisterTaskDefinition",
        json!({
            "family": "web",
            "containerDefinitions": [{
                "name": "app", "image": "localhost:5000/app:1", "memory": memory,
                "portMappings": [{"containerPort": 80, "hostPort": 8080}],
            }],
        }),
    )
}

#[test]
fn clusters_create_describe_list_delete() {
    let t = T::new();
    let c = t.ok(
        "CreateCluster",
        json!({"clusterName": "prod", "tags": [{"key": "team", "value": "a"}]}),
    );
    assert_eq!(
        c["cluster"]["clusterArn"],
        "arn:aws:ecs:us-east-1:123456789012:cluster/prod"
    );
    assert_eq!(c["cluster"]["status"], "ACTIVE");
    // Idempotent.
    let again = t.ok("CreateCluster", json!({"clusterName": "prod"}));
    assert_eq!(again["cluster"]["clusterArn"], c["cluster"]["clusterArn"]);
    t.err(
        "CreateCluster",
        json!({"clusterName": "bad name"}),
        "InvalidParameterException",
    );
    let d = t.ok(
        "DescribeClusters",
        json!({"clusters": ["prod", "nope"], "include": ["TAGS"]}),
    );
    assert_eq!(d["clusters"][0]["tags"][0]["key"], "team");
    assert_eq!(d["failures"][0]["reason"], "MISSING");
    for n in ["a", "b", "c"] {
        t.ok("CreateCluster", json!({"clusterName": n}));
    }
    let p1 = t.ok("ListClusters", json!({"maxResults": 2}));
    assert_eq!(p1["clusterArns"].as_array().expect("arns").len(), 2);
    let tok = p1["nextToken"].as_str().expect("token");
    let p2 = t.ok("ListClusters", json!({"maxResults": 2, "nextToken": tok}));
    assert_eq!(p2["clusterArns"].as_array().expect("arns").len(), 2);
    assert!(p2.get("nextToken").is_none());
    let del = t.ok("DeleteCluster", json!({"cluster": "a"}));
    assert_eq!(del["cluster"]["status"], "INACTIVE");
    t.err(
        "DeleteCluster",
        json!({"cluster": "a"}),
        "ClusterNotFoundException",
    );
    // A cluster with an instance cannot be deleted.
    register_instance(&t, "prod", 1024);
    t.err(
        "DeleteCluster",
        json!({"cluster": "prod"}),
        "ClusterContainsContainerInstancesException",
    );
}

#[test]
fn task_definitions_revisions_and_bad_input_stores_nothing() {
    let t = T::new();
    let a = web_taskdef(&t, 128);
    assert_eq!(a["taskDefinition"]["revision"], 1);
    let b = web_taskdef(&t, 256);
    assert_eq!(b["taskDefinition"]["revision"], 2);
    let d = t.ok("DescribeTaskDefinition", json!({"taskDefinition": "web"}));
    assert_eq!(d["taskDefinition"]["revision"], 2);
    let d1 = t.ok("DescribeTaskDefinition", json!({"taskDefinition": "web:1"}));
    assert_eq!(
        d1["taskDefinition"]["containerDefinitions"][0]["memory"],
        128
    );
    // Invalid: duplicate container names; nothing is stored (revision stays 2).
    t.err(
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [
            {"name": "a", "image": "x", "memory": 64},
            {"name": "a", "image": "y", "memory": 64}]}),
        "ClientException",
    );
    t.err(
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [{"name": "a", "image": "x", "memory": 64, "colour": 1}]}),
        "InvalidParameterException",
    );
    let l = t.ok("ListTaskDefinitions", json!({}));
    assert_eq!(l["taskDefinitionArns"].as_array().expect("arns").len(), 2);
    let dr = t.ok(
        "DeregisterTaskDefinition",
        json!({"taskDefinition": "web:2"}),
    );
    assert_eq!(dr["taskDefinition"]["status"], "INACTIVE");
    // The family's latest ACTIVE revision is now 1.
    let d = t.ok("DescribeTaskDefinition", json!({"taskDefinition": "web"}));
    assert_eq!(d["taskDefinition"]["revision"], 1);
    let desc = t.ok(
        "ListTaskDefinitions",
        json!({"sort": "DESC", "status": "INACTIVE"}),
    );
    assert_eq!(
        desc["taskDefinitionArns"].as_array().expect("arns").len(),
        1
    );
    let del = t.ok(
        "DeleteTaskDefinitions",
        json!({"taskDefinitions": ["web:1", "web:2"]}),
    );
    assert_eq!(del["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS");
    assert_eq!(del["failures"].as_array().expect("failures").len(), 1);
    let fams = t.ok("ListTaskDefinitionFamilies", json!({"familyPrefix": "w"}));
    assert_eq!(fams["families"], json!(["web"]));
    // The next registration is revision 3: revisions are never reused.
    assert_eq!(web_taskdef(&t, 64)["taskDefinition"]["revision"], 3);
}

#[test]
fn run_task_lifecycle_resources_and_durability() {
    let mut t = T::new();
    t.ok("CreateCluster", json!({}));
    t.err(
        "RunTask",
        json!({"taskDefinition": "web"}),
        "ClientException",
    );
    web_taskdef(&t, 300);
    t.err(
        "RunTask",
        json!({"taskDefinition": "web"}),
        "InvalidParameterException",
    );
    let inst = register_instance(&t, "default", 512);
    let r = t.ok(
        "RunTask",
        json!({"taskDefinition": "web", "startedBy": "me"}),
    );
    let task = &r["tasks"][0];
    assert_eq!(task["lastStatus"], "PROVISIONING");
    assert_eq!(task["desiredStatus"], "RUNNING");
    assert_eq!(task["containerInstanceArn"], inst.as_str());
    let arn = task["taskArn"].as_str().expect("arn").to_string();
    // 512 MiB, 300 reserved: a second task does not fit.
    let r2 = t.ok("RunTask", json!({"taskDefinition": "web"}));
    assert!(r2["tasks"].as_array().expect("tasks").is_empty(), "{r2}");
    assert!(!r2["failures"].as_array().expect("failures").is_empty());
    let di = t.ok(
        "DescribeContainerInstances",
        json!({"containerInstances": [inst.clone()]}),
    );
    let remaining = &di["containerInstances"][0]["remainingResources"];
    assert_eq!(remaining[1]["integerValue"], 212);
    assert_eq!(remaining[2]["stringSetValue"], json!(["22", "8080"]));

    // The agent reports.
    for (status, extra) in [
        ("PENDING", json!({"pullStartedAt": 1.7e9})),
        ("ACTIVATING", json!({"pullStoppedAt": 1.7e9 + 1.0})),
        (
            "RUNNING",
            json!({"containers": [{"containerName": "app", "runtimeId": "abc", "status": "RUNNING",
            "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 8080, "protocol": "tcp"}]}]}),
        ),
    ] {
        let mut body = json!({"cluster": "default", "task": arn, "status": status});
        for (k, v) in extra.as_object().expect("obj") {
            body[k] = v.clone();
        }
        assert_eq!(t.ok("SubmitTaskStateChange", body)["acknowledgment"], "ACK");
    }
    let d = t.ok("DescribeTasks", json!({"tasks": [arn.clone()]}));
    let task = &d["tasks"][0];
    assert_eq!(task["lastStatus"], "RUNNING");
    assert!(task["startedAt"].is_number());
    assert_eq!(task["containers"][0]["runtimeId"], "abc");
    assert_eq!(
        task["containers"][0]["networkBindings"][0]["hostPort"],
        8080
    );
    let running = t.ok("ListTasks", json!({}));
    assert_eq!(running["taskArns"], json!([arn.clone()]));

    // Durable: a reopened control plane has the same task.
    t.reopen();
    let d = t.ok("DescribeTasks", json!({"tasks": [arn.clone()]}));
    assert_eq!(d["tasks"][0]["lastStatus"], "RUNNING");

    let s = t.ok("StopTask", json!({"task": arn.clone(), "reason": "done"}));
    assert_eq!(s["task"]["desiredStatus"], "STOPPED");
    assert_eq!(s["task"]["lastStatus"], "RUNNING");
    t.ok(
        "SubmitTaskStateChange",
        json!({"task": arn, "status": "STOPPED", "containers": [{"containerName": "app", "exitCode": 0, "status": "STOPPED"}]}),
    );
    // A late report never moves it back.
    t.ok(
        "SubmitTaskStateChange",
        json!({"task": arn, "status": "RUNNING"}),
    );
    let d = t.ok("DescribeTasks", json!({"tasks": [arn.clone()]}));
    let task = &d["tasks"][0];
    assert_eq!(task["lastStatus"], "STOPPED");
    assert_eq!(task["stopCode"], "UserInitiated");
    assert_eq!(task["stoppedReason"], "done");
    assert_eq!(task["containers"][0]["exitCode"], 0);
    assert!(t.ok("ListTasks", json!({}))["taskArns"]
        .as_array()
        .expect("arns")
        .is_empty());
    assert_eq!(
        t.ok("ListTasks", json!({"desiredStatus": "STOPPED"}))["taskArns"],
        json!([arn])
    );
    // Resources are free again.
    let r3 = t.ok("RunTask", json!({"taskDefinition": "web"}));
    assert_eq!(r3["tasks"].as_array().expect("tasks").len(), 1);
}

#[test]
fn container_health_reports_are_stored() {
    let t = T::new();
    t.ok("CreateCluster", json!({}));
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "hc", "containerDefinitions": [
            {"name": "app", "image": "bb", "memory": 64,
             "healthCheck": {"command": ["CMD", "true"]}},
            {"name": "side", "image": "bb", "memory": 64, "essential": false}]}),
    );
    t.ok(
        "RegisterContainerInstance",
        json!({"totalResources": [{"name": "CPU", "type": "INTEGER", "integerValue": 2048},
                                 {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096}],
               "attributes": [{"name": "ecs.capability.container-health-check"},
                              {"name": "com.amazonaws.ecs.capability.docker-remote-api.1.24"}]}),
    );
    let r = t.ok("RunTask", json!({"taskDefinition": "hc"}));
    let arn = r["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let health = |t: &T| {
        let d = t.ok("DescribeTasks", json!({"tasks": [arn.clone()]}));
        let task = d["tasks"][0].clone();
        (
            task["healthStatus"].clone(),
            task["containers"][0]["healthStatus"].clone(),
        )
    };
    assert_eq!(health(&t), (json!("UNKNOWN"), json!("UNKNOWN")));
    t.ok(
        "SubmitTaskStateChange",
        json!({"task": arn, "status": "RUNNING"}),
    );
    // A report whose only news is the container's health.
    for h in ["HEALTHY", "UNHEALTHY"] {
        t.ok(
            "SubmitTaskStateChange",
            json!({"task": arn, "status": "RUNNING",
                   "containers": [{"containerName": "app", "status": "RUNNING", "healthStatus": h}]}),
        );
        assert_eq!(health(&t), (json!(h), json!(h)));
    }
    t.err(
        "SubmitTaskStateChange",
        json!({"task": arn, "containers": [{"containerName": "app", "healthStatus": "GOOD"}]}),
        "InvalidParameterException",
    );
}

#[test]
fn failed_start_and_essential_exit_stop_codes() {
    let t = T::new();
    t.ok("CreateCluster", json!({}));
    web_taskdef(&t, 64);
    // Host port 8080: one task per instance.
    register_instance(&t, "default", 4096);
    register_instance(&t, "default", 4096);
    let r = t.ok("RunTask", json!({"taskDefinition": "web", "count": 2}));
    let a = r["tasks"][0]["taskArn"].as_str().expect("arn").to_string();
    let b = r["tasks"][1]["taskArn"].as_str().expect("arn").to_string();
    t.ok(
        "SubmitTaskStateChange",
        json!({"task": a, "status": "STOPPED", "reason": "CannotPullContainerError: nope"}),
    );
    t.ok(
        "SubmitTaskStateChange",
        json!({"task": b, "status": "RUNNING"}),
    );
    t.ok(
        "SubmitTaskStateChange",
        json!({"task": b, "status": "STOPPED", "containers": [{"containerName": "app", "exitCode": 3, "status": "STOPPED"}]}),
    );
    let d = t.ok("DescribeTasks", json!({"tasks": [a, b]}));
    assert_eq!(d["tasks"][0]["stopCode"], "TaskFailedToStart");
    assert_eq!(
        d["tasks"][0]["stoppedReason"],
        "CannotPullContainerError: nope"
    );
    assert_eq!(d["tasks"][1]["stopCode"], "EssentialContainerExited");
    assert_eq!(
        d["tasks"][1]["stoppedReason"],
        "Essential container in task exited"
    );
    assert_eq!(d["tasks"][1]["containers"][0]["exitCode"], 3);
}

#[test]
fn tags_and_unknown_operations() {
    let t = T::new();
    let c = t.ok("CreateCluster", json!({"clusterName": "x"}));
    let arn = c["cluster"]["clusterArn"]
        .as_str()
        .expect("arn")
        .to_string();
    t.ok(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "k", "value": "v"}]}),
    );
    assert_eq!(
        t.ok("ListTagsForResource", json!({"resourceArn": arn}))["tags"],
        json!([{"key": "k", "value": "v"}])
    );
    t.err(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "aws:x", "value": "v"}]}),
        "InvalidParameterException",
    );
    t.ok(
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["k"]}),
    );
    assert_eq!(
        t.ok("ListTagsForResource", json!({"resourceArn": arn}))["tags"],
        json!([])
    );
    t.err(
        "ListTagsForResource",
        json!({"resourceArn": "arn:aws:ecs:us-east-1:123456789012:cluster/none"}),
        "ClusterNotFoundException",
    );
    t.err("Frobnicate", json!({}), "UnknownOperationException");
}

#[test]
fn capacity_providers() {
    let t = T::new();
    t.ok("CreateCluster", json!({}));
    t.err(
        "CreateCapacityProvider",
        json!({"name": "fargate-x", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg"}}),
        "InvalidParameterException",
    );
    t.ok(
        "CreateCapacityProvider",
        json!({"name": "cp1", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg"}}),
    );
    let d = t.ok("DescribeCapacityProviders", json!({}));
    let names: Vec<_> = d["capacityProviders"]
        .as_array()
        .expect("cps")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, vec!["FARGATE", "FARGATE_SPOT", "cp1"]);
    let p = t.ok(
        "PutClusterCapacityProviders",
        json!({"cluster": "default", "capacityProviders": ["cp1", "FARGATE"],
               "defaultCapacityProviderStrategy": [{"capacityProvider": "cp1", "weight": 1, "base": 1}]}),
    );
    assert_eq!(p["cluster"]["capacityProviders"], json!(["cp1", "FARGATE"]));
    t.err(
        "PutClusterCapacityProviders",
        json!({"cluster": "default", "capacityProviders": ["nope"], "defaultCapacityProviderStrategy": []}),
        "InvalidParameterException",
    );
    t.err(
        "DeleteCapacityProvider",
        json!({"capacityProvider": "cp1"}),
        "ClientException",
    );
}

#[test]
fn placement_strategies_constraints_and_filters() {
    let t = T::new();
    t.ok("CreateCluster", json!({}));
    web_taskdef(&t, 64);
    let a = register_instance(&t, "default", 4096);
    let b = register_instance(&t, "default", 2048);
    t.ok(
        "PutAttributes",
        json!({"attributes": [{"name": "stack", "value": "blue", "targetId": b}]}),
    );
    // memberOf: only b qualifies. The task needs host port 8080, so one per instance.
    let r = t.ok(
        "RunTask",
        json!({"taskDefinition": "web", "count": 2,
               "placementConstraints": [{"type": "memberOf", "expression": "attribute:stack == blue"}]}),
    );
    assert_eq!(r["tasks"].as_array().expect("tasks").len(), 1, "{r}");
    assert_eq!(r["tasks"][0]["containerInstanceArn"], b.as_str());
    let reasons: Vec<_> = r["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["reason"].as_str().expect("reason").to_string())
        .collect();
    assert!(reasons.iter().any(|x| x.contains("MemberOf")), "{r}");
    // The next one lands on a (b's port 8080 is taken).
    let r = t.ok(
        "RunTask",
        json!({"taskDefinition": "web", "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
    );
    assert_eq!(r["tasks"][0]["containerInstanceArn"], a.as_str(), "{r}");
    let r = t.ok("RunTask", json!({"taskDefinition": "web"}));
    assert!(r["tasks"].as_array().expect("tasks").is_empty());
    assert!(
        r["failures"]
            .as_array()
            .expect("failures")
            .iter()
            .all(|f| f["reason"] == "RESOURCE:PORTS"),
        "{r}"
    );
    t.err(
        "RunTask",
        json!({"taskDefinition": "web", "placementStrategy": [{"type": "binpack", "field": "disk"}]}),
        "InvalidParameterException",
    );
    t.err(
        "RunTask",
        json!({"taskDefinition": "web", "placementConstraints": [{"type": "memberOf", "expression": "attribute:stack =="}]}),
        "InvalidParameterException",
    );
    let l = t.ok(
        "ListContainerInstances",
        json!({"filter": "attribute:stack == blue"}),
    );
    assert_eq!(l["containerInstanceArns"], json!([b]));
    let l = t.ok(
        "ListContainerInstances",
        json!({"filter": "runningTasksCount == 0"}),
    );
    assert_eq!(
        l["containerInstanceArns"].as_array().expect("arns").len(),
        2
    );
    // Draining instances get no new tasks.
    t.ok(
        "UpdateContainerInstancesState",
        json!({"containerInstances": [a.clone(), b.clone()], "status": "DRAINING"}),
    );
    let r = t.ok("RunTask", json!({"taskDefinition": "web"}));
    assert!(r["tasks"].as_array().expect("tasks").is_empty());
    assert_eq!(r["failures"][0]["reason"], "DRAINING");
}
