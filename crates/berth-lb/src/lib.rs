//! Berth's built-in load balancer, the data plane of the ELBv2 API: one HTTP/1.1 + h2c
//! reverse proxy per listener, rules, weighted target groups, active health checks, draining
//! and slow start. The control plane owns the configuration and pushes all of it with
//! [`DataPlane::apply`]; the data plane owns health and in-flight state.
//!
//! Shape:
//! * [`config`]: what the control plane asks for; [`health`]: what the data plane reports.
//! * `pattern` (pure, fuzzed) and `rules`: ELBv2 wildcard patterns and rule conditions.
//! * `targets`: per-target runtime state (health state machine, in-flight count, draining,
//!   slow start) that survives applies, and target choice over a per-apply group view.
//! * `checker`: one health-check task per (target group, target).
//! * `proxy`: the request path (rules → action → forward), `listener`: sockets and accept
//!   loops, `upstream`: per-target HTTP/1.1 keep-alive pools.
//! * `workers`: thread per core. Each worker thread runs a `current_thread` runtime and one
//!   `SO_REUSEPORT` socket of every listener; a connection, its requests and its upstream
//!   connections stay on the thread that accepted it. Health checks and drain timers run on
//!   the caller's runtime.
//!
//! An apply binds new sockets first (all or nothing), then updates the target registry
//! (new targets start checks at once; targets that left start draining), builds each
//! listener's immutable routing table and swaps it in (`ArcSwap`): requests read the table
//! once, so a change applies to the next request without locks on the request path.

pub mod checker;
pub mod config;
pub mod health;
mod listener;
pub mod pattern;
mod proxy;
pub mod rules;
pub mod targets;
mod upstream;
mod workers;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use health::{TargetHealth, TargetState};

use config::{Action, Listener, Target, TargetGroup};
use proxy::{ListenerShared, RouteAction, RouteRule, Routes, Upstream};
use rules::Cond;
use targets::{CheckParams, GroupView, TargetRuntime};
use workers::Workers;

/// How long a target may take to send its response headers before the client gets 504
/// (ALB's default idle timeout).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// How a data plane runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a target may take to send its response headers (then 504).
    pub upstream_timeout: Duration,
    /// Worker threads serving the listeners (default: half the available CPUs, at least one,
    /// see [`workers::default_threads`]). 0: no threads
    /// of its own, connections are served on the runtime that called [`DataPlane::apply`].
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            threads: workers::default_threads(),
        }
    }
}

/// Errors of the data plane.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The running load balancers of this host.
#[derive(Debug)]
pub struct DataPlane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: Instant,
    /// Configured worker threads (0: the caller's runtime).
    threads: usize,
    /// Upstream clients, one per worker (one when there are none).
    upstreams: Vec<Arc<Upstream>>,
    /// Started with the first listener, stopped by shutdown.
    workers: Mutex<Option<Workers>>,
    /// Parent of every task's token (listeners, checkers, drain timers).
    root: CancellationToken,
    /// Held for the whole of an apply or shutdown (they run one at a time).
    listeners: tokio::sync::Mutex<Vec<ListenerRuntime>>,
    registry: Arc<Mutex<HashMap<String, GroupRuntime>>>,
    /// Listener id → bound address, for the synchronous [`DataPlane::listener_addr`].
    addrs: Mutex<HashMap<String, SocketAddr>>,
}

#[derive(Debug)]
struct ListenerRuntime {
    id: String,
    /// The configured address (port 0 stays 0 here).
    bind: SocketAddr,
    local: SocketAddr,
    shared: Arc<ListenerShared>,
    running: listener::Running,
}

/// A target group's state that outlives applies.
#[derive(Debug, Default)]
struct GroupRuntime {
    /// Round-robin position, kept across applies.
    counter: Arc<AtomicUsize>,
    /// Registered targets, in configuration order.
    order: Vec<Target>,
    /// Registered and draining targets.
    targets: HashMap<Target, Arc<TargetRuntime>>,
    /// Still in the configuration (a removed group lives on while its targets drain).
    configured: bool,
    /// The group's last deregistration delay.
    delay: Duration,
}

impl Default for DataPlane {
    fn default() -> Self {
        DataPlane::new()
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.inner.root.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DataPlane {
    pub fn new() -> DataPlane {
        DataPlane::with_upstream_timeout(DEFAULT_UPSTREAM_TIMEOUT)
    }

    /// A data plane that answers 504 when a target sends no response headers within
    /// `timeout` (default [`DEFAULT_UPSTREAM_TIMEOUT`]).
    pub fn with_upstream_timeout(timeout: Duration) -> DataPlane {
        DataPlane::with_options(Options {
            upstream_timeout: timeout,
            ..Options::default()
        })
    }

    /// A data plane with these options. Threads start with the first listener.
    pub fn with_options(opts: Options) -> DataPlane {
        DataPlane {
            inner: Arc::new(Inner {
                base: Instant::now(),
                threads: opts.threads,
                upstreams: (0..opts.threads.max(1))
                    .map(|_| Arc::new(Upstream::new(opts.upstream_timeout)))
                    .collect(),
                workers: Mutex::new(None),
                root: CancellationToken::new(),
                listeners: tokio::sync::Mutex::new(Vec::new()),
                registry: Arc::new(Mutex::new(HashMap::new())),
                addrs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Makes `cfg` the configuration: binds new listeners (all of them or none: on an error
    /// the previous configuration stays), closes removed ones (in-flight requests finish),
    /// starts health checks for new targets, and drains targets that left their group for
    /// the group's deregistration delay. Must be called from within a tokio runtime.
    ///
    /// A listener keeps its socket (and its open connections) when an entry with the same id
    /// and address, or the same non-zero address, is still there.
    pub async fn apply(&self, cfg: Config) -> Result<(), LbError> {
        let inner = &self.inner;
        let mut listeners = inner.listeners.lock().await;

        // 1. Which listeners keep their socket.
        let mut taken = vec![false; listeners.len()];
        let mut plan: Vec<Option<usize>> = Vec::with_capacity(cfg.listeners.len());
        for l in &cfg.listeners {
            let same = listeners
                .iter()
                .enumerate()
                .position(|(i, o)| !taken[i] && o.id == l.id && o.bind == l.bind)
                .or_else(|| {
                    if l.bind.port() == 0 {
                        return None;
                    }
                    listeners
                        .iter()
                        .enumerate()
                        .position(|(i, o)| !taken[i] && (o.bind == l.bind || o.local == l.bind))
                });
            if let Some(i) = same {
                taken[i] = true;
            }
            plan.push(same);
        }

        // 2. Bind the new ones; nothing has changed yet if one fails.
        let mut fresh: Vec<Option<(Vec<std::net::TcpListener>, SocketAddr)>> =
            Vec::with_capacity(plan.len());
        for (l, p) in cfg.listeners.iter().zip(&plan) {
            if p.is_some() {
                fresh.push(None);
                continue;
            }
            match listener::bind(l.bind, inner.threads.max(1)) {
                Ok(b) => fresh.push(Some(b)),
                Err(source) => {
                    tracing::warn!(listener = %l.id, addr = %l.bind, error = %source, "cannot bind; configuration not applied");
                    return Err(LbError::Bind {
                        addr: l.bind,
                        source,
                    });
                }
            }
        }

        // 3. Targets: registry update and per-apply group views.
        let views = self.update_groups(&cfg.target_groups);

        // 4. Routing tables, swapped in or started with their listener (on the workers,
        // started with the first listener).
        let mut old: Vec<Option<ListenerRuntime>> = std::mem::take(&mut *listeners)
            .into_iter()
            .map(Some)
            .collect();
        let mut next = Vec::with_capacity(cfg.listeners.len());
        {
            let mut workers = lock(&inner.workers);
            if inner.threads > 0 && workers.is_none() && fresh.iter().any(Option::is_some) {
                match Workers::start(inner.threads, &inner.root) {
                    Ok(w) => *workers = Some(w),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start worker threads; serving on the caller's runtime");
                    }
                }
            }
            for ((l, p), f) in cfg.listeners.iter().zip(plan).zip(fresh) {
                let routes = Arc::new(self.compile(l, &views));
                let kept = p.and_then(|i| old.get_mut(i).and_then(Option::take));
                if let Some(mut rt) = kept {
                    rt.shared.routes.store(routes);
                    rt.id = l.id.clone();
                    rt.bind = l.bind;
                    next.push(rt);
                } else if let Some((sock, local)) = f {
                    let shared = Arc::new(ListenerShared {
                        routes: ArcSwap::new(routes),
                        port: local.port(),
                    });
                    let running = listener::spawn(
                        sock,
                        &shared,
                        &inner.upstreams,
                        workers.as_ref(),
                        inner.root.child_token(),
                    );
                    tracing::info!(listener = %l.id, addr = %local, "listening");
                    next.push(ListenerRuntime {
                        id: l.id.clone(),
                        bind: l.bind,
                        local,
                        shared,
                        running,
                    });
                }
            }
        }

        // 5. Close the listeners that went away (their sockets are closed on return).
        for o in old.into_iter().flatten() {
            tracing::info!(listener = %o.id, addr = %o.local, "closing listener");
            o.running.close().await;
        }
        *lock(&inner.addrs) = next.iter().map(|l| (l.id.clone(), l.local)).collect();
        *listeners = next;
        Ok(())
    }

    /// Updates the target registry to `groups` and returns each group's view.
    fn update_groups(&self, groups: &[TargetGroup]) -> HashMap<String, Arc<GroupView>> {
        let inner = &self.inner;
        let mut reg = lock(&inner.registry);
        let mut views = HashMap::with_capacity(groups.len());
        let wanted: HashSet<&str> = groups.iter().map(|g| g.id.as_str()).collect();
        for tg in groups {
            let params = CheckParams {
                check: tg.health_check.clone(),
                protocol: tg.protocol_version,
            };
            let g = reg.entry(tg.id.clone()).or_default();
            g.configured = true;
            g.delay = tg.deregistration_delay;
            let mut seen: HashSet<&Target> = HashSet::new();
            let mut order = Vec::with_capacity(tg.targets.len());
            for t in &tg.targets {
                if !seen.insert(t) {
                    continue;
                }
                let rt = match g.targets.get(t) {
                    Some(rt) => {
                        if **rt.params.load() != params {
                            rt.params.store(Arc::new(params.clone()));
                            rt.wake.notify_one();
                        }
                        if rt.is_draining() {
                            tracing::info!(group = %tg.id, target = %t.addr, "re-registered while draining");
                            rt.set_draining(false);
                            rt.drain_gen.fetch_add(1, Ordering::Relaxed);
                            checker::start(rt, &inner.root);
                        }
                        rt.clone()
                    }
                    None => {
                        let rt = Arc::new(TargetRuntime::new(
                            t.clone(),
                            params.clone(),
                            inner.base,
                            inner.upstreams.len(),
                        ));
                        tracing::info!(group = %tg.id, target = %t.addr, "target registered");
                        checker::start(&rt, &inner.root);
                        g.targets.insert(t.clone(), rt.clone());
                        rt
                    }
                };
                order.push(rt);
            }
            for (t, rt) in &g.targets {
                if !seen.contains(t) && !rt.is_draining() {
                    self.start_drain(&tg.id, rt, tg.deregistration_delay);
                }
            }
            g.order = order.iter().map(|r| r.target.clone()).collect();
            views.insert(
                tg.id.clone(),
                Arc::new(GroupView {
                    id: tg.id.clone(),
                    protocol: tg.protocol_version,
                    algorithm: tg.algorithm,
                    slow_start: tg.slow_start,
                    targets: order,
                    counter: g.counter.clone(),
                    base: inner.base,
                }),
            );
        }
        // Groups that left the configuration: their targets drain for the group's last delay.
        let gone: Vec<String> = reg
            .iter()
            .filter(|(id, g)| g.configured && !wanted.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(g) = reg.get_mut(&id) {
                g.configured = false;
                g.order.clear();
                for rt in g.targets.values() {
                    if !rt.is_draining() {
                        self.start_drain(&id, rt, g.delay);
                    }
                }
            }
        }
        reg.retain(|_, g| g.configured || !g.targets.is_empty());
        views
    }

    /// Starts draining `rt` of group `gid` for `delay`: no new requests, no more health
    /// checks; when the delay is over it leaves the registry and what it still serves is cut.
    fn start_drain(&self, gid: &str, rt: &Arc<TargetRuntime>, delay: Duration) {
        let inner = &self.inner;
        checker::stop(rt);
        rt.set_draining(true);
        let gen = rt.drain_gen.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(group = %gid, target = %rt.target.addr, ?delay, "target draining");
        let registry = inner.registry.clone();
        let root = inner.root.clone();
        let rt = rt.clone();
        let gid = gid.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = root.cancelled() => return,
            }
            let mut reg = lock(&registry);
            let Some(g) = reg.get_mut(&gid) else { return };
            let current = g
                .targets
                .get(&rt.target)
                .is_some_and(|cur| Arc::ptr_eq(cur, &rt));
            if current && rt.is_draining() && rt.drain_gen.load(Ordering::Relaxed) == gen {
                g.targets.remove(&rt.target);
                rt.closed.cancel();
                rt.pool.clear();
                tracing::info!(group = %gid, target = %rt.target.addr, "target deregistered");
            }
            if !g.configured && g.targets.is_empty() {
                reg.remove(&gid);
            }
        });
    }

    /// One listener's routing table.
    fn compile(&self, l: &Listener, views: &HashMap<String, Arc<GroupView>>) -> Routes {
        let base = self.inner.base;
        let view = |id: &str| {
            views.get(id).cloned().unwrap_or_else(|| {
                tracing::warn!(listener = %l.id, group = %id, "rule forwards to an unknown target group");
                Arc::new(GroupView {
                    id: id.to_string(),
                    protocol: Default::default(),
                    algorithm: Default::default(),
                    slow_start: Duration::ZERO,
                    targets: Vec::new(),
                    counter: Arc::new(AtomicUsize::new(0)),
                    base,
                })
            })
        };
        let rules = l
            .rules
            .iter()
            .map(|r| {
                let action = match &r.action {
                    Action::Forward(groups) => {
                        // A lone group is used whatever its weight (as ELBv2's plain
                        // TargetGroupArn form); otherwise weight 0 never gets a request.
                        let groups: Vec<(Arc<GroupView>, u64)> = if groups.len() == 1 {
                            groups
                                .iter()
                                .map(|w| (view(&w.target_group), u64::from(w.weight.max(1))))
                                .collect()
                        } else {
                            groups
                                .iter()
                                .filter(|w| w.weight > 0)
                                .map(|w| (view(&w.target_group), u64::from(w.weight)))
                                .collect()
                        };
                        RouteAction::Forward {
                            total: groups.iter().map(|(_, w)| w).sum(),
                            groups,
                            counter: AtomicU64::new(0),
                        }
                    }
                    Action::FixedResponse {
                        status,
                        content_type,
                        body,
                    } => RouteAction::Fixed {
                        status: StatusCode::from_u16(*status)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        content_type: content_type
                            .as_deref()
                            .and_then(|c| HeaderValue::from_str(c).ok()),
                        body: Bytes::from(body.clone().unwrap_or_default()),
                    },
                    Action::Redirect { location, status } => RouteAction::Redirect {
                        location: location.clone(),
                        status: StatusCode::from_u16(*status).unwrap_or(StatusCode::FOUND),
                    },
                };
                RouteRule {
                    id: r.id.clone(),
                    conds: r.conditions.iter().map(Cond::compile).collect(),
                    action,
                }
            })
            .collect();
        Routes { rules }
    }

    /// The health of every target of `target_group` (registered, in configuration order,
    /// then those still draining).
    pub fn target_health(&self, target_group: &str) -> Vec<TargetHealth> {
        let reg = lock(&self.inner.registry);
        let Some(g) = reg.get(target_group) else {
            return Vec::new();
        };
        let mut out: Vec<TargetHealth> = g
            .order
            .iter()
            .filter_map(|t| g.targets.get(t))
            .filter(|rt| !rt.is_draining())
            .map(|rt| rt.report())
            .collect();
        let mut draining: Vec<TargetHealth> = g
            .targets
            .values()
            .filter(|rt| rt.is_draining())
            .map(|rt| rt.report())
            .collect();
        draining.sort_by(|a, b| (&a.id, a.port).cmp(&(&b.id, b.port)));
        out.extend(draining);
        out
    }

    /// The address a listener is bound to (its port when the configuration asked for 0).
    pub fn listener_addr(&self, listener: &str) -> Option<std::net::SocketAddr> {
        lock(&self.inner.addrs).get(listener).copied()
    }

    /// Closes every listener, stops health checks, and stops the worker threads once the
    /// in-flight requests are done (at most 30 s).
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        let mut listeners = inner.listeners.lock().await;
        for l in listeners.drain(..) {
            l.running.close().await;
        }
        lock(&inner.addrs).clear();
        {
            let mut reg = lock(&inner.registry);
            for g in reg.values() {
                for rt in g.targets.values() {
                    checker::stop(rt);
                }
            }
            reg.clear();
        }
        let workers = lock(&inner.workers).take();
        if let Some(w) = workers {
            w.stop().await;
        }
    }
}
