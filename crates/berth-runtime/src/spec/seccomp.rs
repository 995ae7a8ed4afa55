//! Docker's default seccomp profile.
//!
//! The data is the syscall list of moby's `profiles/seccomp` default profile as shipped with
//! Docker 28 (kernel 6.13 / libseccomp 2.6 syscalls; `io_uring_*` not allowed since Docker 25;
//! `lsm_*` and `unshare` gated by `CAP_SYS_ADMIN`). Like Docker, the profile is resolved when the
//! spec is built: rules are kept or dropped by the container's bounding capabilities and the
//! host architecture, and the result is a plain OCI `linux.seccomp`: default action
//! `SCMP_ACT_ERRNO` with `EPERM`, an allow-list, a few argument filters.
//!
//! Rules that Docker restricts to kernels ≥ 4.8 are always kept: Berth does not run on older
//! kernels.

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};
use oci_spec::OciSpecError;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
const AF_VSOCK: u64 = 40;
/// `CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |
/// CLONE_NEWCGROUP`: clone with any of these needs `CAP_SYS_ADMIN`.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

#[derive(Clone, Copy)]
enum Action {
    Allow,
    Errno(u32),
}

#[derive(Clone, Copy)]
struct Arg {
    index: usize,
    value: u64,
    op: LinuxSeccompOperator,
}

/// One rule of the profile with Docker's `includes`/`excludes` filters. Architectures use
/// Docker's (Go) names: `amd64`, `arm64`, `x86`, `x32`, `arm`, `s390x`, ...
#[derive(Clone, Copy)]
struct Rule {
    names: &'static [&'static str],
    action: Action,
    args: &'static [Arg],
    /// Kept only if the container has all of these capabilities.
    include_caps: &'static [Capability],
    /// Kept only on one of these architectures.
    include_arches: &'static [&'static str],
    /// Dropped if the container has any of these capabilities.
    exclude_caps: &'static [Capability],
    /// Dropped on these architectures.
    exclude_arches: &'static [&'static str],
}

impl Rule {
    const fn allow(names: &'static [&'static str]) -> Self {
        Self {
            names,
            action: Action::Allow,
            args: &[],
            include_caps: &[],
            include_arches: &[],
            exclude_caps: &[],
            exclude_arches: &[],
        }
    }
    const fn errno(names: &'static [&'static str], errno: u32) -> Self {
        Self {
            action: Action::Errno(errno),
            ..Self::allow(names)
        }
    }
    const fn args(self, args: &'static [Arg]) -> Self {
        Self { args, ..self }
    }
    const fn with_caps(self, caps: &'static [Capability]) -> Self {
        Self {
            include_caps: caps,
            ..self
        }
    }
    const fn on_arches(self, arches: &'static [&'static str]) -> Self {
        Self {
            include_arches: arches,
            ..self
        }
    }
    const fn without_caps(self, caps: &'static [Capability]) -> Self {
        Self {
            exclude_caps: caps,
            ..self
        }
    }
    const fn not_on_arches(self, arches: &'static [&'static str]) -> Self {
        Self {
            exclude_arches: arches,
            ..self
        }
    }

    fn applies(&self, caps: &[Capability], arch: &str) -> bool {
        if self.exclude_arches.contains(&arch) || self.exclude_caps.iter().any(|c| caps.contains(c))
        {
            return false;
        }
        if !self.include_arches.is_empty() && !self.include_arches.contains(&arch) {
            return false;
        }
        self.include_caps.iter().all(|c| caps.contains(c))
    }
}

const fn arg_eq(index: usize, value: u64) -> Arg {
    Arg {
        index,
        value,
        op: LinuxSeccompOperator::ScmpCmpEq,
    }
}

/// Syscalls every container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

use Capability as C;

/// The profile, in Docker's rule order.
const RULES: &[Rule] = &[
    Rule::allow(ALLOWED),
    // Docker: kernel >= 4.8 only (ptrace could bypass seccomp before).
    Rule::allow(&["process_vm_readv", "process_vm_writev", "ptrace"]),
    Rule::allow(&["socket"]).args(&[Arg {
        index: 0,
        value: AF_VSOCK,
        op: LinuxSeccompOperator::ScmpCmpNe,
    }]),
    Rule::allow(&["personality"]).args(&[arg_eq(0, 0x0)]),
    Rule::allow(&["personality"]).args(&[arg_eq(0, 0x0008)]),
    Rule::allow(&["personality"]).args(&[arg_eq(0, 0x20000)]),
    Rule::allow(&["personality"]).args(&[arg_eq(0, 0x20008)]),
    Rule::allow(&["personality"]).args(&[arg_eq(0, 0xffff_ffff)]),
    Rule::allow(&["sync_file_range2", "swapcontext"]).on_arches(&["ppc64le"]),
    Rule::allow(&[
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ])
    .on_arches(&["arm", "arm64"]),
    Rule::allow(&["arch_prctl"]).on_arches(&["amd64", "x32"]),
    Rule::allow(&["modify_ldt"]).on_arches(&["amd64", "x32", "x86"]),
    Rule::allow(&[
        "s390_pci_mmio_read",
        "s390_pci_mmio_write",
        "s390_runtime_instr",
    ])
    .on_arches(&["s390", "s390x"]),
    Rule::allow(&["riscv_flush_icache"]).on_arches(&["riscv64"]),
    Rule::allow(&["open_by_handle_at"]).with_caps(&[C::DacReadSearch]),
    Rule::allow(&[
        "bpf",
        "clone",
        "clone3",
        "fanotify_init",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "lookup_dcookie",
        "lsm_get_self_attr",
        "lsm_list_modules",
        "lsm_set_self_attr",
        "mount",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "perf_event_open",
        "quotactl",
        "quotactl_fd",
        "setdomainname",
        "sethostname",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
    ])
    .with_caps(&[C::SysAdmin]),
    // Without CAP_SYS_ADMIN, clone may not create namespaces.
    Rule::allow(&["clone"])
        .args(&[Arg {
            index: 0,
            value: CLONE_NAMESPACE_FLAGS,
            op: LinuxSeccompOperator::ScmpCmpMaskedEq,
        }])
        .without_caps(&[C::SysAdmin])
        .not_on_arches(&["s390", "s390x"]),
    // s390 passes the clone flags as the second argument.
    Rule::allow(&["clone"])
        .args(&[Arg {
            index: 1,
            value: CLONE_NAMESPACE_FLAGS,
            op: LinuxSeccompOperator::ScmpCmpMaskedEq,
        }])
        .on_arches(&["s390", "s390x"])
        .without_caps(&[C::SysAdmin]),
    // clone3's flags are behind a pointer, so it cannot be filtered: ENOSYS makes libcs fall
    // back to clone.
    Rule::errno(&["clone3"], ENOSYS).without_caps(&[C::SysAdmin]),
    Rule::allow(&["reboot"]).with_caps(&[C::SysBoot]),
    Rule::allow(&["chroot"]).with_caps(&[C::SysChroot]),
    Rule::allow(&["delete_module", "init_module", "finit_module"]).with_caps(&[C::SysModule]),
    Rule::allow(&["acct"]).with_caps(&[C::SysPacct]),
    Rule::allow(&[
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ])
    .with_caps(&[C::SysPtrace]),
    Rule::allow(&["iopl", "ioperm"]).with_caps(&[C::SysRawio]),
    Rule::allow(&["settimeofday", "stime", "clock_settime", "clock_settime64"])
        .with_caps(&[C::SysTime]),
    Rule::allow(&["vhangup"]).with_caps(&[C::SysTtyConfig]),
    Rule::allow(&[
        "get_mempolicy",
        "mbind",
        "set_mempolicy",
        "set_mempolicy_home_node",
    ])
    .with_caps(&[C::SysNice]),
    Rule::allow(&["syslog"]).with_caps(&[C::Syslog]),
    Rule::allow(&["bpf"]).with_caps(&[C::Bpf]),
    Rule::allow(&["perf_event_open"]).with_caps(&[C::Perfmon]),
];

/// Docker's (Go) architecture name for a Rust `std::env::consts::ARCH`.
pub fn docker_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "mips64" => "mips64",
        other => other,
    }
}

/// The seccomp architectures of a host: the native one and its compat sub-architectures
/// (Docker's `archMap`). Empty when Docker has no entry (the runtime then uses the native one).
fn architectures(docker_arch: &str) -> Vec<Arch> {
    match docker_arch {
        "amd64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "arm64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "mips64" => vec![
            Arch::ScmpArchMips64,
            Arch::ScmpArchMips,
            Arch::ScmpArchMips64n32,
        ],
        "mipsel64" => vec![
            Arch::ScmpArchMipsel64,
            Arch::ScmpArchMipsel,
            Arch::ScmpArchMipsel64n32,
        ],
        "s390x" => vec![Arch::ScmpArchS390x, Arch::ScmpArchS390],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        _ => Vec::new(),
    }
}

/// Docker's default profile resolved for a container whose bounding set is `caps`, on a host
/// whose `std::env::consts::ARCH` is `rust_arch`.
pub fn default_profile(caps: &[Capability], rust_arch: &str) -> Result<LinuxSeccomp, OciSpecError> {
    let arch = docker_arch(rust_arch);
    let syscalls = RULES
        .iter()
        .filter(|rule| rule.applies(caps, arch))
        .map(to_oci)
        .collect::<Result<Vec<_>, _>>()?;
    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(LinuxSeccompAction::ScmpActErrno);
    seccomp.set_default_errno_ret(Some(EPERM));
    let arches = architectures(arch);
    if !arches.is_empty() {
        seccomp.set_architectures(Some(arches));
    }
    seccomp.set_syscalls(Some(syscalls));
    Ok(seccomp)
}

fn to_oci(rule: &Rule) -> Result<LinuxSyscall, OciSpecError> {
    let mut syscall = LinuxSyscall::default();
    syscall.set_names(rule.names.iter().map(|n| n.to_string()).collect());
    match rule.action {
        Action::Allow => {
            syscall.set_action(LinuxSeccompAction::ScmpActAllow);
        }
        Action::Errno(errno) => {
            syscall.set_action(LinuxSeccompAction::ScmpActErrno);
            syscall.set_errno_ret(Some(errno));
        }
    }
    if !rule.args.is_empty() {
        let args = rule
            .args
            .iter()
            .map(|a| {
                LinuxSeccompArgBuilder::default()
                    .index(a.index)
                    .value(a.value)
                    .op(a.op)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        syscall.set_args(Some(args));
    }
    Ok(syscall)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::security::DEFAULT_CAPABILITIES;

    /// Names allowed unconditionally (no argument filter).
    fn plain_allowed(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
            .flat_map(|r| r.names().iter().cloned())
            .collect()
    }

    fn rules_for<'a>(s: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn allow_list_has_no_duplicates() {
        let mut names = ALLOWED.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALLOWED.len());
        assert_eq!(ALLOWED.len(), 361);
    }

    #[test]
    fn default_is_eperm_on_amd64_with_compat_arches() {
        let s = default_profile(&DEFAULT_CAPABILITIES, "x86_64").unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        assert_eq!(
            s.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let s = default_profile(&DEFAULT_CAPABILITIES, "aarch64").unwrap();
        assert_eq!(
            s.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        assert!(default_profile(&DEFAULT_CAPABILITIES, "sparc64")
            .unwrap()
            .architectures()
            .is_none());
    }

    #[test]
    fn common_syscalls_are_allowed_and_dangerous_ones_are_not() {
        let s = default_profile(&DEFAULT_CAPABILITIES, "x86_64").unwrap();
        let allowed = plain_allowed(&s);
        for name in [
            "read",
            "write",
            "execve",
            "openat",
            "futex",
            "exit_group",
            "ptrace",
        ] {
            assert!(
                allowed.iter().any(|n| n == name),
                "{name} should be allowed"
            );
        }
        for name in [
            "kexec_load",
            "kexec_file_load",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "bpf",
            "init_module",
            "reboot",
            "swapon",
            "keyctl",
            "add_key",
            "userfaultfd",
            "io_uring_setup",
            "open_by_handle_at",
            "clock_settime",
            "lsm_set_self_attr",
        ] {
            assert!(
                rules_for(&s, name).is_empty(),
                "{name} should not be allowed by default"
            );
        }
        // chroot is gated by CAP_SYS_CHROOT, which is a default capability.
        assert_eq!(rules_for(&s, "chroot").len(), 1);
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags() {
        let s = default_profile(&DEFAULT_CAPABILITIES, "x86_64").unwrap();
        let clone = rules_for(&s, "clone");
        assert_eq!(clone.len(), 1);
        let args = clone[0].args().as_ref().unwrap();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].index(), 0);
        assert_eq!(args[0].value(), 2_114_060_288);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        let clone3 = rules_for(&s, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));
    }

    #[test]
    fn sys_admin_unlocks_mount_and_unfiltered_clone() {
        let mut caps = DEFAULT_CAPABILITIES.to_vec();
        caps.push(Capability::SysAdmin);
        let s = default_profile(&caps, "x86_64").unwrap();
        let allowed = plain_allowed(&s);
        for name in [
            "mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf",
        ] {
            assert!(allowed.iter().any(|n| n == name), "{name}");
        }
        assert!(rules_for(&s, "clone").iter().all(|r| r.args().is_none()));
        assert!(rules_for(&s, "clone3")
            .iter()
            .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow));
    }

    #[test]
    fn capability_gated_rules_follow_the_bounding_set() {
        let s = default_profile(&[Capability::SysPtrace, Capability::SysTime], "x86_64").unwrap();
        let allowed = plain_allowed(&s);
        for name in ["kcmp", "pidfd_getfd", "clock_settime"] {
            assert!(allowed.iter().any(|n| n == name), "{name}");
        }
        // Without CAP_SYS_CHROOT (dropped), chroot is not allowed.
        assert!(rules_for(&s, "chroot").is_empty());
    }

    #[test]
    fn socket_blocks_only_vsock_and_personality_is_filtered() {
        let s = default_profile(&DEFAULT_CAPABILITIES, "x86_64").unwrap();
        let socket = rules_for(&s, "socket");
        assert_eq!(socket.len(), 1);
        let arg = socket[0].args().as_ref().unwrap()[0];
        assert_eq!((arg.index(), arg.value()), (0, 40));
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpNe);
        let values: Vec<u64> = rules_for(&s, "personality")
            .iter()
            .map(|r| r.args().as_ref().unwrap()[0].value())
            .collect();
        assert_eq!(values, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    #[test]
    fn arch_specific_rules() {
        let amd64 = default_profile(&DEFAULT_CAPABILITIES, "x86_64").unwrap();
        assert_eq!(rules_for(&amd64, "arch_prctl").len(), 1);
        assert_eq!(rules_for(&amd64, "modify_ldt").len(), 1);
        assert!(rules_for(&amd64, "set_tls").is_empty());
        let arm64 = default_profile(&DEFAULT_CAPABILITIES, "aarch64").unwrap();
        assert!(rules_for(&arm64, "arch_prctl").is_empty());
        assert_eq!(rules_for(&arm64, "set_tls").len(), 1);
        let s390x = default_profile(&DEFAULT_CAPABILITIES, "s390x").unwrap();
        let clone = rules_for(&s390x, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args().as_ref().unwrap()[0].index(), 1);
    }

    #[test]
    fn serialises_like_docker() {
        let s = default_profile(&DEFAULT_CAPABILITIES, "x86_64").unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        assert_eq!(json["architectures"][0], "SCMP_ARCH_X86_64");
        assert_eq!(json["syscalls"][0]["action"], "SCMP_ACT_ALLOW");
        let back: LinuxSeccomp = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
