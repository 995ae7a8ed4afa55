//! The host agent: registers this host as an ECS container instance and runs its tasks
//! through the engine.
