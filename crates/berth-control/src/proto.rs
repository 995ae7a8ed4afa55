//! The agent protocol: how `berth agent` and the control plane talk.
//!
//! Agents use the real ECS operations where ECS has one — `RegisterContainerInstance` (with
//! `containerInstanceArn` to re-register after a restart) and `SubmitTaskStateChange` for every
//! task transition — over the same SigV4-signed AWS JSON 1.1 endpoint the `aws` CLI uses. What ECS
//! does over its private websocket (assignments, heartbeats) is one Berth operation here:
//! [`AGENT_TARGET_PREFIX`]`.Poll`, a long poll that returns the instance's assigned tasks as soon
//! as they change (or after `waitSeconds`). Every poll is a heartbeat.
//!
//! Level-triggered: a poll always returns the whole set of tasks assigned to the instance that
//! are not yet STOPPED (plus those whose stop the agent has not confirmed), so an agent that
//! restarts, or a control plane that restarts, converges without replaying events.

use serde::{Deserialize, Serialize};

/// `X-Amz-Target` prefix of the agent operations.
pub const AGENT_TARGET_PREFIX: &str = "BerthAgent_V1";
/// `X-Amz-Target` prefix of ECS.
pub const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
/// The longest long poll the control plane honours, in seconds.
pub const MAX_POLL_WAIT_SECONDS: u64 = 30;

/// `BerthAgent_V1.Poll` input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollRequest {
    /// Cluster name or ARN.
    pub cluster: String,
    pub container_instance_arn: String,
    /// The `version` of the last response the agent acted on; the poll returns at once when
    /// the assignment differs from it (or it is absent), else waits up to `waitSeconds`.
    #[serde(default)]
    pub known_version: Option<u64>,
    /// How long to wait for a change (capped at [`MAX_POLL_WAIT_SECONDS`]; 0: answer at once).
    #[serde(default)]
    pub wait_seconds: u64,
    /// Task ARNs whose containers the agent currently has (running or not yet cleaned up).
    #[serde(default)]
    pub known_tasks: Vec<String>,
}

/// `BerthAgent_V1.Poll` output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollResponse {
    /// Changes whenever the instance's assignment changes.
    pub version: u64,
    /// Every task assigned to the instance that the agent still has to run or stop.
    pub tasks: Vec<AssignedTask>,
    /// Tasks in `knownTasks` the control plane no longer knows (or knows as STOPPED): the agent
    /// stops and removes their containers.
    #[serde(default)]
    pub unknown_tasks: Vec<String>,
    /// Seconds between polls that still count as connected.
    pub heartbeat_seconds: u64,
    /// Images the agent should have in its store before a task asks for them (Fargate's
    /// platform image cache: the images of FARGATE-compatible task definitions, sent to
    /// platform-capacity agents). The agent pulls those it lacks in the background, with the
    /// same registry credentials as a task's pull; failures are logged, not reported.
    #[serde(default)]
    pub prepull_images: Vec<String>,
}

/// One task as the agent needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedTask {
    pub task_arn: String,
    /// `RUNNING` or `STOPPED`.
    pub desired_status: String,
    /// The task's `lastStatus` as the control plane has it.
    pub last_status: String,
    /// The full task definition, in ECS's `TaskDefinition` output shape.
    pub task_definition: serde_json::Value,
    /// RunTask/StartTask `overrides` (ECS `TaskOverride` shape), if any.
    #[serde(default)]
    pub overrides: Option<serde_json::Value>,
    /// RunTask/StartTask `networkConfiguration` (ECS `NetworkConfiguration` shape; awsvpc).
    #[serde(default)]
    pub network_configuration: Option<serde_json::Value>,
    /// When desiredStatus is STOPPED: why (shown as the task's stoppedReason).
    #[serde(default)]
    pub stopped_reason: Option<String>,
    /// `EC2` or `FARGATE` (FARGATE tasks run with Fargate's defaults, e.g. 20 GiB of
    /// ephemeral storage when the task definition names none).
    #[serde(default)]
    pub launch_type: Option<String>,
    /// When set, stopping the task waits this long between SIGTERM and SIGKILL instead of the
    /// containers' `stopTimeout` (a FARGATE_SPOT interruption's notice).
    #[serde(default)]
    pub stop_timeout_seconds: Option<u64>,
}

/// Berth's extension of `SubmitTaskStateChange`: the address an awsvpc task got on its task
/// network (sent as the top-level member `taskNetwork` once the task's network namespace
/// exists). The control plane shows it as the task's ElasticNetworkInterface attachment and
/// in `containers[].networkInterfaces`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskNetwork {
    /// The Berth network the task is attached to (named after its first subnet).
    pub network: String,
    pub private_ipv4_address: String,
    #[serde(default)]
    pub mac_address: Option<String>,
}
