//! The ECS control plane: the ECS API over AWS JSON 1.1, a durable store, the scheduler (a pure
//! function over a cluster snapshot), the task lifecycle, and the agent protocol.

pub mod proto;
pub mod scheduler;
pub mod taskdef;
