//! Facts about the host that shape a spec: architecture (seccomp), CPU count (`--cpus`
//! range), the caller's hard `RLIMIT_NOFILE` (a container cannot be given more without
//! `CAP_SYS_RESOURCE`), the last capability the kernel knows, and whether cgroups are unified
//! (v2), where Docker gives each container its own cgroup namespace.
//!
//! [`build_spec`](super::build_spec) takes them as a value so it stays pure; [`HostInfo::detect`]
//! reads them from `/proc` and `/sys` once.

use std::path::Path;

use super::security::LAST_KNOWN_CAP;

/// Host facts used by [`build_spec`](super::build_spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// `std::env::consts::ARCH` of the host (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// CPUs available, the upper bound of `--cpus`.
    pub cpus: usize,
    /// The hard `RLIMIT_NOFILE` of the process that will start the container.
    pub nofile_hard: u64,
    /// `/proc/sys/kernel/cap_last_cap`.
    pub cap_last_cap: u8,
    /// `/sys/fs/cgroup` is a cgroup v2 (unified) hierarchy.
    pub cgroup_unified: bool,
    /// The caller's capability bounding set (`CapBnd`): "every capability" (`--privileged`,
    /// `--cap-add ALL`) means every one of these, since the runtime cannot grant others.
    pub cap_bounding: u64,
}

impl HostInfo {
    /// Reads the facts of this host and process. Anything unreadable falls back to a
    /// conservative value (logged): 1 CPU, nofile 1024, `cap_last_cap` 40, cgroup v1.
    pub fn detect() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot count cpus, assuming 1");
                1
            });
        let nofile_hard = match std::fs::read_to_string("/proc/self/limits") {
            Ok(text) => parse_nofile_hard(&text),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /proc/self/limits");
                None
            }
        }
        .unwrap_or(1024);
        let cap_last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u8>().ok())
            .unwrap_or_else(|| {
                tracing::warn!("cannot read /proc/sys/kernel/cap_last_cap");
                LAST_KNOWN_CAP
            });
        let cap_bounding = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_cap_bounding(&s))
            .unwrap_or(u64::MAX);
        Self {
            arch: std::env::consts::ARCH.to_string(),
            cpus,
            nofile_hard,
            cap_last_cap,
            cgroup_unified: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            cap_bounding,
        }
    }
}

/// The `CapBnd` mask of a `/proc/<pid>/status`.
pub fn parse_cap_bounding(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Directories of `/dev` whose nodes are not host devices to copy (runc's `HostDevices`).
const SKIPPED_DEV_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
/// Nodes the runtime makes itself.
const SKIPPED_DEV_NODES: &[&str] = &["console", "ptmx"];

/// Every character and block device under `/dev` (for `--privileged`, as Docker gives them),
/// without following links and without the runtime's own nodes.
pub fn host_devices() -> Vec<oci_spec::runtime::LinuxDevice> {
    let mut out = Vec::new();
    walk_devices(Path::new("/dev"), &mut out);
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

fn walk_devices(dir: &Path, out: &mut Vec<oci_spec::runtime::LinuxDevice>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if !SKIPPED_DEV_DIRS.contains(&name.as_ref()) {
                walk_devices(&entry.path(), out);
            }
            continue;
        }
        let typ = if ft.is_char_device() {
            oci_spec::runtime::LinuxDeviceType::C
        } else if ft.is_block_device() {
            oci_spec::runtime::LinuxDeviceType::B
        } else {
            continue;
        };
        if dir == Path::new("/dev") && SKIPPED_DEV_NODES.contains(&name.as_ref()) {
            continue;
        }
        let rdev = meta.rdev();
        let built = oci_spec::runtime::LinuxDeviceBuilder::default()
            .path(entry.path())
            .typ(typ)
            .major(libc::major(rdev) as i64)
            .minor(libc::minor(rdev) as i64)
            .file_mode(meta.mode() & 0o7777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build();
        if let Ok(d) = built {
            out.push(d);
        }
    }
}

/// The hard limit of the "Max open files" line of `/proc/<pid>/limits`
/// (`unlimited` is `u64::MAX`).
pub fn parse_nofile_hard(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let hard = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .nth(1)?;
    if hard == "unlimited" {
        Some(u64::MAX)
    } else {
        hard.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_limits() {
        let text = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max open files            1024                 20000                files     
Max locked memory         8388608              8388608              bytes     
";
        assert_eq!(parse_nofile_hard(text), Some(20000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile_hard(unlimited), Some(u64::MAX));
        assert_eq!(parse_nofile_hard("nothing here"), None);
    }

    #[test]
    fn parses_cap_bounding() {
        let status = "Name:\tx\nCapPrm:\t0\nCapBnd:\t000001fffeffffff\nCapAmb:\t0\n";
        assert_eq!(parse_cap_bounding(status), Some(0x1fffeffffff));
        assert_eq!(parse_cap_bounding("nothing"), None);
    }

    #[test]
    fn host_devices_include_null_but_not_pts() {
        let devs = host_devices();
        let null = devs
            .iter()
            .find(|d| d.path() == Path::new("/dev/null"))
            .expect("/dev/null");
        assert_eq!((null.major(), null.minor()), (1, 3));
        assert_eq!(null.typ(), oci_spec::runtime::LinuxDeviceType::C);
        assert!(devs.iter().all(|d| !d.path().starts_with("/dev/pts")
            && d.path() != Path::new("/dev/ptmx")
            && d.path() != Path::new("/dev/console")));
    }

    #[test]
    fn detect_reads_this_host() {
        let host = HostInfo::detect();
        assert_eq!(host.arch, std::env::consts::ARCH);
        assert!(host.cpus >= 1);
        assert!(host.nofile_hard >= 1);
    }
}
