//! The service controller: one reconciliation per service, run whenever the control plane's
//! state changes (and at least every [`TICK`], for load balancer health, which lives in the
//! data plane). Each round reads the target health of the service's target groups, then in
//! one transaction decides and commits: account stopped tasks (failed tasks of a deployment
//! feed the circuit breaker), replace unhealthy tasks, start tasks of the PRIMARY deployment
//! within `maximumPercent`, take old or surplus tasks out within `minimumHealthyPercent`
//! (first out of their target groups for the deregistration delay, then stopped), mark
//! deployments COMPLETED or FAILED (rolling back when asked), and update the counts and
//! events. Load balancer (de)registrations decided in the transaction run after it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_aws::AwsError;

use super::{TargetGroupInfo, TargetRegistry};
use crate::control::{now, Control};
use crate::ecs::services::new_deployment;
use crate::ecs::tasks::{launch_service_tasks, request_stop};
use crate::ecs::Ctx;
use crate::model::{Deployment, Instance, Service, ServiceLoadBalancer, Task};
use crate::store::Durability;

/// The longest a service waits for its next reconciliation.
pub const TICK: Duration = Duration::from_millis(500);
/// INACTIVE services stay describable this long.
const INACTIVE_RETENTION_SECS: f64 = 3600.0;
/// A repeated placement-failure event is not added again within this many seconds.
const EVENT_REPEAT_SECS: f64 = 60.0;

/// The service controller of a control plane.
pub struct Controller {
    control: Arc<Control>,
    lb: Option<Arc<dyn TargetRegistry>>,
}

/// Starts the controller loop (until the process ends).
pub fn spawn_controller(
    control: &Arc<Control>,
    lb: Option<Arc<dyn TargetRegistry>>,
) -> Arc<Controller> {
    let c = Controller::new(control, lb);
    let run = c.clone();
    tokio::spawn(async move {
        let changed = run.control.changed();
        loop {
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            run.reconcile_all().await;
            tokio::select! {
                _ = notified => {},
                _ = tokio::time::sleep(TICK) => {},
            }
        }
    });
    c
}

/// A target of a task in one of its service's target groups.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct TargetKey {
    target_group: String,
    id: String,
    port: u16,
}

/// Load balancer calls decided by a round.
#[derive(Debug, Default)]
struct LbActions {
    register: BTreeMap<String, BTreeSet<(String, u16)>>,
    deregister: BTreeMap<String, BTreeSet<(String, u16)>>,
}

impl LbActions {
    fn register(&mut self, k: &TargetKey) {
        self.register
            .entry(k.target_group.clone())
            .or_default()
            .insert((k.id.clone(), k.port));
    }

    fn deregister(&mut self, k: &TargetKey) {
        self.deregister
            .entry(k.target_group.clone())
            .or_default()
            .insert((k.id.clone(), k.port));
    }
}

/// Health of the service's targets: target → state.
type HealthMap = HashMap<TargetKey, berth_lb::TargetState>;

/// Whether `k` is in its target group and not draining.
fn is_registered(health: &HealthMap, k: &TargetKey) -> bool {
    health
        .get(k)
        .is_some_and(|s| *s != berth_lb::TargetState::Draining)
}

/// Counts a failed task of `t`'s deployment while that deployment rolls out.
fn count_failure(sv: &mut Service, dep_index: &HashMap<String, usize>, t: &Task) {
    if let Some(d) = t
        .started_by
        .as_ref()
        .and_then(|s| dep_index.get(s))
        .and_then(|i| sv.deployments.get_mut(*i))
    {
        if d.rollout_state == "IN_PROGRESS" {
            d.failed_tasks += 1;
        }
    }
}

/// Why a task is taken out.
#[derive(Debug, Clone)]
struct Removal {
    reason: String,
    /// Counted as a failed task of its deployment.
    failed: bool,
}

impl Controller {
    /// A controller; [`spawn_controller`] runs it, tests call [`Controller::reconcile_all`].
    pub fn new(control: &Arc<Control>, lb: Option<Arc<dyn TargetRegistry>>) -> Arc<Controller> {
        Arc::new(Controller {
            control: control.clone(),
            lb,
        })
    }

    /// One round over every service.
    pub async fn reconcile_all(&self) {
        let services: Vec<(String, String, String)> = self.control.read(|s| {
            s.regions
                .iter()
                .flat_map(|(region, r)| {
                    r.services.iter().flat_map(move |(cluster, m)| {
                        m.keys()
                            .map(move |n| (region.clone(), cluster.clone(), n.clone()))
                    })
                })
                .collect()
        });
        for (region, cluster, name) in services {
            if let Err(e) = self.reconcile(&region, &cluster, &name).await {
                tracing::warn!(%region, %cluster, service = %name, error = %e, "service reconciliation failed");
            }
        }
    }

    /// One round for one service.
    pub async fn reconcile(&self, region: &str, cluster: &str, name: &str) -> Result<(), AwsError> {
        let Some(lbs) = self.control.read(|s| {
            s.region(region)
                .and_then(|r| r.services.get(cluster))
                .and_then(|m| m.get(name))
                .map(|sv| sv.load_balancers.clone())
        }) else {
            return Ok(());
        };
        let mut health = HealthMap::new();
        let mut infos = HashMap::new();
        if let Some(lb) = &self.lb {
            for l in &lbs {
                if let Some(info) = lb.target_group(region, &l.target_group_arn) {
                    infos.insert(l.target_group_arn.clone(), info);
                }
                match lb.target_health(region, &l.target_group_arn) {
                    Ok(list) => {
                        for h in list {
                            health.insert(
                                TargetKey {
                                    target_group: l.target_group_arn.clone(),
                                    id: h.id,
                                    port: h.port,
                                },
                                h.state,
                            );
                        }
                    }
                    Err(e) => {
                        tracing::debug!(target_group = %l.target_group_arn, error = %e, "no target health")
                    }
                }
            }
        }
        let control = self.control.clone();
        let (region_s, cluster_s, name_s) =
            (region.to_string(), cluster.to_string(), name.to_string());
        let actions = tokio::task::spawn_blocking(move || {
            decide(&control, &region_s, &cluster_s, &name_s, &health, &infos)
        })
        .await
        .map_err(|e| AwsError::internal(format!("service round failed: {e}")))??;
        if let Some(lb) = &self.lb {
            for (tg, targets) in actions.deregister {
                let t: Vec<(String, u16)> = targets.into_iter().collect();
                if let Err(e) = lb.deregister_targets(region, &tg, &t).await {
                    tracing::warn!(target_group = %tg, error = %e, "deregistering targets failed");
                }
            }
            for (tg, targets) in actions.register {
                let t: Vec<(String, u16)> = targets.into_iter().collect();
                if let Err(e) = lb.register_targets(region, &tg, &t).await {
                    tracing::warn!(target_group = %tg, error = %e, "registering targets failed");
                }
            }
        }
        Ok(())
    }
}

/// The stop code of a task the service stops: UserInitiated when a StopTask asked for it.
fn stop_code(t: &Task) -> String {
    match (&t.stop_requested, &t.stop_code) {
        (Some(_), Some(code)) => code.clone(),
        _ => "ServiceSchedulerInitiated".into(),
    }
}

/// The targets of `t` in the service's target groups (those it can have yet: a bridge task
/// needs its host port binding, an awsvpc task its address).
fn task_targets(
    t: &Task,
    lbs: &[ServiceLoadBalancer],
    instance: Option<&Instance>,
    ip_groups: &BTreeSet<String>,
) -> Vec<TargetKey> {
    let mut out = Vec::new();
    for l in lbs {
        let Some(c) = t.containers.iter().find(|c| c.name == l.container_name) else {
            continue;
        };
        if ip_groups.contains(&l.target_group_arn) {
            let ip = c
                .network_interfaces
                .iter()
                .find_map(|n| n["privateIpv4Address"].as_str());
            if let Some(ip) = ip {
                out.push(TargetKey {
                    target_group: l.target_group_arn.clone(),
                    id: ip.to_string(),
                    port: l.container_port,
                });
            }
            continue;
        }
        let Some(inst) = instance else { continue };
        let port = c.network_bindings.iter().find_map(|b| {
            let proto = b["protocol"].as_str().unwrap_or("tcp");
            (b["containerPort"].as_u64() == Some(u64::from(l.container_port)) && proto == "tcp")
                .then(|| b["hostPort"].as_u64())
                .flatten()
        });
        if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
            out.push(TargetKey {
                target_group: l.target_group_arn.clone(),
                id: inst.ec2_instance_id.clone(),
                port,
            });
        }
    }
    out
}

/// ECS's circuit breaker threshold: half the desired count, at least 3, at most 200.
pub fn failure_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

fn add_event_throttled(sv: &mut Service, message: String) {
    let t = now();
    let recent = sv
        .events
        .iter()
        .any(|e| e.message == message && t - e.created_at < EVENT_REPEAT_SECS);
    if !recent {
        sv.event(message);
    }
}

/// Whether the service is in a steady state: what `aws ecs wait services-stable` checks, and
/// its deployment done (its tasks healthy).
fn steady(sv: &Service) -> bool {
    sv.deployments
        .first()
        .is_some_and(|d| d.rollout_state == "COMPLETED")
        && sv
            .deployments
            .iter()
            .filter(|d| d.status != "INACTIVE")
            .count()
            == 1
        && sv.running_count() == sv.desired_count
        && sv.pending_count() == 0
}

/// The decision and commit of one round (runs on a blocking thread: the commit fsyncs).
fn decide(
    control: &Control,
    region: &str,
    cluster: &str,
    name: &str,
    health: &HealthMap,
    infos: &HashMap<String, TargetGroupInfo>,
) -> Result<LbActions, AwsError> {
    let account = control.cfg.account_id.clone();
    let c = Ctx {
        control,
        region,
        account: &account,
        lb: None,
    };
    control.write(Durability::Immediate, |tx| {
        let mut actions = LbActions::default();
        let Some(orig) = tx
            .state
            .region(region)
            .and_then(|r| r.services.get(cluster))
            .and_then(|m| m.get(name))
            .cloned()
        else {
            return Ok(actions);
        };
        let t_now = now();
        if orig.status == "INACTIVE" {
            if orig
                .inactive_at
                .is_some_and(|t| t_now - t > INACTIVE_RETENTION_SECS)
            {
                tx.delete_service(region, cluster, name);
                tx.set_tags(&orig.arn, Vec::new());
            }
            return Ok(actions);
        }
        let mut sv = orig.clone();
        let svc_name = orig.name.clone();
        let group = sv.group();
        let instances: HashMap<String, Instance> = tx
            .state
            .region(region)
            .and_then(|r| r.instances.get(cluster))
            .map(|m| m.values().map(|i| (i.arn.clone(), i.clone())).collect())
            .unwrap_or_default();
        let mut tasks: Vec<Task> = tx
            .state
            .region(region)
            .and_then(|r| r.tasks.get(cluster))
            .map(|m| m.values().filter(|t| t.group == group).cloned().collect())
            .unwrap_or_default();
        tasks.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        let ip_groups: BTreeSet<String> = infos
            .values()
            .filter(|i| i.target_type == "ip")
            .map(|i| i.arn.clone())
            .collect();
        let grace = f64::from(sv.health_check_grace_period_seconds.unwrap_or(0));
        let mut changed_tasks: BTreeMap<String, Task> = BTreeMap::new();
        let dep_index: HashMap<String, usize> = sv
            .deployments
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();

        // 1. Stopped tasks: count failures once, take their targets out.
        for t in tasks.iter().filter(|t| t.is_stopped() || t.desired_status == "STOPPED") {
            let inst = t.container_instance_arn.as_ref().and_then(|a| instances.get(a));
            for k in task_targets(t, &sv.load_balancers, inst, &ip_groups) {
                if is_registered(health, &k) {
                    actions.deregister(&k);
                }
            }
            if t.is_stopped() && !t.service_accounted {
                let mut t2 = t.clone();
                t2.service_accounted = true;
                let failed = matches!(
                    t.stop_code.as_deref(),
                    Some("TaskFailedToStart") | Some("EssentialContainerExited")
                );
                if failed {
                    count_failure(&mut sv, &dep_index, t);
                }
                changed_tasks.insert(t2.id.clone(), t2);
            }
        }

        // 2. Classify the live tasks.
        let primary_id = sv
            .deployments
            .first()
            .filter(|d| d.status == "PRIMARY")
            .map(|d| d.id.clone());
        let live: Vec<&Task> = tasks
            .iter()
            .filter(|t| !t.is_stopped() && t.desired_status == "RUNNING")
            .collect();
        let mut removals: Vec<(String, Removal)> = Vec::new();
        let mut healthy: BTreeSet<String> = BTreeSet::new();
        let mut active: Vec<&Task> = Vec::new();
        for t in &live {
            let inst = t.container_instance_arn.as_ref().and_then(|a| instances.get(a));
            let targets = task_targets(t, &sv.load_balancers, inst, &ip_groups);
            if let Some(until) = t.service_drain_until {
                // Out of its target groups: make sure, then stop when the delay is over.
                for k in &targets {
                    if is_registered(health, k) {
                        actions.deregister(k);
                    }
                }
                if t_now >= until {
                    let mut t2 = changed_tasks.remove(&t.id).unwrap_or_else(|| (*t).clone());
                    let reason = t2
                        .stopped_reason
                        .clone()
                        .unwrap_or_else(|| format!("Scaling activity initiated by (service {})", svc_name));
                    let code = stop_code(&t2);
                    request_stop(&mut t2, &reason, &code);
                    sv.event(format!(
                        "(service {}) has stopped 1 running tasks: (task {}).",
                        svc_name, t.id
                    ));
                    changed_tasks.insert(t2.id.clone(), t2);
                }
                continue;
            }
            if let Some(reason) = &t.stop_requested {
                // StopTask of a task behind a load balancer: drained first, like any removal.
                removals.push((
                    t.id.clone(),
                    Removal {
                        reason: reason.clone(),
                        failed: false,
                    },
                ));
                continue;
            }
            let running = t.last_status == "RUNNING";
            let essential_health: Vec<Option<&str>> = t
                .containers
                .iter()
                .filter(|c| c.essential)
                .map(|c| c.health_status.as_deref())
                .collect();
            let container_unhealthy = essential_health.contains(&Some("UNHEALTHY"));
            let container_ok = essential_health
                .iter()
                .all(|h| h.is_none() || *h == Some("HEALTHY"));
            let lb_states: Vec<Option<berth_lb::TargetState>> =
                targets.iter().map(|k| health.get(k).copied()).collect();
            let lb_ok = targets.len() == sv.load_balancers.len()
                && lb_states.iter().all(|s| {
                    matches!(
                        s,
                        Some(berth_lb::TargetState::Healthy)
                            | Some(berth_lb::TargetState::Unavailable)
                    )
                });
            let lb_bad = lb_states
                .iter()
                .position(|s| *s == Some(berth_lb::TargetState::Unhealthy));
            let in_grace = t.started_at.map(|s| t_now - s < grace).unwrap_or(true);
            if running && !in_grace && (container_unhealthy || lb_bad.is_some()) {
                let reason = match lb_bad {
                    Some(i) if !container_unhealthy => {
                        let tg = &targets[i].target_group;
                        add_event_throttled(
                            &mut sv,
                            format!(
                                "(service {}) (port {}) is unhealthy in (target-group {}) due to (reason Health checks failed).",
                                svc_name, targets[i].port, tg
                            ),
                        );
                        format!("Task failed ELB health checks in (target-group {tg})")
                    }
                    _ => {
                        sv.event(format!(
                            "(service {}) (task {}) failed container health checks.",
                            svc_name, t.id
                        ));
                        "Task failed container health checks".to_string()
                    }
                };
                removals.push((
                    t.id.clone(),
                    Removal {
                        reason,
                        failed: true,
                    },
                ));
                continue;
            }
            if running {
                for k in targets.iter().filter(|k| !is_registered(health, k)) {
                    actions.register(k);
                }
            }
            if running && container_ok && lb_ok {
                healthy.insert(t.id.clone());
            }
            active.push(t);
        }

        // 3. Deployments: what to start and what to take out.
        let draining_service = sv.status == "DRAINING";
        let daemon = sv.scheduling_strategy == "DAEMON";
        let mut launches: Vec<(usize, Option<String>)> = Vec::new();
        let primary_failed = sv
            .deployments
            .first()
            .is_some_and(|d| d.rollout_state == "FAILED");
        let in_primary = |t: &Task| primary_id.is_some() && t.started_by == primary_id;
        // Fargate tasks run on Berth's platform capacity, never on a draining instance of
        // the user's.
        let on_active_instance = |t: &Task| {
            t.launch_type == "FARGATE"
                || t.container_instance_arn
                    .as_ref()
                    .and_then(|a| instances.get(a))
                    .is_some_and(|i| i.status == "ACTIVE")
        };
        let scale_reason = |d: &Option<String>| match d {
            Some(id) => format!("Scaling activity initiated by (deployment {id})"),
            None => "Scaling activity initiated by the service".to_string(),
        };
        if draining_service {
            for t in &active {
                removals.push((
                    t.id.clone(),
                    Removal {
                        reason: "Service deleted".into(),
                        failed: false,
                    },
                ));
            }
        } else if daemon {
            let eligible: Vec<&Instance> = {
                let mut v: Vec<&Instance> =
                    instances.values().filter(|i| i.status == "ACTIVE").collect();
                v.sort_by(|a, b| a.arn.cmp(&b.arn));
                v
            };
            sv.desired_count = eligible.len() as u32;
            for t in &active {
                if !on_active_instance(t) {
                    removals.push((
                        t.id.clone(),
                        Removal {
                            reason: scale_reason(&primary_id),
                            failed: false,
                        },
                    ));
                }
            }
            for i in eligible {
                let here: Vec<&&Task> = active
                    .iter()
                    .filter(|t| t.container_instance_arn.as_deref() == Some(&i.arn))
                    .collect();
                let mut primaries: Vec<&&&Task> = here.iter().filter(|t| in_primary(t)).collect();
                // One task per instance: surplus ones (not yet healthy first) go.
                primaries.sort_by_key(|t| !healthy.contains(&t.id));
                for t in primaries.iter().skip(1) {
                    removals.push((
                        t.id.clone(),
                        Removal {
                            reason: scale_reason(&primary_id),
                            failed: false,
                        },
                    ));
                }
                // DAEMON deployments replace in place: the old task goes first.
                let mut old_here = false;
                for t in here.iter().filter(|t| !in_primary(t)) {
                    old_here = true;
                    removals.push((
                        t.id.clone(),
                        Removal {
                            reason: scale_reason(&primary_id),
                            failed: false,
                        },
                    ));
                }
                let draining_here = live.iter().any(|t| {
                    t.service_drain_until.is_some()
                        && t.container_instance_arn.as_deref() == Some(&i.arn)
                });
                if primaries.is_empty() && !old_here && !draining_here && !primary_failed {
                    launches.push((1, Some(i.arn.clone())));
                }
            }
        } else {
            let d = sv.desired_count;
            let max_total = (u64::from(d) * u64::from(sv.maximum_percent) / 100) as usize;
            let min_healthy =
                (u64::from(d) * u64::from(sv.minimum_healthy_percent)).div_ceil(100) as usize;
            let primary_live: Vec<&&Task> = active
                .iter()
                .filter(|t| in_primary(t) && on_active_instance(t))
                .collect();
            // Old deployments' tasks and tasks on instances being drained are replaced.
            let mut old: Vec<&&Task> = active
                .iter()
                .filter(|t| !(in_primary(t) && on_active_instance(t)))
                .collect();
            old.sort_by_key(|t| healthy.contains(&t.id));
            let mut healthy_total = healthy.len();
            let mut total = active.len();
            for t in &old {
                let is_healthy = healthy.contains(&t.id);
                if is_healthy {
                    if healthy_total > min_healthy {
                        healthy_total -= 1;
                    } else {
                        continue;
                    }
                }
                total -= 1;
                removals.push((
                    t.id.clone(),
                    Removal {
                        reason: scale_reason(&primary_id),
                        failed: false,
                    },
                ));
            }
            if primary_live.len() > d as usize {
                // Scale in: not yet running first, then the newest.
                let mut surplus: Vec<&&&Task> = primary_live.iter().collect();
                surplus.sort_by(|a, b| {
                    let ra = healthy.contains(&a.id);
                    let rb = healthy.contains(&b.id);
                    ra.cmp(&rb).then(b.created_at.total_cmp(&a.created_at))
                });
                for t in surplus.into_iter().take(primary_live.len() - d as usize) {
                    removals.push((
                        t.id.clone(),
                        Removal {
                            reason: scale_reason(&primary_id),
                            failed: false,
                        },
                    ));
                }
            } else if !primary_failed && primary_id.is_some() {
                let want = d as usize - primary_live.len();
                let room = max_total.saturating_sub(total);
                let n = want.min(room);
                if n > 0 {
                    launches.push((n, None));
                }
            }
        }

        // 4. Take tasks out: first out of their target groups, then stopped.
        let mut drained = 0usize;
        let mut stopped_ids = Vec::new();
        let mut seen = BTreeSet::new();
        for (id, r) in removals {
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(t) = tasks.iter().find(|t| t.id == id) else {
                continue;
            };
            let mut t2 = changed_tasks.remove(&id).unwrap_or_else(|| t.clone());
            if r.failed {
                count_failure(&mut sv, &dep_index, t);
                t2.service_accounted = true;
            }
            let inst = t.container_instance_arn.as_ref().and_then(|a| instances.get(a));
            let registered: Vec<TargetKey> = task_targets(t, &sv.load_balancers, inst, &ip_groups)
                .into_iter()
                .filter(|k| is_registered(health, k))
                .collect();
            if registered.is_empty() || r.failed {
                for k in &registered {
                    actions.deregister(k);
                }
                let code = stop_code(&t2);
                request_stop(&mut t2, &r.reason, &code);
                stopped_ids.push(id.clone());
            } else {
                let delay = registered
                    .iter()
                    .filter_map(|k| infos.get(&k.target_group))
                    .map(|i| i.deregistration_delay)
                    .max()
                    .unwrap_or(Duration::from_secs(300));
                for k in &registered {
                    actions.deregister(k);
                    sv.event(format!(
                        "(service {}) deregistered 1 targets in (target-group {})",
                        svc_name, k.target_group
                    ));
                }
                t2.service_drain_until = Some(t_now + delay.as_secs_f64());
                t2.stopped_reason = Some(r.reason.clone());
                drained += 1;
            }
            changed_tasks.insert(id, t2);
        }
        if drained > 0 {
            sv.event(format!(
                "(service {}) has begun draining connections on {drained} tasks.",
                svc_name
            ));
        }
        if !stopped_ids.is_empty() {
            sv.event(format!(
                "(service {}) has stopped {} running tasks: {}.",
                svc_name,
                stopped_ids.len(),
                stopped_ids
                    .iter()
                    .map(|id| format!("(task {id})"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        for (_, t) in std::mem::take(&mut changed_tasks) {
            tx.put_task(t);
        }

        // 5. Start tasks of the PRIMARY deployment.
        let mut started: Vec<Task> = Vec::new();
        if let Some(primary) = sv.deployments.first().cloned() {
            for (n, instance) in launches {
                match launch_service_tasks(&c, tx, &sv, &primary, n, instance.as_deref()) {
                    Ok((new, failures)) => {
                        started.extend(new);
                        if let Some(f) = failures.first() {
                            let reason = f["reason"].as_str().unwrap_or("no instance fits");
                            add_event_throttled(
                                &mut sv,
                                format!(
                                    "(service {}) was unable to place a task because no container instance met all of its requirements. Reason: {reason}.",
                                    svc_name
                                ),
                            );
                        }
                    }
                    Err(e) => add_event_throttled(
                        &mut sv,
                        format!("(service {}) was unable to start tasks: {}.", svc_name, e.message),
                    ),
                }
            }
        }
        if !started.is_empty() {
            sv.event(format!(
                "(service {}) has started {} tasks: {}.",
                svc_name,
                started.len(),
                started
                    .iter()
                    .map(|t| format!("(task {})", t.id))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let registered_events: Vec<String> = actions
            .register
            .iter()
            .map(|(tg, t)| {
                format!(
                    "(service {}) registered {} targets in (target-group {tg})",
                    svc_name,
                    t.len()
                )
            })
            .collect();
        for e in registered_events {
            sv.event(e);
        }

        // 6. Counts, deployment states, the circuit breaker.
        let now_tasks: Vec<Task> = tx
            .state
            .region(region)
            .and_then(|r| r.tasks.get(cluster))
            .map(|m| {
                m.values()
                    .filter(|t| t.group == group && !t.is_stopped() && t.desired_status == "RUNNING")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let primary_dep = sv.deployments.first().map(|d| d.id.clone());
        let mut any_old_live = false;
        for (idx, d) in sv.deployments.iter_mut().enumerate() {
            if d.status == "INACTIVE" {
                continue;
            }
            let mine: Vec<&Task> = now_tasks
                .iter()
                .filter(|t| t.started_by.as_deref() == Some(&d.id))
                .collect();
            let running = mine.iter().filter(|t| t.last_status == "RUNNING").count() as u32;
            let pending = mine.len() as u32 - running;
            let desired = if idx == 0 {
                sv.desired_count
            } else {
                mine.len() as u32
            };
            if (running, pending, desired) != (d.running_count, d.pending_count, d.desired_count) {
                d.running_count = running;
                d.pending_count = pending;
                d.desired_count = desired;
                d.updated_at = t_now;
            }
            if idx > 0 {
                if mine.is_empty() {
                    d.status = "INACTIVE".into();
                    d.updated_at = t_now;
                } else {
                    any_old_live = true;
                }
            }
        }
        // Orphans: tasks of the service's group that no known deployment owns.
        let orphans = now_tasks.iter().any(|t| {
            t.started_by
                .as_ref()
                .is_none_or(|s| !sv.deployments.iter().any(|d| &d.id == s && d.status != "INACTIVE"))
        });
        let primary_healthy = now_tasks
            .iter()
            .filter(|t| t.started_by == primary_dep && healthy.contains(&t.id))
            .count() as u32;
        let cb = sv.circuit_breaker;
        let desired_count = sv.desired_count;
        let mut rollback_to: Option<Deployment> = None;
        let mut rollout_event = None;
        if let Some(p) = sv.deployments.first_mut() {
            if p.rollout_state == "IN_PROGRESS" && !draining_service {
                if cb.is_some_and(|b| b.enable) && p.failed_tasks >= failure_threshold(desired_count)
                {
                    p.rollout_state = "FAILED".into();
                    p.rollout_state_reason =
                        Some("ECS deployment circuit breaker: tasks failed to start.".into());
                    p.updated_at = t_now;
                    rollout_event = Some(format!(
                        "(service {svc_name}) (deployment {}) deployment failed: tasks failed to start.",
                        p.id
                    ));
                    if cb.is_some_and(|b| b.rollback) {
                        rollback_to = Some(p.clone());
                    }
                } else if !any_old_live
                    && !orphans
                    && p.running_count == desired_count
                    && p.pending_count == 0
                    && primary_healthy >= desired_count
                {
                    p.rollout_state = "COMPLETED".into();
                    p.rollout_state_reason = Some(format!("ECS deployment {} completed.", p.id));
                    p.updated_at = t_now;
                    rollout_event = Some(format!(
                        "(service {svc_name}) (deployment {}) deployment completed.",
                        p.id
                    ));
                }
            }
        }
        if let Some(m) = rollout_event {
            sv.event(m);
        }
        if let Some(failed) = rollback_to {
            let good = sv
                .deployments
                .iter()
                .skip(1)
                .filter(|d| d.rollout_state == "COMPLETED")
                .max_by(|a, b| a.created_at.total_cmp(&b.created_at))
                .cloned();
            match good {
                Some(good) => {
                    for d in &mut sv.deployments {
                        if d.status == "PRIMARY" {
                            d.status = "ACTIVE".into();
                        }
                    }
                    let mut nd = new_deployment(
                        &good.task_definition,
                        sv.desired_count,
                        good.network_configuration.clone(),
                    );
                    nd.rollout_state_reason = Some(format!(
                        "ECS deployment circuit breaker: rolling back to deploymentId {}.",
                        good.id
                    ));
                    sv.task_definition = good.task_definition.clone();
                    sv.event(format!(
                        "(service {}) rolling back to deployment {}.",
                        svc_name, good.id
                    ));
                    sv.deployments.insert(0, nd);
                }
                None => sv.event(format!(
                    "(service {}) (deployment {}) cannot roll back: no earlier deployment completed.",
                    svc_name, failed.id
                )),
            }
        }
        // Keep the last few INACTIVE deployments (for rollbacks), drop older ones.
        let mut inactive_seen = 0;
        sv.deployments.retain(|d| {
            if d.status == "INACTIVE" {
                inactive_seen += 1;
                inactive_seen <= 5
            } else {
                true
            }
        });
        if draining_service && now_tasks.is_empty() {
            sv.status = "INACTIVE".into();
            sv.inactive_at = Some(t_now);
            for d in &mut sv.deployments {
                d.running_count = 0;
                d.pending_count = 0;
            }
        }
        if sv.status == "ACTIVE" && !steady(&orig) && steady(&sv) {
            sv.event(format!("(service {}) has reached a steady state.", svc_name));
        }
        if sv != orig {
            tx.put_service(sv);
        }
        Ok(actions)
    })
}
