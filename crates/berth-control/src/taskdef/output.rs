//! The `TaskDefinition` output shape, and what ECS derives for it: `compatibilities` and
//! `requiresAttributes`.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Map, Value};

use super::model::{Compatibility, EnabledDisabled, LogDriver, NetworkMode, TaskDefinitionStatus};
use super::TaskDefinitionSpec;

/// Every instance attribute [`requires_attributes`] can ask for. An agent that can do all of
/// Berth's task definitions advertises these (plus `logging-driver.*` for the drivers it has,
/// see [`logging_driver_attribute`], and `docker-plugin.*` for its volume drivers).
pub const CAPABILITY_ATTRIBUTES: &[&str] = &[
    "com.amazonaws.ecs.capability.docker-remote-api.1.18",
    "com.amazonaws.ecs.capability.docker-remote-api.1.19",
    "com.amazonaws.ecs.capability.docker-remote-api.1.21",
    "com.amazonaws.ecs.capability.docker-remote-api.1.24",
    "com.amazonaws.ecs.capability.docker-remote-api.1.25",
    "com.amazonaws.ecs.capability.ecr-auth",
    "com.amazonaws.ecs.capability.privileged-container",
    "com.amazonaws.ecs.capability.private-registry-authentication.secretsmanager",
    "com.amazonaws.ecs.capability.task-iam-role",
    "ecs.capability.container-health-check",
    "ecs.capability.container-ordering",
    "ecs.capability.efs",
    "ecs.capability.efsAuth",
    "ecs.capability.env-files.s3",
    "ecs.capability.execution-role-awslogs",
    "ecs.capability.execution-role-ecr-pull",
    "ecs.capability.firelens.fluentbit",
    "ecs.capability.firelens.fluentd",
    "ecs.capability.secrets.asm.environment-variables",
    "ecs.capability.secrets.ssm.environment-variables",
    "ecs.capability.task-eni",
];

/// The attribute an instance needs to run containers logging through `driver`.
pub fn logging_driver_attribute(driver: LogDriver) -> String {
    format!(
        "com.amazonaws.ecs.capability.logging-driver.{}",
        driver.as_str()
    )
}

/// The attribute an instance needs for Docker volumes of `driver`.
pub fn docker_plugin_attribute(driver: &str) -> String {
    format!("ecs.capability.docker-plugin.{driver}")
}

/// The container instance attributes ECS puts in `requiresAttributes` for the features this
/// task definition uses, sorted. The feature → attribute map follows ECS's documentation of
/// container instance attributes; ECS's own list may differ in which `docker-remote-api.1.x`
/// versions it adds.
pub fn requires_attributes(spec: &TaskDefinitionSpec) -> Vec<String> {
    const API: &str = "com.amazonaws.ecs.capability.docker-remote-api.";
    let request = spec.request();
    let mut out = BTreeSet::new();
    let mut add = |name: &str| {
        out.insert(name.to_owned());
    };
    if spec.network_mode() == NetworkMode::Awsvpc {
        add("ecs.capability.task-eni");
    }
    if request.task_role_arn.is_some() {
        add("com.amazonaws.ecs.capability.task-iam-role");
    }
    let execution_role = request.execution_role_arn.is_some();
    for c in spec.containers() {
        if c.memory_reservation.is_some() {
            add(&format!("{API}1.21"));
        }
        if let Some(log) = &c.log_configuration {
            add(&logging_driver_attribute(log.log_driver));
            if log.log_driver == LogDriver::Awslogs {
                add(&format!("{API}1.19"));
                if execution_role {
                    add("ecs.capability.execution-role-awslogs");
                }
            } else {
                add(&format!("{API}1.18"));
            }
        }
        if c.ulimits.as_ref().is_some_and(|u| !u.is_empty())
            || c.docker_labels.as_ref().is_some_and(|l| !l.is_empty())
        {
            add(&format!("{API}1.18"));
        }
        if c.health_check.is_some() {
            add(&format!("{API}1.24"));
            add("ecs.capability.container-health-check");
        }
        if c.depends_on.as_ref().is_some_and(|d| !d.is_empty()) {
            add("ecs.capability.container-ordering");
        }
        if c.system_controls.as_ref().is_some_and(|s| !s.is_empty())
            || c.linux_parameters
                .as_ref()
                .is_some_and(|l| l.init_process_enabled == Some(true))
        {
            add(&format!("{API}1.25"));
        }
        if c.privileged == Some(true) {
            add("com.amazonaws.ecs.capability.privileged-container");
        }
        if c.image().contains(".dkr.ecr.") {
            add("com.amazonaws.ecs.capability.ecr-auth");
            if execution_role {
                add("ecs.capability.execution-role-ecr-pull");
            }
        }
        if c.repository_credentials.is_some() {
            add("com.amazonaws.ecs.capability.private-registry-authentication.secretsmanager");
        }
        for secret in c.secrets.as_deref().unwrap_or_default() {
            if secret.value_from.contains(":secretsmanager:") {
                add("ecs.capability.secrets.asm.environment-variables");
            } else {
                add("ecs.capability.secrets.ssm.environment-variables");
            }
        }
        if c.environment_files.as_ref().is_some_and(|f| !f.is_empty()) {
            add("ecs.capability.env-files.s3");
        }
        if let Some(firelens) = &c.firelens_configuration {
            add(&format!(
                "ecs.capability.firelens.{}",
                firelens.kind.as_str()
            ));
        }
    }
    for volume in spec.volumes() {
        if let Some(docker) = &volume.docker_volume_configuration {
            add(&docker_plugin_attribute(
                docker.driver.as_deref().unwrap_or("local"),
            ));
            add(&format!("{API}1.25"));
        }
        if let Some(efs) = &volume.efs_volume_configuration {
            add("ecs.capability.efs");
            let auth = efs.authorization_config.is_some()
                || efs.transit_encryption == Some(EnabledDisabled::Enabled);
            if auth {
                add("ecs.capability.efsAuth");
            }
        }
    }
    out.into_iter().collect()
}

/// The launch types this task definition validates against, in the order ECS lists them: EC2
/// always; EXTERNAL unless the network mode is awsvpc (ECS Anywhere has no awsvpc); FARGATE when
/// [`TaskDefinitionSpec::is_fargate_compatible`].
pub fn compatibilities(spec: &TaskDefinitionSpec) -> Vec<Compatibility> {
    let mut out = Vec::new();
    if spec.network_mode() != NetworkMode::Awsvpc {
        out.push(Compatibility::External);
    }
    out.push(Compatibility::Ec2);
    if spec.is_fargate_compatible() {
        out.push(Compatibility::Fargate);
    }
    out
}

/// Serializes `value`, which cannot fail for this module's types (string keys, no floats).
fn json<T: Serialize + ?Sized>(value: &T) -> Option<Value> {
    serde_json::to_value(value).ok().filter(|v| !v.is_null())
}

fn put<T: Serialize + ?Sized>(out: &mut Map<String, Value>, key: &str, value: Option<&T>) {
    if let Some(v) = value.and_then(json) {
        out.insert(key.to_owned(), v);
    }
}

fn put_time(out: &mut Map<String, Value>, key: &str, epoch_secs: Option<f64>) {
    if let Some(n) = epoch_secs.and_then(serde_json::Number::from_f64) {
        out.insert(key.to_owned(), Value::Number(n));
    }
}

/// The `TaskDefinition` output shape for `spec` as ECS fills it in. See the module docs of
/// [`super`] for what is echoed and which defaults are explicit.
pub fn to_output(
    spec: &TaskDefinitionSpec,
    arn: &str,
    revision: u32,
    status: TaskDefinitionStatus,
    registered_at_epoch_secs: f64,
    deregistered_at: Option<f64>,
    registered_by: Option<String>,
) -> Value {
    let request = spec.request();
    let mut out = Map::new();
    out.insert("taskDefinitionArn".into(), Value::String(arn.to_owned()));
    put(
        &mut out,
        "containerDefinitions",
        Some(&request.container_definitions),
    );
    out.insert("family".into(), Value::String(request.family.clone()));
    put(&mut out, "taskRoleArn", request.task_role_arn.as_ref());
    put(
        &mut out,
        "executionRoleArn",
        request.execution_role_arn.as_ref(),
    );
    // ECS echoes networkMode only when the request had one (the default, bridge, is implied).
    put(&mut out, "networkMode", request.network_mode.as_ref());
    out.insert("revision".into(), Value::from(revision));
    put(&mut out, "volumes", Some(spec.volumes()));
    out.insert("status".into(), Value::String(status.as_str().to_owned()));
    let attributes: Vec<Value> = requires_attributes(spec)
        .into_iter()
        .map(|name| serde_json::json!({ "name": name }))
        .collect();
    if !attributes.is_empty() {
        out.insert("requiresAttributes".into(), Value::Array(attributes));
    }
    let constraints = request.placement_constraints.as_deref().unwrap_or_default();
    put(&mut out, "placementConstraints", Some(&constraints));
    put(&mut out, "compatibilities", Some(&compatibilities(spec)));
    put(
        &mut out,
        "runtimePlatform",
        request.runtime_platform.as_ref(),
    );
    put(
        &mut out,
        "requiresCompatibilities",
        request.requires_compatibilities.as_ref(),
    );
    put(&mut out, "cpu", request.cpu.as_ref());
    put(&mut out, "memory", request.memory.as_ref());
    put(
        &mut out,
        "inferenceAccelerators",
        request.inference_accelerators.as_ref(),
    );
    put(&mut out, "pidMode", request.pid_mode.as_ref());
    put(&mut out, "ipcMode", request.ipc_mode.as_ref());
    put(
        &mut out,
        "proxyConfiguration",
        request.proxy_configuration.as_ref(),
    );
    put_time(&mut out, "registeredAt", Some(registered_at_epoch_secs));
    put_time(&mut out, "deregisteredAt", deregistered_at);
    put(&mut out, "registeredBy", registered_by.as_ref());
    put(
        &mut out,
        "ephemeralStorage",
        request.ephemeral_storage.as_ref(),
    );
    put(
        &mut out,
        "enableFaultInjection",
        request.enable_fault_injection.as_ref(),
    );
    put(
        &mut out,
        "trustedExecutionConfiguration",
        request.trusted_execution_configuration.as_ref(),
    );
    Value::Object(out)
}
