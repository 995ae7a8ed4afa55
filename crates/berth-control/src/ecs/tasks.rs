//! Tasks: RunTask and StartTask (placed by the scheduler), StopTask, DescribeTasks, ListTasks,
//! and SubmitTaskStateChange, through which agents report every transition.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::fargate::{self, Capacity, Choice};
use super::instances::{find, usage};
use super::{
    active_cluster, arn_or_name, client_error, cluster_name, includes, invalid_param, new_id,
    page_params, paginate, parse, parse_tags, with_token, Ctx,
};
use crate::control::{now, Region, State, Tx};
use crate::model::{Cluster, Instance, Task, TaskContainer, TaskDefRecord, TaskEni};
use crate::scheduler;
use crate::store::Durability;
use crate::taskdef::model::{NetworkMode, Tag as WireTag, TransportProtocol};
use berth_aws::AwsError;

/// ECS's order of task states; an agent report never moves a task backwards.
const ORDER: [&str; 8] = [
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
];

fn rank(status: &str) -> Option<usize> {
    ORDER.iter().position(|s| *s == status)
}

/// An instance as the scheduler sees it.
pub(crate) fn scheduler_instance(r: &Region, i: &Instance, connected: bool) -> scheduler::Instance {
    let u = usage(r, i);
    let running_tasks = r
        .tasks
        .get(&i.cluster)
        .map(|m| {
            m.values()
                .filter(|t| !t.is_stopped() && t.container_instance_arn.as_deref() == Some(&i.arn))
                .map(|t| scheduler::TaskOnInstance {
                    group: t.group.clone(),
                    task_definition_arn: t.task_definition_arn.clone(),
                    family: t.family.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    scheduler::Instance {
        arn: i.arn.clone(),
        ec2_instance_id: i.ec2_instance_id.clone(),
        status: i.status.clone(),
        agent_connected: connected,
        registered_at_epoch_secs: i.registered_at as i64,
        remaining_cpu: i.cpu - u.cpu,
        remaining_memory: i.memory - u.memory,
        used_tcp_ports: u.tcp,
        used_udp_ports: u.udp,
        attributes: i.attributes.clone(),
        running_tasks,
        agent_version: i
            .version_info
            .as_ref()
            .and_then(|v| v["agentVersion"].as_str())
            .unwrap_or_default()
            .to_string(),
        running_tasks_count: u.running as u32,
        pending_tasks_count: u.pending as u32,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireStrategy {
    #[serde(rename = "type")]
    kind: String,
    field: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireConstraint {
    #[serde(rename = "type")]
    kind: String,
    expression: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunInput {
    cluster: Option<String>,
    task_definition: String,
    count: Option<i64>,
    started_by: Option<String>,
    group: Option<String>,
    overrides: Option<Value>,
    #[serde(default)]
    placement_constraints: Vec<WireConstraint>,
    #[serde(default)]
    placement_strategy: Vec<WireStrategy>,
    launch_type: Option<String>,
    #[serde(default)]
    capacity_provider_strategy: Vec<Value>,
    platform_version: Option<String>,
    network_configuration: Option<Value>,
    enable_ecs_managed_tags: Option<bool>,
    propagate_tags: Option<String>,
    reference_id: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
    enable_execute_command: Option<bool>,
    client_token: Option<String>,
    #[serde(default)]
    volume_configurations: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartInput {
    cluster: Option<String>,
    task_definition: String,
    container_instances: Vec<String>,
    started_by: Option<String>,
    group: Option<String>,
    overrides: Option<Value>,
    network_configuration: Option<Value>,
    enable_ecs_managed_tags: Option<bool>,
    propagate_tags: Option<String>,
    reference_id: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
    enable_execute_command: Option<bool>,
    #[serde(default)]
    volume_configurations: Vec<Value>,
}

/// What RunTask and StartTask share once validated.
struct Launch {
    cluster: Cluster,
    td: TaskDefRecord,
    group: String,
    started_by: Option<String>,
    overrides: Option<Value>,
    network_configuration: Option<Value>,
    tags: Vec<crate::model::Tag>,
    propagate_tags: Option<String>,
    enable_execute_command: bool,
    cpu: i64,
    memory: i64,
    task_cpu: Option<String>,
    task_memory: Option<String>,
    tcp: Vec<u16>,
    udp: Vec<u16>,
}

/// What a FARGATE task adds to its launch.
#[derive(Debug, Clone)]
struct FargateLaunch {
    platform_version: String,
    ephemeral_gib: u32,
}

impl Launch {
    /// Fargate's checks of this launch (`placement`: whether placement rules were given).
    fn fargate(
        &self,
        placement: bool,
        platform_version: Option<&str>,
    ) -> Result<FargateLaunch, AwsError> {
        let platform_version = fargate::check_launch(
            &self.td.spec,
            self.task_cpu.as_deref(),
            self.task_memory.as_deref(),
            placement,
            platform_version,
        )?;
        Ok(FargateLaunch {
            platform_version,
            ephemeral_gib: fargate::ephemeral_storage(&self.td.spec, self.overrides.as_ref())?,
        })
    }

    fn check_ec2(&self) -> Result<(), AwsError> {
        if self
            .td
            .spec
            .supports(crate::taskdef::model::Compatibility::Ec2)
        {
            Ok(())
        } else {
            Err(client_error(
                "Task definition does not support launch_type EC2.",
            ))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn validate_launch(
    s: &State,
    c: &Ctx<'_>,
    cluster: Option<&str>,
    task_definition: &str,
    started_by: Option<String>,
    group: Option<String>,
    overrides: Option<Value>,
    network_configuration: Option<Value>,
    tags: &[WireTag],
    propagate_tags: Option<String>,
    enable_execute_command: bool,
) -> Result<Launch, AwsError> {
    let cluster = active_cluster(s, c.region, &cluster_name(cluster))?;
    let td = super::taskdefs::resolve(s, c.region, task_definition)?;
    if td.status != "ACTIVE" {
        return Err(client_error(format!(
            "TaskDefinition is inactive ({})",
            td.arn
        )));
    }
    if let Some(sb) = &started_by {
        if sb.len() > 128 {
            return Err(invalid_param("startedBy may be at most 128 characters"));
        }
    }
    if let Some(g) = &group {
        if g.is_empty() || g.len() > 255 {
            return Err(invalid_param("group must be 1 to 255 characters"));
        }
    }
    if let Some(p) = &propagate_tags {
        if !["TASK_DEFINITION", "SERVICE", "NONE"].contains(&p.as_str()) {
            return Err(invalid_param(format!("Invalid propagateTags: {p}")));
        }
    }
    let spec = &td.spec;
    let awsvpc = spec.network_mode() == NetworkMode::Awsvpc;
    match (&network_configuration, awsvpc) {
        (None, true) => {
            return Err(invalid_param(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
            ))
        }
        (Some(_), false) => return Err(invalid_param(
            "Network Configuration is not valid for the given networkMode of this task definition.",
        )),
        (Some(nc), true) => {
            let subnets = nc["awsvpcConfiguration"]["subnets"]
                .as_array()
                .map(|a| a.len())
                .unwrap_or(0);
            if subnets == 0 || subnets > 16 {
                return Err(invalid_param(
                    "subnets can not be empty (awsvpcConfiguration.subnets: 1 to 16 subnets)",
                ));
            }
        }
        (None, false) => {}
    }
    let mut cpu = spec.reserved_cpu_units() as i64;
    let mut memory = spec.reserved_memory_mib() as i64;
    let mut task_cpu = spec.task_cpu_units().map(|v| v.to_string());
    let mut task_memory = spec.task_memory_mib().map(|v| v.to_string());
    if let Some(o) = &overrides {
        let known = [
            "containerOverrides",
            "cpu",
            "inferenceAcceleratorOverrides",
            "executionRoleArn",
            "memory",
            "taskRoleArn",
            "ephemeralStorage",
        ];
        let Some(obj) = o.as_object() else {
            return Err(invalid_param("overrides must be an object"));
        };
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(invalid_param(format!(
                "Unknown parameter in overrides: \"{k}\""
            )));
        }
        for co in o["containerOverrides"].as_array().into_iter().flatten() {
            let name = co["name"].as_str().unwrap_or_default();
            if spec.container(name).is_none() {
                return Err(invalid_param(format!(
                    "Override for container named {name} is not a container in the TaskDefinition."
                )));
            }
            for (key, ok) in [
                ("command", co.get("command").map(|v| v.is_array())),
                ("environment", co.get("environment").map(|v| v.is_array())),
                ("cpu", co.get("cpu").map(|v| v.is_i64())),
                ("memory", co.get("memory").map(|v| v.is_i64())),
                (
                    "memoryReservation",
                    co.get("memoryReservation").map(|v| v.is_i64()),
                ),
            ] {
                if ok == Some(false) {
                    return Err(invalid_param(format!(
                        "containerOverrides.{key} of {name} has the wrong type"
                    )));
                }
            }
        }
        if let Some(v) = o["cpu"].as_str() {
            let units = crate::taskdef::parse_task_cpu(v)
                .ok_or_else(|| client_error("Invalid 'cpu' setting for task."))?;
            cpu = units as i64;
            task_cpu = Some(units.to_string());
        }
        if let Some(v) = o["memory"].as_str() {
            let mib = crate::taskdef::parse_task_memory(v)
                .ok_or_else(|| client_error("Invalid 'memory' setting for task."))?;
            memory = mib as i64;
            task_memory = Some(mib.to_string());
        }
    }
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for p in spec.static_host_ports() {
        match p.protocol {
            TransportProtocol::Tcp => tcp.push(p.port),
            TransportProtocol::Udp => udp.push(p.port),
        }
    }
    Ok(Launch {
        group: group.unwrap_or_else(|| format!("family:{}", td.family)),
        cluster,
        td,
        started_by,
        overrides,
        network_configuration,
        tags: parse_tags(tags)?,
        propagate_tags,
        enable_execute_command,
        cpu,
        memory,
        task_cpu,
        task_memory,
        tcp,
        udp,
    })
}

/// A new task of `l` on `instance_arn` (a platform host for FARGATE), not yet committed.
fn new_task(
    c: &Ctx<'_>,
    l: &Launch,
    instance_arn: &str,
    cap: &Capacity,
    fg: Option<&FargateLaunch>,
) -> Task {
    let id = new_id();
    let cluster = &l.cluster.name;
    let arn = c.arn(&format!("task/{cluster}/{id}"));
    let overrides_for = |name: &str| -> Option<Value> {
        l.overrides.as_ref().and_then(|o| {
            o["containerOverrides"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
        })
    };
    let containers =
        l.td.spec
            .containers()
            .iter()
            .map(|cd| {
                let name = cd.name.clone().unwrap_or_default();
                let ov = overrides_for(&name);
                let pick = |key: &str, base: Option<i32>| -> Option<String> {
                    ov.as_ref()
                        .and_then(|o| o[key].as_i64())
                        .or(base.map(i64::from))
                        .map(|v| v.to_string())
                };
                TaskContainer {
                    arn: c.arn(&format!(
                        "container/{cluster}/{id}/{}",
                        uuid::Uuid::new_v4()
                    )),
                    image: cd.image.clone().unwrap_or_default(),
                    image_digest: None,
                    runtime_id: None,
                    last_status: "PENDING".into(),
                    exit_code: None,
                    reason: None,
                    network_bindings: Vec::new(),
                    network_interfaces: Vec::new(),
                    essential: cd.essential.unwrap_or(true),
                    cpu: pick("cpu", cd.cpu).or(Some("0".into())),
                    memory: pick("memory", cd.memory),
                    memory_reservation: pick("memoryReservation", cd.memory_reservation),
                    health_status: cd.health_check.as_ref().map(|_| "UNKNOWN".into()),
                    name,
                }
            })
            .collect();
    Task {
        arn,
        id,
        region: c.region.to_string(),
        cluster: cluster.clone(),
        cluster_arn: l.cluster.arn.clone(),
        task_definition_arn: l.td.arn.clone(),
        family: l.td.family.clone(),
        revision: l.td.revision,
        container_instance_arn: Some(instance_arn.to_string()),
        launch_type: cap.launch_type().into(),
        capacity_provider_name: cap.provider().map(str::to_string),
        group: l.group.clone(),
        started_by: l.started_by.clone(),
        last_status: "PROVISIONING".into(),
        desired_status: "RUNNING".into(),
        created_at: now(),
        pull_started_at: None,
        pull_stopped_at: None,
        started_at: None,
        stopping_at: None,
        stopped_at: None,
        execution_stopped_at: None,
        connectivity: None,
        connectivity_at: None,
        stopped_reason: None,
        stop_code: None,
        containers,
        overrides: l.overrides.clone(),
        network_configuration: l.network_configuration.clone(),
        cpu: l.task_cpu.clone(),
        memory: l.task_memory.clone(),
        reserved_cpu: l.cpu,
        reserved_memory: l.memory,
        tcp_ports: l.tcp.clone(),
        udp_ports: l.udp.clone(),
        enable_execute_command: l.enable_execute_command,
        propagate_tags: l.propagate_tags.clone(),
        version: 1,
        transitions: Vec::new(),
        service_drain_until: None,
        service_accounted: false,
        stop_requested: None,
        eni: new_eni(l.network_configuration.as_ref()),
        platform_version: fg.map(|f| f.platform_version.clone()),
        ephemeral_storage_gib: fg.map(|f| f.ephemeral_gib),
        stop_timeout_seconds: None,
    }
}

/// The network interface of a new awsvpc task (on its first subnet), if it is one.
fn new_eni(nc: Option<&Value>) -> Option<TaskEni> {
    let vpc = &nc?["awsvpcConfiguration"];
    let subnet = vpc["subnets"].as_array()?.first()?.as_str()?.to_string();
    let security_groups = vpc["securityGroups"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let hex = uuid::Uuid::new_v4().simple().to_string();
    Some(TaskEni {
        attachment_id: uuid::Uuid::new_v4().to_string(),
        eni_id: format!("eni-{}", &hex[..17]),
        subnet,
        security_groups,
        status: "PRECREATED".into(),
        private_ipv4_address: None,
        mac_address: None,
    })
}

/// Tags of a new task: its own, plus the task definition's with `propagateTags`.
fn task_tags(s: &State, l: &Launch) -> Vec<crate::model::Tag> {
    let mut tags = l.tags.clone();
    if l.propagate_tags.as_deref() == Some("TASK_DEFINITION") {
        for t in s.tags.get(&l.td.arn).into_iter().flatten() {
            if !tags.iter().any(|x| x.key == t.key) {
                tags.push(t.clone());
            }
        }
    }
    tags
}

fn commit_tasks(tx: &mut Tx<'_>, l: &Launch, tasks: &[Task]) -> Vec<Value> {
    let tags = task_tags(tx.state, l);
    let mut out = Vec::new();
    for t in tasks {
        tx.put_task(t.clone());
        if !tags.is_empty() {
            tx.set_tags(&t.arn, tags.clone());
        }
        out.push(t.output(Some(&tags)));
    }
    out
}

fn snapshot(c: &Ctx<'_>, s: &State, cluster: &str, only: Option<&str>) -> scheduler::Snapshot {
    let instances = s
        .region(c.region)
        .map(|r| {
            r.instances
                .get(cluster)
                .map(|m| {
                    m.values()
                        .filter(|i| only.map(|o| o == i.arn).unwrap_or(true))
                        .map(|i| scheduler_instance(r, i, c.control.agent_connected(&i.arn)))
                        .collect()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    scheduler::Snapshot::new(instances, now() as i64)
}

fn request(l: &Launch, count: usize) -> scheduler::Request {
    scheduler::Request {
        count,
        cpu: l.cpu,
        memory: l.memory,
        tcp_ports: l.tcp.clone(),
        udp_ports: l.udp.clone(),
        group: l.group.clone(),
        task_definition_arn: l.td.arn.clone(),
        family: l.td.family.clone(),
        required_attributes: l
            .td
            .spec
            .requires_attributes()
            .into_iter()
            .map(|name| scheduler::RequiredAttribute { name, value: None })
            .collect(),
        strategy: Vec::new(),
        constraints: Vec::new(),
    }
}

const NO_INSTANCES: &str = "No Container Instances were found in your cluster.";

/// Places `count` tasks of `l` in its cluster (only on `instance` when given) with `strategy`,
/// `constraints` and the task definition's memberOf constraints; the tasks are not committed.
/// `None` when the cluster has no container instance.
#[allow(clippy::too_many_arguments)]
fn place_tasks(
    c: &Ctx<'_>,
    s: &State,
    l: &Launch,
    count: usize,
    strategy: Vec<scheduler::PlacementStrategy>,
    mut constraints: Vec<scheduler::PlacementConstraint>,
    instance: Option<&str>,
    seed: u64,
    cap: &Capacity,
) -> Result<Option<(Vec<Task>, scheduler::Plan)>, AwsError> {
    for pc in l.td.spec.request().placement_constraints.iter().flatten() {
        if let Some(e) = &pc.expression {
            constraints.push(
                scheduler::PlacementConstraint::from_wire_task_definition("memberOf", Some(e))
                    .map_err(|e| invalid_param(e.to_string()))?,
            );
        }
    }
    let snap = snapshot(c, s, &l.cluster.name, instance);
    if !snap.instances().iter().any(|x| x.status != "INACTIVE") {
        return Ok(None);
    }
    let mut req = request(l, count);
    req.strategy = strategy;
    req.constraints = constraints;
    let plan = scheduler::place(&snap, &req, seed);
    let tasks = plan
        .placements
        .iter()
        .map(|p| new_task(c, l, &p.instance_arn, cap, None))
        .collect();
    Ok(Some((tasks, plan)))
}

fn failures_json(plan: &scheduler::Plan) -> Vec<Value> {
    plan.failures
        .iter()
        .map(|f| json!({"arn": f.arn, "reason": f.reason}))
        .collect()
}

pub(super) fn run(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: RunInput = parse(input)?;
    let _ = (
        &i.platform_version,
        &i.enable_ecs_managed_tags,
        &i.reference_id,
        &i.client_token,
        &i.volume_configurations,
    );
    let count = i.count.unwrap_or(1);
    if !(1..=10).contains(&count) {
        return Err(invalid_param("count must be between 1 and 10"));
    }
    let mut strategy = Vec::new();
    for s in &i.placement_strategy {
        strategy.push(
            scheduler::PlacementStrategy::from_wire(&s.kind, s.field.as_deref())
                .map_err(|e| invalid_param(e.to_string()))?,
        );
    }
    if i.placement_strategy.len() > 5 {
        return Err(invalid_param("At most 5 placement strategies can be given"));
    }
    if i.placement_constraints.len() > 10 {
        return Err(invalid_param(
            "At most 10 placement constraints can be given",
        ));
    }
    let mut constraints = Vec::new();
    for pc in &i.placement_constraints {
        constraints.push(
            scheduler::PlacementConstraint::from_wire(&pc.kind, pc.expression.as_deref())
                .map_err(|e| invalid_param(e.to_string()))?,
        );
    }
    scheduler::check_limits(&strategy, &constraints).map_err(|e| invalid_param(e.to_string()))?;
    let seed: u64 = rand::random();
    c.control.write(Durability::Immediate, |tx| {
        let l = validate_launch(
            tx.state,
            c,
            i.cluster.as_deref(),
            &i.task_definition,
            i.started_by.clone(),
            i.group.clone(),
            i.overrides.clone(),
            i.network_configuration.clone(),
            &i.tags,
            i.propagate_tags.clone(),
            i.enable_execute_command.unwrap_or(false),
        )?;
        let groups = match fargate::choose(
            i.launch_type.as_deref(),
            &i.capacity_provider_strategy,
            &l.cluster,
        )? {
            Choice::One(cap) => vec![(cap, count as usize)],
            Choice::Strategy(items) => fargate::split(&items, count as usize, &BTreeMap::new())
                .into_iter()
                .map(|(p, n)| (fargate::provider_capacity(&p), n))
                .collect(),
        };
        let placement = !strategy.is_empty() || !constraints.is_empty();
        let mut tasks = Vec::new();
        let mut failures = Vec::new();
        for (cap, n) in &groups {
            let (placed, failed) = launch_group(
                c,
                tx.state,
                &l,
                cap,
                *n,
                LaunchRules {
                    strategy: strategy.clone(),
                    constraints: constraints.clone(),
                    placement,
                    platform_version: i.platform_version.as_deref(),
                    instance: None,
                    seed,
                },
            )?;
            if groups.len() == 1 && placed.is_none() {
                return Err(invalid_param(NO_INSTANCES));
            }
            tasks.extend(placed.unwrap_or_default());
            failures.extend(failed);
        }
        let out = commit_tasks(tx, &l, &tasks);
        Ok(json!({"tasks": out, "failures": failures}))
    })
}

/// How a group of tasks is placed.
struct LaunchRules<'a> {
    strategy: Vec<scheduler::PlacementStrategy>,
    constraints: Vec<scheduler::PlacementConstraint>,
    /// Whether the caller gave placement rules (FARGATE refuses them).
    placement: bool,
    platform_version: Option<&'a str>,
    /// EC2 only: the one instance to place on (a DAEMON service).
    instance: Option<&'a str>,
    seed: u64,
}

/// Places `n` tasks of `l` on `cap`: EC2 on the cluster's instances (`None` when the cluster
/// has none), FARGATE on platform capacity. Returns the new tasks (not committed) and the
/// failures.
fn launch_group(
    c: &Ctx<'_>,
    s: &State,
    l: &Launch,
    cap: &Capacity,
    n: usize,
    rules: LaunchRules<'_>,
) -> Result<(Option<Vec<Task>>, Vec<Value>), AwsError> {
    match cap {
        Capacity::Ec2 { .. } => {
            l.check_ec2()?;
            match place_tasks(
                c,
                s,
                l,
                n,
                rules.strategy,
                rules.constraints,
                rules.instance,
                rules.seed,
                cap,
            )? {
                Some((tasks, plan)) => Ok((Some(tasks), failures_json(&plan))),
                None => Ok((None, vec![json!({ "reason": NO_INSTANCES })])),
            }
        }
        Capacity::Fargate { .. } => {
            let fg = l.fargate(rules.placement, rules.platform_version)?;
            let mut tasks = Vec::new();
            let mut failures = Vec::new();
            for host in fargate::place(c, s, l.memory, n) {
                match host {
                    Some(h) => tasks.push(new_task(c, l, &h, cap, Some(&fg))),
                    None => failures.push(json!({ "reason": fargate::NO_CAPACITY })),
                }
            }
            Ok((Some(tasks), failures))
        }
    }
}

pub(super) fn start(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: StartInput = parse(input)?;
    let _ = (
        &i.enable_ecs_managed_tags,
        &i.reference_id,
        &i.volume_configurations,
    );
    if i.container_instances.is_empty() || i.container_instances.len() > 10 {
        return Err(invalid_param(
            "containerInstances must name 1 to 10 instances",
        ));
    }
    c.control.write(Durability::Immediate, |tx| {
        let l = validate_launch(
            tx.state,
            c,
            i.cluster.as_deref(),
            &i.task_definition,
            i.started_by.clone(),
            i.group.clone(),
            i.overrides.clone(),
            i.network_configuration.clone(),
            &i.tags,
            i.propagate_tags.clone(),
            i.enable_execute_command.unwrap_or(false),
        )?;
        l.check_ec2()?;
        let mut tasks = Vec::new();
        let mut failures = Vec::new();
        for r in &i.container_instances {
            let Some(inst) = find(tx.state, c.region, &l.cluster.name, r).cloned() else {
                failures.push(json!({"arn": r, "reason": "MISSING"}));
                continue;
            };
            // Resources, ports and status still hold for StartTask; strategies do not apply.
            let mut snap = snapshot(c, tx.state, &l.cluster.name, Some(&inst.arn));
            for t in &tasks {
                // Account tasks placed earlier in this call on the same instance.
                let t: &Task = t;
                if t.container_instance_arn.as_deref() == Some(&inst.arn) {
                    snap.update_instance(0, |si| {
                        si.remaining_cpu -= t.reserved_cpu;
                        si.remaining_memory -= t.reserved_memory;
                        si.used_tcp_ports.extend(t.tcp_ports.iter().copied());
                        si.used_udp_ports.extend(t.udp_ports.iter().copied());
                    });
                }
            }
            let plan = scheduler::place(&snap, &request(&l, 1), 0);
            if plan.placements.is_empty() {
                failures.extend(failures_json(&plan));
            } else {
                tasks.push(new_task(
                    c,
                    &l,
                    &inst.arn,
                    &Capacity::Ec2 { provider: None },
                    None,
                ));
            }
        }
        let out = commit_tasks(tx, &l, &tasks);
        Ok(json!({"tasks": out, "failures": failures}))
    })
}

/// Finds a task of `cluster` by ARN or id.
fn find_task(s: &State, region: &str, cluster: &str, reference: &str) -> Option<Task> {
    s.region(region)?
        .tasks
        .get(cluster)?
        .get(arn_or_name(reference))
        .cloned()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StopInput {
    cluster: Option<String>,
    task: String,
    reason: Option<String>,
}

pub(super) fn stop(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: StopInput = parse(input)?;
    if i.reason.as_deref().map(|r| r.len() > 255).unwrap_or(false) {
        return Err(invalid_param("reason may be at most 255 characters"));
    }
    let cluster = cluster_name(i.cluster.as_deref());
    c.control.write(Durability::Immediate, |tx| {
        active_cluster(tx.state, c.region, &cluster)?;
        let mut t = find_task(tx.state, c.region, &cluster, &i.task)
            .ok_or_else(|| invalid_param("The referenced task was not found."))?;
        let reason = i.reason.as_deref().unwrap_or("Task stopped by user");
        let behind_lb = t
            .group
            .strip_prefix("service:")
            .and_then(|name| super::services::find_service(tx.state, c.region, &cluster, name))
            .is_some_and(|sv| sv.status == "ACTIVE" && !sv.load_balancers.is_empty());
        if behind_lb
            && t.last_status == "RUNNING"
            && t.desired_status == "RUNNING"
            && t.stop_requested.is_none()
            && t.service_drain_until.is_none()
        {
            // Its service takes it out of the target groups first (deregistration delay).
            t.stop_requested = Some(reason.to_string());
            t.stop_code = Some("UserInitiated".into());
            tx.put_task(t.clone());
        } else if request_stop(&mut t, reason, "UserInitiated") {
            tx.put_task(t.clone());
        }
        let tags = tx.state.tags.get(&t.arn).cloned().unwrap_or_default();
        Ok(json!({ "task": t.output(Some(&tags)) }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DescribeInput {
    cluster: Option<String>,
    tasks: Vec<String>,
    include: Option<Vec<String>>,
}

pub(super) fn describe(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DescribeInput = parse(input)?;
    if i.tasks.is_empty() || i.tasks.len() > 100 {
        return Err(invalid_param("tasks must name 1 to 100 tasks"));
    }
    let cluster = cluster_name(i.cluster.as_deref());
    let with_tags = includes(&i.include, "TAGS");
    c.control.read(|s| {
        active_cluster(s, c.region, &cluster)?;
        let mut tasks = Vec::new();
        let mut failures = Vec::new();
        for r in &i.tasks {
            match find_task(s, c.region, &cluster, r) {
                Some(t) => {
                    let tags = if with_tags {
                        Some(s.tags.get(&t.arn).cloned().unwrap_or_default())
                    } else {
                        None
                    };
                    tasks.push(t.output(tags.as_deref()));
                }
                None => failures.push(json!({
                    "arn": if r.starts_with("arn:") { r.clone() } else { c.arn(&format!("task/{cluster}/{r}")) },
                    "reason": "MISSING"
                })),
            }
        }
        Ok(json!({"tasks": tasks, "failures": failures}))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListInput {
    cluster: Option<String>,
    container_instance: Option<String>,
    family: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    started_by: Option<String>,
    service_name: Option<String>,
    desired_status: Option<String>,
    launch_type: Option<String>,
}

pub(super) fn list(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: ListInput = parse(input)?;
    let desired = i.desired_status.clone().unwrap_or_else(|| "RUNNING".into());
    if !["RUNNING", "PENDING", "STOPPED"].contains(&desired.as_str()) {
        return Err(invalid_param(format!("Invalid desiredStatus: {desired}")));
    }
    let (n, after) = page_params(i.max_results, i.next_token.as_deref(), 100)?;
    let cluster = cluster_name(i.cluster.as_deref());
    let items = c
        .control
        .read(|s| -> Result<Vec<(String, String)>, AwsError> {
            active_cluster(s, c.region, &cluster)?;
            let instance_arn = match &i.container_instance {
                Some(r) => Some(
                    find(s, c.region, &cluster, r)
                        .map(|x| x.arn.clone())
                        .ok_or_else(|| {
                            invalid_param("The referenced container instance was not found.")
                        })?,
                ),
                None => None,
            };
            let mut out: Vec<(String, String)> = s
                .region(c.region)
                .and_then(|r| r.tasks.get(&cluster))
                .map(|m| {
                    m.values()
                        .filter(|t| match desired.as_str() {
                            // PENDING: tasks that should run but do not yet.
                            "PENDING" => {
                                t.desired_status == "RUNNING" && t.last_status != "RUNNING"
                            }
                            d => t.desired_status == d,
                        })
                        .filter(|t| {
                            instance_arn
                                .as_deref()
                                .map(|a| t.container_instance_arn.as_deref() == Some(a))
                                .unwrap_or(true)
                        })
                        .filter(|t| i.family.as_deref().map(|f| t.family == f).unwrap_or(true))
                        .filter(|t| {
                            i.started_by
                                .as_deref()
                                .map(|b| t.started_by.as_deref() == Some(b))
                                .unwrap_or(true)
                        })
                        .filter(|t| {
                            i.service_name
                                .as_deref()
                                .map(|sn| t.group == format!("service:{sn}"))
                                .unwrap_or(true)
                        })
                        .filter(|t| {
                            i.launch_type
                                .as_deref()
                                .map(|lt| t.launch_type == lt)
                                .unwrap_or(true)
                        })
                        .map(|t| (format!("{:020.3}{}", t.created_at, t.id), t.arn.clone()))
                        .collect()
                })
                .unwrap_or_default();
            out.sort();
            Ok(out)
        })?;
    let (arns, token) = paginate(items, n, after.as_deref());
    Ok(with_token(json!({ "taskArns": arns }), token))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ContainerChange {
    container_name: Option<String>,
    image_digest: Option<String>,
    runtime_id: Option<String>,
    exit_code: Option<i64>,
    #[serde(default)]
    network_bindings: Vec<Value>,
    reason: Option<String>,
    status: Option<String>,
    /// Berth's extension: the container's health (HEALTHY, UNHEALTHY, UNKNOWN).
    health_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SubmitInput {
    cluster: Option<String>,
    task: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    containers: Vec<ContainerChange>,
    #[serde(default)]
    attachments: Vec<Value>,
    #[serde(default)]
    managed_agents: Vec<Value>,
    pull_started_at: Option<f64>,
    pull_stopped_at: Option<f64>,
    execution_stopped_at: Option<f64>,
    /// Berth's extension: the address an awsvpc task got (see [`crate::proto::TaskNetwork`]).
    task_network: Option<crate::proto::TaskNetwork>,
}

/// Records the address an awsvpc task got: its interface is ATTACHED, every container shows
/// it in `networkInterfaces`.
fn attach_network(t: &mut Task, net: &crate::proto::TaskNetwork) {
    if t.eni.is_none() {
        t.eni = new_eni(t.network_configuration.as_ref());
    }
    let Some(eni) = t.eni.as_mut() else {
        return;
    };
    if eni.private_ipv4_address.as_deref() == Some(net.private_ipv4_address.as_str())
        && eni.status == "ATTACHED"
    {
        return;
    }
    eni.private_ipv4_address = Some(net.private_ipv4_address.clone());
    eni.mac_address = net.mac_address.clone();
    eni.status = "ATTACHED".into();
    let ni = json!([{
        "attachmentId": eni.attachment_id,
        "privateIpv4Address": net.private_ipv4_address,
    }]);
    for c in &mut t.containers {
        c.network_interfaces = ni.as_array().cloned().unwrap_or_default();
    }
}

/// `SubmitTaskStateChange`: an agent reports a transition of one of its tasks.
pub(super) fn submit_state_change(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: SubmitInput = parse(input)?;
    let _ = (&i.attachments, &i.managed_agents);
    let cluster = cluster_name(i.cluster.as_deref());
    let task_ref = i
        .task
        .clone()
        .ok_or_else(|| invalid_param("task is required"))?;
    let status = i.status.clone().unwrap_or_default();
    if !status.is_empty() && rank(&status).is_none() {
        return Err(invalid_param(format!("Invalid task status: {status}")));
    }
    let durability = match status.as_str() {
        "RUNNING" | "STOPPED" => Durability::Immediate,
        _ => Durability::Eventual,
    };
    for h in i
        .containers
        .iter()
        .filter_map(|c| c.health_status.as_deref())
    {
        if !matches!(h, "HEALTHY" | "UNHEALTHY" | "UNKNOWN") {
            return Err(invalid_param(format!(
                "Invalid container health status: {h}"
            )));
        }
    }
    c.control.write(durability, |tx| {
        // The agent names its own cluster; a Fargate task's ARN names the task's.
        let (cluster, id) = fargate::task_ref(&cluster, &task_ref);
        let mut t = find_task(tx.state, c.region, cluster, id)
            .ok_or_else(|| invalid_param("The referenced task was not found."))?;
        if t.is_stopped() {
            return Ok(json!({"acknowledgment": "ACK"}));
        }
        if let Some(net) = &i.task_network {
            attach_network(&mut t, net);
        }
        let t_now = now();
        for ch in &i.containers {
            let Some(name) = &ch.container_name else {
                continue;
            };
            let Some(ct) = t.containers.iter_mut().find(|x| &x.name == name) else {
                return Err(invalid_param(format!("Unknown container {name} in task")));
            };
            if let Some(s) = &ch.status {
                ct.last_status = s.clone();
            }
            if let Some(v) = &ch.runtime_id {
                ct.runtime_id = Some(v.clone());
            }
            if let Some(v) = &ch.image_digest {
                ct.image_digest = Some(v.clone());
            }
            if ch.exit_code.is_some() {
                ct.exit_code = ch.exit_code;
            }
            if let Some(v) = &ch.reason {
                ct.reason = Some(v.clone());
            }
            if !ch.network_bindings.is_empty() {
                ct.network_bindings = ch.network_bindings.clone();
            }
            if let Some(h) = &ch.health_status {
                ct.health_status = Some(h.clone());
            }
        }
        if let Some(v) = i.pull_started_at {
            t.pull_started_at.get_or_insert(v);
        }
        if let Some(v) = i.pull_stopped_at {
            t.pull_stopped_at = Some(v);
        }
        let old = rank(&t.last_status).unwrap_or(0);
        if let Some(new) = rank(&status).filter(|n| *n > old) {
            t.last_status = status.clone();
            match status.as_str() {
                "RUNNING" => {
                    t.started_at.get_or_insert(t_now);
                    t.connectivity = Some("CONNECTED".into());
                    t.connectivity_at.get_or_insert(t_now);
                }
                "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => {
                    t.stopping_at.get_or_insert(t_now);
                    if t.desired_status != "STOPPED" {
                        // The agent stops the task on its own (an essential container exited).
                        t.desired_status = "STOPPED".into();
                    }
                }
                "STOPPED" => {
                    t.desired_status = "STOPPED".into();
                    t.stopping_at.get_or_insert(t_now);
                    t.stopped_at = Some(t_now);
                    t.execution_stopped_at = Some(i.execution_stopped_at.unwrap_or(t_now));
                    if t.stop_code.is_none() {
                        if t.started_at.is_none() {
                            t.stop_code = Some("TaskFailedToStart".into());
                        } else {
                            t.stop_code = Some("EssentialContainerExited".into());
                        }
                    }
                    for ct in &mut t.containers {
                        if ct.last_status != "STOPPED" {
                            ct.last_status = "STOPPED".into();
                        }
                    }
                }
                _ => {}
            }
            if new >= rank("DEACTIVATING").unwrap_or(4) && t.stopped_reason.is_none() {
                t.stopped_reason = Some(
                    i.reason
                        .clone()
                        .unwrap_or_else(|| "Essential container in task exited".into()),
                );
            }
        }
        tx.put_task(t);
        Ok(json!({"acknowledgment": "ACK"}))
    })
}

/// Parses stored placement strategies and constraints (wire shapes, validated when stored).
pub(crate) fn placement_rules(
    strategy: &[Value],
    constraints: &[Value],
) -> Result<
    (
        Vec<scheduler::PlacementStrategy>,
        Vec<scheduler::PlacementConstraint>,
    ),
    AwsError,
> {
    let mut st = Vec::new();
    for s in strategy {
        st.push(
            scheduler::PlacementStrategy::from_wire(
                s["type"].as_str().unwrap_or_default(),
                s["field"].as_str(),
            )
            .map_err(|e| invalid_param(e.to_string()))?,
        );
    }
    let mut co = Vec::new();
    for c in constraints {
        co.push(
            scheduler::PlacementConstraint::from_wire(
                c["type"].as_str().unwrap_or_default(),
                c["expression"].as_str(),
            )
            .map_err(|e| invalid_param(e.to_string()))?,
        );
    }
    scheduler::check_limits(&st, &co).map_err(|e| invalid_param(e.to_string()))?;
    Ok((st, co))
}

/// Starts `count` tasks of a service's deployment (`startedBy` = the deployment id, group
/// `service:NAME`), placed by the scheduler with the service's strategy and constraints, or
/// on `instance` only (DAEMON). Returns the tasks started and the placement failures.
pub(crate) fn launch_service_tasks(
    c: &Ctx<'_>,
    tx: &mut Tx<'_>,
    sv: &crate::model::Service,
    dep: &crate::model::Deployment,
    count: usize,
    instance: Option<&str>,
) -> Result<(Vec<Task>, Vec<Value>), AwsError> {
    let mut l = validate_launch(
        tx.state,
        c,
        Some(&sv.cluster),
        &dep.task_definition,
        Some(dep.id.clone()),
        Some(sv.group()),
        None,
        dep.network_configuration.clone(),
        &[],
        sv.propagate_tags.clone(),
        sv.enable_execute_command,
    )?;
    if sv.propagate_tags.as_deref() == Some("SERVICE") {
        l.tags = tx.state.tags.get(&sv.arn).cloned().unwrap_or_default();
    }
    let (strategy, constraints) =
        placement_rules(&sv.placement_strategy, &sv.placement_constraints)?;
    let groups: Vec<(Capacity, usize)> = if sv.capacity_provider_strategy.is_empty() {
        let cap = if sv.launch_type == "FARGATE" {
            Capacity::Fargate { provider: None }
        } else {
            Capacity::Ec2 { provider: None }
        };
        vec![(cap, count)]
    } else {
        let items = fargate::parse_strategy(&sv.capacity_provider_strategy, &l.cluster)?;
        // The strategy's base and weights hold over the deployment's live tasks.
        let mut existing: BTreeMap<String, usize> = BTreeMap::new();
        for t in tx
            .state
            .region(c.region)
            .and_then(|r| r.tasks.get(&sv.cluster))
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|t| {
                !t.is_stopped() && t.desired_status == "RUNNING" && t.started_by == l.started_by
            })
        {
            if let Some(p) = &t.capacity_provider_name {
                *existing.entry(p.clone()).or_default() += 1;
            }
        }
        let total = existing.values().sum::<usize>() + count;
        fargate::split(&items, total, &existing)
            .into_iter()
            .map(|(p, n)| (fargate::provider_capacity(&p), n))
            .collect()
    };
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    for (cap, n) in &groups {
        let (placed, failed) = launch_group(
            c,
            tx.state,
            &l,
            cap,
            *n,
            LaunchRules {
                strategy: strategy.clone(),
                constraints: constraints.clone(),
                placement: false,
                platform_version: sv.platform_version.as_deref(),
                instance,
                seed: rand::random(),
            },
        )?;
        tasks.extend(placed.unwrap_or_default());
        failures.extend(failed);
    }
    commit_tasks(tx, &l, &tasks);
    Ok((tasks, failures))
}

/// Asks a task to stop (desired STOPPED) with `reason` and `code`; a task no agent has yet
/// stops at once. Returns whether anything changed.
pub(crate) fn request_stop(t: &mut Task, reason: &str, code: &str) -> bool {
    if t.desired_status == "STOPPED" {
        return false;
    }
    t.desired_status = "STOPPED".into();
    t.stopped_reason = Some(reason.to_string());
    t.stop_code = Some(code.to_string());
    if t.last_status == "PROVISIONING" && t.container_instance_arn.is_none() {
        let t_now = now();
        t.last_status = "STOPPED".into();
        t.stopping_at = Some(t_now);
        t.stopped_at = Some(t_now);
    }
    true
}
