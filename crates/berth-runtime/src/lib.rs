//! Container execution for Berth.
//!
//! - `spec`: the OCI runtime spec of a container, built from an image config and run options
//!   with Docker's merge rules and Docker's default security profile.
//! - `shim`: one single-threaded process per container that drives youki's libcontainer,
//!   keeps the container's stdio and exit status, and outlives the engine that started it.
//! - `exec`: one more process in a running container (`berth exec`).
//! - `logs`: container output as Docker json-file lines.
//! - `seccomp_bpf`: Docker's seccomp profile compiled once into a cached BPF program that
//!   the container's init installs right before exec.
//! - `cgroup`: cgroup mounts, OOM-kill counters and removal of a container's cgroup directories.

pub mod cgroup;
pub mod exec;
pub mod logs;
pub mod seccomp_bpf;
pub mod shim;
pub mod spec;
pub mod volatile;
