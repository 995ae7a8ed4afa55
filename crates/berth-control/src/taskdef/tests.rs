use serde_json::{json, Value};

use super::*;

const MAXIMAL: &str = include_str!("testdata/maximal.json");
const ARN: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/app:1";

// Member names from botocore's ECS model (data/ecs/2014-11-13/service-2.json, botocore 1.44).
const TASK_DEFINITION_MEMBERS: &[&str] = &[
    "taskDefinitionArn",
    "containerDefinitions",
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "revision",
    "volumes",
    "status",
    "requiresAttributes",
    "placementConstraints",
    "compatibilities",
    "runtimePlatform",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "inferenceAccelerators",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "registeredAt",
    "deregisteredAt",
    "deleteRequestedAt",
    "registeredBy",
    "ephemeralStorage",
    "enableFaultInjection",
    "trustedExecutionConfiguration",
];
const CONTAINER_DEFINITION_MEMBERS: &[&str] = &[
    "name",
    "image",
    "repositoryCredentials",
    "cpu",
    "memory",
    "memoryReservation",
    "links",
    "portMappings",
    "essential",
    "restartPolicy",
    "entryPoint",
    "command",
    "environment",
    "environmentFiles",
    "mountPoints",
    "volumesFrom",
    "linuxParameters",
    "secrets",
    "dependsOn",
    "startTimeout",
    "stopTimeout",
    "versionConsistency",
    "hostname",
    "user",
    "workingDirectory",
    "disableNetworking",
    "privileged",
    "readonlyRootFilesystem",
    "dnsServers",
    "dnsSearchDomains",
    "extraHosts",
    "dockerSecurityOptions",
    "interactive",
    "pseudoTerminal",
    "dockerLabels",
    "ulimits",
    "logConfiguration",
    "healthCheck",
    "systemControls",
    "resourceRequirements",
    "firelensConfiguration",
    "credentialSpecs",
];
const PORT_MAPPING_MEMBERS: &[&str] = &[
    "containerPort",
    "hostPort",
    "protocol",
    "name",
    "appProtocol",
    "containerPortRange",
];
const HEALTH_CHECK_MEMBERS: &[&str] = &["command", "interval", "timeout", "retries", "startPeriod"];
const VOLUME_MEMBERS: &[&str] = &[
    "name",
    "host",
    "dockerVolumeConfiguration",
    "efsVolumeConfiguration",
    "s3filesVolumeConfiguration",
    "fsxWindowsFileServerVolumeConfiguration",
    "configuredAtLaunch",
];
const ATTRIBUTE_MEMBERS: &[&str] = &["name", "value", "targetType", "targetId"];

fn maximal() -> Value {
    serde_json::from_str(MAXIMAL).expect("fixture is JSON")
}

fn minimal() -> Value {
    json!({
        "family": "app",
        "containerDefinitions": [{ "name": "web", "image": "busybox", "memory": 64 }]
    })
}

fn output(spec: &TaskDefinitionSpec) -> Value {
    to_output(
        spec,
        ARN,
        1,
        TaskDefinitionStatus::Active,
        1_700_000_000.5,
        None,
        None,
    )
}

fn reject(input: Value) -> TaskDefError {
    match validate_register(&input) {
        Ok(spec) => panic!("accepted: {spec:?}"),
        Err(e) => e,
    }
}

/// Sets `value` at `path` ("containerDefinitions.0.memory") in a copy of `base`.
fn with(base: &Value, path: &str, value: Value) -> Value {
    let mut out = base.clone();
    let mut at = &mut out;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        at = match part.parse::<usize>() {
            Ok(index) => &mut at[index],
            Err(_) => {
                if last {
                    at[*part] = value;
                    return out;
                }
                &mut at[*part]
            }
        };
        if last {
            *at = value;
            return out;
        }
    }
    out
}

fn without(base: &Value, path: &str) -> Value {
    let mut out = base.clone();
    let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut at = &mut out;
    if !parent.is_empty() {
        for part in parent.split('.') {
            at = match part.parse::<usize>() {
                Ok(index) => &mut at[index],
                Err(_) => &mut at[part],
            };
        }
    }
    at.as_object_mut().expect("object").remove(key);
    out
}

#[test]
fn minimal_definition_echoes_like_ecs() {
    // The aws CLI's register-task-definition example (sleep360): what ECS answers.
    let input = json!({
        "family": "sleep360",
        "containerDefinitions": [{
            "name": "sleep", "image": "busybox", "cpu": 10,
            "command": ["sleep", "360"], "memory": 10, "essential": true
        }]
    });
    let spec = validate_register(&input).expect("valid");
    let out = to_output(
        &spec,
        "arn:aws:ecs:us-east-1:123456789012:task-definition/sleep360:1",
        1,
        TaskDefinitionStatus::Active,
        1_718_986_512.669,
        None,
        Some("arn:aws:sts::123456789012:assumed-role/demo/jane".into()),
    );
    assert_eq!(
        out,
        json!({
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/sleep360:1",
            "containerDefinitions": [{
                "name": "sleep", "image": "busybox", "cpu": 10, "memory": 10,
                "portMappings": [], "essential": true, "command": ["sleep", "360"],
                "environment": [], "mountPoints": [], "volumesFrom": []
            }],
            "family": "sleep360",
            "revision": 1,
            "volumes": [],
            "status": "ACTIVE",
            "placementConstraints": [],
            "compatibilities": ["EXTERNAL", "EC2"],
            "registeredAt": 1_718_986_512.669,
            "registeredBy": "arn:aws:sts::123456789012:assumed-role/demo/jane"
        })
    );
}

#[test]
fn minimal_defaults_cpu_zero_and_no_network_mode_echo() {
    let spec = validate_register(&minimal()).expect("valid");
    let out = output(&spec);
    let c = &out["containerDefinitions"][0];
    assert_eq!(c["cpu"], 0);
    assert_eq!(c["essential"], true);
    assert!(
        out.get("networkMode").is_none(),
        "bridge default is not echoed"
    );
    assert!(out.get("requiresAttributes").is_none());
    assert!(out.get("cpu").is_none() && out.get("memory").is_none());
    assert!(out.get("deregisteredAt").is_none() && out.get("registeredBy").is_none());
    assert_eq!(spec.network_mode(), NetworkMode::Bridge);
    assert_eq!(spec.family(), "app");
}

#[test]
fn maximal_definition_is_accepted_and_echoed() {
    let input = maximal();
    let spec = validate_register(&input).expect("maximal fixture is valid");
    let out = to_output(
        &spec,
        ARN,
        7,
        TaskDefinitionStatus::Inactive,
        1_700_000_000.0,
        Some(1_700_000_100.25),
        Some("arn:aws:iam::123456789012:root".into()),
    );
    // Every request member but tags is echoed; task size normalized.
    for (key, value) in input.as_object().expect("object") {
        match key.as_str() {
            "tags" => assert!(out.get("tags").is_none()),
            "cpu" => assert_eq!(out["cpu"], "1024"),
            "memory" => assert_eq!(out["memory"], "2048"),
            "containerDefinitions" => {}
            _ => assert_eq!(&out[key], value, "{key} echoed as given"),
        }
    }
    assert_eq!(spec.cpu_as_given(), Some("1 vCPU"));
    assert_eq!(spec.memory_as_given(), Some("2 GB"));
    // The fully specified container is echoed as given except for port mapping defaults.
    let web_in = &input["containerDefinitions"][0];
    let web_out = &out["containerDefinitions"][0];
    for (key, value) in web_in.as_object().expect("object") {
        if key != "portMappings" {
            assert_eq!(&web_out[key], value, "{key} echoed as given");
        }
    }
    assert_eq!(
        web_out["portMappings"],
        json!([
            { "containerPort": 80, "hostPort": 8080, "protocol": "tcp", "name": "web-http",
              "appProtocol": "http" },
            { "containerPort": 53, "hostPort": 0, "protocol": "udp" },
            { "containerPortRange": "9000-9010", "protocol": "tcp" }
        ])
    );
    // Defaults filled in the sparse containers.
    let sidecar = &out["containerDefinitions"][1];
    assert_eq!(sidecar["cpu"], 0);
    assert_eq!(sidecar["essential"], false);
    assert_eq!(
        sidecar["healthCheck"],
        json!({ "command": ["CMD", "true"], "interval": 30, "timeout": 5, "retries": 3 })
    );
    assert_eq!(out["status"], "INACTIVE");
    assert_eq!(out["revision"], 7);
    assert_eq!(out["deregisteredAt"], 1_700_000_100.25);
    assert_eq!(out["compatibilities"], json!(["EXTERNAL", "EC2"]));
    let attributes: Vec<&str> = out["requiresAttributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    for expected in [
        "com.amazonaws.ecs.capability.logging-driver.awslogs",
        "com.amazonaws.ecs.capability.docker-remote-api.1.24",
        "ecs.capability.container-health-check",
        "ecs.capability.container-ordering",
        "com.amazonaws.ecs.capability.task-iam-role",
        "ecs.capability.execution-role-awslogs",
        "com.amazonaws.ecs.capability.ecr-auth",
        "ecs.capability.efs",
        "ecs.capability.efsAuth",
        "ecs.capability.docker-plugin.local",
    ] {
        assert!(
            attributes.contains(&expected),
            "{expected} in {attributes:?}"
        );
    }
    assert_eq!(spec.tags().len(), 2);
}

#[test]
fn spec_round_trips_through_its_stored_form() {
    for input in [minimal(), maximal()] {
        let spec = validate_register(&input).expect("valid");
        let stored = serde_json::to_string(&spec).expect("serializes");
        let back: TaskDefinitionSpec = serde_json::from_str(&stored).expect("deserializes");
        assert_eq!(back, spec);
        assert_eq!(output(&back), output(&spec));
    }
}

fn assert_no_nulls(value: &Value, path: &str) {
    match value {
        Value::Null => panic!("null at {path}"),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_no_nulls(item, &format!("{path}[{i}]"));
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                assert_no_nulls(v, &format!("{path}.{k}"));
            }
        }
        _ => {}
    }
}

fn assert_keys(value: &Value, allowed: &[&str], what: &str) {
    for key in value
        .as_object()
        .unwrap_or_else(|| panic!("{what} is an object"))
        .keys()
    {
        assert!(
            allowed.contains(&key.as_str()),
            "{what} has no member {key}"
        );
    }
}

#[test]
fn output_has_only_botocore_members_and_no_nulls() {
    let awsvpc = json!({
        "family": "f", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
        "requiresCompatibilities": ["FARGATE"],
        "containerDefinitions": [{ "name": "a", "image": "i",
            "portMappings": [{ "containerPort": 80 }],
            "healthCheck": { "command": ["CMD", "true"] } }]
    });
    for input in [minimal(), maximal(), awsvpc] {
        let spec = validate_register(&input).expect("valid");
        let out = to_output(
            &spec,
            ARN,
            1,
            TaskDefinitionStatus::DeleteInProgress,
            1.0,
            Some(2.0),
            Some("me".into()),
        );
        assert_no_nulls(&out, "taskDefinition");
        assert_keys(&out, TASK_DEFINITION_MEMBERS, "TaskDefinition");
        for c in out["containerDefinitions"].as_array().expect("containers") {
            assert_keys(c, CONTAINER_DEFINITION_MEMBERS, "ContainerDefinition");
            for m in c["portMappings"]
                .as_array()
                .expect("portMappings is explicit")
            {
                assert_keys(m, PORT_MAPPING_MEMBERS, "PortMapping");
            }
            if let Some(check) = c.get("healthCheck") {
                assert_keys(check, HEALTH_CHECK_MEMBERS, "HealthCheck");
            }
        }
        for v in out["volumes"].as_array().expect("volumes is explicit") {
            assert_keys(v, VOLUME_MEMBERS, "Volume");
        }
        for a in out
            .get("requiresAttributes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert_keys(a, ATTRIBUTE_MEMBERS, "Attribute");
        }
        // Printed for checking against botocore's output shape outside the test suite.
        println!("{out}");
    }
}

#[test]
fn rejections_carry_ecs_codes_and_messages() {
    let base = minimal();
    let container =
        |field: &str, value: Value| with(&base, &format!("containerDefinitions.0.{field}"), value);
    let second = |c: Value| {
        let mut v = base.clone();
        v["containerDefinitions"]
            .as_array_mut()
            .expect("array")
            .push(c);
        v
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (with(&base, "family", json!("")), "ClientException", "Family should not be null or empty."),
        (with(&base, "family", json!("bad name")), "ClientException", "Family contains invalid characters."),
        (with(&base, "family", json!("a".repeat(256))), "ClientException", "Family name is too long"),
        (with(&base, "containerDefinitions", json!([])), "ClientException", "Container list cannot be empty."),
        (
            with(&base, "containerDefinitions", Value::Array((0..11).map(|i| json!({"name": format!("c{i}"), "image": "i", "memory": 8})).collect())),
            "ClientException",
            "at most 10 containers",
        ),
        (without(&base, "containerDefinitions.0.name"), "ClientException", "Container.name should not be null or empty."),
        (container("name", json!("a.b")), "ClientException", "Container.name contains invalid characters."),
        (second(json!({"name": "web", "image": "i", "memory": 8})), "ClientException", "Container names must be unique"),
        (without(&base, "containerDefinitions.0.image"), "ClientException", "Container.image should not be null or empty."),
        (container("image", json!("  ")), "ClientException", "Container.image should not be null or empty."),
        (container("image", json!("$IMAGE:tag")), "ClientException", "Container.image contains invalid characters."),
        (container("image", json!("busybox@sha256:abc")), "ClientException", "invalid digest"),
        (
            without(&base, "containerDefinitions.0.memory"),
            "ClientException",
            "Invalid setting for container 'web'. At least one of 'memory' or 'memoryReservation' must be specified.",
        ),
        (container("memory", json!(4)), "ClientException", "'memory' must be at least 6 MiB."),
        (container("memory", json!(0)), "ClientException", "'memory' must be at least 6 MiB."),
        (container("memoryReservation", json!(128)), "ClientException", "'memory' must be greater than or equal to 'memoryReservation'."),
        (container("cpu", json!(-1)), "ClientException", "'cpu' must be greater than or equal to 0."),
        (with(&base, "cpu", json!("0.1 vCPU")), "ClientException", "Invalid 'cpu' setting for task."),
        (with(&base, "cpu", json!("lots")), "ClientException", "Invalid 'cpu' setting for task."),
        (with(&base, "memory", json!("1.5 TB")), "ClientException", "Invalid 'memory' setting for task."),
        (with(&base, "memory", json!("32")), "ClientException", "The 'memory' setting for container 'web' is greater than for the task."),
        (with(&base, "networkMode", json!("overlay")), "InvalidParameterException", "Invalid value in input: \"overlay\", must be one of: bridge, host, awsvpc, none"),
        (container("portMappings", json!([{"containerPort": 0}])), "ClientException", "'containerPort' must be between 1 and 65535."),
        (container("portMappings", json!([{"containerPort": 70000}])), "ClientException", "'containerPort' must be between 1 and 65535."),
        (container("portMappings", json!([{"containerPort": 80, "hostPort": 65536}])), "ClientException", "'hostPort' must be between 0 and 65535."),
        (container("portMappings", json!([{"containerPort": 80, "protocol": "sctp"}])), "InvalidParameterException", "\"sctp\", must be one of: tcp, udp"),
        (
            with(&container("portMappings", json!([{"containerPort": 80, "hostPort": 8080}])), "networkMode", json!("awsvpc")),
            "ClientException",
            "When networkMode=awsvpc, the host ports and container ports in port mappings must match.",
        ),
        (
            with(&container("portMappings", json!([{"containerPort": 80, "hostPort": 8080}])), "networkMode", json!("host")),
            "ClientException",
            "When networkMode=host, the host ports and container ports in port mappings must match.",
        ),
        (
            container("portMappings", json!([{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 8080}])),
            "ClientException",
            "Host port 8080/tcp is used multiple times in the task.",
        ),
        (
            with(&second(json!({"name": "b", "image": "i", "memory": 8, "portMappings": [{"containerPort": 80}]})), "containerDefinitions.0.portMappings", json!([{"containerPort": 80}])).pipe_mode("host"),
            "ClientException",
            "Container port 80/tcp is used multiple times in the task.",
        ),
        (
            container("portMappings", json!([{"containerPort": 80, "hostPort": 8080}, {"containerPort": 80, "hostPort": 8081}])),
            "ClientException",
            "Container port 80/tcp is included in more than one port mapping.",
        ),
        (
            with(&container("portMappings", json!([{"containerPort": 80}])), "networkMode", json!("none")),
            "ClientException",
            "Port mappings are not supported when networkMode=none.",
        ),
        (container("portMappings", json!([{"containerPortRange": "90-80"}])), "ClientException", "Invalid 'containerPortRange' setting '90-80'"),
        (container("portMappings", json!([{"containerPortRange": "80-90", "containerPort": 80}])), "ClientException", "Cannot specify both single port and port range."),
        (
            with(&container("portMappings", json!([{"containerPortRange": "80-90"}])), "networkMode", json!("host")),
            "ClientException",
            "only supported when networkMode is bridge or awsvpc",
        ),
        (container("essential", json!(false)), "ClientException", "Task definition must have at least one essential container."),
        (
            container("dependsOn", json!([{"containerName": "ghost", "condition": "START"}])),
            "ClientException",
            "Cannot depend on container ghost because it does not exist.",
        ),
        (
            container("dependsOn", json!([{"containerName": "web", "condition": "START"}])),
            "ClientException",
            "Container dependencies contain a cycle",
        ),
        (
            with(&second(json!({"name": "b", "image": "i", "memory": 8, "essential": false})), "containerDefinitions.0.dependsOn", json!([{"containerName": "b", "condition": "HEALTHY"}])),
            "ClientException",
            "A dependency container with HEALTHY condition must have health check configured.",
        ),
        (
            with(&second(json!({"name": "b", "image": "i", "memory": 8})), "containerDefinitions.0.dependsOn", json!([{"containerName": "b", "condition": "SUCCESS"}])),
            "ClientException",
            "A dependency container with SUCCESS or COMPLETE condition cannot be an essential container.",
        ),
        (
            container("dependsOn", json!([{"containerName": "web", "condition": "READY"}])),
            "InvalidParameterException",
            "Invalid value in containerDefinitions[0]: \"READY\", must be one of: START, COMPLETE, SUCCESS, HEALTHY",
        ),
        (container("healthCheck", json!({"command": []})), "ClientException", "'command' must start with CMD or CMD-SHELL"),
        (container("healthCheck", json!({"command": ["curl", "x"]})), "ClientException", "'command' must start with CMD or CMD-SHELL"),
        (container("healthCheck", json!({"command": ["CMD-SHELL"]})), "ClientException", "'command' must start with CMD or CMD-SHELL"),
        (container("healthCheck", json!({"command": ["CMD", "true"], "interval": 4})), "ClientException", "'interval' must be between 5 and 300."),
        (container("healthCheck", json!({"command": ["CMD", "true"], "interval": 301})), "ClientException", "'interval' must be between 5 and 300."),
        (container("healthCheck", json!({"command": ["CMD", "true"], "timeout": 1})), "ClientException", "'timeout' must be between 2 and 60."),
        (container("healthCheck", json!({"command": ["CMD", "true"], "timeout": 61})), "ClientException", "'timeout' must be between 2 and 60."),
        (container("healthCheck", json!({"command": ["CMD", "true"], "retries": 0})), "ClientException", "'retries' must be between 1 and 10."),
        (container("healthCheck", json!({"command": ["CMD", "true"], "retries": 11})), "ClientException", "'retries' must be between 1 and 10."),
        (container("healthCheck", json!({"command": ["CMD", "true"], "startPeriod": 301})), "ClientException", "'startPeriod' must be between 0 and 300."),
        (container("healthCheck", json!({"command": ["CMD", "true"], "startPeriod": -1})), "ClientException", "'startPeriod' must be between 0 and 300."),
        (container("mountPoints", json!([{"sourceVolume": "nope", "containerPath": "/d"}])), "ClientException", "Unknown volume 'nope'."),
        (
            with(&container("mountPoints", json!([{"sourceVolume": "v", "containerPath": "d"}])), "volumes", json!([{"name": "v"}])),
            "ClientException",
            "'containerPath' must be an absolute path.",
        ),
        (with(&base, "volumes", json!([{"name": "v"}, {"name": "v"}])), "ClientException", "Volume name 'v' is used more than once"),
        (with(&base, "volumes", json!([{"host": {}}])), "ClientException", "Volume name should not be null or empty."),
        (with(&base, "volumes", json!([{"name": "v", "host": {"sourcePath": "rel/path"}}])), "ClientException", "must be an absolute path"),
        (with(&base, "volumes", json!([{"name": "v", "dockerVolumeConfiguration": {"scope": "local"}}])), "InvalidParameterException", "Invalid value in volumes[0]: \"local\", must be one of: task, shared"),
        (with(&base, "volumes", json!([{"name": "v", "dockerVolumeConfiguration": {"scope": "task", "autoprovision": true}}])), "ClientException", "'autoprovision' is only supported when 'scope' is 'shared'."),
        (with(&base, "volumes", json!([{"name": "v", "host": {}, "dockerVolumeConfiguration": {}}])), "ClientException", "Specify at most one of"),
        (container("ulimits", json!([{"name": "nofile", "softLimit": 10, "hardLimit": 5}])), "ClientException", "Soft limit exceeds hard limit for ulimit nofile."),
        (container("ulimits", json!([{"name": "files", "softLimit": 1, "hardLimit": 5}])), "InvalidParameterException", "\"files\", must be one of: core, cpu"),
        (container("environment", json!([{"value": "x"}])), "ClientException", "The name of an environment variable should not be null or empty."),
        (container("stopTimeout", json!(121)), "ClientException", "'stopTimeout' must be between 0 and 120 seconds."),
        (container("stopTimeout", json!(-1)), "ClientException", "'stopTimeout' must be between 0 and 120 seconds."),
        (container("startTimeout", json!(-1)), "ClientException", "'startTimeout' must be greater than or equal to 0."),
        (with(&base, "requiresCompatibilities", json!(["EC3"])), "InvalidParameterException", "\"EC3\", must be one of: EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES"),
        (with(&base, "requiresCompatibilities", json!(["MANAGED_INSTANCES"])), "ClientException", "MANAGED_INSTANCES launch type is not supported"),
        (container("logConfiguration", json!({"logDriver": "logentries"})), "InvalidParameterException", "\"logentries\", must be one of: json-file, syslog"),
        (container("logConfiguration", json!({"logDriver": "awslogs"})), "ClientException", "Log driver awslogs requires options: awslogs-group"),
        (container("links", json!(["ghost"])), "ClientException", "Container 'ghost' is not another container"),
        (
            with(&second(json!({"name": "b", "image": "i", "memory": 8})), "containerDefinitions.0.links", json!(["b"])).pipe_mode("awsvpc"),
            "ClientException",
            "Links are not supported when networkMode=awsvpc.",
        ),
        (with(&container("hostname", json!("h")), "networkMode", json!("awsvpc")), "ClientException", "hostname is not supported on container when networkMode=awsvpc."),
        (container("volumesFrom", json!([{"sourceContainer": "web"}])), "ClientException", "Container 'web' is not another container"),
        (with(&base, "tags", json!([{"key": "aws:owner", "value": "x"}])), "InvalidParameterException", "reserved prefix 'aws:'"),
        (with(&base, "tags", json!([{"key": "AWS:owner", "value": "x"}])), "InvalidParameterException", "reserved prefix 'aws:'"),
        (with(&base, "tags", json!([{"key": "", "value": "x"}])), "InvalidParameterException", "between 1 and 128 characters"),
        (with(&base, "tags", json!([{"key": "k".repeat(129), "value": "x"}])), "InvalidParameterException", "between 1 and 128 characters"),
        (with(&base, "tags", json!([{"key": "k", "value": "v".repeat(257)}])), "InvalidParameterException", "The maximum is 256 characters."),
        (with(&base, "tags", json!([{"key": "k", "value": "a"}, {"key": "k", "value": "b"}])), "InvalidParameterException", "Duplicate tag key 'k'."),
        (with(&base, "tags", json!([{"key": "k*", "value": "a"}])), "InvalidParameterException", "contains invalid characters"),
        (
            with(&base, "tags", Value::Array((0..51).map(|i| json!({"key": format!("k{i}"), "value": "v"})).collect())),
            "InvalidParameterException",
            "at most 50 tags",
        ),
        (with(&base, "placementConstraints", json!([{"type": "memberOf"}])), "ClientException", "Invalid placement constraint."),
        (with(&base, "ephemeralStorage", json!({"sizeInGiB": 20})), "ClientException", "'sizeInGiB' must be between 21 and 200."),
        (with(&base, "proxyConfiguration", json!({"containerName": "ghost"})), "ClientException", "Container 'ghost' is not defined"),
        (with(&base, "requiresCompatibilities", json!(["FARGATE"])), "ClientException", "Fargate only supports network mode \u{2018}awsvpc\u{2019}."),
        (
            with(&with(&base, "requiresCompatibilities", json!(["FARGATE"])), "networkMode", json!("awsvpc")),
            "ClientException",
            "Fargate requires that 'cpu' be defined at the task level.",
        ),
        (
            with(&with(&with(&base, "requiresCompatibilities", json!(["FARGATE"])), "networkMode", json!("awsvpc")), "cpu", json!("256")),
            "ClientException",
            "Fargate requires that 'memory' be defined at the task level.",
        ),
        (
            with(&with(&with(&with(&base, "requiresCompatibilities", json!(["FARGATE"])), "networkMode", json!("awsvpc")), "cpu", json!("256")), "memory", json!("4096")),
            "ClientException",
            "No Fargate configuration exists for given values.",
        ),
        (
            with(&with(&base, "requiresCompatibilities", json!(["EXTERNAL"])), "networkMode", json!("awsvpc")),
            "ClientException",
            "EXTERNAL compatible task definitions do not support networkMode=awsvpc.",
        ),
        (with(&base, "cpu", json!(256)), "InvalidParameterException", "Invalid parameter in input: invalid type: integer `256`, expected a string"),
        (json!([]), "InvalidParameterException", "The request body must be a JSON object."),
        (without(&base, "family"), "InvalidParameterException", "Missing required parameter in input: \"family\""),
        (json!({"family": "f"}), "InvalidParameterException", "Missing required parameter in input: \"containerDefinitions\""),
    ];
    for (i, (input, code, message)) in cases.into_iter().enumerate() {
        let error = reject(input);
        assert_eq!(error.code(), code, "case {i}: {error}");
        assert!(
            error.message().contains(message),
            "case {i}: {:?} lacks {message:?}",
            error.message()
        );
    }
}

/// `pipe_mode("host")`: the value with `networkMode` set, for readable case tables.
trait PipeMode {
    fn pipe_mode(self, mode: &str) -> Value;
}

impl PipeMode for Value {
    fn pipe_mode(self, mode: &str) -> Value {
        with(&self, "networkMode", json!(mode))
    }
}

#[test]
fn container_sizes_must_fit_the_task() {
    let input = json!({
        "family": "f", "memory": "100", "cpu": "256",
        "containerDefinitions": [
            { "name": "a", "image": "i", "memoryReservation": 60, "cpu": 100 },
            { "name": "b", "image": "i", "memory": 60, "cpu": 100 }
        ]
    });
    let e = reject(input.clone());
    assert_eq!(e.code(), "ClientException");
    assert!(
        e.message().contains("sum of the memory reservations"),
        "{e}"
    );
    let fits = with(&input, "memory", json!("512"));
    validate_register(&fits).expect("120 MiB and 200 units fit 512 MiB and 256 units");
    let e = reject(with(&fits, "containerDefinitions.0.cpu", json!(300)));
    assert_eq!(
        e.message(),
        "The 'cpu' setting for container 'a' is greater than for the task."
    );
    let e = reject(with(&fits, "containerDefinitions.0.cpu", json!(200)));
    assert!(e.message().contains("sum of the 'cpu' settings"), "{e}");
    let e = reject(with(
        &fits,
        "containerDefinitions.1.memoryReservation",
        json!(600),
    ));
    assert!(
        e.message()
            .contains("'memory' must be greater than or equal to 'memoryReservation'"),
        "{e}"
    );
    let e = reject(with(
        &fits,
        "containerDefinitions.0.memoryReservation",
        json!(600),
    ));
    assert_eq!(
        e.message(),
        "The 'memoryReservation' setting for container 'a' is greater than for the task."
    );
}

#[test]
fn unknown_members_are_named_with_their_place() {
    let e = reject(with(
        &minimal(),
        "containerDefinitions.0.colour",
        json!("red"),
    ));
    assert_eq!(e.code(), "InvalidParameterException");
    assert!(
        e.message().starts_with("Unknown parameter in containerDefinitions[0]: \"colour\", must be one of: name, image,"),
        "{}",
        e.message()
    );
    let e = reject(with(&minimal(), "flavour", json!(1)));
    assert!(
        e.message()
            .starts_with("Unknown parameter in input: \"flavour\""),
        "{}",
        e.message()
    );
    let e = reject(with(
        &minimal(),
        "containerDefinitions.0.healthCheck",
        json!({"command": ["CMD", "x"], "every": 3}),
    ));
    assert!(
        e.message()
            .contains("\"every\", must be one of: command, interval"),
        "{}",
        e.message()
    );
    let e = reject(with(
        &minimal(),
        "volumes",
        json!([{"name": "v", "size": 3}]),
    ));
    assert!(
        e.message()
            .starts_with("Unknown parameter in volumes[0]: \"size\""),
        "{}",
        e.message()
    );
}

#[test]
fn task_cpu_and_memory_strings_normalize_to_units_and_mib() {
    let cpu_cases = [
        ("256", Some(256)),
        ("1024", Some(1024)),
        ("0.25 vCPU", Some(256)),
        (".5 vcpu", Some(512)),
        ("1 vCPU", Some(1024)),
        ("2vCPU", Some(2048)),
        (" 4 VCPU ", Some(4096)),
        ("0.125 vCPU", Some(128)),
        ("192 vCPU", Some(196_608)),
        ("193 vCPU", None),
        ("127", None),
        ("0.1 vCPU", None),
        ("-256", None),
        ("1.5", None),
        ("vCPU", None),
        ("", None),
        ("1 GB", None),
    ];
    for (text, expected) in cpu_cases {
        assert_eq!(parse_task_cpu(text), expected, "cpu {text:?}");
    }
    let memory_cases = [
        ("512", Some(512)),
        ("1 GB", Some(1024)),
        ("0.5GB", Some(512)),
        ("2 gb", Some(2048)),
        ("0.75 GB", Some(768)),
        ("120 GB", Some(122_880)),
        ("5", None),
        ("0.001 GB", None),
        ("1 GiB", None),
        ("1 MB", None),
        ("abc", None),
    ];
    for (text, expected) in memory_cases {
        assert_eq!(parse_task_memory(text), expected, "memory {text:?}");
    }
    let spec = validate_register(&with(
        &with(&minimal(), "cpu", json!("0.25 vCPU")),
        "memory",
        json!("0.5GB"),
    ))
    .expect("valid");
    let out = output(&spec);
    assert_eq!(
        (out["cpu"].clone(), out["memory"].clone()),
        (json!("256"), json!("512"))
    );
    assert_eq!(
        (spec.task_cpu_units(), spec.task_memory_mib()),
        (Some(256), Some(512))
    );
    assert_eq!(
        (spec.cpu_as_given(), spec.memory_as_given()),
        (Some("0.25 vCPU"), Some("0.5GB"))
    );
}

#[test]
fn fargate_sizes() {
    assert!(is_fargate_size(256, 512));
    assert!(is_fargate_size(256, 2048));
    assert!(!is_fargate_size(256, 3072));
    assert!(is_fargate_size(512, 4096));
    assert!(is_fargate_size(4096, 30720));
    assert!(!is_fargate_size(4096, 31744));
    assert!(is_fargate_size(8192, 20480));
    assert!(!is_fargate_size(8192, 17408));
    assert!(is_fargate_size(16384, 122_880));
    assert!(!is_fargate_size(300, 1024));
}

#[test]
fn reservations_use_task_size_else_container_sums() {
    let input = json!({
        "family": "f",
        "containerDefinitions": [
            { "name": "a", "image": "i", "cpu": 100, "memory": 256, "memoryReservation": 128 },
            { "name": "b", "image": "i", "memory": 64 },
            { "name": "c", "image": "i", "cpu": 28, "memoryReservation": 32, "essential": false }
        ]
    });
    let spec = validate_register(&input).expect("valid");
    assert_eq!(spec.reserved_cpu_units(), 128);
    assert_eq!(spec.reserved_memory_mib(), 128 + 64 + 32);
    let spec = validate_register(&with(
        &with(&input, "cpu", json!("1 vCPU")),
        "memory",
        json!("1 GB"),
    ))
    .expect("valid");
    assert_eq!(spec.reserved_cpu_units(), 1024);
    assert_eq!(spec.reserved_memory_mib(), 1024);
    // Task memory alone is enough: containers may then omit memory.
    let spec = validate_register(&json!({
        "family": "f", "memory": "512",
        "containerDefinitions": [{ "name": "a", "image": "i" }]
    }))
    .expect("valid");
    assert_eq!(spec.reserved_memory_mib(), 512);
    assert_eq!(spec.reserved_cpu_units(), 0);
}

#[test]
fn static_host_ports_per_network_mode() {
    let mappings = json!([
        { "containerPort": 80, "hostPort": 8080 },
        { "containerPort": 53, "hostPort": 5353, "protocol": "udp" },
        { "containerPort": 9000 },
        { "containerPortRange": "7000-7010" }
    ]);
    let bridge = with(&minimal(), "containerDefinitions.0.portMappings", mappings);
    let spec = validate_register(&bridge).expect("valid");
    assert_eq!(
        spec.static_host_ports(),
        vec![
            HostPort {
                protocol: TransportProtocol::Tcp,
                port: 8080
            },
            HostPort {
                protocol: TransportProtocol::Udp,
                port: 5353
            },
        ]
    );
    let ports = out_ports(&spec);
    assert_eq!(
        ports[2],
        json!({"containerPort": 9000, "hostPort": 0, "protocol": "tcp"})
    );

    let host = json!({
        "family": "f", "networkMode": "host",
        "containerDefinitions": [
            { "name": "a", "image": "i", "memory": 8,
              "portMappings": [{ "containerPort": 80 }, { "containerPort": 443, "hostPort": 443 }] },
            { "name": "b", "image": "i", "memory": 8,
              "portMappings": [{ "containerPort": 80, "protocol": "udp" }] }
        ]
    });
    let spec = validate_register(&host).expect("valid");
    assert_eq!(
        spec.static_host_ports(),
        vec![
            HostPort {
                protocol: TransportProtocol::Tcp,
                port: 80
            },
            HostPort {
                protocol: TransportProtocol::Tcp,
                port: 443
            },
            HostPort {
                protocol: TransportProtocol::Udp,
                port: 80
            },
        ]
    );
    // ECS echoes hostPort = containerPort in host and awsvpc mode.
    assert_eq!(
        out_ports(&spec)[0],
        json!({"containerPort": 80, "hostPort": 80, "protocol": "tcp"})
    );

    let awsvpc = with(
        &with(&minimal(), "networkMode", json!("awsvpc")),
        "containerDefinitions.0.portMappings",
        json!([{ "containerPort": 8080, "hostPort": 0 }]),
    );
    let spec = validate_register(&awsvpc).expect("valid");
    assert!(spec.static_host_ports().is_empty());
    assert_eq!(
        out_ports(&spec)[0],
        json!({"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"})
    );
}

fn out_ports(spec: &TaskDefinitionSpec) -> Vec<Value> {
    output(spec)["containerDefinitions"][0]["portMappings"]
        .as_array()
        .expect("ports")
        .clone()
}

#[test]
fn compatibilities_and_required_attributes() {
    let fargate = json!({
        "family": "f", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
        "requiresCompatibilities": ["FARGATE"],
        "containerDefinitions": [
            { "name": "app", "image": "i",
              "dependsOn": [{ "containerName": "db", "condition": "HEALTHY" }] },
            { "name": "db", "image": "i", "essential": false,
              "healthCheck": { "command": ["CMD-SHELL", "true"] } }
        ]
    });
    let spec = validate_register(&fargate).expect("valid");
    assert!(spec.is_fargate_compatible());
    assert!(spec.supports(Compatibility::Fargate));
    let out = output(&spec);
    assert_eq!(out["compatibilities"], json!(["EC2", "FARGATE"]));
    assert_eq!(out["requiresCompatibilities"], json!(["FARGATE"]));
    assert_eq!(out["networkMode"], "awsvpc");
    assert_eq!(
        out["requiresAttributes"],
        json!([
            { "name": "com.amazonaws.ecs.capability.docker-remote-api.1.24" },
            { "name": "ecs.capability.container-health-check" },
            { "name": "ecs.capability.container-ordering" },
            { "name": "ecs.capability.task-eni" }
        ])
    );
    for name in spec.requires_attributes() {
        assert!(
            CAPABILITY_ATTRIBUTES.contains(&name.as_str()),
            "{name} advertised"
        );
    }
    // awsvpc with a size Fargate does not offer: EC2 only.
    let spec = validate_register(&with(
        &without(&fargate, "requiresCompatibilities"),
        "memory",
        json!("4096"),
    ))
    .expect("valid on EC2");
    assert_eq!(spec.compatibilities(), vec![Compatibility::Ec2]);
    // Host paths are not for Fargate.
    let host_volume = with(
        &without(&fargate, "requiresCompatibilities"),
        "volumes",
        json!([{ "name": "v", "host": { "sourcePath": "/x" } }]),
    );
    assert!(!validate_register(&host_volume)
        .expect("valid on EC2")
        .is_fargate_compatible());
    let e = reject(with(
        &host_volume,
        "requiresCompatibilities",
        json!(["FARGATE"]),
    ));
    assert_eq!(
        e.message(),
        "Fargate compatible task definitions do not support sourcePath"
    );
    // Fargate's stop timeout floor.
    let e = reject(with(
        &fargate,
        "containerDefinitions.0.stopTimeout",
        json!(1),
    ));
    assert!(
        e.message()
            .contains("'stopTimeout' must be between 2 and 120 seconds."),
        "{e}"
    );
}

#[test]
fn dependency_cycles_are_found() {
    let input = json!({
        "family": "f",
        "containerDefinitions": [
            { "name": "a", "image": "i", "memory": 8, "dependsOn": [{ "containerName": "b", "condition": "START" }] },
            { "name": "b", "image": "i", "memory": 8, "dependsOn": [{ "containerName": "c", "condition": "START" }] },
            { "name": "c", "image": "i", "memory": 8, "dependsOn": [{ "containerName": "a", "condition": "START" }] }
        ]
    });
    let e = reject(input.clone());
    assert!(
        e.message()
            .starts_with("Container dependencies contain a cycle"),
        "{e}"
    );
    let acyclic = without(&input, "containerDefinitions.2.dependsOn");
    validate_register(&acyclic).expect("a chain is fine");
}

#[test]
fn errors_map_to_aws_errors() {
    let e = reject(with(&minimal(), "family", json!("x y")));
    assert_eq!(
        e.to_string(),
        "task definition rejected: Family contains invalid characters."
    );
    let aws: berth_aws::AwsError = e.into();
    let debug = format!("{aws:?}");
    assert!(
        debug.contains("ClientException") && debug.contains("Family contains invalid characters."),
        "{debug}"
    );
}

#[test]
fn null_members_count_as_absent() {
    let input = with(
        &with(
            &minimal(),
            "containerDefinitions.0.memoryReservation",
            Value::Null,
        ),
        "volumes",
        Value::Null,
    );
    let spec = validate_register(&input).expect("nulls are absent members");
    assert_no_nulls(&output(&spec), "taskDefinition");
}
