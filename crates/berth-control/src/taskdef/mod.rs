//! Task definitions: validation of `RegisterTaskDefinition` input and the stored model.
//!
//! [`validate_register`] parses a request body into the botocore shapes of [`model`] (every
//! member of `RegisterTaskDefinitionRequest` and its nested shapes; unknown members are
//! rejected), applies the rules ECS applies at registration, and fills in the defaults ECS
//! echoes. The result, a [`TaskDefinitionSpec`], is what the control plane stores and what
//! [`to_output`] turns into the `TaskDefinition` output shape.
//!
//! Members that mean nothing on Berth (`proxyConfiguration`, `inferenceAccelerators`,
//! `executionRoleArn`, `secrets`, EFS volumes, …) are accepted, stored and echoed.
//!
//! Defaults made explicit, as ECS echoes them: per container `cpu: 0`, `essential: true`,
//! `portMappings`, `environment`, `mountPoints` and `volumesFrom` as `[]`; each port mapping gets
//! `protocol: "tcp"` and a `hostPort` (the container port in host and awsvpc mode, else 0 when
//! omitted); a health check gets `interval: 30`, `timeout: 5`, `retries: 3`. Task `cpu` and
//! `memory` are echoed as unit and MiB strings (`"1 vCPU"` → `"1024"`, `"2 GB"` → `"2048"`); the
//! text as given is kept too. `networkMode` is echoed only when the request had one.

pub mod model;
mod output;
mod size;
mod validate;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use model::{
    Compatibility, ContainerDefinition, NetworkMode, RegisterTaskDefinitionRequest, Tag,
    TaskDefinitionStatus, TransportProtocol, Volume,
};
pub use output::{
    compatibilities, docker_plugin_attribute, logging_driver_attribute, requires_attributes,
    to_output, CAPABILITY_ATTRIBUTES,
};
pub use size::{is_fargate_size, parse_task_cpu, parse_task_memory};
pub use validate::MAX_CONTAINERS;

/// A rejected `RegisterTaskDefinition` request. [`code`](Self::code) and
/// [`message`](Self::message) are what the ECS API answers (`__type` and `message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskDefError {
    /// ECS `ClientException`: a well-formed request that breaks a rule.
    #[error("task definition rejected: {0}")]
    Client(String),
    /// ECS `InvalidParameterException`: a malformed request (unknown member, wrong type,
    /// missing required member, value outside an enum) or an invalid tag.
    #[error("invalid task definition parameter: {0}")]
    InvalidParameter(String),
}

impl TaskDefError {
    /// The AWS error code: `ClientException` or `InvalidParameterException`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Client(_) => "ClientException",
            Self::InvalidParameter(_) => "InvalidParameterException",
        }
    }

    /// The AWS-facing message, in ECS's wording where known.
    pub fn message(&self) -> &str {
        match self {
            Self::Client(m) | Self::InvalidParameter(m) => m,
        }
    }
}

impl From<TaskDefError> for berth_aws::AwsError {
    fn from(e: TaskDefError) -> Self {
        berth_aws::AwsError::client(e.code(), e.message())
    }
}

/// A port a task needs on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPort {
    pub protocol: TransportProtocol,
    pub port: u16,
}

/// A validated task definition: the request with ECS's defaults made explicit. Build one with
/// [`validate_register`]; the serialized form is for the store (deserializing trusts it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDefinitionSpec {
    request: RegisterTaskDefinitionRequest,
    /// Task-level `cpu` as the request spelled it (`"0.25 vCPU"`), before normalization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu_as_given: Option<String>,
    /// Task-level `memory` as the request spelled it (`"1 GB"`), before normalization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_as_given: Option<String>,
}

/// Parses and validates a `RegisterTaskDefinition` request body.
pub fn validate_register(input: &Value) -> Result<TaskDefinitionSpec, TaskDefError> {
    let mut request = parse_request(input)?;
    let cpu_as_given = request.cpu.clone();
    let memory_as_given = request.memory.clone();
    validate::validate_and_normalize(&mut request)?;
    Ok(TaskDefinitionSpec {
        request,
        cpu_as_given,
        memory_as_given,
    })
}

/// Deserializes the request; containers and volumes first one by one, so a shape error names
/// the element it is in.
fn parse_request(input: &Value) -> Result<RegisterTaskDefinitionRequest, TaskDefError> {
    let Some(object) = input.as_object() else {
        return Err(TaskDefError::InvalidParameter(
            "The request body must be a JSON object.".to_owned(),
        ));
    };
    if let Some(Value::Array(items)) = object.get("containerDefinitions") {
        for (i, item) in items.iter().enumerate() {
            ContainerDefinition::deserialize(item)
                .map_err(|e| shape_error(&format!("containerDefinitions[{i}]"), &e))?;
        }
    }
    if let Some(Value::Array(items)) = object.get("volumes") {
        for (i, item) in items.iter().enumerate() {
            Volume::deserialize(item).map_err(|e| shape_error(&format!("volumes[{i}]"), &e))?;
        }
    }
    RegisterTaskDefinitionRequest::deserialize(input).map_err(|e| shape_error("input", &e))
}

/// Rewrites a serde error in the words botocore uses for the same mistakes.
fn shape_error(context: &str, error: &serde_json::Error) -> TaskDefError {
    let text = error.to_string();
    let ticked = |s: &str| s.split('`').nth(1).unwrap_or_default().to_owned();
    // "expected one of `a`, `b`", "expected `a` or `b`", "expected `a`".
    let expected = |s: &str| {
        s.split_once(", expected ")
            .map(|(_, list)| {
                let list = list.strip_prefix("one of ").unwrap_or(list);
                list.replace("` or `", ", ").replace('`', "")
            })
            .unwrap_or_default()
    };
    let message = if text.starts_with("unknown field") {
        let allowed = expected(&text);
        if allowed.is_empty() {
            format!("Unknown parameter in {context}: \"{}\"", ticked(&text))
        } else {
            format!(
                "Unknown parameter in {context}: \"{}\", must be one of: {allowed}",
                ticked(&text)
            )
        }
    } else if text.starts_with("unknown variant") {
        format!(
            "Invalid value in {context}: \"{}\", must be one of: {}",
            ticked(&text),
            expected(&text)
        )
    } else if text.starts_with("missing field") {
        format!(
            "Missing required parameter in {context}: \"{}\"",
            ticked(&text)
        )
    } else {
        format!("Invalid parameter in {context}: {text}")
    };
    TaskDefError::InvalidParameter(message)
}

impl TaskDefinitionSpec {
    /// The validated request, ECS's defaults explicit.
    pub fn request(&self) -> &RegisterTaskDefinitionRequest {
        &self.request
    }

    pub fn family(&self) -> &str {
        &self.request.family
    }

    /// The containers, in definition order.
    pub fn containers(&self) -> &[ContainerDefinition] {
        &self.request.container_definitions
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerDefinition> {
        self.containers().iter().find(|c| c.name() == name)
    }

    pub fn volumes(&self) -> &[Volume] {
        self.request.volumes.as_deref().unwrap_or_default()
    }

    /// The network mode; `bridge` when the request had none.
    pub fn network_mode(&self) -> NetworkMode {
        self.request.network_mode.unwrap_or(NetworkMode::Bridge)
    }

    /// Task-level CPU units, if the task sets them.
    pub fn task_cpu_units(&self) -> Option<u32> {
        self.request.cpu.as_deref().and_then(parse_task_cpu)
    }

    /// Task-level memory in MiB, if the task sets it.
    pub fn task_memory_mib(&self) -> Option<u32> {
        self.request.memory.as_deref().and_then(parse_task_memory)
    }

    /// Task-level `cpu` as the request spelled it.
    pub fn cpu_as_given(&self) -> Option<&str> {
        self.cpu_as_given.as_deref()
    }

    /// Task-level `memory` as the request spelled it.
    pub fn memory_as_given(&self) -> Option<&str> {
        self.memory_as_given.as_deref()
    }

    /// CPU units a task of this definition takes from a host: the task-level `cpu` if set, else
    /// the sum of the containers' `cpu`.
    pub fn reserved_cpu_units(&self) -> u32 {
        self.task_cpu_units().unwrap_or_else(|| {
            self.containers()
                .iter()
                .map(ContainerDefinition::reserved_cpu_units)
                .sum()
        })
    }

    /// Memory (MiB) a task of this definition takes from a host: the task-level `memory` if set,
    /// else the sum over containers of `memoryReservation`, or `memory` where that is unset.
    pub fn reserved_memory_mib(&self) -> u32 {
        self.task_memory_mib().unwrap_or_else(|| {
            self.containers()
                .iter()
                .map(ContainerDefinition::reserved_memory_mib)
                .sum()
        })
    }

    /// The fixed host ports a task needs, sorted: in bridge mode each non-zero `hostPort`; in
    /// host mode each container port. awsvpc and none need none (awsvpc tasks have their own
    /// network namespace); dynamic (0) host ports and port ranges are chosen at run time.
    pub fn static_host_ports(&self) -> Vec<HostPort> {
        let mode = self.network_mode();
        let mut ports: Vec<HostPort> = self
            .containers()
            .iter()
            .flat_map(|c| c.port_mappings.as_deref().unwrap_or_default())
            .filter(|m| m.container_port_range.is_none())
            .filter_map(|m| {
                let port = match mode {
                    NetworkMode::Bridge => m.host_port?,
                    NetworkMode::Host => m.container_port?,
                    NetworkMode::Awsvpc | NetworkMode::None => return None,
                };
                let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
                let protocol = m.protocol.unwrap_or(TransportProtocol::Tcp);
                Some(HostPort { protocol, port })
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// `requiresCompatibilities` as registered (empty when absent).
    pub fn requires_compatibilities(&self) -> &[Compatibility] {
        self.request
            .requires_compatibilities
            .as_deref()
            .unwrap_or_default()
    }

    /// The launch types the definition validates against (the output's `compatibilities`).
    pub fn compatibilities(&self) -> Vec<Compatibility> {
        compatibilities(self)
    }

    /// Whether the definition can run on Fargate: awsvpc, a task size Fargate offers, and none
    /// of the host-bound features Fargate lacks (host paths, Docker volumes, privileged,
    /// devices, shm size, tmpfs, swap).
    pub fn is_fargate_compatible(&self) -> bool {
        validate::fargate_incompatibility(
            &self.request,
            self.task_cpu_units(),
            self.task_memory_mib(),
        )
        .is_none()
    }

    /// Whether the definition supports `launch_type`.
    pub fn supports(&self, launch_type: Compatibility) -> bool {
        self.compatibilities().contains(&launch_type)
    }

    /// The instance attributes a host needs (the output's `requiresAttributes`).
    pub fn requires_attributes(&self) -> Vec<String> {
        requires_attributes(self)
    }

    /// The request's tags (not part of the `TaskDefinition` shape; ECS returns them beside it).
    pub fn tags(&self) -> &[Tag] {
        self.request.tags.as_deref().unwrap_or_default()
    }
}
