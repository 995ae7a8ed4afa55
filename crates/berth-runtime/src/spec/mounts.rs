//! The container's mounts: Docker's standard ones (`/proc`, `/dev`, `/dev/pts`, `/dev/shm`,
//! `/dev/mqueue`, `/sys`, `/sys/fs/cgroup`), the user's (`-v`, named volumes, `--tmpfs`) and the
//! engine-written `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, merged as moby's
//! `WithMounts` does. Also the content of `/etc/hosts` and `/etc/hostname`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

/// Errors of mount options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// A destination that is relative, `/`, or climbs with `..`.
    #[error(
        "invalid mount destination {0:?}: it must be an absolute path other than / without .."
    )]
    Destination(String),
    /// A bind source that is not an absolute host path.
    #[error("invalid bind mount source {0:?}: it must be an absolute host path")]
    Source(PathBuf),
    /// An option `--tmpfs` does not accept.
    #[error("invalid tmpfs option {0:?}")]
    TmpfsOption(String),
    /// Two user mounts at the same place.
    #[error("duplicate mount point {0}")]
    Duplicate(String),
}

/// A mount asked for by the user. Named volumes are resolved by the caller to a host
/// directory and given as [`MountSpec::Bind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// `-v SRC:DST[:ro]`: a recursive, private bind mount of a host path.
    Bind {
        /// Absolute host path.
        source: PathBuf,
        /// Absolute path in the container.
        destination: String,
        /// `:ro`.
        readonly: bool,
    },
    /// `--tmpfs DST[:OPTIONS]`: a tmpfs, `noexec,nosuid,nodev` unless the options say otherwise.
    Tmpfs {
        /// Absolute path in the container.
        destination: String,
        /// Comma-separated mount options (`size=64m,mode=1777,exec`...), may be empty.
        options: String,
    },
}

impl MountSpec {
    fn destination(&self) -> &str {
        match self {
            MountSpec::Bind { destination, .. } | MountSpec::Tmpfs { destination, .. } => {
                destination
            }
        }
    }
}

/// Host files the engine wrote for the container, bind-mounted over the image's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcFiles {
    /// Mounted at `/etc/hosts` (see [`hosts_file`]).
    pub hosts: Option<PathBuf>,
    /// Mounted at `/etc/hostname` (see [`hostname_file`]).
    pub hostname: Option<PathBuf>,
    /// Mounted at `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
}

/// An `--add-host NAME:IP` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraHost {
    /// Host name(s), space-separated if several share the address.
    pub name: String,
    /// Its address.
    pub ip: IpAddr,
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// Docker's standard mounts (moby `oci.DefaultLinuxSpec`, `/dev/shm` sized as with the
/// default `private` IPC mode). Privileged containers get `/sys` and the cgroup tree
/// read-write.
pub fn default_mounts(privileged: bool, shm_size: u64) -> Vec<Mount> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    let shm_size = format!("size={shm_size}");
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        ),
    ]
}

/// Checks and normalises a destination: absolute, not `/`, no `..`; `.` and repeated or
/// trailing slashes removed.
pub fn clean_destination(destination: &str) -> Result<String, MountError> {
    let bad = || MountError::Destination(destination.to_string());
    let path = Path::new(destination);
    if !path.is_absolute() {
        return Err(bad());
    }
    let mut clean = String::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => {
                clean.push('/');
                clean.push_str(part.to_str().ok_or_else(bad)?);
            }
            Component::ParentDir | Component::Prefix(_) => return Err(bad()),
        }
    }
    if clean.is_empty() {
        return Err(bad());
    }
    Ok(clean)
}

/// Option groups where a later option overrides an earlier one (moby's
/// `MergeTmpfsOptions`). Propagation flags form one group.
const FLAG_GROUPS: &[&[&str]] = &[
    &["ro", "rw"],
    &["suid", "nosuid"],
    &["dev", "nodev"],
    &["exec", "noexec"],
    &["sync", "async"],
    &["dirsync"],
    &["remount"],
    &["mand", "nomand"],
    &["atime", "noatime"],
    &["diratime", "nodiratime"],
    &["relatime", "norelatime"],
    &["strictatime", "nostrictatime"],
    &[
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
    ],
];

/// `key=value` options a tmpfs accepts.
const TMPFS_DATA: &[&str] = &[
    "size",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];

/// Merges `--tmpfs` options over Docker's defaults (`noexec,nosuid,nodev,rprivate`): for each
/// flag group or data key, the last occurrence wins; `defaults` is ignored.
pub fn tmpfs_options(user: &str) -> Result<Vec<String>, MountError> {
    let mut all: Vec<&str> = vec!["noexec", "nosuid", "nodev", "rprivate"];
    all.extend(user.split(',').map(str::trim).filter(|o| !o.is_empty()));
    let mut seen_groups: HashSet<usize> = HashSet::new();
    let mut seen_keys: HashSet<&str> = HashSet::new();
    let mut merged: Vec<String> = Vec::new();
    for option in all.iter().rev() {
        if *option == "defaults" {
            continue;
        }
        if let Some(group) = FLAG_GROUPS.iter().position(|g| g.contains(option)) {
            if seen_groups.insert(group) {
                merged.push(option.to_string());
            }
            continue;
        }
        match option.split_once('=') {
            Some((key, _)) if TMPFS_DATA.contains(&key) => {
                if seen_keys.insert(key) {
                    merged.push(option.to_string());
                }
            }
            _ => return Err(MountError::TmpfsOption(option.to_string())),
        }
    }
    merged.reverse();
    Ok(merged)
}

fn bind(source: &Path, destination: &str, readonly: bool) -> Mount {
    let mut options = vec!["rbind".to_string()];
    if readonly {
        options.push("ro".to_string());
    }
    options.push("rprivate".to_string());
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some("bind".to_string()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options));
    m
}

/// All mounts of the container, as moby's `WithMounts` orders them: the standard mounts that
/// no user mount replaces (a user `/dev` also replaces everything under `/dev`), then the user
/// mounts and the `/etc` files sorted by depth so parents come before children.
/// `/etc` files the user mounted over are left out; they are read-only with a read-only rootfs.
pub fn container_mounts(
    privileged: bool,
    shm_size: u64,
    user: &[MountSpec],
    etc: &EtcFiles,
    readonly_rootfs: bool,
) -> Result<Vec<Mount>, MountError> {
    let mut extra: Vec<(String, Mount)> = Vec::new();
    let mut destinations: HashSet<String> = HashSet::new();
    for spec in user {
        let destination = clean_destination(spec.destination())?;
        if !destinations.insert(destination.clone()) {
            return Err(MountError::Duplicate(destination));
        }
        let m = match spec {
            MountSpec::Bind {
                source, readonly, ..
            } => {
                if !source.is_absolute() {
                    return Err(MountError::Source(source.clone()));
                }
                bind(source, &destination, *readonly)
            }
            MountSpec::Tmpfs { options, .. } => {
                let mut m = Mount::default();
                m.set_destination(PathBuf::from(&destination));
                m.set_typ(Some("tmpfs".to_string()));
                m.set_source(Some(PathBuf::from("tmpfs")));
                m.set_options(Some(tmpfs_options(options)?));
                m
            }
        };
        extra.push((destination, m));
    }
    let etc_files = [
        ("/etc/resolv.conf", &etc.resolv_conf),
        ("/etc/hostname", &etc.hostname),
        ("/etc/hosts", &etc.hosts),
    ];
    for (destination, source) in etc_files {
        if let Some(source) = source {
            if destinations.contains(destination) {
                continue;
            }
            if !source.is_absolute() {
                return Err(MountError::Source(source.clone()));
            }
            extra.push((
                destination.to_string(),
                bind(source, destination, readonly_rootfs),
            ));
        }
    }
    // Stable sort by depth: parents before children, otherwise the user's order.
    extra.sort_by_key(|(d, _)| d.matches('/').count());

    let user_dev = destinations.contains("/dev");
    let mut mounts: Vec<Mount> = default_mounts(privileged, shm_size)
        .into_iter()
        .filter(|m| {
            let d = m.destination().to_string_lossy();
            let replaced = destinations.contains(d.as_ref());
            let under_user_dev = user_dev && d.starts_with("/dev/");
            !replaced && !under_user_dev
        })
        .collect();
    mounts.extend(extra.into_iter().map(|(_, m)| m));
    Ok(mounts)
}

/// The content of `/etc/hosts`, as Docker writes it: the standard localhost and IPv6
/// entries, then `--add-host` entries, then the container's own addresses with its
/// hostname (and its short name if the hostname has a domain).
pub fn hosts_file(hostname: &str, own_ips: &[IpAddr], extra: &[ExtraHost]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::\tip6-localnet\n\
         ff00::\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for h in extra {
        let _ = writeln!(out, "{}\t{}", h.ip, h.name);
    }
    let names = match hostname.split_once('.') {
        Some((short, _)) if !short.is_empty() => format!("{hostname} {short}"),
        _ => hostname.to_string(),
    };
    if !hostname.is_empty() {
        for ip in own_ips {
            let _ = writeln!(out, "{ip}\t{names}");
        }
    }
    out
}

/// The content of `/etc/hostname`.
pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(mounts: &[Mount]) -> Vec<String> {
        mounts
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect()
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn bind_spec(source: &str, destination: &str, readonly: bool) -> MountSpec {
        MountSpec::Bind {
            source: PathBuf::from(source),
            destination: destination.to_string(),
            readonly,
        }
    }

    #[test]
    fn standard_mounts() {
        let m = default_mounts(false, 64 << 20);
        assert_eq!(
            dests(&m),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm"
            ]
        );
        assert!(opts(&m[3]).contains(&"ro".to_string()));
        assert!(opts(&m[4]).contains(&"ro".to_string()));
        assert!(opts(&m[6]).contains(&"size=67108864".to_string()));
        assert_eq!(m[6].source().as_deref(), Some(Path::new("shm")));
        let p = default_mounts(true, 1);
        assert!(opts(&p[3]).contains(&"rw".to_string()));
        assert!(opts(&p[4]).contains(&"rw".to_string()));
    }

    #[test]
    fn destinations_are_cleaned_and_checked() {
        assert_eq!(clean_destination("/data/").unwrap(), "/data");
        assert_eq!(clean_destination("//a/./b").unwrap(), "/a/b");
        for bad in ["data", "/", "/a/../etc", "", "./x"] {
            assert!(clean_destination(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bind_mounts_are_rbind_rprivate() {
        let m = container_mounts(
            false,
            1,
            &[
                bind_spec("/srv/a", "/a", false),
                bind_spec("/srv/b", "/b", true),
            ],
            &EtcFiles::default(),
            false,
        )
        .unwrap();
        let a = &m[7];
        assert_eq!(a.typ().as_deref(), Some("bind"));
        assert_eq!(a.source().as_deref(), Some(Path::new("/srv/a")));
        assert_eq!(opts(a), ["rbind", "rprivate"]);
        assert_eq!(opts(&m[8]), ["rbind", "ro", "rprivate"]);
    }

    #[test]
    fn relative_bind_source_is_refused() {
        assert_eq!(
            container_mounts(
                false,
                1,
                &[bind_spec("srv", "/a", false)],
                &EtcFiles::default(),
                false
            ),
            Err(MountError::Source(PathBuf::from("srv")))
        );
    }

    #[test]
    fn duplicate_destinations_are_refused() {
        let err = container_mounts(
            false,
            1,
            &[bind_spec("/x", "/a", false), bind_spec("/y", "/a/", false)],
            &EtcFiles::default(),
            false,
        )
        .unwrap_err();
        assert_eq!(err, MountError::Duplicate("/a".to_string()));
    }

    #[test]
    fn user_mounts_replace_standard_ones_and_sort_by_depth() {
        let m = container_mounts(
            false,
            1,
            &[
                bind_spec("/h/deep", "/data/deep", false),
                MountSpec::Tmpfs {
                    destination: "/dev/shm".to_string(),
                    options: "size=1m".to_string(),
                },
                bind_spec("/h/data", "/data", false),
            ],
            &EtcFiles::default(),
            false,
        )
        .unwrap();
        assert_eq!(
            dests(&m),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/data",
                "/data/deep",
                "/dev/shm"
            ]
        );
        let shm = &m[8];
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            opts(shm),
            ["noexec", "nosuid", "nodev", "rprivate", "size=1m"]
        );
    }

    #[test]
    fn user_dev_replaces_everything_under_dev() {
        let m = container_mounts(
            false,
            1,
            &[bind_spec("/dev", "/dev", false)],
            &EtcFiles::default(),
            false,
        )
        .unwrap();
        assert_eq!(dests(&m), ["/proc", "/sys", "/sys/fs/cgroup", "/dev"]);
    }

    #[test]
    fn etc_files_are_bound_unless_the_user_mounts_them() {
        let etc = EtcFiles {
            hosts: Some(PathBuf::from("/run/c/hosts")),
            hostname: Some(PathBuf::from("/run/c/hostname")),
            resolv_conf: Some(PathBuf::from("/run/c/resolv.conf")),
        };
        let m = container_mounts(false, 1, &[], &etc, false).unwrap();
        assert_eq!(
            dests(&m)[7..],
            ["/etc/resolv.conf", "/etc/hostname", "/etc/hosts"]
        );
        assert_eq!(opts(&m[9]), ["rbind", "rprivate"]);
        let m = container_mounts(
            false,
            1,
            &[bind_spec("/mine", "/etc/hosts", true)],
            &etc,
            true,
        )
        .unwrap();
        let hosts: Vec<&Mount> = m
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/mine")));
        // Read-only rootfs: the engine's files are read-only too.
        let resolv = m
            .iter()
            .find(|m| m.destination() == Path::new("/etc/resolv.conf"))
            .unwrap();
        assert_eq!(opts(resolv), ["rbind", "ro", "rprivate"]);
    }

    #[test]
    fn tmpfs_options_merge_like_docker() {
        assert_eq!(
            tmpfs_options("").unwrap(),
            ["noexec", "nosuid", "nodev", "rprivate"]
        );
        assert_eq!(
            tmpfs_options("exec,size=64m,mode=1770,size=128m").unwrap(),
            [
                "nosuid",
                "nodev",
                "rprivate",
                "exec",
                "mode=1770",
                "size=128m"
            ]
        );
        assert_eq!(
            tmpfs_options("defaults, rw ,suid").unwrap(),
            ["noexec", "nodev", "rprivate", "rw", "suid"]
        );
        assert_eq!(
            tmpfs_options("bogus").unwrap_err(),
            MountError::TmpfsOption("bogus".to_string())
        );
        assert!(tmpfs_options("color=red").is_err());
    }

    #[test]
    fn hosts_file_content() {
        let text = hosts_file(
            "web.example.com",
            &["172.17.0.2".parse().unwrap()],
            &[ExtraHost {
                name: "db".to_string(),
                ip: "10.0.0.5".parse().unwrap(),
            }],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "127.0.0.1\tlocalhost");
        assert_eq!(lines[1], "::1\tlocalhost ip6-localhost ip6-loopback");
        assert_eq!(lines[6], "10.0.0.5\tdb");
        assert_eq!(lines[7], "172.17.0.2\tweb.example.com web");
        assert_eq!(lines.len(), 8);
        assert_eq!(hosts_file("c1", &[], &[]).lines().count(), 6);
        assert_eq!(hostname_file("c1"), "c1\n");
    }
}
