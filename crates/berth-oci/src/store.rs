//! The local content store: blobs by digest and unpacked layer snapshots by chain id.
//!
//! Layout under the store's root:
//!
//! ```text
//! blobs/<alg>/<hex>        content-addressed blobs (layers, configs, manifests), read-only
//! snapshots/<chain hex>/   one unpacked layer each, keyed by its OCI ChainID
//! tmp/                     blobs being written and snapshots being unpacked
//! ```
//!
//! Everything becomes visible by a `rename` from `tmp/` (same file system): a blob after its
//! digest was verified and its bytes were fsynced, a snapshot after it was completely unpacked
//! and synced. A crash leaves at most garbage in `tmp/` ([`ContentStore::cleanup_tmp`]), never a
//! truncated blob or a half-unpacked snapshot under its final name.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::digest::{Algorithm, Digest, Hasher};

const BLOBS: &str = "blobs";
const SNAPSHOTS: &str = "snapshots";
const TMP: &str = "tmp";
const COPY_BUF: usize = 1 << 20;

/// Boxed error returned by a snapshot preparation callback.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No blob with this digest is stored.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// Reading the content to store failed.
    #[error("reading content of {digest}")]
    Read {
        /// The digest being written.
        digest: Digest,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The content does not hash to the expected digest; nothing was stored.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The expected digest.
        expected: Digest,
        /// The digest of the bytes read.
        actual: Digest,
    },
    /// The content's size differs from the expected size; nothing was stored.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The digest being written.
        digest: Digest,
        /// The expected size.
        expected: u64,
        /// Bytes read (when too long: the limit plus one).
        actual: u64,
    },
    /// The callback filling a snapshot failed; nothing was made visible.
    #[error("preparing snapshot {chain_id}")]
    Prepare {
        /// The snapshot's chain id.
        chain_id: Digest,
        /// The callback's error.
        #[source]
        source: BoxError,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The OCI ChainID of a stack of layers given their diff_ids, bottom first:
/// `ChainID(L0) = DiffID(L0)`, `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`.
/// `None` for an empty stack.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    chain_ids(diff_ids).pop()
}

/// The ChainID of every prefix of `diff_ids`: element `i` identifies layers `0..=i`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::sha256_of(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The result of [`ContentStore::prepare_snapshot`].
#[derive(Debug)]
pub struct Prepared<T> {
    /// The snapshot directory.
    pub path: PathBuf,
    /// The callback's result when this call created the snapshot; `None` when it already
    /// existed (or a concurrent preparer finished first).
    pub created: Option<T>,
}

/// Content-addressed blobs and unpacked snapshots under one root directory.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens the store at `root`, creating its directories when missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let store = ContentStore { root: root.into() };
        for dir in [
            store.root.join(BLOBS).join(Algorithm::Sha256.as_str()),
            store.root.join(BLOBS).join(Algorithm::Sha512.as_str()),
            store.root.join(SNAPSHOTS),
            store.root.join(TMP),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP)
    }

    /// Where the blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join(BLOBS)
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Stores the content read from `reader` as the blob `expected`, verifying its digest while
    /// streaming. Returns its size. On a mismatch or any error nothing is stored. When the blob
    /// is already present, `reader` is not read.
    pub fn put(&self, reader: impl Read, expected: &Digest) -> Result<u64, StoreError> {
        self.put_inner(reader, expected, None)
    }

    /// Like [`put`](Self::put), and the content must be exactly `size` bytes (reading stops
    /// one byte past it).
    pub fn put_sized(
        &self,
        reader: impl Read,
        expected: &Digest,
        size: u64,
    ) -> Result<u64, StoreError> {
        self.put_inner(reader, expected, Some(size))
    }

    fn put_inner(
        &self,
        reader: impl Read,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<u64, StoreError> {
        if self.contains(expected)? {
            let existing = self.size(expected)?;
            return match size {
                Some(size) if size != existing => Err(StoreError::SizeMismatch {
                    digest: expected.clone(),
                    expected: size,
                    actual: existing,
                }),
                _ => Ok(existing),
            };
        }
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(io_err("creating temporary file in", &tmp_dir))?;
        // Never read more than one byte past the expected size.
        let mut reader = reader.take(size.map_or(u64::MAX, |s| s.saturating_add(1)));
        let mut hasher = Hasher::new(expected.algorithm());
        let mut buf = vec![0u8; COPY_BUF];
        let mut total: u64 = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StoreError::Read {
                        digest: expected.clone(),
                        source,
                    })
                }
            };
            let chunk = buf.get(..n).unwrap_or_default();
            total += n as u64;
            if let Some(size) = size {
                if total > size {
                    return Err(StoreError::SizeMismatch {
                        digest: expected.clone(),
                        expected: size,
                        actual: total,
                    });
                }
            }
            hasher.update(chunk);
            tmp.write_all(chunk)
                .map_err(io_err("writing", tmp.path()))?;
        }
        if let Some(size) = size {
            if total != size {
                return Err(StoreError::SizeMismatch {
                    digest: expected.clone(),
                    expected: size,
                    actual: total,
                });
            }
        }
        let actual = hasher.finalize();
        if actual != *expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let file = tmp.as_file();
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(io_err("setting permissions of", tmp.path()))?;
        file.sync_all().map_err(io_err("syncing", tmp.path()))?;
        let dest = self.blob_path(expected);
        tmp.persist(&dest)
            .map_err(|e| io_err("renaming blob to", &dest)(e.error))?;
        sync_parent(&dest)?;
        tracing::debug!(digest = %expected, size = total, "blob stored");
        Ok(total)
    }

    /// Opens the blob `digest` for reading.
    pub fn open(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(digest.clone()),
            _ => io_err("opening", &path)(e),
        })
    }

    /// Reads the whole blob `digest` and checks it still hashes to `digest` (for small blobs:
    /// manifests and configs).
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut data = Vec::new();
        self.open(digest)?
            .read_to_end(&mut data)
            .map_err(io_err("reading", &self.blob_path(digest)))?;
        let actual = Digest::of(digest.algorithm(), &data);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Whether the blob `digest` is stored.
    pub fn contains(&self, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.blob_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("inspecting", &path)(e)),
        }
    }

    /// The size of the blob `digest` in bytes.
    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let path = self.blob_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(m.len()),
            Ok(_) => Err(StoreError::NotFound(digest.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(digest.clone()))
            }
            Err(e) => Err(io_err("inspecting", &path)(e)),
        }
    }

    /// Deletes the blob `digest`. Returns whether it was there.
    pub fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_parent(&path)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("deleting", &path)(e)),
        }
    }

    /// Every stored blob, sorted.
    pub fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join(BLOBS).join(alg.as_str());
            for name in dir_names(&dir)? {
                if let Ok(d) = format!("{alg}:{name}").parse::<Digest>() {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The directory of the snapshot `chain_id` (whether or not it exists).
    pub fn snapshot_path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(SNAPSHOTS).join(chain_id.hex())
    }

    /// Whether the snapshot `chain_id` exists (complete: snapshots appear atomically).
    pub fn has_snapshot(&self, chain_id: &Digest) -> Result<bool, StoreError> {
        let path = self.snapshot_path(chain_id);
        match fs::symlink_metadata(&path) {
            Ok(m) => Ok(m.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("inspecting", &path)(e)),
        }
    }

    /// Makes the snapshot `chain_id` exist: when it does not yet, calls `fill` with an empty
    /// temporary directory (mode 0755, on the store's file system), syncs the result and renames
    /// it into place. When `fill` fails, the temporary directory is removed and nothing becomes
    /// visible. Concurrent preparers of the same chain id each unpack into their own directory;
    /// the first rename wins and the others discard their copy.
    pub fn prepare_snapshot<T, E, F>(
        &self,
        chain_id: &Digest,
        fill: F,
    ) -> Result<Prepared<T>, StoreError>
    where
        F: FnOnce(&Path) -> Result<T, E>,
        E: Into<BoxError>,
    {
        let path = self.snapshot_path(chain_id);
        if self.has_snapshot(chain_id)? {
            return Ok(Prepared {
                path,
                created: None,
            });
        }
        let tmp_dir = self.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(&tmp_dir)
            .map_err(io_err("creating temporary directory in", &tmp_dir))?
            .keep();
        let result = self.fill_and_publish(chain_id, &tmp, &path, fill);
        if !matches!(
            result,
            Ok(Prepared {
                created: Some(_),
                ..
            })
        ) {
            if let Err(e) = remove_tree(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %e, "temporary snapshot not removed");
            }
        }
        result
    }

    fn fill_and_publish<T, E, F>(
        &self,
        chain_id: &Digest,
        tmp: &Path,
        path: &Path,
        fill: F,
    ) -> Result<Prepared<T>, StoreError>
    where
        F: FnOnce(&Path) -> Result<T, E>,
        E: Into<BoxError>,
    {
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o755))
            .map_err(io_err("setting permissions of", tmp))?;
        let value = fill(tmp).map_err(|e| StoreError::Prepare {
            chain_id: chain_id.clone(),
            source: e.into(),
        })?;
        // Flush the unpacked files before the rename makes them visible.
        let dir = File::open(tmp).map_err(io_err("opening", tmp))?;
        nix::unistd::syncfs(dir.as_raw_fd())
            .map_err(|e| io_err("syncing file system of", tmp)(e.into()))?;
        drop(dir);
        match fs::rename(tmp, path) {
            Ok(()) => {
                sync_parent(path)?;
                tracing::debug!(%chain_id, "snapshot prepared");
                Ok(Prepared {
                    path: path.to_path_buf(),
                    created: Some(value),
                })
            }
            // Another preparer renamed its copy into place first.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                tracing::debug!(%chain_id, "snapshot prepared concurrently; discarding our copy");
                Ok(Prepared {
                    path: path.to_path_buf(),
                    created: None,
                })
            }
            Err(e) => Err(io_err("renaming snapshot to", path)(e)),
        }
    }

    /// A new temporary file in the store's `tmp/` (same file system as the blobs), for a blob
    /// written and hashed by the caller and then stored with [`ContentStore::commit_blob`].
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let tmp_dir = self.tmp_dir();
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(io_err("creating temporary file in", &tmp_dir))
    }

    /// A new temporary directory in the store's `tmp/` (kept: the caller removes or adopts it).
    pub fn temp_dir(&self, prefix: &str) -> Result<PathBuf, StoreError> {
        let tmp_dir = self.tmp_dir();
        Ok(tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp_dir)
            .map_err(io_err("creating temporary directory in", &tmp_dir))?
            .keep())
    }

    /// Stores a file the caller wrote completely and whose digest it computed while writing
    /// (the file never left this process, so it is not hashed again): read-only, fsync, rename
    /// to `blobs/`, directory fsync. When the blob is already present the file is dropped.
    /// Returns the blob's size.
    pub fn commit_blob(
        &self,
        tmp: tempfile::NamedTempFile,
        digest: &Digest,
    ) -> Result<u64, StoreError> {
        if self.contains(digest)? {
            return self.size(digest);
        }
        let file = tmp.as_file();
        let size = file
            .metadata()
            .map_err(io_err("inspecting", tmp.path()))?
            .len();
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(io_err("setting permissions of", tmp.path()))?;
        file.sync_all().map_err(io_err("syncing", tmp.path()))?;
        let dest = self.blob_path(digest);
        tmp.persist(&dest)
            .map_err(|e| io_err("renaming blob to", &dest)(e.error))?;
        sync_parent(&dest)?;
        tracing::debug!(%digest, size, "blob committed");
        Ok(size)
    }

    /// Makes the directory `dir` (on the store's file system, in the snapshot format: overlay
    /// whiteouts) the snapshot `chain_id`: synced, then renamed into place. When the snapshot
    /// exists already (or a concurrent writer wins the rename), `dir` is removed instead.
    pub fn adopt_snapshot(&self, chain_id: &Digest, dir: &Path) -> Result<PathBuf, StoreError> {
        let path = self.snapshot_path(chain_id);
        if !self.has_snapshot(chain_id)? {
            let d = File::open(dir).map_err(io_err("opening", dir))?;
            nix::unistd::syncfs(d.as_raw_fd())
                .map_err(|e| io_err("syncing file system of", dir)(e.into()))?;
            drop(d);
            match fs::rename(dir, &path) {
                Ok(()) => {
                    sync_parent(&path)?;
                    tracing::debug!(%chain_id, "snapshot adopted");
                    return Ok(path);
                }
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {}
                Err(e) => return Err(io_err("renaming snapshot to", &path)(e)),
            }
        }
        remove_tree(dir).map_err(io_err("removing", dir))?;
        Ok(path)
    }

    /// Deletes the snapshot `chain_id` (it disappears atomically, then is removed). Returns
    /// whether it was there.
    pub fn delete_snapshot(&self, chain_id: &Digest) -> Result<bool, StoreError> {
        let path = self.snapshot_path(chain_id);
        let tmp_dir = self.tmp_dir();
        // A unique name in tmp/ to move the snapshot to.
        let grave = tempfile::Builder::new()
            .prefix("deleting-")
            .tempdir_in(&tmp_dir)
            .map_err(io_err("creating temporary directory in", &tmp_dir))?
            .keep();
        match fs::rename(&path, &grave) {
            Ok(()) => {
                sync_parent(&path)?;
                remove_tree(&grave).map_err(io_err("removing", &grave))?;
                Ok(true)
            }
            Err(e) => {
                let _ = fs::remove_dir(&grave);
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(false)
                } else {
                    Err(io_err("deleting snapshot", &path)(e))
                }
            }
        }
    }

    /// The chain ids of every snapshot, sorted.
    pub fn list_snapshots(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.root.join(SNAPSHOTS);
        let mut out: Vec<Digest> = dir_names(&dir)?
            .into_iter()
            .filter_map(|name| {
                let alg = match name.len() {
                    64 => Algorithm::Sha256,
                    128 => Algorithm::Sha512,
                    _ => return None,
                };
                format!("{alg}:{name}").parse().ok()
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes what crashed writers and preparers left in `tmp/`: entries last modified more
    /// than `older_than` ago (in-progress work of live processes is younger). Returns how many
    /// were removed.
    pub fn cleanup_tmp(&self, older_than: Duration) -> Result<usize, StoreError> {
        let tmp_dir = self.tmp_dir();
        let now = SystemTime::now();
        let mut removed = 0;
        for name in dir_names(&tmp_dir)? {
            let path = tmp_dir.join(&name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age >= older_than {
                remove_tree(&path).map_err(io_err("removing", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Names in a directory (missing directory: none).
fn dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push(name);
        }
    }
    Ok(out)
}

/// fsyncs the directory holding `path`, so a rename or unlink in it is durable.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", parent))
}

/// Removes a file or directory tree without following symlinks, also when the tree holds
/// read-only directories (as unpacked layers do).
fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot remove a root path",
        ));
    };
    let dir = File::open(parent)?;
    crate::layer::fsops::remove_all_at(std::os::fd::AsFd::as_fd(&dir), name)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn tmp_is_empty(store: &ContentStore) -> bool {
        fs::read_dir(store.root().join(TMP))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn put_open_size_list_delete() {
        let (_dir, store) = store();
        let data = b"hello blob";
        let d = Digest::sha256_of(data);
        assert!(!store.contains(&d).unwrap());
        assert!(matches!(store.size(&d), Err(StoreError::NotFound(_))));
        assert!(matches!(store.open(&d), Err(StoreError::NotFound(_))));

        assert_eq!(store.put(&data[..], &d).unwrap(), data.len() as u64);
        assert!(store.contains(&d).unwrap());
        assert_eq!(store.size(&d).unwrap(), data.len() as u64);
        let mut back = Vec::new();
        store.open(&d).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(store.read(&d).unwrap(), data);
        assert_eq!(
            store.blob_path(&d),
            store.root().join("blobs/sha256").join(d.hex())
        );
        let mode = fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);

        // A second put of the same content is a no-op that does not read.
        struct Boom;
        impl Read for Boom {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("must not be read"))
            }
        }
        assert_eq!(store.put(Boom, &d).unwrap(), data.len() as u64);

        let d512 = Digest::of(Algorithm::Sha512, b"other");
        store.put(&b"other"[..], &d512).unwrap();
        let mut expected = vec![d.clone(), d512.clone()];
        expected.sort();
        assert_eq!(store.list().unwrap(), expected);

        assert!(store.delete(&d).unwrap());
        assert!(!store.delete(&d).unwrap());
        assert!(!store.contains(&d).unwrap());
        assert_eq!(store.list().unwrap(), vec![d512]);
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let (_dir, store) = store();
        let d = Digest::sha256_of(b"expected");
        let err = store.put(&b"something else"[..], &d).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("digest mismatch: expected sha256:"));
        assert!(!store.contains(&d).unwrap());
        assert!(store.list().unwrap().is_empty());
        assert!(tmp_is_empty(&store));

        // Size limits.
        let data = b"twelve bytes";
        let d = Digest::sha256_of(data);
        let err = store.put_sized(&data[..], &d, 5).unwrap_err();
        assert!(
            matches!(err, StoreError::SizeMismatch { actual: 6, .. }),
            "{err}"
        );
        let err = store.put_sized(&data[..], &d, 20).unwrap_err();
        assert!(
            matches!(err, StoreError::SizeMismatch { actual: 12, .. }),
            "{err}"
        );
        assert!(!store.contains(&d).unwrap());
        assert_eq!(store.put_sized(&data[..], &d, 12).unwrap(), 12);
        assert!(tmp_is_empty(&store));

        // A failing reader leaves nothing either.
        struct Fails(usize);
        impl Read for Fails {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("connection reset"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let d = Digest::sha256_of(b"xxxxxxxxxx");
        assert!(matches!(
            store.put(Fails(3), &d),
            Err(StoreError::Read { .. })
        ));
        assert!(!store.contains(&d).unwrap());
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn large_blob_streams() {
        let (_dir, store) = store();
        let data: Vec<u8> = (0..5 * COPY_BUF + 123).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(Algorithm::Sha512, &data);
        assert_eq!(store.put(&data[..], &d).unwrap(), data.len() as u64);
        assert_eq!(store.read(&d).unwrap(), data);
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::sha256_of(b"layer a");
        let b = Digest::sha256_of(b"layer b");
        let c = Digest::sha256_of(b"layer c");
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        let ab = Digest::sha256_of(format!("{a} {b}").as_bytes());
        assert_eq!(chain_id(&[a.clone(), b.clone()]), Some(ab.clone()));
        let abc = Digest::sha256_of(format!("{ab} {c}").as_bytes());
        assert_eq!(
            chain_id(&[a.clone(), b.clone(), c.clone()]),
            Some(abc.clone())
        );
        assert_eq!(chain_ids(&[a.clone(), b, c]), vec![a, ab, abc]);

        // A vector computed independently (printf 'sha256:<a> sha256:<b>' | sha256sum).
        let x: Digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .parse()
            .unwrap();
        let y: Digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
            .parse()
            .unwrap();
        assert_eq!(
            chain_id(&[x, y]).unwrap().as_str(),
            "sha256:f94b891e05f6e37c90d87edfd5bb98a02d618a437c35f3a94b3b00e48e894631"
        );
    }

    #[test]
    fn prepare_snapshot_creates_once() {
        let (_dir, store) = store();
        let id = Digest::sha256_of(b"diff");
        assert!(!store.has_snapshot(&id).unwrap());
        let p = store
            .prepare_snapshot(&id, |dir| {
                fs::write(dir.join("file"), b"content")?;
                Ok::<_, io::Error>(42)
            })
            .unwrap();
        assert_eq!(p.created, Some(42));
        assert_eq!(p.path, store.snapshot_path(&id));
        assert!(store.has_snapshot(&id).unwrap());
        assert_eq!(fs::read(p.path.join("file")).unwrap(), b"content");
        let mode = fs::metadata(&p.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        let again = store
            .prepare_snapshot(&id, |_| -> Result<(), io::Error> {
                panic!("must not be called for an existing snapshot")
            })
            .unwrap();
        assert!(again.created.is_none());
        assert_eq!(store.list_snapshots().unwrap(), vec![id.clone()]);

        assert!(store.delete_snapshot(&id).unwrap());
        assert!(!store.delete_snapshot(&id).unwrap());
        assert!(!store.has_snapshot(&id).unwrap());
        assert!(store.list_snapshots().unwrap().is_empty());
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn failed_prepare_leaves_nothing_visible() {
        let (_dir, store) = store();
        let id = Digest::sha256_of(b"diff");
        let err = store
            .prepare_snapshot(&id, |dir| {
                fs::create_dir(dir.join("half"))?;
                fs::write(dir.join("half/file"), b"x")?;
                // A read-only directory, as layers have, must not stop the cleanup.
                fs::set_permissions(dir.join("half"), fs::Permissions::from_mode(0o500))?;
                Err::<(), _>(io::Error::other("layer truncated"))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Prepare { .. }));
        assert_eq!(err.to_string(), format!("preparing snapshot {id}"));
        assert!(!store.has_snapshot(&id).unwrap());
        assert!(!store.snapshot_path(&id).exists());
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn concurrent_preparers_do_not_clash() {
        let (_dir, store) = store();
        let id = Digest::sha256_of(b"shared layer");
        let n = 6;
        let barrier = Arc::new(Barrier::new(n));
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let store = store.clone();
                let id = id.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    store
                        .prepare_snapshot(&id, |dir| {
                            for f in 0..50 {
                                fs::write(dir.join(format!("f{f}")), format!("{f}"))?;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                            Ok::<_, io::Error>(i)
                        })
                        .unwrap()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let created = results.iter().filter(|p| p.created.is_some()).count();
        assert_eq!(created, 1, "exactly one preparer wins");
        // Whoever won, the snapshot is complete.
        let path = store.snapshot_path(&id);
        for f in 0..50 {
            assert_eq!(
                fs::read_to_string(path.join(format!("f{f}"))).unwrap(),
                f.to_string()
            );
        }
        assert_eq!(fs::read_dir(&path).unwrap().count(), 50);
        assert!(tmp_is_empty(&store));
        assert_eq!(store.list_snapshots().unwrap(), vec![id]);
    }

    #[test]
    fn cleanup_tmp_removes_leftovers() {
        let (_dir, store) = store();
        let tmp = store.root().join(TMP);
        fs::create_dir_all(tmp.join("snapshot-crashed/usr/bin")).unwrap();
        fs::write(tmp.join("blob-crashed"), b"partial").unwrap();
        assert_eq!(store.cleanup_tmp(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(store.cleanup_tmp(Duration::ZERO).unwrap(), 2);
        assert!(tmp_is_empty(&store));
    }
}
