//! The overlay rootfs of a container: read-only snapshots below, a per-container upper dir.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("an overlay needs at least one lower directory")]
    NoLayers,
    #[error("overlay mount options for {target} are too long ({len} bytes)")]
    TooLong { target: PathBuf, len: usize },
    #[error("cannot mount the overlay on {target}")]
    Mount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot unmount {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot read the mount table")]
    MountInfo(#[source] io::Error),
}

/// Mounts an overlay on `target`: `lower` top-down (the image's last layer first), `upper`
/// and `work` the container's own. The mount is made private so that it does not propagate.
///
/// `volatile` (for containers removed when they exit): the upper layer is never synced to
/// disk (overlayfs' `volatile` option, Linux 5.10+; without it, unmounting syncs the whole
/// upper file system). Kernels without the option get a plain mount.
pub fn mount_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    volatile: bool,
) -> Result<(), MountError> {
    if lower.is_empty() {
        return Err(MountError::NoLayers);
    }
    let lowerdir = lower
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    // The kernel copies at most one page of mount data.
    if data.len() >= 4096 {
        return Err(MountError::TooLong {
            target: target.to_path_buf(),
            len: data.len(),
        });
    }
    let err = |source| MountError::Mount {
        target: target.to_path_buf(),
        source,
    };
    let plain = |data: &str| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
    };
    match volatile {
        true => match plain(&format!("{data},volatile")) {
            Err(nix::errno::Errno::EINVAL) => plain(&data),
            r => r,
        },
        false => plain(&data),
    }
    .map_err(err)?;
    if let Err(e) = mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        let _ = umount2(target, MntFlags::MNT_DETACH);
        return Err(err(e));
    }
    tracing::debug!(target = %target.display(), layers = lower.len(), "overlay mounted");
    Ok(())
}

/// Whether something is mounted on `target` (from `/proc/self/mountinfo`).
pub fn is_mounted(target: &Path) -> Result<bool, MountError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    let want = target.display().to_string();
    Ok(info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == want)
    }))
}

fn unescape_mountinfo(s: &str) -> String {
    // Octal escapes for space, tab, newline and backslash.
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Unmounts `target` when it is mounted (every stacked mount on it). umount2(2) itself says
/// when nothing is mounted there any more (EINVAL: not a mount point; ENOENT: no such path),
/// which spares reading the mount table (~0.2 ms at the end of every `berth run --rm`).
pub fn unmount(target: &Path) -> Result<(), MountError> {
    let fail = |source| MountError::Unmount {
        target: target.to_path_buf(),
        source,
    };
    // Bounded: a handful of stacked mounts at most, each iteration removes one.
    for _ in 0..MAX_STACKED_MOUNTS {
        match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {
                tracing::debug!(target = %target.display(), "overlay unmounted");
                return Ok(());
            }
            Err(nix::errno::Errno::EBUSY) => {
                // Still busy (a process of the container lingering): detach it lazily.
                umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).map_err(fail)?;
            }
            Err(source) => return Err(fail(source)),
        }
    }
    Err(fail(nix::errno::Errno::ELOOP))
}

/// More mounts stacked on one rootfs than this is not Berth's doing: [`unmount`] gives up.
const MAX_STACKED_MOUNTS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }

    #[test]
    fn root_is_mounted() {
        assert!(is_mounted(Path::new("/")).expect("mountinfo"));
        assert!(!is_mounted(Path::new("/nonexistent-berth")).expect("mountinfo"));
    }

    #[test]
    fn unmounting_what_is_not_mounted_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        unmount(dir.path()).expect("not a mount point");
        unmount(&dir.path().join("missing")).expect("no such path");
    }
}
