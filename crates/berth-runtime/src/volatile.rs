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

/// The volatile directory of the sockets of the shim whose state directory is `state_dir`:
/// `VOLATILE_DIR/sockets/<16 hex digits of SHA-256(state_dir)>` (a function of the path, so
/// that every client finds it without asking anyone).
pub fn socket_dir(state_dir: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(state_dir.as_os_str().as_bytes());
    Path::new(VOLATILE_DIR)
        .join("sockets")
        .join(&hex::encode(digest)[..16])
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
