//! Small file-system helpers: atomic replacement, a lock file, timestamps.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Replaces `path` with `data` atomically: temporary file, fsync, rename, directory fsync.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `data` by a rename, without fsync: for files rebuilt on every start
/// (a container's `/etc/hosts`...), where a crash loses nothing worth keeping.
pub(crate) fn write_replace(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

/// Opens (creating) `path` and takes an exclusive `flock` on it.
pub(crate) fn lock(path: &Path) -> io::Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io::Error::from(errno))
}

/// Now, RFC 3339 with nanoseconds in UTC.
pub(crate) fn now() -> String {
    berth_runtime::logs::rfc3339_nano(time::OffsetDateTime::now_utc()).unwrap_or_default()
}
