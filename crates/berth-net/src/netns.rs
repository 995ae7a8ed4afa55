//! Persistent network namespaces bind-mounted on a file (like `ip netns add`), and running code
//! inside one.
//!
//! Namespace changes are per thread, so both creating and entering a namespace happen on a
//! dedicated short-lived thread: this is safe from a multi-threaded (tokio) process.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};
use tracing::debug;

use crate::error::{Error, Result};

/// Whether `path` is a mounted namespace file.
pub fn is_netns_mount(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Creates a new network namespace (only `lo`, down) and bind-mounts it on `path` (created; its
/// parent must exist). Idempotent: a namespace already mounted there is kept.
pub fn create_netns(path: &Path) -> Result<()> {
    if is_netns_mount(path) {
        return Ok(());
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("create netns file", path, e))?;
    let res = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
                op: "unshare",
                path: path.to_owned(),
                source: e,
            })?;
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| Error::Netns {
                op: "bind mount",
                path: path.to_owned(),
                source: e,
            })
        })
        .join()
        .map_err(|_| Error::ThreadPanicked("netns create"))?
    });
    if res.is_err() {
        let _ = fs::remove_file(path);
    }
    debug!(path = %path.display(), "netns created");
    res
}

/// Unmounts (lazily) and removes a namespace file. Idempotent.
pub fn delete_netns(path: &Path) -> Result<()> {
    // A file may have been mounted over more than once (crashes); bounded.
    for _ in 0..8 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            Err(e) => {
                return Err(Error::Netns {
                    op: "unmount",
                    path: path.to_owned(),
                    source: e,
                })
            }
        }
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove netns file", path, e)),
    }
    debug!(path = %path.display(), "netns deleted");
    Ok(())
}

/// Moves the calling thread into the network namespace at `path`. Only for threads that end
/// right after (the crate calls it on its own threads).
pub(crate) fn enter_netns(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io("open netns", path, e))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
        op: "setns",
        path: path.to_owned(),
        source: e,
    })
}

/// Runs `f` on a new thread inside the network namespace at `path` and returns its result.
/// Sockets created by `f` belong to that namespace (and keep working from any thread after).
pub fn run_in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            enter_netns(path)?;
            Ok(f())
        })
        .join()
        .map_err(|_| Error::ThreadPanicked("netns"))?
    })
}
