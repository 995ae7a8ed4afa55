//! ECS services: the controller that keeps each service's tasks running, healthy and on the
//! right task definition (rolling deployments within minimumHealthyPercent/maximumPercent,
//! the deployment circuit breaker with rollback, DAEMON services), and the load balancer
//! targets of those tasks. The API side is `crate::ecs::services`.

pub mod controller;
#[cfg(test)]
mod tests;

use std::time::Duration;

use berth_aws::AwsError;

pub use controller::{spawn_controller, Controller};

/// What the service controller and the ECS API need to know about an ELBv2 target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupInfo {
    pub arn: String,
    /// `instance` or `ip`.
    pub target_type: String,
    pub port: Option<u16>,
    /// Whether a listener or rule of a load balancer forwards to it.
    pub has_load_balancer: bool,
    pub deregistration_delay: Duration,
}

/// The load balancer as the service controller uses it: target groups, their targets and
/// health. Implemented by the ELBv2 API over the data plane, which keeps its records in the
/// control plane's state: never call it inside `Control::read`/`Control::write` (the state
/// lock is not reentrant).
#[async_trait::async_trait]
pub trait TargetRegistry: Send + Sync {
    fn target_group(&self, region: &str, arn: &str) -> Option<TargetGroupInfo>;
    /// Every target of the group (registered or draining) with its health.
    fn target_health(
        &self,
        region: &str,
        arn: &str,
    ) -> Result<Vec<berth_lb::TargetHealth>, AwsError>;
    async fn register_targets(
        &self,
        region: &str,
        arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), AwsError>;
    async fn deregister_targets(
        &self,
        region: &str,
        arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), AwsError>;
}
