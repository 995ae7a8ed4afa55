//! `berth push`: every blob of the image is checked with HEAD (present ones skipped), mounted
//! from another repository of the same registry when a local tag says it came from there,
//! or uploaded (POST + one streamed PUT), a few at a time; then the manifest is PUT with its
//! exact stored bytes, so the registry's digest is the local one.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_oci::{Descriptor, Digest};

use super::{
    for_each_concurrently, short_id, DistributionError, ImageRef, Progress, ProgressEvent,
    RegistryOptions, CONCURRENT_LAYERS,
};
use crate::Engine;

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushResult {
    /// The tag (or digest) pushed.
    pub tag: String,
    /// The manifest digest (the same locally and in the registry).
    pub digest: Digest,
    /// Size of the manifest in bytes.
    pub size: u64,
    pub blobs_uploaded: usize,
    pub blobs_existing: usize,
    pub blobs_mounted: usize,
}

/// Reads a blob file for an upload body, reporting progress ('static for reqwest's body
/// thread).
struct UploadReader {
    inner: std::fs::File,
    id: String,
    total: u64,
    current: u64,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
}

impl Read for UploadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.current += n as u64;
            self.progress.event(ProgressEvent::Transfer {
                id: self.id.clone(),
                current: self.current,
                total: self.total,
            });
        }
        Ok(n)
    }
}

#[derive(Default)]
struct Counts {
    uploaded: usize,
    existing: usize,
    mounted: usize,
}

impl Engine {
    /// Repositories of `target`'s registry that local tags say hold `digest` (mount sources).
    fn mount_sources(&self, target: &ImageRef) -> Vec<(String, BTreeSet<Digest>)> {
        let Ok(tags) = self.read_tags() else {
            return Vec::new();
        };
        let mut out: Vec<(String, BTreeSet<Digest>)> = Vec::new();
        for (key, entry) in tags.images {
            let Ok(r) = key.parse::<ImageRef>() else {
                continue;
            };
            if r.domain != target.domain || r.path == target.path {
                continue;
            }
            let Ok(d) = entry.manifest.parse::<Digest>() else {
                continue;
            };
            let Ok(img) = self.load_image(key.clone(), d) else {
                continue;
            };
            let blobs: BTreeSet<Digest> = img
                .layers
                .into_iter()
                .map(|l| l.digest)
                .chain(std::iter::once(img.id))
                .collect();
            match out.iter_mut().find(|(p, _)| p == r.path.as_str()) {
                Some((_, set)) => set.extend(blobs),
                None => out.push((r.path.to_string(), blobs)),
            }
        }
        out
    }

    /// Pushes the local image `reference` (`localhost:5000/app:1`) to its registry.
    pub fn push(
        &self,
        reference: &str,
        opts: &RegistryOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<PushResult, DistributionError> {
        let r: ImageRef = reference.parse()?;
        let image = self.resolve_image(&r.local_key())?;
        let manifest = self.store.read(&image.manifest_digest)?;
        let parsed = berth_oci::parse_manifest(None, &manifest).map_err(|e| {
            DistributionError::InvalidResponse {
                registry: "the local store".into(),
                what: format!("manifest {}", image.manifest_digest),
                reason: e.to_string(),
            }
        })?;
        progress.event(ProgressEvent::Status(format!(
            "The push refers to repository [{}/{}]",
            r.domain, r.path
        )));
        let repo = opts.repo(&r, true)?;
        repo.ping(false)?;
        let mut seen = BTreeSet::new();
        let blobs: Vec<Descriptor> = parsed
            .layers
            .iter()
            .filter(|l| !l.is_external())
            .chain(parsed.config.iter())
            .filter(|d| seen.insert(d.digest.clone()))
            .cloned()
            .collect();
        for b in &blobs {
            progress.event(ProgressEvent::Waiting {
                id: short_id(&b.digest),
                size: b.size,
            });
        }
        let sources = self.mount_sources(&r);
        let cancel = Arc::new(AtomicBool::new(false));
        let counts = std::sync::Mutex::new(Counts::default());
        let count = |f: fn(&mut Counts)| {
            if let Ok(mut c) = counts.lock() {
                f(&mut c);
            }
        };
        for_each_concurrently(&blobs, CONCURRENT_LAYERS, &cancel, &|b| {
            let id = short_id(&b.digest);
            if repo.blob_exists(&b.digest)? {
                progress.event(ProgressEvent::Exists { id });
                count(|c| c.existing += 1);
                return Ok(());
            }
            for (from, _) in sources.iter().filter(|(_, set)| set.contains(&b.digest)) {
                match repo.mount_blob(&b.digest, from) {
                    Ok(true) => {
                        progress.event(ProgressEvent::Mounted {
                            id,
                            from: from.clone(),
                        });
                        count(|c| c.mounted += 1);
                        return Ok(());
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, %from, "cross-repository mount failed"),
                }
            }
            let size = self.store.size(&b.digest)?;
            if size != b.size {
                return Err(DistributionError::Store(
                    berth_oci::store::StoreError::SizeMismatch {
                        digest: b.digest.clone(),
                        expected: b.size,
                        actual: size,
                    },
                ));
            }
            let open = || -> Result<Box<dyn Read + Send>, DistributionError> {
                Ok(Box::new(UploadReader {
                    inner: self.store.open(&b.digest)?,
                    id: id.clone(),
                    total: size,
                    current: 0,
                    progress: progress.clone(),
                    cancel: cancel.clone(),
                }))
            };
            repo.upload_blob(&b.digest, size, &open)?;
            progress.event(ProgressEvent::Done { id });
            count(|c| c.uploaded += 1);
            Ok(())
        })?;
        let tag = r.manifest_reference();
        let digest = repo.put_manifest(&tag, &parsed.media_type, &manifest)?;
        tracing::info!(reference = %r, %digest, "image pushed");
        progress.event(ProgressEvent::Status(format!(
            "{tag}: digest: {digest} size: {}",
            manifest.len()
        )));
        let c = counts.into_inner().unwrap_or_default();
        Ok(PushResult {
            tag,
            digest,
            size: manifest.len() as u64,
            blobs_uploaded: c.uploaded,
            blobs_existing: c.existing,
            blobs_mounted: c.mounted,
        })
    }
}
