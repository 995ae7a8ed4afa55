//! Berth's built-in load balancer, the data plane of the ELBv2 API: one HTTP/1.1 + h2c
//! reverse proxy per listener, rules, weighted target groups, active health checks, draining
//! and slow start. The control plane owns the configuration and pushes all of it with
//! [`DataPlane::apply`]; the data plane owns health and in-flight state.

pub mod config;
pub mod health;

use std::sync::Mutex;

pub use config::Config;
pub use health::{TargetHealth, TargetState};

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
// INTERFACE ONLY (replaced by the data-plane implementation): records the configuration.
#[derive(Debug, Default)]
pub struct DataPlane {
    config: Mutex<Config>,
}

impl DataPlane {
    pub fn new() -> DataPlane {
        DataPlane::default()
    }

    /// Makes `cfg` the configuration: binds new listeners (all of them or none: on an error
    /// the previous configuration stays), closes removed ones (in-flight requests finish),
    /// starts health checks for new targets, and drains targets that left their group for
    /// the group's deregistration delay. Must be called from within a tokio runtime.
    pub async fn apply(&self, cfg: Config) -> Result<(), LbError> {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
        Ok(())
    }

    /// The health of every target of `target_group` (registered or still draining).
    pub fn target_health(&self, target_group: &str) -> Vec<TargetHealth> {
        let cfg = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for tg in cfg.target_groups.iter().filter(|t| t.id == target_group) {
            for t in &tg.targets {
                out.push(TargetHealth {
                    id: t.id.clone(),
                    port: t.port,
                    state: TargetState::Initial,
                    reason: Some("Elb.RegistrationInProgress".into()),
                    description: None,
                    in_flight: 0,
                });
            }
        }
        out
    }

    /// The address a listener is bound to (its port when the configuration asked for 0).
    pub fn listener_addr(&self, listener: &str) -> Option<std::net::SocketAddr> {
        let cfg = self.config.lock().unwrap_or_else(|e| e.into_inner());
        cfg.listeners
            .iter()
            .find(|l| l.id == listener)
            .map(|l| l.bind)
    }

    /// Closes every listener and stops health checks.
    pub async fn shutdown(&self) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = Config::default();
    }
}
