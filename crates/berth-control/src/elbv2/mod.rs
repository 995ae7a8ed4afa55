//! The ELBv2 API (Elastic Load Balancing v2, application load balancers) over the AWS query
//! protocol, and the internal API the ECS service controller uses to register tasks.
//!
//! Member names, shapes and error codes follow botocore's `elbv2/2015-12-01` model.
//!
//! Every mutation runs under one async lock: the handler works on a copy of the ELBv2 records
//! of every region (validating before it changes anything), the whole data-plane
//! configuration is built from the copy and applied (`berth_lb::DataPlane::apply`, which binds
//! the listeners), and only then are the changed records committed through the control
//! plane's `Tx`. A listener that cannot bind therefore stores nothing; a failed commit puts
//! the previous configuration back.
//!
//! - `model`: the records;
//! - `input`: reading and validating parameters (names, tags, actions, conditions, health
//!   checks, attributes);
//! - `output`: records as XML;
//! - `ops`: the operations.

pub mod model;

mod input;
mod ops;
mod output;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use berth_aws::json::RequestContext;
use berth_aws::query::{Params, QueryApi};
use berth_aws::AwsError;

use crate::control::{Control, Tx};
use crate::store::Durability;
use model::*;

/// SigV4 service name of ELBv2.
pub const SIGNING_NAME: &str = "elasticloadbalancing";
/// API version of ELBv2.
pub const VERSION: &str = "2015-12-01";
/// XML namespace of ELBv2 responses.
pub const XMLNS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

/// What the ELBv2 API needs of the data plane (`berth_lb::DataPlane`; a fake in tests).
#[async_trait::async_trait]
pub trait DataPlaneApi: Send + Sync {
    /// Makes `cfg` the whole configuration, or fails and keeps the previous one.
    async fn apply(&self, cfg: berth_lb::Config) -> Result<(), berth_lb::LbError>;
    /// The health of the targets of a target group.
    fn target_health(&self, target_group: &str) -> Vec<berth_lb::TargetHealth>;
}

#[async_trait::async_trait]
impl DataPlaneApi for berth_lb::DataPlane {
    async fn apply(&self, cfg: berth_lb::Config) -> Result<(), berth_lb::LbError> {
        berth_lb::DataPlane::apply(self, cfg).await
    }
    fn target_health(&self, target_group: &str) -> Vec<berth_lb::TargetHealth> {
        berth_lb::DataPlane::target_health(self, target_group)
    }
}

/// The ELBv2 service of a control plane: its records in the control plane's state, the data
/// plane it configures, and the host address listeners bind on.
pub struct Elbv2 {
    control: Arc<Control>,
    data_plane: Arc<dyn DataPlaneApi>,
    host: IpAddr,
    mutation: tokio::sync::Mutex<()>,
}

/// What the ECS service controller needs to know about a target group.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroupInfo {
    pub arn: String,
    pub name: String,
    /// `instance` or `ip`.
    pub target_type: String,
    pub port: u16,
    /// `HTTP`.
    pub protocol: String,
    /// `HTTP1` or `HTTP2`.
    pub protocol_version: String,
    pub load_balancer_arns: Vec<String>,
    pub deregistration_delay: Duration,
    pub slow_start: Duration,
    pub health_check_enabled: bool,
    pub health_check_interval: Duration,
    pub health_check_timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Registered targets, `(id, port)`.
    pub targets: Vec<(String, u16)>,
}

/// The ELBv2 records of every region, and what mutations need to see besides them.
pub(crate) struct World {
    pub regions: BTreeMap<String, Elbv2Region>,
    /// Region → `ec2InstanceId` → the instance's `berth.address` attribute, of container
    /// instances that are not deregistered.
    pub instances: BTreeMap<String, BTreeMap<String, Option<IpAddr>>>,
    pub region: String,
    pub account: String,
}

impl World {
    /// The records of the caller's region.
    pub fn r(&mut self) -> &mut Elbv2Region {
        self.regions.entry(self.region.clone()).or_default()
    }

    pub fn arn(&self, resource: &str) -> String {
        format!(
            "arn:aws:elasticloadbalancing:{}:{}:{resource}",
            self.region, self.account
        )
    }
}

/// A fresh 16-hex id for an ARN.
pub(crate) fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

enum Change {
    PutLb(String, LoadBalancer),
    DeleteLb(String, String),
    PutTg(String, TargetGroup),
    DeleteTg(String, String),
    PutListener(String, Listener),
    DeleteListener(String, String),
    PutRule(String, Rule),
    DeleteRule(String, String),
}

fn diff_map<T: Clone + PartialEq>(
    region: &str,
    old: Option<&BTreeMap<String, T>>,
    new: Option<&BTreeMap<String, T>>,
    put: impl Fn(String, T) -> Change,
    delete: impl Fn(String, String) -> Change,
    out: &mut Vec<Change>,
) {
    let empty = BTreeMap::new();
    let old = old.unwrap_or(&empty);
    let new = new.unwrap_or(&empty);
    for (k, v) in new {
        if old.get(k) != Some(v) {
            out.push(put(region.to_string(), v.clone()));
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.push(delete(region.to_string(), k.clone()));
        }
    }
}

fn diff(old: &BTreeMap<String, Elbv2Region>, new: &BTreeMap<String, Elbv2Region>) -> Vec<Change> {
    let mut out = Vec::new();
    let mut regions: Vec<&String> = old.keys().chain(new.keys()).collect();
    regions.sort();
    regions.dedup();
    for r in regions {
        let (o, n) = (old.get(r), new.get(r));
        diff_map(
            r,
            o.map(|x| &x.load_balancers),
            n.map(|x| &x.load_balancers),
            Change::PutLb,
            Change::DeleteLb,
            &mut out,
        );
        diff_map(
            r,
            o.map(|x| &x.target_groups),
            n.map(|x| &x.target_groups),
            Change::PutTg,
            Change::DeleteTg,
            &mut out,
        );
        diff_map(
            r,
            o.map(|x| &x.listeners),
            n.map(|x| &x.listeners),
            Change::PutListener,
            Change::DeleteListener,
            &mut out,
        );
        diff_map(
            r,
            o.map(|x| &x.rules),
            n.map(|x| &x.rules),
            Change::PutRule,
            Change::DeleteRule,
            &mut out,
        );
    }
    out
}

fn commit(tx: &mut Tx<'_>, changes: Vec<Change>) {
    for c in changes {
        match c {
            Change::PutLb(r, v) => tx.put_elbv2_lb(&r, v),
            Change::DeleteLb(r, k) => tx.delete_elbv2_lb(&r, &k),
            Change::PutTg(r, v) => tx.put_elbv2_tg(&r, v),
            Change::DeleteTg(r, k) => tx.delete_elbv2_tg(&r, &k),
            Change::PutListener(r, v) => tx.put_elbv2_listener(&r, v),
            Change::DeleteListener(r, k) => tx.delete_elbv2_listener(&r, &k),
            Change::PutRule(r, v) => tx.put_elbv2_rule(&r, v),
            Change::DeleteRule(r, k) => tx.delete_elbv2_rule(&r, &k),
        }
    }
}

/// Where a target is reached.
fn target_addr(
    tg: &TargetGroup,
    t: &RegisteredTarget,
    instances: Option<&BTreeMap<String, Option<IpAddr>>>,
) -> Option<SocketAddr> {
    if tg.target_type == "ip" {
        return t
            .id
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, t.port));
    }
    match instances.and_then(|m| m.get(&t.id)) {
        Some(Some(ip)) => Some(SocketAddr::new(*ip, t.port)),
        Some(None) => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), t.port)),
        None => None,
    }
}

fn lb_action(a: &Action) -> berth_lb::config::Action {
    use berth_lb::config::{Action as A, WeightedTargetGroup};
    if let Some(f) = &a.fixed_response {
        return A::FixedResponse {
            status: f.status_code.parse().unwrap_or(503),
            content_type: f.content_type.clone(),
            body: f.message_body.clone(),
        };
    }
    if let Some(r) = &a.redirect {
        let proto = match r.protocol.as_str() {
            "HTTP" => "http".to_string(),
            "HTTPS" => "https".to_string(),
            other => other.to_string(),
        };
        let mut location = format!("{proto}://{}:{}{}", r.host, r.port, r.path);
        if !r.query.is_empty() {
            location.push('?');
            location.push_str(&r.query);
        }
        return A::Redirect {
            location,
            status: if r.status_code == "HTTP_301" {
                301
            } else {
                302
            },
        };
    }
    A::Forward(
        a.forward
            .iter()
            .map(|g| WeightedTargetGroup {
                target_group: g.target_group_arn.clone(),
                weight: g.weight,
            })
            .collect(),
    )
}

fn lb_condition(c: &Condition) -> berth_lb::config::Condition {
    use berth_lb::config::Condition as C;
    match c.field.as_str() {
        "path-pattern" => C::PathPattern(c.values.clone()),
        "host-header" => C::HostHeader(c.values.clone()),
        "http-header" => C::HttpHeader {
            name: c.header_name.clone().unwrap_or_default(),
            values: c.values.clone(),
        },
        "http-request-method" => C::HttpRequestMethod(c.values.clone()),
        "query-string" => C::QueryString(
            c.query
                .iter()
                .map(|q| (q.key.clone(), q.value.clone()))
                .collect(),
        ),
        _ => C::SourceIp(c.values.clone()),
    }
}

fn secs(attrs: &BTreeMap<String, String>, key: &str, default: u64) -> Duration {
    Duration::from_secs(
        attrs
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// The default rule's ARN of a listener.
pub(crate) fn default_rule_arn(l: &Listener) -> String {
    rule_arn_of(l, &l.default_rule_id)
}

/// The ARN of rule `id` of listener `l`.
pub(crate) fn rule_arn_of(l: &Listener, id: &str) -> String {
    // listener/app/NAME/LB/ID → listener-rule/app/NAME/LB/ID/RULE
    format!(
        "{}/{id}",
        l.arn.replacen(":listener/", ":listener-rule/", 1)
    )
}

/// The data plane's configuration for `regions`: every listener on `host`, its rules by
/// priority then the default rule; every target group with its targets' addresses.
pub(crate) fn build_config(
    regions: &BTreeMap<String, Elbv2Region>,
    instances: &BTreeMap<String, BTreeMap<String, Option<IpAddr>>>,
    host: IpAddr,
) -> berth_lb::Config {
    let mut cfg = berth_lb::Config::default();
    for (region, r) in regions {
        for l in r.listeners.values() {
            let mut rules: Vec<berth_lb::config::Rule> = r
                .rules_of(&l.id)
                .into_iter()
                .filter_map(|rule| {
                    Some(berth_lb::config::Rule {
                        id: rule.arn.clone(),
                        conditions: rule.conditions.iter().map(lb_condition).collect(),
                        action: lb_action(rule.actions.last()?),
                    })
                })
                .collect();
            if let Some(a) = l.default_actions.last() {
                rules.push(berth_lb::config::Rule {
                    id: default_rule_arn(l),
                    conditions: Vec::new(),
                    action: lb_action(a),
                });
            }
            cfg.listeners.push(berth_lb::config::Listener {
                id: l.arn.clone(),
                bind: SocketAddr::new(host, l.port),
                rules,
            });
        }
        for tg in r.target_groups.values() {
            let hc = &tg.health_check;
            let algorithm = match tg
                .attributes
                .get("load_balancing.algorithm.type")
                .map(String::as_str)
            {
                Some("least_outstanding_requests") => {
                    berth_lb::config::Algorithm::LeastOutstandingRequests
                }
                _ => berth_lb::config::Algorithm::RoundRobin,
            };
            let targets = tg
                .targets
                .iter()
                .filter_map(|t| match target_addr(tg, t, instances.get(region)) {
                    Some(addr) => Some(berth_lb::config::Target {
                        id: t.id.clone(),
                        port: t.port,
                        addr,
                    }),
                    None => {
                        tracing::warn!(target_group = %tg.arn, target = %t.id,
                            "target's container instance is gone; not served");
                        None
                    }
                })
                .collect();
            cfg.target_groups.push(berth_lb::config::TargetGroup {
                id: tg.arn.clone(),
                protocol_version: if tg.protocol_version == "HTTP2" {
                    berth_lb::config::ProtocolVersion::Http2
                } else {
                    berth_lb::config::ProtocolVersion::Http1
                },
                algorithm,
                health_check: berth_lb::config::HealthCheck {
                    enabled: hc.enabled,
                    path: hc.path.clone(),
                    port: hc.port.parse().ok(),
                    interval: Duration::from_secs(hc.interval_seconds.into()),
                    timeout: Duration::from_secs(hc.timeout_seconds.into()),
                    healthy_threshold: hc.healthy_threshold,
                    unhealthy_threshold: hc.unhealthy_threshold,
                    success_codes: input::parse_matcher(&hc.matcher)
                        .unwrap_or_else(|_| vec![(200, 200)]),
                },
                deregistration_delay: secs(
                    &tg.attributes,
                    "deregistration_delay.timeout_seconds",
                    300,
                ),
                slow_start: secs(&tg.attributes, "slow_start.duration_seconds", 0),
                targets,
            });
        }
    }
    cfg
}

fn bind_error(e: &berth_lb::LbError) -> AwsError {
    AwsError::client(
        "InvalidConfigurationRequest",
        format!(
            "The load balancer cannot be configured: {}",
            crate::error_chain(e)
        ),
    )
}

impl Elbv2 {
    /// The ELBv2 service over `control`, configuring `data_plane`, with listeners on `host`.
    pub fn new(
        control: Arc<Control>,
        data_plane: Arc<berth_lb::DataPlane>,
        host: IpAddr,
    ) -> Arc<Elbv2> {
        Elbv2::with_data_plane(control, data_plane, host)
    }

    /// The ELBv2 service over any [`DataPlaneApi`].
    pub fn with_data_plane(
        control: Arc<Control>,
        data_plane: Arc<dyn DataPlaneApi>,
        host: IpAddr,
    ) -> Arc<Elbv2> {
        Arc::new(Elbv2 {
            control,
            data_plane,
            host,
            mutation: tokio::sync::Mutex::new(()),
        })
    }

    /// The address listeners bind on (and every load balancer's DNSName).
    pub fn host(&self) -> IpAddr {
        self.host
    }

    fn world(&self, region: &str, account: &str) -> World {
        self.control.read(|s| {
            let regions = s
                .regions
                .iter()
                .map(|(k, r)| (k.clone(), r.elbv2.clone()))
                .collect();
            let instances = s
                .regions
                .iter()
                .map(|(k, r)| {
                    let m = r
                        .instances
                        .values()
                        .flat_map(|m| m.values())
                        .filter(|i| i.status != "INACTIVE")
                        .map(|i| {
                            let addr = i
                                .attributes
                                .get("berth.address")
                                .and_then(|v| v.as_deref())
                                .and_then(|v| v.parse::<IpAddr>().ok());
                            (i.ec2_instance_id.clone(), addr)
                        })
                        .collect();
                    (k.clone(), m)
                })
                .collect();
            World {
                regions,
                instances,
                region: region.to_string(),
                account: account.to_string(),
            }
        })
    }

    /// The records of one region (a copy).
    fn region(&self, region: &str) -> Elbv2Region {
        self.control.read(|s| {
            s.region(region)
                .map(|r| r.elbv2.clone())
                .unwrap_or_default()
        })
    }

    /// Builds the data plane's configuration from the stored state and applies it (at start,
    /// and whenever container instances' addresses may have changed).
    pub async fn apply_stored(&self) -> Result<(), berth_lb::LbError> {
        let _g = self.mutation.lock().await;
        let w = self.world("", "");
        self.data_plane
            .apply(build_config(&w.regions, &w.instances, self.host))
            .await
    }

    /// Runs a mutation on a copy of the records, applies the resulting configuration to the
    /// data plane, then commits the changed records. Nothing is stored when `f` or the data
    /// plane fails.
    pub(crate) async fn mutate<R>(
        &self,
        region: &str,
        account: &str,
        f: impl FnOnce(&mut World) -> Result<R, AwsError>,
    ) -> Result<R, AwsError> {
        let _g = self.mutation.lock().await;
        let mut world = self.world(region, account);
        let before = world.regions.clone();
        let out = f(&mut world)?;
        let changes = diff(&before, &world.regions);
        if changes.is_empty() {
            return Ok(out);
        }
        let cfg = build_config(&world.regions, &world.instances, self.host);
        if let Err(e) = self.data_plane.apply(cfg).await {
            tracing::warn!(error = %crate::error_chain(&e), "load balancer configuration refused; nothing changed");
            return Err(bind_error(&e));
        }
        let control = self.control.clone();
        let committed = tokio::task::spawn_blocking(move || {
            control.write(Durability::Immediate, |tx| {
                commit(tx, changes);
                Ok(())
            })
        })
        .await
        .unwrap_or_else(|e| Err(AwsError::internal(format!("commit task failed: {e}"))));
        if let Err(e) = committed {
            let old = build_config(&before, &world.instances, self.host);
            if let Err(e2) = self.data_plane.apply(old).await {
                tracing::error!(error = %crate::error_chain(&e2), "cannot restore the previous load balancer configuration");
            }
            return Err(e);
        }
        Ok(out)
    }

    /// Registers `targets` (`(id, port)`; port 0: the group's port) with a target group, as
    /// RegisterTargets does.
    pub async fn register_targets(
        &self,
        region: &str,
        target_group_arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), AwsError> {
        let list: Vec<ops::TargetSpec> = targets
            .iter()
            .map(|(id, p)| (id.clone(), (*p != 0).then_some(*p), None))
            .collect();
        let account = self.control.cfg.account_id.clone();
        self.mutate(region, &account, |w| {
            let instances = w.instances.get(region).cloned().unwrap_or_default();
            ops::register(w.r(), &instances, target_group_arn, &list)
        })
        .await
    }

    /// Deregisters `targets` (`(id, port)`; port 0: the group's port); targets that are not
    /// registered are ignored.
    pub async fn deregister_targets(
        &self,
        region: &str,
        target_group_arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), AwsError> {
        let list: Vec<(String, Option<u16>)> = targets
            .iter()
            .map(|(id, p)| (id.clone(), (*p != 0).then_some(*p)))
            .collect();
        let account = self.control.cfg.account_id.clone();
        self.mutate(region, &account, |w| {
            ops::deregister(w.r(), target_group_arn, &list, false)
        })
        .await
    }

    /// The data plane's health of every target of a target group (registered or draining).
    pub fn target_health(
        &self,
        region: &str,
        target_group_arn: &str,
    ) -> Result<Vec<berth_lb::TargetHealth>, AwsError> {
        let r = self.region(region);
        let tg = r.tg_by_arn(target_group_arn).ok_or_else(|| {
            AwsError::client(
                "TargetGroupNotFound",
                format!("Target group '{target_group_arn}' not found"),
            )
        })?;
        Ok(self.data_plane.target_health(&tg.arn))
    }

    /// A target group's settings, or `None` when there is no such target group.
    pub fn target_group(&self, region: &str, arn: &str) -> Option<TargetGroupInfo> {
        let r = self.region(region);
        let tg = r.tg_by_arn(arn)?;
        let hc = &tg.health_check;
        Some(TargetGroupInfo {
            arn: tg.arn.clone(),
            name: tg.name.clone(),
            target_type: tg.target_type.clone(),
            port: tg.port,
            protocol: tg.protocol.clone(),
            protocol_version: tg.protocol_version.clone(),
            load_balancer_arns: r.load_balancers_of(&tg.arn),
            deregistration_delay: secs(&tg.attributes, "deregistration_delay.timeout_seconds", 300),
            slow_start: secs(&tg.attributes, "slow_start.duration_seconds", 0),
            health_check_enabled: hc.enabled,
            health_check_interval: Duration::from_secs(hc.interval_seconds.into()),
            health_check_timeout: Duration::from_secs(hc.timeout_seconds.into()),
            healthy_threshold: hc.healthy_threshold,
            unhealthy_threshold: hc.unhealthy_threshold,
            targets: tg.targets.iter().map(|t| (t.id.clone(), t.port)).collect(),
        })
    }
}

struct Elbv2Api {
    elbv2: Arc<Elbv2>,
}

/// The ELBv2 query API of `elbv2`, for an `AwsEndpoint`.
pub fn elbv2_api(elbv2: &Arc<Elbv2>) -> Arc<dyn QueryApi> {
    Arc::new(Elbv2Api {
        elbv2: elbv2.clone(),
    })
}

#[async_trait::async_trait]
impl QueryApi for Elbv2Api {
    fn version(&self) -> &'static str {
        VERSION
    }

    fn xmlns(&self) -> &'static str {
        XMLNS
    }

    fn signing_name(&self) -> &'static str {
        SIGNING_NAME
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &Params,
    ) -> Result<String, AwsError> {
        ops::dispatch(&self.elbv2, ctx, action, params).await
    }
}

/// Loads the ELBv2 records of `store` into `state` (from [`Control::open`]).
pub(crate) fn load(
    store: &dyn crate::store::Store,
    state: &mut crate::control::State,
) -> Result<(), crate::ControlError> {
    use crate::control::{decode, key_region};
    for (k, v) in store.scan("elbv2-lb/")? {
        let x: LoadBalancer = decode(&k, &v)?;
        let r = key_region(&k).unwrap_or_default().to_string();
        let e = &mut state.regions.entry(r).or_default().elbv2;
        e.load_balancers.insert(x.name.clone(), x);
    }
    for (k, v) in store.scan("elbv2-tg/")? {
        let x: TargetGroup = decode(&k, &v)?;
        let r = key_region(&k).unwrap_or_default().to_string();
        let e = &mut state.regions.entry(r).or_default().elbv2;
        e.target_groups.insert(x.name.clone(), x);
    }
    for (k, v) in store.scan("elbv2-listener/")? {
        let x: Listener = decode(&k, &v)?;
        let r = key_region(&k).unwrap_or_default().to_string();
        let e = &mut state.regions.entry(r).or_default().elbv2;
        e.listeners.insert(x.id.clone(), x);
    }
    for (k, v) in store.scan("elbv2-rule/")? {
        let x: Rule = decode(&k, &v)?;
        let r = key_region(&k).unwrap_or_default().to_string();
        let e = &mut state.regions.entry(r).or_default().elbv2;
        e.rules.insert(x.id.clone(), x);
    }
    Ok(())
}

/// The service controller's view of the load balancer.
#[async_trait::async_trait]
impl crate::services::TargetRegistry for Elbv2 {
    fn target_group(&self, region: &str, arn: &str) -> Option<crate::services::TargetGroupInfo> {
        let tg = Elbv2::target_group(self, region, arn)?;
        Some(crate::services::TargetGroupInfo {
            arn: tg.arn,
            target_type: tg.target_type,
            port: Some(tg.port),
            has_load_balancer: !tg.load_balancer_arns.is_empty(),
            deregistration_delay: tg.deregistration_delay,
        })
    }

    fn target_health(
        &self,
        region: &str,
        arn: &str,
    ) -> Result<Vec<berth_lb::TargetHealth>, AwsError> {
        Elbv2::target_health(self, region, arn)
    }

    async fn register_targets(
        &self,
        region: &str,
        arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), AwsError> {
        Elbv2::register_targets(self, region, arn, targets).await
    }

    async fn deregister_targets(
        &self,
        region: &str,
        arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), AwsError> {
        Elbv2::deregister_targets(self, region, arn, targets).await
    }
}
