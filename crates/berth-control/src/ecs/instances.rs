//! Container instances (hosts running `berth agent`) and their attributes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    active_cluster, cluster_name, includes, invalid_param, new_id, page_params, paginate, parse,
    parse_tags, with_token, Ctx,
};
use crate::control::{now, Region, State};
use crate::model::{tags_json, Instance};
use crate::store::Durability;
use crate::taskdef::model::Tag as WireTag;
use berth_aws::AwsError;

/// What the tasks on an instance use.
#[derive(Debug, Default, Clone)]
pub(crate) struct Usage {
    pub cpu: i64,
    pub memory: i64,
    pub tcp: BTreeSet<u16>,
    pub udp: BTreeSet<u16>,
    pub running: usize,
    pub pending: usize,
}

/// Sums the reservations of the not-yet-STOPPED tasks on `instance`.
pub(crate) fn usage(r: &Region, instance: &Instance) -> Usage {
    let mut u = Usage::default();
    u.tcp.extend(instance.reserved_tcp_ports.iter().copied());
    u.udp.extend(instance.reserved_udp_ports.iter().copied());
    for t in super::fargate::hosted_tasks(r, instance) {
        if t.is_stopped() {
            continue;
        }
        u.cpu += t.reserved_cpu;
        u.memory += t.reserved_memory;
        u.tcp.extend(t.tcp_ports.iter().copied());
        u.udp.extend(t.udp_ports.iter().copied());
        if t.last_status == "RUNNING" {
            u.running += 1;
        } else {
            u.pending += 1;
        }
    }
    u
}

fn resources(cpu: i64, memory: i64, tcp: &BTreeSet<u16>, udp: &BTreeSet<u16>) -> Value {
    let ports = |s: &BTreeSet<u16>| s.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    json!([
        {"name": "CPU", "type": "INTEGER", "doubleValue": 0.0, "longValue": 0, "integerValue": cpu},
        {"name": "MEMORY", "type": "INTEGER", "doubleValue": 0.0, "longValue": 0, "integerValue": memory},
        {"name": "PORTS", "type": "STRINGSET", "doubleValue": 0.0, "longValue": 0, "integerValue": 0, "stringSetValue": ports(tcp)},
        {"name": "PORTS_UDP", "type": "STRINGSET", "doubleValue": 0.0, "longValue": 0, "integerValue": 0, "stringSetValue": ports(udp)},
    ])
}

/// The ECS `ContainerInstance` shape.
pub(crate) fn instance_output(s: &State, i: &Instance, connected: bool, with_tags: bool) -> Value {
    let u = s.region(&i.region).map(|r| usage(r, i)).unwrap_or_default();
    let reserved_tcp: BTreeSet<u16> = i.reserved_tcp_ports.iter().copied().collect();
    let reserved_udp: BTreeSet<u16> = i.reserved_udp_ports.iter().copied().collect();
    let attributes: Vec<Value> = i
        .attributes
        .iter()
        .map(|(k, v)| match v {
            Some(v) => json!({"name": k, "value": v}),
            None => json!({"name": k}),
        })
        .collect();
    let mut v = json!({
        "containerInstanceArn": i.arn,
        "ec2InstanceId": i.ec2_instance_id,
        "version": i.version,
        "remainingResources": resources(i.cpu - u.cpu, i.memory - u.memory, &u.tcp, &u.udp),
        "registeredResources": resources(i.cpu, i.memory, &reserved_tcp, &reserved_udp),
        "status": i.status,
        "agentConnected": connected && i.agent_connected,
        "runningTasksCount": u.running,
        "pendingTasksCount": u.pending,
        "attributes": attributes,
        "registeredAt": i.registered_at,
        "attachments": [],
    });
    if let Some(vi) = &i.version_info {
        v["versionInfo"] = vi.clone();
    }
    if let Some(r) = &i.status_reason {
        v["statusReason"] = r.clone().into();
    }
    if with_tags {
        v["tags"] = tags_json(s.tags.get(&i.arn).map(|t| t.as_slice()).unwrap_or(&[]));
    }
    v
}

/// Finds an instance of `cluster` by ARN or id.
pub(crate) fn find<'a>(
    s: &'a State,
    region: &str,
    cluster: &str,
    reference: &str,
) -> Option<&'a Instance> {
    let id = super::arn_or_name(reference);
    s.region(region)?.instances.get(cluster)?.get(id)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Resource {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    double_value: Option<f64>,
    long_value: Option<i64>,
    integer_value: Option<i64>,
    string_set_value: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireAttribute {
    name: String,
    value: Option<String>,
    target_type: Option<String>,
    target_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterInput {
    cluster: Option<String>,
    instance_identity_document: Option<String>,
    instance_identity_document_signature: Option<String>,
    #[serde(default)]
    total_resources: Vec<Resource>,
    version_info: Option<Value>,
    container_instance_arn: Option<String>,
    #[serde(default)]
    attributes: Vec<WireAttribute>,
    #[serde(default)]
    platform_devices: Vec<Value>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

fn check_attribute_name(n: &str) -> Result<(), AwsError> {
    let ok = !n.is_empty()
        && n.len() <= 128
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid_param(format!(
            "Attribute name '{n}' must be 1-128 characters: letters, numbers, hyphens, underscores, slashes, periods and at signs"
        )))
    }
}

fn parse_ports(v: &Option<Vec<String>>) -> Result<Vec<u16>, AwsError> {
    v.iter()
        .flatten()
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| invalid_param(format!("Invalid port in totalResources: {p}")))
        })
        .collect()
}

pub(super) fn register(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: RegisterInput = parse(input)?;
    let _ = (&i.instance_identity_document_signature, &i.platform_devices);
    let cluster = cluster_name(i.cluster.as_deref());
    let (mut cpu, mut memory) = (None, None);
    let (mut tcp, mut udp) = (Vec::new(), Vec::new());
    for r in &i.total_resources {
        let _ = (&r.kind, r.double_value);
        let n = r.integer_value.or(r.long_value);
        match r.name.as_str() {
            "CPU" => cpu = n,
            "MEMORY" => memory = n,
            "PORTS" => tcp = parse_ports(&r.string_set_value)?,
            "PORTS_UDP" => udp = parse_ports(&r.string_set_value)?,
            _ => {}
        }
    }
    let cpu = cpu.filter(|n| *n > 0).ok_or_else(|| {
        invalid_param("totalResources must include a positive CPU (INTEGER) resource")
    })?;
    let memory = memory.filter(|n| *n > 0).ok_or_else(|| {
        invalid_param("totalResources must include a positive MEMORY (INTEGER) resource")
    })?;
    let mut attributes = BTreeMap::new();
    for a in &i.attributes {
        check_attribute_name(&a.name)?;
        let _ = (&a.target_type, &a.target_id);
        attributes.insert(a.name.clone(), a.value.clone());
    }
    let tags = parse_tags(&i.tags)?;
    let doc: Option<Value> = i
        .instance_identity_document
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok());
    c.control
        .write(Durability::Immediate, |tx| {
            active_cluster(tx.state, c.region, &cluster)?;
            let previous = i
                .container_instance_arn
                .as_deref()
                .and_then(|a| find(tx.state, c.region, &cluster, a))
                .cloned();
            let id = previous
                .as_ref()
                .map(|p| p.id.clone())
                .unwrap_or_else(new_id);
            let ec2_instance_id = previous
                .as_ref()
                .map(|p| p.ec2_instance_id.clone())
                .or_else(|| {
                    doc.as_ref()
                        .and_then(|d| d["instanceId"].as_str().map(String::from))
                })
                .unwrap_or_else(|| format!("i-{}", &new_id()[..17]));
            let mut attrs = attributes.clone();
            attrs
                .entry("ecs.os-type".into())
                .or_insert_with(|| Some("linux".into()));
            let inst = Instance {
                arn: c.arn(&format!("container-instance/{cluster}/{id}")),
                id,
                region: c.region.to_string(),
                cluster: cluster.clone(),
                ec2_instance_id,
                status: previous
                    .as_ref()
                    .map(|p| p.status.clone())
                    .unwrap_or_else(|| "ACTIVE".into()),
                status_reason: None,
                agent_connected: true,
                registered_at: previous
                    .as_ref()
                    .map(|p| p.registered_at)
                    .unwrap_or_else(now),
                cpu,
                memory,
                reserved_tcp_ports: tcp.clone(),
                reserved_udp_ports: udp.clone(),
                attributes: attrs,
                version_info: i.version_info.clone(),
                version: previous.as_ref().map(|p| p.version + 1).unwrap_or(1),
            };
            tx.put_instance(inst.clone());
            if !tags.is_empty() {
                tx.set_tags(&inst.arn, tags.clone());
            }
            Ok(inst)
        })
        .map(|inst| {
            c.control.poll_seen(&inst.arn, false);
            c.control
                .read(|s| json!({"containerInstance": instance_output(s, &inst, true, true)}))
        })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeregisterInput {
    cluster: Option<String>,
    container_instance: String,
    force: Option<bool>,
}

pub(super) fn deregister(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DeregisterInput = parse(input)?;
    let cluster = cluster_name(i.cluster.as_deref());
    c.control.write(Durability::Immediate, |tx| {
        active_cluster(tx.state, c.region, &cluster)?;
        let inst = find(tx.state, c.region, &cluster, &i.container_instance)
            .cloned()
            .ok_or_else(|| invalid_param("The referenced container instance was not found."))?;
        let tasks: Vec<_> = tx
            .state
            .region(c.region)
            .map(|r| {
                super::fargate::hosted_tasks(r, &inst)
                    .filter(|t| !t.is_stopped())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !tasks.is_empty() && !i.force.unwrap_or(false) {
            return Err(invalid_param(
                "Found running tasks on the instance. Use force to deregister it anyway.",
            ));
        }
        let mut out = inst.clone();
        out.status = "INACTIVE".into();
        let t_now = now();
        for mut t in tasks {
            t.desired_status = "STOPPED".into();
            t.last_status = "STOPPED".into();
            t.stopped_reason = Some("Container instance deregistered".into());
            t.stop_code = Some("TerminationNotice".into());
            t.stopping_at.get_or_insert(t_now);
            t.stopped_at = Some(t_now);
            tx.put_task(t);
        }
        let v = instance_output(tx.state, &out, false, false);
        tx.delete_instance(c.region, &cluster, &inst.id);
        tx.set_tags(&inst.arn, Vec::new());
        Ok(json!({ "containerInstance": v }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DescribeInput {
    cluster: Option<String>,
    container_instances: Vec<String>,
    include: Option<Vec<String>>,
}

pub(super) fn describe(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DescribeInput = parse(input)?;
    if i.container_instances.is_empty() || i.container_instances.len() > 100 {
        return Err(invalid_param(
            "containerInstances must name 1 to 100 instances",
        ));
    }
    let cluster = cluster_name(i.cluster.as_deref());
    let tags = includes(&i.include, "TAGS");
    let found: Vec<Result<Instance, String>> = c.control.read(|s| {
        active_cluster(s, c.region, &cluster).map(|_| {
            i.container_instances
                .iter()
                .map(|r| {
                    find(s, c.region, &cluster, r).cloned().ok_or_else(|| {
                        if r.starts_with("arn:") {
                            r.clone()
                        } else {
                            c.arn(&format!("container-instance/{cluster}/{r}"))
                        }
                    })
                })
                .collect()
        })
    })?;
    let connected: Vec<bool> = found
        .iter()
        .map(|f| {
            f.as_ref()
                .map(|x| c.control.agent_connected(&x.arn))
                .unwrap_or(false)
        })
        .collect();
    Ok(c.control.read(|s| {
        let mut out = Vec::new();
        let mut failures = Vec::new();
        for (f, conn) in found.iter().zip(connected) {
            match f {
                Ok(inst) => out.push(instance_output(s, inst, conn, tags)),
                Err(arn) => failures.push(json!({"arn": arn, "reason": "MISSING"})),
            }
        }
        json!({"containerInstances": out, "failures": failures})
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListInput {
    cluster: Option<String>,
    filter: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    status: Option<String>,
}

pub(super) fn list(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: ListInput = parse(input)?;
    let cluster = cluster_name(i.cluster.as_deref());
    let (n, after) = page_params(i.max_results, i.next_token.as_deref(), 100)?;
    if let Some(st) = &i.status {
        if ![
            "ACTIVE",
            "DRAINING",
            "REGISTERING",
            "DEREGISTERING",
            "REGISTRATION_FAILED",
        ]
        .contains(&st.as_str())
        {
            return Err(invalid_param(format!("Invalid status: {st}")));
        }
    }
    let filter = match &i.filter {
        Some(f) => Some(
            crate::scheduler::query::Expression::parse(f)
                .map_err(|e| invalid_param(format!("Invalid filter expression: {e}")))?,
        ),
        None => None,
    };
    let items = c
        .control
        .read(|s| -> Result<Vec<(String, String)>, AwsError> {
            active_cluster(s, c.region, &cluster)?;
            let Some(r) = s.region(c.region) else {
                return Ok(Vec::new());
            };
            let insts = r.instances.get(&cluster);
            Ok(insts
                .map(|m| {
                    m.values()
                        .filter(|x| match &i.status {
                            Some(st) => &x.status == st,
                            None => x.status == "ACTIVE" || x.status == "DRAINING",
                        })
                        .filter(|x| match &filter {
                            None => true,
                            Some(f) => {
                                let si = super::tasks::scheduler_instance(
                                    r,
                                    x,
                                    c.control.agent_connected(&x.arn),
                                );
                                f.matches(&si)
                            }
                        })
                        .map(|x| (x.id.clone(), x.arn.clone()))
                        .collect()
                })
                .unwrap_or_default())
        })?;
    let (arns, token) = paginate(items, n, after.as_deref());
    Ok(with_token(json!({ "containerInstanceArns": arns }), token))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateStateInput {
    cluster: Option<String>,
    container_instances: Vec<String>,
    status: String,
}

pub(super) fn update_state(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: UpdateStateInput = parse(input)?;
    if !["ACTIVE", "DRAINING"].contains(&i.status.as_str()) {
        return Err(invalid_param(
            "Container instances can only be set to ACTIVE or DRAINING",
        ));
    }
    if i.container_instances.is_empty() || i.container_instances.len() > 10 {
        return Err(invalid_param(
            "containerInstances must name 1 to 10 instances",
        ));
    }
    let cluster = cluster_name(i.cluster.as_deref());
    let updated: Vec<Result<Instance, String>> = c.control.write(Durability::Immediate, |tx| {
        active_cluster(tx.state, c.region, &cluster)?;
        let mut out = Vec::new();
        for r in &i.container_instances {
            match find(tx.state, c.region, &cluster, r).cloned() {
                Some(mut inst) => {
                    if inst.status != i.status {
                        inst.status = i.status.clone();
                        inst.version += 1;
                        tx.put_instance(inst.clone());
                    }
                    out.push(Ok(inst));
                }
                None => out.push(Err(r.clone())),
            }
        }
        Ok(out)
    })?;
    Ok(c.control.read(|s| {
        let mut out = Vec::new();
        let mut failures = Vec::new();
        for u in &updated {
            match u {
                Ok(inst) => out.push(instance_output(
                    s,
                    inst,
                    c.control.agent_connected(&inst.arn),
                    false,
                )),
                Err(arn) => failures.push(json!({"arn": arn, "reason": "MISSING"})),
            }
        }
        json!({"containerInstances": out, "failures": failures})
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AttributesInput {
    cluster: Option<String>,
    attributes: Vec<WireAttribute>,
}

fn attribute_target(
    s: &State,
    c: &Ctx<'_>,
    cluster: &str,
    a: &WireAttribute,
) -> Result<Instance, AwsError> {
    match a.target_type.as_deref() {
        None | Some("container-instance") => {}
        Some(t) => return Err(invalid_param(format!("Invalid targetType: {t}"))),
    }
    let id = a
        .target_id
        .as_deref()
        .ok_or_else(|| invalid_param("Attribute targetId is required"))?;
    find(s, c.region, cluster, id)
        .cloned()
        .ok_or_else(|| AwsError::client("TargetNotFoundException", format!("Could not find {id}")))
}

fn attribute_output(a: &WireAttribute, arn: &str) -> Value {
    let mut v = json!({"name": a.name, "targetType": "container-instance", "targetId": arn});
    if let Some(val) = &a.value {
        v["value"] = val.clone().into();
    }
    v
}

pub(super) fn put_attributes(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: AttributesInput = parse(input)?;
    if i.attributes.is_empty() || i.attributes.len() > 10 {
        return Err(invalid_param("attributes must have 1 to 10 entries"));
    }
    for a in &i.attributes {
        check_attribute_name(&a.name)?;
    }
    let cluster = cluster_name(i.cluster.as_deref());
    c.control.write(Durability::Immediate, |tx| {
        active_cluster(tx.state, c.region, &cluster)?;
        let mut targets = Vec::new();
        for a in &i.attributes {
            targets.push(attribute_target(tx.state, c, &cluster, a)?);
        }
        let mut out = Vec::new();
        for (a, t) in i.attributes.iter().zip(targets) {
            let mut inst = find(tx.state, c.region, &cluster, &t.arn)
                .cloned()
                .unwrap_or(t);
            inst.attributes.insert(a.name.clone(), a.value.clone());
            out.push(attribute_output(a, &inst.arn));
            tx.put_instance(inst);
        }
        Ok(json!({ "attributes": out }))
    })
}

pub(super) fn delete_attributes(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: AttributesInput = parse(input)?;
    let cluster = cluster_name(i.cluster.as_deref());
    c.control.write(Durability::Immediate, |tx| {
        active_cluster(tx.state, c.region, &cluster)?;
        let mut targets = Vec::new();
        for a in &i.attributes {
            targets.push(attribute_target(tx.state, c, &cluster, a)?);
        }
        let mut out = Vec::new();
        for (a, t) in i.attributes.iter().zip(targets) {
            let mut inst = find(tx.state, c.region, &cluster, &t.arn)
                .cloned()
                .unwrap_or(t);
            inst.attributes.remove(&a.name);
            out.push(attribute_output(a, &inst.arn));
            tx.put_instance(inst);
        }
        Ok(json!({ "attributes": out }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListAttributesInput {
    cluster: Option<String>,
    target_type: String,
    attribute_name: Option<String>,
    attribute_value: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

pub(super) fn list_attributes(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: ListAttributesInput = parse(input)?;
    if i.target_type != "container-instance" {
        return Err(invalid_param(format!(
            "Invalid targetType: {}",
            i.target_type
        )));
    }
    if i.attribute_value.is_some() && i.attribute_name.is_none() {
        return Err(invalid_param(
            "attributeValue can only be given with attributeName",
        ));
    }
    let cluster = cluster_name(i.cluster.as_deref());
    let (n, after) = page_params(i.max_results, i.next_token.as_deref(), 100)?;
    let items = c
        .control
        .read(|s| -> Result<Vec<(String, Value)>, AwsError> {
            active_cluster(s, c.region, &cluster)?;
            let mut out = Vec::new();
            if let Some(m) = s.region(c.region).and_then(|r| r.instances.get(&cluster)) {
                for inst in m.values() {
                    for (k, v) in &inst.attributes {
                        if i.attribute_name.as_deref().map(|n| n == k).unwrap_or(true)
                            && i.attribute_value
                                .as_deref()
                                .map(|x| v.as_deref() == Some(x))
                                .unwrap_or(true)
                        {
                            let a = WireAttribute {
                                name: k.clone(),
                                value: v.clone(),
                                target_type: None,
                                target_id: None,
                            };
                            out.push((
                                format!("{}\u{0}{k}", inst.id),
                                attribute_output(&a, &inst.arn),
                            ));
                        }
                    }
                }
            }
            Ok(out)
        })?;
    let (attrs, token) = paginate(items, n, after.as_deref());
    Ok(with_token(json!({ "attributes": attrs }), token))
}
