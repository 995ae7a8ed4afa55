//! Fargate: where a task runs when the user names no host.
//!
//! - **Capacity.** RunTask and services choose between EC2 (the cluster's container
//!   instances) and Fargate by `launchType`, by a `capacityProviderStrategy` over the
//!   cluster's providers (FARGATE, FARGATE_SPOT, or Auto Scaling group providers, which place
//!   on the cluster's instances), or by the cluster's default strategy. A strategy splits the
//!   tasks as ECS does: `base` first, the rest in proportion to the weights.
//! - **Platform capacity.** Fargate tasks run on the agents that registered with the
//!   [`PLATFORM_ATTRIBUTE`] (`berth serve`'s local agent; `berth agent --platform` elsewhere),
//!   whatever cluster those agents joined. Such a task keeps its host in
//!   `container_instance_arn` (the agent protocol and the monitor work unchanged) but shows
//!   none: the host is Berth's, not the user's. Placement spreads by remaining memory; the
//!   task's cpu is a cgroup limit on the host, not a reservation that refuses tasks.
//! - **Spot.** [`reclaim_spot`] interrupts FARGATE_SPOT tasks the way AWS reclaims capacity:
//!   SIGTERM now, SIGKILL after the notice (AWS's two minutes, configurable), stop code
//!   `SpotInterruption`; a service replaces them.
//! - **Image cache.** [`prepull_images`] lists the images of ACTIVE Fargate-compatible task
//!   definitions, which platform agents pull before any task asks for them.

use std::collections::{BTreeMap, BTreeSet};

use berth_aws::AwsError;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{client_error, invalid_param, parse, Ctx};
use crate::control::{now, Region, State};
use crate::model::{Cluster, Instance, Task};
use crate::store::Durability;
use crate::taskdef::model::Compatibility;

/// The attribute of container instances whose agent also offers Fargate platform capacity.
pub const PLATFORM_ATTRIBUTE: &str = "berth.platform";
/// The one platform version there is (`LATEST` resolves to it).
pub const PLATFORM_VERSION: &str = "1.4.0";
/// A Fargate task's ephemeral storage when its task definition names none, GiB.
pub const DEFAULT_EPHEMERAL_GIB: u32 = 20;
/// The stop reason of an interrupted FARGATE_SPOT task (ECS's words).
pub const SPOT_REASON: &str = "Your Spot Task was interrupted.";
/// AWS's Spot interruption warning.
pub const DEFAULT_SPOT_NOTICE_SECONDS: u64 = 120;
/// RunTask's failure reason when no platform host has room (ECS's words).
pub const NO_CAPACITY: &str =
    "Capacity is unavailable at this time. Please try again later or in a different availability zone";

/// Where a group of tasks runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// On the cluster's container instances; `provider` names the Auto Scaling group
    /// capacity provider when a strategy chose one.
    Ec2 { provider: Option<String> },
    /// On platform capacity; `provider` is FARGATE or FARGATE_SPOT when a strategy chose it
    /// (with `launchType FARGATE` ECS shows none).
    Fargate { provider: Option<String> },
}

impl Capacity {
    pub fn launch_type(&self) -> &'static str {
        match self {
            Capacity::Ec2 { .. } => "EC2",
            Capacity::Fargate { .. } => "FARGATE",
        }
    }

    pub fn provider(&self) -> Option<&str> {
        match self {
            Capacity::Ec2 { provider } | Capacity::Fargate { provider } => provider.as_deref(),
        }
    }
}

/// One item of a capacity provider strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyItem {
    pub provider: String,
    pub weight: u32,
    pub base: u32,
}

/// Parses and checks a `capacityProviderStrategy` against the cluster's providers.
pub fn parse_strategy(items: &[Value], cluster: &Cluster) -> Result<Vec<StrategyItem>, AwsError> {
    if items.len() > 20 {
        return Err(invalid_param(
            "A capacity provider strategy can contain at most 20 capacity providers.",
        ));
    }
    let mut out: Vec<StrategyItem> = Vec::new();
    for v in items {
        let Some(provider) = v["capacityProvider"].as_str().filter(|p| !p.is_empty()) else {
            return Err(invalid_param(
                "capacityProvider is required in a capacity provider strategy item.",
            ));
        };
        let weight = match &v["weight"] {
            Value::Null => 0,
            w => w
                .as_u64()
                .filter(|w| *w <= 1000)
                .ok_or_else(|| invalid_param("weight must be between 0 and 1000."))?,
        };
        let base = match &v["base"] {
            Value::Null => 0,
            b => b
                .as_u64()
                .filter(|b| *b <= 100_000)
                .ok_or_else(|| invalid_param("base must be between 0 and 100000."))?,
        };
        let provider = crate::ecs::arn_or_name(provider).to_string();
        if out.iter().any(|x| x.provider == provider) {
            return Err(invalid_param(format!(
                "The capacity provider {provider} appears more than once in the capacity provider strategy."
            )));
        }
        if !cluster.capacity_providers.contains(&provider) {
            return Err(invalid_param(
                "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.",
            ));
        }
        out.push(StrategyItem {
            provider,
            weight: weight as u32,
            base: base as u32,
        });
    }
    if out.iter().filter(|x| x.base > 0).count() > 1 {
        return Err(invalid_param(
            "You can specify a base value for only one capacity provider in a capacity provider strategy.",
        ));
    }
    if !out.is_empty() && out.iter().all(|x| x.weight == 0) {
        return Err(invalid_param(
            "At least one capacity provider in a capacity provider strategy must have a weight greater than zero.",
        ));
    }
    let fargate = |x: &StrategyItem| is_fargate_provider(&x.provider);
    if out.iter().any(fargate) && !out.iter().all(fargate) {
        return Err(invalid_param(
            "The specified capacity provider strategy cannot contain a mix of capacity providers using Auto Scaling groups and Fargate providers. Specify one or the other and try again.",
        ));
    }
    Ok(out)
}

/// Whether a capacity provider is one of Fargate's (FARGATE, FARGATE_SPOT).
pub fn is_fargate_provider(provider: &str) -> bool {
    super::clusters::BUILTIN_PROVIDERS.contains(&provider)
}

/// The capacity a provider name stands for.
pub fn provider_capacity(provider: &str) -> Capacity {
    let named = Some(provider.to_string());
    if is_fargate_provider(provider) {
        Capacity::Fargate { provider: named }
    } else {
        Capacity::Ec2 { provider: named }
    }
}

/// How many of `total` tasks each strategy item gets, given `existing` tasks per provider
/// (a service's live tasks): `base` first, then in proportion to the weights. Returns the
/// new tasks per provider, in strategy order.
pub fn split(
    strategy: &[StrategyItem],
    total: usize,
    existing: &BTreeMap<String, usize>,
) -> Vec<(String, usize)> {
    let have = |p: &str| existing.get(p).copied().unwrap_or(0);
    let mut counts: Vec<usize> = strategy.iter().map(|s| have(&s.provider)).collect();
    let mut placed: usize = counts.iter().sum();
    let mut new = vec![0usize; strategy.len()];
    // Base first.
    for (i, s) in strategy.iter().enumerate() {
        while counts[i] < s.base as usize && placed < total {
            counts[i] += 1;
            new[i] += 1;
            placed += 1;
        }
    }
    // Then by weight (base tasks do not count): each task to the provider furthest below
    // its share.
    while placed < total {
        let beyond = |i: usize| counts[i].saturating_sub(strategy[i].base as usize) as u64;
        let pick = strategy
            .iter()
            .enumerate()
            .filter(|(_, s)| s.weight > 0)
            .min_by(|(a, sa), (b, sb)| {
                // (beyond+1)/weight, compared without division.
                let l = (beyond(*a) + 1) * u64::from(sb.weight);
                let r = (beyond(*b) + 1) * u64::from(sa.weight);
                l.cmp(&r).then(a.cmp(b))
            })
            .map(|(i, _)| i);
        let Some(i) = pick else { break };
        counts[i] += 1;
        new[i] += 1;
        placed += 1;
    }
    strategy
        .iter()
        .zip(new)
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| (s.provider.clone(), n))
        .collect()
}

/// What a launch asked for: `launchType`, a strategy, or neither (the cluster's default
/// strategy, else EC2). Checks the combination; returns the strategy to split by, or the one
/// capacity when there is no strategy.
pub enum Choice {
    One(Capacity),
    Strategy(Vec<StrategyItem>),
}

pub fn choose(
    launch_type: Option<&str>,
    strategy: &[Value],
    cluster: &Cluster,
) -> Result<Choice, AwsError> {
    if !strategy.is_empty() && launch_type.is_some() {
        return Err(invalid_param(
            "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
        ));
    }
    match launch_type {
        Some("EC2") => return Ok(Choice::One(Capacity::Ec2 { provider: None })),
        Some("FARGATE") => return Ok(Choice::One(Capacity::Fargate { provider: None })),
        Some("EXTERNAL") | Some("MANAGED_INSTANCES") => {
            return Err(invalid_param(format!(
                "launch type {} is not available in Berth; use EC2 or FARGATE",
                launch_type.unwrap_or_default()
            )))
        }
        Some(o) => return Err(invalid_param(format!("Invalid launchType: {o}"))),
        None => {}
    }
    let items = if strategy.is_empty() {
        &cluster.default_capacity_provider_strategy
    } else {
        strategy
    };
    if items.is_empty() {
        return Ok(Choice::One(Capacity::Ec2 { provider: None }));
    }
    Ok(Choice::Strategy(parse_strategy(items, cluster)?))
}

/// Fargate's own checks of a launch: the task definition, the task size (overrides
/// included), placement rules and the platform version. Returns the platform version.
pub fn check_launch(
    spec: &crate::taskdef::TaskDefinitionSpec,
    task_cpu: Option<&str>,
    task_memory: Option<&str>,
    placement: bool,
    platform_version: Option<&str>,
) -> Result<String, AwsError> {
    if !spec.supports(Compatibility::Fargate) {
        return Err(invalid_param(
            "Task definition does not support launch_type FARGATE.",
        ));
    }
    let cpu = task_cpu.and_then(|v| v.parse::<u32>().ok());
    let memory = task_memory.and_then(|v| v.parse::<u32>().ok());
    match (cpu, memory) {
        (Some(c), Some(m)) if crate::taskdef::is_fargate_size(c, m) => {}
        (Some(c), Some(m)) => {
            return Err(client_error(format!(
                "No Fargate configuration exists for given values: {c} CPU, {m} memory. See the Amazon ECS documentation for the valid values."
            )))
        }
        _ => {
            return Err(client_error(
                "Fargate requires task definition to have execution role ARN to support log driver awslogs, and 'cpu' and 'memory' defined at the task level.",
            ))
        }
    }
    if placement {
        return Err(invalid_param(
            "Task placement strategies and constraints are not supported with launch type FARGATE.",
        ));
    }
    match platform_version {
        None | Some("LATEST") | Some(PLATFORM_VERSION) => Ok(PLATFORM_VERSION.to_string()),
        Some(_) => Err(AwsError::client(
            "PlatformUnknownException",
            "The specified platform does not exist.",
        )),
    }
}

/// The ephemeral storage of a Fargate task: overrides, else the task definition, else 20 GiB.
pub fn ephemeral_storage(
    spec: &crate::taskdef::TaskDefinitionSpec,
    overrides: Option<&Value>,
) -> Result<u32, AwsError> {
    if let Some(v) = overrides
        .map(|o| &o["ephemeralStorage"])
        .filter(|v| !v.is_null())
    {
        return v["sizeInGiB"]
            .as_u64()
            .filter(|g| (21..=200).contains(g))
            .map(|g| g as u32)
            .ok_or_else(|| {
                client_error(
                    "Invalid 'ephemeralStorage' setting. 'sizeInGiB' must be between 21 and 200.",
                )
            });
    }
    Ok(spec
        .request()
        .ephemeral_storage
        .as_ref()
        .and_then(|e| u32::try_from(e.size_in_gib).ok())
        .unwrap_or(DEFAULT_EPHEMERAL_GIB))
}

pub fn is_platform(i: &Instance) -> bool {
    i.attributes.contains_key(PLATFORM_ATTRIBUTE)
}

/// Picks a platform host for each of `count` tasks needing `memory` MiB: the one with the most
/// memory left (spreading), or `None` for a task no host has room for.
pub(crate) fn place(c: &Ctx<'_>, s: &State, memory: i64, count: usize) -> Vec<Option<String>> {
    let Some(r) = s.region(c.region) else {
        return vec![None; count];
    };
    // Every platform host of the region that can take tasks now, with the memory it has left.
    let mut hosts: Vec<(String, i64)> = r
        .instances
        .values()
        .flat_map(|m| m.values())
        .filter(|i| is_platform(i) && i.status == "ACTIVE" && c.control.agent_connected(&i.arn))
        .map(|i| {
            let u = super::instances::usage(r, i);
            (i.arn.clone(), i.memory - u.memory)
        })
        .collect();
    (0..count)
        .map(|_| {
            let best = hosts
                .iter_mut()
                .filter(|(_, left)| *left >= memory)
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
            best.1 -= memory;
            Some(best.0.clone())
        })
        .collect()
}

/// The images the platform's agents keep cached: those of the latest ACTIVE revision of
/// every family whose task definition can run on Fargate (at most 64, newest first).
pub fn prepull_images(r: &Region) -> Vec<String> {
    let mut latest: Vec<(f64, Vec<String>)> = r
        .taskdefs
        .values()
        .filter_map(|revs| {
            revs.values()
                .rev()
                .find(|d| d.status == "ACTIVE" && d.spec.supports(Compatibility::Fargate))
        })
        .map(|d| {
            (
                d.registered_at,
                d.spec
                    .containers()
                    .iter()
                    .map(|c| c.image().to_string())
                    .collect(),
            )
        })
        .collect();
    latest.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out: Vec<String> = Vec::new();
    for img in latest.into_iter().flat_map(|(_, imgs)| imgs) {
        if !img.is_empty() && !out.contains(&img) {
            out.push(img);
        }
        if out.len() == 64 {
            break;
        }
    }
    out
}

/// Tasks of every cluster of `r` that `instance` hosts: its own cluster's, plus the Fargate
/// tasks of other clusters when it is a platform host.
pub fn hosted_tasks<'a>(r: &'a Region, instance: &'a Instance) -> impl Iterator<Item = &'a Task> {
    let platform = is_platform(instance);
    r.tasks
        .iter()
        .filter(move |(cluster, _)| platform || **cluster == instance.cluster)
        .flat_map(|(_, m)| m.values())
        .filter(move |t| t.container_instance_arn.as_deref() == Some(instance.arn.as_str()))
}

/// The cluster and id of a task reference: a task ARN names its cluster
/// (`arn:aws:ecs:<region>:<account>:task/<cluster>/<id>`); an id is in `cluster`.
pub fn task_ref<'a>(cluster: &'a str, reference: &'a str) -> (&'a str, &'a str) {
    if reference.starts_with("arn:") {
        let resource = reference.splitn(6, ':').nth(5).unwrap_or_default();
        let mut parts = resource.splitn(3, '/');
        if let (Some("task"), Some(cl), Some(id)) = (parts.next(), parts.next(), parts.next()) {
            return (cl, id);
        }
    }
    (cluster, super::arn_or_name(reference))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReclaimInput {
    cluster: Option<String>,
    #[serde(default)]
    tasks: Vec<String>,
    count: Option<usize>,
    notice_seconds: Option<u64>,
}

/// `BerthFargate_V1.ReclaimSpotCapacity` (Berth's own operation): interrupts FARGATE_SPOT
/// tasks of a cluster — the named `tasks`, or `count` of them (default all), oldest first.
/// They get SIGTERM now and SIGKILL after `noticeSeconds` (default 120), stop code
/// `SpotInterruption`. Returns `{"tasks": [arn...]}`.
pub(crate) fn reclaim_spot(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: ReclaimInput = parse(input)?;
    let cluster = super::cluster_name(i.cluster.as_deref());
    let notice = i.notice_seconds.unwrap_or(DEFAULT_SPOT_NOTICE_SECONDS);
    if notice > 3600 {
        return Err(invalid_param("noticeSeconds must be at most 3600"));
    }
    c.control.write(Durability::Immediate, |tx| {
        super::active_cluster(tx.state, c.region, &cluster)?;
        let mut spot: Vec<Task> = tx
            .state
            .region(c.region)
            .and_then(|r| r.tasks.get(&cluster))
            .map(|m| {
                m.values()
                    .filter(|t| {
                        !t.is_stopped()
                            && t.desired_status == "RUNNING"
                            && t.capacity_provider_name.as_deref() == Some("FARGATE_SPOT")
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !i.tasks.is_empty() {
            let wanted: BTreeSet<&str> = i.tasks.iter().map(|t| super::arn_or_name(t)).collect();
            spot.retain(|t| wanted.contains(t.id.as_str()));
            if spot.len() != wanted.len() {
                return Err(invalid_param(
                    "Some of the given tasks are not running FARGATE_SPOT tasks of the cluster.",
                ));
            }
        }
        spot.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        spot.truncate(i.count.unwrap_or(usize::MAX));
        let t_now = now();
        let mut out = Vec::new();
        for mut t in spot {
            t.stop_timeout_seconds = Some(notice);
            super::tasks::request_stop(&mut t, SPOT_REASON, "SpotInterruption");
            t.stopping_at.get_or_insert(t_now);
            out.push(t.arn.clone());
            tx.put_task(t);
        }
        Ok(json!({ "tasks": out }))
    })
}

#[cfg(test)]
mod tests;
