//! The ELBv2 operations. Mutations take the [`World`] copy and validate everything before the
//! first change; reads take a copy of the caller's region.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_aws::json::RequestContext;
use berth_aws::query::{validation_error, Node, Params, XmlWriter};
use berth_aws::AwsError;

use super::input::{self, err, invalid_config};
use super::model::*;
use super::{default_rule_arn, new_id, output, rule_arn_of, Elbv2, World};
use crate::control::now;

const MAX_LOAD_BALANCERS: usize = 50;
const MAX_TARGET_GROUPS: usize = 3000;
const MAX_LISTENERS: usize = 50;
const MAX_RULES: usize = 100;
const MAX_TARGETS: usize = 1000;

/// A target as given: id, port (absent: the group's), availability zone.
pub(crate) type TargetSpec = (String, Option<u16>, Option<String>);

/// A row of DescribeTargetHealth: id, port, zone, state, reason, description.
type HealthRow = (
    String,
    u16,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

fn lb_not_found(arn: &str) -> AwsError {
    err(
        "LoadBalancerNotFound",
        format!("Load balancer '{arn}' not found"),
    )
}
fn tg_not_found(arn: &str) -> AwsError {
    err(
        "TargetGroupNotFound",
        format!("Target group '{arn}' not found"),
    )
}
fn listener_not_found(arn: &str) -> AwsError {
    err("ListenerNotFound", format!("Listener '{arn}' not found"))
}
fn rule_not_found(arn: &str) -> AwsError {
    err("RuleNotFound", format!("Rule '{arn}' not found"))
}

pub(crate) async fn dispatch(
    e: &Elbv2,
    ctx: &RequestContext,
    action: &str,
    params: &Params,
) -> Result<String, AwsError> {
    let p = params.root();
    let region = ctx.region.as_str();
    let account = ctx.account_id.as_str();
    let dns = e.host.to_string();
    macro_rules! mutate {
        ($f:expr) => {
            e.mutate(region, account, |w| $f(w, &p)).await
        };
    }
    match action {
        "CreateLoadBalancer" => {
            mutate!(|w: &mut World, p: &Node<'_>| create_load_balancer(w, p, &dns))
        }
        "DeleteLoadBalancer" => mutate!(delete_load_balancer),
        "ModifyLoadBalancerAttributes" => mutate!(modify_lb_attributes),
        "SetSecurityGroups" => mutate!(set_security_groups),
        "SetSubnets" => mutate!(set_subnets),
        "SetIpAddressType" => mutate!(set_ip_address_type),
        "CreateTargetGroup" => mutate!(create_target_group),
        "ModifyTargetGroup" => mutate!(modify_target_group),
        "DeleteTargetGroup" => mutate!(delete_target_group),
        "ModifyTargetGroupAttributes" => mutate!(modify_tg_attributes),
        "CreateListener" => mutate!(create_listener),
        "ModifyListener" => mutate!(modify_listener),
        "DeleteListener" => mutate!(delete_listener),
        "CreateRule" => mutate!(create_rule),
        "ModifyRule" => mutate!(modify_rule),
        "DeleteRule" => mutate!(delete_rule),
        "SetRulePriorities" => mutate!(set_rule_priorities),
        "RegisterTargets" => mutate!(register_targets),
        "DeregisterTargets" => mutate!(deregister_targets),
        "AddTags" => mutate!(add_tags),
        "RemoveTags" => mutate!(remove_tags),
        "DescribeLoadBalancers" => describe_load_balancers(&e.region(region), &p, region, &dns),
        "DescribeLoadBalancerAttributes" => describe_lb_attributes(&e.region(region), &p),
        "DescribeTargetGroups" => describe_target_groups(&e.region(region), &p),
        "DescribeTargetGroupAttributes" => describe_tg_attributes(&e.region(region), &p),
        "DescribeListeners" => describe_listeners(&e.region(region), &p),
        "DescribeRules" => describe_rules(&e.region(region), &p),
        "DescribeTags" => describe_tags(&e.region(region), &p),
        "DescribeTargetHealth" => describe_target_health(e, &e.region(region), &p),
        "DescribeAccountLimits" => describe_account_limits(&p),
        other => Err(err(
            "InvalidAction",
            format!("The action {other} is not valid for this web service"),
        )),
    }
}

// ---- pagination ----------------------------------------------------------------------------

/// One page of `items` (sorted by `key`) after `Marker`, of `PageSize` (1–400, default 400).
fn page<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> String,
    p: &Node<'_>,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    let size = p.int_in("PageSize", 1, 400)?.unwrap_or(400) as usize;
    items.sort_by_key(|t| key(t));
    if let Some(m) = p.str("Marker") {
        let after = URL_SAFE_NO_PAD
            .decode(m)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| validation_error(format!("Marker '{m}' is not valid")))?;
        items.retain(|t| key(t) > after);
    }
    let next = (items.len() > size).then(|| URL_SAFE_NO_PAD.encode(key(&items[size - 1])));
    items.truncate(size);
    Ok((items, next))
}

fn wrote(w: XmlWriter, next: Option<String>) -> String {
    let mut w = w;
    w.opt("NextMarker", next.as_deref());
    w.finish()
}

// ---- load balancers ------------------------------------------------------------------------

fn subnets(p: &Node<'_>) -> Result<Option<Vec<SubnetMapping>>, AwsError> {
    let plain = p.str_list("Subnets")?;
    let mappings = p.list("SubnetMappings")?;
    let out = match (plain, mappings) {
        (Some(_), Some(_)) => {
            return Err(validation_error(
                "Subnets and SubnetMappings cannot both be specified",
            ))
        }
        (Some(s), None) => s
            .into_iter()
            .map(|subnet_id| SubnetMapping {
                subnet_id,
                allocation_id: None,
                private_ipv4_address: None,
                ipv6_address: None,
            })
            .collect(),
        (None, Some(m)) => {
            let mut v = Vec::new();
            for n in m {
                v.push(SubnetMapping {
                    subnet_id: n.req_str("SubnetId")?.to_string(),
                    allocation_id: n.str("AllocationId").map(str::to_string),
                    private_ipv4_address: n.str("PrivateIPv4Address").map(str::to_string),
                    ipv6_address: n.str("IPv6Address").map(str::to_string),
                });
            }
            v
        }
        (None, None) => return Ok(None),
    };
    let mut seen = std::collections::BTreeSet::new();
    for s in &out {
        if s.subnet_id.is_empty() {
            return Err(validation_error("A subnet id cannot be empty"));
        }
        if !seen.insert(s.subnet_id.clone()) {
            return Err(err(
                "InvalidConfigurationRequest",
                format!("Subnet '{}' is specified more than once", s.subnet_id),
            ));
        }
    }
    Ok(Some(out))
}

fn create_load_balancer(w: &mut World, p: &Node<'_>, dns: &str) -> Result<String, AwsError> {
    let name = p.req_str("Name")?.to_string();
    input::check_name("Load balancer", &name)?;
    if name.starts_with("internal-") {
        return Err(validation_error(
            "Load balancer names cannot begin with 'internal-'",
        ));
    }
    match input::enum_str(p, "Type", &["application", "network", "gateway"])? {
        None | Some("application") => {}
        Some(t) => {
            return Err(invalid_config(format!(
                "Load balancer type '{t}' is not supported: Berth serves application load balancers"
            )))
        }
    }
    let scheme = input::enum_str(p, "Scheme", &["internet-facing", "internal"])?
        .unwrap_or("internet-facing")
        .to_string();
    let ip_type = input::enum_str(
        p,
        "IpAddressType",
        &["ipv4", "dualstack", "dualstack-without-public-ipv4"],
    )?
    .unwrap_or("ipv4")
    .to_string();
    let subnets = subnets(p)?.unwrap_or_default();
    let security_groups = p.str_list("SecurityGroups")?.unwrap_or_default();
    let tags = input::tags(p, "Tags")?;
    input::merge_tags(&[], &tags)?;
    let region = w.region.clone();
    let r = w.r();
    if let Some(existing) = r.load_balancers.get(&name) {
        // Idempotent, as in AWS: the same settings answer with the existing load balancer.
        if existing.scheme == scheme
            && existing.ip_address_type == ip_type
            && existing.subnets == subnets
            && existing.security_groups == security_groups
        {
            let mut out = XmlWriter::new();
            out.list("LoadBalancers", [existing], |x, lb| {
                output::load_balancer(x, lb, &region, dns)
            });
            return Ok(out.finish());
        }
        return Err(err(
            "DuplicateLoadBalancerName",
            format!(
                "A load balancer with the same name '{name}' exists, but with different settings"
            ),
        ));
    }
    if r.load_balancers.len() >= MAX_LOAD_BALANCERS {
        return Err(err(
            "TooManyLoadBalancers",
            format!("The maximum of {MAX_LOAD_BALANCERS} load balancers per region is reached"),
        ));
    }
    let id = new_id();
    let lb = LoadBalancer {
        arn: w.arn(&format!("loadbalancer/app/{name}/{id}")),
        name: name.clone(),
        id,
        created_at: now(),
        scheme,
        ip_address_type: ip_type,
        subnets,
        security_groups,
        attributes: BTreeMap::new(),
        tags,
    };
    let mut out = XmlWriter::new();
    out.list("LoadBalancers", [&lb], |x, lb| {
        output::load_balancer(x, lb, &region, dns)
    });
    w.r().load_balancers.insert(name, lb);
    Ok(out.finish())
}

fn find_lb<'a>(r: &'a Elbv2Region, arn: &str) -> Result<&'a LoadBalancer, AwsError> {
    input::check_lb_arn(arn)?;
    r.lb_by_arn(arn).ok_or_else(|| lb_not_found(arn))
}

fn delete_load_balancer(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("LoadBalancerArn")?;
    input::check_lb_arn(arn)?;
    let r = w.r();
    let Some(lb) = r.lb_by_arn(arn).cloned() else {
        return Ok(String::new());
    };
    if lb
        .attributes
        .get("deletion_protection.enabled")
        .is_some_and(|v| v == "true")
    {
        return Err(err(
            "OperationNotPermitted",
            format!(
                "Load balancer '{arn}' cannot be deleted because deletion protection is enabled"
            ),
        ));
    }
    let listeners: Vec<String> = r
        .listeners
        .values()
        .filter(|l| l.load_balancer_arn == lb.arn)
        .map(|l| l.id.clone())
        .collect();
    r.rules
        .retain(|_, rule| !listeners.contains(&rule.listener_id));
    for l in &listeners {
        r.listeners.remove(l);
    }
    r.load_balancers.remove(&lb.name);
    Ok(String::new())
}

fn describe_load_balancers(
    r: &Elbv2Region,
    p: &Node<'_>,
    region: &str,
    dns: &str,
) -> Result<String, AwsError> {
    let arns = p.str_list("LoadBalancerArns")?;
    let names = p.str_list("Names")?;
    let lbs: Vec<&LoadBalancer> = match (&arns, &names) {
        (Some(_), Some(_)) => {
            return Err(validation_error(
                "LoadBalancerArns and Names cannot both be specified",
            ))
        }
        (Some(arns), None) => {
            let mut v = Vec::new();
            for a in arns {
                v.push(find_lb(r, a)?);
            }
            v
        }
        (None, Some(names)) => {
            let mut v = Vec::new();
            for n in names {
                v.push(r.load_balancers.get(n).ok_or_else(|| {
                    err(
                        "LoadBalancerNotFound",
                        format!("Load balancers '[{n}]' not found"),
                    )
                })?);
            }
            v
        }
        (None, None) => r.load_balancers.values().collect(),
    };
    let (lbs, next) = page(lbs, |l| l.name.clone(), p)?;
    let mut out = XmlWriter::new();
    out.list("LoadBalancers", lbs, |x, lb| {
        output::load_balancer(x, lb, region, dns)
    });
    Ok(wrote(out, next))
}

fn describe_lb_attributes(r: &Elbv2Region, p: &Node<'_>) -> Result<String, AwsError> {
    let lb = find_lb(r, p.req_str("LoadBalancerArn")?)?;
    let all = input::with_defaults(input::LB_ATTRIBUTES, &lb.attributes);
    let mut out = XmlWriter::new();
    output::attributes(&mut out, &all);
    Ok(out.finish())
}

fn modify_lb_attributes(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("LoadBalancerArn")?;
    let attrs = input::attributes(p)?;
    if attrs.len() > 20 {
        return Err(validation_error(
            "At most 20 attributes can be modified at once",
        ));
    }
    for (k, v) in &attrs {
        input::check_lb_attribute(k, v)?;
    }
    let r = w.r();
    let name = find_lb(r, arn)?.name.clone();
    let Some(lb) = r.load_balancers.get_mut(&name) else {
        return Err(lb_not_found(arn));
    };
    for (k, v) in attrs {
        lb.attributes.insert(k, v);
    }
    let all = input::with_defaults(input::LB_ATTRIBUTES, &lb.attributes);
    let mut out = XmlWriter::new();
    output::attributes(&mut out, &all);
    Ok(out.finish())
}

fn set_security_groups(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("LoadBalancerArn")?;
    let groups = p
        .str_list("SecurityGroups")?
        .ok_or_else(|| validation_error("SecurityGroups must be specified"))?;
    let r = w.r();
    let name = find_lb(r, arn)?.name.clone();
    let Some(lb) = r.load_balancers.get_mut(&name) else {
        return Err(lb_not_found(arn));
    };
    lb.security_groups = groups.clone();
    let mut out = XmlWriter::new();
    out.str_list("SecurityGroupIds", &groups);
    Ok(out.finish())
}

fn set_subnets(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("LoadBalancerArn")?;
    let subnets = subnets(p)?
        .ok_or_else(|| validation_error("Subnets or SubnetMappings must be specified"))?;
    let region = w.region.clone();
    let r = w.r();
    let name = find_lb(r, arn)?.name.clone();
    let Some(lb) = r.load_balancers.get_mut(&name) else {
        return Err(lb_not_found(arn));
    };
    lb.subnets = subnets.clone();
    let mut out = XmlWriter::new();
    out.list("AvailabilityZones", &subnets, |x, s| {
        x.elem("ZoneName", &output::zone_of(&region, &s.subnet_id))
            .elem("SubnetId", &s.subnet_id);
    });
    out.elem("IpAddressType", &lb.ip_address_type);
    Ok(out.finish())
}

fn set_ip_address_type(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("LoadBalancerArn")?;
    let t = input::enum_str(
        p,
        "IpAddressType",
        &["ipv4", "dualstack", "dualstack-without-public-ipv4"],
    )?
    .ok_or_else(|| validation_error("IpAddressType must be specified"))?
    .to_string();
    let r = w.r();
    let name = find_lb(r, arn)?.name.clone();
    let Some(lb) = r.load_balancers.get_mut(&name) else {
        return Err(lb_not_found(arn));
    };
    lb.ip_address_type = t.clone();
    let mut out = XmlWriter::new();
    out.elem("IpAddressType", &t);
    Ok(out.finish())
}

// ---- target groups -------------------------------------------------------------------------

fn write_tg(out: &mut XmlWriter, r: &Elbv2Region, tg: &TargetGroup) {
    output::target_group(out, tg, &r.load_balancers_of(&tg.arn));
}

fn create_target_group(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let name = p.req_str("Name")?.to_string();
    input::check_name("Target group", &name)?;
    let target_type = input::enum_str(p, "TargetType", &["instance", "ip", "lambda", "alb"])?
        .unwrap_or("instance")
        .to_string();
    if target_type == "lambda" || target_type == "alb" {
        return Err(invalid_config(format!(
            "Target type '{target_type}' is not supported: Berth's targets are instances and IP addresses"
        )));
    }
    let protocol = input::enum_str(
        p,
        "Protocol",
        &[
            "HTTP", "HTTPS", "TCP", "TLS", "UDP", "TCP_UDP", "GENEVE", "QUIC", "TCP_QUIC",
        ],
    )?
    .ok_or_else(|| {
        validation_error(
            "A protocol must be specified for target type '".to_string() + &target_type + "'",
        )
    })?;
    if protocol != "HTTP" {
        return Err(invalid_config(format!(
            "Protocol '{protocol}' is not supported for target groups: Berth's application load \
             balancer speaks HTTP to targets"
        )));
    }
    let port =
        input::port(p, "Port")?.ok_or_else(|| validation_error("A port must be specified"))?;
    let protocol_version = match p.str("ProtocolVersion") {
        None => "HTTP1".to_string(),
        Some(v) if v.eq_ignore_ascii_case("HTTP1") || v.eq_ignore_ascii_case("HTTP2") => {
            v.to_ascii_uppercase()
        }
        Some(v) if v.eq_ignore_ascii_case("GRPC") => {
            return Err(invalid_config("Protocol version GRPC is not supported"))
        }
        Some(v) => {
            return Err(validation_error(format!(
                "Protocol version '{v}' must be HTTP1 or HTTP2"
            )))
        }
    };
    let ip_address_type = input::enum_str(p, "IpAddressType", &["ipv4", "ipv6"])?
        .unwrap_or("ipv4")
        .to_string();
    let mut hc = HealthCheckSettings::default();
    input::health_check(p, &mut hc)?;
    let tags = input::tags(p, "Tags")?;
    input::merge_tags(&[], &tags)?;
    let vpc_id = p.str("VpcId").map(str::to_string);
    let r = w.r();
    if let Some(existing) = r.target_groups.get(&name) {
        // Idempotent, as in AWS: the same settings answer with the existing target group.
        if existing.protocol == protocol
            && existing.protocol_version == protocol_version
            && existing.port == port
            && existing.vpc_id == vpc_id
            && existing.target_type == target_type
            && existing.ip_address_type == ip_address_type
            && existing.health_check == hc
        {
            let lbs = r.load_balancers_of(&existing.arn);
            let mut out = XmlWriter::new();
            out.list("TargetGroups", [existing], |x, tg| {
                output::target_group(x, tg, &lbs)
            });
            return Ok(out.finish());
        }
        return Err(err(
            "DuplicateTargetGroupName",
            format!(
                "A target group with the same name '{name}' exists, but with different settings"
            ),
        ));
    }
    if r.target_groups.len() >= MAX_TARGET_GROUPS {
        return Err(err(
            "TooManyTargetGroups",
            "The maximum number of target groups is reached",
        ));
    }
    let id = new_id();
    let tg = TargetGroup {
        arn: w.arn(&format!("targetgroup/{name}/{id}")),
        name: name.clone(),
        id,
        created_at: now(),
        protocol: protocol.to_string(),
        protocol_version,
        port,
        vpc_id,
        target_type,
        ip_address_type,
        health_check: hc,
        attributes: BTreeMap::new(),
        targets: Vec::new(),
        tags,
    };
    let mut out = XmlWriter::new();
    out.list("TargetGroups", [&tg], |x, tg| {
        output::target_group(x, tg, &[])
    });
    w.r().target_groups.insert(name, tg);
    Ok(out.finish())
}

fn find_tg<'a>(r: &'a Elbv2Region, arn: &str) -> Result<&'a TargetGroup, AwsError> {
    input::check_tg_arn(arn)?;
    r.tg_by_arn(arn).ok_or_else(|| tg_not_found(arn))
}

fn modify_target_group(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("TargetGroupArn")?;
    let r = w.r();
    let mut tg = find_tg(r, arn)?.clone();
    input::health_check(p, &mut tg.health_check)?;
    let mut out = XmlWriter::new();
    out.list("TargetGroups", [&tg], |x, tg| write_tg(x, r, tg));
    r.target_groups.insert(tg.name.clone(), tg);
    Ok(out.finish())
}

fn delete_target_group(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("TargetGroupArn")?;
    input::check_tg_arn(arn)?;
    let r = w.r();
    let Some(tg) = r.tg_by_arn(arn).cloned() else {
        return Ok(String::new());
    };
    let users = r.load_balancers_of(&tg.arn);
    if !users.is_empty() {
        return Err(err(
            "ResourceInUse",
            format!(
                "Target group '{arn}' is currently in use by a listener or a rule of {}",
                users.join(", ")
            ),
        ));
    }
    r.target_groups.remove(&tg.name);
    Ok(String::new())
}

fn describe_target_groups(r: &Elbv2Region, p: &Node<'_>) -> Result<String, AwsError> {
    let arns = p.str_list("TargetGroupArns")?;
    let names = p.str_list("Names")?;
    let lb = p.str("LoadBalancerArn");
    let given = [arns.is_some(), names.is_some(), lb.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given > 1 {
        return Err(validation_error(
            "Only one of LoadBalancerArn, TargetGroupArns and Names can be specified",
        ));
    }
    let tgs: Vec<&TargetGroup> = if let Some(arns) = &arns {
        let mut v = Vec::new();
        for a in arns {
            v.push(find_tg(r, a)?);
        }
        v
    } else if let Some(names) = &names {
        let mut v = Vec::new();
        for n in names {
            v.push(r.target_groups.get(n).ok_or_else(|| {
                err(
                    "TargetGroupNotFound",
                    format!("One or more target groups not found: '{n}'"),
                )
            })?);
        }
        v
    } else if let Some(lb) = lb {
        let lb = find_lb(r, lb)?;
        r.target_groups
            .values()
            .filter(|t| r.load_balancers_of(&t.arn).contains(&lb.arn))
            .collect()
    } else {
        r.target_groups.values().collect()
    };
    let (tgs, next) = page(tgs, |t| t.name.clone(), p)?;
    let mut out = XmlWriter::new();
    out.list("TargetGroups", tgs, |x, tg| write_tg(x, r, tg));
    Ok(wrote(out, next))
}

fn describe_tg_attributes(r: &Elbv2Region, p: &Node<'_>) -> Result<String, AwsError> {
    let tg = find_tg(r, p.req_str("TargetGroupArn")?)?;
    let all = input::with_defaults(input::TG_ATTRIBUTES, &tg.attributes);
    let mut out = XmlWriter::new();
    output::attributes(&mut out, &all);
    Ok(out.finish())
}

fn modify_tg_attributes(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("TargetGroupArn")?;
    let attrs = input::attributes(p)?;
    let r = w.r();
    let mut tg = find_tg(r, arn)?.clone();
    for (k, v) in attrs {
        tg.attributes.insert(k, v);
    }
    let all = input::with_defaults(input::TG_ATTRIBUTES, &tg.attributes);
    input::check_tg_attributes(&all)?;
    let mut out = XmlWriter::new();
    output::attributes(&mut out, &all);
    r.target_groups.insert(tg.name.clone(), tg);
    Ok(out.finish())
}

// ---- targets -------------------------------------------------------------------------------

fn target_list(p: &Node<'_>) -> Result<Vec<TargetSpec>, AwsError> {
    let items = p.list("Targets")?.unwrap_or_default();
    let mut out = Vec::new();
    for t in items {
        out.push((
            t.req_str("Id")?.to_string(),
            input::port(&t, "Port")?,
            t.str("AvailabilityZone").map(str::to_string),
        ));
    }
    Ok(out)
}

/// Registers targets with a target group (shared by RegisterTargets and the internal API).
pub(crate) fn register(
    r: &mut Elbv2Region,
    instances: &BTreeMap<String, Option<IpAddr>>,
    arn: &str,
    targets: &[TargetSpec],
) -> Result<(), AwsError> {
    if targets.is_empty() {
        return Err(validation_error("At least one target must be specified"));
    }
    let mut tg = find_tg(r, arn)?.clone();
    let mut bad = Vec::new();
    for (id, port, az) in targets {
        let ok = match tg.target_type.as_str() {
            "ip" => match id.parse::<IpAddr>() {
                Ok(ip) => ip.is_ipv4() == (tg.ip_address_type == "ipv4"),
                Err(_) => false,
            },
            _ => instances.contains_key(id),
        };
        if !ok {
            bad.push(id.clone());
            continue;
        }
        let port = port.unwrap_or(tg.port);
        match tg
            .targets
            .iter_mut()
            .find(|t| &t.id == id && t.port == port)
        {
            Some(t) => t.availability_zone = az.clone().or(t.availability_zone.take()),
            None => tg.targets.push(RegisteredTarget {
                id: id.clone(),
                port,
                availability_zone: az.clone(),
            }),
        }
    }
    if !bad.is_empty() {
        let msg = if tg.target_type == "ip" {
            format!(
                "The following targets are not valid {} addresses: '{}'",
                tg.ip_address_type,
                bad.join("', '")
            )
        } else {
            format!(
                "The following targets are not registered container instances of this region \
                 (ec2InstanceId): '{}'",
                bad.join("', '")
            )
        };
        return Err(err("InvalidTarget", msg));
    }
    if tg.targets.len() > MAX_TARGETS {
        return Err(err(
            "TooManyTargets",
            format!("A target group can have at most {MAX_TARGETS} targets"),
        ));
    }
    r.target_groups.insert(tg.name.clone(), tg);
    Ok(())
}

/// Deregisters targets; with `strict`, a target that is not registered is `InvalidTarget`.
pub(crate) fn deregister(
    r: &mut Elbv2Region,
    arn: &str,
    targets: &[(String, Option<u16>)],
    strict: bool,
) -> Result<(), AwsError> {
    if targets.is_empty() {
        return Err(validation_error("At least one target must be specified"));
    }
    let mut tg = find_tg(r, arn)?.clone();
    let mut missing = Vec::new();
    for (id, port) in targets {
        let port = port.unwrap_or(tg.port);
        let before = tg.targets.len();
        tg.targets.retain(|t| !(&t.id == id && t.port == port));
        if tg.targets.len() == before {
            missing.push(format!("{id}:{port}"));
        }
    }
    if strict && !missing.is_empty() {
        return Err(err(
            "InvalidTarget",
            format!(
                "The following targets are not registered in target group '{arn}': '{}'",
                missing.join("', '")
            ),
        ));
    }
    r.target_groups.insert(tg.name.clone(), tg);
    Ok(())
}

fn register_targets(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("TargetGroupArn")?;
    let targets = target_list(p)?;
    let instances = w.instances.get(&w.region).cloned().unwrap_or_default();
    register(w.r(), &instances, arn, &targets)?;
    Ok(String::new())
}

fn deregister_targets(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("TargetGroupArn")?;
    let targets: Vec<(String, Option<u16>)> = target_list(p)?
        .into_iter()
        .map(|(id, port, _)| (id, port))
        .collect();
    deregister(w.r(), arn, &targets, true)?;
    Ok(String::new())
}

fn describe_target_health(e: &Elbv2, r: &Elbv2Region, p: &Node<'_>) -> Result<String, AwsError> {
    let tg = find_tg(r, p.req_str("TargetGroupArn")?)?;
    let filter = p.list("Targets")?.map(|_| target_list(p)).transpose()?;
    let health = e.data_plane.target_health(&tg.arn);
    let in_use = !r.load_balancers_of(&tg.arn).is_empty();
    // (id, port, az, state, reason, description)
    let mut rows: Vec<HealthRow> = Vec::new();
    for t in &tg.targets {
        let h = health.iter().find(|h| h.id == t.id && h.port == t.port);
        let (state, reason, desc) = if !in_use {
            (
                "unused".to_string(),
                Some("Target.NotInUse".to_string()),
                Some(
                    "Target group is not configured to receive traffic from the load balancer"
                        .to_string(),
                ),
            )
        } else {
            match h {
                Some(h) => (
                    h.state.as_str().to_string(),
                    h.reason.clone(),
                    h.description.clone(),
                ),
                None => (
                    "initial".to_string(),
                    Some("Elb.RegistrationInProgress".to_string()),
                    Some("Target registration is in progress".to_string()),
                ),
            }
        };
        rows.push((
            t.id.clone(),
            t.port,
            t.availability_zone.clone(),
            state,
            reason,
            desc,
        ));
    }
    // Targets still draining after they were deregistered.
    for h in &health {
        if !tg.targets.iter().any(|t| t.id == h.id && t.port == h.port) {
            rows.push((
                h.id.clone(),
                h.port,
                None,
                h.state.as_str().to_string(),
                h.reason.clone(),
                h.description.clone(),
            ));
        }
    }
    if let Some(filter) = filter {
        let mut picked = Vec::new();
        for (id, port, az) in filter {
            let port = port.unwrap_or(tg.port);
            match rows.iter().find(|r| r.0 == id && r.1 == port) {
                Some(r) => picked.push(r.clone()),
                None => picked.push((
                    id,
                    port,
                    az,
                    "unused".to_string(),
                    Some("Target.NotRegistered".to_string()),
                    Some("Target is not registered to the target group".to_string()),
                )),
            }
        }
        rows = picked;
    }
    let mut out = XmlWriter::new();
    out.list("TargetHealthDescriptions", &rows, |x, row| {
        x.open("Target").elem("Id", &row.0).num("Port", row.1);
        x.opt("AvailabilityZone", row.2.as_deref());
        x.close("Target");
        let hc_port = if tg.health_check.port == "traffic-port" {
            row.1.to_string()
        } else {
            tg.health_check.port.clone()
        };
        x.elem("HealthCheckPort", &hc_port);
        x.open("TargetHealth").elem("State", &row.3);
        x.opt("Reason", row.4.as_deref())
            .opt("Description", row.5.as_deref());
        x.close("TargetHealth");
    });
    Ok(out.finish())
}

// ---- listeners -----------------------------------------------------------------------------

fn listener_protocol(p: &Node<'_>) -> Result<Option<String>, AwsError> {
    let proto = input::enum_str(
        p,
        "Protocol",
        &[
            "HTTP", "HTTPS", "TCP", "TLS", "UDP", "TCP_UDP", "GENEVE", "QUIC", "TCP_QUIC",
        ],
    )?;
    match proto {
        None | Some("HTTP") => Ok(proto.map(str::to_string)),
        Some("HTTPS") => Err(err(
            "UnsupportedProtocol",
            "HTTPS listeners need certificates, which Berth does not have; use HTTP",
        )),
        Some(other) => Err(err(
            "UnsupportedProtocol",
            format!("Protocol '{other}' is not supported by application load balancers; use HTTP"),
        )),
    }
}

/// `DuplicateListener` when another listener (not `except`) of any load balancer of this host
/// uses `port`.
fn check_port_free(
    w: &World,
    port: u16,
    lb_arn: &str,
    except: Option<&str>,
) -> Result<(), AwsError> {
    for r in w.regions.values() {
        for l in r.listeners.values() {
            if l.port == port && Some(l.id.as_str()) != except {
                let msg = if l.load_balancer_arn == lb_arn {
                    format!("A listener already exists on port {port} of this load balancer")
                } else {
                    format!(
                        "Port {port} of this host is already used by a listener of load balancer \
                         '{}'; load balancers share the host's address, so each port can have one \
                         listener",
                        l.load_balancer_name
                    )
                };
                return Err(err("DuplicateListener", msg));
            }
        }
    }
    Ok(())
}

fn create_listener(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let lb_arn = p.req_str("LoadBalancerArn")?;
    let protocol = listener_protocol(p)?.unwrap_or_else(|| "HTTP".to_string());
    if p.has("Certificates") {
        return Err(validation_error(
            "Certificates can only be specified for HTTPS listeners",
        ));
    }
    let port = input::port(p, "Port")?
        .ok_or_else(|| validation_error("A listener port must be specified"))?;
    let tags = input::tags(p, "Tags")?;
    input::merge_tags(&[], &tags)?;
    let r = w.regions.get(&w.region).cloned().unwrap_or_default();
    let lb = find_lb(&r, lb_arn)?.clone();
    let actions = input::actions(p, "DefaultActions", &r, &lb.arn, &r)?;
    // AWS's idempotency: the same settings on the same load balancer answer with the listener.
    if let Some(same) = r.listeners.values().find(|l| {
        l.load_balancer_arn == lb.arn
            && l.port == port
            && l.protocol == protocol
            && l.default_actions == actions
    }) {
        let mut out = XmlWriter::new();
        out.list("Listeners", [same], output::listener);
        return Ok(out.finish());
    }
    check_port_free(w, port, &lb.arn, None)?;
    if r.listeners
        .values()
        .filter(|l| l.load_balancer_arn == lb.arn)
        .count()
        >= MAX_LISTENERS
    {
        return Err(err(
            "TooManyListeners",
            format!("A load balancer can have at most {MAX_LISTENERS} listeners"),
        ));
    }
    let id = new_id();
    let l = Listener {
        arn: w.arn(&format!("listener/app/{}/{}/{id}", lb.name, lb.id)),
        id: id.clone(),
        load_balancer_name: lb.name.clone(),
        load_balancer_arn: lb.arn.clone(),
        port,
        protocol,
        default_actions: actions,
        default_rule_id: new_id(),
        default_rule_tags: Vec::new(),
        tags,
    };
    let mut out = XmlWriter::new();
    out.list("Listeners", [&l], output::listener);
    w.r().listeners.insert(id, l);
    Ok(out.finish())
}

fn find_listener<'a>(r: &'a Elbv2Region, arn: &str) -> Result<&'a Listener, AwsError> {
    input::check_listener_arn(arn)?;
    r.listener_by_arn(arn)
        .ok_or_else(|| listener_not_found(arn))
}

fn modify_listener(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("ListenerArn")?;
    let r = w.regions.get(&w.region).cloned().unwrap_or_default();
    let mut l = find_listener(&r, arn)?.clone();
    if let Some(proto) = listener_protocol(p)? {
        l.protocol = proto;
    }
    if p.has("Certificates") {
        return Err(validation_error(
            "Certificates can only be specified for HTTPS listeners",
        ));
    }
    if let Some(port) = input::port(p, "Port")? {
        check_port_free(w, port, &l.load_balancer_arn, Some(&l.id))?;
        l.port = port;
    }
    if p.has("DefaultActions") {
        l.default_actions = input::actions(p, "DefaultActions", &r, &l.load_balancer_arn, &r)?;
    }
    let mut out = XmlWriter::new();
    out.list("Listeners", [&l], output::listener);
    w.r().listeners.insert(l.id.clone(), l);
    Ok(out.finish())
}

fn delete_listener(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("ListenerArn")?;
    let r = w.r();
    let id = find_listener(r, arn)?.id.clone();
    r.rules.retain(|_, rule| rule.listener_id != id);
    r.listeners.remove(&id);
    Ok(String::new())
}

fn describe_listeners(r: &Elbv2Region, p: &Node<'_>) -> Result<String, AwsError> {
    let arns = p.str_list("ListenerArns")?;
    let lb = p.str("LoadBalancerArn");
    let ls: Vec<&Listener> = match (&arns, lb) {
        (Some(_), Some(_)) => {
            return Err(validation_error(
                "LoadBalancerArn and ListenerArns cannot both be specified",
            ))
        }
        (None, None) => {
            return Err(validation_error(
                "A load balancer ARN or listener ARNs must be specified",
            ))
        }
        (Some(arns), None) => {
            let mut v = Vec::new();
            for a in arns {
                v.push(find_listener(r, a)?);
            }
            v
        }
        (None, Some(lb)) => {
            let lb = find_lb(r, lb)?;
            r.listeners
                .values()
                .filter(|l| l.load_balancer_arn == lb.arn)
                .collect()
        }
    };
    let (ls, next) = page(ls, |l| format!("{:05}/{}", l.port, l.id), p)?;
    let mut out = XmlWriter::new();
    out.list("Listeners", ls, output::listener);
    Ok(wrote(out, next))
}

// ---- rules ---------------------------------------------------------------------------------

enum RuleRef<'a> {
    Rule(&'a Rule),
    Default(&'a Listener),
}

fn find_rule<'a>(r: &'a Elbv2Region, arn: &str) -> Result<RuleRef<'a>, AwsError> {
    input::check_rule_arn(arn)?;
    if let Some(rule) = r.rules.values().find(|x| x.arn == arn) {
        return Ok(RuleRef::Rule(rule));
    }
    r.listeners
        .values()
        .find(|l| default_rule_arn(l) == arn)
        .map(RuleRef::Default)
        .ok_or_else(|| rule_not_found(arn))
}

fn write_rule(out: &mut XmlWriter, r: RuleRef<'_>) {
    match r {
        RuleRef::Rule(rule) => output::rule(out, rule),
        RuleRef::Default(l) => output::default_rule(out, l, &default_rule_arn(l)),
    }
}

fn check_priority_free(
    r: &Elbv2Region,
    listener_id: &str,
    priority: u32,
    except: Option<&str>,
) -> Result<(), AwsError> {
    if r.rules.values().any(|x| {
        x.listener_id == listener_id && x.priority == priority && Some(x.id.as_str()) != except
    }) {
        return Err(err(
            "PriorityInUse",
            format!("Priority '{priority}' is currently in use"),
        ));
    }
    Ok(())
}

fn create_rule(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("ListenerArn")?;
    let priority =
        p.int_in("Priority", 1, 50000)?
            .ok_or_else(|| validation_error("A rule priority must be specified"))? as u32;
    let conditions = input::conditions(p, "Conditions")?;
    if conditions.is_empty() {
        return Err(validation_error("A rule must have at least one condition"));
    }
    if p.has("Transforms") {
        return Err(invalid_config("Rule transforms are not supported"));
    }
    let tags = input::tags(p, "Tags")?;
    input::merge_tags(&[], &tags)?;
    let r = w.regions.get(&w.region).cloned().unwrap_or_default();
    let l = find_listener(&r, arn)?.clone();
    let actions = input::actions(p, "Actions", &r, &l.load_balancer_arn, &r)?;
    check_priority_free(&r, &l.id, priority, None)?;
    if r.rules.values().filter(|x| x.listener_id == l.id).count() >= MAX_RULES {
        return Err(err(
            "TooManyRules",
            format!("A listener can have at most {MAX_RULES} rules"),
        ));
    }
    let id = new_id();
    let rule = Rule {
        arn: rule_arn_of(&l, &id),
        id: id.clone(),
        listener_id: l.id.clone(),
        priority,
        conditions,
        actions,
        tags,
    };
    let mut out = XmlWriter::new();
    out.list("Rules", [&rule], output::rule);
    w.r().rules.insert(id, rule);
    Ok(out.finish())
}

fn modify_rule(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("RuleArn")?;
    if p.has("Transforms") {
        return Err(invalid_config("Rule transforms are not supported"));
    }
    let r = w.regions.get(&w.region).cloned().unwrap_or_default();
    match find_rule(&r, arn)? {
        RuleRef::Default(l) => {
            if p.has("Conditions") {
                return Err(err(
                    "OperationNotPermitted",
                    "The conditions of a default rule cannot be modified",
                ));
            }
            let mut l = l.clone();
            if p.has("Actions") {
                l.default_actions = input::actions(p, "Actions", &r, &l.load_balancer_arn, &r)?;
            }
            let mut out = XmlWriter::new();
            out.list("Rules", [&l], |x, l| {
                output::default_rule(x, l, &default_rule_arn(l))
            });
            w.r().listeners.insert(l.id.clone(), l);
            Ok(out.finish())
        }
        RuleRef::Rule(rule) => {
            let mut rule = rule.clone();
            if p.has("Conditions") {
                let c = input::conditions(p, "Conditions")?;
                if c.is_empty() {
                    return Err(validation_error("A rule must have at least one condition"));
                }
                rule.conditions = c;
            }
            if p.has("Actions") {
                let lb_arn = r
                    .listeners
                    .get(&rule.listener_id)
                    .map(|l| l.load_balancer_arn.clone())
                    .unwrap_or_default();
                rule.actions = input::actions(p, "Actions", &r, &lb_arn, &r)?;
            }
            let mut out = XmlWriter::new();
            out.list("Rules", [&rule], output::rule);
            w.r().rules.insert(rule.id.clone(), rule);
            Ok(out.finish())
        }
    }
}

fn delete_rule(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arn = p.req_str("RuleArn")?;
    let r = w.r();
    let id = match find_rule(r, arn)? {
        RuleRef::Default(_) => {
            return Err(err(
                "OperationNotPermitted",
                "The default rule of a listener cannot be deleted",
            ))
        }
        RuleRef::Rule(rule) => rule.id.clone(),
    };
    r.rules.remove(&id);
    Ok(String::new())
}

fn set_rule_priorities(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let items = p
        .list("RulePriorities")?
        .ok_or_else(|| validation_error("RulePriorities must be specified"))?;
    let r = w.r();
    let mut updated: BTreeMap<String, Rule> = BTreeMap::new();
    for it in &items {
        let arn = it.req_str("RuleArn")?;
        let prio = it
            .int_in("Priority", 1, 50000)?
            .ok_or_else(|| validation_error("A rule priority must be specified"))?
            as u32;
        let rule = match find_rule(r, arn)? {
            RuleRef::Default(_) => {
                return Err(err(
                    "OperationNotPermitted",
                    "The priority of a default rule cannot be changed",
                ))
            }
            RuleRef::Rule(rule) => rule,
        };
        if updated.contains_key(&rule.id) {
            return Err(validation_error(format!(
                "Rule '{arn}' is given more than once"
            )));
        }
        let mut rule = rule.clone();
        rule.priority = prio;
        updated.insert(rule.id.clone(), rule);
    }
    // Priorities must be unique per listener after the change.
    let mut after: BTreeMap<(String, u32), String> = BTreeMap::new();
    for rule in r.rules.values() {
        let rule = updated.get(&rule.id).unwrap_or(rule);
        if let Some(other) =
            after.insert((rule.listener_id.clone(), rule.priority), rule.id.clone())
        {
            let _ = other;
            return Err(err(
                "PriorityInUse",
                format!("Priority '{}' is currently in use", rule.priority),
            ));
        }
    }
    let mut out = XmlWriter::new();
    let mut rules: Vec<&Rule> = updated.values().collect();
    rules.sort_by_key(|x| x.priority);
    out.list("Rules", rules, output::rule);
    for (id, rule) in updated {
        r.rules.insert(id, rule);
    }
    Ok(out.finish())
}

fn describe_rules(r: &Elbv2Region, p: &Node<'_>) -> Result<String, AwsError> {
    let arns = p.str_list("RuleArns")?;
    let listener = p.str("ListenerArn");
    let rules: Vec<RuleRef<'_>> = match (&arns, listener) {
        (Some(_), Some(_)) => {
            return Err(validation_error(
                "ListenerArn and RuleArns cannot both be specified",
            ))
        }
        (None, None) => {
            return Err(validation_error(
                "A listener ARN or rule ARNs must be specified",
            ))
        }
        (Some(arns), None) => {
            let mut v = Vec::new();
            for a in arns {
                v.push(find_rule(r, a)?);
            }
            v
        }
        (None, Some(l)) => {
            let l = find_listener(r, l)?;
            let mut v: Vec<RuleRef<'_>> =
                r.rules_of(&l.id).into_iter().map(RuleRef::Rule).collect();
            v.push(RuleRef::Default(l));
            v
        }
    };
    let key = |x: &RuleRef<'_>| match x {
        RuleRef::Rule(rule) => format!("{:05}/{}", rule.priority, rule.id),
        RuleRef::Default(l) => format!("99999/{}", l.default_rule_id),
    };
    let (rules, next) = page(rules, key, p)?;
    let mut out = XmlWriter::new();
    out.list("Rules", rules, write_rule);
    Ok(wrote(out, next))
}

// ---- tags ----------------------------------------------------------------------------------

/// The tags of the resource `arn`, for reading or changing.
fn tags_of<'a>(r: &'a mut Elbv2Region, arn: &str) -> Result<&'a mut Vec<Tag>, AwsError> {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
    if resource.starts_with("loadbalancer/") {
        return r
            .load_balancers
            .values_mut()
            .find(|x| x.arn == arn)
            .map(|x| &mut x.tags)
            .ok_or_else(|| lb_not_found(arn));
    }
    if resource.starts_with("targetgroup/") {
        return r
            .target_groups
            .values_mut()
            .find(|x| x.arn == arn)
            .map(|x| &mut x.tags)
            .ok_or_else(|| tg_not_found(arn));
    }
    if resource.starts_with("listener/") {
        return r
            .listeners
            .values_mut()
            .find(|x| x.arn == arn)
            .map(|x| &mut x.tags)
            .ok_or_else(|| listener_not_found(arn));
    }
    if resource.starts_with("listener-rule/") {
        if r.rules.values().any(|x| x.arn == arn) {
            return r
                .rules
                .values_mut()
                .find(|x| x.arn == arn)
                .map(|x| &mut x.tags)
                .ok_or_else(|| rule_not_found(arn));
        }
        return r
            .listeners
            .values_mut()
            .find(|l| default_rule_arn(l) == arn)
            .map(|l| &mut l.default_rule_tags)
            .ok_or_else(|| rule_not_found(arn));
    }
    Err(validation_error(format!(
        "'{arn}' is not a valid Elastic Load Balancing resource ARN"
    )))
}

fn resource_arns(p: &Node<'_>) -> Result<Vec<String>, AwsError> {
    let arns = p
        .str_list("ResourceArns")?
        .ok_or_else(|| validation_error("ResourceArns must be specified"))?;
    if arns.is_empty() || arns.len() > 20 {
        return Err(validation_error(
            "Between 1 and 20 resource ARNs must be specified",
        ));
    }
    Ok(arns)
}

fn add_tags(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arns = resource_arns(p)?;
    let tags = input::tags(p, "Tags")?;
    if tags.is_empty() {
        return Err(validation_error("At least one tag must be specified"));
    }
    // Validate every resource first, then change.
    let mut copy = w.regions.get(&w.region).cloned().unwrap_or_default();
    for arn in &arns {
        let t = tags_of(&mut copy, arn)?;
        *t = input::merge_tags(t, &tags)?;
    }
    *w.r() = copy;
    Ok(String::new())
}

fn remove_tags(w: &mut World, p: &Node<'_>) -> Result<String, AwsError> {
    let arns = resource_arns(p)?;
    let keys = p
        .str_list("TagKeys")?
        .ok_or_else(|| validation_error("TagKeys must be specified"))?;
    let mut copy = w.regions.get(&w.region).cloned().unwrap_or_default();
    for arn in &arns {
        let t = tags_of(&mut copy, arn)?;
        t.retain(|x| !keys.contains(&x.key));
    }
    *w.r() = copy;
    Ok(String::new())
}

fn describe_tags(r: &Elbv2Region, p: &Node<'_>) -> Result<String, AwsError> {
    let arns = resource_arns(p)?;
    let mut copy = r.clone();
    let mut found = Vec::new();
    for arn in &arns {
        found.push((arn.clone(), tags_of(&mut copy, arn)?.clone()));
    }
    let mut out = XmlWriter::new();
    out.list("TagDescriptions", &found, |x, (arn, tags)| {
        x.elem("ResourceArn", arn);
        if !tags.is_empty() {
            output::tags(x, tags);
        }
    });
    Ok(out.finish())
}

// ---- limits --------------------------------------------------------------------------------

fn describe_account_limits(p: &Node<'_>) -> Result<String, AwsError> {
    let limits = [
        ("application-load-balancers", MAX_LOAD_BALANCERS.to_string()),
        ("target-groups", MAX_TARGET_GROUPS.to_string()),
        (
            "listeners-per-application-load-balancer",
            MAX_LISTENERS.to_string(),
        ),
        ("rules-per-application-load-balancer", MAX_RULES.to_string()),
        (
            "targets-per-application-load-balancer",
            MAX_TARGETS.to_string(),
        ),
        (
            "condition-values-per-alb-rule",
            input::MAX_CONDITION_VALUES.to_string(),
        ),
    ];
    let (limits, next) = page(limits.to_vec(), |l| l.0.to_string(), p)?;
    let mut out = XmlWriter::new();
    out.list("Limits", &limits, |x, (n, m)| {
        x.elem("Name", n).elem("Max", m);
    });
    Ok(wrote(out, next))
}
