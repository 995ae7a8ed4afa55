//! Container health checks with ECS's (Docker's) semantics.
//!
//! A container definition's `healthCheck` (`command` `["CMD", ...]` or `["CMD-SHELL", "..."]`,
//! `interval` 30 s, `timeout` 5 s, `retries` 3, `startPeriod` 0) becomes a [`HealthCheck`].
//! [`run_checks`] runs it for one container: the first probe `interval` after the start, each
//! next one `interval` after the previous one ended (Docker's timing); a probe is the command
//! run in the container ([`Runtime::exec_check`]: `berth exec` with a timeout). Exit 0 passes;
//! anything else, a timeout or a failure to run it fails.
//!
//! [`HealthMachine`] is the status: UNKNOWN until the first counted result, HEALTHY after a
//! pass, UNHEALTHY after `retries` consecutive failures. Failures during the start period are
//! not counted, unless a probe passed already (then the container counts as started).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::runtime::{Probe, Runtime};
use crate::taskdef::HealthCheckDef;

/// ECS's defaults.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_RETRIES: u32 = 3;
/// A probe that has not returned this long after its timeout is abandoned (and counted as
/// a timeout): the runtime enforces the timeout itself, this only guards against a stuck one.
const PROBE_GRACE: Duration = Duration::from_secs(5);

/// A container's health as ECS names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthStatus {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "UNKNOWN",
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
        }
    }
}

/// A health check ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The argv run in the container (`CMD-SHELL x` is `/bin/sh -c x`).
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// Why a `healthCheck` cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthCheckError {
    #[error(
        "healthCheck.command must be [\"CMD\", ARGS...], [\"CMD-SHELL\", COMMAND] or [\"NONE\"]"
    )]
    Command,
}

fn seconds(v: Option<i64>, default: Duration, lo: u64, hi: u64) -> Duration {
    match v {
        // The control plane validated the ranges; clamp anyway (ECS's bounds).
        Some(s) => Duration::from_secs((s.max(0) as u64).clamp(lo, hi)),
        None => default,
    }
}

impl HealthCheck {
    /// The check of a container definition; `None` for `["NONE"]` (Docker: disabled).
    pub fn from_def(def: &HealthCheckDef) -> Result<Option<HealthCheck>, HealthCheckError> {
        let command = match def.command.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
                vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
            }
            Some((kind, [])) if kind == "NONE" => return Ok(None),
            _ => return Err(HealthCheckError::Command),
        };
        Ok(Some(HealthCheck {
            command,
            interval: seconds(def.interval, DEFAULT_INTERVAL, 5, 300),
            timeout: seconds(def.timeout, DEFAULT_TIMEOUT, 2, 120),
            retries: def
                .retries
                .map_or(DEFAULT_RETRIES, |r| r.clamp(1, 10) as u32),
            start_period: seconds(def.start_period, Duration::ZERO, 0, 300),
        }))
    }
}

/// The health status of one container from its probe results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMachine {
    status: HealthStatus,
    retries: u32,
    failures: u32,
    passed_once: bool,
}

impl HealthMachine {
    /// Starting at `status` (UNKNOWN for a new container, the recorded one after a restart).
    pub fn new(retries: u32, status: HealthStatus) -> HealthMachine {
        HealthMachine {
            status,
            retries: retries.max(1),
            failures: 0,
            passed_once: status == HealthStatus::Healthy,
        }
    }

    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// Consecutive counted failures.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records one probe result; `in_start_period`: the container's start period has not
    /// elapsed. Returns the new status when it changed.
    pub fn record(&mut self, passed: bool, in_start_period: bool) -> Option<HealthStatus> {
        let before = self.status;
        if passed {
            self.passed_once = true;
            self.failures = 0;
            self.status = HealthStatus::Healthy;
        } else if !in_start_period || self.passed_once {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        (self.status != before).then_some(self.status)
    }
}

/// Runs `check` against container `id` until the receiver of `changes` is gone (or the task
/// is aborted), sending `(name, status)` at every change. `start_period_left`: how much of
/// the start period remains (all of it for a container that just started).
pub async fn run_checks(
    runtime: Arc<dyn Runtime>,
    name: String,
    id: String,
    check: HealthCheck,
    initial: HealthStatus,
    start_period_left: Duration,
    changes: mpsc::UnboundedSender<(String, HealthStatus)>,
) {
    let started = Instant::now();
    let mut machine = HealthMachine::new(check.retries, initial);
    loop {
        tokio::time::sleep(check.interval).await;
        if changes.is_closed() {
            return;
        }
        let probe = tokio::time::timeout(
            check.timeout + PROBE_GRACE,
            runtime.exec_check(&id, &check.command, check.timeout),
        )
        .await
        .unwrap_or(Probe::TimedOut);
        let passed = probe == Probe::Exit { code: 0 };
        let in_start_period = started.elapsed() < start_period_left;
        if !passed {
            tracing::debug!(container = %name, id = %id, ?probe, in_start_period,
                failures = machine.failures() + 1, "health check failed");
        }
        if let Some(status) = machine.record(passed, in_start_period) {
            tracing::info!(container = %name, id = %id, status = status.as_str(), ?probe,
                "container health changed");
            if changes.send((name.clone(), status)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRuntime;
    use berth_engine::RunSpec;

    fn def(command: &[&str]) -> HealthCheckDef {
        HealthCheckDef {
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn commands_and_defaults() {
        let c = HealthCheck::from_def(&def(&["CMD", "curl", "-f", "http://x/"]))
            .expect("ok")
            .expect("check");
        assert_eq!(c.command, vec!["curl", "-f", "http://x/"]);
        assert_eq!(
            (c.interval, c.timeout, c.retries, c.start_period),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, 3, Duration::ZERO)
        );
        let c = HealthCheck::from_def(&def(&["CMD-SHELL", "test -f /x", "&& true"]))
            .expect("ok")
            .expect("check");
        assert_eq!(c.command, vec!["/bin/sh", "-c", "test -f /x && true"]);
        assert_eq!(HealthCheck::from_def(&def(&["NONE"])), Ok(None));
        for bad in [&[][..], &["CMD"], &["curl", "x"], &["NONE", "x"]] {
            assert_eq!(
                HealthCheck::from_def(&def(bad)),
                Err(HealthCheckError::Command),
                "{bad:?}"
            );
        }
        let c = HealthCheck::from_def(&HealthCheckDef {
            command: vec!["CMD".into(), "true".into()],
            interval: Some(1),
            timeout: Some(500),
            retries: Some(0),
            start_period: Some(10),
        })
        .expect("ok")
        .expect("check");
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.timeout, Duration::from_secs(120));
        assert_eq!(c.retries, 1);
        assert_eq!(c.start_period, Duration::from_secs(10));
    }

    #[test]
    fn machine_follows_docker() {
        let mut m = HealthMachine::new(3, HealthStatus::Unknown);
        // Start period: failures are not counted.
        assert_eq!(m.record(false, true), None);
        assert_eq!(m.record(false, true), None);
        assert_eq!(m.failures(), 0);
        assert_eq!(m.status(), HealthStatus::Unknown);
        assert_eq!(m.record(true, true), Some(HealthStatus::Healthy));
        // After a pass, failures count even within the start period.
        assert_eq!(m.record(false, true), None);
        assert_eq!(m.record(false, false), None);
        assert_eq!(m.failures(), 2);
        assert_eq!(m.record(false, false), Some(HealthStatus::Unhealthy));
        assert_eq!(m.record(false, false), None);
        assert_eq!(m.record(true, false), Some(HealthStatus::Healthy));
        assert_eq!(m.failures(), 0);

        // Out of the start period: UNKNOWN → UNHEALTHY after `retries` failures.
        let mut m = HealthMachine::new(2, HealthStatus::Unknown);
        assert_eq!(m.record(false, false), None);
        assert_eq!(m.record(false, false), Some(HealthStatus::Unhealthy));
        let mut m = HealthMachine::new(1, HealthStatus::Unknown);
        assert_eq!(m.record(false, false), Some(HealthStatus::Unhealthy));
        // Resumed at HEALTHY (after an agent restart): failures count at once.
        let mut m = HealthMachine::new(1, HealthStatus::Healthy);
        assert_eq!(m.record(false, true), Some(HealthStatus::Unhealthy));
    }

    fn started(rt: &FakeRuntime, name: &str) -> String {
        let spec = RunSpec {
            image: "bb".into(),
            cmd: vec!["sleep".into()],
            name: Some(name.into()),
            ..Default::default()
        };
        rt.run(&spec).expect("run").id
    }

    fn check(cmd: &[&str], interval: u64, timeout: u64, retries: u32, start: u64) -> HealthCheck {
        HealthCheck {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
            retries,
            start_period: Duration::from_secs(start),
        }
    }

    /// The timing of probes and status changes, in paused time.
    #[tokio::test(start_paused = true)]
    async fn probes_every_interval_and_reports_changes() {
        let rt = FakeRuntime::with_images(&["bb"], &[]);
        let id = started(&rt, "web");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        // Passes once the flag is set: UNKNOWN until then (start period 12 s hides failures).
        let task = tokio::spawn(run_checks(
            rt.clone(),
            "web".into(),
            id.clone(),
            check(&["flag", "ready"], 5, 2, 2, 12),
            HealthStatus::Unknown,
            Duration::from_secs(12),
            tx,
        ));
        tokio::time::sleep(Duration::from_secs(11)).await;
        // Probes at 5 s and 10 s failed inside the start period: no change yet.
        assert!(rx.try_recv().is_err());
        assert_eq!(rt.probe_times(&id), vec![5, 10]);
        rt.set_flag("ready", true);
        let (name, s) = rx.recv().await.expect("change");
        assert_eq!((name.as_str(), s), ("web", HealthStatus::Healthy));
        assert_eq!(t0.elapsed(), Duration::from_secs(15));
        // Failing again: UNHEALTHY after 2 consecutive failures (at 20 s and 25 s).
        rt.set_flag("ready", false);
        let (_, s) = rx.recv().await.expect("change");
        assert_eq!(s, HealthStatus::Unhealthy);
        assert_eq!(t0.elapsed(), Duration::from_secs(25));
        rt.set_flag("ready", true);
        let (_, s) = rx.recv().await.expect("change");
        assert_eq!(s, HealthStatus::Healthy);
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        assert_eq!(rt.probe_times(&id), vec![5, 10, 15, 20, 25, 30]);
        drop(rx);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(task.is_finished(), "stops once nobody listens");
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_count_as_failures() {
        let rt = FakeRuntime::with_images(&["bb"], &[]);
        let id = started(&rt, "web");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        let task = tokio::spawn(run_checks(
            rt.clone(),
            "web".into(),
            id.clone(),
            check(&["hang"], 10, 3, 3, 0),
            HealthStatus::Unknown,
            Duration::ZERO,
            tx,
        ));
        let (_, s) = rx.recv().await.expect("change");
        assert_eq!(s, HealthStatus::Unhealthy);
        // Probes start at 10, 23, 36 (interval after each 3 s timeout); the third ends at 39.
        assert_eq!(rt.probe_times(&id), vec![10, 23, 36]);
        assert_eq!(t0.elapsed(), Duration::from_secs(39));
        task.abort();
    }
}
