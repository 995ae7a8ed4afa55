//! Blob bytes on the local filesystem, content addressed.
//!
//! Layout under the data directory:
//! `blobs/<algorithm>/<first two hex>/<hex>` for verified blobs and `uploads/<id>` for uploads in
//! progress. A blob file is written in `uploads/`, fsynced, verified, renamed into `blobs/` and
//! the directory fsynced; only then does its metadata record commit (see `meta`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_oci::{Algorithm, Digest, Hasher};
use tokio::io::AsyncReadExt;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob store i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    uploads: PathBuf,
}

impl BlobStore {
    pub fn open(data_dir: &Path) -> Result<BlobStore> {
        let blobs = data_dir.join("blobs");
        let uploads = data_dir.join("uploads");
        for d in [&blobs, &uploads] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        Ok(BlobStore { blobs, uploads })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.uploads.join(id)
    }

    pub fn uploads_dir(&self) -> &Path {
        &self.uploads
    }

    pub async fn open_blob(&self, digest: &Digest) -> Result<tokio::fs::File> {
        let p = self.blob_path(digest);
        tokio::fs::File::open(&p).await.map_err(io_err(&p))
    }

    /// Moves a verified, fsynced upload file into place and makes the rename durable.
    pub fn install(&self, upload: &Path, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        let parent = dest.parent().unwrap_or(&self.blobs).to_path_buf();
        if !parent.exists() {
            std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
            if let Some(gp) = parent.parent() {
                fsync_dir(gp)?;
            }
        }
        std::fs::rename(upload, &dest).map_err(io_err(&dest))?;
        fsync_dir(&parent)
    }

    pub fn remove_blob(&self, digest: &Digest) -> Result<bool> {
        let p = self.blob_path(digest);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    pub fn remove_upload(&self, id: &str) -> Result<()> {
        let p = self.upload_path(id);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Every blob file on disk with its modification time.
    pub fn list_blob_files(&self) -> Result<Vec<(Digest, SystemTime)>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.blobs.join(alg.as_str());
            let Ok(shards) = std::fs::read_dir(&dir) else {
                continue;
            };
            for shard in shards {
                let shard = shard.map_err(io_err(&dir))?;
                let sp = shard.path();
                let Ok(files) = std::fs::read_dir(&sp) else {
                    continue;
                };
                for f in files {
                    let f = f.map_err(io_err(&sp))?;
                    let name = f.file_name().to_string_lossy().to_string();
                    let Ok(d) = format!("{}:{}", alg.as_str(), name).parse::<Digest>() else {
                        continue;
                    };
                    let mtime = f
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push((d, mtime));
                }
            }
        }
        Ok(out)
    }

    /// Every file in the uploads directory with its modification time.
    pub fn list_upload_files(&self) -> Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.uploads).map_err(io_err(&self.uploads))?;
        for f in rd {
            let f = f.map_err(io_err(&self.uploads))?;
            let mtime = f
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((f.file_name().to_string_lossy().to_string(), mtime));
        }
        Ok(out)
    }
}

/// Hashes a whole file with `alg`; returns the digest and the length.
pub async fn hash_file(path: &Path, alg: Algorithm) -> Result<(Digest, u64)> {
    let mut f = tokio::fs::File::open(path).await.map_err(io_err(path))?;
    let mut h = Hasher::new(alg);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf).await.map_err(io_err(path))?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((h.finalize(), n))
}

/// Starts writeback of `len` bytes at `offset` without waiting for it (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`). Purely an optimisation: durability still comes from the fsync
/// before a blob is installed, which then has little left to flush. Errors are ignored.
#[allow(unsafe_code)]
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range takes only integers; the descriptor belongs to `file`, which is
    // borrowed for the duration of the call, and the call touches no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// Flushes a file being written with `fdatasync` on a blocking thread every
/// [`BackgroundSync::EVERY`] bytes, at most one at a time, without holding up the writer.
///
/// `sync_file_range` alone starts the data's writeback, but the final fsync still has to
/// flush the device's cache for everything written since the last flush: on this kind of
/// virtual disk that cost ~0.19 s for 256 MiB even after all the data had reached it, and
/// ~9 ms when the file had been flushed every 16 MiB along the way (bench/registry push-big).
/// Purely an optimisation like [`start_writeback`]: errors are ignored, durability comes
/// from the fsync before the blob is installed.
pub struct BackgroundSync {
    /// Bytes written when the last flush started.
    started_at: u64,
    busy: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BackgroundSync {
    pub const EVERY: u64 = 16 << 20;

    pub fn new(written: u64) -> BackgroundSync {
        BackgroundSync {
            started_at: written,
            busy: Default::default(),
        }
    }

    /// Called after each write with the file's new length; starts a flush when due. Only the
    /// writer sets `busy` (the flush clears it), so checking and then setting it is no race.
    pub fn progress(&mut self, file: &std::fs::File, written: u64) {
        use std::sync::atomic::Ordering;
        if written.saturating_sub(self.started_at) < Self::EVERY
            || self.busy.load(Ordering::Acquire)
        {
            return;
        }
        let (Ok(rt), Ok(f)) = (tokio::runtime::Handle::try_current(), file.try_clone()) else {
            return;
        };
        self.started_at = written;
        self.busy.store(true, Ordering::Release);
        let busy = self.busy.clone();
        rt.spawn_blocking(move || {
            let _ = f.sync_data();
            busy.store(false, Ordering::Release);
        });
    }
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(io_err(dir))?;
    f.sync_all().map_err(io_err(dir))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync dir) with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn background_sync_flushes_every_16_mib_one_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = std::fs::File::create(dir.path().join("upload")).expect("create");
        let mut sync = BackgroundSync::new(1 << 20);
        // Not due yet: nothing starts.
        sync.progress(&file, BackgroundSync::EVERY);
        assert!(!sync.busy.load(Ordering::Acquire));
        assert_eq!(sync.started_at, 1 << 20);
        // Due: a flush starts at this length.
        sync.progress(&file, BackgroundSync::EVERY + (1 << 20));
        assert_eq!(sync.started_at, BackgroundSync::EVERY + (1 << 20));
        // It ends (bounded wait).
        for _ in 0..500 {
            if !sync.busy.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!sync.busy.load(Ordering::Acquire), "the flush never ended");
        // While one runs, another does not start, however much is written.
        sync.busy.store(true, Ordering::Release);
        sync.progress(&file, 4 * BackgroundSync::EVERY);
        assert_eq!(sync.started_at, BackgroundSync::EVERY + (1 << 20));
        // Once it is over, the next due write starts the next one.
        sync.busy.store(false, Ordering::Release);
        sync.progress(&file, 4 * BackgroundSync::EVERY);
        assert_eq!(sync.started_at, 4 * BackgroundSync::EVERY);
    }
}
