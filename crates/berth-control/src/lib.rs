//! The ECS control plane: the ECS API over AWS JSON 1.1, the ELBv2 API over the AWS query
//! protocol, a durable store, the scheduler (a pure function over a cluster snapshot), the task
//! lifecycle, and the agent protocol.

pub mod agent_api;
pub mod control;
pub mod ecs;
pub mod elbv2;
pub mod model;
pub mod proto;
pub mod scheduler;
pub mod services;
pub mod store;
pub mod taskdef;

pub use control::{Control, ControlConfig, ControlError};

/// `ecs.cpu-architecture` of this host, as the ECS agent names it.
pub fn cpu_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    }
}

/// An error and its sources, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
