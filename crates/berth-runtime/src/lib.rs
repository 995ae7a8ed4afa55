//! Container execution for Berth.
//!
//! - `spec`: the OCI runtime spec of a container, built from an image config and run options
//!   with Docker's merge rules and Docker's default security profile.
//!
//! The per-container shim that drives youki's libcontainer is in progress (issue 3).

pub mod spec;
