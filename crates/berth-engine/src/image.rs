//! Images: `berth image import`, the tag file, listing, resolving and removing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use berth_oci::store::{chain_ids, StoreError};
use berth_oci::{Algorithm, Digest, Hasher};
use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::distribution::ImageRef;
use crate::{fsutil, Engine};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("image reference {0} is ambiguous")]
    Ambiguous(String),
    #[error("invalid --change {0:?}: {1}")]
    InvalidChange(String, &'static str),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("content store")]
    Store(#[from] StoreError),
    #[error("invalid {what} {digest}")]
    Decode {
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid images.json")]
    Tags(#[source] serde_json::Error),
    #[error("unable to remove {reference}: image is being used by container {container}")]
    InUse {
        reference: String,
        container: String,
    },
    #[error("the image has {layers} layers but {diff_ids} diff_ids")]
    LayerCount { layers: usize, diff_ids: usize },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// `images.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct TagFile {
    pub(crate) images: BTreeMap<String, TagEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TagEntry {
    pub(crate) manifest: String,
    pub(crate) created: String,
}

/// A row of `berth images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSummary {
    /// `name:tag`.
    pub reference: String,
    pub repository: String,
    pub tag: String,
    pub manifest_digest: Digest,
    /// The image id (Docker's: the config digest).
    pub id: Digest,
    /// When the image was created (from its config), RFC 3339.
    pub created: String,
    /// Sum of the layer blobs' sizes.
    pub size: u64,
}

/// A layer of a resolved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
    pub chain_id: Digest,
}

/// An image found by name, tag, id or id prefix.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// `name:tag` when found by a tag, else the id.
    pub reference: String,
    pub manifest_digest: Digest,
    pub id: Digest,
    pub config: ImageConfiguration,
    /// The config as stored (for `inspect`).
    pub raw_config: Value,
    pub layers: Vec<LayerRef>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Desc,
    layers: Vec<Desc>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: String,
    digest: Digest,
    size: u64,
}

/// `NAME[:TAG]` → `NAME:TAG` (default tag `latest`), validated; Docker Hub names in their
/// familiar form (`docker.io/library/busybox` → `busybox:latest`); `NAME@DIGEST` kept as is.
pub fn normalize_reference(s: &str) -> Result<String, ImageError> {
    s.parse::<ImageRef>()
        .map(|r| r.local_key())
        .map_err(|_| ImageError::InvalidReference(s.to_string()))
}

/// `name:tag` → (name, tag); `name@digest` → (name, `<none>`).
fn split_reference(r: &str) -> (String, String) {
    if let Some((name, _)) = r.split_once('@') {
        return (name.to_string(), "<none>".to_string());
    }
    match r.rfind(':') {
        Some(i) if !r[i + 1..].contains('/') => (r[..i].to_string(), r[i + 1..].to_string()),
        _ => (r.to_string(), "latest".to_string()),
    }
}

/// The OCI architecture name of this host.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Applies Dockerfile-style `--change` instructions to an image config's `config` object.
pub fn apply_changes(
    config: &mut serde_json::Map<String, Value>,
    changes: &[String],
) -> Result<(), ImageError> {
    for change in changes {
        let bad = |why| ImageError::InvalidChange(change.clone(), why);
        let trimmed = change.trim();
        let (instr, rest) = trimmed
            .split_once(char::is_whitespace)
            .map(|(a, b)| (a, b.trim()))
            .unwrap_or((trimmed, ""));
        if rest.is_empty() {
            return Err(bad("missing argument"));
        }
        let exec_form = |rest: &str| -> Result<Vec<String>, ImageError> {
            if rest.starts_with('[') {
                serde_json::from_str::<Vec<String>>(rest).map_err(|_| bad("invalid JSON array"))
            } else {
                Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
            }
        };
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => {
                config.insert("Cmd".into(), json!(exec_form(rest)?));
            }
            "ENTRYPOINT" => {
                config.insert("Entrypoint".into(), json!(exec_form(rest)?));
            }
            "WORKDIR" => {
                config.insert("WorkingDir".into(), json!(rest));
            }
            "USER" => {
                config.insert("User".into(), json!(rest));
            }
            "STOPSIGNAL" => {
                config.insert("StopSignal".into(), json!(rest));
            }
            "ENV" => {
                let (k, v) = rest
                    .split_once('=')
                    .or_else(|| rest.split_once(char::is_whitespace))
                    .ok_or_else(|| bad("expected ENV NAME=VALUE"))?;
                let entry = format!("{}={}", k.trim(), v.trim());
                let env = config
                    .entry("Env")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .ok_or_else(|| bad("Env is not a list"))?;
                let prefix = format!("{}=", k.trim());
                env.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)));
                env.push(json!(entry));
            }
            _ => {
                return Err(bad(
                    "supported: CMD, ENTRYPOINT, ENV, WORKDIR, USER, STOPSIGNAL",
                ))
            }
        }
    }
    Ok(())
}

/// Digest of a file as is, and of its content decompressed when gzip: (digest, diff_id, gzip).
fn hash_layer(path: &Path) -> Result<(Digest, Digest, bool), ImageError> {
    let mut head = [0u8; 2];
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let n = f.read(&mut head).map_err(io_err("read", path))?;
    let gzip = n == 2 && head == [0x1f, 0x8b];
    struct Tee<R> {
        inner: R,
        hasher: Hasher,
    }
    impl<R: Read> Read for Tee<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.hasher.update(&buf[..n]);
            Ok(n)
        }
    }
    let file = BufReader::new(File::open(path).map_err(io_err("open", path))?);
    let mut tee = Tee {
        inner: file,
        hasher: Hasher::new(Algorithm::Sha256),
    };
    let mut diff = Hasher::new(Algorithm::Sha256);
    let mut buf = vec![0u8; 64 * 1024];
    {
        let mut reader: Box<dyn Read + '_> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(&mut tee))
        } else {
            Box::new(&mut tee)
        };
        loop {
            let n = reader.read(&mut buf).map_err(io_err("read", path))?;
            if n == 0 {
                break;
            }
            diff.update(&buf[..n]);
        }
    }
    // Trailing bytes after the gzip stream still belong to the blob.
    io::copy(&mut tee, &mut io::sink()).map_err(io_err("read", path))?;
    Ok((tee.hasher.finalize(), diff.finalize(), gzip))
}

impl Engine {
    fn tags_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    pub(crate) fn read_tags(&self) -> Result<TagFile, ImageError> {
        let path = self.tags_path();
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(ImageError::Tags),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TagFile::default()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    fn write_tags(&self, tags: &TagFile) -> Result<(), ImageError> {
        let path = self.tags_path();
        let data = serde_json::to_vec_pretty(tags).map_err(ImageError::Tags)?;
        fsutil::write_atomic(&path, &data).map_err(io_err("write", &path))
    }

    /// The manifest digest a local name (`name:tag` / `name@digest`) points at, if any.
    pub(crate) fn tag_target(&self, key: &str) -> Result<Option<Digest>, ImageError> {
        Ok(self
            .read_tags()?
            .images
            .get(key)
            .and_then(|e| Digest::from_str(&e.manifest).ok()))
    }

    /// Points every local name in `entries` at its manifest, in one atomic update of
    /// `images.json` under the engine lock. The manifests must already be stored.
    pub(crate) fn set_tags(&self, entries: &[(String, Digest)]) -> Result<(), ImageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let created = fsutil::now();
        let _lock = self.lock().map_err(io_err("lock", &self.root))?;
        let mut tags = self.read_tags()?;
        for (key, digest) in entries {
            tags.images.insert(
                key.clone(),
                TagEntry {
                    manifest: digest.to_string(),
                    created: created.clone(),
                },
            );
        }
        self.write_tags(&tags)
    }

    /// `berth tag SRC DST`: gives the image `source` (name or id) the name `target`.
    /// Returns the normalized target name.
    pub fn tag_image(&self, source: &str, target: &str) -> Result<String, ImageError> {
        let image = self.resolve_image(source)?;
        let key = normalize_reference(target)?;
        self.set_tags(&[(key.clone(), image.manifest_digest)])?;
        tracing::info!(source, target = %key, "image tagged");
        Ok(key)
    }

    fn put_json(&self, value: &Value) -> Result<(Digest, u64), ImageError> {
        let data = serde_json::to_vec(value).map_err(ImageError::Tags)?;
        let digest = Digest::sha256_of(&data);
        let size = self.store.put(&data[..], &digest)?;
        Ok((digest, size))
    }

    /// `berth image import`: one layer from a (possibly gzipped) rootfs tar, tagged `reference`.
    pub fn import_image(
        &self,
        tar: &Path,
        reference: &str,
        changes: &[String],
    ) -> Result<ImageSummary, ImageError> {
        let reference = normalize_reference(reference)?;
        let (digest, diff_id, gzip) = hash_layer(tar)?;
        let file = File::open(tar).map_err(io_err("open", tar))?;
        let size = self.store.put(BufReader::new(file), &digest)?;
        let created = fsutil::now();
        let mut config = serde_json::Map::new();
        apply_changes(&mut config, changes)?;
        let image_config = json!({
            "created": created,
            "architecture": host_arch(),
            "os": "linux",
            "config": Value::Object(config),
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
            "history": [{"created": created, "created_by": "berth image import", "comment": "Imported from tarball"}],
        });
        let (config_digest, config_size) = self.put_json(&image_config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest.to_string(), "size": config_size},
            "layers": [{"mediaType": if gzip { LAYER_TAR_GZIP } else { LAYER_TAR }, "digest": digest.to_string(), "size": size}],
        });
        let (manifest_digest, _) = self.put_json(&manifest)?;
        self.set_tags(&[(reference.clone(), manifest_digest.clone())])?;
        tracing::info!(%reference, %manifest_digest, "image imported");
        let (repository, tag) = split_reference(&reference);
        Ok(ImageSummary {
            reference,
            repository,
            tag,
            manifest_digest,
            id: config_digest,
            created,
            size,
        })
    }

    fn load_manifest(&self, digest: &Digest) -> Result<Manifest, ImageError> {
        let data = self.store.read(digest)?;
        serde_json::from_slice(&data).map_err(|source| ImageError::Decode {
            what: "manifest",
            digest: digest.to_string(),
            source,
        })
    }

    pub(crate) fn load_image(
        &self,
        reference: String,
        manifest_digest: Digest,
    ) -> Result<ResolvedImage, ImageError> {
        let manifest = self.load_manifest(&manifest_digest)?;
        let decode = |source| ImageError::Decode {
            what: "image config",
            digest: manifest.config.digest.to_string(),
            source,
        };
        let data = self.store.read(&manifest.config.digest)?;
        let config: ImageConfiguration = serde_json::from_slice(&data).map_err(decode)?;
        let raw_config: Value = serde_json::from_slice(&data).map_err(decode)?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| Digest::from_str(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ImageError::InvalidReference(format!("diff_ids of {manifest_digest}")))?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::LayerCount {
                layers: manifest.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let chains = chain_ids(&diff_ids);
        let layers = manifest
            .layers
            .into_iter()
            .zip(diff_ids)
            .zip(chains)
            .map(|((l, diff_id), chain_id)| LayerRef {
                digest: l.digest,
                media_type: l.media_type,
                size: l.size,
                diff_id,
                chain_id,
            })
            .collect();
        Ok(ResolvedImage {
            reference,
            manifest_digest,
            id: manifest.config.digest,
            config,
            raw_config,
            layers,
        })
    }

    /// Finds an image by `name[:tag]`, `sha256:<id>` or an id prefix (at least 4 hex digits).
    pub fn resolve_image(&self, query: &str) -> Result<ResolvedImage, ImageError> {
        let tags = self.read_tags()?;
        if let Ok(reference) = normalize_reference(query) {
            if let Some(entry) = tags.images.get(&reference) {
                let digest = Digest::from_str(&entry.manifest)
                    .map_err(|_| ImageError::NotFound(query.to_string()))?;
                return self.load_image(reference, digest);
            }
        }
        let hex = query.strip_prefix("sha256:").unwrap_or(query);
        if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut found: Option<(String, Digest)> = None;
            for (reference, entry) in &tags.images {
                let Ok(manifest_digest) = Digest::from_str(&entry.manifest) else {
                    continue;
                };
                let manifest = self.load_manifest(&manifest_digest)?;
                if manifest.config.digest.hex().starts_with(hex)
                    || manifest_digest.hex().starts_with(hex)
                {
                    match &found {
                        Some((_, d)) if *d != manifest_digest => {
                            return Err(ImageError::Ambiguous(query.to_string()))
                        }
                        Some(_) => {}
                        None => found = Some((reference.clone(), manifest_digest)),
                    }
                }
            }
            if let Some((reference, digest)) = found {
                return self.load_image(reference, digest);
            }
        }
        Err(ImageError::NotFound(query.to_string()))
    }

    /// Every tagged image.
    pub fn images(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let tags = self.read_tags()?;
        let mut out = Vec::new();
        for (reference, entry) in tags.images {
            let Ok(manifest_digest) = Digest::from_str(&entry.manifest) else {
                continue;
            };
            let image = self.load_image(reference.clone(), manifest_digest.clone())?;
            let (repository, tag) = split_reference(&reference);
            out.push(ImageSummary {
                reference,
                repository,
                tag,
                manifest_digest,
                created: image.config.created().clone().unwrap_or(entry.created),
                id: image.id,
                size: image.layers.iter().map(|l| l.size).sum(),
            });
        }
        Ok(out)
    }

    /// `berth rmi`: untags `query`; when no tag is left on the image, deletes its blobs and
    /// snapshots that no other image or container uses. Refused while a container uses the
    /// image unless `force` (which untags and keeps what the container needs).
    /// Returns Docker-style `Untagged: ...` / `Deleted: ...` lines.
    pub fn remove_image(&self, query: &str, force: bool) -> Result<Vec<String>, ImageError> {
        let image = self.resolve_image(query)?;
        let _lock = self.lock().map_err(io_err("lock", &self.root))?;
        let containers = self
            .container_images()
            .map_err(io_err("read", &self.root))?;
        if !force {
            if let Some((ctr, _)) = containers.iter().find(|(_, m)| *m == image.manifest_digest) {
                return Err(ImageError::InUse {
                    reference: query.to_string(),
                    container: ctr.chars().take(12).collect(),
                });
            }
        }
        let mut tags = self.read_tags()?;
        let mut out = Vec::new();
        // A tag removes that tag; an id removes every tag of the image.
        let by_tag = tags.images.contains_key(&image.reference)
            && normalize_reference(query).ok().as_deref() == Some(image.reference.as_str());
        let manifest_str = image.manifest_digest.to_string();
        let untag: Vec<String> = if by_tag {
            vec![image.reference.clone()]
        } else {
            tags.images
                .iter()
                .filter(|(_, e)| e.manifest == manifest_str)
                .map(|(r, _)| r.clone())
                .collect()
        };
        for r in &untag {
            tags.images.remove(r);
            out.push(format!("Untagged: {r}"));
        }
        self.write_tags(&tags)?;
        if tags.images.values().any(|e| e.manifest == manifest_str) {
            return Ok(out);
        }
        // What remains in use: other tagged images and every container's image.
        let mut keep_blobs = BTreeSet::new();
        let mut keep_chains = BTreeSet::new();
        let mut in_use: Vec<Digest> = tags
            .images
            .values()
            .filter_map(|e| Digest::from_str(&e.manifest).ok())
            .collect();
        in_use.extend(containers.into_iter().map(|(_, m)| m));
        for m in in_use {
            keep_blobs.insert(m.clone());
            if let Ok(other) = self.load_image(String::new(), m) {
                keep_blobs.insert(other.id.clone());
                for l in other.layers {
                    keep_blobs.insert(l.digest);
                    keep_chains.insert(l.chain_id);
                }
            }
        }
        for l in &image.layers {
            if !keep_chains.contains(&l.chain_id) {
                self.store.delete_snapshot(&l.chain_id)?;
            }
        }
        let mut blobs = vec![image.manifest_digest.clone(), image.id.clone()];
        blobs.extend(image.layers.iter().map(|l| l.digest.clone()));
        for b in blobs {
            if !keep_blobs.contains(&b) && self.store.delete(&b)? {
                out.push(format!("Deleted: {b}"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            normalize_reference("busybox").expect("ok"),
            "busybox:latest"
        );
        assert_eq!(normalize_reference("a/b:1").expect("ok"), "a/b:1");
        assert_eq!(
            normalize_reference("localhost:5000/app").expect("ok"),
            "localhost:5000/app:latest"
        );
        assert!(normalize_reference("UPPER").is_err());
        assert!(normalize_reference("a:b:c!").is_err());
    }

    #[test]
    fn changes() {
        let mut c = serde_json::Map::new();
        apply_changes(
            &mut c,
            &[
                r#"CMD ["/bin/sh"]"#.to_string(),
                "ENV A=1".to_string(),
                "ENV A=2".to_string(),
                "WORKDIR /tmp".to_string(),
                "ENTRYPOINT echo hi".to_string(),
            ],
        )
        .expect("changes");
        assert_eq!(c["Cmd"], json!(["/bin/sh"]));
        assert_eq!(c["Env"], json!(["A=2"]));
        assert_eq!(c["WorkingDir"], json!("/tmp"));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "echo hi"]));
        assert!(apply_changes(&mut c, &["RUN x".to_string()]).is_err());
        assert!(apply_changes(&mut c, &["CMD [x".to_string()]).is_err());
    }
}
