//! Task placement for the EC2 launch type: a pure function from a cluster [`Snapshot`] and a
//! [`Request`] to a [`Plan`], like Nomad's scheduler. No I/O, no clock, no global state that
//! changes an answer: the same snapshot, request and seed always give the same plan.
//!
//! ```text
//! Snapshot::new(instances: Vec<Instance>, now_epoch_secs: i64) -> Snapshot
//! place(snapshot: &Snapshot, request: &Request, seed: u64) -> Plan
//! Snapshot::commit(&mut self, request: &Request, plan: &Plan) -> Result<(), CommitError>
//! PlacementStrategy::from_wire(type: &str, field: Option<&str>) -> Result<_, PlacementError>
//! PlacementConstraint::from_wire(type: &str, expression: Option<&str>) -> Result<_, PlacementError>
//! query::Expression::parse(&str) -> Result<Expression, QueryError>
//! ```
//!
//! # How a task is placed (ECS semantics)
//!
//! For each of `request.count` tasks in turn, every instance is checked in this order, and the
//! first check it fails is its reason (the `reason` of an ECS `Failure`):
//!
//! 1. status `ACTIVE`, else its status (`DRAINING`, `INACTIVE`, ...);
//! 2. agent connected, else `AGENT`;
//! 3. the task definition's required attributes, else `ATTRIBUTE`;
//! 4. remaining CPU, memory, static TCP and UDP host ports, else `RESOURCE:CPU`,
//!    `RESOURCE:MEMORY`, `RESOURCE:PORTS`, `RESOURCE:PORTS_UDP`;
//! 5. the constraints in order: `MemberOf placement constraint unsatisfied.`,
//!    `DistinctInstance placement constraint unsatisfied.` (ECS's strings, period included).
//!
//! The instances left are ordered by the strategies, each breaking the ties of the one before:
//! `binpack` prefers the least remaining CPU or memory; `spread` prefers the bucket (instance,
//! or value of an attribute; instances without the attribute form one more bucket) holding the
//! fewest tasks of the request's group, counted over the whole cluster; `random` picks among
//! what is still tied, and so ends the list. Ties left at the end are broken at random too.
//! **With no strategy, tasks are placed at random** — what standalone RunTask does in ECS;
//! services should pass [`PlacementStrategy::service_default`] (spread over availability
//! zones), ECS's documented default for them.
//!
//! Each placed task is counted before the next is placed: it uses the instance's CPU, memory
//! and ports, joins its group there (so `spread` balances with it and `distinctInstance` and
//! `task:group` see it). Feasibility only shrinks as tasks are placed, so once a task cannot
//! be placed neither can the rest: the plan then holds the tasks placed so far, `unplaced`
//! counts the others, and `failures` gives every instance's reason (ECS's failures for
//! RunTask). An empty cluster gives no failures at all; ECS answers that RunTask with
//! `InvalidParameterException: No Container Instances were found in your cluster.`, which is
//! the API layer's to say.
//!
//! "Group" is ECS's task group: `service:NAME` for a service's tasks, `family:NAME` or what
//! RunTask's `group` says for the others. `runningTasksCount` in expressions is the
//! instance's count from the snapshot; tasks placed by the plan are pending, not running.
//!
//! # Speed
//!
//! [`Snapshot`] keeps an index next to the instances, maintained by [`Snapshot::commit`] and
//! [`Snapshot::update_instance`]: remaining CPU and memory and a state byte as columns
//! (`i32`, saturated), task counts per group and instance, attribute values interned per
//! name, and, once a plan using them is committed, the tasks of a group per bucket of a
//! spread attribute and the per-instance results of task-independent `memberOf`
//! expressions. A placement never clones the snapshot: one pass over the columns marks who
//! can take a task; each task is then chosen by narrowing that mask key by key (a pass for
//! the smallest value, a pass to keep the ties), which the compiler vectorises; instances
//! the plan already used sit in a short side list. Only ports, required attributes,
//! `memberOf` expressions the snapshot does not keep, and failure reasons are worked out
//! one instance at a time. Buffers are reused between calls on a thread.
//! `examples/sched_bench.rs` measures it (10,000 instances: tens of thousands of
//! placements a second).

pub mod pattern;
mod place;
pub mod query;
#[cfg(test)]
mod query_tests;
mod snapshot;
mod strategy;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use place::place;
pub use query::{Expression, QueryError};
pub use snapshot::{CommitError, Snapshot};
pub use strategy::{
    check_limits, BinpackField, PlacementConstraint, PlacementError, PlacementStrategy,
    SpreadField, WireConstraint, WireStrategy, MAX_CONSTRAINTS, MAX_EXPRESSION_LEN, MAX_STRATEGIES,
};

/// The `reason`s of placement failures.
pub mod reason {
    pub const AGENT: &str = "AGENT";
    pub const ATTRIBUTE: &str = "ATTRIBUTE";
    pub const CPU: &str = "RESOURCE:CPU";
    pub const MEMORY: &str = "RESOURCE:MEMORY";
    pub const PORTS: &str = "RESOURCE:PORTS";
    pub const PORTS_UDP: &str = "RESOURCE:PORTS_UDP";
    pub const MEMBER_OF: &str = "MemberOf placement constraint unsatisfied.";
    pub const DISTINCT_INSTANCE: &str = "DistinctInstance placement constraint unsatisfied.";
}

/// The status of a container instance that can take tasks.
pub const ACTIVE: &str = "ACTIVE";

/// A container instance as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    /// `containerInstanceArn`
    pub arn: String,
    /// `ec2InstanceId`: what `spread(instanceId)` and the `ec2InstanceId` subject use.
    pub ec2_instance_id: String,
    /// `ACTIVE`, `DRAINING`, `INACTIVE`, `REGISTERING`, ...: only `ACTIVE` gets tasks.
    pub status: String,
    pub agent_connected: bool,
    pub registered_at_epoch_secs: i64,
    /// CPU units left (registered minus what running and pending tasks reserve).
    pub remaining_cpu: i64,
    /// MiB left.
    pub remaining_memory: i64,
    pub used_tcp_ports: BTreeSet<u16>,
    pub used_udp_ports: BTreeSet<u16>,
    /// `ecs.instance-type`, `ecs.availability-zone`, `ecs.os-type`, custom attributes...
    pub attributes: BTreeMap<String, Option<String>>,
    /// Tasks running or pending here.
    pub running_tasks: Vec<TaskOnInstance>,
    pub agent_version: String,
    /// `runningTasksCount`
    pub running_tasks_count: u32,
    /// `pendingTasksCount`
    pub pending_tasks_count: u32,
}

/// A task on an instance, as far as placement cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskOnInstance {
    pub group: String,
    pub task_definition_arn: String,
    pub family: String,
}

/// An attribute the task definition requires (`requiresAttributes`): present, and equal to
/// `value` when one is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredAttribute {
    pub name: String,
    pub value: Option<String>,
}

/// What to place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub count: usize,
    /// CPU units one task reserves (the task's, or the sum over its containers).
    pub cpu: i64,
    /// MiB one task reserves.
    pub memory: i64,
    /// Static host ports one task binds (dynamic ports, host port 0, are not listed).
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// The task group (`service:NAME`, `family:NAME`, or RunTask's `group`).
    pub group: String,
    pub task_definition_arn: String,
    pub family: String,
    pub required_attributes: Vec<RequiredAttribute>,
    /// Applied in order; empty means random.
    pub strategy: Vec<PlacementStrategy>,
    /// The request's constraints and the task definition's.
    pub constraints: Vec<PlacementConstraint>,
}

/// Where the tasks go, and why the rest could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// One per placed task, in placement order.
    pub placements: Vec<Placement>,
    /// When `unplaced > 0`: each instance's reason, in snapshot order. Else empty.
    pub failures: Vec<Failure>,
    /// Tasks that could not be placed.
    pub unplaced: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index into [`Snapshot::instances`].
    pub instance_index: usize,
    pub instance_arn: String,
}

/// An ECS `Failure`: the container instance and why it could not take the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub arn: String,
    pub reason: String,
}
