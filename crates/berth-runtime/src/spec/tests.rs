//! Unit tests of the merge rules and of the assembled spec.

use std::collections::HashSet;

use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};
use oci_spec::runtime::{LinuxSeccompAction, Mount};

use super::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nwheel:x:10:root\napp:x:1000:\nstaff:x:50:app\n";

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn host() -> HostInfo {
    HostInfo {
        arch: "x86_64".to_string(),
        cpus: 2,
        nofile_hard: 20000,
        cap_last_cap: 40,
        cgroup_unified: false,
        cap_bounding: u64::MAX,
    }
}

fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
    let mut c = ConfigBuilder::default();
    if let Some(e) = entrypoint {
        c = c.entrypoint(strings(e));
    }
    if let Some(cmd) = cmd {
        c = c.cmd(strings(cmd));
    }
    c.build().unwrap()
}

fn image(config: ImageConfig) -> ImageConfiguration {
    ImageConfigurationBuilder::default()
        .config(config)
        .build()
        .unwrap()
}

fn opts() -> RunOptions {
    RunOptions {
        hostname: "0123456789ab".to_string(),
        ..RunOptions::default()
    }
}

fn build(image_config: ImageConfig, opts: &RunOptions) -> Result<BuiltSpec, SpecError> {
    build_spec(
        &image(image_config),
        opts,
        Path::new("/var/lib/berth/c/rootfs"),
        &StaticUserDb::new(PASSWD, GROUP),
        &host(),
    )
}

fn sh() -> ImageConfig {
    config(None, Some(&["sh"]))
}

fn args(built: &BuiltSpec) -> Vec<String> {
    built
        .spec
        .process()
        .as_ref()
        .unwrap()
        .args()
        .clone()
        .unwrap()
}

fn env(built: &BuiltSpec) -> Vec<String> {
    built
        .spec
        .process()
        .as_ref()
        .unwrap()
        .env()
        .clone()
        .unwrap()
}

fn linux(built: &BuiltSpec) -> &oci_spec::runtime::Linux {
    built.spec.linux().as_ref().unwrap()
}

fn caps_of(set: &Option<Capabilities>) -> HashSet<&'static str> {
    set.as_ref()
        .unwrap()
        .iter()
        .map(|c| security::capability_name(*c))
        .collect()
}

// ---- ENTRYPOINT / CMD ------------------------------------------------------------------------

/// Docker's documented ENTRYPOINT/CMD table. The image config holds shell forms as
/// `/bin/sh -c "..."`; the args below are what the process gets (with a shell-form
/// ENTRYPOINT, the CMD words become `$0...` of `sh -c` and are ignored by it).
#[test]
fn docker_entrypoint_cmd_table() {
    let exec_entry: &[&str] = &["exec_entry", "p1_entry"];
    let shell_entry: &[&str] = &["/bin/sh", "-c", "exec_entry p1_entry"];
    let exec_cmd: &[&str] = &["exec_cmd", "p1_cmd"];
    let shell_cmd: &[&str] = &["/bin/sh", "-c", "exec_cmd p1_cmd"];
    type Cell<'a> = (
        Option<&'a [&'a str]>,
        Option<&'a [&'a str]>,
        Option<&'a [&'a str]>,
    );
    let table: [Cell; 9] = [
        (None, None, None),
        (Some(shell_entry), None, Some(shell_entry)),
        (Some(exec_entry), None, Some(exec_entry)),
        (None, Some(exec_cmd), Some(exec_cmd)),
        (
            Some(shell_entry),
            Some(exec_cmd),
            Some(&["/bin/sh", "-c", "exec_entry p1_entry", "exec_cmd", "p1_cmd"]),
        ),
        (
            Some(exec_entry),
            Some(exec_cmd),
            Some(&["exec_entry", "p1_entry", "exec_cmd", "p1_cmd"]),
        ),
        (None, Some(shell_cmd), Some(shell_cmd)),
        (
            Some(shell_entry),
            Some(shell_cmd),
            Some(&[
                "/bin/sh",
                "-c",
                "exec_entry p1_entry",
                "/bin/sh",
                "-c",
                "exec_cmd p1_cmd",
            ]),
        ),
        (
            Some(exec_entry),
            Some(shell_cmd),
            Some(&["exec_entry", "p1_entry", "/bin/sh", "-c", "exec_cmd p1_cmd"]),
        ),
    ];
    for (entrypoint, cmd, expected) in table {
        let got = command(Some(&config(entrypoint, cmd)), &opts());
        match expected {
            Some(expected) => assert_eq!(got.unwrap(), expected, "{entrypoint:?} {cmd:?}"),
            None => assert!(matches!(got, Err(SpecError::NoCommand))),
        }
    }
}

#[test]
fn run_command_replaces_image_cmd_but_keeps_entrypoint() {
    let img = config(Some(&["/entry"]), Some(&["default"]));
    let o = RunOptions {
        cmd: strings(&["a", "b"]),
        ..opts()
    };
    assert_eq!(command(Some(&img), &o).unwrap(), ["/entry", "a", "b"]);
    let img = config(None, Some(&["default"]));
    assert_eq!(command(Some(&img), &o).unwrap(), ["a", "b"]);
    assert_eq!(args(&build(img, &o).unwrap()), ["a", "b"]);
}

#[test]
fn entrypoint_option_drops_image_cmd() {
    let img = config(Some(&["/entry"]), Some(&["default"]));
    let o = RunOptions {
        entrypoint: Some(strings(&["/bin/other"])),
        ..opts()
    };
    assert_eq!(command(Some(&img), &o).unwrap(), ["/bin/other"]);
    let o = RunOptions {
        entrypoint: Some(strings(&["/bin/other"])),
        cmd: strings(&["x"]),
        ..opts()
    };
    assert_eq!(command(Some(&img), &o).unwrap(), ["/bin/other", "x"]);
}

#[test]
fn empty_entrypoint_option_clears_entrypoint() {
    let img = config(Some(&["/entry"]), Some(&["default"]));
    for cleared in [Vec::new(), strings(&[""])] {
        let o = RunOptions {
            entrypoint: Some(cleared.clone()),
            cmd: strings(&["ls", "-l"]),
            ..opts()
        };
        assert_eq!(command(Some(&img), &o).unwrap(), ["ls", "-l"]);
        // Docker: `--entrypoint "" IMAGE` without a command is an error, not the image's Cmd.
        let o = RunOptions {
            entrypoint: Some(cleared),
            ..opts()
        };
        assert_eq!(
            command(Some(&img), &o).unwrap_err().to_string(),
            "no command specified"
        );
    }
}

#[test]
fn no_command_anywhere_is_an_error() {
    assert!(matches!(command(None, &opts()), Err(SpecError::NoCommand)));
    assert!(matches!(
        build(config(None, None), &opts()),
        Err(SpecError::NoCommand)
    ));
}

#[test]
fn nul_bytes_are_refused() {
    let o = RunOptions {
        cmd: strings(&["a\0b"]),
        ..opts()
    };
    assert!(matches!(command(None, &o), Err(SpecError::NulByte(_))));
    let o = RunOptions {
        env: strings(&["A=\0"]),
        ..opts()
    };
    assert!(matches!(build(sh(), &o), Err(SpecError::NulByte(_))));
}

// ---- ENV -------------------------------------------------------------------------------------

#[test]
fn env_defaults() {
    let e = environment(&[], &opts(), "/root").unwrap();
    assert_eq!(
        e,
        [
            format!("PATH={DEFAULT_PATH}"),
            "HOSTNAME=0123456789ab".to_string(),
            "HOME=/root".to_string()
        ]
    );
    let tty = RunOptions {
        tty: true,
        ..opts()
    };
    assert!(environment(&[], &tty, "/")
        .unwrap()
        .contains(&"TERM=xterm".to_string()));
}

#[test]
fn env_options_override_image_in_docker_order() {
    let image_env = strings(&["PATH=/custom/bin", "A=1", "C=image"]);
    let o = RunOptions {
        env: strings(&["A=2", "B=3"]),
        tty: true,
        ..opts()
    };
    assert_eq!(
        environment(&image_env, &o, "/home/app").unwrap(),
        [
            "PATH=/custom/bin",
            "HOSTNAME=0123456789ab",
            "TERM=xterm",
            "A=2",
            "B=3",
            "C=image",
            "HOME=/home/app"
        ]
    );
}

#[test]
fn env_bare_name_unsets_and_explicit_values_win() {
    let image_env = strings(&["A=1", "HOME=/image-home", "TERM=vt100"]);
    let o = RunOptions {
        env: strings(&["A", "HOSTNAME=custom", "EMPTY="]),
        tty: true,
        ..opts()
    };
    let e = environment(&image_env, &o, "/root").unwrap();
    assert!(!e.iter().any(|v| v.starts_with("A=")));
    assert!(e.contains(&"HOSTNAME=custom".to_string()));
    assert!(e.contains(&"EMPTY=".to_string()));
    assert!(e.contains(&"TERM=vt100".to_string()));
    assert!(e.contains(&"HOME=/image-home".to_string()));
    assert_eq!(e.iter().filter(|v| v.starts_with("HOME=")).count(), 1);
    assert_eq!(e.iter().filter(|v| v.starts_with("HOSTNAME=")).count(), 1);
}

#[test]
fn env_with_empty_name_is_refused() {
    for bad in ["=x", ""] {
        let o = RunOptions {
            env: strings(&[bad]),
            ..opts()
        };
        assert_eq!(
            environment(&[], &o, "/").unwrap_err().to_string(),
            format!("invalid environment variable: {bad}")
        );
    }
}

#[test]
fn env_home_comes_from_the_resolved_user() {
    let o = RunOptions {
        user: Some("app".to_string()),
        ..opts()
    };
    assert!(env(&build(sh(), &o).unwrap()).contains(&"HOME=/home/app".to_string()));
    let o = RunOptions {
        user: Some("4242".to_string()),
        ..opts()
    };
    assert!(env(&build(sh(), &o).unwrap()).contains(&"HOME=/".to_string()));
}

// ---- WORKDIR, USER, STOP SIGNAL --------------------------------------------------------------

#[test]
fn working_directory_rules() {
    let mut img = sh();
    assert_eq!(working_dir(Some(&img), &opts()).unwrap(), "/");
    img.set_working_dir(Some("/app/".to_string()));
    assert_eq!(working_dir(Some(&img), &opts()).unwrap(), "/app");
    img.set_working_dir(Some("rel/dir".to_string()));
    assert_eq!(working_dir(Some(&img), &opts()).unwrap(), "/rel/dir");
    let o = RunOptions {
        workdir: Some("/srv/./x/../y//".to_string()),
        ..opts()
    };
    assert_eq!(working_dir(Some(&img), &o).unwrap(), "/srv/y");
    let o = RunOptions {
        workdir: Some("srv".to_string()),
        ..opts()
    };
    assert_eq!(
        working_dir(Some(&img), &o).unwrap_err().to_string(),
        "the working directory 'srv' is invalid, it needs to be an absolute path"
    );
    let built = build(
        sh(),
        &RunOptions {
            workdir: Some("/w".into()),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(
        built.spec.process().as_ref().unwrap().cwd(),
        Path::new("/w")
    );
}

#[test]
fn user_from_options_then_image() {
    let mut img = sh();
    img.set_user(Some("app".to_string()));
    let built = build(img.clone(), &opts()).unwrap();
    let user = built.spec.process().as_ref().unwrap().user().clone();
    assert_eq!((user.uid(), user.gid()), (1000, 1000));
    assert_eq!(user.additional_gids().as_deref(), Some(&[1000, 50][..]));
    assert_eq!(built.user.home, "/home/app");

    let o = RunOptions {
        user: Some("0:50".to_string()),
        ..opts()
    };
    let user = build(img.clone(), &o).unwrap().user;
    assert_eq!((user.uid, user.gid), (0, 50));

    // `--user ""` is no option: the image's user.
    let o = RunOptions {
        user: Some(String::new()),
        ..opts()
    };
    assert_eq!(build(img, &o).unwrap().user.uid, 1000);

    let root = build(sh(), &opts()).unwrap().user;
    assert_eq!((root.uid, root.gid), (0, 0));
    assert_eq!(root.additional_gids, [0, 10]);
}

#[test]
fn unknown_user_fails_like_docker() {
    let o = RunOptions {
        user: Some("ghost".to_string()),
        ..opts()
    };
    assert_eq!(
        build(sh(), &o).unwrap_err().to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
}

#[test]
fn signals_parse_like_docker() {
    for (s, n) in [
        ("SIGTERM", 15),
        ("term", 15),
        ("SigKill", 9),
        ("9", 9),
        ("SIGUSR1", 10),
        ("SIGWINCH", 28),
        ("SIGRTMIN", 34),
        ("RTMIN+3", 37),
        ("SIGRTMAX", 64),
        ("SIGRTMAX-1", 63),
        ("64", 64),
    ] {
        assert_eq!(parse_signal(s).unwrap(), n, "{s}");
    }
    for bad in [
        "0", "65", "-1", "SIGFOO", "", "RTMIN+31", "RTMIN-1", "RTMAX+1", "SIG",
    ] {
        assert!(parse_signal(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        parse_signal("NOPE").unwrap_err().to_string(),
        "invalid signal: NOPE"
    );
}

#[test]
fn stop_signal_from_options_then_image_then_sigterm() {
    assert_eq!(build(sh(), &opts()).unwrap().stop_signal, SIGTERM);
    let mut img = sh();
    img.set_stop_signal(Some("SIGQUIT".to_string()));
    assert_eq!(build(img.clone(), &opts()).unwrap().stop_signal, 3);
    let o = RunOptions {
        stop_signal: Some("SIGINT".to_string()),
        ..opts()
    };
    assert_eq!(build(img, &o).unwrap().stop_signal, 2);
    let o = RunOptions {
        stop_signal: Some("SIGNOPE".to_string()),
        ..opts()
    };
    assert!(matches!(build(sh(), &o), Err(SpecError::InvalidSignal(_))));
}

// ---- SECURITY --------------------------------------------------------------------------------

#[test]
fn root_gets_docker_default_caps_in_bounding_effective_permitted() {
    let built = build(sh(), &opts()).unwrap();
    let process = built.spec.process().as_ref().unwrap();
    let caps = process.capabilities().as_ref().unwrap();
    let expected: HashSet<&str> = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]
    .into_iter()
    .collect();
    assert_eq!(caps_of(caps.bounding()), expected);
    assert_eq!(caps_of(caps.effective()), expected);
    assert_eq!(caps_of(caps.permitted()), expected);
    assert!(caps_of(caps.inheritable()).is_empty());
    assert!(caps_of(caps.ambient()).is_empty());
    assert_eq!(process.no_new_privileges(), Some(true));
}

#[test]
fn non_root_gets_bounding_set_only() {
    let o = RunOptions {
        user: Some("app".to_string()),
        ..opts()
    };
    let built = build(sh(), &o).unwrap();
    let caps = built
        .spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    assert_eq!(caps_of(caps.bounding()).len(), 14);
    for set in [
        caps.effective(),
        caps.permitted(),
        caps.inheritable(),
        caps.ambient(),
    ] {
        assert!(caps_of(set).is_empty());
    }
}

#[test]
fn cap_add_and_drop_reach_spec_and_seccomp() {
    let o = RunOptions {
        cap_add: strings(&["SYS_ADMIN"]),
        cap_drop: strings(&["NET_RAW"]),
        ..opts()
    };
    let built = build(sh(), &o).unwrap();
    let caps = built
        .spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    let bounding = caps_of(caps.bounding());
    assert!(bounding.contains("CAP_SYS_ADMIN"));
    assert!(!bounding.contains("CAP_NET_RAW"));
    let seccomp = linux(&built).seccomp().as_ref().unwrap();
    let mount_allowed = seccomp.syscalls().iter().flatten().any(|r| {
        r.names().iter().any(|n| n == "mount") && r.action() == LinuxSeccompAction::ScmpActAllow
    });
    assert!(mount_allowed);
    let o = RunOptions {
        cap_add: strings(&["NOT_A_CAP"]),
        ..opts()
    };
    assert_eq!(
        build(sh(), &o).unwrap_err().to_string(),
        "unknown capability: \"CAP_NOT_A_CAP\""
    );
}

#[test]
fn masked_and_readonly_paths_are_dockers() {
    let built = build(sh(), &opts()).unwrap();
    let l = linux(&built);
    assert_eq!(
        l.masked_paths().clone().unwrap(),
        strings(&[
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
        ])
    );
    assert_eq!(
        l.readonly_paths().clone().unwrap(),
        strings(&[
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ])
    );
}

#[test]
fn default_seccomp_is_in_the_spec() {
    let built = build(sh(), &opts()).unwrap();
    let seccomp = linux(&built).seccomp().as_ref().unwrap();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(seccomp.default_errno_ret(), Some(1));
    let named = |name: &str| {
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|r| r.names().iter().any(|n| n == name))
    };
    for name in ["read", "write", "clone", "socket", "arch_prctl"] {
        assert!(named(name), "{name}");
    }
    for name in [
        "kexec_load",
        "mount",
        "umount2",
        "reboot",
        "init_module",
        "setns",
    ] {
        assert!(!named(name), "{name}");
    }
}

#[test]
fn device_rules_are_dockers() {
    let built = build(sh(), &opts()).unwrap();
    let devices = linux(&built)
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    let rules: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
    assert_eq!(rules.len(), 8);
    assert_eq!(rules[0], "a *:* rwm");
    assert!(!devices[0].allow());
}

#[test]
fn privileged_lifts_the_profile() {
    let o = RunOptions {
        privileged: true,
        cap_drop: strings(&["ALL"]),
        ..opts()
    };
    let built = build(sh(), &o).unwrap();
    let process = built.spec.process().as_ref().unwrap();
    let caps = process.capabilities().clone().unwrap();
    assert_eq!(caps_of(caps.bounding()).len(), 41);
    assert_eq!(caps_of(caps.effective()).len(), 41);
    assert_eq!(process.no_new_privileges(), None);
    let l = linux(&built);
    assert!(l.seccomp().is_none());
    assert!(l.masked_paths().is_none());
    assert!(l.readonly_paths().is_none());
    let devices = l.resources().as_ref().unwrap().devices().clone().unwrap();
    assert_eq!(devices.len(), 1);
    assert!(devices[0].allow());
    assert_eq!(devices[0].to_string(), "a *:* rwm");
    let sys = mount_at(&built, "/sys");
    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
}

#[test]
fn privileged_caps_follow_the_kernel() {
    let mut old_kernel = host();
    old_kernel.cap_last_cap = 37;
    let built = build_spec(
        &image(sh()),
        &RunOptions {
            privileged: true,
            ..opts()
        },
        Path::new("/r"),
        &StaticUserDb::default(),
        &old_kernel,
    )
    .unwrap();
    let caps = built
        .spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    assert_eq!(caps_of(caps.bounding()).len(), 38);
}

#[test]
fn all_capabilities_are_those_the_caller_has() {
    let mut h = host();
    // A caller without CAP_SYS_RESOURCE (24).
    h.cap_bounding = ((1u64 << 41) - 1) & !(1 << 24);
    let caps = |opts: &RunOptions| {
        let built = build_spec(
            &image(sh()),
            opts,
            Path::new("/r"),
            &StaticUserDb::default(),
            &h,
        )
        .unwrap();
        caps_of(
            built
                .spec
                .process()
                .as_ref()
                .unwrap()
                .capabilities()
                .as_ref()
                .unwrap()
                .effective(),
        )
    };
    let privileged = caps(&RunOptions {
        privileged: true,
        ..opts()
    });
    assert_eq!(privileged.len(), 40);
    assert!(!privileged.contains("CAP_SYS_RESOURCE"));
    let all = caps(&RunOptions {
        cap_add: strings(&["ALL"]),
        cap_drop: strings(&["NET_RAW"]),
        ..opts()
    });
    assert_eq!(all.len(), 39);
    assert!(!all.contains("CAP_SYS_RESOURCE") && !all.contains("CAP_NET_RAW"));
}

// ---- NAMESPACES ------------------------------------------------------------------------------

fn namespaces_of(built: &BuiltSpec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    linux(built)
        .namespaces()
        .iter()
        .flatten()
        .map(|n| (n.typ(), n.path().clone()))
        .collect()
}

#[test]
fn net_modes() {
    use LinuxNamespaceType as T;
    let with = |network: NetMode| build(sh(), &RunOptions { network, ..opts() }).unwrap();
    let new = with(NetMode::NewNs);
    assert_eq!(
        namespaces_of(&new),
        [
            (T::Mount, None),
            (T::Network, None),
            (T::Uts, None),
            (T::Pid, None),
            (T::Ipc, None)
        ]
    );
    assert_eq!(namespaces_of(&with(NetMode::None)), namespaces_of(&new));

    let host_net = with(NetMode::Host);
    assert!(!namespaces_of(&host_net)
        .iter()
        .any(|(t, _)| *t == T::Network));
    assert!(namespaces_of(&host_net).iter().any(|(t, _)| *t == T::Uts));
    assert!(linux(&host_net).sysctl().is_none());

    let joined = with(NetMode::Path(PathBuf::from("/run/netns/berth-1")));
    assert!(
        namespaces_of(&joined).contains(&(T::Network, Some(PathBuf::from("/run/netns/berth-1"))))
    );
    let sysctl = linux(&joined).sysctl().clone().unwrap();
    assert_eq!(sysctl["net.ipv4.ip_unprivileged_port_start"], "0");
    assert_eq!(sysctl["net.ipv4.ping_group_range"], "0 2147483647");
}

#[test]
fn cgroup_namespace_on_unified_hosts() {
    let mut v2 = host();
    v2.cgroup_unified = true;
    let built = build_spec(
        &image(sh()),
        &opts(),
        Path::new("/r"),
        &StaticUserDb::default(),
        &v2,
    )
    .unwrap();
    assert!(namespaces_of(&built)
        .iter()
        .any(|(t, _)| *t == LinuxNamespaceType::Cgroup));
    assert!(!namespaces_of(&build(sh(), &opts()).unwrap())
        .iter()
        .any(|(t, _)| *t == LinuxNamespaceType::Cgroup));
}

// ---- LIMITS ----------------------------------------------------------------------------------

fn resources_of(built: &BuiltSpec) -> oci_spec::runtime::LinuxResources {
    linux(built).resources().clone().unwrap()
}

#[test]
fn cpus_become_quota_and_period() {
    for (cpus, quota) in [(1.5, 150_000), (0.5, 50_000), (2.0, 200_000), (0.01, 1_000)] {
        let built = build(
            sh(),
            &RunOptions {
                cpus: Some(cpus),
                ..opts()
            },
        )
        .unwrap();
        let cpu = resources_of(&built).cpu().clone().unwrap();
        assert_eq!(cpu.quota(), Some(quota), "{cpus}");
        assert_eq!(cpu.period(), Some(100_000));
    }
    let unlimited = build(
        sh(),
        &RunOptions {
            cpus: Some(0.0),
            ..opts()
        },
    )
    .unwrap();
    assert!(resources_of(&unlimited).cpu().is_none());
    for bad in [2.5, 0.001, -1.0, f64::NAN, f64::INFINITY] {
        let err = build(
            sh(),
            &RunOptions {
                cpus: Some(bad),
                ..opts()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "range of cpus is from 0.01 to 2.00, as there are only 2 cpus available"
        );
    }
}

#[test]
fn memory_limit_without_swap() {
    let built = build(
        sh(),
        &RunOptions {
            memory: Some(256 << 20),
            ..opts()
        },
    )
    .unwrap();
    let memory = resources_of(&built).memory().unwrap();
    assert_eq!(memory.limit(), Some(256 << 20));
    assert_eq!(memory.swap(), Some(256 << 20));

    let unlimited_swap = build(
        sh(),
        &RunOptions {
            memory: Some(256 << 20),
            memory_swap: Some(-1),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(
        resources_of(&unlimited_swap).memory().unwrap().swap(),
        Some(-1)
    );

    let more = build(
        sh(),
        &RunOptions {
            memory: Some(256 << 20),
            memory_swap: Some(512 << 20),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(
        resources_of(&more).memory().unwrap().swap(),
        Some(512 << 20)
    );
    assert!(resources_of(&build(sh(), &opts()).unwrap())
        .memory()
        .is_none());
}

#[test]
fn memory_errors() {
    let with = |memory, memory_swap| {
        build(
            sh(),
            &RunOptions {
                memory,
                memory_swap,
                ..opts()
            },
        )
        .unwrap_err()
    };
    assert!(matches!(with(Some(1 << 20), None), SpecError::MemoryTooLow));
    assert!(matches!(
        with(None, Some(1 << 30)),
        SpecError::SwapWithoutMemory
    ));
    assert!(matches!(
        with(Some(1 << 30), Some(1 << 29)),
        SpecError::SwapBelowMemory
    ));
}

#[test]
fn pids_limit() {
    let built = build(
        sh(),
        &RunOptions {
            pids_limit: Some(100),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(resources_of(&built).pids().unwrap().limit(), 100);
    for unlimited in [None, Some(0), Some(-1)] {
        let built = build(
            sh(),
            &RunOptions {
                pids_limit: unlimited,
                ..opts()
            },
        )
        .unwrap();
        assert!(resources_of(&built).pids().is_none());
    }
}

#[test]
fn nofile_is_capped_by_the_callers_hard_limit() {
    let nofile = |hard: u64| {
        let mut h = host();
        h.nofile_hard = hard;
        let built = build_spec(
            &image(sh()),
            &opts(),
            Path::new("/r"),
            &StaticUserDb::default(),
            &h,
        )
        .unwrap();
        let rlimits = built
            .spec
            .process()
            .as_ref()
            .unwrap()
            .rlimits()
            .clone()
            .unwrap();
        assert_eq!(rlimits.len(), 1);
        assert_eq!(rlimits[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!(rlimits[0].soft(), rlimits[0].hard());
        rlimits[0].hard()
    };
    assert_eq!(nofile(20000), 20000);
    assert_eq!(nofile(u64::MAX), 1 << 20);
}

#[test]
fn cpu_shares_and_memory_reservation() {
    let built = build(
        sh(),
        &RunOptions {
            cpu_shares: Some(512),
            cpus: Some(1.0),
            memory_reservation: Some(64 << 20),
            ..opts()
        },
    )
    .unwrap();
    let r = resources_of(&built);
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(cpu.shares(), Some(512));
    assert_eq!(cpu.quota(), Some(100_000));
    // A reservation alone: no hard limit, no swap setting.
    let memory = r.memory().unwrap();
    assert_eq!(memory.reservation(), Some(64 << 20));
    assert_eq!((memory.limit(), memory.swap()), (None, None));
    // Shares are clamped to the kernel's range; 0 is the default.
    let shares = |s| {
        resources_of(
            &build(
                sh(),
                &RunOptions {
                    cpu_shares: Some(s),
                    ..opts()
                },
            )
            .unwrap(),
        )
        .cpu()
        .clone()
        .and_then(|c| c.shares())
    };
    assert_eq!(shares(1), Some(2));
    assert_eq!(shares(1 << 20), Some(262_144));
    assert_eq!(shares(0), None);
    // Both limits.
    let both = build(
        sh(),
        &RunOptions {
            memory: Some(256 << 20),
            memory_reservation: Some(128 << 20),
            ..opts()
        },
    )
    .unwrap();
    let memory = resources_of(&both).memory().unwrap();
    assert_eq!(
        (memory.limit(), memory.reservation()),
        (Some(256 << 20), Some(128 << 20))
    );
    let err = |memory, memory_reservation| {
        build(
            sh(),
            &RunOptions {
                memory,
                memory_reservation,
                ..opts()
            },
        )
        .unwrap_err()
    };
    assert!(matches!(
        err(None, Some(1 << 20)),
        SpecError::ReservationTooLow
    ));
    assert!(matches!(
        err(Some(64 << 20), Some(128 << 20)),
        SpecError::ReservationAboveMemory
    ));
}

#[test]
fn ulimits_become_rlimits() {
    let built = build(
        sh(),
        &RunOptions {
            ulimits: vec![
                Ulimit::parse("nofile=1024:2048").unwrap(),
                Ulimit::parse("nproc=64").unwrap(),
                Ulimit::parse("core=-1").unwrap(),
                Ulimit::parse("nproc=32:64").unwrap(),
            ],
            ..opts()
        },
    )
    .unwrap();
    let rlimits: Vec<(PosixRlimitType, u64, u64)> = built
        .spec
        .process()
        .as_ref()
        .unwrap()
        .rlimits()
        .clone()
        .unwrap()
        .iter()
        .map(|r| (r.typ(), r.soft(), r.hard()))
        .collect();
    // nofile replaces the default (not capped: Docker passes it as given); the last nproc wins.
    assert_eq!(
        rlimits,
        vec![
            (PosixRlimitType::RlimitNofile, 1024, 2048),
            (PosixRlimitType::RlimitCore, u64::MAX, u64::MAX),
            (PosixRlimitType::RlimitNproc, 32, 64),
        ]
    );
}

#[test]
fn privileged_gets_host_devices_others_do_not() {
    let null = oci_spec::runtime::LinuxDeviceBuilder::default()
        .path("/dev/null")
        .typ(oci_spec::runtime::LinuxDeviceType::C)
        .major(1)
        .minor(3)
        .build()
        .unwrap();
    let with = |privileged| {
        let built = build(
            sh(),
            &RunOptions {
                privileged,
                devices: vec![null.clone()],
                ..opts()
            },
        )
        .unwrap();
        linux(&built).devices().clone()
    };
    assert_eq!(with(true), Some(vec![null.clone()]));
    assert_eq!(with(false), None);
}

// ---- THE REST OF THE SPEC --------------------------------------------------------------------

fn mount_at<'a>(built: &'a BuiltSpec, destination: &str) -> &'a Mount {
    built
        .spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new(destination))
        .unwrap()
}

#[test]
fn root_hostname_terminal_cgroups_and_annotations() {
    let mut img = sh();
    img.set_labels(Some(HashMap::from([
        ("from".to_string(), "image".to_string()),
        ("shared".to_string(), "image".to_string()),
    ])));
    let o = RunOptions {
        readonly_rootfs: true,
        tty: true,
        domainname: Some("example.com".to_string()),
        cgroups_path: "berth/abc".to_string(),
        labels: BTreeMap::from([("shared".to_string(), "run".to_string())]),
        shm_size: Some(1 << 20),
        ..opts()
    };
    let built = build(img, &o).unwrap();
    let spec = &built.spec;
    assert_eq!(spec.version(), "1.1.0");
    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.path(), Path::new("/var/lib/berth/c/rootfs"));
    assert_eq!(root.readonly(), Some(true));
    assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
    assert_eq!(spec.domainname().as_deref(), Some("example.com"));
    assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(true));
    assert_eq!(
        linux(&built).cgroups_path().as_deref(),
        Some(Path::new("berth/abc"))
    );
    let annotations = spec.annotations().clone().unwrap();
    assert_eq!(annotations["from"], "image");
    assert_eq!(annotations["shared"], "run");
    let shm = mount_at(&built, "/dev/shm");
    assert!(shm
        .options()
        .as_ref()
        .unwrap()
        .contains(&"size=1048576".to_string()));
}

#[test]
fn empty_hostname_and_labels_are_left_out() {
    let built = build(
        sh(),
        &RunOptions {
            hostname: String::new(),
            ..opts()
        },
    )
    .unwrap();
    assert!(built.spec.hostname().is_none());
    assert!(built.spec.annotations().is_none());
    assert!(!env(&built).iter().any(|e| e.starts_with("HOSTNAME=")));
    assert!(linux(&built).cgroups_path().is_none());
}

#[test]
fn user_mounts_reach_the_spec() {
    let o = RunOptions {
        mounts: vec![
            MountSpec::Bind {
                source: PathBuf::from("/var/lib/berth/volumes/data/_data"),
                destination: "/data".to_string(),
                readonly: true,
            },
            MountSpec::Tmpfs {
                destination: "/run".to_string(),
                options: "size=10m".to_string(),
            },
        ],
        etc_files: EtcFiles {
            hosts: Some(PathBuf::from("/run/berth/c/hosts")),
            ..EtcFiles::default()
        },
        ..opts()
    };
    let built = build(sh(), &o).unwrap();
    let data = mount_at(&built, "/data");
    assert_eq!(data.options().clone().unwrap(), ["rbind", "ro", "rprivate"]);
    assert_eq!(mount_at(&built, "/run").typ().as_deref(), Some("tmpfs"));
    assert_eq!(
        mount_at(&built, "/etc/hosts").source().as_deref(),
        Some(Path::new("/run/berth/c/hosts"))
    );
    let bad = RunOptions {
        mounts: vec![MountSpec::Bind {
            source: PathBuf::from("/x"),
            destination: "relative".to_string(),
            readonly: false,
        }],
        ..opts()
    };
    assert!(matches!(build(sh(), &bad), Err(SpecError::Mount(_))));
}

#[test]
fn spec_serialises_and_round_trips() {
    let built = build(
        config(Some(&["/entry"]), Some(&["x"])),
        &RunOptions {
            memory: Some(64 << 20),
            cpus: Some(1.0),
            pids_limit: Some(50),
            user: Some("app".to_string()),
            ..opts()
        },
    )
    .unwrap();
    let json = serde_json::to_string_pretty(&built.spec).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["ociVersion"], "1.1.0");
    assert_eq!(value["process"]["args"], serde_json::json!(["/entry", "x"]));
    assert_eq!(value["process"]["noNewPrivileges"], true);
    assert_eq!(value["process"]["user"]["uid"], 1000);
    assert_eq!(
        value["process"]["user"]["additionalGids"],
        serde_json::json!([1000, 50])
    );
    assert_eq!(value["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
    assert_eq!(value["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(value["linux"]["resources"]["cpu"]["quota"], 100_000);
    assert_eq!(value["linux"]["resources"]["pids"]["limit"], 50);
    assert_eq!(value["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(value["linux"]["namespaces"][0]["type"], "mount");
    assert_eq!(value["mounts"][0]["destination"], "/proc");
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, built.spec);
}
