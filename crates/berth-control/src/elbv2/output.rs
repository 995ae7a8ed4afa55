//! ELBv2 records as botocore's output shapes, in XML.

use std::time::{Duration, UNIX_EPOCH};

use berth_aws::query::{iso8601, XmlWriter};

use super::model::*;

fn time(t: f64) -> String {
    iso8601(UNIX_EPOCH + Duration::from_millis((t.max(0.0) * 1000.0) as u64))
}

/// The availability zone a subnet id stands for: `<region>` + a letter derived from the id
/// (there is no EC2 here; any subnet id is accepted).
pub(crate) fn zone_of(region: &str, subnet: &str) -> String {
    let sum: u32 = subnet.bytes().map(u32::from).sum();
    let letter = (b'a' + (sum % 6) as u8) as char;
    format!("{region}{letter}")
}

pub(crate) fn load_balancer(w: &mut XmlWriter, lb: &LoadBalancer, region: &str, dns: &str) {
    w.elem("LoadBalancerArn", &lb.arn)
        .elem("DNSName", dns)
        .elem("CanonicalHostedZoneId", "Z0BERTH00000000")
        .elem("CreatedTime", &time(lb.created_at))
        .elem("LoadBalancerName", &lb.name)
        .elem("Scheme", &lb.scheme)
        .elem("VpcId", "vpc-berth");
    w.open("State").elem("Code", "active").close("State");
    w.elem("Type", "application");
    w.list("AvailabilityZones", &lb.subnets, |w, s| {
        w.elem("ZoneName", &zone_of(region, &s.subnet_id))
            .elem("SubnetId", &s.subnet_id);
        if s.allocation_id.is_some() || s.private_ipv4_address.is_some() || s.ipv6_address.is_some()
        {
            w.list("LoadBalancerAddresses", [s], |w, s| {
                w.opt("AllocationId", s.allocation_id.as_deref())
                    .opt("PrivateIPv4Address", s.private_ipv4_address.as_deref())
                    .opt("IPv6Address", s.ipv6_address.as_deref());
            });
        }
    });
    w.str_list("SecurityGroups", &lb.security_groups)
        .elem("IpAddressType", &lb.ip_address_type);
}

pub(crate) fn target_group(w: &mut XmlWriter, tg: &TargetGroup, lbs: &[String]) {
    let hc = &tg.health_check;
    w.elem("TargetGroupArn", &tg.arn)
        .elem("TargetGroupName", &tg.name)
        .elem("Protocol", &tg.protocol)
        .num("Port", tg.port)
        .opt("VpcId", tg.vpc_id.as_deref())
        .elem("HealthCheckProtocol", &hc.protocol)
        .elem("HealthCheckPort", &hc.port)
        .bool("HealthCheckEnabled", hc.enabled)
        .num("HealthCheckIntervalSeconds", hc.interval_seconds)
        .num("HealthCheckTimeoutSeconds", hc.timeout_seconds)
        .num("HealthyThresholdCount", hc.healthy_threshold)
        .num("UnhealthyThresholdCount", hc.unhealthy_threshold)
        .elem("HealthCheckPath", &hc.path);
    w.open("Matcher")
        .elem("HttpCode", &hc.matcher)
        .close("Matcher");
    w.str_list("LoadBalancerArns", lbs)
        .elem("TargetType", &tg.target_type)
        .elem("ProtocolVersion", &tg.protocol_version)
        .elem("IpAddressType", &tg.ip_address_type);
}

pub(crate) fn actions(w: &mut XmlWriter, tag: &str, actions: &[Action]) {
    w.list(tag, actions, |w, a| {
        w.elem("Type", &a.kind);
        if a.kind == "forward" {
            if a.single_target_group {
                if let Some(g) = a.forward.first() {
                    w.elem("TargetGroupArn", &g.target_group_arn);
                }
            }
            w.open("ForwardConfig");
            w.list("TargetGroups", &a.forward, |w, g| {
                w.elem("TargetGroupArn", &g.target_group_arn)
                    .num("Weight", g.weight);
            });
            let (enabled, duration) = a.stickiness.unwrap_or((false, None));
            w.open("TargetGroupStickinessConfig")
                .bool("Enabled", enabled);
            if let Some(d) = duration {
                w.num("DurationSeconds", d);
            }
            w.close("TargetGroupStickinessConfig");
            w.close("ForwardConfig");
        }
        if let Some(r) = &a.redirect {
            w.open("RedirectConfig")
                .elem("Protocol", &r.protocol)
                .elem("Port", &r.port)
                .elem("Host", &r.host)
                .elem("Path", &r.path)
                .elem("Query", &r.query)
                .elem("StatusCode", &r.status_code)
                .close("RedirectConfig");
        }
        if let Some(f) = &a.fixed_response {
            w.open("FixedResponseConfig")
                .opt("MessageBody", f.message_body.as_deref())
                .elem("StatusCode", &f.status_code)
                .opt("ContentType", f.content_type.as_deref())
                .close("FixedResponseConfig");
        }
        if let Some(o) = a.order {
            w.num("Order", o);
        }
    });
}

pub(crate) fn listener(w: &mut XmlWriter, l: &Listener) {
    w.elem("ListenerArn", &l.arn)
        .elem("LoadBalancerArn", &l.load_balancer_arn)
        .num("Port", l.port)
        .elem("Protocol", &l.protocol);
    actions(w, "DefaultActions", &l.default_actions);
}

fn condition(w: &mut XmlWriter, c: &Condition) {
    w.elem("Field", &c.field);
    let cfg = match c.field.as_str() {
        "path-pattern" => "PathPatternConfig",
        "host-header" => "HostHeaderConfig",
        "http-header" => "HttpHeaderConfig",
        "http-request-method" => "HttpRequestMethodConfig",
        "query-string" => "QueryStringConfig",
        _ => "SourceIpConfig",
    };
    if c.legacy_values {
        w.str_list("Values", &c.values);
    }
    w.open(cfg);
    if let Some(h) = &c.header_name {
        w.elem("HttpHeaderName", h);
    }
    if c.field == "query-string" {
        w.list("Values", &c.query, |w, kv| {
            w.opt("Key", kv.key.as_deref()).elem("Value", &kv.value);
        });
    } else {
        w.str_list("Values", &c.values);
    }
    w.close(cfg);
}

pub(crate) fn rule(w: &mut XmlWriter, r: &Rule) {
    w.elem("RuleArn", &r.arn)
        .elem("Priority", &r.priority.to_string());
    w.list("Conditions", &r.conditions, condition);
    actions(w, "Actions", &r.actions);
    w.bool("IsDefault", false);
}

pub(crate) fn default_rule(w: &mut XmlWriter, l: &Listener, arn: &str) {
    w.elem("RuleArn", arn).elem("Priority", "default");
    w.list("Conditions", std::iter::empty::<()>(), |_, _| {});
    actions(w, "Actions", &l.default_actions);
    w.bool("IsDefault", true);
}

pub(crate) fn tags(w: &mut XmlWriter, tags: &[Tag]) {
    w.list("Tags", tags, |w, t| {
        w.elem("Key", &t.key).elem("Value", &t.value);
    });
}

pub(crate) fn attributes<'a>(
    w: &mut XmlWriter,
    attrs: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    w.list("Attributes", attrs, |w, (k, v)| {
        w.elem("Key", k).elem("Value", v);
    });
}
