//! What the control plane asks the data plane to serve: the whole desired configuration,
//! applied at once with [`crate::DataPlane::apply`]. Everything here is already validated by
//! the ELBv2 API (ports, patterns, weights); the data plane only refuses what it cannot do
//! (a port it cannot bind).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every listener and target group of every load balancer of this host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub target_groups: Vec<TargetGroup>,
}

/// One listener: a socket and its rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// The listener's ARN.
    pub id: String,
    /// Where it listens (HTTP/1.1 and h2c prior knowledge on the same socket).
    pub bind: SocketAddr,
    /// In evaluation order (ascending priority); the last one is the default rule, with no
    /// conditions. A request no rule matches gets 404 from the load balancer.
    pub rules: Vec<Rule>,
}

/// A rule: all conditions must match (each condition matches when any of its values does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// The rule's ARN.
    pub id: String,
    pub conditions: Vec<Condition>,
    pub action: Action,
}

/// ELBv2 rule conditions. Patterns use ELBv2's syntax: `*` any run of characters, `?` one
/// character; path patterns are case-sensitive and match the path without the query string,
/// host patterns are case-insensitive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Condition {
    PathPattern(Vec<String>),
    HostHeader(Vec<String>),
    /// Header name (case-insensitive) and value patterns (case-insensitive).
    HttpHeader {
        name: String,
        values: Vec<String>,
    },
    /// Methods, exact and case-sensitive (`GET`).
    HttpRequestMethod(Vec<String>),
    /// `(key, value)` patterns; a `None` key matches any key.
    QueryString(Vec<(Option<String>, String)>),
    /// CIDR blocks of the client's address (`10.0.0.0/8`, `::1/128`).
    SourceIp(Vec<String>),
}

/// What a matched rule does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Forward to target groups, one chosen per request by weight (weights 0..=999; a group
    /// with weight 0 gets nothing).
    Forward(Vec<WeightedTargetGroup>),
    /// Answer from the load balancer itself.
    FixedResponse {
        status: u16,
        content_type: Option<String>,
        body: Option<String>,
    },
    /// HTTP redirect; `location` is already resolved except for `#{host}`, `#{path}`,
    /// `#{port}`, `#{query}`, `#{protocol}` placeholders, which the data plane fills from the
    /// request. `status` is 301 or 302.
    Redirect { location: String, status: u16 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedTargetGroup {
    /// The target group's ARN (one of [`Config::target_groups`]).
    pub target_group: String,
    pub weight: u32,
}

/// How a target group picks a target for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastOutstandingRequests,
}

/// The HTTP version spoken to targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProtocolVersion {
    #[default]
    Http1,
    /// HTTP/2 without TLS (h2c prior knowledge).
    Http2,
}

/// A target group and its registered targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetGroup {
    /// The target group's ARN.
    pub id: String,
    pub protocol_version: ProtocolVersion,
    pub algorithm: Algorithm,
    pub health_check: HealthCheck,
    /// A deregistered target keeps serving its in-flight requests (and gets no new ones) for
    /// this long, then its connections are closed.
    pub deregistration_delay: Duration,
    /// A target that turns healthy gets a linearly growing share of requests over this long
    /// (zero: off).
    pub slow_start: Duration,
    pub targets: Vec<Target>,
}

/// Active health checks of a target group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Disabled: every target counts as healthy (ELBv2 reports `unavailable`).
    pub enabled: bool,
    pub path: String,
    /// `None`: the target's own port (ELBv2's `traffic-port`).
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes to turn healthy, failures to turn unhealthy.
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Inclusive status-code ranges counted as success (ELBv2 `Matcher.HttpCode` `200-299`,
    /// `200,302`).
    pub success_codes: Vec<(u16, u16)>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            path: "/".into(),
            port: None,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            success_codes: vec![(200, 200)],
        }
    }
}

/// A registered target: its ELBv2 identity (`id`, `port`) and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// Instance id or IP address, as registered.
    pub id: String,
    pub port: u16,
    pub addr: SocketAddr,
}
