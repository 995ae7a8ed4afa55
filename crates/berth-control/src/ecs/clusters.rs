//! Clusters and capacity providers.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    active_cluster, cluster_name, includes, invalid_param, page_params, paginate, parse,
    parse_tags, with_token, Ctx,
};
use crate::control::{now, State};
use crate::model::{tags_json, CapacityProvider, Cluster};
use crate::store::Durability;
use crate::taskdef::model::Tag as WireTag;
use berth_aws::AwsError;

/// Capacity providers every cluster may use without creating them.
pub const BUILTIN_PROVIDERS: [&str; 2] = ["FARGATE", "FARGATE_SPOT"];

fn valid_cluster_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateInput {
    cluster_name: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(default)]
    settings: Vec<Value>,
    configuration: Option<Value>,
    #[serde(default)]
    capacity_providers: Vec<String>,
    #[serde(default)]
    default_capacity_provider_strategy: Vec<Value>,
    service_connect_defaults: Option<Value>,
}

fn check_settings(settings: &[Value]) -> Result<(), AwsError> {
    for s in settings {
        let name = s["name"].as_str().unwrap_or_default();
        if name != "containerInsights" {
            return Err(invalid_param(format!(
                "Unsupported cluster setting name '{name}'; valid: containerInsights"
            )));
        }
        let v = s["value"].as_str().unwrap_or_default();
        if !["enabled", "disabled", "enhanced"].contains(&v) {
            return Err(invalid_param(format!(
                "Invalid value '{v}' for containerInsights; valid: enabled, disabled, enhanced"
            )));
        }
    }
    Ok(())
}

/// Checks providers and a default strategy against what exists in `region`.
fn check_providers(
    s: &State,
    region: &str,
    providers: &[String],
    strategy: &[Value],
) -> Result<(), AwsError> {
    for p in providers {
        let known = BUILTIN_PROVIDERS.contains(&p.as_str())
            || s.region(region)
                .and_then(|r| r.capacity_providers.get(super::arn_or_name(p)))
                .map(|c| c.status == "ACTIVE")
                .unwrap_or(false);
        if !known {
            return Err(invalid_param(format!(
                "The specified capacity provider '{p}' does not exist."
            )));
        }
    }
    let mut base_seen = false;
    for item in strategy {
        let p = item["capacityProvider"].as_str().unwrap_or_default();
        if !providers.iter().any(|x| x == p) {
            return Err(invalid_param(format!(
                "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again. ({p})"
            )));
        }
        let weight = item["weight"].as_i64().unwrap_or(0);
        let base = item["base"].as_i64().unwrap_or(0);
        if !(0..=1000).contains(&weight) || !(0..=100000).contains(&base) {
            return Err(invalid_param(
                "capacity provider strategy: weight must be 0-1000 and base 0-100000",
            ));
        }
        if base > 0 {
            if base_seen {
                return Err(invalid_param(
                    "Only one capacity provider in a strategy can have a base defined.",
                ));
            }
            base_seen = true;
        }
    }
    Ok(())
}

pub(super) fn create(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: CreateInput = parse(input)?;
    let name = i.cluster_name.unwrap_or_else(|| "default".into());
    if !valid_cluster_name(&name) {
        return Err(invalid_param(
            "Cluster name must be 1-255 characters: letters, numbers, hyphens and underscores",
        ));
    }
    check_settings(&i.settings)?;
    let tags = parse_tags(&i.tags)?;
    c.control.write(Durability::Immediate, |tx| {
        check_providers(
            tx.state,
            c.region,
            &i.capacity_providers,
            &i.default_capacity_provider_strategy,
        )?;
        let existing = tx
            .state
            .region(c.region)
            .and_then(|r| r.clusters.get(&name))
            .filter(|x| x.status == "ACTIVE")
            .cloned();
        // CreateCluster of an existing cluster returns it (ECS is idempotent here).
        let cluster = match existing {
            Some(x) => x,
            None => {
                let settings = if i.settings.is_empty() {
                    vec![json!({"name": "containerInsights", "value": "disabled"})]
                } else {
                    i.settings.clone()
                };
                let cl = Cluster {
                    arn: c.arn(&format!("cluster/{name}")),
                    name: name.clone(),
                    status: "ACTIVE".into(),
                    created_at: now(),
                    settings,
                    configuration: i.configuration.clone(),
                    capacity_providers: i.capacity_providers.clone(),
                    default_capacity_provider_strategy: i
                        .default_capacity_provider_strategy
                        .clone(),
                    service_connect_defaults: i.service_connect_defaults.clone(),
                };
                tx.put_cluster(c.region, cl.clone());
                if !tags.is_empty() {
                    tx.set_tags(&cl.arn, tags.clone());
                }
                cl
            }
        };
        Ok(json!({ "cluster": cluster_output(tx.state, c.region, &cluster, true) }))
    })
}

/// The ECS `Cluster` shape with its counts.
pub(crate) fn cluster_output(s: &State, region: &str, cl: &Cluster, with_tags: bool) -> Value {
    let r = s.region(region);
    let instances = r
        .and_then(|r| r.instances.get(&cl.name))
        .map(|m| m.values().filter(|i| i.status != "INACTIVE").count())
        .unwrap_or(0);
    let (mut running, mut pending) = (0usize, 0usize);
    let (mut ec2_running, mut ec2_pending, mut fg_running, mut fg_pending) = (0, 0, 0, 0);
    if let Some(tasks) = r.and_then(|r| r.tasks.get(&cl.name)) {
        for t in tasks.values() {
            let fargate = t.launch_type == "FARGATE";
            if t.last_status == "RUNNING" {
                running += 1;
                if fargate {
                    fg_running += 1
                } else {
                    ec2_running += 1
                }
            } else if t.last_status != "STOPPED" && t.desired_status == "RUNNING" {
                pending += 1;
                if fargate {
                    fg_pending += 1
                } else {
                    ec2_pending += 1
                }
            }
        }
    }
    // (active, draining) services by EC2 / Fargate.
    let mut services = [[0usize; 2]; 2];
    for sv in r
        .and_then(|r| r.services.get(&cl.name))
        .into_iter()
        .flat_map(|m| m.values())
    {
        let fargate = usize::from(sv.is_fargate());
        match sv.status.as_str() {
            "ACTIVE" => services[fargate][0] += 1,
            "DRAINING" => services[fargate][1] += 1,
            _ => {}
        }
    }
    let mut v = json!({
        "clusterArn": cl.arn,
        "clusterName": cl.name,
        "status": cl.status,
        "registeredContainerInstancesCount": instances,
        "runningTasksCount": running,
        "pendingTasksCount": pending,
        "activeServicesCount": services[0][0] + services[1][0],
        "statistics": [
            {"name": "runningEC2TasksCount", "value": ec2_running.to_string()},
            {"name": "runningFargateTasksCount", "value": fg_running.to_string()},
            {"name": "pendingEC2TasksCount", "value": ec2_pending.to_string()},
            {"name": "pendingFargateTasksCount", "value": fg_pending.to_string()},
            {"name": "activeEC2ServiceCount", "value": services[0][0].to_string()},
            {"name": "activeFargateServiceCount", "value": services[1][0].to_string()},
            {"name": "drainingEC2ServiceCount", "value": services[0][1].to_string()},
            {"name": "drainingFargateServiceCount", "value": services[1][1].to_string()},
        ],
        "settings": cl.settings,
        "capacityProviders": cl.capacity_providers,
        "defaultCapacityProviderStrategy": cl.default_capacity_provider_strategy,
        "attachments": [],
    });
    if let Some(conf) = &cl.configuration {
        v["configuration"] = conf.clone();
    }
    if let Some(sc) = &cl.service_connect_defaults {
        v["serviceConnectDefaults"] = sc.clone();
    }
    if with_tags {
        v["tags"] = tags_json(s.tags.get(&cl.arn).map(|t| t.as_slice()).unwrap_or(&[]));
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DescribeInput {
    clusters: Option<Vec<String>>,
    include: Option<Vec<String>>,
}

pub(super) fn describe(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DescribeInput = parse(input)?;
    let names = i.clusters.clone().unwrap_or_else(|| vec!["default".into()]);
    if names.len() > 100 {
        return Err(invalid_param(
            "At most 100 clusters can be described at once",
        ));
    }
    let tags = includes(&i.include, "TAGS");
    Ok(c.control.read(|s| {
        let mut clusters = Vec::new();
        let mut failures = Vec::new();
        for n in &names {
            let name = cluster_name(Some(n));
            match s.region(c.region).and_then(|r| r.clusters.get(&name)) {
                Some(cl) => clusters.push(cluster_output(s, c.region, cl, tags)),
                None => failures.push(json!({
                    "arn": c.arn(&format!("cluster/{name}")),
                    "reason": "MISSING"
                })),
            }
        }
        json!({"clusters": clusters, "failures": failures})
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListInput {
    next_token: Option<String>,
    max_results: Option<i64>,
}

pub(super) fn list(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: ListInput = parse(input)?;
    let (n, after) = page_params(i.max_results, i.next_token.as_deref(), 100)?;
    let items: Vec<(String, String)> = c.control.read(|s| {
        s.region(c.region)
            .map(|r| {
                r.clusters
                    .values()
                    .filter(|x| x.status == "ACTIVE")
                    .map(|x| (x.name.clone(), x.arn.clone()))
                    .collect()
            })
            .unwrap_or_default()
    });
    let (arns, token) = paginate(items, n, after.as_deref());
    Ok(with_token(json!({ "clusterArns": arns }), token))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteInput {
    cluster: String,
}

pub(super) fn delete(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DeleteInput = parse(input)?;
    let name = cluster_name(Some(&i.cluster));
    c.control.write(Durability::Immediate, |tx| {
        let mut cl = active_cluster(tx.state, c.region, &name)?;
        let r = tx.state.region(c.region);
        let has_instances = r
            .and_then(|r| r.instances.get(&name))
            .map(|m| m.values().any(|x| x.status != "INACTIVE"))
            .unwrap_or(false);
        if has_instances {
            return Err(AwsError::client(
                "ClusterContainsContainerInstancesException",
                "The Cluster cannot be deleted while Container Instances are active or draining.",
            ));
        }
        let has_tasks = r
            .and_then(|r| r.tasks.get(&name))
            .map(|m| m.values().any(|t| !t.is_stopped()))
            .unwrap_or(false);
        if has_tasks {
            return Err(AwsError::client(
                "ClusterContainsTasksException",
                "The Cluster cannot be deleted while Tasks are active.",
            ));
        }
        cl.status = "INACTIVE".into();
        tx.put_cluster(c.region, cl.clone());
        Ok(json!({ "cluster": cluster_output(tx.state, c.region, &cl, false) }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateInput {
    cluster: String,
    settings: Option<Vec<Value>>,
    configuration: Option<Value>,
    service_connect_defaults: Option<Value>,
}

pub(super) fn update(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: UpdateInput = parse(input)?;
    if let Some(s) = &i.settings {
        check_settings(s)?;
    }
    let name = cluster_name(Some(&i.cluster));
    c.control.write(Durability::Immediate, |tx| {
        let mut cl = active_cluster(tx.state, c.region, &name)?;
        if let Some(s) = i.settings {
            cl.settings = s;
        }
        if let Some(conf) = i.configuration {
            cl.configuration = Some(conf);
        }
        if let Some(sc) = i.service_connect_defaults {
            cl.service_connect_defaults = Some(sc);
        }
        tx.put_cluster(c.region, cl.clone());
        Ok(json!({ "cluster": cluster_output(tx.state, c.region, &cl, false) }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateSettingsInput {
    cluster: String,
    settings: Vec<Value>,
}

pub(super) fn update_settings(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: UpdateSettingsInput = parse(input)?;
    check_settings(&i.settings)?;
    let name = cluster_name(Some(&i.cluster));
    c.control.write(Durability::Immediate, |tx| {
        let mut cl = active_cluster(tx.state, c.region, &name)?;
        cl.settings = i.settings;
        tx.put_cluster(c.region, cl.clone());
        Ok(json!({ "cluster": cluster_output(tx.state, c.region, &cl, false) }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PutProvidersInput {
    cluster: String,
    capacity_providers: Vec<String>,
    default_capacity_provider_strategy: Vec<Value>,
}

pub(super) fn put_capacity_providers(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: PutProvidersInput = parse(input)?;
    let name = cluster_name(Some(&i.cluster));
    c.control.write(Durability::Immediate, |tx| {
        let mut cl = active_cluster(tx.state, c.region, &name)?;
        check_providers(
            tx.state,
            c.region,
            &i.capacity_providers,
            &i.default_capacity_provider_strategy,
        )?;
        cl.capacity_providers = i
            .capacity_providers
            .iter()
            .map(|p| super::arn_or_name(p).to_string())
            .collect();
        cl.default_capacity_provider_strategy = i.default_capacity_provider_strategy;
        tx.put_cluster(c.region, cl.clone());
        Ok(json!({ "cluster": cluster_output(tx.state, c.region, &cl, false) }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateProviderInput {
    name: String,
    auto_scaling_group_provider: Option<Value>,
    cluster: Option<String>,
    managed_instances_provider: Option<Value>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

fn provider_output(s: &State, p: &CapacityProvider, with_tags: bool) -> Value {
    let mut v = json!({
        "capacityProviderArn": p.arn,
        "name": p.name,
        "status": p.status,
    });
    if let Some(a) = &p.auto_scaling_group_provider {
        v["autoScalingGroupProvider"] = a.clone();
    }
    if let Some(u) = &p.update_status {
        v["updateStatus"] = u.clone().into();
    }
    if with_tags {
        v["tags"] = tags_json(s.tags.get(&p.arn).map(|t| t.as_slice()).unwrap_or(&[]));
    }
    v
}

pub(super) fn create_capacity_provider(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: CreateProviderInput = parse(input)?;
    let lower = i.name.to_ascii_lowercase();
    if ["aws", "ecs", "fargate"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err(invalid_param(
            "The capacity provider name cannot be prefixed with \"aws\", \"ecs\", or \"fargate\".",
        ));
    }
    if !valid_cluster_name(&i.name) {
        return Err(invalid_param(
            "Capacity provider names must be 1-255 characters: letters, numbers, hyphens and underscores",
        ));
    }
    let asg = match (
        &i.auto_scaling_group_provider,
        &i.managed_instances_provider,
    ) {
        (Some(a), _) => {
            if a["autoScalingGroupArn"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                return Err(invalid_param(
                    "autoScalingGroupProvider.autoScalingGroupArn is required",
                ));
            }
            let mut a = a.clone();
            if a.get("managedTerminationProtection").is_none() {
                a["managedTerminationProtection"] = "DISABLED".into();
            }
            Some(a)
        }
        (None, Some(_)) => {
            return Err(invalid_param(
                "managedInstancesProvider is not supported by Berth; use autoScalingGroupProvider",
            ))
        }
        (None, None) => return Err(invalid_param("autoScalingGroupProvider must be specified")),
    };
    let _ = i.cluster;
    let tags = parse_tags(&i.tags)?;
    c.control.write(Durability::Immediate, |tx| {
        let exists = tx
            .state
            .region(c.region)
            .and_then(|r| r.capacity_providers.get(&i.name))
            .map(|p| p.status == "ACTIVE")
            .unwrap_or(false);
        if exists {
            return Err(client_exists(&i.name));
        }
        let p = CapacityProvider {
            arn: c.arn(&format!("capacity-provider/{}", i.name)),
            name: i.name.clone(),
            status: "ACTIVE".into(),
            auto_scaling_group_provider: asg,
            update_status: None,
        };
        tx.put_capacity_provider(c.region, p.clone());
        if !tags.is_empty() {
            tx.set_tags(&p.arn, tags);
        }
        Ok(json!({"capacityProvider": provider_output(tx.state, &p, true)}))
    })
}

fn client_exists(name: &str) -> AwsError {
    AwsError::client(
        "ClientException",
        format!("The specified capacity provider already exists: {name}"),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DescribeProvidersInput {
    capacity_providers: Option<Vec<String>>,
    include: Option<Vec<String>>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

fn builtin(c: &Ctx<'_>, name: &str) -> CapacityProvider {
    CapacityProvider {
        arn: c.arn(&format!("capacity-provider/{name}")),
        name: name.to_string(),
        status: "ACTIVE".into(),
        auto_scaling_group_provider: None,
        update_status: None,
    }
}

pub(super) fn describe_capacity_providers(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DescribeProvidersInput = parse(input)?;
    let (n, after) = page_params(i.max_results, i.next_token.as_deref(), 10)?;
    let tags = includes(&i.include, "TAGS");
    Ok(c.control.read(|s| {
        let mut all: Vec<CapacityProvider> =
            BUILTIN_PROVIDERS.iter().map(|b| builtin(c, b)).collect();
        if let Some(r) = s.region(c.region) {
            all.extend(r.capacity_providers.values().cloned());
        }
        match &i.capacity_providers {
            Some(wanted) => {
                let mut found = Vec::new();
                let mut failures = Vec::new();
                for w in wanted {
                    let name = super::arn_or_name(w);
                    match all.iter().find(|p| p.name == name) {
                        Some(p) => found.push(provider_output(s, p, tags)),
                        None => failures.push(json!({
                            "arn": c.arn(&format!("capacity-provider/{name}")),
                            "reason": "MISSING"
                        })),
                    }
                }
                json!({"capacityProviders": found, "failures": failures})
            }
            None => {
                let items = all
                    .iter()
                    .map(|p| (p.name.clone(), provider_output(s, p, tags)))
                    .collect();
                let (page, token) = paginate(items, n, after.as_deref());
                with_token(json!({"capacityProviders": page, "failures": []}), token)
            }
        }
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteProviderInput {
    capacity_provider: String,
}

pub(super) fn delete_capacity_provider(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DeleteProviderInput = parse(input)?;
    let name = super::arn_or_name(&i.capacity_provider).to_string();
    c.control.write(Durability::Immediate, |tx| {
        let mut p = tx
            .state
            .region(c.region)
            .and_then(|r| r.capacity_providers.get(&name))
            .filter(|p| p.status == "ACTIVE")
            .cloned()
            .ok_or_else(|| {
                invalid_param(format!("The specified capacity provider does not exist: {name}"))
            })?;
        let in_use = tx
            .state
            .region(c.region)
            .map(|r| {
                r.clusters.values().any(|cl| {
                    cl.status == "ACTIVE" && cl.capacity_providers.iter().any(|x| x == &name)
                })
            })
            .unwrap_or(false);
        if in_use {
            // ResourceInUseException is not an error of DeleteCapacityProvider in the model.
            return Err(AwsError::client(
                "ClientException",
                format!("The capacity provider {name} is associated with a cluster; remove it with PutClusterCapacityProviders first."),
            ));
        }
        p.status = "INACTIVE".into();
        p.update_status = Some("DELETE_COMPLETE".into());
        tx.put_capacity_provider(c.region, p.clone());
        Ok(json!({"capacityProvider": provider_output(tx.state, &p, false)}))
    })
}

/// Creates cluster `name` in `region` unless it exists (what the ECS agent does for the
/// `default` cluster on first start).
pub fn ensure_cluster(
    control: &crate::control::Control,
    region: &str,
    account: &str,
    name: &str,
) -> Result<(), AwsError> {
    let c = Ctx {
        control,
        region,
        account,
        lb: None,
    };
    create(&c, json!({ "clusterName": name })).map(|_| ())
}
