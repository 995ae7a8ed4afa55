//! `berth exec`: the process to run in a running container, built from its runtime spec.
//!
//! Docker's rules: the container's environment plus `-e`, the container's user and working
//! directory unless `-u`/`-w` say otherwise, the container's capabilities, no_new_privs,
//! rlimits and AppArmor/SELinux labels; `TERM=xterm` with `-t`. The process is started by
//! [`berth_runtime::exec::exec`] in a single-threaded process (the CLI runs it before its
//! async runtime).

use std::path::{Path, PathBuf};

use berth_runtime::exec::ExecRequest;
use berth_runtime::spec::user::{resolve_in_root, resolve_user};
use berth_runtime::spec::RootfsUserDb;
use oci_spec::runtime::{Spec, UserBuilder};

use crate::container::{ContainerError, ContainerState};
use crate::Engine;

/// What `berth exec` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// `-e NAME=VALUE` (a bare `NAME` is resolved by the caller or dropped).
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    /// Kill the process when it runs longer (without `tty`; health checks).
    pub timeout: Option<std::time::Duration>,
}

/// An exec ready to run: the request for the runtime and the directory to remove afterwards.
#[derive(Debug, Clone)]
pub struct PreparedExec {
    pub request: ExecRequest,
    /// The container's short id (for messages).
    pub container: String,
}

impl PreparedExec {
    /// Removes the exec's private directory.
    pub fn cleanup(&self) {
        let _ = std::fs::remove_dir_all(&self.request.work_dir);
    }
}

/// Replaces or adds `NAME=VALUE` entries of `base` by those of `over`.
fn merge_env(base: &[String], over: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for e in over {
        let (name, _) = e.split_once('=').unwrap_or((e.as_str(), ""));
        if !e.contains('=') {
            continue;
        }
        match out
            .iter_mut()
            .find(|x| x.split_once('=').map(|(n, _)| n) == Some(name))
        {
            Some(slot) => *slot = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

impl Engine {
    /// Checks that the container runs and builds the process `berth exec` starts in it.
    pub fn prepare_exec(
        &self,
        query: &str,
        spec: &ExecSpec,
    ) -> Result<PreparedExec, ContainerError> {
        if spec.cmd.is_empty() {
            return Err(ContainerError::Exec("no command given".into()));
        }
        let info = self.container(query)?;
        if !matches!(info.state, ContainerState::Running { .. }) {
            return Err(ContainerError::NotRunning(query.to_string()));
        }
        let id = info.record.id.clone();
        let dir = self.container_dir(&id);
        // The bundle of a container started by an engine that kept it in the container's
        // directory is there.
        let bundle = self.bundle_dir(&id).join("config.json");
        let spec_path = [bundle.clone(), dir.join("bundle").join("config.json")]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or(bundle);
        let runtime_spec = Spec::load(&spec_path).map_err(ContainerError::SaveSpec)?;
        let mut process = runtime_spec.process().clone().unwrap_or_default();
        let rootfs = dir.join("rootfs");

        let mut env = process.env().clone().unwrap_or_default();
        if spec.tty {
            env = merge_env(&env, &["TERM=xterm".to_string()]);
        }
        if let Some(user) = spec.user.as_deref().filter(|u| !u.is_empty()) {
            let resolved = resolve_user(user, &RootfsUserDb::new(&rootfs))
                .map_err(|e| ContainerError::Exec(format!("unable to find user {user}: {e}")))?;
            let built = UserBuilder::default()
                .uid(resolved.uid)
                .gid(resolved.gid)
                .additional_gids(resolved.additional_gids.clone())
                .build()
                .map_err(ContainerError::SaveSpec)?;
            process.set_user(built);
            env = merge_env(&env, &[format!("HOME={}", resolved.home)]);
        }
        env = merge_env(&env, &spec.env);
        process.set_env(Some(env));
        process.set_args(Some(spec.cmd.clone()));
        process.set_terminal(Some(spec.tty));
        process.set_console_size(None);
        if let Some(w) = spec.workdir.as_deref().filter(|w| !w.is_empty()) {
            if !w.starts_with('/') {
                return Err(ContainerError::Exec(format!(
                    "the working directory {w:?} is not an absolute path"
                )));
            }
            // Docker fails when the directory is missing; say so before starting anything.
            let inside = resolve_in_root(&rootfs, Path::new(w))
                .map_err(|e| ContainerError::Exec(format!("working directory {w}: {e}")))?;
            if !inside.is_dir() {
                return Err(ContainerError::Exec(format!(
                    "the working directory {w} does not exist in the container"
                )));
            }
            process.set_cwd(PathBuf::from(w));
        }
        let work_dir = dir
            .join("exec")
            .join(&crate::container::generate_id()[..16]);
        Ok(PreparedExec {
            request: ExecRequest {
                id: id.clone(),
                // Where the container's libcontainer state is (started by this binary or by
                // one that kept it under the root).
                runtime_root: self
                    .runtime_dirs(&id)
                    .into_iter()
                    .find(|d| d.exists())
                    .and_then(|d| d.parent().map(Path::to_path_buf))
                    .unwrap_or_else(|| self.runtime.clone()),
                process,
                work_dir,
                stdin: spec.stdin,
                seccomp: berth_runtime::seccomp_bpf::Filter::from_spec(&runtime_spec)?,
                timeout: spec.timeout,
            },
            container: id[..12].to_string(),
        })
    }
}

impl Engine {
    /// Runs a process in a running container to its end and returns its exit code (128 +
    /// signal when killed). `Err(ExecError::TimedOut)` when `spec.timeout` passed. The
    /// calling process must be single-threaded (libcontainer forks): binaries call this before
    /// any async runtime or thread exists.
    pub fn exec_to_end(&self, query: &str, spec: &ExecSpec) -> Result<i32, ExecRunError> {
        let prepared = self.prepare_exec(query, spec)?;
        let result = berth_runtime::exec::exec(&prepared.request);
        prepared.cleanup();
        Ok(result?)
    }
}

/// Errors of [`Engine::exec_to_end`].
#[derive(Debug, thiserror::Error)]
pub enum ExecRunError {
    #[error(transparent)]
    Prepare(#[from] ContainerError),
    #[error(transparent)]
    Run(#[from] berth_runtime::exec::ExecError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let out = merge_env(&base, &["A=2".into(), "B=3".into(), "C".into()]);
        assert_eq!(out, vec!["PATH=/bin", "A=2", "B=3"]);
    }
}
