//! End to end: boto3 drives the ECS API of `berth serve` (control plane + registry + local
//! agent, real containers as root) and `tests/e2e/ecs_boto3.py` validates every raw response,
//! waiters' and paginators' included, against botocore's ECS service model: clusters, capacity
//! providers, task definitions, the agent's container instance and its attributes, a real task
//! of a busybox image pushed here with an ECR token (RunTask through the tasks_running and
//! tasks_stopped waiters), resource tags, and errors whose `__type` the model lists.

mod common;

use std::time::{Duration, Instant};

use common::ecs::*;
use common::*;
use serde_json::Value;

#[test]
fn ecs_boto3_responses_match_botocore_model() {
    if !need_root() {
        return;
    }
    let py = need!(python(&["boto3", "botocore"]));
    let Some(e) = Ecs::start(&[]) else { return };
    let image = e.push_busybox("boto/bb:1");

    let mut cmd = e.with_key(&py);
    cmd.arg(e2e_script("ecs_boto3.py")).args([
        "--endpoint",
        e.api(),
        "--registry",
        &e.srv.addr,
        "--image",
        &image,
    ]);
    let out = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ecs_boto3.py failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no summary:\n{stdout}\n{stderr}"));
    let v = json(last);
    let validated = v["validated"].as_array().expect("validated");
    eprintln!(
        "boto3: {} ECS responses validated against botocore's model",
        validated.len()
    );
    assert!(validated.len() >= 35, "{v}");
    for op in [
        "CreateCluster",
        "DescribeClusters",
        "ListClusters",
        "UpdateCluster",
        "PutClusterCapacityProviders",
        "CreateCapacityProvider",
        "DescribeCapacityProviders",
        "DeleteCapacityProvider",
        "RegisterTaskDefinition",
        "DescribeTaskDefinition",
        "ListTaskDefinitions",
        "ListTaskDefinitionFamilies",
        "DeregisterTaskDefinition",
        "DeleteTaskDefinitions",
        "ListContainerInstances",
        "DescribeContainerInstances",
        "PutAttributes",
        "ListAttributes",
        "DeleteAttributes",
        "UpdateContainerInstancesState",
        "RunTask",
        "DescribeTasks~tasks_running",
        "DescribeTasks",
        "ListTasks",
        "StopTask",
        "DescribeTasks~tasks_stopped",
        "TagResource",
        "UntagResource",
        "ListTagsForResource",
        "ClusterNotFoundException",
        "ClientException",
        "InvalidParameterException",
    ] {
        assert!(
            validated
                .iter()
                .filter_map(Value::as_str)
                .any(|x| x == op || x.ends_with(&format!("!{op}"))),
            "{op} not validated: {v}"
        );
    }

    // The script stopped its task; the agent removes its container (cleanup wait 0).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !e.agent_containers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "containers left: {:?}\n{}",
            e.agent_containers(),
            e.srv.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
