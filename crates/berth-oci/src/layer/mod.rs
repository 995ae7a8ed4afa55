//! Applying OCI / Docker image layers (tar, tar+gzip, tar+zstd) to a directory.
//!
//! [`apply_layer`] streams a layer blob into a directory while computing both the blob's digest
//! (the layer digest in the manifest) and the digest of the uncompressed tar (the `diff_id` in
//! the image config), and checks them against the expected values when given.
//!
//! # Safety of extraction
//!
//! A layer is untrusted input. Nothing it contains can write outside the destination:
//!
//! - entry paths are cleaned lexically: a leading `/` is stripped, `.` and empty components are
//!   dropped, and a `..` that would climb above the root is refused with an error naming the
//!   entry;
//! - an entry's parent directory is opened from a descriptor of the destination with
//!   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`: a symlink on the way
//!   (`lnk -> /etc` followed by `lnk/passwd`) resolves inside the destination, as it would inside
//!   the container, never beyond it; the final component is never followed (files are created
//!   with `O_CREAT | O_EXCL | O_NOFOLLOW` after whatever was there is removed);
//! - hard link targets are cleaned and resolved the same way, so a link to `../../etc/passwd`
//!   is an error and a link can only name a file inside the destination;
//! - symlinks are created as they are: their targets only mean something inside the container;
//! - device nodes are created only when running as root (skipped with a warning otherwise);
//! - only the `security.capability` and `user.*` extended attributes are restored, so a layer
//!   cannot plant `trusted.overlay.*` attributes (redirects, metacopy) of its own;
//! - entry paths longer than [`ApplyOptions::max_path_len`] are refused.
//!
//! # Whiteouts
//!
//! [`WhiteoutMode::Overlay`] is for a layer unpacked alone into its own snapshot directory that
//! will be an overlayfs lower directory: `.wh.NAME` becomes a 0/0 character device `NAME` and
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory. [`WhiteoutMode::Apply`] is
//! for a layer applied on top of an existing tree: `.wh.NAME` deletes `NAME` (recursively) and
//! `.wh..wh..opq` deletes what the directory held before this layer (not what this layer added).

mod diff;
pub(crate) mod fsops;
mod unpack;

pub use diff::{is_overlay_whiteout, write_overlay_diff, DiffStats};

use std::io::{self, Chain, Cursor, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::digest::{Algorithm, Digest, Hasher};
use crate::media_type;

/// Default limit on an entry's path length in bytes (Linux `PATH_MAX`).
pub const DEFAULT_MAX_PATH_LEN: usize = 4096;

/// The xattr overlayfs reads to make a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Errors from applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The destination directory could not be opened.
    #[error("opening destination directory {path}")]
    Destination {
        /// The destination.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The layer's media type is not a layer type this crate can apply.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    /// The layer is compressed with an algorithm this crate does not implement.
    #[error("unsupported layer compression {0}")]
    UnsupportedCompression(&'static str),
    /// Reading or decompressing the layer stream failed, or the tar stream is malformed.
    #[error("reading layer stream")]
    Read(#[source] io::Error),
    /// An entry's path leads outside the destination.
    #[error("entry {entry:?} points outside the destination")]
    Escape {
        /// The entry's path as written in the archive.
        entry: String,
    },
    /// A hard link's target lies outside the destination.
    #[error("hard link {entry:?} targets {target:?}, outside the destination")]
    LinkEscape {
        /// The entry's path.
        entry: String,
        /// The link target as written in the archive.
        target: String,
    },
    /// An entry's path is longer than the limit.
    #[error("entry {entry:?}: path of {len} bytes is longer than the limit of {limit}")]
    PathTooLong {
        /// The entry's path (truncated).
        entry: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An entry is malformed or cannot be represented.
    #[error("entry {entry:?}: {reason}")]
    Invalid {
        /// The entry's path.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file system operation for an entry failed.
    #[error("entry {entry:?}: {op}")]
    Io {
        /// The entry's path.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The blob's digest differs from the expected layer digest.
    #[error("layer digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The expected digest.
        expected: Digest,
        /// The digest of the bytes read.
        actual: Digest,
    },
    /// The uncompressed tar's digest differs from the expected diff_id.
    #[error("layer diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// The expected diff_id.
        expected: Digest,
        /// The digest of the uncompressed stream.
        actual: Digest,
    },
    /// The blob's size differs from the expected size.
    #[error("layer size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The expected size.
        expected: u64,
        /// The number of bytes read.
        actual: u64,
    },
}

/// How whiteout entries (`.wh.NAME`, `.wh..wh..opq`) are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// The layer is unpacked alone into a directory that becomes an overlayfs lower directory:
    /// whiteouts become 0/0 character devices, opaque markers `trusted.overlay.opaque=y`.
    #[default]
    Overlay,
    /// The layer is applied on top of an existing tree: whiteouts delete, opaque markers empty
    /// the directory of what it held before this layer.
    Apply,
}

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several concatenated members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How whiteouts are applied.
    pub whiteout_mode: WhiteoutMode,
    /// The layer's media type from its descriptor, if known. Unknown or non-layer types are
    /// refused; the compression is detected from the content's magic bytes (a declared
    /// compression that disagrees is logged, as some tools mislabel uncompressed layers).
    pub media_type: Option<String>,
    /// The layer digest (of the blob as read); its algorithm is used to compute it.
    pub expected_digest: Option<Digest>,
    /// The diff_id (digest of the uncompressed tar); its algorithm is used to compute it.
    pub expected_diff_id: Option<Digest>,
    /// The blob's size from its descriptor; reading stops with an error past it.
    pub expected_size: Option<u64>,
    /// Longest accepted entry path, in bytes.
    pub max_path_len: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteout_mode: WhiteoutMode::default(),
            media_type: None,
            expected_digest: None,
            expected_diff_id: None,
            expected_size: None,
            max_path_len: DEFAULT_MAX_PATH_LEN,
        }
    }
}

impl ApplyOptions {
    /// Options with the given whiteout mode and everything else default.
    pub fn new(whiteout_mode: WhiteoutMode) -> Self {
        ApplyOptions {
            whiteout_mode,
            ..ApplyOptions::default()
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Digest of the uncompressed tar stream (the image config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Digest of the blob as read (the manifest's layer digest).
    pub compressed_digest: Digest,
    /// Size of the blob as read, in bytes.
    pub bytes: u64,
    /// Size of the uncompressed tar stream, in bytes.
    pub uncompressed_bytes: u64,
    /// Number of tar entries processed (including whiteouts).
    pub entries: u64,
    /// Entries that were skipped (device nodes when not root, AUFS metadata).
    pub skipped: u64,
    /// The compression found in the blob.
    pub compression: Compression,
}

/// The compression a layer media type declares, or an error for a type that is not a layer.
pub fn compression_of_media_type(media_type: &str) -> Result<Compression, LayerError> {
    match media_type.trim() {
        media_type::OCI_LAYER
        | media_type::OCI_LAYER_NONDISTRIBUTABLE
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        media_type::OCI_LAYER_GZIP
        | media_type::OCI_LAYER_NONDISTRIBUTABLE_GZIP
        | media_type::DOCKER_LAYER
        | media_type::DOCKER_FOREIGN_LAYER => Ok(Compression::Gzip),
        media_type::OCI_LAYER_ZSTD | media_type::OCI_LAYER_NONDISTRIBUTABLE_ZSTD => {
            Ok(Compression::Zstd)
        }
        other => Err(LayerError::UnsupportedMediaType(crate::digest::echo(other))),
    }
}

/// Detects the compression of a blob from its first bytes.
pub fn detect_compression(head: &[u8]) -> Result<Compression, LayerError> {
    match head {
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
        // zstd skippable frame: magic 0x184D2A5? little-endian
        [b, 0x2a, 0x4d, 0x18, ..] if b & 0xf0 == 0x50 => Ok(Compression::Zstd),
        [b'B', b'Z', b'h', ..] => Err(LayerError::UnsupportedCompression("bzip2")),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Err(LayerError::UnsupportedCompression("xz")),
        _ => Ok(Compression::None),
    }
}

/// A reader that hashes and counts what passes through it.
struct HashReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
    /// Reading more than this many bytes is an error.
    limit: Option<u64>,
}

impl<R: Read> HashReader<R> {
    fn new(inner: R, alg: Algorithm, limit: Option<u64>) -> Self {
        HashReader {
            inner,
            hasher: Hasher::new(alg),
            count: 0,
            limit,
        }
    }

    /// Reads the rest of the stream so that the digest covers all of it.
    fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(drop)
    }

    fn finish(self) -> (Digest, u64) {
        (self.hasher.finalize(), self.count)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(data) = buf.get(..n) {
            self.hasher.update(data);
        }
        self.count += n as u64;
        match self.limit {
            Some(limit) if self.count > limit => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("layer is larger than its expected size of {limit} bytes"),
            )),
            _ => Ok(n),
        }
    }
}

/// Reads up to `buf.len()` bytes, fewer only at end of stream.
fn read_head(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

type Head = Cursor<Vec<u8>>;

fn decoder<'a, R: Read + 'a>(
    compression: Compression,
    input: Chain<Head, R>,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        // The decoder's default window limit (128 MiB, what `zstd --long` uses) bounds the
        // memory a hostile frame can make us allocate.
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).map_err(LayerError::Read)?)
        }
    })
}

/// Applies the layer read from `reader` to the directory `dest` (which must exist).
///
/// On an error, including a digest mismatch found at the end, `dest` may hold part of the
/// layer: the caller discards it (for [`WhiteoutMode::Apply`] onto an existing tree, the tree).
pub fn apply_layer(
    reader: impl Read,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    let declared = opts
        .media_type
        .as_deref()
        .map(compression_of_media_type)
        .transpose()?;
    let root = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(fsops::own_fd)
    .map_err(|e| LayerError::Destination {
        path: dest.to_path_buf(),
        source: e.into(),
    })?;

    let compressed_alg = opts
        .expected_digest
        .as_ref()
        .map_or(Algorithm::Sha256, Digest::algorithm);
    let diff_alg = opts
        .expected_diff_id
        .as_ref()
        .map_or(Algorithm::Sha256, Digest::algorithm);

    let mut raw = HashReader::new(reader, compressed_alg, opts.expected_size);
    let mut head = vec![0u8; 6];
    let n = read_head(&mut raw, &mut head).map_err(LayerError::Read)?;
    head.truncate(n);
    let compression = detect_compression(&head)?;
    if let Some(declared) = declared {
        if declared != compression {
            tracing::warn!(
                ?declared,
                found = ?compression,
                "layer media type disagrees with its content; using the content's compression"
            );
        }
    }

    let mut unpacker = unpack::Unpacker::new(root, opts);
    let (diff_id, uncompressed_bytes) = {
        let input = Cursor::new(head).chain(&mut raw);
        let mut plain = HashReader::new(decoder(compression, input)?, diff_alg, None);
        {
            let mut archive = tar::Archive::new(&mut plain);
            for entry in archive.entries().map_err(LayerError::Read)? {
                let mut entry = entry.map_err(LayerError::Read)?;
                unpacker.entry(&mut entry)?;
            }
        }
        unpacker.finish()?;
        plain.drain().map_err(LayerError::Read)?;
        plain.finish()
    };
    raw.drain().map_err(LayerError::Read)?;
    let (compressed_digest, bytes) = raw.finish();

    if let Some(expected) = opts.expected_size {
        if expected != bytes {
            return Err(LayerError::SizeMismatch {
                expected,
                actual: bytes,
            });
        }
    }
    if let Some(expected) = &opts.expected_digest {
        if *expected != compressed_digest {
            return Err(LayerError::DigestMismatch {
                expected: expected.clone(),
                actual: compressed_digest,
            });
        }
    }
    if let Some(expected) = &opts.expected_diff_id {
        if *expected != diff_id {
            return Err(LayerError::DiffIdMismatch {
                expected: expected.clone(),
                actual: diff_id,
            });
        }
    }
    let (entries, skipped) = unpacker.counts();
    tracing::debug!(%diff_id, %compressed_digest, entries, skipped, "layer applied");
    Ok(ApplyStats {
        diff_id,
        compressed_digest,
        bytes,
        uncompressed_bytes,
        entries,
        skipped,
        compression,
    })
}

/// Reads the extended attribute `name` of `path` without following a final symlink, e.g. to
/// check [`OVERLAY_OPAQUE_XATTR`] on an unpacked snapshot. `Ok(None)` when it is not set.
pub fn read_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    fsops::lgetxattr(path, name)
}
