//! The parts of ECS's `TaskDefinition`, `TaskOverride` and `NetworkConfiguration` output shapes
//! the agent reads. Parsing is lenient (the control plane validated the input): unknown fields
//! are kept in `other` maps so that what the agent does not carry out can be named.

use serde::Deserialize;
use serde_json::{Map, Value};

/// A task definition (ECS `TaskDefinition` shape).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub revision: i64,
    #[serde(default)]
    pub container_definitions: Vec<ContainerDefinition>,
    #[serde(default)]
    pub network_mode: Option<String>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Task-level CPU units (a string in ECS's output, e.g. `"256"` or `"1 vCPU"`).
    #[serde(default)]
    pub cpu: Option<Value>,
    /// Task-level memory in MiB (a string in ECS's output, e.g. `"512"` or `"1 GB"`).
    #[serde(default)]
    pub memory: Option<Value>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One container of a task definition.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub cpu: Option<i64>,
    #[serde(default)]
    pub memory: Option<i64>,
    #[serde(default)]
    pub memory_reservation: Option<i64>,
    #[serde(default)]
    pub essential: Option<bool>,
    #[serde(default)]
    pub entry_point: Option<Vec<String>>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub environment: Vec<KeyValue>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub mount_points: Vec<MountPoint>,
    #[serde(default)]
    pub working_directory: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    #[serde(default)]
    pub stop_timeout: Option<i64>,
    #[serde(default)]
    pub disable_networking: Option<bool>,
    #[serde(default)]
    pub interactive: Option<bool>,
    #[serde(default)]
    pub pseudo_terminal: Option<bool>,
    #[serde(default)]
    pub linux_parameters: Option<LinuxParameters>,
    #[serde(default)]
    pub log_configuration: Option<LogConfiguration>,
    #[serde(default)]
    pub health_check: Option<HealthCheckDef>,
    #[serde(default)]
    pub ulimits: Vec<UlimitDef>,
    #[serde(default)]
    pub readonly_root_filesystem: Option<bool>,
    #[serde(default)]
    pub privileged: Option<bool>,
    #[serde(default)]
    pub extra_hosts: Vec<HostEntry>,
    #[serde(default)]
    pub docker_labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub dns_servers: Vec<String>,
    #[serde(default)]
    pub dns_search_domains: Vec<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// ECS `Ulimit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UlimitDef {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub soft_limit: i64,
    #[serde(default)]
    pub hard_limit: i64,
}

/// ECS `HostEntry` (`extraHosts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEntry {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub ip_address: String,
}

/// ECS `KernelCapabilities`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelCapabilities {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub drop: Vec<String>,
}

/// ECS `HealthCheck` (seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckDef {
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub interval: Option<i64>,
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub retries: Option<i64>,
    #[serde(default)]
    pub start_period: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValue {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: Option<u16>,
    #[serde(default)]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub container_port_range: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    #[serde(default)]
    pub source_volume: Option<String>,
    #[serde(default)]
    pub container_path: Option<String>,
    #[serde(default)]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    #[serde(default)]
    pub container_name: String,
    #[serde(default)]
    pub condition: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxParameters {
    #[serde(default)]
    pub tmpfs: Vec<Tmpfs>,
    #[serde(default)]
    pub capabilities: Option<KernelCapabilities>,
    /// MiB.
    #[serde(default)]
    pub shared_memory_size: Option<i64>,
    /// MiB of swap on top of the memory limit.
    #[serde(default)]
    pub max_swap: Option<i64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tmpfs {
    #[serde(default)]
    pub container_path: String,
    /// MiB.
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub mount_options: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogConfiguration {
    #[serde(default)]
    pub log_driver: Option<String>,
}

/// A task volume.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub host: Option<HostVolume>,
    #[serde(default)]
    pub docker_volume_configuration: Option<DockerVolumeConfiguration>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostVolume {
    #[serde(default)]
    pub source_path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerVolumeConfiguration {
    /// `task` (default) or `shared`.
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// RunTask/StartTask `overrides`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOverride {
    #[serde(default)]
    pub container_overrides: Vec<ContainerOverride>,
    #[serde(default)]
    pub cpu: Option<Value>,
    #[serde(default)]
    pub memory: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub environment: Vec<KeyValue>,
    #[serde(default)]
    pub cpu: Option<i64>,
    #[serde(default)]
    pub memory: Option<i64>,
    #[serde(default)]
    pub memory_reservation: Option<i64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// RunTask `networkConfiguration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfiguration {
    #[serde(default)]
    pub awsvpc_configuration: Option<AwsVpcConfiguration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsVpcConfiguration {
    #[serde(default)]
    pub subnets: Vec<String>,
}

/// Whether a JSON value means "set" (not null, not empty, not false).
pub(crate) fn is_set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// ECS CPU units from a task-level `cpu` (`"256"`, `256`, `"1 vCPU"`, `"0.5 vcpu"`); strings
/// are read by the control plane's own parser.
pub(crate) fn cpu_units(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => berth_control::taskdef::parse_task_cpu(s).map(f64::from),
        _ => None,
    }
    .filter(|c| *c > 0.0)
}

/// MiB from a task-level `memory` (`"512"`, `512`, `"1 GB"`, `"2gb"`); strings are read by the
/// control plane's own parser.
pub(crate) fn memory_mib(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => berth_control::taskdef::parse_task_memory(s).map(i64::from),
        _ => None,
    }
    .filter(|m| *m > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_ecs_output_and_keeps_unknown_fields() {
        let td: TaskDefinition = serde_json::from_value(json!({
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:000000000000:task-definition/web:3",
            "family": "web", "revision": 3, "networkMode": "bridge", "cpu": "256",
            "containerDefinitions": [{
                "name": "app", "image": "nginx", "essential": true, "cpu": 0,
                "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}],
                "environment": [], "mountPoints": [], "volumesFrom": [],
                "healthCheck": {"command": ["CMD", "true"]}
            }]
        }))
        .expect("parse");
        assert_eq!(td.family, "web");
        assert_eq!(td.revision, 3);
        let c = &td.container_definitions[0];
        assert_eq!(c.port_mappings[0].container_port, Some(80));
        assert_eq!(
            c.health_check.as_ref().map(|h| h.command.clone()),
            Some(vec!["CMD".to_string(), "true".to_string()])
        );
        assert!(!is_set(&c.other["volumesFrom"]));
        assert!(td.other.contains_key("taskDefinitionArn"));
    }

    #[test]
    fn task_sizes() {
        assert_eq!(cpu_units(&json!("256")), Some(256.0));
        assert_eq!(cpu_units(&json!("1 vCPU")), Some(1024.0));
        assert_eq!(cpu_units(&json!(512)), Some(512.0));
        assert_eq!(cpu_units(&json!("0")), None);
        assert_eq!(memory_mib(&json!("512")), Some(512));
        assert_eq!(memory_mib(&json!("1 GB")), Some(1024));
        assert_eq!(memory_mib(&json!("0.5GB")), Some(512));
        assert_eq!(memory_mib(&json!("x")), None);
    }
}
