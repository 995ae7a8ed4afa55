//! ELBv2 records, as stored (JSON values under `elbv2-lb/<region>/<name>`,
//! `elbv2-tg/<region>/<name>`, `elbv2-listener/<region>/<id>`, `elbv2-rule/<region>/<id>`).
//! Registered targets live inside their target group's record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every ELBv2 record of one region.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Elbv2Region {
    /// By name.
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    /// By name.
    pub target_groups: BTreeMap<String, TargetGroup>,
    /// By id (the last ARN component).
    pub listeners: BTreeMap<String, Listener>,
    /// By id (the last ARN component); default rules are not here (they are the listener's
    /// default actions).
    pub rules: BTreeMap<String, Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetMapping {
    pub subnet_id: String,
    #[serde(default)]
    pub allocation_id: Option<String>,
    #[serde(default)]
    pub private_ipv4_address: Option<String>,
    #[serde(default)]
    pub ipv6_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub name: String,
    pub arn: String,
    /// The 16-hex id in the ARN.
    pub id: String,
    pub created_at: f64,
    /// `internet-facing` or `internal`.
    pub scheme: String,
    pub ip_address_type: String,
    pub subnets: Vec<SubnetMapping>,
    pub security_groups: Vec<String>,
    /// Attribute key → value (only those set; the rest are defaults).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckSettings {
    pub enabled: bool,
    pub protocol: String,
    /// `traffic-port` or a port number.
    pub port: String,
    pub path: String,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// `Matcher.HttpCode`: `200`, `200,202`, `200-299`.
    pub matcher: String,
}

impl Default for HealthCheckSettings {
    fn default() -> Self {
        HealthCheckSettings {
            enabled: true,
            protocol: "HTTP".into(),
            port: "traffic-port".into(),
            path: "/".into(),
            interval_seconds: 30,
            timeout_seconds: 5,
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: "200".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredTarget {
    pub id: String,
    pub port: u16,
    #[serde(default)]
    pub availability_zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub name: String,
    pub arn: String,
    pub id: String,
    pub created_at: f64,
    pub protocol: String,
    /// `HTTP1` or `HTTP2`.
    pub protocol_version: String,
    pub port: u16,
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// `instance` or `ip`.
    pub target_type: String,
    pub ip_address_type: String,
    pub health_check: HealthCheckSettings,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub targets: Vec<RegisteredTarget>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedGroup {
    pub target_group_arn: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    pub protocol: String,
    pub port: String,
    pub host: String,
    pub path: String,
    pub query: String,
    /// `HTTP_301` or `HTTP_302`.
    pub status_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedResponse {
    pub status_code: String,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub message_body: Option<String>,
}

/// A rule action (only the terminal kinds: forward, redirect, fixed-response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// `forward`, `redirect` or `fixed-response`.
    pub kind: String,
    #[serde(default)]
    pub order: Option<u32>,
    /// forward: the target groups with weights (a single `TargetGroupArn` is one group of
    /// weight 1).
    #[serde(default)]
    pub forward: Vec<WeightedGroup>,
    /// forward: whether `TargetGroupArn` was given (it is echoed back then).
    #[serde(default)]
    pub single_target_group: bool,
    #[serde(default)]
    pub stickiness: Option<(bool, Option<u32>)>,
    #[serde(default)]
    pub redirect: Option<Redirect>,
    #[serde(default)]
    pub fixed_response: Option<FixedResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryPair {
    #[serde(default)]
    pub key: Option<String>,
    pub value: String,
}

/// A rule condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// `path-pattern`, `host-header`, `http-header`, `http-request-method`, `query-string`,
    /// `source-ip`.
    pub field: String,
    /// The values of every field but `query-string`.
    #[serde(default)]
    pub values: Vec<String>,
    /// `http-header` only.
    #[serde(default)]
    pub header_name: Option<String>,
    /// `query-string` only.
    #[serde(default)]
    pub query: Vec<QueryPair>,
    /// Whether the request used the legacy `Values` form (echoed back as given).
    #[serde(default)]
    pub legacy_values: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub id: String,
    pub arn: String,
    pub load_balancer_name: String,
    pub load_balancer_arn: String,
    pub port: u16,
    pub protocol: String,
    pub default_actions: Vec<Action>,
    /// Id of the default rule's ARN.
    pub default_rule_id: String,
    #[serde(default)]
    pub default_rule_tags: Vec<Tag>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub arn: String,
    pub listener_id: String,
    pub priority: u32,
    pub conditions: Vec<Condition>,
    pub actions: Vec<Action>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl Action {
    /// The target groups this action forwards to.
    pub fn target_groups(&self) -> impl Iterator<Item = &str> {
        self.forward.iter().map(|g| g.target_group_arn.as_str())
    }
}

impl Elbv2Region {
    /// The load balancer whose ARN is `arn`.
    pub fn lb_by_arn(&self, arn: &str) -> Option<&LoadBalancer> {
        self.load_balancers.values().find(|l| l.arn == arn)
    }

    /// The target group whose ARN is `arn`.
    pub fn tg_by_arn(&self, arn: &str) -> Option<&TargetGroup> {
        self.target_groups.values().find(|t| t.arn == arn)
    }

    pub fn listener_by_arn(&self, arn: &str) -> Option<&Listener> {
        self.listeners.values().find(|l| l.arn == arn)
    }

    /// The rules of a listener, by ascending priority.
    pub fn rules_of(&self, listener_id: &str) -> Vec<&Rule> {
        let mut v: Vec<&Rule> = self
            .rules
            .values()
            .filter(|r| r.listener_id == listener_id)
            .collect();
        v.sort_by_key(|r| r.priority);
        v
    }

    /// The ARNs of the load balancers whose listeners or rules forward to `tg_arn`.
    pub fn load_balancers_of(&self, tg_arn: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in self.listeners.values() {
            let uses = l
                .default_actions
                .iter()
                .any(|a| a.target_groups().any(|t| t == tg_arn))
                || self.rules.values().any(|r| {
                    r.listener_id == l.id
                        && r.actions
                            .iter()
                            .any(|a| a.target_groups().any(|t| t == tg_arn))
                });
            if uses && !out.contains(&l.load_balancer_arn) {
                out.push(l.load_balancer_arn.clone());
            }
        }
        out.sort();
        out
    }
}
