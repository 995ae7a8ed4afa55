//! Fargate through the ECS API in process: launch types and strategies, platform placement,
//! ENI attachments, validation, Spot interruption, the image cache.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{split, StrategyItem, NO_CAPACITY, SPOT_REASON};
use crate::ecs::tests::T;

/// A platform host (in cluster `host_cluster`) whose agent is connected.
fn platform_host(t: &T, host_cluster: &str, memory: i64) -> String {
    t.ok("CreateCluster", json!({"clusterName": host_cluster}));
    let v = t.ok(
        "RegisterContainerInstance",
        json!({
            "cluster": host_cluster,
            "totalResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
            ],
            "attributes": [{"name": "berth.platform", "value": "true"}],
        }),
    );
    let arn = v["containerInstance"]["containerInstanceArn"]
        .as_str()
        .expect("arn")
        .to_string();
    t.control.poll_seen(&arn, true);
    arn
}

fn fargate_td(t: &T, family: &str, cpu: &str, memory: &str) -> String {
    let v = t.ok(
        "RegisterTaskDefinition",
        json!({
            "family": family,
            "requiresCompatibilities": ["FARGATE"],
            "networkMode": "awsvpc",
            "cpu": cpu, "memory": memory,
            "containerDefinitions": [
                {"name": "app", "image": "localhost:5000/app:1",
                 "portMappings": [{"containerPort": 80}]},
                {"name": "side", "image": "localhost:5000/side:1", "essential": false},
            ],
        }),
    );
    v["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("arn")
        .to_string()
}

fn vpc(subnet: &str) -> Value {
    json!({"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": ["sg-1"],
           "assignPublicIp": "DISABLED"}})
}

fn item(p: &str, weight: u32, base: u32) -> StrategyItem {
    StrategyItem {
        provider: p.into(),
        weight,
        base,
    }
}

#[test]
fn split_gives_base_first_then_by_weight() {
    let none = BTreeMap::new();
    let s = [item("FARGATE", 1, 1), item("FARGATE_SPOT", 3, 0)];
    assert_eq!(
        split(&s, 9, &none),
        vec![("FARGATE".into(), 3), ("FARGATE_SPOT".into(), 6)]
    );
    assert_eq!(split(&s, 1, &none), vec![("FARGATE".into(), 1)]);
    // Weight 0 gets nothing beyond its base.
    let s = [item("FARGATE", 0, 2), item("FARGATE_SPOT", 1, 0)];
    assert_eq!(
        split(&s, 5, &none),
        vec![("FARGATE".into(), 2), ("FARGATE_SPOT".into(), 3)]
    );
    // Existing tasks count: only the shortfall is new.
    let have = BTreeMap::from([("FARGATE_SPOT".to_string(), 3usize)]);
    let s = [item("FARGATE", 1, 0), item("FARGATE_SPOT", 1, 0)];
    assert_eq!(split(&s, 6, &have), vec![("FARGATE".into(), 3)]);
}

#[test]
fn run_task_fargate_places_on_platform_capacity_with_an_eni() {
    let t = T::new();
    let host = platform_host(&t, "default", 4096);
    t.ok("CreateCluster", json!({"clusterName": "prod"}));
    let td = fargate_td(&t, "api", "256", "512");
    let v = t.ok(
        "RunTask",
        json!({"cluster": "prod", "taskDefinition": td, "count": 3, "launchType": "FARGATE",
               "networkConfiguration": vpc("subnet-a")}),
    );
    assert_eq!(v["failures"], json!([]));
    let tasks = v["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 3);
    for task in tasks {
        assert_eq!(task["launchType"], "FARGATE");
        assert!(task.get("containerInstanceArn").is_none(), "{task}");
        assert!(task.get("capacityProviderName").is_none(), "{task}");
        assert_eq!(task["platformVersion"], "1.4.0");
        assert_eq!(task["cpu"], "256");
        assert_eq!(task["memory"], "512");
        assert_eq!(task["ephemeralStorage"]["sizeInGiB"], 20);
        let att = &task["attachments"][0];
        assert_eq!(att["type"], "ElasticNetworkInterface");
        assert_eq!(att["status"], "PRECREATED");
        assert_eq!(
            att["details"][0],
            json!({"name": "subnetId", "value": "subnet-a"})
        );
    }
    // The host counts the tasks' memory (512 × 3 of 4096): a 4th and 5th fit, the 8th not.
    let v = t.ok(
        "RunTask",
        json!({"cluster": "prod", "taskDefinition": td, "count": 6, "launchType": "FARGATE",
               "networkConfiguration": vpc("subnet-a")}),
    );
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(5));
    assert_eq!(v["failures"], json!([{"reason": NO_CAPACITY}]));
    // Not the user's container instances: the prod cluster has none.
    let l = t.ok("ListContainerInstances", json!({"cluster": "prod"}));
    assert_eq!(l["containerInstanceArns"], json!([]));
    let d = t.ok("DescribeClusters", json!({"clusters": ["prod"]}));
    assert_eq!(d["clusters"][0]["runningTasksCount"], 0);
    assert_eq!(d["clusters"][0]["pendingTasksCount"], 8);

    // The agent (of cluster `default`) reports the task's address with the task's own ARN.
    let arn = tasks[0]["taskArn"].as_str().expect("arn").to_string();
    t.ok(
        "SubmitTaskStateChange",
        json!({"cluster": "default", "task": arn, "status": "RUNNING",
               "containers": [{"containerName": "app", "status": "RUNNING"}],
               "taskNetwork": {"network": "subnet-a", "privateIpv4Address": "10.89.0.7",
                               "macAddress": "02:42:0a:59:00:07"}}),
    );
    let d = t.ok("DescribeTasks", json!({"cluster": "prod", "tasks": [arn]}));
    let task = &d["tasks"][0];
    assert_eq!(task["lastStatus"], "RUNNING");
    let att = &task["attachments"][0];
    assert_eq!(att["status"], "ATTACHED");
    let details: BTreeMap<String, String> = att["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or_default().to_string(),
                d["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(details["privateIPv4Address"], "10.89.0.7");
    // Berth's per-phase breakdown, as task attributes.
    let at: Vec<&str> = task["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .filter(|n| n.starts_with("berth.at."))
        .collect();
    assert_eq!(at, vec!["berth.at.PROVISIONING", "berth.at.RUNNING"]);
    assert_eq!(details["macAddress"], "02:42:0a:59:00:07");
    assert!(details["networkInterfaceId"].starts_with("eni-"));
    for c in task["containers"].as_array().expect("containers") {
        assert_eq!(
            c["networkInterfaces"],
            json!([{"attachmentId": att["id"], "privateIpv4Address": "10.89.0.7"}])
        );
    }
    // Stopped: the interface is deleted.
    t.ok(
        "SubmitTaskStateChange",
        json!({"cluster": "default", "task": arn, "status": "STOPPED"}),
    );
    let d = t.ok("DescribeTasks", json!({"cluster": "prod", "tasks": [arn]}));
    assert_eq!(d["tasks"][0]["attachments"][0]["status"], "DELETED");
    // Its host's usage no longer counts it.
    let hosts = t.control.read(|s| {
        let r = s.region("us-east-1").expect("region");
        let i = crate::ecs::instances::find(s, "us-east-1", "default", &host).expect("host");
        crate::ecs::instances::usage(r, i).memory
    });
    assert_eq!(hosts, 512 * 7);
}

#[test]
fn fargate_launches_are_validated() {
    let t = T::new();
    platform_host(&t, "default", 8192);
    let td = fargate_td(&t, "api", "256", "512");
    let ec2_only = t.ok(
        "RegisterTaskDefinition",
        json!({"family": "old", "containerDefinitions": [
            {"name": "a", "image": "busybox", "memory": 64}]}),
    )["taskDefinition"]["taskDefinitionArn"]
        .clone();
    let base = json!({"taskDefinition": td, "launchType": "FARGATE",
                      "networkConfiguration": vpc("subnet-a")});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (input, code, msg) in [
        (
            json!({"taskDefinition": ec2_only, "launchType": "FARGATE"}),
            "InvalidParameterException",
            "does not support launch_type FARGATE",
        ),
        (
            with("overrides", json!({"cpu": "256", "memory": "4096"})),
            "ClientException",
            "No Fargate configuration exists for given values: 256 CPU, 4096 memory",
        ),
        (
            with(
                "placementConstraints",
                json!([{"type": "distinctInstance"}]),
            ),
            "InvalidParameterException",
            "not supported with launch type FARGATE",
        ),
        (
            with("platformVersion", json!("1.0.0")),
            "PlatformUnknownException",
            "The specified platform does not exist.",
        ),
        (
            with(
                "capacityProviderStrategy",
                json!([{"capacityProvider": "FARGATE"}]),
            ),
            "InvalidParameterException",
            "Specifying both a launch type and capacity provider strategy",
        ),
        (
            with("overrides", json!({"ephemeralStorage": {"sizeInGiB": 10}})),
            "ClientException",
            "'sizeInGiB' must be between 21 and 200",
        ),
        (
            json!({"taskDefinition": td, "networkConfiguration": vpc("subnet-a"),
                   "capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1}]}),
            "InvalidParameterException",
            "not associated with the cluster",
        ),
        (
            json!({"taskDefinition": td, "launchType": "FARGATE"}),
            "InvalidParameterException",
            "Network Configuration must be provided",
        ),
    ] {
        let m = t.err("RunTask", input.clone(), code);
        assert!(m.contains(msg), "{input}: {m}");
    }
    // Nothing was stored.
    let l = t.ok("ListTasks", json!({}));
    assert_eq!(l["taskArns"], json!([]));
    // Overrides with a valid pair and bigger storage are fine.
    let v = t.ok(
        "RunTask",
        with(
            "overrides",
            json!({"cpu": "512", "memory": "1024", "ephemeralStorage": {"sizeInGiB": 50}}),
        ),
    );
    assert_eq!(v["tasks"][0]["cpu"], "512");
    assert_eq!(v["tasks"][0]["ephemeralStorage"]["sizeInGiB"], 50);
}

#[test]
fn strategies_split_tasks_and_spot_is_reclaimed() {
    let t = T::new();
    platform_host(&t, "default", 16384);
    let td = fargate_td(&t, "api", "256", "512");
    t.ok(
        "PutClusterCapacityProviders",
        json!({"cluster": "default", "capacityProviders": ["FARGATE", "FARGATE_SPOT"],
               "defaultCapacityProviderStrategy": [
                   {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
                   {"capacityProvider": "FARGATE_SPOT", "weight": 3}]}),
    );
    // No launch type and no strategy: the cluster's default strategy.
    let v = t.ok(
        "RunTask",
        json!({"taskDefinition": td, "count": 5, "networkConfiguration": vpc("subnet-b")}),
    );
    let providers: Vec<&str> = v["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|x| x["capacityProviderName"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(providers.iter().filter(|p| **p == "FARGATE").count(), 2);
    assert_eq!(
        providers.iter().filter(|p| **p == "FARGATE_SPOT").count(),
        3
    );
    assert!(v["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .all(|x| x["launchType"] == "FARGATE"));
    // A mix of Fargate and Auto Scaling group providers is refused.
    t.ok(
        "CreateCapacityProvider",
        json!({"name": "asg1", "autoScalingGroupProvider": {
            "autoScalingGroupArn": "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:1:autoScalingGroupName/a"}}),
    );
    t.ok(
        "PutClusterCapacityProviders",
        json!({"cluster": "default", "capacityProviders": ["FARGATE", "FARGATE_SPOT", "asg1"],
               "defaultCapacityProviderStrategy": []}),
    );
    let m = t.err(
        "RunTask",
        json!({"taskDefinition": td, "networkConfiguration": vpc("subnet-b"),
               "capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1},
                                            {"capacityProvider": "asg1", "weight": 1}]}),
        "InvalidParameterException",
    );
    assert!(m.contains("mix of capacity providers"), "{m}");

    // Reclaim two Spot tasks with a 5 s notice.
    let r = t
        .call_fargate(
            "ReclaimSpotCapacity",
            json!({"count": 2, "noticeSeconds": 5}),
        )
        .expect("reclaim");
    let reclaimed: Vec<String> = r["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(reclaimed.len(), 2);
    let d = t.ok("DescribeTasks", json!({"tasks": reclaimed}));
    for task in d["tasks"].as_array().expect("tasks") {
        assert_eq!(task["capacityProviderName"], "FARGATE_SPOT");
        assert_eq!(task["desiredStatus"], "STOPPED");
        assert_eq!(task["stopCode"], "SpotInterruption");
        assert_eq!(task["stoppedReason"], SPOT_REASON);
    }
    let notice = t.control.read(|s| {
        s.region("us-east-1").expect("region").tasks["default"]
            .values()
            .filter(|x| x.stop_code.as_deref() == Some("SpotInterruption"))
            .map(|x| x.stop_timeout_seconds)
            .collect::<Vec<_>>()
    });
    assert_eq!(notice, vec![Some(5), Some(5)]);
    // On-demand tasks cannot be named.
    let on_demand = v["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|x| x["capacityProviderName"] == "FARGATE")
        .expect("on-demand task")["taskArn"]
        .clone();
    let e = t
        .call_fargate("ReclaimSpotCapacity", json!({"tasks": [on_demand]}))
        .expect_err("on-demand");
    assert_eq!(e.code, "InvalidParameterException");
}

#[test]
fn platform_agents_get_fargate_images_to_prepull() {
    let t = T::new();
    let host = platform_host(&t, "default", 4096);
    fargate_td(&t, "api", "256", "512");
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "old", "containerDefinitions": [
            {"name": "a", "image": "ec2-only:1", "memory": 64}]}),
    );
    let images = t
        .control
        .read(|s| super::prepull_images(s.region("us-east-1").expect("r")));
    assert_eq!(
        images,
        vec![
            "localhost:5000/app:1".to_string(),
            "localhost:5000/side:1".into()
        ]
    );
    // Registering a Fargate task definition wakes the platform agents' polls.
    let (before, _) = t.control.watch(&host);
    fargate_td(&t, "api", "512", "1024");
    let (after, _) = t.control.watch(&host);
    assert!(after > before, "{before} → {after}");
}

#[test]
fn fargate_services_are_recorded_counted_and_validated() {
    let t = T::new();
    t.ok("CreateCluster", json!({"clusterName": "default"}));
    let td = fargate_td(&t, "api", "256", "512");
    let base = json!({"serviceName": "api", "taskDefinition": td, "desiredCount": 2,
                      "launchType": "FARGATE", "networkConfiguration": vpc("subnet-a")});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (input, msg) in [
        (
            with("schedulingStrategy", json!("DAEMON")),
            "daemon scheduling strategy is not supported with the FARGATE",
        ),
        (
            with(
                "placementStrategy",
                json!([{"type": "spread", "field": "instanceId"}]),
            ),
            "not supported with launch type FARGATE",
        ),
        (
            with("platformVersion", json!("0.9")),
            "platform does not exist",
        ),
    ] {
        let input = if msg.contains("daemon") {
            let mut i = input;
            i.as_object_mut().map(|o| o.remove("desiredCount"));
            i
        } else {
            input
        };
        let e = t.call("CreateService", input.clone()).expect_err("refused");
        assert!(e.message.contains(msg), "{input}: {e}");
    }
    let sv = t.ok("CreateService", base.clone())["service"].clone();
    assert_eq!(sv["launchType"], "FARGATE");
    assert_eq!(sv["platformVersion"], "1.4.0");
    assert_eq!(sv["deployments"][0]["launchType"], "FARGATE");
    let d = t.ok("DescribeClusters", json!({"clusters": ["default"]}));
    let stats: BTreeMap<String, String> = d["clusters"][0]["statistics"]
        .as_array()
        .expect("statistics")
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap_or_default().to_string(),
                x["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(d["clusters"][0]["activeServicesCount"], 1);
    assert_eq!(stats["activeFargateServiceCount"], "1");
    assert_eq!(stats["activeEC2ServiceCount"], "0");
    // Moving it to a Spot strategy records the strategy and starts a new deployment.
    t.ok(
        "PutClusterCapacityProviders",
        json!({"cluster": "default", "capacityProviders": ["FARGATE", "FARGATE_SPOT"],
               "defaultCapacityProviderStrategy": []}),
    );
    let sv = t.ok(
        "UpdateService",
        json!({"service": "api", "capacityProviderStrategy": [
            {"capacityProvider": "FARGATE_SPOT", "weight": 1}]}),
    )["service"]
        .clone();
    assert!(sv.get("launchType").is_none(), "{sv}");
    assert_eq!(
        sv["capacityProviderStrategy"],
        json!([{"capacityProvider": "FARGATE_SPOT", "weight": 1, "base": 0}])
    );
    assert_eq!(sv["deployments"].as_array().map(Vec::len), Some(2));
}
