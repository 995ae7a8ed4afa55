//! Reading and validating ELBv2 input: names, tags, actions, conditions, health checks and
//! attributes, with ELBv2's limits and error codes. Nothing here touches the state but to
//! look records up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use berth_aws::query::{validation_error, Node};
use berth_aws::AwsError;

use super::model::*;

pub(crate) fn err(code: &str, message: impl Into<String>) -> AwsError {
    AwsError::client(code, message)
}

/// An `InvalidConfigurationRequest`.
pub(crate) fn invalid_config(message: impl Into<String>) -> AwsError {
    err("InvalidConfigurationRequest", message)
}

/// A load balancer or target group name: 1–32 of `[A-Za-z0-9-]`, no hyphen first or last.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), AwsError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(validation_error(format!(
            "{kind} name '{name}' is not valid: it must have 1 to 32 characters, only \
             alphanumerics and hyphens, and must not begin or end with a hyphen"
        )));
    }
    Ok(())
}

fn tag_chars_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
}

/// `Tags.member.N.{Key,Value}` (absent: no tags).
pub(crate) fn tags(node: &Node<'_>, name: &str) -> Result<Vec<Tag>, AwsError> {
    let Some(items) = node.list(name)? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<Tag> = Vec::new();
    for item in items {
        let key = item.req_str("Key")?.to_string();
        let value = item.str("Value").unwrap_or_default().to_string();
        if key.is_empty() || key.chars().count() > 128 || !tag_chars_ok(&key) {
            return Err(validation_error(format!("Tag key '{key}' is not valid")));
        }
        if key.starts_with("aws:") {
            return Err(validation_error(format!(
                "Tag key '{key}': keys beginning with 'aws:' are reserved"
            )));
        }
        if value.chars().count() > 256 || !tag_chars_ok(&value) {
            return Err(validation_error(format!(
                "Tag value '{value}' of key '{key}' is not valid"
            )));
        }
        if out.iter().any(|t| t.key == key) {
            return Err(err(
                "DuplicateTagKeys",
                format!("Tag key '{key}' is given more than once"),
            ));
        }
        out.push(Tag { key, value });
    }
    Ok(out)
}

/// The most tags one resource may have.
pub(crate) const MAX_TAGS: usize = 50;

/// `existing` with `new` merged in (new values win); `TooManyTags` past [`MAX_TAGS`].
pub(crate) fn merge_tags(existing: &[Tag], new: &[Tag]) -> Result<Vec<Tag>, AwsError> {
    let mut out = existing.to_vec();
    for t in new {
        match out.iter_mut().find(|o| o.key == t.key) {
            Some(o) => o.value = t.value.clone(),
            None => out.push(t.clone()),
        }
    }
    if out.len() > MAX_TAGS {
        return Err(err(
            "TooManyTags",
            format!("A resource can have at most {MAX_TAGS} tags"),
        ));
    }
    Ok(out)
}

/// A port parameter (1–65535).
pub(crate) fn port(node: &Node<'_>, name: &str) -> Result<Option<u16>, AwsError> {
    Ok(node.int_in(name, 1, 65535)?.map(|p| p as u16))
}

fn enum_value<'a>(
    node: &Node<'a>,
    name: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, AwsError> {
    match node.str(name) {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v)),
        Some(v) => Err(validation_error(format!(
            "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: \
             Member must satisfy enum value set: [{}]",
            node.path(name),
            allowed.join(", ")
        ))),
    }
}

pub(crate) fn enum_str<'a>(
    node: &Node<'a>,
    name: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, AwsError> {
    enum_value(node, name, allowed)
}

// ---- actions -------------------------------------------------------------------------------

/// Looks target groups up for actions.
pub(crate) trait TgLookup {
    fn tg(&self, arn: &str) -> Option<&TargetGroup>;
}

impl TgLookup for Elbv2Region {
    fn tg(&self, arn: &str) -> Option<&TargetGroup> {
        self.tg_by_arn(arn)
    }
}

const ACTION_TYPES: &[&str] = &[
    "forward",
    "authenticate-oidc",
    "authenticate-cognito",
    "redirect",
    "fixed-response",
    "jwt-validation",
];

const CONTENT_TYPES: &[&str] = &[
    "text/plain",
    "text/css",
    "text/html",
    "application/javascript",
    "application/json",
];

/// Reads and validates `Actions.member.N` (or `DefaultActions`): exactly one terminal action
/// (forward, redirect, fixed-response), last in order; target groups exist, are HTTP, and are
/// not used by another load balancer (`lb_arn`).
pub(crate) fn actions(
    node: &Node<'_>,
    name: &str,
    tgs: &dyn TgLookup,
    lb_arn: &str,
    region: &Elbv2Region,
) -> Result<Vec<Action>, AwsError> {
    let items = node.list(name)?.unwrap_or_default();
    if items.is_empty() {
        return Err(validation_error(format!(
            "At least one action must be specified in {name}"
        )));
    }
    let mut out = Vec::new();
    for item in &items {
        let kind = enum_value(item, "Type", ACTION_TYPES)?
            .ok_or_else(|| validation_error("An action must have a Type"))?;
        let order = item.int_in("Order", 1, 50000)?.map(|o| o as u32);
        let mut a = Action {
            kind: kind.to_string(),
            order,
            forward: Vec::new(),
            single_target_group: false,
            stickiness: None,
            redirect: None,
            fixed_response: None,
        };
        match kind {
            "forward" => forward(item, &mut a, tgs, lb_arn, region)?,
            "redirect" => a.redirect = Some(redirect(item)?),
            "fixed-response" => a.fixed_response = Some(fixed_response(item)?),
            other => {
                return Err(err(
                    "InvalidLoadBalancerAction",
                    format!(
                        "Action type '{other}' needs an HTTPS listener and an identity provider, \
                         which Berth does not have"
                    ),
                ))
            }
        }
        out.push(a);
    }
    if out.len() > 1 {
        // Orders: given for all, unique; the terminal action last.
        if out.iter().any(|a| a.order.is_none()) {
            return Err(validation_error(
                "Every action must have an Order when there is more than one",
            ));
        }
        return Err(err(
            "TooManyActions",
            "Only one terminal action (forward, redirect or fixed-response) is allowed; \
             authenticate actions are not supported here",
        ));
    }
    Ok(out)
}

fn forward(
    item: &Node<'_>,
    a: &mut Action,
    tgs: &dyn TgLookup,
    lb_arn: &str,
    region: &Elbv2Region,
) -> Result<(), AwsError> {
    let single = item.str("TargetGroupArn");
    let cfg = item.child("ForwardConfig");
    let mut groups: Vec<WeightedGroup> = Vec::new();
    if let Some(cfg) = &cfg {
        for g in cfg.list("TargetGroups")?.unwrap_or_default() {
            let arn = g.req_str("TargetGroupArn")?.to_string();
            let weight = g.int_in("Weight", 0, 999)?.unwrap_or(1) as u32;
            if groups.iter().any(|x| x.target_group_arn == arn) {
                return Err(validation_error(format!(
                    "Target group '{arn}' is given more than once in a forward action"
                )));
            }
            groups.push(WeightedGroup {
                target_group_arn: arn,
                weight,
            });
        }
        if let Some(st) = cfg.child("TargetGroupStickinessConfig") {
            let enabled = st.bool("Enabled")?.unwrap_or(false);
            let duration = st.int_in("DurationSeconds", 1, 604_800)?.map(|d| d as u32);
            if enabled && duration.is_none() {
                return Err(validation_error(
                    "A stickiness duration must be specified when target group stickiness is enabled",
                ));
            }
            a.stickiness = Some((enabled, duration));
        }
    }
    match (single, groups.is_empty()) {
        (Some(arn), true) => {
            groups.push(WeightedGroup {
                target_group_arn: arn.to_string(),
                weight: 1,
            });
            a.single_target_group = true;
        }
        (Some(arn), false) => {
            if groups.len() != 1 || groups[0].target_group_arn != arn {
                return Err(validation_error(
                    "TargetGroupArn and ForwardConfig must name the same single target group \
                     when both are given",
                ));
            }
            a.single_target_group = true;
        }
        (None, true) => {
            return Err(validation_error(
                "A forward action needs a TargetGroupArn or ForwardConfig.TargetGroups",
            ))
        }
        (None, false) => {}
    }
    if groups.len() > 5 {
        return Err(err(
            "TooManyTargetGroups",
            "A forward action can have at most 5 target groups",
        ));
    }
    for g in &groups {
        check_tg_arn(&g.target_group_arn)?;
        let tg = tgs.tg(&g.target_group_arn).ok_or_else(|| {
            err(
                "TargetGroupNotFound",
                format!("Target group '{}' not found", g.target_group_arn),
            )
        })?;
        let users = region.load_balancers_of(&tg.arn);
        if users.iter().any(|u| u != lb_arn) {
            return Err(err(
                "TargetGroupAssociationLimit",
                format!(
                    "The target group '{}' is already associated with a different load balancer",
                    tg.arn
                ),
            ));
        }
    }
    a.forward = groups;
    Ok(())
}

fn redirect(item: &Node<'_>) -> Result<Redirect, AwsError> {
    let cfg = item
        .child("RedirectConfig")
        .ok_or_else(|| validation_error("A redirect action needs a RedirectConfig"))?;
    let status_code = enum_value(&cfg, "StatusCode", &["HTTP_301", "HTTP_302"])?
        .ok_or_else(|| validation_error("RedirectConfig.StatusCode must be specified"))?
        .to_string();
    let protocol = cfg.str("Protocol").unwrap_or("#{protocol}").to_string();
    if !["HTTP", "HTTPS", "#{protocol}"].contains(&protocol.as_str()) {
        return Err(validation_error(format!(
            "Redirect protocol '{protocol}' must be HTTP, HTTPS or #{{protocol}}"
        )));
    }
    let port = cfg.str("Port").unwrap_or("#{port}").to_string();
    if port != "#{port}" && !matches!(port.parse::<u32>(), Ok(1..=65535)) {
        return Err(validation_error(format!(
            "Redirect port '{port}' must be 1-65535 or #{{port}}"
        )));
    }
    let host = cfg.str("Host").unwrap_or("#{host}").to_string();
    let path = cfg.str("Path").unwrap_or("/#{path}").to_string();
    let query = cfg.str("Query").unwrap_or("#{query}").to_string();
    if host.is_empty() || host.chars().count() > 128 {
        return Err(validation_error(
            "Redirect host must have 1 to 128 characters",
        ));
    }
    if !path.starts_with('/') || path.chars().count() > 128 {
        return Err(validation_error(
            "Redirect path must begin with '/' and have at most 128 characters",
        ));
    }
    if query.chars().count() > 128 {
        return Err(validation_error(
            "Redirect query must have at most 128 characters",
        ));
    }
    let r = Redirect {
        protocol,
        port,
        host,
        path,
        query,
        status_code,
    };
    if r.protocol == "#{protocol}"
        && r.port == "#{port}"
        && r.host == "#{host}"
        && r.path == "/#{path}"
        && r.query == "#{query}"
    {
        return Err(err(
            "InvalidLoadBalancerAction",
            "The redirect leaves the URL unchanged (it would loop): change at least one of \
             protocol, port, host, path or query",
        ));
    }
    Ok(r)
}

fn fixed_response(item: &Node<'_>) -> Result<FixedResponse, AwsError> {
    let cfg = item
        .child("FixedResponseConfig")
        .ok_or_else(|| validation_error("A fixed-response action needs a FixedResponseConfig"))?;
    let status_code = cfg.req_str("StatusCode")?.to_string();
    let b = status_code.as_bytes();
    if !(b.len() == 3 && matches!(b[0], b'2' | b'4' | b'5') && b.iter().all(u8::is_ascii_digit)) {
        return Err(validation_error(format!(
            "Fixed response status code '{status_code}' must be 2XX, 4XX or 5XX"
        )));
    }
    let content_type = cfg.str("ContentType").map(str::to_string);
    if let Some(ct) = &content_type {
        if !CONTENT_TYPES.contains(&ct.as_str()) {
            return Err(validation_error(format!(
                "Fixed response content type '{ct}' must be one of {}",
                CONTENT_TYPES.join(", ")
            )));
        }
    }
    let message_body = cfg.str("MessageBody").map(str::to_string);
    if message_body.as_ref().is_some_and(|m| m.len() > 1024) {
        return Err(validation_error(
            "Fixed response message body must have at most 1024 bytes",
        ));
    }
    Ok(FixedResponse {
        status_code,
        content_type,
        message_body,
    })
}

// ---- conditions ----------------------------------------------------------------------------

const FIELDS: &[&str] = &[
    "path-pattern",
    "host-header",
    "http-header",
    "http-request-method",
    "query-string",
    "source-ip",
];

/// The most values one condition may have.
pub(crate) const MAX_CONDITION_VALUES: usize = 5;

fn pattern_ok(field: &str, v: &str) -> Result<(), AwsError> {
    let len = v.chars().count();
    if len == 0 || len > 128 {
        return Err(validation_error(format!(
            "Condition value '{v}' of {field} must have 1 to 128 characters"
        )));
    }
    let allowed = |c: char| match field {
        "path-pattern" => c.is_ascii_alphanumeric() || "_-.$/~\"'@:+&*?".contains(c),
        "host-header" => c.is_ascii_alphanumeric() || "-.*?".contains(c),
        "http-request-method" => c.is_ascii_uppercase() || c == '_' || c == '-',
        // http-header and query-string values: printable ASCII.
        _ => (' '..='~').contains(&c),
    };
    if let Some(bad) = v.chars().find(|&c| !allowed(c)) {
        return Err(validation_error(format!(
            "Condition value '{v}' of {field} contains a character that is not allowed: '{bad}'"
        )));
    }
    if field == "http-request-method" && len > 40 {
        return Err(validation_error(format!(
            "HTTP request method '{v}' must have at most 40 characters"
        )));
    }
    Ok(())
}

fn check_cidr(v: &str) -> Result<(), AwsError> {
    let bad = || validation_error(format!("'{v}' is not a valid CIDR block"));
    let (addr, len) = v.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

fn values_of(node: &Node<'_>, name: &str) -> Result<Vec<String>, AwsError> {
    Ok(node.str_list(name)?.unwrap_or_default())
}

/// Reads and validates `Conditions.member.N`: legacy `Field`+`Values` or the `*Config` forms;
/// at most [`MAX_CONDITION_VALUES`] values each; path-pattern, host-header,
/// http-request-method and source-ip at most once per rule; patterns at most 128 characters
/// of the allowed set.
pub(crate) fn conditions(node: &Node<'_>, name: &str) -> Result<Vec<Condition>, AwsError> {
    let items = node.list(name)?.unwrap_or_default();
    let mut out: Vec<Condition> = Vec::new();
    for item in &items {
        let configs: Vec<(&str, &str)> = [
            ("PathPatternConfig", "path-pattern"),
            ("HostHeaderConfig", "host-header"),
            ("HttpHeaderConfig", "http-header"),
            ("HttpRequestMethodConfig", "http-request-method"),
            ("QueryStringConfig", "query-string"),
            ("SourceIpConfig", "source-ip"),
        ]
        .into_iter()
        .filter(|(c, _)| item.has(c))
        .collect();
        if configs.len() > 1 {
            return Err(validation_error(
                "A condition can have only one of the *Config members",
            ));
        }
        let field = match (item.str("Field"), configs.first()) {
            (Some(f), Some((_, cf))) if f != *cf => {
                return Err(validation_error(format!(
                    "Condition field '{f}' does not match its configuration ({cf})"
                )))
            }
            (Some(f), _) => f.to_string(),
            (None, Some((_, cf))) => cf.to_string(),
            (None, None) => return Err(validation_error("A condition must have a Field")),
        };
        if !FIELDS.contains(&field.as_str()) {
            return Err(validation_error(format!(
                "Condition field '{field}' must be one of {}",
                FIELDS.join(", ")
            )));
        }
        if item.has("RegexValues")
            || configs
                .first()
                .and_then(|(c, _)| item.child(c))
                .is_some_and(|c| c.has("RegexValues"))
        {
            return Err(validation_error(
                "Regular expression conditions (RegexValues) are not supported",
            ));
        }
        let legacy = values_of(item, "Values")?;
        let cfg = configs.first().and_then(|(c, _)| item.child(c));
        let mut c = Condition {
            field: field.clone(),
            values: Vec::new(),
            header_name: None,
            query: Vec::new(),
            legacy_values: false,
        };
        match (&cfg, legacy.is_empty()) {
            (Some(_), false) => {
                return Err(validation_error(
                    "A condition can have Values or a *Config, not both",
                ))
            }
            (None, false) => {
                if field != "path-pattern" && field != "host-header" {
                    return Err(validation_error(format!(
                        "Condition field '{field}' needs its {} configuration",
                        configs.first().map(|x| x.0).unwrap_or("*Config")
                    )));
                }
                c.values = legacy;
                c.legacy_values = true;
            }
            (None, true) => {
                return Err(validation_error(format!(
                    "Condition '{field}' has no values"
                )))
            }
            (Some(cfg), true) => match field.as_str() {
                "query-string" => {
                    for kv in cfg.list("Values")?.unwrap_or_default() {
                        let key = kv.str("Key").map(str::to_string);
                        let value = kv.req_str("Value")?.to_string();
                        if let Some(k) = &key {
                            pattern_ok(&field, k)?;
                        }
                        pattern_ok(&field, &value)?;
                        c.query.push(QueryPair { key, value });
                    }
                }
                "http-header" => {
                    let hn = cfg.req_str("HttpHeaderName")?;
                    let token =
                        |ch: char| ch.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(ch);
                    if hn.is_empty() || hn.len() > 40 || !hn.chars().all(token) {
                        return Err(validation_error(format!(
                            "HTTP header name '{hn}' is not valid (1 to 40 token characters)"
                        )));
                    }
                    c.header_name = Some(hn.to_string());
                    c.values = values_of(cfg, "Values")?;
                }
                "source-ip" => {
                    c.values = values_of(cfg, "Values")?;
                    for v in &c.values {
                        check_cidr(v)?;
                    }
                }
                _ => c.values = values_of(cfg, "Values")?,
            },
        }
        let n = if field == "query-string" {
            c.query.len()
        } else {
            c.values.len()
        };
        if n == 0 {
            return Err(validation_error(format!(
                "Condition '{field}' has no values"
            )));
        }
        if n > MAX_CONDITION_VALUES {
            return Err(validation_error(format!(
                "Condition '{field}' has {n} values; at most {MAX_CONDITION_VALUES} are allowed"
            )));
        }
        if field != "query-string" && field != "source-ip" {
            for v in &c.values {
                pattern_ok(&field, v)?;
            }
        }
        if !matches!(field.as_str(), "http-header" | "query-string")
            && out.iter().any(|o| o.field == field)
        {
            return Err(validation_error(format!(
                "A rule can have at most one '{field}' condition"
            )));
        }
        out.push(c);
    }
    Ok(out)
}

// ---- ARNs ----------------------------------------------------------------------------------

fn check_arn(arn: &str, resource: &str, what: &str) -> Result<(), AwsError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "elasticloadbalancing"
        && parts[5].starts_with(resource);
    if !ok {
        return Err(validation_error(format!(
            "'{arn}' is not a valid {what} ARN"
        )));
    }
    Ok(())
}

pub(crate) fn check_lb_arn(arn: &str) -> Result<(), AwsError> {
    check_arn(arn, "loadbalancer/", "load balancer")
}
pub(crate) fn check_tg_arn(arn: &str) -> Result<(), AwsError> {
    check_arn(arn, "targetgroup/", "target group")
}
pub(crate) fn check_listener_arn(arn: &str) -> Result<(), AwsError> {
    check_arn(arn, "listener/", "listener")
}
pub(crate) fn check_rule_arn(arn: &str) -> Result<(), AwsError> {
    check_arn(arn, "listener-rule/", "listener rule")
}

// ---- health checks -------------------------------------------------------------------------

/// Parses a `Matcher.HttpCode` (`200`, `200,202`, `200-299`; codes 200–499) into ranges.
pub(crate) fn parse_matcher(s: &str) -> Result<Vec<(u16, u16)>, AwsError> {
    let bad = || {
        validation_error(format!(
            "Health check matcher '{s}' is not valid: give codes from 200 to 499 as '200', \
             '200,202' or '200-299'"
        ))
    };
    let code = |c: &str| -> Result<u16, AwsError> {
        match c.trim().parse::<u16>() {
            Ok(n) if (200..=499).contains(&n) => Ok(n),
            _ => Err(bad()),
        }
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (code(a)?, code(b)?);
                if a > b {
                    return Err(bad());
                }
                out.push((a, b));
            }
            None => {
                let c = code(part)?;
                out.push((c, c));
            }
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Applies the health check members of `node` to `hc` (CreateTargetGroup and
/// ModifyTargetGroup), then checks the whole.
pub(crate) fn health_check(node: &Node<'_>, hc: &mut HealthCheckSettings) -> Result<(), AwsError> {
    if let Some(p) = enum_value(
        node,
        "HealthCheckProtocol",
        &[
            "HTTP", "HTTPS", "TCP", "TLS", "UDP", "TCP_UDP", "GENEVE", "QUIC", "TCP_QUIC",
        ],
    )? {
        if p != "HTTP" {
            return Err(invalid_config(format!(
                "Health check protocol {p} is not supported: Berth's load balancer checks \
                 targets over HTTP"
            )));
        }
        hc.protocol = p.to_string();
    }
    if let Some(p) = node.str("HealthCheckPort") {
        if p != "traffic-port" && !matches!(p.parse::<u32>(), Ok(1..=65535)) {
            return Err(validation_error(format!(
                "Health check port '{p}' must be 'traffic-port' or 1-65535"
            )));
        }
        hc.port = p.to_string();
    }
    if let Some(e) = node.bool("HealthCheckEnabled")? {
        hc.enabled = e;
    }
    if let Some(p) = node.str("HealthCheckPath") {
        if !p.starts_with('/') || p.len() > 1024 {
            return Err(validation_error(format!(
                "Health check path '{p}' must begin with '/' and have at most 1024 characters"
            )));
        }
        hc.path = p.to_string();
    }
    if let Some(v) = node.int_in("HealthCheckIntervalSeconds", 5, 300)? {
        hc.interval_seconds = v as u32;
    }
    if let Some(v) = node.int_in("HealthCheckTimeoutSeconds", 2, 120)? {
        hc.timeout_seconds = v as u32;
    }
    if let Some(v) = node.int_in("HealthyThresholdCount", 2, 10)? {
        hc.healthy_threshold = v as u32;
    }
    if let Some(v) = node.int_in("UnhealthyThresholdCount", 2, 10)? {
        hc.unhealthy_threshold = v as u32;
    }
    if let Some(m) = node.child("Matcher") {
        if m.has("GrpcCode") {
            return Err(invalid_config(
                "gRPC health checks (Matcher.GrpcCode) are not supported",
            ));
        }
        let code = m.req_str("HttpCode")?;
        parse_matcher(code)?;
        hc.matcher = code.to_string();
    }
    if hc.timeout_seconds >= hc.interval_seconds {
        return Err(validation_error(format!(
            "Health check timeout ({} s) must be smaller than the interval ({} s)",
            hc.timeout_seconds, hc.interval_seconds
        )));
    }
    Ok(())
}

// ---- attributes ----------------------------------------------------------------------------

/// `Attributes.member.N.{Key,Value}`.
pub(crate) fn attributes(node: &Node<'_>) -> Result<Vec<(String, String)>, AwsError> {
    let items = node.list("Attributes")?.unwrap_or_default();
    if items.is_empty() {
        return Err(validation_error("At least one attribute must be specified"));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for i in items {
        let k = i.req_str("Key")?.to_string();
        let v = i.str("Value").unwrap_or_default().to_string();
        if !seen.insert(k.clone()) {
            return Err(validation_error(format!(
                "Attribute '{k}' is given more than once"
            )));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// Load balancer attributes with their defaults (an application load balancer's).
pub(crate) const LB_ATTRIBUTES: &[(&str, &str)] = &[
    ("access_logs.s3.enabled", "false"),
    ("access_logs.s3.bucket", ""),
    ("access_logs.s3.prefix", ""),
    ("client_keep_alive.seconds", "3600"),
    ("connection_logs.s3.enabled", "false"),
    ("connection_logs.s3.bucket", ""),
    ("connection_logs.s3.prefix", ""),
    ("deletion_protection.enabled", "false"),
    ("idle_timeout.timeout_seconds", "60"),
    ("routing.http.desync_mitigation_mode", "defensive"),
    ("routing.http.drop_invalid_header_fields.enabled", "false"),
    ("routing.http.preserve_host_header.enabled", "false"),
    (
        "routing.http.x_amzn_tls_version_and_cipher_suite.enabled",
        "false",
    ),
    ("routing.http.xff_client_port.enabled", "false"),
    ("routing.http.xff_header_processing.mode", "append"),
    ("routing.http2.enabled", "true"),
    ("waf.fail_open.enabled", "false"),
    ("zonal_shift.config.enabled", "false"),
];

/// Target group attributes with their defaults.
pub(crate) const TG_ATTRIBUTES: &[(&str, &str)] = &[
    ("deregistration_delay.timeout_seconds", "300"),
    ("load_balancing.algorithm.anomaly_mitigation", "off"),
    ("load_balancing.algorithm.type", "round_robin"),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
    ),
    ("slow_start.duration_seconds", "0"),
    ("stickiness.app_cookie.cookie_name", ""),
    ("stickiness.app_cookie.duration_seconds", "86400"),
    ("stickiness.enabled", "false"),
    ("stickiness.lb_cookie.duration_seconds", "86400"),
    ("stickiness.type", "lb_cookie"),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.count",
        "1",
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.percentage",
        "off",
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
        "1",
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
        "off",
    ),
];

fn int_range(k: &str, v: &str, lo: i64, hi: i64) -> Result<(), AwsError> {
    match v.parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(()),
        _ => Err(validation_error(format!(
            "Attribute '{k}' must be an integer from {lo} to {hi}, not '{v}'"
        ))),
    }
}

fn one_of(k: &str, v: &str, allowed: &[&str]) -> Result<(), AwsError> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(validation_error(format!(
            "Attribute '{k}' must be one of {}, not '{v}'",
            allowed.join(", ")
        )))
    }
}

/// Checks one load balancer attribute.
pub(crate) fn check_lb_attribute(k: &str, v: &str) -> Result<(), AwsError> {
    if !LB_ATTRIBUTES.iter().any(|(x, _)| *x == k) {
        return Err(validation_error(format!(
            "Load balancer attribute key '{k}' is not recognized"
        )));
    }
    match k {
        "idle_timeout.timeout_seconds" => int_range(k, v, 1, 4000),
        "client_keep_alive.seconds" => int_range(k, v, 60, 604_800),
        "routing.http.desync_mitigation_mode" => {
            one_of(k, v, &["monitor", "defensive", "strictest"])
        }
        "routing.http.xff_header_processing.mode" => {
            one_of(k, v, &["append", "preserve", "remove"])
        }
        _ if k.ends_with(".enabled") => one_of(k, v, &["true", "false"]),
        _ => Ok(()),
    }
}

/// Checks a target group's attributes as they would be after a change (`all`: every key).
pub(crate) fn check_tg_attributes(all: &BTreeMap<String, String>) -> Result<(), AwsError> {
    for (k, v) in all {
        if !TG_ATTRIBUTES.iter().any(|(x, _)| x == k) {
            return Err(validation_error(format!(
                "Target group attribute key '{k}' is not recognized"
            )));
        }
        match k.as_str() {
            "deregistration_delay.timeout_seconds" => int_range(k, v, 0, 3600)?,
            "slow_start.duration_seconds" if v != "0" => int_range(k, v, 30, 900)?,
            "load_balancing.algorithm.type" => {
                if v == "weighted_random" {
                    return Err(invalid_config(
                        "The weighted_random algorithm is not supported by Berth's load \
                         balancer; use round_robin or least_outstanding_requests",
                    ));
                }
                one_of(k, v, &["round_robin", "least_outstanding_requests"])?;
            }
            "load_balancing.algorithm.anomaly_mitigation" => one_of(k, v, &["on", "off"])?,
            "load_balancing.cross_zone.enabled" => {
                one_of(k, v, &["true", "false", "use_load_balancer_configuration"])?
            }
            "stickiness.enabled" => one_of(k, v, &["true", "false"])?,
            "stickiness.type" => one_of(k, v, &["lb_cookie", "app_cookie"])?,
            "stickiness.lb_cookie.duration_seconds" | "stickiness.app_cookie.duration_seconds" => {
                int_range(k, v, 1, 604_800)?
            }
            "stickiness.app_cookie.cookie_name" if v.len() > 256 => {
                return Err(validation_error("The app cookie name is too long"));
            }
            _ if k.ends_with(".count") => int_range(k, v, 1, 1_000_000)?,
            _ if k.ends_with(".percentage") && v != "off" => int_range(k, v, 1, 100)?,
            _ => {}
        }
    }
    let get = |k: &str| all.get(k).map(String::as_str).unwrap_or_default();
    if get("slow_start.duration_seconds") != "0"
        && get("load_balancing.algorithm.type") == "least_outstanding_requests"
    {
        return Err(invalid_config(
            "Slow start cannot be combined with the least_outstanding_requests algorithm",
        ));
    }
    Ok(())
}

/// `defaults` overlaid with `set`.
pub(crate) fn with_defaults(
    defaults: &[(&str, &str)],
    set: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut all: BTreeMap<String, String> = defaults
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in set {
        all.insert(k.clone(), v.clone());
    }
    all
}
