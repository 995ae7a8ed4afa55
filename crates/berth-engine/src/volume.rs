//! Volumes: `-v SRC:DST[:ro|rw]`, named and anonymous volumes, `berth volume ...`.
//!
//! A named volume is `volumes/<name>/_data` (Docker's layout) with `volumes/<name>/volume.json`.
//! `-v NAME:DST` creates the volume on first use; `-v DST` and the image's `VOLUME`s get an
//! anonymous volume (a random 64-hex name), removed with the container by `rm -v` and `--rm`.
//! A volume that is empty when a container first mounts it is filled with what the image has at
//! that path (Docker's copy-up), ownership and modes included. `-v /host/path:DST` bind-mounts a
//! host path, created as a directory when missing (as Docker does).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::container::{generate_id, valid_name, ContainerError};
use crate::{fsutil, Engine};

const VOLUME_RECORD: &str = "volume.json";
/// Copy-up stops at this depth (a guard against pathological trees).
const MAX_DEPTH: usize = 256;

/// `volumes/<name>/volume.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub created: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Created for a container's `-v DST` or an image `VOLUME`.
    #[serde(default)]
    pub anonymous: bool,
}

/// A volume with where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub record: VolumeRecord,
    pub mountpoint: PathBuf,
}

/// One mount of a container, as recorded (and shown by `inspect` as `Mounts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Volume name (volumes only).
    #[serde(rename = "Name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host path.
    #[serde(rename = "Source")]
    pub source: String,
    #[serde(rename = "Destination")]
    pub destination: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    /// Anonymous volumes go with the container.
    #[serde(rename = "Anonymous", default)]
    pub anonymous: bool,
}

/// A parsed `-v` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSpec {
    Bind {
        source: PathBuf,
        destination: String,
        readonly: bool,
    },
    Named {
        name: String,
        destination: String,
        readonly: bool,
    },
    Anonymous {
        destination: String,
    },
}

impl VolumeSpec {
    pub fn destination(&self) -> &str {
        match self {
            VolumeSpec::Bind { destination, .. }
            | VolumeSpec::Named { destination, .. }
            | VolumeSpec::Anonymous { destination } => destination,
        }
    }
}

/// Parses `SRC:DST[:OPTS]` or `DST` (Docker's `-v` syntax; options `ro`, `rw`, and the
/// propagation/SELinux ones Docker accepts, which are ignored here).
pub fn parse_volume(s: &str) -> Result<VolumeSpec, ContainerError> {
    let bad =
        |why: &str| ContainerError::Volume(format!("invalid volume specification {s:?}: {why}"));
    let parts: Vec<&str> = s.split(':').collect();
    let (source, destination, opts) = match parts.as_slice() {
        [dst] => (None, *dst, ""),
        [src, dst] => (Some(*src), *dst, ""),
        [src, dst, opts] => (Some(*src), *dst, *opts),
        _ => return Err(bad("too many colons")),
    };
    if !destination.starts_with('/') {
        return Err(bad("the destination must be an absolute path"));
    }
    if destination == "/" {
        return Err(bad("the destination cannot be /"));
    }
    let mut readonly = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "readonly" => readonly = true,
            "rw" => readonly = false,
            "z" | "Z" | "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "nocopy" => {}
            other => return Err(bad(&format!("unknown option {other:?}"))),
        }
    }
    let destination = destination.to_string();
    Ok(match source {
        None => VolumeSpec::Anonymous { destination },
        Some("") => return Err(bad("empty source")),
        Some(src) if src.starts_with('/') => VolumeSpec::Bind {
            source: PathBuf::from(src),
            destination,
            readonly,
        },
        Some(src) if src.starts_with('.') || src.starts_with('~') => {
            return Err(bad("a host path must be absolute"))
        }
        Some(name) => {
            if !valid_name(name) {
                return Err(bad(&format!(
                    "{name:?} is not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
                )));
            }
            VolumeSpec::Named {
                name: name.to_string(),
                destination,
                readonly,
            }
        }
    })
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl Engine {
    fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    fn read_volume(&self, name: &str) -> Result<VolumeInfo, ContainerError> {
        let dir = self.volumes_dir().join(name);
        let path = dir.join(VOLUME_RECORD);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContainerError::NoSuchVolume(name.to_string()))
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let record: VolumeRecord = serde_json::from_slice(&data)
            .map_err(|source| ContainerError::Record { path, source })?;
        Ok(VolumeInfo {
            record,
            mountpoint: dir.join("_data"),
        })
    }

    /// `berth volume create [NAME]`: creates the volume (or returns the existing one).
    pub fn volume_create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeInfo, ContainerError> {
        let anonymous = name.is_none();
        let name = match name {
            Some(n) if valid_name(n) => n.to_string(),
            Some(n) => {
                return Err(ContainerError::Volume(format!(
                    "{n:?} is not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
                )))
            }
            None => generate_id(),
        };
        let _lock = self.lock().map_err(io_err("lock", &self.root))?;
        match self.read_volume(&name) {
            Ok(v) => return Ok(v),
            Err(ContainerError::NoSuchVolume(_)) => {}
            Err(e) => return Err(e),
        }
        let dir = self.volumes_dir().join(&name);
        let data = dir.join("_data");
        fs::create_dir_all(&data).map_err(io_err("create", &data))?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &data))?;
        let record = VolumeRecord {
            name: name.clone(),
            created: fsutil::now(),
            labels,
            anonymous,
        };
        let bytes = serde_json::to_vec_pretty(&record).map_err(|e| ContainerError::Io {
            what: "encode",
            path: dir.join(VOLUME_RECORD),
            source: io::Error::other(e),
        })?;
        let path = dir.join(VOLUME_RECORD);
        fsutil::write_atomic(&path, &bytes).map_err(io_err("write", &path))?;
        tracing::debug!(%name, "volume created");
        Ok(VolumeInfo {
            record,
            mountpoint: data,
        })
    }

    /// `berth volume ls`.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, ContainerError> {
        let dir = self.volumes_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read", &dir))?;
            if let Some(name) = entry.file_name().to_str() {
                match self.read_volume(name) {
                    Ok(v) => out.push(v),
                    Err(ContainerError::NoSuchVolume(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(out)
    }

    /// `berth volume inspect`.
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, ContainerError> {
        self.read_volume(name)
    }

    /// Containers (ids) that mount volume `name`.
    fn volume_users(&self, name: &str) -> Result<Vec<String>, ContainerError> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| r.mounts.iter().any(|m| m.name.as_deref() == Some(name)))
            .map(|r| r.id)
            .collect())
    }

    /// `berth volume rm`: refuses while a container (even a stopped one) uses it, unless `force`.
    pub fn volume_remove(&self, name: &str, force: bool) -> Result<(), ContainerError> {
        self.read_volume(name)?;
        let users = self.volume_users(name)?;
        if !users.is_empty() && !force {
            return Err(ContainerError::Volume(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        let dir = self.volumes_dir().join(name);
        fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))
    }

    /// `berth volume prune`: removes volumes no container uses; returns their names.
    pub fn volume_prune(&self, all: bool) -> Result<Vec<String>, ContainerError> {
        let mut removed = Vec::new();
        for v in self.volumes()? {
            if !all && !v.record.anonymous {
                continue;
            }
            if self.volume_users(&v.record.name)?.is_empty() {
                self.volume_remove(&v.record.name, false)?;
                removed.push(v.record.name);
            }
        }
        Ok(removed)
    }

    /// Resolves the `-v` values and the image's `VOLUME`s of a container about to start into
    /// mounts, creating volumes and bind sources and copying image content into empty volumes.
    pub(crate) fn prepare_volumes(
        &self,
        specs: &[VolumeSpec],
        image_volumes: &[String],
        rootfs: &Path,
    ) -> Result<Vec<MountRecord>, ContainerError> {
        let mut specs = specs.to_vec();
        for v in image_volumes {
            let dst = v.trim_end_matches('/');
            if dst.is_empty()
                || specs
                    .iter()
                    .any(|s| s.destination().trim_end_matches('/') == dst)
            {
                continue;
            }
            specs.push(VolumeSpec::Anonymous {
                destination: dst.to_string(),
            });
        }
        let mut out = Vec::new();
        for spec in &specs {
            let m = match spec {
                VolumeSpec::Bind {
                    source,
                    destination,
                    readonly,
                } => {
                    if !source.exists() {
                        fs::create_dir_all(source).map_err(io_err("create", source))?;
                    }
                    MountRecord {
                        kind: "bind".into(),
                        name: None,
                        source: source.display().to_string(),
                        destination: destination.clone(),
                        rw: !readonly,
                        anonymous: false,
                    }
                }
                VolumeSpec::Named {
                    name,
                    destination,
                    readonly,
                } => {
                    let v = self.volume_create(Some(name), BTreeMap::new())?;
                    copy_up(rootfs, destination, &v.mountpoint)?;
                    MountRecord {
                        kind: "volume".into(),
                        name: Some(name.clone()),
                        source: v.mountpoint.display().to_string(),
                        destination: destination.clone(),
                        rw: !readonly,
                        anonymous: false,
                    }
                }
                VolumeSpec::Anonymous { destination } => {
                    let v = self.volume_create(None, BTreeMap::new())?;
                    copy_up(rootfs, destination, &v.mountpoint)?;
                    MountRecord {
                        kind: "volume".into(),
                        name: Some(v.record.name.clone()),
                        source: v.mountpoint.display().to_string(),
                        destination: destination.clone(),
                        rw: true,
                        anonymous: true,
                    }
                }
            };
            out.push(m);
        }
        Ok(out)
    }

    /// Removes the anonymous volumes of a removed container (`rm -v`, `--rm`).
    pub(crate) fn remove_anonymous_volumes(&self, mounts: &[MountRecord]) {
        for m in mounts.iter().filter(|m| m.anonymous) {
            if let Some(name) = &m.name {
                if let Err(e) = self.volume_remove(name, false) {
                    tracing::warn!(volume = %name, error = %e, "cannot remove anonymous volume");
                }
            }
        }
    }
}

/// Copies what the image has at `destination` into the volume directory `data` when `data` is
/// empty. Never follows a symlink: the source is resolved inside `rootfs` and walked with
/// `symlink_metadata`.
fn copy_up(rootfs: &Path, destination: &str, data: &Path) -> Result<(), ContainerError> {
    let empty = fs::read_dir(data)
        .map_err(io_err("read", data))?
        .next()
        .is_none();
    if !empty {
        return Ok(());
    }
    let Ok(src) = berth_runtime::spec::user::resolve_in_root(rootfs, Path::new(destination)) else {
        return Ok(());
    };
    match fs::symlink_metadata(&src) {
        Ok(m) if m.is_dir() => {
            // The volume root takes the image directory's owner and mode.
            lchown(data, Some(m.uid()), Some(m.gid())).map_err(io_err("chown", data))?;
            fs::set_permissions(data, fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(io_err("chmod", data))?;
            copy_tree(&src, data, 0)
        }
        _ => Ok(()),
    }
}

fn copy_tree(src: &Path, dst: &Path, depth: usize) -> Result<(), ContainerError> {
    if depth > MAX_DEPTH {
        return Err(ContainerError::Volume(format!(
            "{} is nested too deeply to copy into a volume",
            src.display()
        )));
    }
    for entry in fs::read_dir(src).map_err(io_err("read", src))? {
        let entry = entry.map_err(io_err("read", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(io_err("stat", &from))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(io_err("create", &to))?;
            copy_tree(&from, &to, depth + 1)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(io_err("readlink", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("symlink", &to))?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(io_err("copy", &from))?;
        } else {
            // Devices, fifos and sockets are not copied (Docker copies them; nothing needs it
            // here, and creating device nodes in a volume is better left out).
            continue;
        }
        lchown(&to, Some(meta.uid()), Some(meta.gid())).map_err(io_err("chown", &to))?;
        if !ft.is_symlink() {
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err("chmod", &to))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_syntax() {
        assert_eq!(
            parse_volume("/srv:/data:ro").expect("bind"),
            VolumeSpec::Bind {
                source: "/srv".into(),
                destination: "/data".into(),
                readonly: true
            }
        );
        assert_eq!(
            parse_volume("cache:/var/cache").expect("named"),
            VolumeSpec::Named {
                name: "cache".into(),
                destination: "/var/cache".into(),
                readonly: false
            }
        );
        assert_eq!(
            parse_volume("/scratch").expect("anon"),
            VolumeSpec::Anonymous {
                destination: "/scratch".into()
            }
        );
        for bad in [
            "rel/path",
            "a:b",
            "x:/d:bogus",
            "./x:/d",
            ":/d",
            "a:/b:ro:x",
            "v:/",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }
}
