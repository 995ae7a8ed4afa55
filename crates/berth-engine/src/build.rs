//! What `berth build` (the berth-build crate) runs on: a scratch root file system over a stack
//! of layer snapshots, a process run in a container on it (the isolation of `berth run`), the
//! commit of its changes as a layer, and writing an image (config + manifest) into the store.
//!
//! A build step lives in `containers/<id>/` like a container, without a `config.json` record
//! (so `ps` does not list it): `upper/`, `work/`, `rootfs/` (the overlay), and for a process
//! `bundle/`, `state/` and the `/etc` files. [`BuildRootfs`] removes all of it (unmount
//! first) when dropped, also on errors; [`Engine::commit_build_layer`] moves `upper/` into
//! the content store as the snapshot of the new layer, so it is never unpacked again.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_oci::layer::write_overlay_diff;
use berth_oci::store::chain_id;
use berth_oci::{Algorithm, Digest, Hasher};
use berth_runtime::shim::{self, ExitInfo, ShimError, ShimRequest};
use berth_runtime::spec::{
    build_spec, EtcFiles, HostInfo, MountSpec, NetMode, RootfsUserDb, RunOptions,
};
use oci_spec::image::ImageConfiguration;
use serde_json::{json, Value};

use crate::container::{generate_id, ContainerError, Network};
use crate::image::{
    normalize_reference, ImageError, LayerRef, CONFIG_MEDIA_TYPE, LAYER_TAR, LAYER_TAR_GZIP,
    MANIFEST_MEDIA_TYPE,
};
use crate::Engine;
use crate::{fsutil, overlay};

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// An overlay root file system for one build step: the snapshots of a layer stack below, a
/// fresh upper directory. Unmounted and deleted when dropped.
#[derive(Debug)]
pub struct BuildRootfs {
    id: String,
    dir: PathBuf,
    upper: PathBuf,
    rootfs: PathBuf,
}

impl BuildRootfs {
    /// The id (also the directory name under `containers/`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The merged tree, mounted.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// The upper directory: what the step changed, in overlayfs' format.
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    /// Unmounts the overlay (idempotent).
    pub fn unmount(&self) -> Result<(), ContainerError> {
        Ok(overlay::unmount(&self.rootfs)?)
    }
}

impl Drop for BuildRootfs {
    fn drop(&mut self) {
        if let Err(e) = overlay::unmount(&self.rootfs) {
            tracing::warn!(error = %e, "unmounting a build root file system");
            return;
        }
        if let Err(e) = fsutil::remove_dir_if_present(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "removing a build step");
        }
    }
}

/// The process of a `RUN` step.
#[derive(Debug, Clone, Default)]
pub struct BuildProcess {
    /// argv (already wrapped in the shell for the shell form).
    pub args: Vec<String>,
    /// The complete environment (`K=V`).
    pub env: Vec<String>,
    /// `USER` (empty: root).
    pub user: String,
    /// Working directory (absolute; empty: `/`). Must exist in the root file system.
    pub workdir: String,
    pub network: Network,
    /// Extra mounts (e.g. a heredoc script).
    pub mounts: Vec<MountSpec>,
}

/// Media types of a layer in an OCI manifest (Docker's names mapped to OCI's).
fn oci_layer_media_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => LAYER_TAR_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar" => LAYER_TAR,
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        }
        other => other,
    }
}

/// A writer that hashes what goes through it.
struct HashWriter<W> {
    inner: W,
    hasher: Hasher,
    bytes: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Engine {
    /// Mounts a scratch root file system over `layers` (bottom first; empty: an empty tree).
    pub fn mount_build_rootfs(&self, layers: &[LayerRef]) -> Result<BuildRootfs, ContainerError> {
        let mut lower = self.prepare_layer_stack(layers)?;
        let id = generate_id();
        let dir = self.container_dir(&id);
        let rootfs = BuildRootfs {
            id: id.clone(),
            upper: dir.join("upper"),
            rootfs: dir.join("rootfs"),
            dir: dir.clone(),
        };
        let work = dir.join("work");
        for d in [&rootfs.upper, &work, &rootfs.rootfs] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        fs::set_permissions(&rootfs.upper, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &rootfs.upper))?;
        if lower.is_empty() {
            let empty = dir.join("empty");
            fs::create_dir_all(&empty).map_err(io_err("create", &empty))?;
            lower.push(empty);
        }
        overlay::mount_overlay(&lower, &rootfs.upper, &work, &rootfs.rootfs, true)?;
        Ok(rootfs)
    }

    /// Runs `process` in a container on `rootfs` (isolation, seccomp, capabilities as `berth
    /// run`), passing its output (stdout and stderr interleaved) to `output` as it comes, and
    /// returns its exit. When `cancel` becomes true the container is killed. The container's
    /// runtime state is gone when this returns; the root file system stays mounted.
    pub fn run_build_process(
        &self,
        rootfs: &BuildRootfs,
        process: &BuildProcess,
        output: &mut dyn FnMut(&[u8]),
        cancel: &AtomicBool,
    ) -> Result<ExitInfo, ContainerError> {
        let id = rootfs.id.clone();
        let mut attachment = None;
        let result = self.run_build_inner(rootfs, process, output, cancel, &mut attachment);
        if let Some(att) = attachment {
            self.release_network(&id, &att);
        }
        let netns = rootfs.dir.join("netns");
        if berth_net::is_netns_mount(&netns) {
            let _ = berth_net::delete_netns(&netns);
        }
        for runtime in self.runtime_dirs(&id) {
            let _ = fsutil::remove_dir_if_present(&runtime);
        }
        for d in ["state", "bundle"] {
            let _ = fs::remove_dir_all(rootfs.dir.join(d));
        }
        let _ = self.remove_volatile(&id);
        result
    }

    fn run_build_inner(
        &self,
        rootfs: &BuildRootfs,
        process: &BuildProcess,
        output: &mut dyn FnMut(&[u8]),
        cancel: &AtomicBool,
        attachment: &mut Option<crate::network::NetworkAttachment>,
    ) -> Result<ExitInfo, ContainerError> {
        let id = rootfs.id.as_str();
        let hostname = id[..12].to_string();
        let net_mode = match &process.network {
            Network::Bridge(n) => {
                let info = self.resolve_network(n)?;
                let att = self.attach_network(id, &format!("build-{hostname}"), &info, &[])?;
                let path = att.netns.clone();
                *attachment = Some(att);
                NetMode::Path(path)
            }
            Network::Host => NetMode::Host,
            Network::None => NetMode::NewNs,
        };
        let (ip, dns) = match attachment {
            Some(a) => (Some(a.ip), Some(a.gateway)),
            None => (None, None),
        };
        let etc = self.write_etc_files(
            id,
            &hostname,
            ip,
            &crate::network::DnsConfig::gateway(dns),
            &[],
        )?;
        let image_config: ImageConfiguration = serde_json::from_value(json!({
            "architecture": crate::image::host_arch(),
            "os": "linux",
            "config": {"Env": process.env, "User": process.user, "WorkingDir": process.workdir},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .map_err(|source| ContainerError::Record {
            path: rootfs.dir.clone(),
            source,
        })?;
        let opts = RunOptions {
            hostname,
            cmd: process.args.clone(),
            entrypoint: Some(Vec::new()),
            network: net_mode,
            cgroups_path: format!("/berth/{id}"),
            mounts: process.mounts.clone(),
            etc_files: EtcFiles {
                hosts: Some(etc.hosts),
                hostname: Some(etc.hostname),
                resolv_conf: Some(etc.resolv_conf),
            },
            ..RunOptions::default()
        };
        let built = build_spec(
            &image_config,
            &opts,
            rootfs.rootfs(),
            &RootfsUserDb::new(rootfs.rootfs()),
            &HostInfo::detect(),
        )?;
        let mut spec = built.spec;
        berth_runtime::seccomp_bpf::precompile(&mut spec, &self.root.join("seccomp"))?;
        let bundle = rootfs.dir.join("bundle");
        fs::create_dir_all(&bundle).map_err(io_err("create", &bundle))?;
        spec.save(bundle.join("config.json"))
            .map_err(ContainerError::SaveSpec)?;
        let state_dir = rootfs.dir.join("state");
        let req = ShimRequest::new(id, &bundle, &state_dir, self.runtime.clone());
        match shim::spawn(&self.shim_exe, &req) {
            Ok(_) => {}
            Err(ShimError::StartFailed { message, .. }) => {
                return Err(ContainerError::StartFailed {
                    id: id[..12].to_string(),
                    exit_code: 127,
                    message,
                })
            }
            Err(e) => return Err(e.into()),
        }
        let mut killed = false;
        let kill = |killed: &mut bool| {
            if !*killed && cancel.load(Ordering::Relaxed) {
                *killed = true;
                let _ = shim::kill(&state_dir, libc::SIGKILL);
            }
        };
        match shim::attach(&state_dir) {
            Ok(mut stream) => {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => output(&buf[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "build step output");
                            break;
                        }
                    }
                    kill(&mut killed);
                }
            }
            Err(_) => {
                // Exited before we could attach: its output is in the log.
                if let Some(exit) = shim::wait_exit(&state_dir, Duration::from_secs(30))? {
                    let mut reader = crate::LogReader::new(state_dir.join(shim::LOG_FILE));
                    if let Ok(entries) = reader.read_new() {
                        for e in entries {
                            output(e.log.as_bytes());
                        }
                    }
                    return Ok(exit);
                }
            }
        }
        loop {
            if let Some(exit) = shim::wait_exit(&state_dir, Duration::from_millis(500))? {
                return Ok(exit);
            }
            kill(&mut killed);
        }
    }

    /// Turns the changes of `rootfs` into a layer on top of `parent` (bottom first): a gzip
    /// tar (OCI whiteouts) stored as a blob, and the upper directory adopted as the layer's
    /// snapshot. The caller tidies the upper directory first (e.g. mount stubs).
    pub fn commit_build_layer(
        &self,
        rootfs: BuildRootfs,
        parent: &[LayerRef],
    ) -> Result<LayerRef, ContainerError> {
        rootfs.unmount()?;
        let store_err = |source| ContainerError::Unpack {
            digest: "new layer".into(),
            source,
        };
        let tmp = self.store.temp_file().map_err(store_err)?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(io_err("open", tmp.path()))?;
        let compressed = HashWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Hasher::new(Algorithm::Sha256),
            bytes: 0,
        };
        let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::fast());
        let plain = HashWriter {
            inner: gz,
            hasher: Hasher::new(Algorithm::Sha256),
            bytes: 0,
        };
        let (plain, _stats) = write_overlay_diff(rootfs.upper(), plain)
            .map_err(io_err("write a layer of", rootfs.upper()))?;
        let diff_id = plain.hasher.finalize();
        let mut compressed = plain
            .inner
            .finish()
            .map_err(io_err("compress a layer of", rootfs.upper()))?;
        compressed
            .flush()
            .map_err(io_err("write a layer of", rootfs.upper()))?;
        let HashWriter { inner, hasher, .. } = compressed;
        drop(inner);
        let digest = hasher.finalize();
        let size = self.store.commit_blob(tmp, &digest).map_err(store_err)?;
        let mut diff_ids: Vec<Digest> = parent.iter().map(|l| l.diff_id.clone()).collect();
        diff_ids.push(diff_id.clone());
        let chain = chain_id(&diff_ids).unwrap_or_else(|| diff_id.clone());
        // The upper directory becomes the snapshot: move it out of the step's directory.
        let staged = rootfs.dir.join("layer");
        fs::rename(rootfs.upper(), &staged).map_err(io_err("rename", rootfs.upper()))?;
        self.store
            .adopt_snapshot(&chain, &staged)
            .map_err(store_err)?;
        tracing::debug!(%digest, %diff_id, size, "build layer committed");
        Ok(LayerRef {
            digest,
            media_type: LAYER_TAR_GZIP.to_string(),
            size,
            diff_id,
            chain_id: chain,
        })
    }

    /// Stores an image: `config` (a complete image config; its `rootfs.diff_ids` must match
    /// `layers`) and an OCI manifest over `layers`. Returns (manifest digest, config digest).
    /// Nothing is tagged.
    pub fn write_image(
        &self,
        config: &Value,
        layers: &[LayerRef],
    ) -> Result<(Digest, Digest), ImageError> {
        let data = serde_json::to_vec(config).map_err(ImageError::Tags)?;
        let config_digest = Digest::sha256_of(&data);
        let config_size = self.store.put(&data[..], &config_digest)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest.to_string(), "size": config_size},
            "layers": layers.iter().map(|l| json!({
                "mediaType": oci_layer_media_type(&l.media_type),
                "digest": l.digest.to_string(),
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let data = serde_json::to_vec(&manifest).map_err(ImageError::Tags)?;
        let manifest_digest = Digest::sha256_of(&data);
        self.store.put(&data[..], &manifest_digest)?;
        Ok((manifest_digest, config_digest))
    }

    /// Points the local name `reference` (`name[:tag]`) at a stored manifest; returns the
    /// normalized name.
    pub fn tag_manifest(&self, reference: &str, manifest: &Digest) -> Result<String, ImageError> {
        let key = normalize_reference(reference)?;
        self.set_tags(&[(key.clone(), manifest.clone())])?;
        Ok(key)
    }

    /// Whether the blob `digest` is in the content store.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.store.contains(digest).unwrap_or(false)
    }
}
