//! From an assigned task (task definition + overrides + network configuration) to what the
//! engine runs: one [`RunSpec`] per container, the network, task-scoped volumes, the start and
//! stop order, and the list of fields the engine cannot carry out yet. Pure: no I/O.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_engine::{Network, RunSpec};
use berth_runtime::spec::{MAX_CPU_SHARES, MIN_CPU_SHARES};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::health::HealthCheck;
use crate::order::{self, Condition, OrderError};
use crate::taskdef::{
    cpu_units, is_set, memory_mib, ContainerDefinition, ContainerOverride, KeyValue,
    NetworkConfiguration, TaskDefinition, TaskOverride, Volume,
};

/// ECS's default `stopTimeout` (`ECS_CONTAINER_STOP_TIMEOUT`).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `stopTimeout` ECS accepts.
const MAX_STOP_TIMEOUT: u64 = 120;
/// The network of awsvpc tasks that name no subnet.
pub const DEFAULT_SUBNET_NETWORK: &str = "subnet-default";

/// Why a task cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("invalid task definition")]
    TaskDefinition(#[source] serde_json::Error),
    #[error("invalid overrides")]
    Overrides(#[source] serde_json::Error),
    #[error("invalid network configuration")]
    NetworkConfiguration(#[source] serde_json::Error),
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error("{0}")]
    Invalid(String),
}

/// The task's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NetworkPlan {
    None,
    Host,
    /// The engine's default bridge network, ports published on the host.
    Bridge,
    /// A bridge network named after the task's first subnet; no ports published, the
    /// containers are reached at their own addresses.
    Awsvpc {
        network: String,
    },
}

/// A port a container listens on, as reported when nothing is published (host, awsvpc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedPort {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
}

/// One container to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    /// The name in the task definition.
    pub name: String,
    pub essential: bool,
    /// What the engine runs (`name` is the engine container name).
    pub run: RunSpec,
    pub depends_on: Vec<(String, Condition)>,
    pub stop_timeout: Duration,
    /// Ports reported as network bindings when nothing is published.
    pub ports: Vec<PlannedPort>,
    /// Its health check.
    pub health_check: Option<HealthCheck>,
}

/// The task's sandbox: one per task (every network mode), holding the task-level limits; for
/// awsvpc also the one network namespace (one address) all its containers share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPlan {
    /// `ecs-<task id>`.
    pub name: String,
    /// The bridge network of an awsvpc task (named after its first subnet).
    pub network: Option<String>,
    /// The task's `cpu` (overrides win), in CPU units.
    pub cpu_units: Option<u64>,
    /// The task's `memory` (overrides win), in bytes.
    pub memory_bytes: Option<i64>,
}

/// Fargate's ephemeral storage when the task definition names none, in GiB.
pub const DEFAULT_EPHEMERAL_STORAGE_GIB: u64 = 20;

/// The size limit of a task's writable layers: for FARGATE tasks the task definition's
/// `ephemeralStorage.sizeInGiB` (default [`DEFAULT_EPHEMERAL_STORAGE_GIB`]), in bytes; other
/// launch types have none.
pub fn ephemeral_storage_bytes(task_definition: &Value, launch_type: Option<&str>) -> Option<u64> {
    if launch_type != Some("FARGATE") {
        return None;
    }
    let gib = task_definition
        .get("ephemeralStorage")
        .and_then(|e| e.get("sizeInGiB"))
        .and_then(Value::as_u64)
        .filter(|g| *g > 0)
        .unwrap_or(DEFAULT_EPHEMERAL_STORAGE_GIB);
    Some(gib << 30)
}

/// The sandbox name of a task.
pub fn sandbox_name(task_id: &str) -> String {
    format!("{SANDBOX_PREFIX}{task_id}")
}

/// The prefix of the sandboxes the agent makes (and may sweep).
pub const SANDBOX_PREFIX: &str = "ecs-";

/// Everything the agent needs to run a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlan {
    pub family: String,
    pub revision: i64,
    pub network: NetworkPlan,
    /// The task's sandbox (limits; awsvpc: its network namespace).
    pub sandbox: SandboxPlan,
    /// In task definition order.
    pub containers: Vec<ContainerPlan>,
    /// Start levels (indexes into `containers`); stop in reverse.
    pub levels: Vec<Vec<usize>>,
    /// Volumes that live as long as the task (removed at cleanup).
    pub task_volumes: Vec<String>,
    /// Fields present in the task that the engine does not carry out (logged, not fatal).
    pub unsupported: Vec<String>,
}

impl TaskPlan {
    /// Indexes of the containers in start order.
    pub fn start_order(&self) -> Vec<usize> {
        self.levels.iter().flatten().copied().collect()
    }
}

/// The task id: the last segment of a task ARN (`arn:...:task/cluster/ID` → `ID`), reduced to
/// characters safe in file and container names.
pub fn task_id(task_arn: &str) -> String {
    let last = task_arn.rsplit('/').next().unwrap_or(task_arn);
    let id = sanitize(last);
    if id.is_empty() {
        "task".to_string()
    } else {
        id
    }
}

/// Replaces every character outside `[a-zA-Z0-9_.-]` with `-`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn random_hex() -> String {
    let mut b = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The engine name of a container, as the ECS agent names them:
/// `ecs-<family>-<revision>-<container>-<20 random hex>`.
pub fn container_name(family: &str, revision: i64, container: &str) -> String {
    sanitize(&format!(
        "ecs-{family}-{revision}-{container}-{}",
        random_hex()
    ))
}

/// The name of a task-scoped volume: `ecs-<family>-<revision>-<volume>-<task id>`.
pub fn task_volume_name(family: &str, revision: i64, volume: &str, task_id: &str) -> String {
    sanitize(&format!("ecs-{family}-{revision}-{volume}-{task_id}"))
}

fn env_pairs(list: &[KeyValue]) -> impl Iterator<Item = (String, String)> + '_ {
    list.iter().filter_map(|kv| {
        kv.name
            .as_ref()
            .filter(|n| !n.is_empty())
            .map(|n| (n.clone(), kv.value.clone().unwrap_or_default()))
    })
}

/// The container's environment with the override's entries replacing those of the same name
/// (in place) and new ones appended.
fn merge_env(def: &[KeyValue], over: Option<&ContainerOverride>) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut put = |(k, v): (String, String)| match env.iter_mut().find(|(ek, _)| *ek == k) {
        Some(e) => e.1 = v,
        None => env.push((k, v)),
    };
    env_pairs(def).for_each(&mut put);
    if let Some(o) = over {
        env_pairs(&o.environment).for_each(&mut put);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Docker's argv: the entryPoint (when given) replaces the image's and drops the image's
/// command; the command follows it.
fn entrypoint_and_cmd(
    entry_point: Option<&Vec<String>>,
    command: Option<&Vec<String>>,
) -> (Option<String>, Vec<String>) {
    let cmd = command.cloned().unwrap_or_default();
    match entry_point {
        Some(ep) if !ep.is_empty() => {
            let mut args: Vec<String> = ep[1..].to_vec();
            args.extend(cmd);
            (Some(ep[0].clone()), args)
        }
        _ => (None, cmd),
    }
}

fn protocol(p: &Option<String>) -> String {
    p.as_deref()
        .map(str::to_ascii_lowercase)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "tcp".to_string())
}

/// Names of the fields of a container definition that are set but not carried out.
fn unsupported_container_fields(
    c: &ContainerDefinition,
    over: Option<&ContainerOverride>,
) -> Vec<String> {
    // Fields that only matter to the control plane or are harmless when ignored.
    const IGNORED: &[&str] = &["versionConsistency"];
    let mut out = Vec::new();
    for (k, v) in &c.other {
        if is_set(v) && !IGNORED.contains(&k.as_str()) {
            out.push(k.clone());
        }
    }
    if let Some(lc) = &c.log_configuration {
        match lc.log_driver.as_deref() {
            None | Some("json-file") => {}
            Some(d) => out.push(format!(
                "logConfiguration.logDriver {d} (logs stay in the engine's json-file log)"
            )),
        }
    }
    if let Some(lp) = &c.linux_parameters {
        for (k, v) in &lp.other {
            if is_set(v) {
                out.push(format!("linuxParameters.{k}"));
            }
        }
    }
    if let Some(o) = over {
        for (k, v) in &o.other {
            if is_set(v) {
                out.push(format!("containerOverrides.{k}"));
            }
        }
    }
    out.sort();
    out
}

/// Plans a task. `task_definition`, `overrides` and `network_configuration` are the ECS
/// shapes the control plane sends in the poll.
pub fn plan_task(
    task_arn: &str,
    task_definition: &Value,
    overrides: Option<&Value>,
    network_configuration: Option<&Value>,
) -> Result<TaskPlan, PlanError> {
    let td: TaskDefinition =
        serde_json::from_value(task_definition.clone()).map_err(PlanError::TaskDefinition)?;
    let ov: TaskOverride = match overrides {
        Some(v) if !v.is_null() => {
            serde_json::from_value(v.clone()).map_err(PlanError::Overrides)?
        }
        _ => TaskOverride::default(),
    };
    let nc: NetworkConfiguration = match network_configuration {
        Some(v) if !v.is_null() => {
            serde_json::from_value(v.clone()).map_err(PlanError::NetworkConfiguration)?
        }
        _ => NetworkConfiguration::default(),
    };
    if td.container_definitions.is_empty() {
        return Err(PlanError::Invalid(
            "the task definition has no containers".into(),
        ));
    }
    let tid = task_id(task_arn);
    let mut unsupported: BTreeSet<String> = BTreeSet::new();
    for k in [
        "pidMode",
        "ipcMode",
        "proxyConfiguration",
        "inferenceAccelerators",
    ] {
        if td.other.get(k).is_some_and(is_set) {
            unsupported.insert(k.to_string());
        }
    }

    let network = match td.network_mode.as_deref().unwrap_or("bridge") {
        "bridge" | "default" => NetworkPlan::Bridge,
        "host" => NetworkPlan::Host,
        "none" => NetworkPlan::None,
        "awsvpc" => {
            let subnet = nc
                .awsvpc_configuration
                .as_ref()
                .and_then(|a| a.subnets.first())
                .map(|s| sanitize(s))
                .filter(|s| s.len() >= 2)
                .unwrap_or_else(|| DEFAULT_SUBNET_NETWORK.to_string());
            NetworkPlan::Awsvpc { network: subnet }
        }
        other => {
            return Err(PlanError::Invalid(format!(
                "unsupported network mode {other:?}"
            )))
        }
    };

    // Task volumes → the `-v` source of each name.
    let mut volume_sources: Vec<(String, String)> = Vec::new();
    let mut task_volumes = Vec::new();
    for Volume {
        name,
        host,
        docker_volume_configuration,
        other,
    } in &td.volumes
    {
        for (k, v) in other {
            if is_set(v) {
                unsupported.insert(format!(
                    "volumes.{k} (volume {name} is a task-scoped local volume)"
                ));
            }
        }
        let source = if let Some(path) = host
            .as_ref()
            .and_then(|h| h.source_path.as_ref())
            .filter(|p| !p.is_empty())
        {
            if !path.starts_with('/') {
                return Err(PlanError::Invalid(format!(
                    "volume {name}: host sourcePath {path:?} is not absolute"
                )));
            }
            path.clone()
        } else if let Some(dvc) = docker_volume_configuration {
            if dvc.driver.as_deref().is_some_and(|d| d != "local") {
                unsupported.insert(format!("volume {name}: driver {:?}", dvc.driver));
            }
            if dvc.other.values().any(is_set) {
                unsupported.insert(format!("volume {name}: dockerVolumeConfiguration options"));
            }
            if dvc.scope.as_deref() == Some("shared") {
                sanitize(name)
            } else {
                let v = task_volume_name(&td.family, td.revision, name, &tid);
                task_volumes.push(v.clone());
                v
            }
        } else {
            let v = task_volume_name(&td.family, td.revision, name, &tid);
            task_volumes.push(v.clone());
            v
        };
        volume_sources.push((name.clone(), source));
    }

    let task_cpu = ov.cpu.as_ref().or(td.cpu.as_ref()).and_then(cpu_units);
    let task_memory = ov
        .memory
        .as_ref()
        .or(td.memory.as_ref())
        .and_then(memory_mib);

    let mut containers = Vec::with_capacity(td.container_definitions.len());
    for c in &td.container_definitions {
        if c.name.is_empty() {
            return Err(PlanError::Invalid("a container has no name".into()));
        }
        if c.image.is_empty() {
            return Err(PlanError::Invalid(format!(
                "container {} has no image",
                c.name
            )));
        }
        let over = ov
            .container_overrides
            .iter()
            .find(|o| o.name.as_deref() == Some(c.name.as_str()));
        for f in unsupported_container_fields(c, over) {
            unsupported.insert(format!("{}: {f}", c.name));
        }
        let command = over.and_then(|o| o.command.as_ref()).or(c.command.as_ref());
        let (entrypoint, cmd) = entrypoint_and_cmd(c.entry_point.as_ref(), command);
        let memory_mib = over.and_then(|o| o.memory).or(c.memory).or(task_memory);

        let mut publish = Vec::new();
        let mut ports = Vec::new();
        let disable_net = c.disable_networking.unwrap_or(false);
        for pm in &c.port_mappings {
            let proto = protocol(&pm.protocol);
            match (&network, disable_net) {
                (_, true) | (NetworkPlan::None, _) => {}
                (NetworkPlan::Bridge, _) => {
                    if let Some(range) = pm.container_port_range.as_ref().filter(|r| !r.is_empty())
                    {
                        publish.push(format!("{range}/{proto}"));
                    } else if let Some(cp) = pm.container_port {
                        match pm.host_port.filter(|h| *h != 0) {
                            Some(hp) => publish.push(format!("{hp}:{cp}/{proto}")),
                            None => publish.push(format!("{cp}/{proto}")),
                        }
                    }
                }
                (NetworkPlan::Host, _) | (NetworkPlan::Awsvpc { .. }, _) => {
                    if let Some(cp) = pm.container_port {
                        ports.push(PlannedPort {
                            container_port: cp,
                            host_port: match network {
                                NetworkPlan::Host => pm.host_port.filter(|h| *h != 0).unwrap_or(cp),
                                _ => cp,
                            },
                            protocol: proto,
                        });
                    } else if pm.container_port_range.is_some() {
                        unsupported.insert(format!(
                            "{}: containerPortRange outside bridge mode",
                            c.name
                        ));
                    }
                }
            }
        }
        let engine_network = if disable_net {
            Network::None
        } else {
            match &network {
                NetworkPlan::None => Network::None,
                NetworkPlan::Host => Network::Host,
                NetworkPlan::Bridge => Network::Bridge(berth_net::DEFAULT_NETWORK.to_string()),
                // The containers join the sandbox's namespace.
                NetworkPlan::Awsvpc { .. } => Network::None,
            }
        };

        let mut volumes = Vec::new();
        for mp in &c.mount_points {
            let (Some(src), Some(dst)) = (mp.source_volume.as_ref(), mp.container_path.as_ref())
            else {
                return Err(PlanError::Invalid(format!(
                    "container {}: a mount point needs sourceVolume and containerPath",
                    c.name
                )));
            };
            let source = volume_sources
                .iter()
                .find(|(n, _)| n == src)
                .map(|(_, s)| s.clone())
                .ok_or_else(|| {
                    PlanError::Invalid(format!(
                        "container {}: mount point source volume {src} is not a task volume",
                        c.name
                    ))
                })?;
            let ro = if mp.read_only.unwrap_or(false) {
                ":ro"
            } else {
                ""
            };
            volumes.push(format!("{source}:{dst}{ro}"));
        }
        let tmpfs = c
            .linux_parameters
            .as_ref()
            .map(|lp| {
                lp.tmpfs
                    .iter()
                    .filter(|t| !t.container_path.is_empty())
                    .map(|t| {
                        let mut opts: Vec<String> = Vec::new();
                        if let Some(size) = t.size.filter(|s| *s > 0) {
                            opts.push(format!("size={size}m"));
                        }
                        opts.extend(t.mount_options.iter().cloned());
                        if opts.is_empty() {
                            t.container_path.clone()
                        } else {
                            format!("{}:{}", t.container_path, opts.join(","))
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();

        let lp = c.linux_parameters.as_ref();
        // ECS: container cpu units are cpu shares; null, 0 and 1 are passed as 2.
        let cpu = over.and_then(|o| o.cpu).or(c.cpu).unwrap_or(0);
        let cpu_shares = u64::try_from(cpu)
            .unwrap_or(0)
            .clamp(MIN_CPU_SHARES, MAX_CPU_SHARES);
        let memory = memory_mib.filter(|m| *m > 0).map(|m| m * 1024 * 1024);
        let memory_reservation = over
            .and_then(|o| o.memory_reservation)
            .or(c.memory_reservation)
            .filter(|m| *m > 0)
            .map(|m| {
                let r = m * 1024 * 1024;
                // Never above the hard limit (the task's, when the container has none).
                memory.map_or(r, |limit| r.min(limit))
            });
        let memory_swap = match (lp.and_then(|l| l.max_swap), memory) {
            (Some(swap), Some(m)) if swap >= 0 => Some(m + swap * 1024 * 1024),
            (Some(_), _) => {
                unsupported.insert(format!(
                    "{}: linuxParameters.maxSwap without a memory limit",
                    c.name
                ));
                None
            }
            (None, _) => None,
        };
        let ulimits = c
            .ulimits
            .iter()
            .map(|u| {
                berth_runtime::spec::Ulimit::new(&u.name, u.soft_limit, u.hard_limit)
                    .map_err(|e| PlanError::Invalid(format!("container {}: {e}", c.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let caps = lp.and_then(|l| l.capabilities.clone()).unwrap_or_default();
        let extra_hosts = c
            .extra_hosts
            .iter()
            .map(|h| format!("{}:{}", h.hostname, h.ip_address))
            .collect();

        let run = RunSpec {
            image: c.image.clone(),
            cmd,
            name: Some(container_name(&td.family, td.revision, &c.name)),
            env: merge_env(&c.environment, over),
            network: engine_network,
            memory,
            cpus: task_cpu.map(|u| u / 1024.0),
            pids_limit: None,
            user: c.user.clone().filter(|u| !u.is_empty()),
            workdir: c.working_directory.clone().filter(|w| !w.is_empty()),
            entrypoint,
            hostname: c.hostname.clone().filter(|h| !h.is_empty()),
            auto_remove: false,
            detach: true,
            volumes,
            tmpfs,
            publish,
            restart: Default::default(),
            tty: c.pseudo_terminal.unwrap_or(false),
            interactive: c.interactive.unwrap_or(false),
            cpu_shares: Some(cpu_shares),
            memory_reservation,
            memory_swap,
            ulimits,
            read_only: c.readonly_root_filesystem.unwrap_or(false),
            privileged: c.privileged.unwrap_or(false),
            cap_add: caps.add,
            cap_drop: caps.drop,
            extra_hosts,
            labels: c.docker_labels.clone().unwrap_or_default(),
            shm_size: lp
                .and_then(|l| l.shared_memory_size)
                .filter(|s| *s > 0)
                .map(|s| s as u64 * 1024 * 1024),
            dns: c.dns_servers.clone(),
            dns_search: c.dns_search_domains.clone(),
            sandbox: Some(sandbox_name(&tid)),
        };
        let mut depends_on = Vec::new();
        for d in &c.depends_on {
            let cond = Condition::parse(&d.condition).ok_or_else(|| OrderError::BadCondition {
                container: c.name.clone(),
                condition: d.condition.clone(),
            })?;
            depends_on.push((d.container_name.clone(), cond));
        }
        let health_check = match &c.health_check {
            Some(def) => HealthCheck::from_def(def)
                .map_err(|e| PlanError::Invalid(format!("container {}: {e}", c.name)))?,
            None => None,
        };
        let stop_timeout = c
            .stop_timeout
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs((s as u64).min(MAX_STOP_TIMEOUT)))
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        containers.push(ContainerPlan {
            name: c.name.clone(),
            essential: c.essential.unwrap_or(true),
            run,
            depends_on,
            stop_timeout,
            ports,
            health_check,
        });
    }
    for c in &containers {
        for (dep, cond) in &c.depends_on {
            let target = containers.iter().find(|t| t.name == *dep);
            if *cond == Condition::Healthy && target.is_some_and(|t| t.health_check.is_none()) {
                return Err(PlanError::Invalid(format!(
                    "container {} depends on {dep} being HEALTHY, but {dep} has no health check",
                    c.name
                )));
            }
        }
    }
    if !containers.iter().any(|c| c.essential) {
        return Err(PlanError::Invalid(
            "a task needs at least one essential container".into(),
        ));
    }
    let graph: Vec<(String, Vec<String>)> = containers
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.depends_on.iter().map(|(n, _)| n.clone()).collect(),
            )
        })
        .collect();
    let levels = order::levels(&graph)?;
    let sandbox = SandboxPlan {
        name: sandbox_name(&tid),
        network: match &network {
            NetworkPlan::Awsvpc { network } => Some(network.clone()),
            _ => None,
        },
        cpu_units: task_cpu.map(|u| u.round() as u64).filter(|u| *u > 0),
        memory_bytes: task_memory.map(|m| m * 1024 * 1024),
    };
    Ok(TaskPlan {
        family: td.family,
        revision: td.revision,
        network,
        sandbox,
        containers,
        levels,
        task_volumes,
        unsupported: unsupported.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str =
        "arn:aws:ecs:us-east-1:000000000000:task/default/0123456789abcdef0123456789abcdef";

    fn td(network_mode: &str, containers: Value) -> Value {
        json!({"family": "web", "revision": 4, "networkMode": network_mode,
               "containerDefinitions": containers})
    }

    fn plan(v: Value) -> TaskPlan {
        plan_task(ARN, &v, None, None).expect("plan")
    }

    #[test]
    fn entrypoint_and_command_make_docker_argv() {
        assert_eq!(entrypoint_and_cmd(None, None), (None, vec![]));
        let cmd = vec!["-c".to_string(), "echo hi".to_string()];
        assert_eq!(entrypoint_and_cmd(None, Some(&cmd)), (None, cmd.clone()));
        let ep = vec!["/bin/sh".to_string()];
        assert_eq!(
            entrypoint_and_cmd(Some(&ep), Some(&cmd)),
            (Some("/bin/sh".into()), cmd.clone())
        );
        let ep = vec!["/bin/sh".to_string(), "-c".to_string()];
        let c2 = vec!["echo hi".to_string()];
        assert_eq!(
            entrypoint_and_cmd(Some(&ep), Some(&c2)),
            (Some("/bin/sh".into()), cmd.clone())
        );
        // An entryPoint alone: its own argv (the image's command is dropped by the engine).
        assert_eq!(
            entrypoint_and_cmd(Some(&ep), None),
            (Some("/bin/sh".into()), vec!["-c".to_string()])
        );
        assert_eq!(entrypoint_and_cmd(Some(&vec![]), Some(&c2)), (None, c2));
    }

    #[test]
    fn overrides_replace_command_env_and_memory() {
        let v = td(
            "none",
            json!([{"name": "app", "image": "bb:1", "command": ["sleep", "1"],
                    "entryPoint": ["/bin/env"], "memory": 64,
                    "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]),
        );
        let ov = json!({"containerOverrides": [{"name": "app", "command": ["true"],
            "memory": 128, "environment": [{"name": "B", "value": "x"}, {"name": "C", "value": "3"}]}]});
        let p = plan_task(ARN, &v, Some(&ov), None).expect("plan");
        let r = &p.containers[0].run;
        assert_eq!(r.entrypoint.as_deref(), Some("/bin/env"));
        assert_eq!(r.cmd, vec!["true"]);
        assert_eq!(r.env, vec!["A=1", "B=x", "C=3"]);
        assert_eq!(r.memory, Some(128 << 20));
        assert_eq!(r.network, Network::None);
        assert!(r.detach && !r.auto_remove);
        assert!(r.publish.is_empty());
    }

    #[test]
    fn names_follow_the_ecs_agent() {
        let p = plan(td("none", json!([{"name": "app", "image": "bb:1"}])));
        let name = p.containers[0].run.name.clone().expect("name");
        let hex = name.strip_prefix("ecs-web-4-app-").expect("prefix");
        assert_eq!(hex.len(), 20);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(task_id(ARN), "0123456789abcdef0123456789abcdef");
        assert_eq!(task_id("../../etc"), "etc");
        assert_eq!(task_id("a/b c"), "b-c");
    }

    #[test]
    fn ports_per_network_mode() {
        let containers = json!([{"name": "app", "image": "bb:1", "portMappings": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "protocol": "udp"},
            {"containerPort": 443, "hostPort": 0, "protocol": "tcp"}]}]);
        let p = plan(td("bridge", containers.clone()));
        assert_eq!(p.network, NetworkPlan::Bridge);
        let r = &p.containers[0].run;
        assert_eq!(r.network, Network::Bridge("bridge".into()));
        assert_eq!(r.publish, vec!["8080:80/tcp", "53/udp", "443/tcp"]);
        assert!(p.containers[0].ports.is_empty());

        let p = plan(td("host", containers.clone()));
        let c = &p.containers[0];
        assert_eq!(c.run.network, Network::Host);
        assert!(c.run.publish.is_empty());
        assert_eq!(
            c.ports
                .iter()
                .map(|p| (p.container_port, p.host_port, p.protocol.as_str()))
                .collect::<Vec<_>>(),
            vec![(80, 8080, "tcp"), (53, 53, "udp"), (443, 443, "tcp")]
        );

        let nc = json!({"awsvpcConfiguration": {"subnets": ["subnet-0abc", "subnet-1"]}});
        let p = plan_task(ARN, &td("awsvpc", containers.clone()), None, Some(&nc)).expect("plan");
        assert_eq!(
            p.network,
            NetworkPlan::Awsvpc {
                network: "subnet-0abc".into()
            }
        );
        let c = &p.containers[0];
        // The containers join the task's sandbox, which is on the subnet's network.
        assert_eq!(c.run.network, Network::None);
        assert_eq!(c.run.sandbox, Some(p.sandbox.name.clone()));
        assert_eq!(p.sandbox.network.as_deref(), Some("subnet-0abc"));
        assert!(c.run.publish.is_empty());
        assert_eq!(c.ports[0].host_port, 80);
        let p = plan(td("awsvpc", containers.clone()));
        assert_eq!(p.sandbox.network.as_deref(), Some(DEFAULT_SUBNET_NETWORK));

        let p = plan(td("none", containers));
        assert!(p.containers[0].run.publish.is_empty() && p.containers[0].ports.is_empty());
        assert_eq!(p.sandbox.network, None);
        assert_eq!(p.containers[0].run.sandbox, Some(p.sandbox.name.clone()));

        let ranged = json!([{"name": "app", "image": "bb:1", "portMappings": [
            {"containerPortRange": "9000-9002", "protocol": "udp"}]}]);
        assert_eq!(
            plan(td("bridge", ranged)).containers[0].run.publish,
            vec!["9000-9002/udp"]
        );
    }

    #[test]
    fn ephemeral_storage_of_fargate_tasks() {
        let td = json!({"family": "f", "ephemeralStorage": {"sizeInGiB": 30}});
        assert_eq!(
            ephemeral_storage_bytes(&td, Some("FARGATE")),
            Some(30 << 30)
        );
        assert_eq!(ephemeral_storage_bytes(&td, Some("EC2")), None);
        assert_eq!(ephemeral_storage_bytes(&td, None), None);
        let td = json!({"family": "f"});
        assert_eq!(
            ephemeral_storage_bytes(&td, Some("FARGATE")),
            Some(20 << 30)
        );
    }

    #[test]
    fn volumes_bind_shared_and_task_scoped() {
        let v = json!({"family": "web", "revision": 4, "networkMode": "none",
        "volumes": [
            {"name": "hostdir", "host": {"sourcePath": "/srv/data"}},
            {"name": "cache", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": true}},
            {"name": "scratch", "dockerVolumeConfiguration": {"scope": "task"}},
            {"name": "empty", "host": {}},
            {"name": "bare"}
        ],
        "containerDefinitions": [{"name": "app", "image": "bb:1", "mountPoints": [
            {"sourceVolume": "hostdir", "containerPath": "/data", "readOnly": true},
            {"sourceVolume": "cache", "containerPath": "/cache"},
            {"sourceVolume": "scratch", "containerPath": "/scratch", "readOnly": false},
            {"sourceVolume": "empty", "containerPath": "/empty"},
            {"sourceVolume": "bare", "containerPath": "/bare"}
        ]}]});
        let p = plan(v);
        let tid = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            p.containers[0].run.volumes,
            vec![
                "/srv/data:/data:ro".to_string(),
                "cache:/cache".to_string(),
                format!("ecs-web-4-scratch-{tid}:/scratch"),
                format!("ecs-web-4-empty-{tid}:/empty"),
                format!("ecs-web-4-bare-{tid}:/bare"),
            ]
        );
        assert_eq!(
            p.task_volumes,
            vec![
                format!("ecs-web-4-scratch-{tid}"),
                format!("ecs-web-4-empty-{tid}"),
                format!("ecs-web-4-bare-{tid}"),
            ]
        );
        // Unknown source volume.
        let bad = td(
            "none",
            json!([{"name": "app", "image": "bb:1", "mountPoints": [
                {"sourceVolume": "nope", "containerPath": "/x"}]}]),
        );
        assert!(matches!(
            plan_task(ARN, &bad, None, None),
            Err(PlanError::Invalid(_))
        ));
    }

    #[test]
    fn dependencies_order_and_errors() {
        let p = plan(td(
            "none",
            json!([
                {"name": "app", "image": "bb:1", "dependsOn": [
                    {"containerName": "init", "condition": "SUCCESS"},
                    {"containerName": "db", "condition": "HEALTHY"}]},
                {"name": "init", "image": "bb:1", "essential": false,
                 "dependsOn": [{"containerName": "db", "condition": "START"}]},
                {"name": "db", "image": "bb:1", "stopTimeout": 5,
                 "healthCheck": {"command": ["CMD-SHELL", "pg_isready"], "interval": 10,
                                 "timeout": 3, "retries": 2, "startPeriod": 20}}
            ]),
        ));
        assert_eq!(p.start_order(), vec![2, 1, 0]);
        assert_eq!(p.containers[2].stop_timeout, Duration::from_secs(5));
        assert_eq!(p.containers[0].stop_timeout, DEFAULT_STOP_TIMEOUT);
        assert!(!p.containers[1].essential && p.containers[0].essential);
        assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
        assert_eq!(
            p.containers[2].health_check,
            Some(HealthCheck {
                command: vec!["/bin/sh".into(), "-c".into(), "pg_isready".into()],
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(3),
                retries: 2,
                start_period: Duration::from_secs(20),
            })
        );
        assert_eq!(p.containers[0].health_check, None);
        assert_eq!(
            p.containers[0].depends_on,
            vec![
                ("init".to_string(), Condition::Success),
                ("db".to_string(), Condition::Healthy)
            ]
        );
        // HEALTHY needs a health check on the dependency; a bad command is refused.
        let no_check = td(
            "none",
            json!([
                {"name": "a", "image": "bb:1", "dependsOn": [{"containerName": "b", "condition": "HEALTHY"}]},
                {"name": "b", "image": "bb:1"}
            ]),
        );
        let err = plan_task(ARN, &no_check, None, None).expect_err("no health check");
        assert!(err.to_string().contains("has no health check"), "{err}");
        let bad = td(
            "none",
            json!([{"name": "a", "image": "bb:1", "healthCheck": {"command": ["curl", "x"]}}]),
        );
        assert!(matches!(
            plan_task(ARN, &bad, None, None),
            Err(PlanError::Invalid(_))
        ));

        let cyclic = td(
            "none",
            json!([
                {"name": "a", "image": "bb:1", "dependsOn": [{"containerName": "b", "condition": "START"}]},
                {"name": "b", "image": "bb:1", "dependsOn": [{"containerName": "a", "condition": "START"}]}
            ]),
        );
        assert!(matches!(
            plan_task(ARN, &cyclic, None, None),
            Err(PlanError::Order(OrderError::Cycle(_)))
        ));
        let bad_cond = td(
            "none",
            json!([{"name": "a", "image": "bb:1", "dependsOn": [{"containerName": "b", "condition": "LATER"}]},
                   {"name": "b", "image": "bb:1"}]),
        );
        assert!(matches!(
            plan_task(ARN, &bad_cond, None, None),
            Err(PlanError::Order(OrderError::BadCondition { .. }))
        ));
    }

    #[test]
    fn unsupported_fields_are_listed_not_fatal() {
        let p = plan(
            json!({"family": "web", "revision": 1, "networkMode": "bridge",
            "cpu": "512", "memory": "1 GB", "pidMode": "host",
            "containerDefinitions": [{"name": "app", "image": "bb:1", "cpu": 128,
                "memoryReservation": 64, "ulimits": [{"name": "nofile", "softLimit": 1, "hardLimit": 1}],
                "healthCheck": {"command": ["CMD", "true"]}, "readonlyRootFilesystem": true,
                "logConfiguration": {"logDriver": "awslogs"}, "privileged": false,
                "environment": [], "volumesFrom": [],
                "linuxParameters": {"initProcessEnabled": true,
                    "tmpfs": [{"containerPath": "/run", "size": 16, "mountOptions": ["noexec"]}]}}]}),
        );
        let u = p.unsupported.join("\n");
        for want in [
            "pidMode",
            "awslogs",
            "app: linuxParameters.initProcessEnabled",
        ] {
            assert!(u.contains(want), "{want} missing from {u}");
        }
        for carried_out in [
            "privileged",
            "volumesFrom",
            "cpu",
            "memoryReservation",
            "ulimits",
            "healthCheck",
            "readonlyRootFilesystem",
        ] {
            assert!(!u.contains(carried_out), "{carried_out} in {u}");
        }
        let r = &p.containers[0].run;
        // Task-level size applies to containers without their own limit.
        assert_eq!(r.memory, Some(1024 << 20));
        assert_eq!(r.cpus, Some(0.5));
        // ... and the task's sandbox has them for the task as a whole.
        assert_eq!(p.sandbox.cpu_units, Some(512));
        assert_eq!(p.sandbox.memory_bytes, Some(1024 << 20));
        assert!(
            p.sandbox.name.starts_with(SANDBOX_PREFIX),
            "{}",
            p.sandbox.name
        );
        assert_eq!(r.tmpfs, vec!["/run:size=16m,noexec"]);
    }

    #[test]
    fn container_options_reach_the_engine() {
        let p = plan(td(
            "bridge",
            json!([{"name": "app", "image": "bb:1", "cpu": 512, "memory": 256,
                "memoryReservation": 128, "hostname": "web1",
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096},
                            {"name": "core", "softLimit": -1, "hardLimit": -1}],
                "readonlyRootFilesystem": true, "privileged": true,
                "extraHosts": [{"hostname": "db", "ipAddress": "10.0.0.5"},
                               {"hostname": "v6", "ipAddress": "::1"}],
                "dockerLabels": {"team": "web", "tier": "front"},
                "dnsServers": ["10.0.0.2"], "dnsSearchDomains": ["corp.example"],
                "linuxParameters": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]},
                    "sharedMemorySize": 128, "maxSwap": 64}},
                {"name": "side", "image": "bb:1", "memoryReservation": 32}]),
        ));
        assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
        let r = &p.containers[0].run;
        assert_eq!(r.cpu_shares, Some(512));
        assert_eq!(r.memory, Some(256 << 20));
        assert_eq!(r.memory_reservation, Some(128 << 20));
        assert_eq!(r.memory_swap, Some((256 + 64) << 20));
        assert_eq!(
            r.ulimits
                .iter()
                .map(|u| (u.name.as_str(), u.soft, u.hard))
                .collect::<Vec<_>>(),
            vec![("nofile", 1024, 4096), ("core", -1, -1)]
        );
        assert!(r.read_only && r.privileged);
        assert_eq!(r.cap_add, vec!["NET_ADMIN"]);
        assert_eq!(r.cap_drop, vec!["MKNOD"]);
        assert_eq!(r.extra_hosts, vec!["db:10.0.0.5", "v6:::1"]);
        assert_eq!(r.labels.get("team").map(String::as_str), Some("web"));
        assert_eq!(r.labels.len(), 2);
        assert_eq!(r.dns, vec!["10.0.0.2"]);
        assert_eq!(r.dns_search, vec!["corp.example"]);
        assert_eq!(r.shm_size, Some(128 << 20));
        assert_eq!(r.hostname.as_deref(), Some("web1"));
        for h in &r.extra_hosts {
            berth_engine::container::parse_extra_host(h).expect("engine parses it");
        }
        // No cpu: ECS passes 2 shares. memoryReservation alone: a soft limit, no hard one.
        let side = &p.containers[1].run;
        assert_eq!(side.cpu_shares, Some(2));
        assert_eq!(side.memory, None);
        assert_eq!(side.memory_reservation, Some(32 << 20));
        assert!(!side.read_only && !side.privileged && side.ulimits.is_empty());
        // A task-level limit bounds the reservation; overrides win.
        let v = json!({"family": "web", "revision": 1, "networkMode": "none", "memory": "64",
            "containerDefinitions": [{"name": "app", "image": "bb:1", "cpu": 1,
                "memoryReservation": 128}]});
        let p = plan_task(ARN, &v, None, None).expect("plan");
        let r = &p.containers[0].run;
        assert_eq!(
            (r.memory, r.memory_reservation),
            (Some(64 << 20), Some(64 << 20))
        );
        assert_eq!(r.cpu_shares, Some(2));
        let ov = json!({"containerOverrides": [{"name": "app", "cpu": 300000,
            "memoryReservation": 16}]});
        let p = plan_task(ARN, &v, Some(&ov), None).expect("plan");
        let r = &p.containers[0].run;
        assert_eq!(r.cpu_shares, Some(262_144));
        assert_eq!(r.memory_reservation, Some(16 << 20));
        // A bad ulimit fails the plan.
        let bad = td(
            "none",
            json!([{"name": "a", "image": "bb:1",
                "ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 5}]}]),
        );
        assert!(matches!(
            plan_task(ARN, &bad, None, None),
            Err(PlanError::Invalid(_))
        ));
    }

    #[test]
    fn invalid_tasks() {
        assert!(plan_task(
            ARN,
            &json!({"family": "x", "containerDefinitions": []}),
            None,
            None
        )
        .is_err());
        assert!(plan_task(ARN, &td("none", json!([{"name": "a"}])), None, None).is_err());
        assert!(plan_task(
            ARN,
            &td(
                "none",
                json!([{"name": "a", "image": "i", "essential": false}])
            ),
            None,
            None
        )
        .is_err());
        assert!(plan_task(
            ARN,
            &td("nat", json!([{"name": "a", "image": "i"}])),
            None,
            None
        )
        .is_err());
        assert!(plan_task(ARN, &json!([1]), None, None).is_err());
    }
}
