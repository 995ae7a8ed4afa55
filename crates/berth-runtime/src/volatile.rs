//! Where volatile runtime state goes: a tmpfs at [`VOLATILE_DIR`] (the engine prepares it,
//! mounting one where `/run` is no tmpfs; see `berth_engine::volatile`). Here: the shims'
//! sockets, which mean nothing once their shim is gone.

use std::path::{Path, PathBuf};

use nix::sys::statfs::{statfs, TMPFS_MAGIC};
use sha2::{Digest, Sha256};

/// The host-wide directory of every engine's volatile state.
pub const VOLATILE_DIR: &str = "/run/berth/volatile";

/// Whether `dir` is on a tmpfs.
pub fn on_tmpfs(dir: &Path) -> bool {
    statfs(dir).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
}

/// The name under [`VOLATILE_DIR`] of what belongs to `path` (an engine root, a shim's state
/// directory): 16 hex digits of its SHA-256, a function of the path, so that every process
/// finds it without asking anyone.
pub fn path_key(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(path.as_os_str().as_bytes());
    hex::encode(&digest[..8])
}

/// The volatile directory of the sockets of the shim whose state directory is `state_dir`:
/// `VOLATILE_DIR/sockets/<path_key(state_dir)>`.
pub fn socket_dir(state_dir: &Path) -> PathBuf {
    Path::new(VOLATILE_DIR)
        .join("sockets")
        .join(path_key(state_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_dirs_are_per_state_dir_and_short() {
        let a = socket_dir(Path::new("/var/lib/berth/engine/containers/a/state"));
        let b = socket_dir(Path::new("/var/lib/berth/engine/containers/b/state"));
        assert_ne!(a, b);
        assert!(a.starts_with(VOLATILE_DIR));
        // sun_path holds 107 bytes.
        assert!(a.join("attach.sock").as_os_str().len() < 100);
    }
}
