//! The local engine: images and containers on one host.
//!
//! Everything lives under one root directory (default [`DEFAULT_ROOT`]):
//! - `content/`: the [`ContentStore`] (blobs and ChainID-keyed snapshots);
//! - `images.json`: tags (`name:tag` → manifest digest), replaced atomically under `lock`;
//! - `containers/<id>/`: `config.json` (our record), `bundle/config.json` (the OCI spec),
//!   the overlay's `upper/`, `work/` and `rootfs/` mountpoint, and the shim's `state/`;
//! - `sandboxes/<name>/`: task sandboxes (`sandbox.json`, the `netns` mount);
//! - `run/`: libcontainer's root directory, only where no tmpfs can be had for it: normally
//!   it is [`volatile`]'s `/run/berth/volatile/<root hash>/runtime`.
//!
//! Nothing is held in memory between calls: every call reads the state back from disk, so
//! containers (owned by their shims) outlive the process that started them.

pub mod build;
pub mod container;
pub mod distribution;
pub mod exec;
mod fsutil;
pub mod image;
pub mod network;
pub mod overlay;
pub mod sandbox;
mod scratch;
pub mod volatile;
pub mod volume;

use std::fs::File;
use std::path::{Path, PathBuf};

use berth_oci::store::{ContentStore, StoreError};
use nix::fcntl::Flock;

pub use build::{BuildProcess, BuildRootfs};
pub use container::{
    ContainerError, ContainerInfo, ContainerRecord, ContainerState, LogEntry, LogReader, Network,
    RunSpec,
};
pub use distribution::{
    ArchiveError, ArchiveFormat, DistributionError, ImageRef, PlatformSpec, Progress,
    ProgressEvent, RegistryOptions,
};
pub use exec::{ExecRunError, ExecSpec, PreparedExec};
pub use image::{ImageError, ImageSummary, ResolvedImage};
pub use network::NetworkAttachment;
pub use sandbox::{SandboxInfo, SandboxSpec};
pub use volume::{MountRecord, VolumeInfo, VolumeRecord};

/// Default root directory of the engine's state.
pub const DEFAULT_ROOT: &str = "/var/lib/berth/engine";

/// Any error of the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Distribution(#[from] DistributionError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// Errors of opening the engine's state.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the content store")]
    Store(#[from] StoreError),
}

/// The engine over one root directory.
#[derive(Debug, Clone)]
pub struct Engine {
    root: PathBuf,
    /// libcontainer's root directory ([`volatile::runtime_root`]).
    runtime: PathBuf,
    store: ContentStore,
    shim_exe: PathBuf,
}

impl Engine {
    /// Opens (creating when missing) the engine state under `root`. `shim_exe` is the binary
    /// whose hidden `shim` subcommand runs a container (the `berth` binary itself).
    pub fn open(root: impl Into<PathBuf>, shim_exe: impl Into<PathBuf>) -> Result<Self, OpenError> {
        let root: PathBuf = root.into();
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|source| OpenError::Create {
                    path: root.clone(),
                    source,
                })?
                .join(root)
        };
        let runtime = volatile::runtime_root(&root).map_err(|source| OpenError::Create {
            path: root.join("run"),
            source,
        })?;
        let containers = root.join("containers");
        std::fs::create_dir_all(&containers).map_err(|source| OpenError::Create {
            path: containers.clone(),
            source,
        })?;
        let store = ContentStore::new(root.join("content"))?;
        fsutil::purge_trash(&root);
        Ok(Engine {
            root,
            runtime,
            store,
            shim_exe: shim_exe.into(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every place libcontainer's state of container `id` may be, this engine's first.
    pub(crate) fn runtime_dirs(&self, id: &str) -> Vec<PathBuf> {
        volatile::runtime_dirs(&self.root, &self.runtime, id)
    }

    /// The OCI bundle directory (`config.json`) of container `id`: volatile too (only its
    /// shim and `berth exec` read it, while the container runs), else `containers/<id>/bundle`.
    pub(crate) fn bundle_dir(&self, id: &str) -> PathBuf {
        match volatile::sibling_dir(&self.runtime, "bundles") {
            Some(dir) => dir.join(id),
            None => self.root.join("containers").join(id).join("bundle"),
        }
    }

    /// Where the files bind-mounted on the container's `/etc/hosts`, `/etc/hostname` and
    /// `/etc/resolv.conf` are: volatile (written at each start, read by the container's
    /// mounts only), else the container's directory.
    pub(crate) fn etc_dir(&self, id: &str) -> PathBuf {
        match volatile::sibling_dir(&self.runtime, "etc") {
            Some(dir) => dir.join(id),
            None => self.root.join("containers").join(id),
        }
    }

    /// Removes the volatile directories of container `id` (bundle, `/etc` files); those
    /// inside its directory go with it.
    pub(crate) fn remove_volatile(&self, id: &str) -> std::io::Result<()> {
        let dir = self.root.join("containers").join(id);
        for d in [self.bundle_dir(id), self.etc_dir(id)] {
            if !d.starts_with(&dir) {
                fsutil::remove_dir_if_present(&d)?;
            }
        }
        Ok(())
    }

    /// The binary started as `<shim_exe> shim ...` per container (and `exec` by the agent).
    pub fn shim_exe(&self) -> &Path {
        &self.shim_exe
    }

    /// The content store.
    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    /// Takes the engine-wide lock (images.json, container names), released on drop.
    fn lock(&self) -> std::io::Result<Flock<File>> {
        fsutil::lock(&self.root.join("lock"))
    }
}
