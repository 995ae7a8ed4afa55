//! Task placement (interim first-fit stub; replaced by the real scheduler).

use std::collections::{BTreeMap, BTreeSet};

pub struct Snapshot {
    pub instances: Vec<Instance>,
    pub now_epoch_secs: i64,
}
pub struct Instance {
    pub arn: String,
    pub ec2_instance_id: String,
    pub status: String,
    pub agent_connected: bool,
    pub registered_at_epoch_secs: i64,
    pub remaining_cpu: i64,
    pub remaining_memory: i64,
    pub used_tcp_ports: BTreeSet<u16>,
    pub used_udp_ports: BTreeSet<u16>,
    pub attributes: BTreeMap<String, Option<String>>,
    pub running_tasks: Vec<TaskOnInstance>,
    pub agent_version: String,
    pub running_tasks_count: usize,
    pub pending_tasks_count: usize,
}
pub struct TaskOnInstance {
    pub group: String,
    pub task_definition_arn: String,
    pub family: String,
}
pub struct Request {
    pub count: usize,
    pub cpu: i64,
    pub memory: i64,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    pub group: String,
    pub task_definition_arn: String,
    pub family: String,
    pub strategy: Vec<PlacementStrategy>,
    pub constraints: Vec<PlacementConstraint>,
}
#[derive(Clone)]
pub enum PlacementStrategy {
    Random,
}
#[derive(Clone)]
pub enum PlacementConstraint {
    DistinctInstance,
}
#[derive(Debug, thiserror::Error)]
#[error("bad")]
pub struct WireError;
impl PlacementStrategy {
    pub fn from_wire(_t: &str, _f: Option<&str>) -> Result<Self, WireError> {
        Ok(PlacementStrategy::Random)
    }
}
impl PlacementConstraint {
    pub fn from_wire(_t: &str, _f: Option<&str>) -> Result<Self, WireError> {
        Ok(PlacementConstraint::DistinctInstance)
    }
}
pub struct Expression;
pub fn parse_expression(_s: &str) -> Result<Expression, WireError> {
    Ok(Expression)
}
pub fn matches(_e: &Expression, _i: &Instance, _now: i64) -> bool {
    true
}
pub struct Plan {
    pub placements: Vec<Placement>,
    pub failures: Vec<Failure>,
}
pub struct Placement {
    pub instance: usize,
}
pub struct Failure {
    pub arn: String,
    pub reason: String,
}
pub fn place(s: &Snapshot, r: &Request, _seed: u64) -> Plan {
    let mut placements = Vec::new();
    let mut failures = Vec::new();
    for _ in 0..r.count {
        match s.instances.iter().position(|i| {
            i.status == "ACTIVE" && i.remaining_cpu >= r.cpu && i.remaining_memory >= r.memory
        }) {
            Some(i) => placements.push(Placement { instance: i }),
            None => failures.extend(s.instances.iter().map(|i| Failure {
                arn: i.arn.clone(),
                reason: "RESOURCE:MEMORY".into(),
            })),
        }
    }
    Plan {
        placements,
        failures,
    }
}
