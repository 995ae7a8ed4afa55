use std::fs;
use std::path::Path;

use nix::unistd::Pid;

use crate::common::{self, CGROUP_PROCS, ControllerOpt, WrapIoResult, WrappedIoError};

pub(super) trait Controller {
    type Error: From<WrappedIoError>;
    type Resource;

    /// Adds a new task specified by its pid to the cgroup
    fn add_task(pid: Pid, cgroup_path: &Path) -> Result<(), Self::Error> {
        fs::create_dir_all(cgroup_path).wrap_create_dir(cgroup_path)?;
        join(pid, cgroup_path)?;
        Ok(())
    }

    /// Applies resource restrictions to the cgroup
    fn apply(controller_opt: &ControllerOpt, cgroup_root: &Path) -> Result<(), Self::Error>;

    /// Checks if the controller needs to handle this request
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource>;
}

/// Berth patch: moves `pid` into the v1 cgroup at `cgroup_path`. A single-threaded process
/// moving itself writes "0" to `tasks`: for the calling thread the kernel skips the global
/// `cgroup_threadgroup_rwsem` write lock, whose RCU grace period costs 10-20 ms per container
/// start here; every `cgroup.procs` write (and any pid other than 0) takes it. For a
/// single-threaded process both files move the same, whole process.
pub(super) fn join(pid: Pid, cgroup_path: &Path) -> Result<(), WrappedIoError> {
    if pid == nix::unistd::getpid() && single_threaded() {
        return common::write_cgroup_file_str(cgroup_path.join("tasks"), "0");
    }
    common::write_cgroup_file(cgroup_path.join(CGROUP_PROCS), pid)
}

fn single_threaded() -> bool {
    fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}
