//! What the data plane reports about targets (ELBv2's `TargetHealth`).

use serde::{Deserialize, Serialize};

/// ELBv2 `TargetHealthStateEnum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    Unused,
    Draining,
    Unavailable,
}

impl TargetState {
    /// The wire value (`initial`, `healthy`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Unused => "unused",
            TargetState::Draining => "draining",
            TargetState::Unavailable => "unavailable",
        }
    }
}

/// The health of one target of a target group, including targets still draining after they
/// left the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub id: String,
    pub port: u16,
    pub state: TargetState,
    /// ELBv2 `TargetHealthReasonEnum` (`Elb.InitialHealthChecking`, `Target.Timeout`,
    /// `Target.ResponseCodeMismatch`, `Target.FailedHealthChecks`,
    /// `Target.DeregistrationInProgress`, `Target.HealthCheckDisabled`, ...).
    pub reason: Option<String>,
    pub description: Option<String>,
    /// Requests in flight to this target right now.
    pub in_flight: u64,
}
