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
    /// A service task taken out of its target groups: its service stops it at this time
    /// (after the target group's deregistration delay).
    #[serde(default)]
    pub service_drain_until: Option<f64>,
    /// Its service has counted this task's stop (failed tasks, replacement events).
    #[serde(default)]
    pub service_accounted: bool,
    /// StopTask of a service task behind a load balancer (the reason): its service drains it
    /// out of its target groups before it stops (desiredStatus shows STOPPED meanwhile).
    #[serde(default)]
    pub stop_requested: Option<String>,
    /// An awsvpc task's network interface (shown as its ElasticNetworkInterface attachment).
    #[serde(default)]
    pub eni: Option<TaskEni>,
    /// FARGATE tasks: the platform version they run on (`1.4.0`).
    #[serde(default)]
    pub platform_version: Option<String>,
    /// FARGATE tasks: the size limit of their writable layers, GiB.
    #[serde(default)]
    pub ephemeral_storage_gib: Option<u32>,
    /// Seconds between SIGTERM and SIGKILL when the task is stopped, instead of its
    /// containers' stopTimeout (a FARGATE_SPOT interruption's notice).
    #[serde(default)]
    pub stop_timeout_seconds: Option<u64>,
}

/// The network interface of an awsvpc task: created with the task (PRECREATED), ATTACHED
/// once its agent reports the address it got on the subnet's network, DELETED when the task
/// stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEni {
    /// The attachment id (a UUID).
    pub attachment_id: String,
    /// `eni-` + 17 hex digits.
    pub eni_id: String,
    pub subnet: String,
    #[serde(default)]
    pub security_groups: Vec<String>,
    pub status: String,
    #[serde(default)]
    pub private_ipv4_address: Option<String>,
    #[serde(default)]
    pub mac_address: Option<String>,
}

impl TaskEni {
    /// The ECS `Attachment` output shape.
    pub fn output(&self) -> Value {
        let mut details = vec![
            json!({"name": "subnetId", "value": self.subnet}),
            json!({"name": "networkInterfaceId", "value": self.eni_id}),
        ];
        if let Some(mac) = &self.mac_address {
            details.push(json!({"name": "macAddress", "value": mac}));
        }
        if let Some(ip) = &self.private_ipv4_address {
            details.push(json!({"name": "privateDnsName",
                "value": format!("ip-{}.ec2.internal", ip.replace('.', "-"))}));
            details.push(json!({"name": "privateIPv4Address", "value": ip}));
        }
        json!({
            "id": self.attachment_id,
            "type": "ElasticNetworkInterface",
            "status": self.status,
            "details": details,
        })
    }
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
        // A Fargate task's host is Berth's platform capacity, not a container instance of
        // the user's.
        if let Some(ci) = self
            .container_instance_arn
            .as_ref()
            .filter(|_| self.launch_type != "FARGATE")
        {
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
        // Leaving through its service's draining: ECS shows it stopping (DEACTIVATING while
        // its targets drain); our agent keeps it running until the drain is over.
        let leaving = self.desired_status == "RUNNING"
            && (self.stop_requested.is_some() || self.service_drain_until.is_some());
        let last = if leaving && self.service_drain_until.is_some() && self.last_status == "RUNNING"
        {
            "DEACTIVATING"
        } else {
            &self.last_status
        };
        m.insert("lastStatus".into(), last.into());
        m.insert(
            "desiredStatus".into(),
            if leaving {
                "STOPPED"
            } else {
                &self.desired_status
            }
            .into(),
        );
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
        m.insert(
            "attachments".into(),
            Value::Array(self.eni.iter().map(TaskEni::output).collect()),
        );
        if let Some(v) = &self.platform_version {
            m.insert("platformVersion".into(), v.clone().into());
        }
        if let Some(g) = self.ephemeral_storage_gib {
            m.insert("ephemeralStorage".into(), json!({ "sizeInGiB": g }));
        }
        if self.launch_type == "FARGATE" {
            m.insert(
                "availabilityZone".into(),
                format!("{}a", self.region).into(),
            );
        }
        m.insert("healthStatus".into(), task_health(&self.containers).into());
        m.insert(
            "enableExecuteCommand".into(),
            self.enable_execute_command.into(),
        );
        m.insert("platformFamily".into(), "Linux".into());
        // Berth's per-phase breakdown: when the task reached each state (epoch seconds),
        // as `berth.at.<STATUS>` attributes (the model's place for extra name/value pairs).
        let mut attributes =
            vec![json!({"name": "ecs.cpu-architecture", "value": crate::cpu_architecture()})];
        attributes.extend(self.transitions.iter().map(|(status, at)| {
            json!({"name": format!("berth.at.{status}"), "value": format!("{at:.3}")})
        }));
        m.insert("attributes".into(), Value::Array(attributes));
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

/// `service/<region>/<cluster>/<name>`: an ECS service and its deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub arn: String,
    pub region: String,
    pub cluster: String,
    pub cluster_arn: String,
    /// ACTIVE, DRAINING (deleted, tasks stopping), INACTIVE (gone, still describable).
    pub status: String,
    /// The PRIMARY deployment's task definition ARN.
    pub task_definition: String,
    pub desired_count: u32,
    /// EC2 or FARGATE; empty when the service uses a capacity provider strategy.
    pub launch_type: String,
    /// The capacity provider strategy (wire items with weight and base), if any.
    #[serde(default)]
    pub capacity_provider_strategy: Vec<Value>,
    /// FARGATE services: the platform version.
    #[serde(default)]
    pub platform_version: Option<String>,
    /// REPLICA or DAEMON.
    pub scheduling_strategy: String,
    pub maximum_percent: u32,
    pub minimum_healthy_percent: u32,
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default)]
    pub load_balancers: Vec<ServiceLoadBalancer>,
    #[serde(default)]
    pub placement_constraints: Vec<Value>,
    #[serde(default)]
    pub placement_strategy: Vec<Value>,
    #[serde(default)]
    pub network_configuration: Option<Value>,
    #[serde(default)]
    pub health_check_grace_period_seconds: Option<u32>,
    #[serde(default)]
    pub propagate_tags: Option<String>,
    #[serde(default)]
    pub enable_ecs_managed_tags: bool,
    #[serde(default)]
    pub enable_execute_command: bool,
    #[serde(default)]
    pub role_arn: Option<String>,
    pub created_at: f64,
    #[serde(default)]
    pub created_by: Option<String>,
    /// Newest first; the first is PRIMARY.
    pub deployments: Vec<Deployment>,
    /// Newest first, at most [`Service::MAX_EVENTS`].
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
    /// When the service became INACTIVE (it is forgotten an hour later).
    #[serde(default)]
    pub inactive_at: Option<f64>,
}

/// `deploymentCircuitBreaker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
}

/// A service's `loadBalancers` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLoadBalancer {
    pub target_group_arn: String,
    pub container_name: String,
    pub container_port: u16,
}

/// One deployment of a service: a task definition and the tasks started for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// `ecs-svc/<19 digits>`; tasks of the deployment have it as `startedBy`.
    pub id: String,
    /// PRIMARY, ACTIVE (older, being replaced) or INACTIVE.
    pub status: String,
    pub task_definition: String,
    pub desired_count: u32,
    #[serde(default)]
    pub pending_count: u32,
    #[serde(default)]
    pub running_count: u32,
    #[serde(default)]
    pub failed_tasks: u32,
    pub created_at: f64,
    pub updated_at: f64,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub rollout_state: String,
    #[serde(default)]
    pub rollout_state_reason: Option<String>,
    #[serde(default)]
    pub network_configuration: Option<Value>,
}

/// A service event message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: f64,
    pub message: String,
}

impl Service {
    pub const MAX_EVENTS: usize = 100;

    /// Adds an event (newest first, bounded).
    pub fn event(&mut self, message: String) {
        self.events.insert(
            0,
            ServiceEvent {
                id: uuid::Uuid::new_v4().to_string(),
                created_at: crate::control::now(),
                message,
            },
        );
        self.events.truncate(Service::MAX_EVENTS);
    }

    /// The group its tasks are started in.
    pub fn group(&self) -> String {
        format!("service:{}", self.name)
    }

    pub fn running_count(&self) -> u32 {
        self.deployments.iter().map(|d| d.running_count).sum()
    }

    pub fn pending_count(&self) -> u32 {
        self.deployments.iter().map(|d| d.pending_count).sum()
    }

    /// The ECS `Service` output shape.
    pub fn output(&self, tags: Option<&[Tag]>) -> Value {
        let mut m = Map::new();
        m.insert("serviceArn".into(), self.arn.clone().into());
        m.insert("serviceName".into(), self.name.clone().into());
        m.insert("clusterArn".into(), self.cluster_arn.clone().into());
        m.insert(
            "loadBalancers".into(),
            Value::Array(
                self.load_balancers
                    .iter()
                    .map(|l| {
                        json!({"targetGroupArn": l.target_group_arn,
                               "containerName": l.container_name,
                               "containerPort": l.container_port})
                    })
                    .collect(),
            ),
        );
        m.insert("serviceRegistries".into(), json!([]));
        m.insert("status".into(), self.status.clone().into());
        m.insert("desiredCount".into(), self.desired_count.into());
        m.insert("runningCount".into(), self.running_count().into());
        m.insert("pendingCount".into(), self.pending_count().into());
        self.capacity_output(&mut m);
        m.insert("platformFamily".into(), "Linux".into());
        m.insert("taskDefinition".into(), self.task_definition.clone().into());
        let mut dc = json!({
            "maximumPercent": self.maximum_percent,
            "minimumHealthyPercent": self.minimum_healthy_percent,
        });
        if let Some(cb) = self.circuit_breaker {
            dc["deploymentCircuitBreaker"] = json!({"enable": cb.enable, "rollback": cb.rollback});
        }
        m.insert("deploymentConfiguration".into(), dc);
        m.insert(
            "deployments".into(),
            Value::Array(
                self.deployments
                    .iter()
                    .filter(|d| d.status != "INACTIVE")
                    .map(|d| d.output(self))
                    .collect(),
            ),
        );
        if let Some(r) = &self.role_arn {
            m.insert("roleArn".into(), r.clone().into());
        }
        m.insert(
            "events".into(),
            Value::Array(
                self.events
                    .iter()
                    .map(|e| json!({"id": e.id, "createdAt": e.created_at, "message": e.message}))
                    .collect(),
            ),
        );
        m.insert("createdAt".into(), self.created_at.into());
        m.insert(
            "placementConstraints".into(),
            Value::Array(self.placement_constraints.clone()),
        );
        m.insert(
            "placementStrategy".into(),
            Value::Array(self.placement_strategy.clone()),
        );
        if let Some(n) = &self.network_configuration {
            m.insert("networkConfiguration".into(), n.clone());
        }
        if let Some(g) = self.health_check_grace_period_seconds {
            m.insert("healthCheckGracePeriodSeconds".into(), g.into());
        }
        m.insert(
            "schedulingStrategy".into(),
            self.scheduling_strategy.clone().into(),
        );
        m.insert("deploymentController".into(), json!({"type": "ECS"}));
        if let Some(c) = &self.created_by {
            m.insert("createdBy".into(), c.clone().into());
        }
        m.insert(
            "enableECSManagedTags".into(),
            self.enable_ecs_managed_tags.into(),
        );
        m.insert(
            "propagateTags".into(),
            self.propagate_tags
                .clone()
                .unwrap_or_else(|| "NONE".into())
                .into(),
        );
        m.insert(
            "enableExecuteCommand".into(),
            self.enable_execute_command.into(),
        );
        if let Some(tags) = tags {
            m.insert("tags".into(), tags_json(tags));
        }
        Value::Object(m)
    }
}

impl Service {
    /// Whether its tasks run on Fargate (launch type, or a strategy of Fargate providers).
    pub fn is_fargate(&self) -> bool {
        self.launch_type == "FARGATE"
            || self.capacity_provider_strategy.iter().any(|x| {
                x["capacityProvider"]
                    .as_str()
                    .is_some_and(crate::ecs::fargate::is_fargate_provider)
            })
    }

    /// `launchType` or `capacityProviderStrategy`, and `platformVersion` (services and their
    /// deployments show the same).
    fn capacity_output(&self, m: &mut Map<String, Value>) {
        if !self.launch_type.is_empty() {
            m.insert("launchType".into(), self.launch_type.clone().into());
        }
        if !self.capacity_provider_strategy.is_empty() {
            m.insert(
                "capacityProviderStrategy".into(),
                Value::Array(self.capacity_provider_strategy.clone()),
            );
        }
        if let Some(v) = &self.platform_version {
            m.insert("platformVersion".into(), v.clone().into());
        }
    }
}

impl Deployment {
    fn output(&self, sv: &Service) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("status".into(), self.status.clone().into());
        m.insert("taskDefinition".into(), self.task_definition.clone().into());
        m.insert("desiredCount".into(), self.desired_count.into());
        m.insert("pendingCount".into(), self.pending_count.into());
        m.insert("runningCount".into(), self.running_count.into());
        m.insert("failedTasks".into(), self.failed_tasks.into());
        m.insert("createdAt".into(), self.created_at.into());
        m.insert("updatedAt".into(), self.updated_at.into());
        sv.capacity_output(&mut m);
        m.insert("platformFamily".into(), "Linux".into());
        if let Some(n) = &self.network_configuration {
            m.insert("networkConfiguration".into(), n.clone());
        }
        m.insert("rolloutState".into(), self.rollout_state.clone().into());
        if let Some(r) = &self.rollout_state_reason {
            m.insert("rolloutStateReason".into(), r.clone().into());
        }
        Value::Object(m)
    }
}
