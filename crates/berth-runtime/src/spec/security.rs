//! Docker's default security profile, apart from seccomp: the capability set and how
//! `--cap-add`/`--cap-drop`/`--privileged` change it, the masked and read-only paths, and the
//! device cgroup allow-list.

use oci_spec::runtime::{Capability, LinuxDeviceCgroup, LinuxDeviceType};

/// Errors of capability options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// Not a Linux capability name.
    #[error("unknown capability: {0:?}")]
    Unknown(String),
    /// A capability this kernel does not have (it would make the container fail to start).
    #[error("capability {0} is not supported by this kernel")]
    Unsupported(String),
}

/// Every capability with its kernel number and Docker's name, in kernel order.
const ALL: [(Capability, u8, &str); 41] = [
    (Capability::Chown, 0, "CAP_CHOWN"),
    (Capability::DacOverride, 1, "CAP_DAC_OVERRIDE"),
    (Capability::DacReadSearch, 2, "CAP_DAC_READ_SEARCH"),
    (Capability::Fowner, 3, "CAP_FOWNER"),
    (Capability::Fsetid, 4, "CAP_FSETID"),
    (Capability::Kill, 5, "CAP_KILL"),
    (Capability::Setgid, 6, "CAP_SETGID"),
    (Capability::Setuid, 7, "CAP_SETUID"),
    (Capability::Setpcap, 8, "CAP_SETPCAP"),
    (Capability::LinuxImmutable, 9, "CAP_LINUX_IMMUTABLE"),
    (Capability::NetBindService, 10, "CAP_NET_BIND_SERVICE"),
    (Capability::NetBroadcast, 11, "CAP_NET_BROADCAST"),
    (Capability::NetAdmin, 12, "CAP_NET_ADMIN"),
    (Capability::NetRaw, 13, "CAP_NET_RAW"),
    (Capability::IpcLock, 14, "CAP_IPC_LOCK"),
    (Capability::IpcOwner, 15, "CAP_IPC_OWNER"),
    (Capability::SysModule, 16, "CAP_SYS_MODULE"),
    (Capability::SysRawio, 17, "CAP_SYS_RAWIO"),
    (Capability::SysChroot, 18, "CAP_SYS_CHROOT"),
    (Capability::SysPtrace, 19, "CAP_SYS_PTRACE"),
    (Capability::SysPacct, 20, "CAP_SYS_PACCT"),
    (Capability::SysAdmin, 21, "CAP_SYS_ADMIN"),
    (Capability::SysBoot, 22, "CAP_SYS_BOOT"),
    (Capability::SysNice, 23, "CAP_SYS_NICE"),
    (Capability::SysResource, 24, "CAP_SYS_RESOURCE"),
    (Capability::SysTime, 25, "CAP_SYS_TIME"),
    (Capability::SysTtyConfig, 26, "CAP_SYS_TTY_CONFIG"),
    (Capability::Mknod, 27, "CAP_MKNOD"),
    (Capability::Lease, 28, "CAP_LEASE"),
    (Capability::AuditWrite, 29, "CAP_AUDIT_WRITE"),
    (Capability::AuditControl, 30, "CAP_AUDIT_CONTROL"),
    (Capability::Setfcap, 31, "CAP_SETFCAP"),
    (Capability::MacOverride, 32, "CAP_MAC_OVERRIDE"),
    (Capability::MacAdmin, 33, "CAP_MAC_ADMIN"),
    (Capability::Syslog, 34, "CAP_SYSLOG"),
    (Capability::WakeAlarm, 35, "CAP_WAKE_ALARM"),
    (Capability::BlockSuspend, 36, "CAP_BLOCK_SUSPEND"),
    (Capability::AuditRead, 37, "CAP_AUDIT_READ"),
    (Capability::Perfmon, 38, "CAP_PERFMON"),
    (Capability::Bpf, 39, "CAP_BPF"),
    (Capability::CheckpointRestore, 40, "CAP_CHECKPOINT_RESTORE"),
];

/// The highest capability number Berth knows.
pub const LAST_KNOWN_CAP: u8 = 40;

/// Docker's default capability set (moby `oci/caps.DefaultCapabilities`), in Docker's order.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The kernel number of a capability.
pub fn capability_number(cap: Capability) -> u8 {
    ALL.iter()
        .find(|(c, _, _)| *c == cap)
        .map(|(_, n, _)| *n)
        .unwrap_or(u8::MAX)
}

/// Docker's name of a capability (`CAP_CHOWN`).
pub fn capability_name(cap: Capability) -> &'static str {
    ALL.iter()
        .find(|(c, _, _)| *c == cap)
        .map(|(_, _, name)| *name)
        .unwrap_or("CAP_UNKNOWN")
}

/// Parses a capability as `docker run --cap-add` does: case-insensitive, `CAP_` optional.
pub fn parse_capability(name: &str) -> Result<Capability, CapabilityError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL.iter()
        .find(|(_, _, n)| *n == full)
        .map(|(c, _, _)| *c)
        .ok_or(CapabilityError::Unknown(full))
}

/// Every capability up to `last_cap` (the kernel's `/proc/sys/kernel/cap_last_cap`).
pub fn all_capabilities(last_cap: u8) -> Vec<Capability> {
    ALL.iter()
        .filter(|(_, n, _)| *n <= last_cap)
        .map(|(c, _, _)| *c)
        .collect()
}

/// The container's capability set, with moby's `TweakCapabilities` rules:
/// privileged → all; `--cap-add ALL` → all but the dropped ones; `--cap-drop ALL` → only the
/// added ones; otherwise the defaults minus the dropped ones plus the added ones (a capability
/// both added and dropped is added). Sorted by kernel number, no duplicates.
pub fn container_capabilities(
    add: &[String],
    drop: &[String],
    privileged: bool,
    last_cap: u8,
) -> Result<Vec<Capability>, CapabilityError> {
    if privileged {
        return Ok(all_capabilities(last_cap));
    }
    let parse_list = |list: &[String]| -> Result<(bool, Vec<Capability>), CapabilityError> {
        let mut all = false;
        let mut caps = Vec::new();
        for name in list {
            if name.eq_ignore_ascii_case("ALL") {
                all = true;
            } else {
                caps.push(parse_capability(name)?);
            }
        }
        Ok((all, caps))
    };
    let (add_all, adds) = parse_list(add)?;
    let (drop_all, drops) = parse_list(drop)?;

    let mut caps: Vec<Capability> = if add_all {
        all_capabilities(last_cap)
            .into_iter()
            .filter(|c| !drops.contains(c))
            .collect()
    } else if drop_all {
        adds.clone()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .filter(|c| !drops.contains(c))
            .chain(adds.iter().copied())
            .collect()
    };
    if let Some(cap) = adds
        .iter()
        .find(|c| capability_number(**c) > last_cap && caps.contains(c))
    {
        return Err(CapabilityError::Unsupported(
            capability_name(*cap).to_string(),
        ));
    }
    caps.sort_by_key(|c| capability_number(*c));
    caps.dedup();
    Ok(caps)
}

/// Paths Docker hides from unprivileged containers (moby `oci.DefaultLinuxSpec`).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in unprivileged containers.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(allow);
    rule.set_typ(Some(typ));
    rule.set_major(major);
    rule.set_minor(minor);
    rule.set_access(Some("rwm".to_string()));
    rule
}

/// Docker's device cgroup rules for an unprivileged container: deny everything, allow
/// `/dev/{zero,null,urandom,random,tty,console}`, deny `/dev/fuse`. (The runtime appends its
/// own defaults after these: mknod of any node, `/dev/pts/*`, `/dev/ptmx`, tun.)
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, C};
    vec![
        device_rule(false, A, None, None),
        device_rule(true, C, Some(1), Some(5)),
        device_rule(true, C, Some(1), Some(3)),
        device_rule(true, C, Some(1), Some(9)),
        device_rule(true, C, Some(1), Some(8)),
        device_rule(true, C, Some(5), Some(0)),
        device_rule(true, C, Some(5), Some(1)),
        device_rule(false, C, Some(10), Some(229)),
    ]
}

/// The device cgroup rule of a privileged container: every device.
pub fn privileged_device_rules() -> Vec<LinuxDeviceCgroup> {
    vec![device_rule(true, LinuxDeviceType::A, None, None)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn names(caps: &[Capability]) -> Vec<&'static str> {
        caps.iter().map(|c| capability_name(*c)).collect()
    }

    #[test]
    fn table_is_in_kernel_order_and_matches_serde_names() {
        for (i, (cap, n, name)) in ALL.iter().enumerate() {
            assert_eq!(usize::from(*n), i);
            let json = serde_json::to_string(cap).unwrap();
            assert_eq!(json, format!("\"{name}\""));
        }
    }

    #[test]
    fn parse_accepts_docker_spellings() {
        for s in ["NET_ADMIN", "net_admin", "CAP_NET_ADMIN", "cap_net_admin"] {
            assert_eq!(parse_capability(s).unwrap(), Capability::NetAdmin);
        }
        assert_eq!(
            parse_capability("FOO").unwrap_err().to_string(),
            "unknown capability: \"CAP_FOO\""
        );
    }

    #[test]
    fn defaults_are_dockers_fourteen() {
        let caps = container_capabilities(&[], &[], false, 40).unwrap();
        let mut expected = names(&DEFAULT_CAPABILITIES);
        expected.sort();
        let mut got = names(&caps);
        got.sort();
        assert_eq!(got, expected);
        assert_eq!(caps.len(), 14);
    }

    #[test]
    fn add_and_drop() {
        let caps =
            container_capabilities(&strings(&["NET_ADMIN"]), &strings(&["chown"]), false, 40)
                .unwrap();
        assert!(caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::Chown));
        assert_eq!(caps.len(), 14);
    }

    #[test]
    fn added_and_dropped_is_added() {
        let caps =
            container_capabilities(&strings(&["KILL"]), &strings(&["KILL"]), false, 40).unwrap();
        assert!(caps.contains(&Capability::Kill));
    }

    #[test]
    fn drop_all_keeps_only_added() {
        let caps = container_capabilities(
            &strings(&["NET_BIND_SERVICE"]),
            &strings(&["ALL"]),
            false,
            40,
        )
        .unwrap();
        assert_eq!(caps, [Capability::NetBindService]);
        assert!(container_capabilities(&[], &strings(&["all"]), false, 40)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn add_all_minus_dropped() {
        let caps = container_capabilities(&strings(&["ALL"]), &strings(&["SYS_ADMIN"]), false, 40)
            .unwrap();
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&Capability::SysAdmin));
    }

    #[test]
    fn privileged_is_everything_the_kernel_has() {
        assert_eq!(
            container_capabilities(&[], &[], true, 40).unwrap().len(),
            41
        );
        let old = container_capabilities(&[], &strings(&["CHOWN"]), true, 37).unwrap();
        assert_eq!(old.len(), 38);
        assert!(!old.contains(&Capability::Bpf));
    }

    #[test]
    fn unknown_and_unsupported_are_errors() {
        assert!(matches!(
            container_capabilities(&strings(&["NOPE"]), &[], false, 40),
            Err(CapabilityError::Unknown(_))
        ));
        assert!(matches!(
            container_capabilities(&[], &strings(&["NOPE"]), false, 40),
            Err(CapabilityError::Unknown(_))
        ));
        assert_eq!(
            container_capabilities(&strings(&["BPF"]), &[], false, 37)
                .unwrap_err()
                .to_string(),
            "capability CAP_BPF is not supported by this kernel"
        );
    }

    #[test]
    fn device_rules_start_with_deny_all() {
        let rules = default_device_rules();
        assert_eq!(rules[0].to_string(), "a *:* rwm");
        assert!(!rules[0].allow());
        let allowed: Vec<String> = rules
            .iter()
            .filter(|r| r.allow())
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            allowed,
            [
                "c 1:5 rwm",
                "c 1:3 rwm",
                "c 1:9 rwm",
                "c 1:8 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm"
            ]
        );
        assert_eq!(rules[7].to_string(), "c 10:229 rwm");
        assert!(!rules[7].allow());
    }
}
