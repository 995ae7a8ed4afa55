//! What the shim needs from cgroups beyond libcontainer: the container's directories on every
//! mounted hierarchy (v1 controllers, named v1 hierarchies, the v2 mount — on a "hybrid" host
//! that is `/sys/fs/cgroup/unified`, on a pure v2 host `/sys/fs/cgroup` itself), the kernel's
//! OOM-kill counter, and removing the directories libcontainer leaves behind.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const MOUNTINFO: &str = "/proc/self/mountinfo";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup path {0:?} is not a plain path below the cgroup root")]
    InvalidPath(PathBuf),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove cgroup directory {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// cgroup2 (unified) rather than a v1 hierarchy.
    pub unified: bool,
    /// v1: the controllers (and `name=...`) in the mount options; v2: empty.
    pub options: Vec<String>,
}

impl CgroupMount {
    pub fn has_controller(&self, name: &str) -> bool {
        self.options.iter().any(|o| o == name)
    }
}

/// Undoes the octal escapes (`\040` for space, ...) of /proc/self/mountinfo paths.
fn unescape_mount_path(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The cgroup hierarchies in a /proc/self/mountinfo text, each once (first mount wins).
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts: Vec<CgroupMount> = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = pre.split(' ').nth(4) else {
            continue;
        };
        let mut post = post.split(' ');
        let (Some(fstype), Some(_source), Some(super_opts)) =
            (post.next(), post.next(), post.next())
        else {
            continue;
        };
        let mount = match fstype {
            "cgroup2" => CgroupMount {
                mount_point: unescape_mount_path(mount_point),
                unified: true,
                options: Vec::new(),
            },
            "cgroup" => {
                let mut options: Vec<String> = super_opts
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent="))
                    .map(str::to_owned)
                    .collect();
                options.sort();
                CgroupMount {
                    mount_point: unescape_mount_path(mount_point),
                    unified: false,
                    options,
                }
            }
            _ => continue,
        };
        if !mounts
            .iter()
            .any(|m| m.unified == mount.unified && m.options == mount.options)
        {
            mounts.push(mount);
        }
    }
    mounts
}

/// The cgroup hierarchies mounted in this process's mount namespace.
pub fn mounts() -> Result<Vec<CgroupMount>, CgroupError> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|source| CgroupError::Read {
        path: PathBuf::from(MOUNTINFO),
        source,
    })?;
    Ok(parse_mountinfo(&text))
}

/// `cgroups_path` of a spec as a relative path below a hierarchy's root (as libcgroups joins it).
pub fn relative_path(cgroups_path: &Path) -> Result<PathBuf, CgroupError> {
    let mut rel = PathBuf::new();
    for c in cgroups_path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::InvalidPath(cgroups_path.to_path_buf()))
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(CgroupError::InvalidPath(cgroups_path.to_path_buf()));
    }
    Ok(rel)
}

/// The directory of `cgroups_path` in every mounted hierarchy (whether it exists or not).
pub fn dirs(mounts: &[CgroupMount], cgroups_path: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let rel = relative_path(cgroups_path)?;
    Ok(mounts.iter().map(|m| m.mount_point.join(&rel)).collect())
}

/// The value of `key` in a flat-keyed cgroup file (`memory.events`, `memory.oom_control`).
pub fn flat_keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// How many processes the kernel OOM-killed in the cgroup: v1 `memory.oom_control`, else v2
/// `memory.events` (`oom_kill`). `None` when neither file exists (no memory controller).
pub fn oom_kill_count(
    mounts: &[CgroupMount],
    cgroups_path: &Path,
) -> Result<Option<u64>, CgroupError> {
    let rel = relative_path(cgroups_path)?;
    let candidates = mounts.iter().filter_map(|m| {
        if m.unified {
            Some(m.mount_point.join(&rel).join("memory.events"))
        } else if m.has_controller("memory") {
            Some(m.mount_point.join(&rel).join("memory.oom_control"))
        } else {
            None
        }
    });
    for path in candidates {
        match fs::read_to_string(&path) {
            Ok(text) => return Ok(Some(flat_keyed_value(&text, "oom_kill").unwrap_or(0))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(CgroupError::Read { path, source }),
        }
    }
    Ok(None)
}

fn kill_procs(dir: &Path) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Removes a cgroup directory and its descendants (deepest first), SIGKILLing what is still in
/// them and retrying while the kernel reports them busy (about 2 s at most per directory).
pub fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    let mut delay = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), "removed cgroup directory");
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && waited < Duration::from_secs(2) => {
                kill_procs(dir);
                std::thread::sleep(delay);
                waited += delay;
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Removes the directories of `cgroups_path` in every mounted hierarchy. Every directory is
/// tried; the first error is returned.
pub fn remove_all(mounts: &[CgroupMount], cgroups_path: &Path) -> Result<(), CgroupError> {
    let mut first_err = None;
    for dir in dirs(mounts, cgroups_path)? {
        if let Err(e) = remove_tree(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove cgroup directory");
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The CFS period used for CPU limits of parent cgroups (100 ms, as Docker and the ECS agent).
pub const CFS_PERIOD_US: u64 = 100_000;

/// Limits of a parent cgroup (a task sandbox) that bind all the containers below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParentLimits {
    /// CFS quota in microseconds per [`CFS_PERIOD_US`] (`None`: unlimited).
    pub cpu_quota_us: Option<u64>,
    /// Hard memory limit in bytes (`None`: unlimited).
    pub memory_bytes: Option<i64>,
}

impl ParentLimits {
    /// ECS CPU units (1024 = one CPU) as a CFS quota (at least 1 ms, the kernel's minimum).
    pub fn quota_for_cpu_units(units: u64) -> u64 {
        (units.saturating_mul(CFS_PERIOD_US) / 1024).max(1000)
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(path).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The controllers a cgroup2 directory offers (`cgroup.controllers`).
fn v2_controllers(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let path = dir.join("cgroup.controllers");
    let text = fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

/// Creates the parent cgroup `cgroups_path` (a task sandbox) and writes its limits: on v1
/// `memory.limit_in_bytes` in the memory hierarchy and `cpu.cfs_period_us`/`cpu.cfs_quota_us`
/// in the cpu one (other hierarchies get their directories when a container joins; libcgroups
/// fills cpuset's from the parents); on a cgroup2 mount that offers them, `memory.max` and
/// `cpu.max`, after enabling the controllers in every ancestor's `cgroup.subtree_control`.
/// Idempotent: an existing directory gets its limits written again.
pub fn create_parent(
    mounts: &[CgroupMount],
    cgroups_path: &Path,
    limits: &ParentLimits,
) -> Result<(), CgroupError> {
    let rel = relative_path(cgroups_path)?;
    let memory = limits
        .memory_bytes
        .map_or_else(|| "max".to_string(), |b| b.to_string());
    let cpu = limits
        .cpu_quota_us
        .map_or_else(|| "max".to_string(), |q| q.to_string());
    for m in mounts {
        let dir = m.mount_point.join(&rel);
        if m.unified {
            let available = v2_controllers(&m.mount_point)?;
            let wanted: Vec<&str> = ["cpu", "memory"]
                .into_iter()
                .filter(|c| available.iter().any(|a| a == c))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let enable: String = wanted
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            let mut current = m.mount_point.clone();
            for c in rel.components() {
                write_file(&current.join("cgroup.subtree_control"), &enable)?;
                current.push(c);
                create_dir(&current)?;
            }
            if wanted.contains(&"memory") {
                write_file(&dir.join("memory.max"), &memory)?;
            }
            if wanted.contains(&"cpu") {
                write_file(&dir.join("cpu.max"), &format!("{cpu} {CFS_PERIOD_US}"))?;
            }
        } else {
            if m.has_controller("memory") {
                create_dir(&dir)?;
                write_file(
                    &dir.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.unwrap_or(-1).to_string(),
                )?;
            }
            if !m.has_controller("cpu") {
                continue;
            }
            create_dir(&dir)?;
            write_file(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
            let quota = limits
                .cpu_quota_us
                .and_then(|q| i64::try_from(q).ok())
                .unwrap_or(-1);
            write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
    }
    Ok(())
}

/// The limits in force in the parent cgroup `cgroups_path` (`None` when unlimited or when the
/// hierarchy lacks the controller), read back from the files [`create_parent`] writes.
pub fn read_parent_limits(
    mounts: &[CgroupMount],
    cgroups_path: &Path,
) -> Result<ParentLimits, CgroupError> {
    let rel = relative_path(cgroups_path)?;
    let read = |path: PathBuf| -> Result<Option<String>, CgroupError> {
        match fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CgroupError::Read { path, source }),
        }
    };
    let mut out = ParentLimits::default();
    for m in mounts {
        let dir = m.mount_point.join(&rel);
        if m.unified {
            if let Some(v) = read(dir.join("memory.max"))? {
                out.memory_bytes = out.memory_bytes.or(v.parse().ok());
            }
            if let Some(v) = read(dir.join("cpu.max"))? {
                let q = v.split_whitespace().next().and_then(|q| q.parse().ok());
                out.cpu_quota_us = out.cpu_quota_us.or(q);
            }
        } else {
            if m.has_controller("memory") {
                if let Some(v) = read(dir.join("memory.limit_in_bytes"))? {
                    // v1 shows "unlimited" as a huge page-rounded number.
                    let b: Option<i64> = v.parse().ok().filter(|b| *b < i64::MAX / 2);
                    out.memory_bytes = out.memory_bytes.or(b);
                }
            }
            if !m.has_controller("cpu") {
                continue;
            }
            if let Some(v) = read(dir.join("cpu.cfs_quota_us"))? {
                let q: Option<i64> = v.parse().ok();
                out.cpu_quota_us = out.cpu_quota_us.or(q.and_then(|q| u64::try_from(q).ok()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:37 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_prio,net_cls
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd,release_agent=/x
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
99 23 0:32 / /mnt/mem\\040copy rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn mountinfo_hybrid() {
        let m = parse_mountinfo(HYBRID);
        let points: Vec<_> = m.iter().map(|m| m.mount_point.clone()).collect();
        assert_eq!(
            points,
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/net_cls,net_prio",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
            .map(PathBuf::from)
        );
        assert!(m[1].has_controller("memory"));
        assert_eq!(m[2].options, ["net_cls", "net_prio"]);
        assert_eq!(m[3].options, ["name=systemd"]);
        assert!(m[4].unified);
    }

    #[test]
    fn mountinfo_unescapes() {
        let m = parse_mountinfo("1 2 0:1 / /a\\040b rw - cgroup2 cgroup2 rw\n");
        assert_eq!(m[0].mount_point, PathBuf::from("/a b"));
    }

    #[test]
    fn mountinfo_pure_v2() {
        let m = parse_mountinfo(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert_eq!(m.len(), 1);
        let d = dirs(&m, Path::new("/berth/abc")).expect("dirs");
        assert_eq!(d, [PathBuf::from("/sys/fs/cgroup/berth/abc")]);
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/berth/x")).expect("ok"),
            PathBuf::from("berth/x")
        );
        assert_eq!(
            relative_path(Path::new("berth/./x")).expect("ok"),
            PathBuf::from("berth/x")
        );
        assert!(relative_path(Path::new("/berth/../x")).is_err());
        assert!(relative_path(Path::new("/")).is_err());
    }

    #[test]
    fn flat_keyed() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(flat_keyed_value(v1, "oom_kill"), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(flat_keyed_value(v2, "oom_kill"), Some(1));
        assert_eq!(flat_keyed_value(v2, "nope"), None);
    }

    #[test]
    fn parent_limits_on_v1_and_pure_v2() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (mem, cpu, pids, uni) = (
            tmp.path().join("memory"),
            tmp.path().join("cpu"),
            tmp.path().join("pids"),
            tmp.path().join("unified"),
        );
        for d in [&mem, &cpu, &pids, &uni] {
            fs::create_dir_all(d).expect("mkdir");
        }
        let v1 = vec![
            CgroupMount {
                mount_point: mem.clone(),
                unified: false,
                options: vec!["memory".into()],
            },
            CgroupMount {
                mount_point: cpu.clone(),
                unified: false,
                options: vec!["cpu".into()],
            },
            CgroupMount {
                mount_point: pids.clone(),
                unified: false,
                options: vec!["pids".into()],
            },
        ];
        let limits = ParentLimits {
            cpu_quota_us: Some(ParentLimits::quota_for_cpu_units(256)),
            memory_bytes: Some(128 << 20),
        };
        let path = Path::new("/berth/sandbox-x");
        create_parent(&v1, path, &limits).expect("v1");
        let read = |p: PathBuf| fs::read_to_string(p).expect("read");
        assert_eq!(
            read(mem.join("berth/sandbox-x/memory.limit_in_bytes")),
            "134217728"
        );
        assert_eq!(read(cpu.join("berth/sandbox-x/cpu.cfs_quota_us")), "25000");
        assert_eq!(
            read(cpu.join("berth/sandbox-x/cpu.cfs_period_us")),
            "100000"
        );
        // Other hierarchies get their directories from libcgroups when a container joins.
        assert!(!pids.join("berth/sandbox-x").exists());
        assert_eq!(read_parent_limits(&v1, path).expect("read"), limits);

        // Pure v2: controllers enabled down the path, then memory.max and cpu.max.
        fs::write(
            uni.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("w");
        let v2 = vec![CgroupMount {
            mount_point: uni.clone(),
            unified: true,
            options: vec![],
        }];
        create_parent(&v2, path, &limits).expect("v2");
        assert_eq!(read(uni.join("cgroup.subtree_control")), "+cpu +memory");
        assert_eq!(
            read(uni.join("berth/cgroup.subtree_control")),
            "+cpu +memory"
        );
        assert_eq!(read(uni.join("berth/sandbox-x/memory.max")), "134217728");
        assert_eq!(read(uni.join("berth/sandbox-x/cpu.max")), "25000 100000");
        assert_eq!(read_parent_limits(&v2, path).expect("read"), limits);
        // No limits: unlimited values.
        create_parent(&v2, path, &ParentLimits::default()).expect("v2");
        assert_eq!(read(uni.join("berth/sandbox-x/memory.max")), "max");
        assert_eq!(read(uni.join("berth/sandbox-x/cpu.max")), "max 100000");
        assert_eq!(
            read_parent_limits(&v2, path).expect("read"),
            ParentLimits::default()
        );
        // A hybrid host's v2 mount without cpu/memory is left alone.
        let hy = tmp.path().join("hybrid");
        fs::create_dir_all(&hy).expect("mkdir");
        fs::write(hy.join("cgroup.controllers"), "hugetlb\n").expect("w");
        let hybrid = vec![CgroupMount {
            mount_point: hy.clone(),
            unified: true,
            options: vec![],
        }];
        create_parent(&hybrid, path, &limits).expect("hybrid");
        assert!(!hy.join("berth").exists());
        assert_eq!(ParentLimits::quota_for_cpu_units(1), 1000);
        assert_eq!(ParentLimits::quota_for_cpu_units(1024), 100_000);
    }

    #[test]
    fn oom_count_prefers_existing_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mem = tmp.path().join("memory");
        let uni = tmp.path().join("unified");
        fs::create_dir_all(mem.join("b/c")).expect("mkdir");
        fs::create_dir_all(uni.join("b/c")).expect("mkdir");
        let mounts = vec![
            CgroupMount {
                mount_point: mem.clone(),
                unified: false,
                options: vec!["memory".into()],
            },
            CgroupMount {
                mount_point: uni.clone(),
                unified: true,
                options: vec![],
            },
        ];
        assert_eq!(
            oom_kill_count(&mounts, Path::new("/b/c")).expect("ok"),
            None
        );
        fs::write(uni.join("b/c/memory.events"), "oom 1\noom_kill 2\n").expect("write");
        assert_eq!(
            oom_kill_count(&mounts, Path::new("/b/c")).expect("ok"),
            Some(2)
        );
        fs::write(mem.join("b/c/memory.oom_control"), "oom_kill 0\n").expect("write");
        assert_eq!(
            oom_kill_count(&mounts, Path::new("/b/c")).expect("ok"),
            Some(0)
        );
    }
}
