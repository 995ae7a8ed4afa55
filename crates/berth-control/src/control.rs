//! The control plane's state: every record in memory (loaded from the [`Store`] at start),
//! every mutation committed to the store before it is visible, agents' long polls woken when
//! their assignment changes, and the monitor that notices vanished agents.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_aws::AwsError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;

use crate::model::{CapacityProvider, Cluster, Instance, Service, Tag, Task, TaskDefRecord};
use crate::store::{Durability, Store, StoreError, Write};

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub account_id: String,
    /// An agent with no poll in flight for this long is `agentConnected: false`.
    pub heartbeat_grace: Duration,
    /// After this long disconnected, the instance's tasks are STOPPED.
    pub agent_timeout: Duration,
    /// STOPPED tasks stay describable this long (ECS: about an hour).
    pub stopped_task_retention: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            account_id: "000000000000".into(),
            heartbeat_grace: Duration::from_secs(10),
            agent_timeout: Duration::from_secs(120),
            stopped_task_retention: Duration::from_secs(3600),
        }
    }
}

/// Everything of one region.
#[derive(Debug, Default)]
pub struct Region {
    pub clusters: BTreeMap<String, Cluster>,
    /// family → revision → record.
    pub taskdefs: BTreeMap<String, BTreeMap<u32, TaskDefRecord>>,
    /// cluster name → task id → task.
    pub tasks: BTreeMap<String, BTreeMap<String, Task>>,
    /// cluster name → instance id → instance.
    pub instances: BTreeMap<String, BTreeMap<String, Instance>>,
    pub capacity_providers: BTreeMap<String, CapacityProvider>,
    /// cluster name → service name → service.
    pub services: BTreeMap<String, BTreeMap<String, Service>>,
    /// Load balancers, target groups, listeners and rules (ELBv2).
    pub elbv2: crate::elbv2::model::Elbv2Region,
}

/// All state.
#[derive(Debug, Default)]
pub struct State {
    pub regions: BTreeMap<String, Region>,
    /// ARN → tags.
    pub tags: BTreeMap<String, Vec<Tag>>,
}

impl State {
    pub fn region(&self, region: &str) -> Option<&Region> {
        self.regions.get(region)
    }
}

/// Liveness of one container instance's agent (memory only).
struct Watch {
    version: u64,
    notify: Arc<Notify>,
    polls_in_flight: u32,
    last_seen: Instant,
    disconnected_since: Option<Instant>,
}

/// The control plane.
pub struct Control {
    state: Mutex<State>,
    store: Arc<dyn Store>,
    pub cfg: ControlConfig,
    watches: Mutex<HashMap<String, Watch>>,
    version_base: u64,
    /// Woken after every committed change (the service controller waits on it).
    changed: Arc<Notify>,
}

/// Errors of opening the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored record {key} is damaged")]
    Record {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

pub fn now() -> f64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    ms as f64 / 1000.0
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(v).map_err(|source| ControlError::Record {
        key: key.to_string(),
        source,
    })
}

pub fn cluster_key(region: &str, name: &str) -> String {
    format!("cluster/{region}/{name}")
}
pub fn taskdef_key(region: &str, family: &str, revision: u32) -> String {
    format!("taskdef/{region}/{family}/{revision:010}")
}
pub fn task_key(region: &str, cluster: &str, id: &str) -> String {
    format!("task/{region}/{cluster}/{id}")
}
pub fn instance_key(region: &str, cluster: &str, id: &str) -> String {
    format!("instance/{region}/{cluster}/{id}")
}
pub fn capacity_provider_key(region: &str, name: &str) -> String {
    format!("capacity-provider/{region}/{name}")
}
pub fn service_key(region: &str, cluster: &str, name: &str) -> String {
    format!("service/{region}/{cluster}/{name}")
}
pub fn tags_key(arn: &str) -> String {
    format!("tags/{arn}")
}
pub fn elbv2_lb_key(region: &str, name: &str) -> String {
    format!("elbv2-lb/{region}/{name}")
}
pub fn elbv2_tg_key(region: &str, name: &str) -> String {
    format!("elbv2-tg/{region}/{name}")
}
pub fn elbv2_listener_key(region: &str, id: &str) -> String {
    format!("elbv2-listener/{region}/{id}")
}
pub fn elbv2_rule_key(region: &str, id: &str) -> String {
    format!("elbv2-rule/{region}/{id}")
}

/// The region of a key `kind/<region>/...`.
pub(crate) fn key_region(key: &str) -> Option<&str> {
    key.split('/').nth(1)
}

/// A mutation in progress: changes go to the state and are recorded for the commit.
pub struct Tx<'a> {
    pub state: &'a mut State,
    writes: Vec<Write>,
    touched: Vec<String>,
}

impl Tx<'_> {
    fn put<T: Serialize>(&mut self, key: String, value: &T) {
        match serde_json::to_vec(value) {
            Ok(v) => self.writes.push(Write::Put(key, v)),
            Err(e) => tracing::error!(%key, error = %e, "cannot encode a record"),
        }
    }

    pub fn region(&mut self, region: &str) -> &mut Region {
        self.state.regions.entry(region.to_string()).or_default()
    }

    pub fn put_cluster(&mut self, region: &str, c: Cluster) {
        self.put(cluster_key(region, &c.name), &c);
        self.region(region).clusters.insert(c.name.clone(), c);
    }

    pub fn put_taskdef(&mut self, region: &str, t: TaskDefRecord) {
        self.put(taskdef_key(region, &t.family, t.revision), &t);
        self.region(region)
            .taskdefs
            .entry(t.family.clone())
            .or_default()
            .insert(t.revision, t);
    }

    pub fn delete_taskdef(&mut self, region: &str, family: &str, revision: u32) {
        self.writes
            .push(Write::Delete(taskdef_key(region, family, revision)));
        let r = self.region(region);
        if let Some(revs) = r.taskdefs.get_mut(family) {
            revs.remove(&revision);
        }
    }

    /// Stores a task; wakes its instance's agent when the assignment changed (a new task, or
    /// a new desired status).
    pub fn put_task(&mut self, mut t: Task) {
        let region = t.region.clone();
        if t.is_stopped() {
            if let Some(eni) = t.eni.as_mut() {
                eni.status = "DELETED".into();
            }
        }
        let old = self
            .region(&region)
            .tasks
            .get(&t.cluster)
            .and_then(|m| m.get(&t.id))
            .map(|o| {
                (
                    o.desired_status.clone(),
                    o.last_status.clone(),
                    o.version,
                    o == &t,
                )
            });
        let changed = match &old {
            None => true,
            Some((desired, ..)) => desired != &t.desired_status,
        };
        if old
            .as_ref()
            .map(|(_, last, ..)| last != &t.last_status)
            .unwrap_or(true)
        {
            t.transitions.push((t.last_status.clone(), now()));
        }
        if let Some((_, _, version, same)) = old {
            if !same {
                t.version = version + 1;
            }
        }
        if changed {
            if let Some(ci) = &t.container_instance_arn {
                self.touched.push(ci.clone());
            }
        }
        self.put(task_key(&region, &t.cluster, &t.id), &t);
        self.region(&region)
            .tasks
            .entry(t.cluster.clone())
            .or_default()
            .insert(t.id.clone(), t);
    }

    /// Wakes the long poll of `instance_arn`'s agent after the commit (its assignment's
    /// extras changed, e.g. the platform image cache).
    pub fn touch(&mut self, instance_arn: &str) {
        self.touched.push(instance_arn.to_string());
    }

    pub fn delete_task(&mut self, region: &str, cluster: &str, id: &str) {
        self.writes
            .push(Write::Delete(task_key(region, cluster, id)));
        if let Some(m) = self.region(region).tasks.get_mut(cluster) {
            m.remove(id);
        }
    }

    pub fn put_instance(&mut self, i: Instance) {
        let region = i.region.clone();
        self.put(instance_key(&region, &i.cluster, &i.id), &i);
        self.touched.push(i.arn.clone());
        self.region(&region)
            .instances
            .entry(i.cluster.clone())
            .or_default()
            .insert(i.id.clone(), i);
    }

    pub fn delete_instance(&mut self, region: &str, cluster: &str, id: &str) {
        self.writes
            .push(Write::Delete(instance_key(region, cluster, id)));
        if let Some(m) = self.region(region).instances.get_mut(cluster) {
            m.remove(id);
        }
    }

    pub fn put_capacity_provider(&mut self, region: &str, c: CapacityProvider) {
        self.put(capacity_provider_key(region, &c.name), &c);
        self.region(region)
            .capacity_providers
            .insert(c.name.clone(), c);
    }

    pub fn put_service(&mut self, sv: Service) {
        let region = sv.region.clone();
        self.put(service_key(&region, &sv.cluster, &sv.name), &sv);
        self.region(&region)
            .services
            .entry(sv.cluster.clone())
            .or_default()
            .insert(sv.name.clone(), sv);
    }

    pub fn delete_service(&mut self, region: &str, cluster: &str, name: &str) {
        self.writes
            .push(Write::Delete(service_key(region, cluster, name)));
        if let Some(m) = self.region(region).services.get_mut(cluster) {
            m.remove(name);
        }
    }

    pub fn put_elbv2_lb(&mut self, region: &str, v: crate::elbv2::model::LoadBalancer) {
        self.put(elbv2_lb_key(region, &v.name), &v);
        self.region(region)
            .elbv2
            .load_balancers
            .insert(v.name.clone(), v);
    }

    pub fn delete_elbv2_lb(&mut self, region: &str, name: &str) {
        self.writes.push(Write::Delete(elbv2_lb_key(region, name)));
        self.region(region).elbv2.load_balancers.remove(name);
    }

    pub fn put_elbv2_tg(&mut self, region: &str, v: crate::elbv2::model::TargetGroup) {
        self.put(elbv2_tg_key(region, &v.name), &v);
        self.region(region)
            .elbv2
            .target_groups
            .insert(v.name.clone(), v);
    }

    pub fn delete_elbv2_tg(&mut self, region: &str, name: &str) {
        self.writes.push(Write::Delete(elbv2_tg_key(region, name)));
        self.region(region).elbv2.target_groups.remove(name);
    }

    pub fn put_elbv2_listener(&mut self, region: &str, v: crate::elbv2::model::Listener) {
        self.put(elbv2_listener_key(region, &v.id), &v);
        self.region(region).elbv2.listeners.insert(v.id.clone(), v);
    }

    pub fn delete_elbv2_listener(&mut self, region: &str, id: &str) {
        self.writes
            .push(Write::Delete(elbv2_listener_key(region, id)));
        self.region(region).elbv2.listeners.remove(id);
    }

    pub fn put_elbv2_rule(&mut self, region: &str, v: crate::elbv2::model::Rule) {
        self.put(elbv2_rule_key(region, &v.id), &v);
        self.region(region).elbv2.rules.insert(v.id.clone(), v);
    }

    pub fn delete_elbv2_rule(&mut self, region: &str, id: &str) {
        self.writes.push(Write::Delete(elbv2_rule_key(region, id)));
        self.region(region).elbv2.rules.remove(id);
    }

    pub fn set_tags(&mut self, arn: &str, tags: Vec<Tag>) {
        if tags.is_empty() {
            self.writes.push(Write::Delete(tags_key(arn)));
            self.state.tags.remove(arn);
        } else {
            self.put(tags_key(arn), &tags);
            self.state.tags.insert(arn.to_string(), tags);
        }
    }
}

impl Control {
    /// Loads every record from `store`.
    pub fn open(store: Arc<dyn Store>, cfg: ControlConfig) -> Result<Arc<Control>, ControlError> {
        let mut state = State::default();
        for (k, v) in store.scan("cluster/")? {
            let c: Cluster = decode(&k, &v)?;
            let r = key_region(&k).unwrap_or_default().to_string();
            state
                .regions
                .entry(r)
                .or_default()
                .clusters
                .insert(c.name.clone(), c);
        }
        for (k, v) in store.scan("taskdef/")? {
            let t: TaskDefRecord = decode(&k, &v)?;
            let r = key_region(&k).unwrap_or_default().to_string();
            state
                .regions
                .entry(r)
                .or_default()
                .taskdefs
                .entry(t.family.clone())
                .or_default()
                .insert(t.revision, t);
        }
        for (k, v) in store.scan("task/")? {
            let t: Task = decode(&k, &v)?;
            state
                .regions
                .entry(t.region.clone())
                .or_default()
                .tasks
                .entry(t.cluster.clone())
                .or_default()
                .insert(t.id.clone(), t);
        }
        let mut watches = HashMap::new();
        let started = Instant::now();
        for (k, v) in store.scan("instance/")? {
            let i: Instance = decode(&k, &v)?;
            watches.insert(
                i.arn.clone(),
                Watch {
                    version: 0,
                    notify: Arc::new(Notify::new()),
                    polls_in_flight: 0,
                    // Agents get a fresh grace period after a restart of the control plane.
                    last_seen: started,
                    disconnected_since: None,
                },
            );
            state
                .regions
                .entry(i.region.clone())
                .or_default()
                .instances
                .entry(i.cluster.clone())
                .or_default()
                .insert(i.id.clone(), i);
        }
        for (k, v) in store.scan("capacity-provider/")? {
            let c: CapacityProvider = decode(&k, &v)?;
            let r = key_region(&k).unwrap_or_default().to_string();
            state
                .regions
                .entry(r)
                .or_default()
                .capacity_providers
                .insert(c.name.clone(), c);
        }
        for (k, v) in store.scan("service/")? {
            let sv: Service = decode(&k, &v)?;
            state
                .regions
                .entry(sv.region.clone())
                .or_default()
                .services
                .entry(sv.cluster.clone())
                .or_default()
                .insert(sv.name.clone(), sv);
        }
        crate::elbv2::load(&*store, &mut state)?;
        for (k, v) in store.scan("tags/")? {
            let t: Vec<Tag> = decode(&k, &v)?;
            state
                .tags
                .insert(k.trim_start_matches("tags/").to_string(), t);
        }
        // Versions only have to differ from anything an agent saw before this start.
        let version_base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Ok(Arc::new(Control {
            state: Mutex::new(state),
            store,
            cfg,
            watches: Mutex::new(watches),
            version_base,
            changed: Arc::new(Notify::new()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_watches(&self) -> MutexGuard<'_, HashMap<String, Watch>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Runs a mutation: `f` validates first, then changes the state through the [`Tx`]; the
    /// changes are committed to the store before the lock is released. An error from `f`
    /// must leave the state untouched (validate before the first `put_*`).
    pub fn write<R>(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, AwsError>,
    ) -> Result<R, AwsError> {
        let mut state = self.lock();
        let mut tx = Tx {
            state: &mut state,
            writes: Vec::new(),
            touched: Vec::new(),
        };
        let out = f(&mut tx)?;
        let Tx {
            writes, touched, ..
        } = tx;
        let writes_empty = writes.is_empty();
        if !writes_empty {
            if let Err(e) = self.store.commit(&writes, durability) {
                tracing::error!(error = %crate::error_chain(&e), "store commit failed; reloading the state");
                if let Ok(fresh) = Control::open(self.store.clone(), self.cfg.clone()) {
                    let reloaded = std::mem::take(&mut *fresh.lock());
                    *state = reloaded;
                }
                return Err(AwsError::server(
                    "ServerException",
                    "the control plane could not store the change",
                ));
            }
        }
        drop(state);
        if !writes_empty {
            self.changed.notify_waiters();
        }
        if !touched.is_empty() {
            let mut w = self.lock_watches();
            for arn in touched {
                let watch = w.entry(arn).or_insert_with(|| Watch {
                    version: 0,
                    notify: Arc::new(Notify::new()),
                    polls_in_flight: 0,
                    last_seen: Instant::now(),
                    disconnected_since: None,
                });
                watch.version += 1;
                watch.notify.notify_waiters();
            }
        }
        Ok(out)
    }

    /// The notifier woken after every committed change.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// The assignment version of an instance and the notifier its polls wait on.
    pub fn watch(&self, instance_arn: &str) -> (u64, Arc<Notify>) {
        let mut w = self.lock_watches();
        let watch = w.entry(instance_arn.to_string()).or_insert_with(|| Watch {
            version: 0,
            notify: Arc::new(Notify::new()),
            polls_in_flight: 0,
            last_seen: Instant::now(),
            disconnected_since: None,
        });
        (self.version_base + watch.version, watch.notify.clone())
    }

    /// A poll of `instance_arn` starts (`true`) or ends (`false`).
    pub fn poll_seen(&self, instance_arn: &str, starting: bool) {
        let mut w = self.lock_watches();
        if let Some(watch) = w.get_mut(instance_arn) {
            if starting {
                watch.polls_in_flight += 1;
            } else {
                watch.polls_in_flight = watch.polls_in_flight.saturating_sub(1);
            }
            watch.last_seen = Instant::now();
            watch.disconnected_since = None;
        }
    }

    /// Whether an instance's agent is connected right now (memory only).
    pub fn agent_connected(&self, instance_arn: &str) -> bool {
        let w = self.lock_watches();
        w.get(instance_arn)
            .map(|x| x.polls_in_flight > 0 || x.last_seen.elapsed() < self.cfg.heartbeat_grace)
            .unwrap_or(false)
    }

    /// One round of the monitor: marks agents connected/disconnected and stops the tasks of
    /// instances whose agent has been gone longer than `agent_timeout`; forgets STOPPED tasks
    /// past their retention.
    pub fn monitor_tick(&self) {
        let instances: Vec<Instance> = self.read(|s| {
            s.regions
                .values()
                .flat_map(|r| r.instances.values().flat_map(|m| m.values().cloned()))
                .collect()
        });
        let mut lost = Vec::new();
        let mut flips = Vec::new();
        {
            let mut w = self.lock_watches();
            for i in &instances {
                if i.status == "INACTIVE" {
                    continue;
                }
                let watch = w.entry(i.arn.clone()).or_insert_with(|| Watch {
                    version: 0,
                    notify: Arc::new(Notify::new()),
                    polls_in_flight: 0,
                    last_seen: Instant::now(),
                    disconnected_since: None,
                });
                let connected = watch.polls_in_flight > 0
                    || watch.last_seen.elapsed() < self.cfg.heartbeat_grace;
                if connected != i.agent_connected {
                    flips.push((i.clone(), connected));
                }
                if connected {
                    watch.disconnected_since = None;
                } else {
                    let since = *watch.disconnected_since.get_or_insert_with(Instant::now);
                    if since.elapsed() + self.cfg.heartbeat_grace >= self.cfg.agent_timeout {
                        lost.push(i.clone());
                    }
                }
            }
        }
        for (i, connected) in flips {
            tracing::info!(instance = %i.arn, connected, "agent connection changed");
            let _ = self.write(Durability::Immediate, |tx| {
                let cur = tx
                    .state
                    .region(&i.region)
                    .and_then(|r| r.instances.get(&i.cluster))
                    .and_then(|m| m.get(&i.id))
                    .cloned();
                if let Some(mut cur) = cur {
                    cur.agent_connected = connected;
                    tx.put_instance(cur);
                }
                Ok(())
            });
        }
        for i in lost {
            let secs = self.cfg.agent_timeout.as_secs();
            let _ = self.write(Durability::Immediate, |tx| {
                let tasks: Vec<Task> = tx
                    .state
                    .region(&i.region)
                    .map(|r| {
                        crate::ecs::fargate::hosted_tasks(r, &i)
                            .filter(|t| !t.is_stopped())
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let t_now = now();
                for mut t in tasks {
                    tracing::warn!(task = %t.arn, instance = %i.arn, "agent lost: task stopped");
                    t.desired_status = "STOPPED".into();
                    t.last_status = "STOPPED".into();
                    t.stopped_reason = Some(format!(
                        "Container instance {} lost contact with the control plane for {secs} s",
                        i.id
                    ));
                    t.stop_code = Some("TerminationNotice".into());
                    t.stopping_at.get_or_insert(t_now);
                    t.stopped_at = Some(t_now);
                    t.execution_stopped_at.get_or_insert(t_now);
                    for c in &mut t.containers {
                        if c.last_status != "STOPPED" {
                            c.last_status = "STOPPED".into();
                            c.reason.get_or_insert_with(|| "agent lost".into());
                        }
                    }
                    tx.put_task(t);
                }
                Ok(())
            });
        }
        // Forget STOPPED tasks past their retention.
        let horizon = now() - self.cfg.stopped_task_retention.as_secs_f64();
        let expired: Vec<(String, String, String)> = self.read(|s| {
            s.regions
                .values()
                .flat_map(|r| r.tasks.values().flat_map(|m| m.values()))
                .filter(|t| t.is_stopped() && t.stopped_at.unwrap_or(t.created_at) < horizon)
                .map(|t| (t.region.clone(), t.cluster.clone(), t.id.clone()))
                .collect()
        });
        if !expired.is_empty() {
            let _ = self.write(Durability::Immediate, |tx| {
                for (r, c, id) in &expired {
                    let arn = tx
                        .state
                        .region(r)
                        .and_then(|x| x.tasks.get(c))
                        .and_then(|m| m.get(id))
                        .map(|t| t.arn.clone());
                    tx.delete_task(r, c, id);
                    if let Some(arn) = arn {
                        tx.set_tags(&arn, Vec::new());
                    }
                }
                Ok(())
            });
        }
    }

    /// Runs [`Control::monitor_tick`] every second until the process ends.
    pub fn spawn_monitor(self: &Arc<Self>) {
        let c = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let c2 = c.clone();
                let _ = tokio::task::spawn_blocking(move || c2.monitor_tick()).await;
            }
        });
    }
}
