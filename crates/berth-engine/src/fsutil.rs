//! Small file-system helpers: atomic replacement, a lock file, timestamps.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Deletes the tree at `dir` in place; one that is not there is fine.
pub(crate) fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Where [`discard_dir`] moves directories before deleting them.
const TRASH: &str = "trash";

/// Removes `dir` (inside `root`, on the same file system) as far as anyone can see right away:
/// it is renamed into `root/trash` and deleted there by a background `rm` (deleting a
/// container's directory tree takes tens of milliseconds on ext4). Falls back to deleting it
/// in place. A crash leaves the trash for [`purge_trash`].
pub(crate) fn discard_dir(root: &Path, dir: &Path) -> io::Result<()> {
    let trash = root.join(TRASH);
    let name = format!(
        "{}-{:016x}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("dir"),
        rand::random::<u64>()
    );
    let target = trash.join(name);
    let moved = fs::create_dir_all(&trash).and_then(|()| fs::rename(dir, &target));
    match moved {
        Ok(()) => {
            if !remove_in_background(&target) {
                fs::remove_dir_all(&target)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            tracing::debug!(error = %e, dir = %dir.display(), "cannot move to the trash");
            remove_dir_if_present(dir)
        }
    }
}

/// Deletes what earlier processes left in the trash (a crash, a killed `rm`), in the
/// background.
pub(crate) fn purge_trash(root: &Path) {
    let Ok(entries) = fs::read_dir(root.join(TRASH)) else {
        return;
    };
    for e in entries.flatten() {
        remove_in_background(&e.path());
    }
}

/// Starts `rm -rf --one-file-system PATH` detached: through the shim zygote when this process
/// has one (it forks and execs `rm` there, not in this large multi-threaded process), else in
/// its own process group, reaped by a thread (the process finishes the job if this one exits
/// first). False if it could not start.
fn remove_in_background(path: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    // Not through PATH: this runs as root.
    let rm = ["/usr/bin/rm", "/bin/rm"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("rm");
    if let Some(p) = path.to_str() {
        if berth_runtime::shim::zygote::run_detached(&[rm, "-rf", "--one-file-system", "--", p]) {
            return true;
        }
    }
    let child = std::process::Command::new(rm)
        .args(["-rf", "--one-file-system", "--"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    match child {
        Ok(mut c) => {
            std::thread::spawn(move || c.wait());
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot start rm");
            false
        }
    }
}

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
