//! `berth image save` / `berth image load`: docker-archive tars (`manifest.json`,
//! `repositories`, `<config>.json`, `<diff_id>/layer.tar`, what `docker load` and
//! `podman load` read) and OCI image layout tars (`oci-layout`, `index.json` with
//! `org.opencontainers.image.ref.name`, `blobs/sha256/...`).
//!
//! Loading first copies every regular file of the (possibly gzipped) tar into a private
//! temporary directory under names of its own (the archive's paths only index a map, so no
//! entry can write anywhere else); entries with absolute paths or `..` are refused, symlinks
//! and hardlinks are followed only inside the archive. Then every blob is verified (digests,
//! sizes, and for docker archives each layer's diff_id against the config) before anything is
//! stored, and all tags are written in one update of `images.json`: a bad archive leaves
//! nothing registered.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use berth_oci::layer::{compression_of_media_type, Compression};
use berth_oci::store::StoreError;
use berth_oci::{media_type, Algorithm, Digest, Hasher};
use serde_json::{json, Value};

use super::pull::select_platform;
use super::reference::ImageRef;
use super::PlatformSpec;
use crate::image::{ImageError, ResolvedImage};
use crate::Engine;

/// Most entries an archive may have.
const MAX_ENTRIES: usize = 100_000;
/// Most symlink hops when resolving a path inside an archive.
const MAX_LINK_HOPS: usize = 16;
/// Largest JSON file (manifest.json, index.json, manifests, configs) read from an archive.
const MAX_JSON: u64 = 16 << 20;

const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s format.
    Docker,
    /// An OCI image layout in a tar.
    Oci,
}

impl FromStr for ArchiveFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "docker-archive" | "docker" => Ok(ArchiveFormat::Docker),
            "oci-archive" | "oci" => Ok(ArchiveFormat::Oci),
            other => Err(format!(
                "unknown archive format {other:?} (docker-archive or oci-archive)"
            )),
        }
    }
}

/// Errors of saving and loading archives.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read the archive")]
    Read(#[source] io::Error),
    #[error("cannot write the archive")]
    Write(#[source] io::Error),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive entry {0:?} escapes the archive (absolute path or '..')")]
    PathTraversal(String),
    #[error("archive entry {entry:?} is a link to {target:?}, outside the archive")]
    LinkEscape { entry: String, target: String },
    #[error("archive entry {entry:?}: {kind} entries are not allowed")]
    UnsupportedEntry { entry: String, kind: String },
    #[error("archive entry {0:?} appears twice")]
    Duplicate(String),
    #[error("the archive has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("the archive has no {0:?}")]
    Missing(String),
    #[error("{path} in the archive: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path} in the archive: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid {what} in the archive: {reason}")]
    Invalid { what: String, reason: String },
    #[error(
        "the archive is neither a docker archive (manifest.json) nor an OCI layout (index.json)"
    )]
    UnknownFormat,
    #[error("image {0} in the archive has no name (berth keeps only named images)")]
    Unnamed(String),
    #[error("layer {digest} of the image: diff_id mismatch: the config says {expected}, the layer is {actual}")]
    DiffId {
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("content store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
}

fn invalid(what: impl Into<String>, reason: impl ToString) -> ArchiveError {
    ArchiveError::Invalid {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Normalizes an entry path: `./` and empty components dropped; absolute paths and `..`
/// refused.
fn normalize(raw: &Path, entry: &str) -> Result<String, ArchiveError> {
    let mut parts: Vec<String> = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::PathTraversal(entry.to_string()))
            }
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a link target relative to the link's directory; None when it leaves the root.
fn resolve_link(link: &str, target: &Path, hard: bool) -> Option<String> {
    if target.is_absolute() {
        return None;
    }
    // Hardlink targets are archive paths; symlink targets are relative to the link's directory.
    let mut parts: Vec<String> = if hard {
        Vec::new()
    } else {
        let mut p: Vec<String> = link.split('/').map(str::to_string).collect();
        p.pop();
        p
    };
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// The files of an archive, copied to a private temporary directory.
struct Unpacked {
    _dir: tempfile::TempDir,
    files: HashMap<String, PathBuf>,
    links: HashMap<String, String>,
}

impl Unpacked {
    fn read_tar(input: impl Read, tmp_parent: &Path) -> Result<Unpacked, ArchiveError> {
        std::fs::create_dir_all(tmp_parent).map_err(|source| ArchiveError::Io {
            what: "create",
            path: tmp_parent.to_path_buf(),
            source,
        })?;
        let dir = tempfile::Builder::new()
            .prefix("load-")
            .tempdir_in(tmp_parent)
            .map_err(|source| ArchiveError::Io {
                what: "create a temporary directory in",
                path: tmp_parent.to_path_buf(),
                source,
            })?;
        let mut input = BufReader::new(input);
        let head = input.fill_buf().map_err(ArchiveError::Read)?;
        let gzip = head.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(input))
        } else {
            Box::new(input)
        };
        let mut archive = tar::Archive::new(reader);
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        for (n, entry) in archive.entries().map_err(ArchiveError::Read)?.enumerate() {
            if n >= MAX_ENTRIES {
                return Err(ArchiveError::TooManyEntries);
            }
            let mut entry = entry.map_err(ArchiveError::Read)?;
            let raw = entry.path().map_err(ArchiveError::Read)?.into_owned();
            let shown = raw.to_string_lossy().into_owned();
            let name = normalize(&raw, &shown)?;
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            if name.is_empty() {
                return Err(ArchiveError::PathTraversal(shown));
            }
            if files.contains_key(&name) || links.contains_key(&name) {
                return Err(ArchiveError::Duplicate(shown));
            }
            if kind.is_file() || kind == tar::EntryType::Continuous {
                let path = dir.path().join(format!("f{n}"));
                let mut out = File::create(&path).map_err(|source| ArchiveError::Io {
                    what: "create",
                    path: path.clone(),
                    source,
                })?;
                io::copy(&mut entry, &mut out).map_err(ArchiveError::Read)?;
                files.insert(name, path);
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(ArchiveError::Read)?
                    .ok_or_else(|| invalid(format!("link {shown:?}"), "no target"))?
                    .into_owned();
                let resolved =
                    resolve_link(&name, &target, kind.is_hard_link()).ok_or_else(|| {
                        ArchiveError::LinkEscape {
                            entry: shown.clone(),
                            target: target.to_string_lossy().into_owned(),
                        }
                    })?;
                links.insert(name, resolved);
            } else if kind.is_pax_global_extensions() {
                continue;
            } else {
                return Err(ArchiveError::UnsupportedEntry {
                    entry: shown,
                    kind: format!("{kind:?}"),
                });
            }
        }
        Ok(Unpacked {
            _dir: dir,
            files,
            links,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.path(name).is_ok()
    }

    /// The temporary file holding archive path `name` (links followed inside the archive).
    fn path(&self, name: &str) -> Result<&Path, ArchiveError> {
        let mut name = normalize(Path::new(name), name)?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(p) = self.files.get(&name) {
                return Ok(p);
            }
            match self.links.get(&name) {
                Some(next) => name = next.clone(),
                None => return Err(ArchiveError::Missing(name)),
            }
        }
        Err(invalid(name, "too many levels of links"))
    }

    fn open(&self, name: &str) -> Result<File, ArchiveError> {
        let p = self.path(name)?;
        File::open(p).map_err(|source| ArchiveError::Io {
            what: "open",
            path: p.to_path_buf(),
            source,
        })
    }

    fn read_json(&self, name: &str) -> Result<(Vec<u8>, Value), ArchiveError> {
        let mut data = Vec::new();
        self.open(name)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut data)
            .map_err(ArchiveError::Read)?;
        if data.len() as u64 > MAX_JSON {
            return Err(invalid(name, "too large"));
        }
        let v = serde_json::from_slice(&data).map_err(|e| invalid(name, e))?;
        Ok((data, v))
    }

    /// Hashes a file as is and, decompressed, its diff_id: (digest, diff_id, size, compression).
    fn hash_layer(&self, name: &str) -> Result<(Digest, Digest, u64, Compression), ArchiveError> {
        let mut f = BufReader::new(self.open(name)?);
        let head = f.fill_buf().map_err(ArchiveError::Read)?;
        let compression = berth_oci::layer::detect_compression(head)
            .map_err(|e| invalid(format!("layer {name}"), e))?;
        let mut tee = Tee {
            inner: f,
            hasher: Hasher::new(Algorithm::Sha256),
            n: 0,
        };
        let mut diff = Hasher::new(Algorithm::Sha256);
        {
            let mut dec: Box<dyn Read + '_> = match compression {
                Compression::None => Box::new(&mut tee),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut tee)),
                Compression::Zstd => Box::new(
                    zstd_decoder(&mut tee).map_err(|e| invalid(format!("layer {name}"), e))?,
                ),
            };
            copy_hash(&mut dec, &mut diff).map_err(|e| invalid(format!("layer {name}"), e))?;
        }
        io::copy(&mut tee, &mut io::sink()).map_err(ArchiveError::Read)?;
        Ok((tee.hasher.finalize(), diff.finalize(), tee.n, compression))
    }

    /// Verifies a blob's digest (and size when known).
    fn verify_blob(
        &self,
        name: &str,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<(), ArchiveError> {
        let mut tee = Tee {
            inner: BufReader::new(self.open(name)?),
            hasher: Hasher::new(digest.algorithm()),
            n: 0,
        };
        io::copy(&mut tee, &mut io::sink()).map_err(ArchiveError::Read)?;
        if let Some(size) = size {
            if tee.n != size {
                return Err(ArchiveError::SizeMismatch {
                    path: name.to_string(),
                    expected: size,
                    actual: tee.n,
                });
            }
        }
        let actual = tee.hasher.finalize();
        if actual != *digest {
            return Err(ArchiveError::DigestMismatch {
                path: name.to_string(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}

fn zstd_decoder<R: Read>(r: R) -> io::Result<impl Read> {
    zstd::stream::read::Decoder::new(r)
}

struct Tee<R> {
    inner: R,
    hasher: Hasher,
    n: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

fn copy_hash(r: &mut dyn Read, h: &mut Hasher) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
}

/// A blob to store once everything was verified.
struct PendingBlob {
    archive_path: String,
    digest: Digest,
}

/// One image verified from an archive.
struct PendingImage {
    names: Vec<String>,
    manifest: Vec<u8>,
    manifest_digest: Digest,
    id: Digest,
    blobs: Vec<PendingBlob>,
}

/// One image loaded from an archive.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// Local names (`busybox:latest`); empty never (unnamed images are refused).
    pub names: Vec<String>,
    pub id: Digest,
    pub manifest_digest: Digest,
}

fn local_name(name: &str) -> Result<String, ArchiveError> {
    name.parse::<ImageRef>()
        .map(|r| r.local_key())
        .map_err(|e| invalid(format!("image name {name:?}"), e))
}

fn descriptor(v: &Value, what: &str) -> Result<(String, Digest, u64), ArchiveError> {
    let mt = v["mediaType"].as_str().unwrap_or_default().to_string();
    let digest = v["digest"]
        .as_str()
        .and_then(|d| d.parse::<Digest>().ok())
        .ok_or_else(|| invalid(what, "missing or invalid digest"))?;
    let size = v["size"]
        .as_u64()
        .ok_or_else(|| invalid(what, "missing or invalid size"))?;
    Ok((mt, digest, size))
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// The digest a path like `blobs/sha256/<hex>` or `<hex>.json` or `<hex>/layer.tar` names.
fn digest_in_name(name: &str) -> Option<Digest> {
    if let Some(rest) = name.strip_prefix("blobs/") {
        let (alg, hex) = rest.split_once('/')?;
        return format!("{alg}:{hex}").parse().ok();
    }
    let hex = name.strip_suffix(".json")?;
    format!("sha256:{hex}").parse().ok()
}

fn diff_ids(config: &Value, what: &str) -> Result<Vec<Digest>, ArchiveError> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| invalid(what, "no rootfs.diff_ids"))?
        .iter()
        .map(|d| {
            d.as_str()
                .and_then(|s| s.parse::<Digest>().ok())
                .ok_or_else(|| invalid(what, "invalid diff_id"))
        })
        .collect()
}

impl Engine {
    /// Temporary files of archives: the content store's `tmp/` (same file system, and swept
    /// of what crashed processes left there).
    fn archive_tmp(&self) -> PathBuf {
        self.store.root().join("tmp")
    }

    /// `berth image load`: reads a docker or OCI archive (plain or gzipped tar), verifies
    /// everything, stores the blobs and registers every named image.
    pub fn load(&self, input: impl Read) -> Result<Vec<LoadedImage>, ArchiveError> {
        self.sweep_tmp();
        let files = Unpacked::read_tar(input, &self.archive_tmp())?;
        let images = if files.has("manifest.json") {
            self.verify_docker_archive(&files)?
        } else if files.has("index.json") {
            self.verify_oci_archive(&files)?
        } else {
            return Err(ArchiveError::UnknownFormat);
        };
        // Everything verified: store blobs (each re-verified as it is written), then all tags
        // in one update.
        let mut tags = Vec::new();
        for img in &images {
            for b in &img.blobs {
                let f = BufReader::new(files.open(&b.archive_path)?);
                self.store.put(f, &b.digest)?;
            }
            self.store.put(&img.manifest[..], &img.manifest_digest)?;
            for n in &img.names {
                tags.push((n.clone(), img.manifest_digest.clone()));
            }
        }
        self.set_tags(&tags)?;
        drop(files);
        Ok(images
            .into_iter()
            .map(|i| LoadedImage {
                names: i.names,
                id: i.id,
                manifest_digest: i.manifest_digest,
            })
            .collect())
    }

    fn verify_docker_archive(&self, files: &Unpacked) -> Result<Vec<PendingImage>, ArchiveError> {
        let (_, manifest) = files.read_json("manifest.json")?;
        let entries = manifest
            .as_array()
            .ok_or_else(|| invalid("manifest.json", "not a list"))?;
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let what = format!("manifest.json[{i}]");
            let config_name = e["Config"]
                .as_str()
                .ok_or_else(|| invalid(&what, "no Config"))?;
            let (config_bytes, config) = files.read_json(config_name)?;
            let config_digest = Digest::sha256_of(&config_bytes);
            if let Some(named) = digest_in_name(config_name) {
                if named.algorithm() == Algorithm::Sha256 && named != config_digest {
                    return Err(ArchiveError::DigestMismatch {
                        path: config_name.to_string(),
                        expected: named.to_string(),
                        actual: config_digest.to_string(),
                    });
                }
            }
            let diff_ids = diff_ids(&config, config_name)?;
            let layer_names: Vec<&str> = e["Layers"]
                .as_array()
                .ok_or_else(|| invalid(&what, "no Layers"))?
                .iter()
                .map(|l| {
                    l.as_str()
                        .ok_or_else(|| invalid(&what, "a layer is not a path"))
                })
                .collect::<Result<_, _>>()?;
            if layer_names.len() != diff_ids.len() {
                return Err(invalid(
                    &what,
                    format!(
                        "{} layers but the config lists {} diff_ids",
                        layer_names.len(),
                        diff_ids.len()
                    ),
                ));
            }
            let mut layers = Vec::new();
            let mut blobs = Vec::new();
            for (name, want) in layer_names.iter().zip(&diff_ids) {
                let (digest, diff_id, size, compression) = files.hash_layer(name)?;
                if let Some(named) = digest_in_name(name).filter(|_| name.starts_with("blobs/")) {
                    if named != digest {
                        return Err(ArchiveError::DigestMismatch {
                            path: name.to_string(),
                            expected: named.to_string(),
                            actual: digest.to_string(),
                        });
                    }
                }
                if diff_id != *want {
                    return Err(ArchiveError::DiffId {
                        digest,
                        expected: want.clone(),
                        actual: diff_id,
                    });
                }
                let mt = match compression {
                    Compression::None => media_type::OCI_LAYER,
                    Compression::Gzip => media_type::OCI_LAYER_GZIP,
                    Compression::Zstd => media_type::OCI_LAYER_ZSTD,
                };
                layers.push(json!({"mediaType": mt, "digest": digest.to_string(), "size": size}));
                blobs.push(PendingBlob {
                    archive_path: name.to_string(),
                    digest,
                });
            }
            blobs.push(PendingBlob {
                archive_path: config_name.to_string(),
                digest: config_digest.clone(),
            });
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_MANIFEST,
                "config": {"mediaType": media_type::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
                "layers": layers,
            }))
            .map_err(|e| invalid("manifest", e))?;
            let names = match e["RepoTags"].as_array() {
                Some(tags) => tags
                    .iter()
                    .filter_map(Value::as_str)
                    .map(local_name)
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            if names.is_empty() {
                return Err(ArchiveError::Unnamed(config_digest.to_string()));
            }
            out.push(PendingImage {
                names,
                manifest_digest: Digest::sha256_of(&manifest),
                manifest,
                id: config_digest,
                blobs,
            });
        }
        Ok(out)
    }

    fn verify_oci_archive(&self, files: &Unpacked) -> Result<Vec<PendingImage>, ArchiveError> {
        let (_, index) = files.read_json("index.json")?;
        let manifests = index["manifests"]
            .as_array()
            .ok_or_else(|| invalid("index.json", "no manifests"))?;
        // One image per manifest digest, with every name given to it.
        let mut by_digest: BTreeMap<Digest, PendingImage> = BTreeMap::new();
        for (i, m) in manifests.iter().enumerate() {
            let what = format!("index.json manifests[{i}]");
            let (mut mt, mut digest, mut size) = descriptor(m, &what)?;
            let annotations = &m["annotations"];
            let name = annotations[ANNOTATION_CONTAINERD_NAME]
                .as_str()
                .or_else(|| {
                    annotations[ANNOTATION_REF_NAME]
                        .as_str()
                        .filter(|n| n.contains([':', '/', '@']))
                })
                .map(local_name)
                .transpose()?;
            let mut bytes = self.read_verified(files, &digest, size)?;
            if mt.is_empty() {
                mt = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                    .unwrap_or_default();
            }
            if media_type::is_index(&mt) {
                let parsed = berth_oci::parse_manifest(Some(&mt), &bytes)
                    .map_err(|e| invalid(format!("index {digest}"), e))?;
                let child =
                    select_platform(&parsed.manifests, &PlatformSpec::host()).ok_or_else(|| {
                        invalid(
                            format!("index {digest}"),
                            format!("no image for {}", PlatformSpec::host()),
                        )
                    })?;
                mt = child.media_type.clone();
                digest = child.digest.clone();
                size = child.size;
                bytes = self.read_verified(files, &digest, size)?;
            }
            let parsed = berth_oci::parse_manifest(Some(&mt), &bytes)
                .map_err(|e| invalid(format!("manifest {digest}"), e))?;
            let config = parsed
                .config
                .clone()
                .ok_or_else(|| invalid(format!("manifest {digest}"), "not an image manifest"))?;
            if let Some(img) = by_digest.get_mut(&digest) {
                img.names.extend(name);
                continue;
            }
            let (_, config_json) = {
                let data = self.read_verified(files, &config.digest, config.size)?;
                let v: Value = serde_json::from_slice(&data)
                    .map_err(|e| invalid(format!("config {}", config.digest), e))?;
                (data, v)
            };
            let ids = diff_ids(&config_json, &format!("config {}", config.digest))?;
            if ids.len() != parsed.layers.len() {
                return Err(invalid(
                    format!("manifest {digest}"),
                    format!(
                        "{} layers but the config lists {} diff_ids",
                        parsed.layers.len(),
                        ids.len()
                    ),
                ));
            }
            let mut blobs = Vec::new();
            for l in &parsed.layers {
                let p = blob_path(&l.digest);
                files.verify_blob(&p, &l.digest, Some(l.size))?;
                blobs.push(PendingBlob {
                    archive_path: p,
                    digest: l.digest.clone(),
                });
            }
            blobs.push(PendingBlob {
                archive_path: blob_path(&config.digest),
                digest: config.digest.clone(),
            });
            by_digest.insert(
                digest.clone(),
                PendingImage {
                    names: name.into_iter().collect(),
                    manifest: bytes,
                    manifest_digest: digest,
                    id: config.digest,
                    blobs,
                },
            );
        }
        if let Some(img) = by_digest.values().find(|i| i.names.is_empty()) {
            return Err(ArchiveError::Unnamed(img.id.to_string()));
        }
        Ok(by_digest.into_values().collect())
    }

    fn read_verified(
        &self,
        files: &Unpacked,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<u8>, ArchiveError> {
        let p = blob_path(digest);
        if size > MAX_JSON {
            return Err(invalid(p, "too large"));
        }
        let mut data = Vec::new();
        files
            .open(&p)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut data)
            .map_err(ArchiveError::Read)?;
        if data.len() as u64 != size {
            return Err(ArchiveError::SizeMismatch {
                path: p,
                expected: size,
                actual: data.len() as u64,
            });
        }
        if !digest.matches(&data) {
            return Err(ArchiveError::DigestMismatch {
                path: p,
                expected: digest.to_string(),
                actual: Digest::of(digest.algorithm(), &data).to_string(),
            });
        }
        Ok(data)
    }

    /// `berth image save`: writes the images `references` (names or ids) as one archive.
    pub fn save(
        &self,
        references: &[String],
        format: ArchiveFormat,
        out: impl Write,
    ) -> Result<(), ArchiveError> {
        let mut images: Vec<(ResolvedImage, Vec<String>)> = Vec::new();
        for r in references {
            let img = self.resolve_image(r)?;
            let name = img
                .reference
                .parse::<ImageRef>()
                .ok()
                .filter(|_| !img.reference.starts_with("sha256:"));
            match images
                .iter_mut()
                .find(|(i, _)| i.manifest_digest == img.manifest_digest)
            {
                Some((_, names)) => names.extend(name.map(|n| n.to_string())),
                None => {
                    let names = name.map(|n| n.to_string()).into_iter().collect();
                    images.push((img, names));
                }
            }
        }
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        match format {
            ArchiveFormat::Docker => self.save_docker(&mut tar, &images)?,
            ArchiveFormat::Oci => self.save_oci(&mut tar, &images)?,
        }
        tar.into_inner()
            .map_err(ArchiveError::Write)?
            .flush()
            .map_err(ArchiveError::Write)
    }

    fn save_docker<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        images: &[(ResolvedImage, Vec<String>)],
    ) -> Result<(), ArchiveError> {
        let mut manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut written = std::collections::BTreeSet::new();
        for (img, names) in images {
            let config_name = format!("{}.json", img.id.hex());
            if written.insert(config_name.clone()) {
                let data = self.store.read(&img.id)?;
                append(tar, &config_name, &data[..], data.len() as u64)?;
            }
            let mut layer_names = Vec::new();
            for l in &img.layers {
                let name = format!("{}/layer.tar", l.diff_id.hex());
                if written.insert(name.clone()) {
                    self.append_uncompressed_layer(tar, &name, l)?;
                }
                layer_names.push(name);
            }
            let repo_tags: Vec<String> = names
                .iter()
                .filter_map(|n| n.parse::<ImageRef>().ok())
                .filter(|r| r.tag.is_some() && r.digest.is_none())
                .map(|r| r.to_string())
                .collect();
            for r in names.iter().filter_map(|n| n.parse::<ImageRef>().ok()) {
                if let (Some(t), Some(top)) = (&r.tag, img.layers.last()) {
                    repositories
                        .entry(r.familiar_name())
                        .or_default()
                        .insert(t.to_string(), top.diff_id.hex().to_string());
                }
            }
            manifest
                .push(json!({"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names}));
        }
        let m = serde_json::to_vec(&manifest).map_err(|e| invalid("manifest.json", e))?;
        append(tar, "manifest.json", &m[..], m.len() as u64)?;
        let r = serde_json::to_vec(&repositories).map_err(|e| invalid("repositories", e))?;
        append(tar, "repositories", &r[..], r.len() as u64)
    }

    /// Appends a layer uncompressed (what docker-archive consumers expect), checking its
    /// diff_id. Compressed blobs are decompressed into a temporary file first (tar needs the
    /// size up front).
    fn append_uncompressed_layer<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        name: &str,
        l: &crate::image::LayerRef,
    ) -> Result<(), ArchiveError> {
        let compression = compression_of_media_type(&l.media_type).or_else(|_| {
            let mut head = [0u8; 4];
            let n = self.store.open(&l.digest)?.read(&mut head).unwrap_or(0);
            berth_oci::layer::detect_compression(&head[..n]).map_err(|e| StoreError::Read {
                digest: l.digest.clone(),
                source: io::Error::other(e.to_string()),
            })
        })?;
        if compression == Compression::None {
            let size = self.store.size(&l.digest)?;
            let f = self.store.open(&l.digest)?;
            return append(tar, name, BufReader::new(f), size);
        }
        let tmp_dir = self.archive_tmp();
        std::fs::create_dir_all(&tmp_dir).map_err(|source| ArchiveError::Io {
            what: "create",
            path: tmp_dir.clone(),
            source,
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempfile_in(&tmp_dir)
            .map_err(|source| ArchiveError::Io {
                what: "create a temporary file in",
                path: tmp_dir.clone(),
                source,
            })?;
        let f = BufReader::new(self.store.open(&l.digest)?);
        let mut dec: Box<dyn Read> = match compression {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
            _ => Box::new(zstd_decoder(f).map_err(ArchiveError::Read)?),
        };
        let mut h = Hasher::new(Algorithm::Sha256);
        let mut tee = HashWriter {
            inner: tmp.as_file_mut(),
            hasher: &mut h,
        };
        let size = io::copy(&mut dec, &mut tee).map_err(|source| ArchiveError::Io {
            what: "decompress layer",
            path: self.store.blob_path(&l.digest),
            source,
        })?;
        let actual = h.finalize();
        if actual != l.diff_id {
            return Err(ArchiveError::DiffId {
                digest: l.digest.clone(),
                expected: l.diff_id.clone(),
                actual,
            });
        }
        let f = tmp.reopen().map_err(|source| ArchiveError::Io {
            what: "reopen",
            path: tmp.path().to_path_buf(),
            source,
        })?;
        append(tar, name, BufReader::new(f), size)
    }

    fn save_oci<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        images: &[(ResolvedImage, Vec<String>)],
    ) -> Result<(), ArchiveError> {
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        append(tar, "oci-layout", &layout[..], layout.len() as u64)?;
        let mut written = std::collections::BTreeSet::new();
        let mut index_entries = Vec::new();
        for (img, names) in images {
            let manifest = self.store.read(&img.manifest_digest)?;
            let mt = berth_oci::parse_manifest(None, &manifest)
                .map(|p| p.media_type)
                .unwrap_or_else(|_| media_type::OCI_MANIFEST.to_string());
            let mut blobs: Vec<Digest> = img.layers.iter().map(|l| l.digest.clone()).collect();
            blobs.push(img.id.clone());
            for d in blobs {
                if written.insert(d.clone()) {
                    let size = self.store.size(&d)?;
                    let f = BufReader::new(self.store.open(&d)?);
                    append(tar, &blob_path(&d), f, size)?;
                }
            }
            if written.insert(img.manifest_digest.clone()) {
                append(
                    tar,
                    &blob_path(&img.manifest_digest),
                    &manifest[..],
                    manifest.len() as u64,
                )?;
            }
            let desc = |annotations: Value| {
                json!({
                    "mediaType": mt,
                    "digest": img.manifest_digest.to_string(),
                    "size": manifest.len(),
                    "annotations": annotations,
                })
            };
            if names.is_empty() {
                index_entries.push(desc(json!({})));
            }
            for n in names {
                let full = n
                    .parse::<ImageRef>()
                    .map(|r| {
                        let mut s = format!("{}/{}", r.domain, r.path);
                        if let Some(t) = &r.tag {
                            s.push_str(&format!(":{t}"));
                        }
                        if let Some(d) = &r.digest {
                            s.push_str(&format!("@{d}"));
                        }
                        s
                    })
                    .unwrap_or_else(|_| n.clone());
                index_entries.push(desc(json!({
                    ANNOTATION_REF_NAME: n,
                    ANNOTATION_CONTAINERD_NAME: full,
                })));
            }
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": index_entries,
        }))
        .map_err(|e| invalid("index.json", e))?;
        append(tar, "index.json", &index[..], index.len() as u64)
    }
}

struct HashWriter<'a, W> {
    inner: W,
    hasher: &'a mut Hasher,
}

impl<W: Write> Write for HashWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: impl Read,
    size: u64,
) -> Result<(), ArchiveError> {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, data)
        .map_err(ArchiveError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_links() {
        assert_eq!(normalize(Path::new("./a//b"), "x").expect("ok"), "a/b");
        assert!(normalize(Path::new("../a"), "x").is_err());
        assert!(normalize(Path::new("/etc/passwd"), "x").is_err());
        assert!(normalize(Path::new("a/../../b"), "x").is_err());
        assert_eq!(
            resolve_link("a/layer.tar", Path::new("../b/layer.tar"), false),
            Some("b/layer.tar".into())
        );
        assert_eq!(resolve_link("a/x", Path::new("../../etc"), false), None);
        assert_eq!(resolve_link("a/x", Path::new("/etc/passwd"), false), None);
        assert_eq!(
            resolve_link("a/x", Path::new("b/y"), true),
            Some("b/y".into())
        );
        assert_eq!(
            digest_in_name(&format!("{}.json", "a".repeat(64))),
            format!("sha256:{}", "a".repeat(64)).parse().ok()
        );
        assert_eq!(digest_in_name("manifest.json"), None);
    }
}
