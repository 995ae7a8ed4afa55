//! The records the control plane keeps (stored as JSON documents), and their ECS output shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::taskdef::model::TaskDefinitionStatus;
use crate::taskdef::TaskDefinitionSpec;

/// A resource tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

pub fn tags_json(tags: &[Tag]) -> Value {
    Value::Array(
        tags.iter()
            .map(|t| json!({"key": t.key, "value": t.value}))
            .collect(),
    )
}

/// `cluster/<region>/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub arn: String,
    /// ACTIVE or INACTIVE (deleted clusters stay describable as INACTIVE).
    pub status: String,
    pub created_at: f64,
    #[serde(default)]
    pub settings: Vec<Value>,
    #[serde(default)]
    pub configuration: Option<Value>,
    #[serde(default)]
    pub capacity_providers: Vec<String>,
    #[serde(default)]
    pub default_capacity_provider_strategy: Vec<Value>,
    #[serde(default)]
    pub service_connect_defaults: Option<Value>,
}

/// `taskdef/<region>/<family>/<revision>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDefRecord {
    pub arn: String,
    pub family: String,
    pub revision: u32,
    /// ACTIVE, INACTIVE or DELETE_IN_PROGRESS.
    pub status: String,
    pub registered_at: f64,
    #[serde(default)]
    pub deregistered_at: Option<f64>,
    #[serde(default)]
    pub registered_by: Option<String>,
    pub spec: TaskDefinitionSpec,
}

impl TaskDefRecord {
    pub fn output(&self) -> Value {
        let status = match self.status.as_str() {
            "INACTIVE" => TaskDefinitionStatus::Inactive,
            "DELETE_IN_PROGRESS" => TaskDefinitionStatus::DeleteInProgress,
            _ => TaskDefinitionStatus::Active,
        };
        crate::taskdef::to_output(
            &self.spec,
            &self.arn,
            self.revision,
            status,
            self.registered_at,
            self.deregistered_at,
            self.registered_by.clone(),
        )
    }
}

/// One container of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskContainer {
    pub name: String,
    pub arn: String,
    pub image: String,
    #[serde(default)]
    pub image_digest: Option<String>,
    #[serde(default)]
    pub runtime_id: Option<String>,
    pub last_status: String,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<Value>,
    #[serde(default)]
    pub network_interfaces: Vec<Value>,
    pub essential: bool,
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub memory_reservation: Option<String>,
    #[serde(default)]
    pub health_status: Option<String>,
}

/// `task/<region>/<cluster>/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub arn: String,
    pub id: String,
    pub region: String,
    pub cluster: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    pub family: String,
    pub revision: u32,
    #[serde(default)]
    pub container_instance_arn: Option<String>,
    pub launch_type: String,
    #[serde(default)]
    pub capacity_provider_name: Option<String>,
    pub group: String,
    #[serde(default)]
    pub started_by: Option<String>,
    pub last_status: String,
    pub desired_status: String,
    pub created_at: f64,
    #[serde(default)]
    pub pull_started_at: Option<f64>,
    #[serde(default)]
    pub pull_stopped_at: Option<f64>,
    #[serde(default)]
    pub started_at: Option<f64>,
    #[serde(default)]
    pub stopping_at: Option<f64>,
    #[serde(default)]
    pub stopped_at: Option<f64>,
    #[serde(default)]
    pub execution_stopped_at: Option<f64>,
    #[serde(default)]
    pub connectivity: Option<String>,
    #[serde(default)]
    pub connectivity_at: Option<f64>,
    #[serde(default)]
    pub stopped_reason: Option<String>,
    #[serde(default)]
    pub stop_code: Option<String>,
    pub containers: Vec<TaskContainer>,
    #[serde(default)]
    pub overrides: Option<Value>,
    #[serde(default)]
    pub network_configuration: Option<Value>,
    /// Task-level cpu/memory strings of the task definition (or overrides).
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
    /// What the task reserves on its instance (cpu units, MiB, static host ports).
    pub reserved_cpu: i64,
    pub reserved_memory: i64,
    #[serde(default)]
    pub tcp_ports: Vec<u16>,
    #[serde(default)]
    pub udp_ports: Vec<u16>,
    #[serde(default)]
    pub enable_execute_command: bool,
    #[serde(default)]
    pub propagate_tags: Option<String>,
    #[serde(default)]
    pub version: u64,
    /// Transitions as (lastStatus, epoch seconds): Berth's own per-phase breakdown.
    #[serde(default)]
    pub transitions: Vec<(String, f64)>,
}

impl Task {
    pub fn is_stopped(&self) -> bool {
        self.last_status == "STOPPED"
    }

    /// The ECS `Task` output shape.
    pub fn output(&self, tags: Option<&[Tag]>) -> Value {
        let mut m = Map::new();
        m.insert("taskArn".into(), self.arn.clone().into());
        m.insert("clusterArn".into(), self.cluster_arn.clone().into());
        m.insert(
            "taskDefinitionArn".into(),
            self.task_definition_arn.clone().into(),
        );
        if let Some(ci) = &self.container_instance_arn {
            m.insert("containerInstanceArn".into(), ci.clone().into());
        }
        let mut overrides = self.overrides.clone().unwrap_or_else(|| json!({}));
        if overrides.get("containerOverrides").is_none() {
            overrides["containerOverrides"] = json!([]);
        }
        if overrides.get("inferenceAcceleratorOverrides").is_none() {
            overrides["inferenceAcceleratorOverrides"] = json!([]);
        }
        m.insert("overrides".into(), overrides);
        m.insert("lastStatus".into(), self.last_status.clone().into());
        m.insert("desiredStatus".into(), self.desired_status.clone().into());
        if let Some(c) = &self.cpu {
            m.insert("cpu".into(), c.clone().into());
        }
        if let Some(c) = &self.memory {
            m.insert("memory".into(), c.clone().into());
        }
        m.insert(
            "containers".into(),
            Value::Array(
                self.containers
                    .iter()
                    .map(|c| self.container_output(c))
                    .collect(),
            ),
        );
        if let Some(s) = &self.started_by {
            m.insert("startedBy".into(), s.clone().into());
        }
        m.insert("version".into(), self.version.into());
        if let Some(r) = &self.stopped_reason {
            m.insert("stoppedReason".into(), r.clone().into());
        }
        if let Some(r) = &self.stop_code {
            m.insert("stopCode".into(), r.clone().into());
        }
        if let Some(c) = &self.connectivity {
            m.insert("connectivity".into(), c.clone().into());
        }
        for (key, val) in [
            ("connectivityAt", self.connectivity_at),
            ("pullStartedAt", self.pull_started_at),
            ("pullStoppedAt", self.pull_stopped_at),
            ("executionStoppedAt", self.execution_stopped_at),
            ("createdAt", Some(self.created_at)),
            ("startedAt", self.started_at),
            ("stoppingAt", self.stopping_at),
            ("stoppedAt", self.stopped_at),
        ] {
            if let Some(v) = val {
                m.insert(key.into(), v.into());
            }
        }
        m.insert("group".into(), self.group.clone().into());
        m.insert("launchType".into(), self.launch_type.clone().into());
        if let Some(c) = &self.capacity_provider_name {
            m.insert("capacityProviderName".into(), c.clone().into());
        }
        m.insert("attachments".into(), json!([]));
        m.insert("healthStatus".into(), task_health(&self.containers).into());
        m.insert(
            "enableExecuteCommand".into(),
            self.enable_execute_command.into(),
        );
        m.insert("platformFamily".into(), "Linux".into());
        m.insert(
            "attributes".into(),
            json!([{"name": "ecs.cpu-architecture", "value": crate::cpu_architecture()}]),
        );
        if let Some(tags) = tags {
            m.insert("tags".into(), tags_json(tags));
        }
        Value::Object(m)
    }

    fn container_output(&self, c: &TaskContainer) -> Value {
        let mut m = Map::new();
        m.insert("containerArn".into(), c.arn.clone().into());
        m.insert("taskArn".into(), self.arn.clone().into());
        m.insert("name".into(), c.name.clone().into());
        m.insert("image".into(), c.image.clone().into());
        if let Some(d) = &c.image_digest {
            m.insert("imageDigest".into(), d.clone().into());
        }
        if let Some(r) = &c.runtime_id {
            m.insert("runtimeId".into(), r.clone().into());
        }
        m.insert("lastStatus".into(), c.last_status.clone().into());
        if let Some(e) = c.exit_code {
            m.insert("exitCode".into(), e.into());
        }
        if let Some(r) = &c.reason {
            m.insert("reason".into(), r.clone().into());
        }
        m.insert(
            "networkBindings".into(),
            Value::Array(c.network_bindings.clone()),
        );
        m.insert(
            "networkInterfaces".into(),
            Value::Array(c.network_interfaces.clone()),
        );
        m.insert(
            "healthStatus".into(),
            c.health_status
                .clone()
                .unwrap_or_else(|| "UNKNOWN".into())
                .into(),
        );
        if let Some(v) = &c.cpu {
            m.insert("cpu".into(), v.clone().into());
        }
        if let Some(v) = &c.memory {
            m.insert("memory".into(), v.clone().into());
        }
        if let Some(v) = &c.memory_reservation {
            m.insert("memoryReservation".into(), v.clone().into());
        }
        Value::Object(m)
    }
}

/// ECS's task health: UNHEALTHY if an essential container is, HEALTHY if all essential ones
/// with a status are, else UNKNOWN.
fn task_health(containers: &[TaskContainer]) -> &'static str {
    let essential: Vec<_> = containers.iter().filter(|c| c.essential).collect();
    if essential
        .iter()
        .any(|c| c.health_status.as_deref() == Some("UNHEALTHY"))
    {
        "UNHEALTHY"
    } else if !essential.is_empty()
        && essential
            .iter()
            .all(|c| c.health_status.as_deref() == Some("HEALTHY"))
    {
        "HEALTHY"
    } else {
        "UNKNOWN"
    }
}

/// `instance/<region>/<cluster>/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub arn: String,
    pub id: String,
    pub region: String,
    pub cluster: String,
    pub ec2_instance_id: String,
    /// ACTIVE, DRAINING, INACTIVE (deregistered).
    pub status: String,
    #[serde(default)]
    pub status_reason: Option<String>,
    pub agent_connected: bool,
    pub registered_at: f64,
    /// Total CPU units and MiB, and the ports the host keeps for itself.
    pub cpu: i64,
    pub memory: i64,
    #[serde(default)]
    pub reserved_tcp_ports: Vec<u16>,
    #[serde(default)]
    pub reserved_udp_ports: Vec<u16>,
    /// Attribute name → value (`None`: a bare attribute such as a capability).
    pub attributes: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub version_info: Option<Value>,
    #[serde(default)]
    pub version: u64,
}

/// `capacity-provider/<region>/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityProvider {
    pub name: String,
    pub arn: String,
    pub status: String,
    #[serde(default)]
    pub auto_scaling_group_provider: Option<Value>,
    #[serde(default)]
    pub update_status: Option<String>,
}
