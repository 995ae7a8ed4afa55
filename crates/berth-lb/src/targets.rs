//! Per-target runtime state and target choice.
//!
//! A [`TargetRuntime`] lives as long as the target is registered or draining, across applies
//! (so its health, in-flight count and slow-start clock survive a configuration change). The
//! request path reads only atomics: `routable` (healthy, or health checks disabled),
//! `draining`, `in_flight` and `healthy_since`. The health checker owns the state machine
//! ([`HealthMachine`], pure and unit-tested) behind a mutex.
//!
//! A [`GroupView`] is the immutable, per-apply picture of a target group used by the routing
//! table: its registered targets in order and the algorithm. Choice ([`GroupView::pick`]):
//! candidates are the routable, non-draining targets; when there is none the group fails open
//! to every registered non-draining target (ALB semantics); no target at all → `None` (503).
//! Round robin walks a counter that persists across applies; least outstanding requests takes
//! the lowest `in_flight`, ties rotated by the same counter.
//!
//! Slow start: a target that turned healthy less than `slow_start` ago has a factor
//! `f = max(elapsed / slow_start, 0.1)`. Round robin accepts it with probability `f` when its
//! turn comes (else moves on), least outstanding requests compares `(in_flight + 1) / f`; both
//! give it about `f` of a full target's share, growing linearly. Slow start applies only while
//! at least one candidate is out of it (ALB: no slow start without other healthy targets).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Algorithm, HealthCheck, ProtocolVersion, Target};
use crate::health::{TargetHealth, TargetState};

/// Health-check settings a checker reads at each round (swapped on apply).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckParams {
    pub check: HealthCheck,
    pub protocol: ProtocolVersion,
}

/// The result of one health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Ok,
    /// Wrong status code.
    Mismatch(u16),
    Timeout,
    /// Connection refused/reset or a malformed response.
    Failed,
}

/// ELBv2 health state machine of one target (without draining, which is a separate flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMachine {
    pub state: TargetState,
    pub reason: Option<&'static str>,
    pub description: Option<String>,
    oks: u32,
    fails: u32,
}

impl Default for HealthMachine {
    fn default() -> Self {
        HealthMachine::initial()
    }
}

impl HealthMachine {
    /// Just registered, no check done yet.
    pub fn initial() -> HealthMachine {
        HealthMachine {
            state: TargetState::Initial,
            reason: Some("Elb.RegistrationInProgress"),
            description: Some("Target registration is in progress".into()),
            oks: 0,
            fails: 0,
        }
    }

    /// Health checks disabled: `unavailable`, routable.
    pub fn disabled() -> HealthMachine {
        HealthMachine {
            state: TargetState::Unavailable,
            reason: Some("Target.HealthCheckDisabled"),
            description: Some("Health checks are disabled".into()),
            oks: 0,
            fails: 0,
        }
    }

    /// Whether requests may go to the target (healthy, or health checks disabled).
    pub fn routable(&self) -> bool {
        matches!(self.state, TargetState::Healthy | TargetState::Unavailable)
    }

    /// Records one check. A new target needs one success to turn healthy (ALB: "after your
    /// target is registered, it must pass one health check"); otherwise `healthy_threshold`
    /// consecutive successes turn it healthy and `unhealthy_threshold` consecutive failures
    /// unhealthy. Returns true when the target just turned healthy.
    pub fn record(
        &mut self,
        probe: &Probe,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> bool {
        if self.state == TargetState::Unavailable {
            *self = HealthMachine::initial();
        }
        match probe {
            Probe::Ok => {
                self.fails = 0;
                self.oks = self.oks.saturating_add(1);
                let turn = match self.state {
                    TargetState::Initial => true,
                    TargetState::Healthy => false,
                    _ => self.oks >= healthy_threshold.max(1),
                };
                if turn {
                    self.state = TargetState::Healthy;
                    self.reason = None;
                    self.description = None;
                }
                turn
            }
            failure => {
                self.oks = 0;
                self.fails = self.fails.saturating_add(1);
                let (reason, description) = match failure {
                    Probe::Mismatch(code) => (
                        "Target.ResponseCodeMismatch",
                        format!("Health checks failed with these codes: [{code}]"),
                    ),
                    Probe::Timeout => ("Target.Timeout", "Request timed out".to_string()),
                    _ => (
                        "Target.FailedHealthChecks",
                        "Health checks failed".to_string(),
                    ),
                };
                match self.state {
                    TargetState::Unhealthy => {
                        self.reason = Some(reason);
                        self.description = Some(description);
                    }
                    _ if self.fails >= unhealthy_threshold.max(1) => {
                        self.state = TargetState::Unhealthy;
                        self.reason = Some(reason);
                        self.description = Some(description);
                    }
                    TargetState::Initial => {
                        self.reason = Some("Elb.InitialHealthChecking");
                        self.description = Some("Initial health checks in progress".into());
                    }
                    _ => {}
                }
                false
            }
        }
    }
}

/// A registered (or draining) target of one target group.
#[derive(Debug)]
pub struct TargetRuntime {
    pub target: Target,
    /// `target.addr` as a URI authority.
    pub authority: http::uri::Authority,
    pub in_flight: AtomicU64,
    routable: AtomicBool,
    draining: AtomicBool,
    /// Milliseconds since the data plane's base instant when it last turned healthy
    /// (`u64::MAX`: never).
    healthy_since_ms: AtomicU64,
    base: Instant,
    pub health: Mutex<HealthMachine>,
    pub params: ArcSwap<CheckParams>,
    /// Wakes the checker when `params` change.
    pub wake: Notify,
    /// The running checker's token (cancelled when draining starts).
    pub checker: Mutex<Option<CancellationToken>>,
    /// Bumped each time draining starts, so a stale drain timer does nothing.
    pub drain_gen: AtomicU64,
    /// Cancelled when the target is gone for good (deregistration delay over): in-flight
    /// requests and tunnels to it are cut.
    pub closed: CancellationToken,
    /// Idle HTTP/1.1 connections to the target.
    pub pool: crate::upstream::Pool,
}

impl TargetRuntime {
    /// `workers`: the data plane's worker threads (one idle-connection stack each).
    pub fn new(
        target: Target,
        params: CheckParams,
        base: Instant,
        workers: usize,
    ) -> TargetRuntime {
        let machine = if params.check.enabled {
            HealthMachine::initial()
        } else {
            HealthMachine::disabled()
        };
        let authority = http::uri::Authority::try_from(target.addr.to_string())
            .unwrap_or_else(|_| http::uri::Authority::from_static("0.0.0.0"));
        TargetRuntime {
            target,
            authority,
            in_flight: AtomicU64::new(0),
            routable: AtomicBool::new(machine.routable()),
            draining: AtomicBool::new(false),
            healthy_since_ms: AtomicU64::new(u64::MAX),
            base,
            health: Mutex::new(machine),
            params: ArcSwap::from_pointee(params),
            wake: Notify::new(),
            checker: Mutex::new(None),
            drain_gen: AtomicU64::new(0),
            closed: CancellationToken::new(),
            pool: crate::upstream::Pool::new(workers),
        }
    }

    fn lock_health(&self) -> std::sync::MutexGuard<'_, HealthMachine> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a health check result.
    pub fn record(&self, probe: &Probe, params: &CheckParams) {
        let mut h = self.lock_health();
        let before = h.state;
        let turned = h.record(
            probe,
            params.check.healthy_threshold,
            params.check.unhealthy_threshold,
        );
        if turned {
            let ms = self.base.elapsed().as_millis() as u64;
            self.healthy_since_ms.store(ms, Ordering::Relaxed);
        }
        self.routable.store(h.routable(), Ordering::Relaxed);
        if before != h.state {
            tracing::info!(target_addr = %self.target.addr, id = %self.target.id,
                from = before.as_str(), to = h.state.as_str(), reason = ?h.reason, "target health changed");
        }
    }

    /// Health checks are disabled: `unavailable` and routable.
    pub fn set_disabled(&self) {
        let mut h = self.lock_health();
        if h.state != TargetState::Unavailable {
            *h = HealthMachine::disabled();
        }
        self.routable.store(true, Ordering::Relaxed);
    }

    /// Health checks were re-enabled: back to `initial` until the next check.
    pub fn set_enabled(&self) {
        let mut h = self.lock_health();
        if h.state == TargetState::Unavailable {
            *h = HealthMachine::initial();
            self.routable.store(false, Ordering::Relaxed);
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    pub fn is_routable(&self) -> bool {
        self.routable.load(Ordering::Relaxed) && !self.is_draining()
    }

    /// Slow-start factor in (0, 1] at `now_ms` (ms since base).
    fn factor(&self, slow_start: Duration, now_ms: u64) -> f64 {
        if slow_start.is_zero() {
            return 1.0;
        }
        let since = self.healthy_since_ms.load(Ordering::Relaxed);
        if since == u64::MAX {
            return 1.0;
        }
        let elapsed = now_ms.saturating_sub(since) as f64;
        let total = slow_start.as_millis() as f64;
        if elapsed >= total {
            1.0
        } else {
            (elapsed / total).max(0.1)
        }
    }

    /// The ELBv2 view of this target.
    pub fn report(&self) -> TargetHealth {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        if self.is_draining() {
            return TargetHealth {
                id: self.target.id.clone(),
                port: self.target.port,
                state: TargetState::Draining,
                reason: Some("Target.DeregistrationInProgress".into()),
                description: Some("Target deregistration is in progress".into()),
                in_flight,
            };
        }
        let h = self.lock_health();
        TargetHealth {
            id: self.target.id.clone(),
            port: self.target.port,
            state: h.state,
            reason: h.reason.map(str::to_string),
            description: h.description.clone(),
            in_flight,
        }
    }
}

/// Counts a request in flight to a target until dropped.
#[derive(Debug)]
pub struct InFlight(pub Arc<TargetRuntime>);

impl InFlight {
    pub fn new(t: Arc<TargetRuntime>) -> InFlight {
        t.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(t)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The routing table's picture of a target group.
#[derive(Debug)]
pub struct GroupView {
    pub id: String,
    pub protocol: ProtocolVersion,
    pub algorithm: Algorithm,
    pub slow_start: Duration,
    pub targets: Vec<Arc<TargetRuntime>>,
    pub counter: Arc<AtomicUsize>,
    pub base: Instant,
}

impl GroupView {
    /// Chooses a target for one request (see the module docs); `None`: no target at all.
    pub fn pick(&self) -> Option<Arc<TargetRuntime>> {
        let healthy = self.targets.iter().filter(|t| t.is_routable()).count();
        let fail_open = healthy == 0;
        let eligible = |t: &&Arc<TargetRuntime>| {
            if fail_open {
                !t.is_draining()
            } else {
                t.is_routable()
            }
        };
        let n = if fail_open {
            self.targets.iter().filter(eligible).count()
        } else {
            healthy
        };
        if n == 0 {
            return None;
        }
        let nth = |i: usize| self.targets.iter().filter(eligible).nth(i % n).cloned();
        let now_ms = if self.slow_start.is_zero() {
            0
        } else {
            self.base.elapsed().as_millis() as u64
        };
        let factor = |t: &TargetRuntime| self.factor_of(t, now_ms);
        // Slow start only while some candidate is out of it.
        let slow = !self.slow_start.is_zero()
            && !fail_open
            && self
                .targets
                .iter()
                .filter(eligible)
                .any(|t| factor(t) >= 1.0)
            && self
                .targets
                .iter()
                .filter(eligible)
                .any(|t| factor(t) < 1.0);
        match self.algorithm {
            Algorithm::RoundRobin => {
                if n == 1 {
                    return nth(0);
                }
                for _ in 0..4 * n {
                    let i = self.counter.fetch_add(1, Ordering::Relaxed);
                    let t = nth(i)?;
                    if !slow {
                        return Some(t);
                    }
                    let f = factor(&t);
                    if f >= 1.0 || rand::random::<f64>() < f {
                        return Some(t);
                    }
                }
                nth(self.counter.fetch_add(1, Ordering::Relaxed))
            }
            Algorithm::LeastOutstandingRequests => {
                let start = self.counter.fetch_add(1, Ordering::Relaxed) % n;
                let mut best: Option<(f64, Arc<TargetRuntime>)> = None;
                for k in 0..n {
                    let Some(t) = nth(start + k) else { continue };
                    let load = (t.in_flight.load(Ordering::Relaxed) + 1) as f64;
                    let score = if slow { load / factor(&t) } else { load };
                    if best.as_ref().is_none_or(|(b, _)| score < *b) {
                        best = Some((score, t));
                    }
                }
                best.map(|(_, t)| t)
            }
        }
    }

    fn factor_of(&self, t: &TargetRuntime, now_ms: u64) -> f64 {
        t.factor(self.slow_start, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> CheckParams {
        CheckParams {
            check: HealthCheck::default(),
            protocol: ProtocolVersion::Http1,
        }
    }

    fn target(i: u16) -> Target {
        Target {
            id: format!("t{i}"),
            port: 8000 + i,
            addr: format!("127.0.0.1:{}", 8000 + i).parse().expect("addr"),
        }
    }

    #[test]
    fn machine_transitions() {
        let mut m = HealthMachine::initial();
        assert_eq!(m.reason, Some("Elb.RegistrationInProgress"));
        assert!(!m.record(&Probe::Failed, 5, 2));
        assert_eq!(m.state, TargetState::Initial);
        assert_eq!(m.reason, Some("Elb.InitialHealthChecking"));
        // One success turns a new target healthy.
        assert!(m.record(&Probe::Ok, 5, 2));
        assert_eq!(m.state, TargetState::Healthy);
        assert_eq!(m.reason, None);
        assert!(!m.record(&Probe::Mismatch(500), 5, 2));
        assert_eq!(m.state, TargetState::Healthy);
        m.record(&Probe::Mismatch(500), 5, 2);
        assert_eq!(m.state, TargetState::Unhealthy);
        assert_eq!(m.reason, Some("Target.ResponseCodeMismatch"));
        assert_eq!(
            m.description.as_deref(),
            Some("Health checks failed with these codes: [500]")
        );
        m.record(&Probe::Timeout, 5, 2);
        assert_eq!(m.reason, Some("Target.Timeout"));
        // healthy_threshold consecutive successes to come back; a failure resets the count.
        for _ in 0..4 {
            assert!(!m.record(&Probe::Ok, 5, 2));
        }
        m.record(&Probe::Failed, 5, 2);
        assert_eq!(m.reason, Some("Target.FailedHealthChecks"));
        for _ in 0..4 {
            assert!(!m.record(&Probe::Ok, 5, 2));
        }
        assert!(m.record(&Probe::Ok, 5, 2));
        assert_eq!(m.state, TargetState::Healthy);
        // Initial → unhealthy after unhealthy_threshold failures.
        let mut m = HealthMachine::initial();
        m.record(&Probe::Timeout, 5, 2);
        m.record(&Probe::Timeout, 5, 2);
        assert_eq!(m.state, TargetState::Unhealthy);
        assert!(HealthMachine::disabled().routable());
    }

    fn group(n: u16, algorithm: Algorithm, slow_start: Duration) -> GroupView {
        let base = Instant::now();
        GroupView {
            id: "tg".into(),
            protocol: ProtocolVersion::Http1,
            algorithm,
            slow_start,
            targets: (0..n)
                .map(|i| Arc::new(TargetRuntime::new(target(i), params(), base, 1)))
                .collect(),
            counter: Arc::new(AtomicUsize::new(0)),
            base,
        }
    }

    fn counts(g: &GroupView, n: usize) -> Vec<usize> {
        let mut c = vec![0; g.targets.len()];
        for _ in 0..n {
            let t = g.pick().expect("a target");
            let i = g
                .targets
                .iter()
                .position(|x| Arc::ptr_eq(x, &t))
                .expect("known");
            c[i] += 1;
        }
        c
    }

    #[test]
    fn round_robin_fail_open_and_health() {
        let g = group(3, Algorithm::RoundRobin, Duration::ZERO);
        // All initial (not routable): fail open to all.
        assert_eq!(counts(&g, 30), vec![10, 10, 10]);
        g.targets[0].record(&Probe::Ok, &params());
        assert_eq!(counts(&g, 30), vec![30, 0, 0]);
        g.targets[1].record(&Probe::Ok, &params());
        assert_eq!(counts(&g, 30), vec![15, 15, 0]);
        g.targets[1].set_draining(true);
        assert_eq!(counts(&g, 10), vec![10, 0, 0]);
        g.targets[0].set_draining(true);
        // Nothing healthy left: fail open to the non-draining one.
        assert_eq!(counts(&g, 10), vec![0, 0, 10]);
        g.targets[2].set_draining(true);
        assert!(g.pick().is_none());
        assert!(group(0, Algorithm::RoundRobin, Duration::ZERO)
            .pick()
            .is_none());
    }

    #[test]
    fn least_outstanding() {
        let g = group(3, Algorithm::LeastOutstandingRequests, Duration::ZERO);
        let _a = InFlight::new(g.targets[0].clone());
        let _b = InFlight::new(g.targets[0].clone());
        let _c = InFlight::new(g.targets[1].clone());
        assert_eq!(counts(&g, 10), vec![0, 0, 10]);
        drop((_a, _b, _c));
        let c = counts(&g, 30);
        assert_eq!(c, vec![10, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_grows_linearly() {
        let g = group(2, Algorithm::RoundRobin, Duration::from_secs(100));
        g.targets[0].record(&Probe::Ok, &params());
        tokio::time::advance(Duration::from_secs(200)).await;
        g.targets[1].record(&Probe::Ok, &params());
        tokio::time::advance(Duration::from_secs(1)).await;
        let c = counts(&g, 2000);
        // factor 0.1: about 10 % of a full share.
        assert!(c[1] < 300, "{c:?}");
        tokio::time::advance(Duration::from_secs(49)).await;
        let c = counts(&g, 2000);
        // factor 0.5: about a third of the requests.
        assert!(c[1] > 450 && c[1] < 900, "{c:?}");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(counts(&g, 2000), vec![1000, 1000]);
        // LOR with slow start.
        let g = group(
            2,
            Algorithm::LeastOutstandingRequests,
            Duration::from_secs(100),
        );
        g.targets[0].record(&Probe::Ok, &params());
        tokio::time::advance(Duration::from_secs(200)).await;
        g.targets[1].record(&Probe::Ok, &params());
        let _busy = InFlight::new(g.targets[0].clone());
        // Idle but only 10 % into slow start: the busy full target still wins.
        assert_eq!(counts(&g, 10), vec![10, 0]);
    }
}
