//! Services: CreateService, UpdateService, DeleteService, DescribeServices, ListServices.
//! These calls only record what the user wants (a service and its deployments); the service
//! controller (`crate::services::controller`) starts, replaces and stops the tasks.

use serde::Deserialize;
use serde_json::{json, Value};

use super::fargate::{self, Capacity, Choice};
use super::tasks::placement_rules;
use super::{
    active_cluster, arn_or_name, client_error, cluster_name, includes, invalid_param, page_params,
    paginate, parse, parse_tags, with_token, Ctx,
};
use std::collections::HashMap;

use crate::control::{now, State};
use crate::model::{CircuitBreaker, Deployment, Service, ServiceLoadBalancer, TaskDefRecord};
use crate::services::TargetGroupInfo;
use crate::store::Durability;
use crate::taskdef::model::{NetworkMode, Tag as WireTag};
use berth_aws::AwsError;

fn service_not_found() -> AwsError {
    AwsError::client("ServiceNotFoundException", "Service not found.")
}

fn service_not_active() -> AwsError {
    AwsError::client("ServiceNotActiveException", "Service was not ACTIVE.")
}

fn valid_service_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A new deployment id: `ecs-svc/` and 19 digits.
pub(crate) fn new_deployment_id() -> String {
    let n: u64 = rand::random::<u64>() % 9_000_000_000_000_000_000 + 1_000_000_000_000_000_000;
    format!("ecs-svc/{n}")
}

pub(crate) fn new_deployment(td: &str, desired: u32, network: Option<Value>) -> Deployment {
    let t = now();
    Deployment {
        id: new_deployment_id(),
        status: "PRIMARY".into(),
        task_definition: td.to_string(),
        desired_count: desired,
        pending_count: 0,
        running_count: 0,
        failed_tasks: 0,
        created_at: t,
        updated_at: t,
        rollout_state: "IN_PROGRESS".into(),
        rollout_state_reason: Some("ECS deployment in progress.".into()),
        network_configuration: network,
    }
}

/// A service of `cluster` by name or ARN (any status).
pub(crate) fn find_service<'a>(
    s: &'a State,
    region: &str,
    cluster: &str,
    reference: &str,
) -> Option<&'a Service> {
    s.region(region)?
        .services
        .get(cluster)?
        .get(arn_or_name(reference))
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireCircuitBreaker {
    enable: bool,
    rollback: bool,
    reset_on_healthy_task: Option<bool>,
    threshold_configuration: Option<Value>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireDeploymentConfiguration {
    deployment_circuit_breaker: Option<WireCircuitBreaker>,
    maximum_percent: Option<i64>,
    minimum_healthy_percent: Option<i64>,
    alarms: Option<Value>,
    strategy: Option<String>,
    bake_time_in_minutes: Option<i64>,
    lifecycle_hooks: Option<Vec<Value>>,
    linear_configuration: Option<Value>,
    canary_configuration: Option<Value>,
    early_success_criteria: Option<Value>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireLoadBalancer {
    target_group_arn: Option<String>,
    load_balancer_name: Option<String>,
    container_name: Option<String>,
    container_port: Option<i64>,
    advanced_configuration: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateInput {
    cluster: Option<String>,
    service_name: String,
    task_definition: Option<String>,
    availability_zone_rebalancing: Option<String>,
    #[serde(default)]
    load_balancers: Vec<WireLoadBalancer>,
    #[serde(default)]
    service_registries: Vec<Value>,
    desired_count: Option<i64>,
    client_token: Option<String>,
    launch_type: Option<String>,
    #[serde(default)]
    capacity_provider_strategy: Vec<Value>,
    platform_version: Option<String>,
    role: Option<String>,
    deployment_configuration: Option<WireDeploymentConfiguration>,
    #[serde(default)]
    placement_constraints: Vec<Value>,
    #[serde(default)]
    placement_strategy: Vec<Value>,
    network_configuration: Option<Value>,
    health_check_grace_period_seconds: Option<i64>,
    scheduling_strategy: Option<String>,
    deployment_controller: Option<Value>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: Option<bool>,
    propagate_tags: Option<String>,
    enable_execute_command: Option<bool>,
    service_connect_configuration: Option<Value>,
    #[serde(default)]
    volume_configurations: Vec<Value>,
    #[serde(default)]
    vpc_lattice_configurations: Vec<Value>,
    #[serde(default)]
    gateway_connectors: Vec<Value>,
    monitoring: Option<Value>,
}

fn check_unsupported(
    registries: &[Value],
    service_connect: &Option<Value>,
    volumes: &[Value],
    lattice: &[Value],
    gateways: &[Value],
) -> Result<(), AwsError> {
    if !registries.is_empty() {
        return Err(invalid_param(
            "serviceRegistries (Cloud Map) are not available in Berth",
        ));
    }
    if service_connect
        .as_ref()
        .is_some_and(|v| v["enabled"].as_bool() == Some(true))
    {
        return Err(invalid_param("Service Connect is not available in Berth"));
    }
    if !volumes.is_empty() {
        return Err(invalid_param(
            "volumeConfigurations (EBS volumes) are not available in Berth",
        ));
    }
    if !lattice.is_empty() || !gateways.is_empty() {
        return Err(invalid_param(
            "VPC Lattice and gateway connectors are not available in Berth",
        ));
    }
    Ok(())
}

/// Validated `deploymentConfiguration`: (maximumPercent, minimumHealthyPercent, breaker).
fn deployment_configuration(
    dc: Option<&WireDeploymentConfiguration>,
    daemon: bool,
    current: Option<(u32, u32, Option<CircuitBreaker>)>,
) -> Result<(u32, u32, Option<CircuitBreaker>), AwsError> {
    let (def_max, def_min, def_cb) = current.unwrap_or(if daemon {
        (100, 0, None)
    } else {
        (200, 100, None)
    });
    let Some(dc) = dc else {
        return Ok((def_max, def_min, def_cb));
    };
    let _ = (&dc.alarms, &dc.lifecycle_hooks, &dc.early_success_criteria);
    if dc.strategy.as_deref().is_some_and(|s| s != "ROLLING") {
        return Err(invalid_param(
            "Only the ROLLING deployment strategy is available in Berth",
        ));
    }
    if dc.bake_time_in_minutes.is_some_and(|b| b != 0)
        || dc.linear_configuration.is_some()
        || dc.canary_configuration.is_some()
    {
        return Err(invalid_param(
            "bake time, linear and canary deployments are not available in Berth",
        ));
    }
    let max = dc.maximum_percent.unwrap_or(def_max as i64);
    let min = dc.minimum_healthy_percent.unwrap_or(def_min as i64);
    if !(0..=100).contains(&min) {
        return Err(invalid_param(
            "minimumHealthyPercent must be between 0 and 100",
        ));
    }
    if daemon && max != 100 {
        return Err(invalid_param(
            "The maximumPercent value for a service using the DAEMON scheduling strategy must be 100",
        ));
    }
    if !(100..=200).contains(&max) {
        return Err(invalid_param("maximumPercent must be between 100 and 200"));
    }
    let cb = match &dc.deployment_circuit_breaker {
        Some(w) => {
            let _ = (&w.reset_on_healthy_task, &w.threshold_configuration);
            Some(CircuitBreaker {
                enable: w.enable,
                rollback: w.rollback,
            })
        }
        None => def_cb,
    };
    Ok((max as u32, min as u32, cb))
}

/// What the load balancer says of each target group named (read before the state lock is
/// taken: the load balancer reads the control plane's state itself).
type TargetGroups = HashMap<String, Option<TargetGroupInfo>>;

fn target_groups<'a>(c: &Ctx<'_>, arns: impl IntoIterator<Item = &'a str>) -> TargetGroups {
    arns.into_iter()
        .map(|a| {
            (
                a.to_string(),
                c.lb.and_then(|lb| lb.target_group(c.region, a)),
            )
        })
        .collect()
}

/// Checks `loadBalancers` against the task definition and the load balancer.
fn check_load_balancers(
    c: &Ctx<'_>,
    tgs: &TargetGroups,
    td: &TaskDefRecord,
    lbs: &[WireLoadBalancer],
) -> Result<Vec<ServiceLoadBalancer>, AwsError> {
    if lbs.len() > 5 {
        return Err(invalid_param(
            "A service can have at most 5 load balancers (target groups)",
        ));
    }
    let mut out = Vec::new();
    for l in lbs {
        let _ = &l.advanced_configuration;
        if l.load_balancer_name.is_some() && l.target_group_arn.is_none() {
            return Err(invalid_param(
                "Classic Load Balancers are not available in Berth: name a targetGroupArn",
            ));
        }
        let tg = l
            .target_group_arn
            .clone()
            .ok_or_else(|| invalid_param("loadBalancers: targetGroupArn is required"))?;
        let name = l
            .container_name
            .clone()
            .ok_or_else(|| invalid_param("loadBalancers: containerName is required"))?;
        let port = l
            .container_port
            .ok_or_else(|| invalid_param("loadBalancers: containerPort is required"))?;
        let Some(cd) = td.spec.container(&name) else {
            return Err(invalid_param(format!(
                "The container {name} does not exist in the task definition."
            )));
        };
        let mapped = cd
            .port_mappings
            .iter()
            .flatten()
            .any(|m| m.container_port.map(i64::from) == Some(port));
        if !mapped {
            return Err(invalid_param(format!(
                "The container {name} did not have a container port {port} defined."
            )));
        }
        if c.lb.is_none() {
            return Err(invalid_param(
                "this control plane has no load balancer: loadBalancers cannot be used",
            ));
        }
        let Some(info) = tgs.get(&tg).cloned().flatten() else {
            return Err(invalid_param(format!(
                "Unable to assume role and validate the specified targetGroupArn. Please verify that the ECS service role being passed has the proper permissions. (target group {tg} not found)"
            )));
        };
        if !info.has_load_balancer {
            return Err(invalid_param(format!(
                "The target group with targetGroupArn {tg} does not have an associated load balancer."
            )));
        }
        let awsvpc = td.spec.network_mode() == NetworkMode::Awsvpc;
        if info.target_type == "ip" && !awsvpc {
            return Err(invalid_param(format!(
                "The provided target group {tg} has target type ip, which is incompatible with the {} network mode specified in the task definition.",
                network_mode_name(td.spec.network_mode())
            )));
        }
        if info.target_type == "instance" && awsvpc {
            return Err(invalid_param(format!(
                "The provided target group {tg} has target type instance, which is incompatible with the awsvpc network mode specified in the task definition."
            )));
        }
        if info.target_type != "ip" && info.target_type != "instance" {
            return Err(invalid_param(format!(
                "target group {tg} has target type {}, which services cannot use",
                info.target_type
            )));
        }
        if out
            .iter()
            .any(|x: &ServiceLoadBalancer| x.target_group_arn == tg)
        {
            return Err(invalid_param(format!(
                "target group {tg} is named twice in loadBalancers"
            )));
        }
        out.push(ServiceLoadBalancer {
            target_group_arn: tg,
            container_name: name,
            container_port: u16::try_from(port)
                .map_err(|_| invalid_param(format!("Invalid containerPort {port}")))?,
        });
    }
    Ok(out)
}

fn network_mode_name(m: NetworkMode) -> &'static str {
    match m {
        NetworkMode::Bridge => "bridge",
        NetworkMode::Host => "host",
        NetworkMode::Awsvpc => "awsvpc",
        NetworkMode::None => "none",
    }
}

fn check_network(td: &TaskDefRecord, nc: &Option<Value>) -> Result<(), AwsError> {
    let awsvpc = td.spec.network_mode() == NetworkMode::Awsvpc;
    match (nc, awsvpc) {
        (None, true) => Err(invalid_param(
            "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
        )),
        (Some(_), false) => Err(invalid_param(
            "Network Configuration is not valid for the given networkMode of this task definition.",
        )),
        (Some(nc), true) => {
            let n = nc["awsvpcConfiguration"]["subnets"]
                .as_array()
                .map(|a| a.len())
                .unwrap_or(0);
            if n == 0 || n > 16 {
                return Err(invalid_param(
                    "subnets can not be empty (awsvpcConfiguration.subnets: 1 to 16 subnets)",
                ));
            }
            Ok(())
        }
        (None, false) => Ok(()),
    }
}

/// The capacity a service's tasks run on: `(launchType, strategy items, fargate)`.
struct ServiceCapacity {
    launch_type: String,
    strategy: Vec<Value>,
    fargate: bool,
}

fn service_capacity(
    launch_type: Option<&str>,
    strategy: &[Value],
    cluster: &crate::model::Cluster,
) -> Result<ServiceCapacity, AwsError> {
    Ok(match fargate::choose(launch_type, strategy, cluster)? {
        Choice::One(cap) => ServiceCapacity {
            launch_type: cap.launch_type().into(),
            strategy: Vec::new(),
            fargate: matches!(cap, Capacity::Fargate { .. }),
        },
        Choice::Strategy(items) => ServiceCapacity {
            launch_type: String::new(),
            fargate: items
                .iter()
                .any(|x| fargate::is_fargate_provider(&x.provider)),
            strategy: items
                .iter()
                .map(
                    |x| json!({"capacityProvider": x.provider, "weight": x.weight, "base": x.base}),
                )
                .collect(),
        },
    })
}

/// Checks the task definition a service runs, for its capacity (`fargate`: FARGATE's rules,
/// with `placement` rules refused and `platform_version` checked). Returns the definition and
/// the platform version of a FARGATE service.
fn check_task_definition(
    s: &State,
    c: &Ctx<'_>,
    reference: &str,
    fargate: bool,
    placement: bool,
    platform_version: Option<&str>,
) -> Result<(TaskDefRecord, Option<String>), AwsError> {
    let td = super::taskdefs::resolve(s, c.region, reference)?;
    if td.status != "ACTIVE" {
        return Err(client_error(format!(
            "TaskDefinition is inactive ({})",
            td.arn
        )));
    }
    if fargate {
        let cpu = td.spec.task_cpu_units().map(|v| v.to_string());
        let mem = td.spec.task_memory_mib().map(|v| v.to_string());
        let pv = fargate::check_launch(
            &td.spec,
            cpu.as_deref(),
            mem.as_deref(),
            placement,
            platform_version,
        )?;
        return Ok((td, Some(pv)));
    }
    if !td.spec.supports(crate::taskdef::model::Compatibility::Ec2) {
        return Err(client_error(
            "Task definition does not support launch_type EC2.",
        ));
    }
    Ok((td, None))
}

fn check_grace(g: Option<i64>) -> Result<Option<u32>, AwsError> {
    match g {
        None => Ok(None),
        Some(g) if (0..=2_147_483_647).contains(&g) => Ok(Some(g as u32)),
        Some(_) => Err(invalid_param(
            "healthCheckGracePeriodSeconds must be between 0 and 2147483647",
        )),
    }
}

fn check_propagate(p: &Option<String>) -> Result<(), AwsError> {
    match p.as_deref() {
        None | Some("TASK_DEFINITION") | Some("SERVICE") | Some("NONE") => Ok(()),
        Some(o) => Err(invalid_param(format!("Invalid propagateTags: {o}"))),
    }
}

pub(super) fn create(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: CreateInput = parse(input)?;
    let _ = (
        &i.client_token,
        &i.availability_zone_rebalancing,
        &i.monitoring,
    );
    if !valid_service_name(&i.service_name) {
        return Err(invalid_param(
            "serviceName must be 1 to 255 letters, numbers, hyphens and underscores",
        ));
    }
    check_unsupported(
        &i.service_registries,
        &i.service_connect_configuration,
        &i.volume_configurations,
        &i.vpc_lattice_configurations,
        &i.gateway_connectors,
    )?;
    if let Some(dc) = &i.deployment_controller {
        if dc["type"].as_str().is_some_and(|t| t != "ECS") {
            return Err(invalid_param(
                "Only the ECS deployment controller is available in Berth",
            ));
        }
    }
    let daemon = match i.scheduling_strategy.as_deref() {
        None | Some("REPLICA") => false,
        Some("DAEMON") => true,
        Some(o) => return Err(invalid_param(format!("Invalid schedulingStrategy: {o}"))),
    };
    let desired = match (daemon, i.desired_count) {
        (false, None) => {
            return Err(invalid_param(
                "desiredCount is required for the REPLICA scheduling strategy",
            ))
        }
        (false, Some(n)) if n < 0 => return Err(invalid_param("desiredCount must be at least 0")),
        (false, Some(n)) => n as u32,
        (true, Some(_)) => {
            return Err(invalid_param(
                "The daemon scheduling strategy does not support a desiredCount for services.",
            ))
        }
        (true, None) => 0,
    };
    if daemon && !i.placement_strategy.is_empty() {
        return Err(invalid_param(
            "Placement strategies are not supported with DAEMON scheduling strategy.",
        ));
    }
    placement_rules(&i.placement_strategy, &i.placement_constraints)?;
    let (max, min, cb) =
        deployment_configuration(i.deployment_configuration.as_ref(), daemon, None)?;
    let grace = check_grace(i.health_check_grace_period_seconds)?;
    check_propagate(&i.propagate_tags)?;
    let tags = parse_tags(&i.tags)?;
    let td_ref = i
        .task_definition
        .clone()
        .ok_or_else(|| invalid_param("TaskDefinition must be specified."))?;
    let cluster = cluster_name(i.cluster.as_deref());
    let tgs = target_groups(
        c,
        i.load_balancers
            .iter()
            .filter_map(|l| l.target_group_arn.as_deref()),
    );
    c.control.write(Durability::Immediate, |tx| {
        let cl = active_cluster(tx.state, c.region, &cluster)?;
        let cap = service_capacity(i.launch_type.as_deref(), &i.capacity_provider_strategy, &cl)?;
        if cap.fargate && daemon {
            return Err(invalid_param(
                "The daemon scheduling strategy is not supported with the FARGATE launch type.",
            ));
        }
        let placement = !i.placement_strategy.is_empty() || !i.placement_constraints.is_empty();
        let (td, platform_version) = check_task_definition(
            tx.state,
            c,
            &td_ref,
            cap.fargate,
            placement,
            i.platform_version.as_deref(),
        )?;
        check_network(&td, &i.network_configuration)?;
        let lbs = check_load_balancers(c, &tgs, &td, &i.load_balancers)?;
        if let Some(old) = find_service(tx.state, c.region, &cluster, &i.service_name) {
            if old.status != "INACTIVE" {
                return Err(invalid_param("Creation of service was not idempotent."));
            }
        }
        let arn = c.arn(&format!("service/{cluster}/{}", i.service_name));
        let mut sv = Service {
            name: i.service_name.clone(),
            arn: arn.clone(),
            region: c.region.to_string(),
            cluster: cluster.clone(),
            cluster_arn: cl.arn.clone(),
            status: "ACTIVE".into(),
            task_definition: td.arn.clone(),
            desired_count: desired,
            launch_type: cap.launch_type,
            capacity_provider_strategy: cap.strategy,
            platform_version,
            scheduling_strategy: if daemon { "DAEMON" } else { "REPLICA" }.into(),
            maximum_percent: max,
            minimum_healthy_percent: min,
            circuit_breaker: cb,
            load_balancers: lbs,
            placement_constraints: i.placement_constraints.clone(),
            placement_strategy: i.placement_strategy.clone(),
            network_configuration: i.network_configuration.clone(),
            health_check_grace_period_seconds: grace,
            propagate_tags: i.propagate_tags.clone(),
            enable_ecs_managed_tags: i.enable_ecs_managed_tags.unwrap_or(false),
            enable_execute_command: i.enable_execute_command.unwrap_or(false),
            role_arn: i.role.clone(),
            created_at: now(),
            created_by: Some(format!("arn:aws:iam::{}:root", c.account)),
            deployments: vec![new_deployment(
                &td.arn,
                desired,
                i.network_configuration.clone(),
            )],
            events: Vec::new(),
            inactive_at: None,
        };
        if let Some(d) = sv.deployments.first_mut() {
            if desired == 0 && !daemon {
                d.rollout_state = "COMPLETED".into();
                d.rollout_state_reason = Some(format!("ECS deployment {} completed.", d.id));
            }
        }
        tx.set_tags(&arn, tags.clone());
        let out = sv.output(Some(&tags));
        tx.put_service(sv);
        Ok(json!({ "service": out }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateInput {
    cluster: Option<String>,
    service: String,
    desired_count: Option<i64>,
    task_definition: Option<String>,
    #[serde(default)]
    capacity_provider_strategy: Vec<Value>,
    deployment_configuration: Option<WireDeploymentConfiguration>,
    availability_zone_rebalancing: Option<String>,
    network_configuration: Option<Value>,
    placement_constraints: Option<Vec<Value>>,
    placement_strategy: Option<Vec<Value>>,
    platform_version: Option<String>,
    force_new_deployment: Option<bool>,
    health_check_grace_period_seconds: Option<i64>,
    deployment_controller: Option<Value>,
    enable_execute_command: Option<bool>,
    #[serde(rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: Option<bool>,
    load_balancers: Option<Vec<WireLoadBalancer>>,
    propagate_tags: Option<String>,
    service_registries: Option<Vec<Value>>,
    service_connect_configuration: Option<Value>,
    volume_configurations: Option<Vec<Value>>,
    vpc_lattice_configurations: Option<Vec<Value>>,
    gateway_connectors: Option<Vec<Value>>,
    monitoring: Option<Value>,
}

pub(super) fn update(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: UpdateInput = parse(input)?;
    let _ = (
        &i.availability_zone_rebalancing,
        &i.monitoring,
        &i.deployment_controller,
    );
    check_unsupported(
        i.service_registries.as_deref().unwrap_or_default(),
        &i.service_connect_configuration,
        i.volume_configurations.as_deref().unwrap_or_default(),
        i.vpc_lattice_configurations.as_deref().unwrap_or_default(),
        i.gateway_connectors.as_deref().unwrap_or_default(),
    )?;
    if i.desired_count.is_some_and(|n| n < 0) {
        return Err(invalid_param("desiredCount must be at least 0"));
    }
    let grace = check_grace(i.health_check_grace_period_seconds)?;
    check_propagate(&i.propagate_tags)?;
    let cluster = cluster_name(i.cluster.as_deref());
    let current: Vec<String> = c.control.read(|s| {
        find_service(s, c.region, &cluster, &i.service)
            .map(|sv| {
                sv.load_balancers
                    .iter()
                    .map(|l| l.target_group_arn.clone())
                    .collect()
            })
            .unwrap_or_default()
    });
    let named: Vec<String> = i
        .load_balancers
        .iter()
        .flatten()
        .filter_map(|l| l.target_group_arn.clone())
        .collect();
    let tgs = target_groups(c, current.iter().chain(&named).map(String::as_str));
    c.control.write(Durability::Immediate, |tx| {
        active_cluster(tx.state, c.region, &cluster)?;
        let mut sv = find_service(tx.state, c.region, &cluster, &i.service)
            .cloned()
            .ok_or_else(service_not_found)?;
        if sv.status != "ACTIVE" {
            return Err(service_not_active());
        }
        let daemon = sv.scheduling_strategy == "DAEMON";
        if daemon && i.desired_count.is_some() {
            return Err(invalid_param(
                "The daemon scheduling strategy does not support a desiredCount for services.",
            ));
        }
        let strategy = i
            .placement_strategy
            .clone()
            .unwrap_or_else(|| sv.placement_strategy.clone());
        let constraints = i
            .placement_constraints
            .clone()
            .unwrap_or_else(|| sv.placement_constraints.clone());
        if daemon && !strategy.is_empty() {
            return Err(invalid_param(
                "Placement strategies are not supported with DAEMON scheduling strategy.",
            ));
        }
        placement_rules(&strategy, &constraints)?;
        let (max, min, cb) = deployment_configuration(
            i.deployment_configuration.as_ref(),
            daemon,
            Some((
                sv.maximum_percent,
                sv.minimum_healthy_percent,
                sv.circuit_breaker,
            )),
        )?;
        let cl = active_cluster(tx.state, c.region, &cluster)?;
        let cap = if i.capacity_provider_strategy.is_empty() {
            ServiceCapacity {
                launch_type: sv.launch_type.clone(),
                strategy: sv.capacity_provider_strategy.clone(),
                fargate: sv.is_fargate(),
            }
        } else {
            service_capacity(None, &i.capacity_provider_strategy, &cl)?
        };
        let placement = !strategy.is_empty() || !constraints.is_empty();
        let td_ref = i.task_definition.as_deref().unwrap_or(&sv.task_definition);
        let (td, platform_version) = check_task_definition(
            tx.state,
            c,
            td_ref,
            cap.fargate,
            placement,
            i.platform_version
                .as_deref()
                .or(sv.platform_version.as_deref()),
        )?;
        let network = i
            .network_configuration
            .clone()
            .or_else(|| sv.network_configuration.clone());
        check_network(&td, &network)?;
        let lbs = match &i.load_balancers {
            Some(l) => check_load_balancers(c, &tgs, &td, l)?,
            None => {
                // The current ones must still fit a new task definition.
                let wire: Vec<WireLoadBalancer> = sv
                    .load_balancers
                    .iter()
                    .map(|l| WireLoadBalancer {
                        target_group_arn: Some(l.target_group_arn.clone()),
                        load_balancer_name: None,
                        container_name: Some(l.container_name.clone()),
                        container_port: Some(i64::from(l.container_port)),
                        advanced_configuration: None,
                    })
                    .collect();
                if i.task_definition.is_some() {
                    check_load_balancers(c, &tgs, &td, &wire)?
                } else {
                    sv.load_balancers.clone()
                }
            }
        };
        let new_deployment_needed = i.force_new_deployment.unwrap_or(false)
            || td.arn != sv.task_definition
            || network != sv.network_configuration
            || lbs != sv.load_balancers
            || cap.strategy != sv.capacity_provider_strategy
            || platform_version != sv.platform_version;
        sv.launch_type = cap.launch_type;
        sv.capacity_provider_strategy = cap.strategy;
        sv.platform_version = platform_version;
        if let Some(n) = i.desired_count {
            sv.desired_count = n as u32;
        }
        sv.maximum_percent = max;
        sv.minimum_healthy_percent = min;
        sv.circuit_breaker = cb;
        sv.placement_strategy = strategy;
        sv.placement_constraints = constraints;
        if grace.is_some() {
            sv.health_check_grace_period_seconds = grace;
        }
        if i.propagate_tags.is_some() {
            sv.propagate_tags = i.propagate_tags.clone();
        }
        if let Some(v) = i.enable_execute_command {
            sv.enable_execute_command = v;
        }
        if let Some(v) = i.enable_ecs_managed_tags {
            sv.enable_ecs_managed_tags = v;
        }
        sv.load_balancers = lbs;
        sv.network_configuration = network.clone();
        if new_deployment_needed {
            for d in &mut sv.deployments {
                if d.status == "PRIMARY" {
                    d.status = "ACTIVE".into();
                    d.updated_at = now();
                }
            }
            sv.task_definition = td.arn.clone();
            sv.deployments
                .insert(0, new_deployment(&td.arn, sv.desired_count, network));
        } else if let Some(d) = sv.deployments.first_mut() {
            if d.desired_count != sv.desired_count {
                d.desired_count = sv.desired_count;
                d.updated_at = now();
            }
        }
        let tags = tx.state.tags.get(&sv.arn).cloned();
        let out = sv.output(tags.as_deref());
        tx.put_service(sv);
        Ok(json!({ "service": out }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteInput {
    cluster: Option<String>,
    service: String,
    force: Option<bool>,
}

pub(super) fn delete(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DeleteInput = parse(input)?;
    let cluster = cluster_name(i.cluster.as_deref());
    c.control.write(Durability::Immediate, |tx| {
        active_cluster(tx.state, c.region, &cluster)?;
        let mut sv = find_service(tx.state, c.region, &cluster, &i.service)
            .cloned()
            .ok_or_else(service_not_found)?;
        if sv.status == "INACTIVE" {
            return Err(service_not_found());
        }
        if sv.status == "ACTIVE" {
            let force = i.force.unwrap_or(false);
            if sv.scheduling_strategy == "REPLICA" && sv.desired_count > 0 && !force {
                return Err(invalid_param(
                    "The service cannot be stopped while it is scaled above 0.",
                ));
            }
            sv.status = "DRAINING".into();
            sv.desired_count = 0;
            for d in &mut sv.deployments {
                d.desired_count = 0;
            }
            sv.event(format!("(service {}) was deleted.", sv.name));
        }
        let tags = tx.state.tags.get(&sv.arn).cloned();
        let out = sv.output(tags.as_deref());
        tx.put_service(sv);
        Ok(json!({ "service": out }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DescribeInput {
    cluster: Option<String>,
    services: Vec<String>,
    include: Option<Vec<String>>,
}

pub(super) fn describe(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DescribeInput = parse(input)?;
    if i.services.is_empty() || i.services.len() > 10 {
        return Err(invalid_param("services must name 1 to 10 services"));
    }
    let cluster = cluster_name(i.cluster.as_deref());
    let with_tags = includes(&i.include, "TAGS");
    c.control.read(|s| {
        active_cluster(s, c.region, &cluster)?;
        let mut services = Vec::new();
        let mut failures = Vec::new();
        for r in &i.services {
            match find_service(s, c.region, &cluster, r) {
                Some(sv) => {
                    let tags = with_tags.then(|| s.tags.get(&sv.arn).cloned().unwrap_or_default());
                    services.push(sv.output(tags.as_deref()));
                }
                None => failures.push(json!({
                    "arn": if r.starts_with("arn:") { r.clone() } else { c.arn(&format!("service/{cluster}/{r}")) },
                    "reason": "MISSING"
                })),
            }
        }
        Ok(json!({"services": services, "failures": failures}))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListInput {
    cluster: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    launch_type: Option<String>,
    scheduling_strategy: Option<String>,
    resource_management_type: Option<String>,
}

pub(super) fn list(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: ListInput = parse(input)?;
    let _ = &i.resource_management_type;
    let (n, after) = page_params(i.max_results, i.next_token.as_deref(), 100)?;
    let cluster = cluster_name(i.cluster.as_deref());
    let items = c
        .control
        .read(|s| -> Result<Vec<(String, String)>, AwsError> {
            active_cluster(s, c.region, &cluster)?;
            Ok(s.region(c.region)
                .and_then(|r| r.services.get(&cluster))
                .map(|m| {
                    m.values()
                        .filter(|sv| sv.status != "INACTIVE")
                        .filter(|sv| {
                            i.launch_type
                                .as_deref()
                                .map(|l| sv.launch_type == l)
                                .unwrap_or(true)
                        })
                        .filter(|sv| {
                            i.scheduling_strategy
                                .as_deref()
                                .map(|l| sv.scheduling_strategy == l)
                                .unwrap_or(true)
                        })
                        .map(|sv| (sv.name.clone(), sv.arn.clone()))
                        .collect()
                })
                .unwrap_or_default())
        })?;
    let (arns, token) = paginate(items, n, after.as_deref());
    Ok(with_token(json!({ "serviceArns": arns }), token))
}
