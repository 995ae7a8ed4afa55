//! `berth pull`: manifest (an index resolved to this platform's image), config, then the
//! missing layers streamed into the content store a few at a time, each verified (digest and
//! size) before it becomes visible; finally the manifest and the tag, so a tag never points
//! at missing content. Layers are unpacked later, once per ChainID, by the run path.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_oci::store::StoreError;
use berth_oci::{media_type, Descriptor, Digest, ParsedManifest};
use serde_json::Value;

use super::client::Repo;
use super::{
    for_each_concurrently, short_id, DistributionError, ImageRef, PlatformSpec, Progress,
    ProgressEvent, ProgressReader, RegistryOptions, BLOB_ATTEMPTS, CONCURRENT_LAYERS,
};
use crate::Engine;

/// Largest image config accepted.
const MAX_CONFIG_SIZE: u64 = 16 << 20;

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullResult {
    /// The full reference pulled (`docker.io/library/busybox:latest`).
    pub full_reference: String,
    /// The local name it is registered under (`busybox:latest`).
    pub reference: String,
    /// Digest of the manifest the reference names (an index for multi-platform images).
    pub digest: Digest,
    /// Digest of this platform's image manifest.
    pub manifest_digest: Digest,
    /// The image id (config digest).
    pub id: Digest,
    /// Nothing had to be downloaded and the tag already pointed at this image.
    pub up_to_date: bool,
    pub layers_downloaded: usize,
    pub bytes_downloaded: u64,
}

fn matches(d: &Descriptor, want: &PlatformSpec) -> bool {
    d.platform
        .as_ref()
        .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
}

/// The entry of an index for `want`: os and architecture must match; a requested variant
/// must match too, else an entry without a variant (or arm64's `v8`) is preferred.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    want: &PlatformSpec,
) -> Option<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| media_type::is_image_manifest(&d.media_type) && matches(d, want))
        .collect();
    let variant = |d: &Descriptor| d.platform.as_ref().and_then(|p| p.variant.clone());
    match &want.variant {
        Some(v) => candidates
            .into_iter()
            .find(|d| variant(d).as_deref() == Some(v.as_str())),
        None => candidates
            .iter()
            .find(|d| variant(d).is_none() || variant(d).as_deref() == Some("v8"))
            .or(candidates.first())
            .copied(),
    }
}

fn parse(
    repo: &Repo,
    what: &str,
    mt: &str,
    body: &[u8],
) -> Result<ParsedManifest, DistributionError> {
    berth_oci::parse_manifest(Some(mt), body).map_err(|e| DistributionError::InvalidResponse {
        registry: repo.domain.clone(),
        what: what.to_string(),
        reason: e.to_string(),
    })
}

impl Engine {
    /// Pulls `reference` (`busybox`, `localhost:5000/app:1`, `app@sha256:...`) for
    /// `platform` (default: this host) and registers it like `import_image` does.
    pub fn pull(
        &self,
        reference: &str,
        platform: Option<&PlatformSpec>,
        opts: &RegistryOptions,
        progress: &dyn Progress,
    ) -> Result<PullResult, DistributionError> {
        let r: ImageRef = reference.parse()?;
        self.sweep_tmp();
        let full_reference = match (&r.tag, &r.digest) {
            (_, Some(d)) => format!("{}/{}@{d}", r.domain, r.path),
            (Some(t), None) => format!("{}/{}:{t}", r.domain, r.path),
            (None, None) => format!("{}/{}", r.domain, r.path),
        };
        let repo = opts.repo(&r, false)?;
        progress.event(ProgressEvent::Status(format!(
            "{}: Pulling from {}",
            r.manifest_reference(),
            r.path
        )));
        repo.ping(false)?;
        let (body, mt, top_digest) = repo.get_manifest(&r.manifest_reference())?;
        let want = platform.cloned().unwrap_or_else(PlatformSpec::host);
        let (manifest_bytes, manifest_digest, parsed) = if media_type::is_index(&mt) {
            let index = parse(&repo, "index", &mt, &body)?;
            let child = select_platform(&index.manifests, &want)
                .ok_or_else(|| DistributionError::NoMatchingPlatform(want.to_string()))?;
            tracing::debug!(index = %top_digest, manifest = %child.digest, "platform selected");
            let (b, cmt, d) = repo.get_manifest(child.digest.as_str())?;
            if !media_type::is_image_manifest(&cmt) {
                return Err(DistributionError::InvalidResponse {
                    registry: repo.domain.clone(),
                    what: format!("manifest {d}"),
                    reason: format!("an index entry must be an image manifest, not {cmt}"),
                });
            }
            let p = parse(&repo, "manifest", &cmt, &b)?;
            (b, d, p)
        } else {
            let p = parse(&repo, "manifest", &mt, &body)?;
            (body, top_digest.clone(), p)
        };
        let config = parsed
            .config
            .clone()
            .ok_or_else(|| DistributionError::InvalidResponse {
                registry: repo.domain.clone(),
                what: format!("manifest {manifest_digest}"),
                reason: "no config".into(),
            })?;
        // The config: small, checked against the layers before any layer is fetched.
        if config.size > MAX_CONFIG_SIZE {
            return Err(DistributionError::InvalidResponse {
                registry: repo.domain.clone(),
                what: format!("config {}", config.digest),
                reason: format!("larger than {MAX_CONFIG_SIZE} bytes"),
            });
        }
        if !self.store.contains(&config.digest)? {
            let resp = repo.get_blob(&config.digest)?;
            self.store
                .put_sized(resp, &config.digest, config.size)
                .map_err(|source| DistributionError::Blob {
                    registry: repo.domain.clone(),
                    digest: config.digest.clone(),
                    source,
                })?;
        }
        let raw = self.store.read(&config.digest)?;
        let cfg: Value =
            serde_json::from_slice(&raw).map_err(|e| DistributionError::InvalidResponse {
                registry: repo.domain.clone(),
                what: format!("config {}", config.digest),
                reason: e.to_string(),
            })?;
        if let Some(want) = platform.filter(|_| !media_type::is_index(&mt)) {
            // A single-platform image must be the one asked for.
            let field = |k: &str| cfg[k].as_str().unwrap_or_default().to_string();
            let actual = PlatformSpec {
                os: field("os"),
                architecture: field("architecture"),
                variant: cfg["variant"].as_str().map(str::to_string),
            };
            let variant_ok = want.variant.is_none() || want.variant == actual.variant;
            if actual.os != want.os || actual.architecture != want.architecture || !variant_ok {
                return Err(DistributionError::PlatformMismatch {
                    reference: r.to_string(),
                    wanted: want.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let diff_ids = cfg["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len);
        if diff_ids != parsed.layers.len() {
            return Err(DistributionError::InvalidResponse {
                registry: repo.domain.clone(),
                what: format!("manifest {manifest_digest}"),
                reason: format!(
                    "{} layers but the config lists {diff_ids} diff_ids",
                    parsed.layers.len()
                ),
            });
        }

        let key = r.local_key();
        let mut have_all =
            self.store.contains(&manifest_digest)? && self.store.contains(&config.digest)?;
        for l in &parsed.layers {
            have_all = have_all && self.store.contains(&l.digest)?;
        }
        if have_all && self.tag_target(&key)?.as_ref() == Some(&manifest_digest) {
            progress.event(ProgressEvent::Status(format!("Digest: {top_digest}")));
            progress.event(ProgressEvent::Status(format!(
                "Status: Image is up to date for {r}"
            )));
            return Ok(PullResult {
                full_reference,
                reference: key,
                digest: top_digest,
                manifest_digest,
                id: config.digest,
                up_to_date: true,
                layers_downloaded: 0,
                bytes_downloaded: 0,
            });
        }

        // Layers: each distinct digest once; present ones skipped.
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        for l in &parsed.layers {
            if !seen.insert(l.digest.clone()) {
                continue;
            }
            let id = short_id(&l.digest);
            if self.store.contains(&l.digest)? {
                progress.event(ProgressEvent::Exists { id });
            } else {
                progress.event(ProgressEvent::Waiting { id, size: l.size });
                missing.push(l.clone());
            }
        }
        let cancel = AtomicBool::new(false);
        let bytes = std::sync::atomic::AtomicU64::new(0);
        for_each_concurrently(&missing, CONCURRENT_LAYERS, &cancel, &|l| {
            let n = self.download_blob(&repo, l, progress, &cancel)?;
            bytes.fetch_add(n, Ordering::Relaxed);
            Ok(())
        })?;

        self.store.put(&manifest_bytes[..], &manifest_digest)?;
        self.set_tags(&[(key.clone(), manifest_digest.clone())])?;
        tracing::info!(reference = %full_reference, %manifest_digest, layers = missing.len(), "image pulled");
        progress.event(ProgressEvent::Status(format!("Digest: {top_digest}")));
        progress.event(ProgressEvent::Status(format!(
            "Status: Downloaded newer image for {r}"
        )));
        Ok(PullResult {
            full_reference,
            reference: key,
            digest: top_digest,
            manifest_digest,
            id: config.digest,
            up_to_date: false,
            layers_downloaded: missing.len(),
            bytes_downloaded: bytes.load(Ordering::Relaxed),
        })
    }

    /// The lock serializing downloads of `digest` (one of 64 striped lock files under
    /// `<root>/pull-locks`, so their number stays bounded).
    fn blob_download_lock(
        &self,
        digest: &Digest,
    ) -> Result<nix::fcntl::Flock<std::fs::File>, DistributionError> {
        let dir = self.root.join("pull-locks");
        let io = |op: &'static str, path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { op, path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let stripe = digest
            .to_string()
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % 64;
        let path = dir.join(format!("{stripe:02}.lock"));
        Ok(crate::fsutil::lock(&path).map_err(io("lock", &path))?)
    }

    /// Streams one blob into the store (verified), retrying network failures.
    fn download_blob(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<u64, DistributionError> {
        let id = short_id(&desc.digest);
        // One download of a blob at a time on this engine root (a platform agent's pre-pull
        // and a task's pull of the same image): the second waits, then finds it stored.
        let _guard = self.blob_download_lock(&desc.digest)?;
        if self.store.contains(&desc.digest)? {
            progress.event(ProgressEvent::Exists { id });
            return Ok(0);
        }
        let mut attempt = 1;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(DistributionError::Cancelled);
            }
            let retry = |attempt: usize| {
                progress.event(ProgressEvent::Retrying {
                    id: id.clone(),
                    attempt: attempt + 1,
                });
                std::thread::sleep(Duration::from_millis(500 * attempt as u64));
            };
            let resp = match repo.get_blob(&desc.digest) {
                Ok(r) => r,
                Err(e @ DistributionError::Network { .. }) if attempt < BLOB_ATTEMPTS => {
                    tracing::warn!(digest = %desc.digest, error = %e, "retrying the download");
                    retry(attempt);
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let reader = ProgressReader {
                inner: resp,
                id: &id,
                total: desc.size,
                current: 0,
                progress,
                cancel,
            };
            match self.store.put_sized(reader, &desc.digest, desc.size) {
                Ok(n) => {
                    progress.event(ProgressEvent::Done { id });
                    return Ok(n);
                }
                Err(StoreError::Read { .. }) if cancel.load(Ordering::Relaxed) => {
                    return Err(DistributionError::Cancelled)
                }
                Err(StoreError::Read { source, .. }) if attempt < BLOB_ATTEMPTS => {
                    tracing::warn!(digest = %desc.digest, error = %source, "retrying the download");
                    retry(attempt);
                    attempt += 1;
                }
                Err(source) => {
                    return Err(DistributionError::Blob {
                        registry: repo.domain.clone(),
                        digest: desc.digest.clone(),
                        source,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::Platform;

    fn desc(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        let mut d = Descriptor::new(media_type::OCI_MANIFEST, Digest::sha256_of(&[n]), 1);
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(str::to_string),
            ..Platform::default()
        });
        d
    }

    #[test]
    fn platform_selection() {
        let list = vec![
            desc("arm", Some("v6"), 1),
            desc("arm", Some("v7"), 2),
            desc("arm64", Some("v8"), 3),
            desc("amd64", None, 4),
        ];
        let p = |s: &str| PlatformSpec::parse(s).expect("platform");
        let pick = |s: &str| select_platform(&list, &p(s)).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64"), Some(Digest::sha256_of(&[4])));
        assert_eq!(pick("linux/arm64"), Some(Digest::sha256_of(&[3])));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::sha256_of(&[2])));
        assert_eq!(pick("linux/arm"), Some(Digest::sha256_of(&[1])));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("windows/amd64"), None);
    }
}
