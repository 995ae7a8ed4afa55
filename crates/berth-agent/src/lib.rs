//! The host agent: registers this host as an ECS container instance and runs its tasks
//! through the engine.
//!
//! - [`agent`]: the main loop (`RegisterContainerInstance`, then `BerthAgent_V1.Poll` long polls);
//! - [`runner`]: one actor per task — pull, start in `dependsOn` order, watch, stop, clean up —
//!   with state in `<data>/tasks/` and every transition reported (`SubmitTaskStateChange`,
//!   [`report`]);
//! - [`spec`]: task definition → engine `RunSpec`s (pure), [`order`]: `dependsOn` levels;
//! - [`health`]: container health checks (ECS's semantics), run through `berth exec`;
//! - [`control`] and [`runtime`]: the control plane and the engine behind small traits.

pub mod agent;
pub mod control;
pub mod health;
pub mod host;
pub mod order;
pub mod report;
pub mod runner;
pub mod runtime;
pub mod spec;
pub mod state;
pub mod taskdef;
#[doc(hidden)]
pub mod testing;

pub use agent::{run, run_with, AgentConfig, AgentError, DEFAULT_DATA_DIR};
pub use control::{ControlClient, EcrToken, HttpControl};
pub use runner::{RunnerConfig, RunnerError, TaskRunner};
pub use runtime::{EngineRuntime, Runtime, RuntimeError};

/// An error with its sources, `: `-separated (for logs and reasons reported to ECS).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chain_joins_sources() {
        let io = std::io::Error::other("disk on fire");
        let e = crate::state::StateError::Io {
            what: "write",
            path: "/x".into(),
            source: io,
        };
        assert_eq!(super::error_chain(&e), "cannot write /x: disk on fire");
    }
}
