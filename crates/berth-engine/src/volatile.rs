//! The engine's volatile runtime state: libcontainer's per-container state directory
//! (`state.json`, its copy of the spec, the `notify.sock` the init waits on), the OCI
//! bundle (`config.json`) the shim starts the container from, and the files bind-mounted on
//! the container's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (written at each
//! start; Docker keeps them in the container's directory, but nothing restarts a container
//! after a reboot here, and the next start writes them again).
//!
//! It only means something while the container's processes exist, so it belongs on a tmpfs,
//! as runc's `/run/runc` and containerd's `/run/containerd` do: nothing of it must survive a
//! reboot, and creating and deleting its files costs no disk. The place is
//! `/run/berth/volatile/<16 hex digits of SHA-256(engine root)>/{runtime,bundles,etc}`, one
//! per engine root.
//! Where `/run` is no tmpfs (this project's test hosts: ext4 without a journal, where creating
//! an inode skips every inode deleted in the last minutes and costs ~0.1 ms in a busy loop),
//! Berth mounts one small tmpfs at `/run/berth/volatile` (mode 0700, nosuid, nodev, noexec),
//! once per boot, under a lock so that two engines never stack two mounts. If that is not
//! possible (not root), the engine keeps the state in `<root>/run`, as before; lookups of a
//! container's state try both places, so containers started either way stay reachable.
//! The per-root directories are created by the first container and stay (empty) when its
//! last container is gone: removing them could race with a container starting in the same
//! root; the tmpfs is empty after a reboot. The shims' sockets are in `sockets/` there
//! (`berth_runtime::shim::socket_dir`).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, MsFlags};

pub use berth_runtime::volatile::VOLATILE_DIR;
use berth_runtime::volatile::{on_tmpfs, path_key};

/// Its size limit when Berth mounts it: a container's state is a few KiB.
const TMPFS_OPTIONS: &str = "mode=0700,size=256m";

/// libcontainer's root directory for the engine at `root`: on a tmpfs when one can be had
/// (see the module documentation; created by the first container's shim, so that an engine
/// that never runs one leaves nothing there), else `<root>/run` (created here).
pub(crate) fn runtime_root(root: &Path) -> io::Result<PathBuf> {
    match prepare() {
        Ok(()) => return Ok(volatile_runtime_root(root)),
        Err(e) => {
            tracing::debug!(error = %e, "no volatile state tmpfs; state stays under the root")
        }
    }
    let dir = root.join("run");
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The volatile libcontainer root of the engine at `root` (whether or not it exists).
pub(crate) fn volatile_runtime_root(root: &Path) -> PathBuf {
    Path::new(VOLATILE_DIR).join(path_key(root)).join("runtime")
}

/// The directory `name` (`bundles`, `etc`) next to a volatile runtime root (`None` when the
/// runtime root is `<root>/run`: those files then stay in the container directories).
pub(crate) fn sibling_dir(runtime: &Path, name: &str) -> Option<PathBuf> {
    if !runtime.starts_with(VOLATILE_DIR) {
        return None;
    }
    runtime.parent().map(|p| p.join(name))
}

/// Every place libcontainer's state of container `id` may be (the engine's current runtime
/// root first).
pub(crate) fn runtime_dirs(root: &Path, current: &Path, id: &str) -> Vec<PathBuf> {
    let mut dirs = vec![current.join(id)];
    for other in [volatile_runtime_root(root), root.join("run")] {
        if other != current {
            dirs.push(other.join(id));
        }
    }
    dirs
}

/// Makes sure [`VOLATILE_DIR`] is on a tmpfs, mounting one there if needed.
fn prepare() -> io::Result<()> {
    let dir = Path::new(VOLATILE_DIR);
    if on_tmpfs(dir) {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if on_tmpfs(dir) {
        return Ok(()); // /run is a tmpfs: a directory is enough
    }
    // One mounter at a time, and a second look under the lock (another engine may have
    // mounted it meanwhile; mounting again would hide that one's state).
    let lock_path = dir.with_extension("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
    if on_tmpfs(dir) {
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(TMPFS_OPTIONS),
    )
    .map_err(io::Error::from)?;
    tracing::info!(
        dir = VOLATILE_DIR,
        "mounted a tmpfs for volatile runtime state (/run is no tmpfs)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_directory_per_root() {
        let a = volatile_runtime_root(Path::new("/var/lib/berth/engine"));
        let b = volatile_runtime_root(Path::new("/tmp/other"));
        assert_ne!(a, b);
        assert!(a.starts_with(VOLATILE_DIR) && a.ends_with("runtime"));
        assert_eq!(a, volatile_runtime_root(Path::new("/var/lib/berth/engine")));
    }

    #[test]
    fn lookups_cover_both_places() {
        let root = Path::new("/x/root");
        let current = volatile_runtime_root(root);
        let dirs = runtime_dirs(root, &current, "abc");
        assert_eq!(
            dirs,
            vec![current.join("abc"), root.join("run").join("abc")]
        );
        assert_eq!(
            sibling_dir(&current, "bundles"),
            current.parent().map(|p| p.join("bundles"))
        );
        assert_eq!(sibling_dir(&root.join("run"), "etc"), None);
        let dirs = runtime_dirs(root, &root.join("run"), "abc");
        assert_eq!(
            dirs,
            vec![root.join("run").join("abc"), current.join("abc")]
        );
    }
}
