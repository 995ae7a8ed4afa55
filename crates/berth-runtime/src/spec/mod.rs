//! The OCI runtime spec of a container, built from an image config and `berth run` options.
//!
//! Pure: [`build_spec`] only computes. The caller gathers what it needs from the outside
//! world first: the image config, the container's user database ([`RootfsUserDb`] reads it
//! from the unpacked rootfs), host facts ([`HostInfo::detect`]), resolved host paths of volumes
//! and the caller's environment for `-e NAME`.
//!
//! What the spec holds, and where Docker's rules come from:
//! - **process**: args, env, cwd and user merged from the image config and the options with
//!   Docker's rules (moby `daemon/create.go` `merge`/`mergeAndVerifyConfig`,
//!   `container.ReplaceOrAppendEnvValues`, runc's `GetExecUserPath`), `RLIMIT_NOFILE`,
//!   `noNewPrivileges`, the capability sets ([`security`]);
//! - **mounts**: Docker's standard mounts, user mounts and `/etc` files ([`mounts`]);
//! - **linux**: namespaces per [`NetMode`], masked and read-only paths, seccomp
//!   ([`seccomp`]), device cgroup rules, cpu/memory/pids limits, sysctls, cgroups path.
//!
//! `--privileged` gives every capability, no seccomp, no masked or read-only paths, a
//! read-write `/sys`, and every device in the device cgroup (host device nodes are not added
//! to `/dev`).

pub mod host;
pub mod mounts;
pub mod seccomp;
pub mod security;
pub mod ulimit;
pub mod user;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{Config as ImageConfig, ImageConfiguration};
use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

pub use host::HostInfo;
pub use mounts::{hostname_file, hosts_file, EtcFiles, ExtraHost, MountError, MountSpec};
pub use security::{CapabilityError, DEFAULT_CAPABILITIES};
pub use ulimit::{Ulimit, UlimitError};
pub use user::{
    resolve_user, GroupEntry, PasswdEntry, ResolvedUser, RootfsUserDb, StaticUserDb, UserDb,
    UserError,
};

/// `PATH` when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `/dev/shm` size when none is given (Docker's 64 MiB).
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// The `RLIMIT_NOFILE` a container gets, unless the caller's hard limit is lower.
pub const DEFAULT_NOFILE: u64 = 1 << 20;

/// CFS period used for `--cpus`, in microseconds.
pub const CPU_PERIOD: u64 = 100_000;

/// The range of cgroup v1 `cpu.shares` (the kernel's `MIN_SHARES`/`MAX_SHARES`).
pub const MIN_CPU_SHARES: u64 = 2;
pub const MAX_CPU_SHARES: u64 = 262_144;

/// The smallest `--memory` Docker accepts (6 MiB).
pub const MIN_MEMORY: i64 = 6 << 20;

/// Signal 15, the default stop signal.
pub const SIGTERM: i32 = 15;

/// Errors of building a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the options nor the image give a command.
    #[error("no command specified")]
    NoCommand,
    /// An `-e` entry with an empty name (`=x`).
    #[error("invalid environment variable: {0}")]
    InvalidEnv(String),
    /// A NUL byte where the kernel cannot take one.
    #[error("{0} contains a nul byte")]
    NulByte(&'static str),
    /// A relative `-w`.
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    RelativeWorkdir(String),
    /// A stop signal that is not a signal.
    #[error("invalid signal: {0}")]
    InvalidSignal(String),
    /// `--cpus` outside what the host has.
    #[error("range of cpus is from 0.01 to {max}.00, as there are only {max} cpus available")]
    CpusOutOfRange {
        /// CPUs of the host.
        max: usize,
    },
    /// `--memory` below 6 MiB.
    #[error("minimum memory limit allowed is 6mb")]
    MemoryTooLow,
    /// `--memory-swap` without `--memory`.
    #[error("you should always set the memory limit when using memoryswap limit")]
    SwapWithoutMemory,
    /// `--memory-swap` below `--memory`.
    #[error("minimum memoryswap limit should be larger than memory limit")]
    SwapBelowMemory,
    /// `--memory-reservation` below 6 MiB.
    #[error("minimum memory reservation allowed is 6MB")]
    ReservationTooLow,
    /// `--memory-reservation` above `--memory`.
    #[error("minimum memory limit can not be less than memory reservation limit, see usage")]
    ReservationAboveMemory,
    /// A `--ulimit` was refused.
    #[error(transparent)]
    Ulimit(#[from] UlimitError),
    /// The user could not be resolved.
    #[error(transparent)]
    User(#[from] UserError),
    /// A `--cap-add`/`--cap-drop` value was refused.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// A mount was refused.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// oci-spec refused a value.
    #[error("invalid runtime spec")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// The network namespace of a container (`--network`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetMode {
    /// A new, empty network namespace; the network is set up after the container is created.
    #[default]
    NewNs,
    /// `--network host`: the host's namespace.
    Host,
    /// Join a namespace made beforehand (e.g. a bind-mounted `/run/netns/NAME`).
    Path(PathBuf),
    /// `--network none`: a new namespace with only loopback.
    None,
}

/// The `berth run` options that shape the spec. Paths are already resolved by the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    /// Host name in the container and in `HOSTNAME` (Docker: the first 12 hex digits of the
    /// id, or the host's name with `--network host`). Empty: not set.
    pub hostname: String,
    /// Domain name (`--domainname`).
    pub domainname: Option<String>,
    /// `-e` entries: `NAME=VALUE` sets, a bare `NAME` unsets (the caller replaces `-e NAME` by
    /// `NAME=VALUE` when `NAME` is in its own environment, as the docker CLI does).
    pub env: Vec<String>,
    /// Command after the image name; empty means the image's `Cmd`.
    pub cmd: Vec<String>,
    /// `--entrypoint`: `None` keeps the image's; `Some(vec![])` or `Some(vec!["".into()])` is
    /// `--entrypoint ""` (no entrypoint). Given in any form, the image's `Cmd` is not used.
    pub entrypoint: Option<Vec<String>>,
    /// `--user`: `uid`, `uid:gid`, `name`, `name:group`; `None` or empty: the image's `User`.
    pub user: Option<String>,
    /// `-w`: absolute path; `None`: the image's `WorkingDir`, else `/`.
    pub workdir: Option<String>,
    /// `-v`, named volumes and `--tmpfs`.
    pub mounts: Vec<MountSpec>,
    /// Engine-written `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`.
    pub etc_files: EtcFiles,
    /// `--shm-size` in bytes; `None`: 64 MiB.
    pub shm_size: Option<u64>,
    /// `--cpus` (fraction of CPUs); `None` or `0`: unlimited.
    pub cpus: Option<f64>,
    /// `--memory` in bytes; `None` or `<= 0`: unlimited.
    pub memory: Option<i64>,
    /// `--memory-swap` (memory + swap) in bytes, `-1` unlimited swap; `None`: equal to
    /// `memory`, i.e. no swap. (Docker's default would be twice `memory`.)
    pub memory_swap: Option<i64>,
    /// `--pids-limit`; `None`, `0` or `-1`: unlimited.
    pub pids_limit: Option<i64>,
    /// `--cpu-shares` (relative weight; cgroup v1 `cpu.shares`, converted to `cpu.weight` on
    /// v2 by the runtime); `None` or `0`: the default (1024).
    pub cpu_shares: Option<u64>,
    /// `--memory-reservation` in bytes: the soft limit (v1 `memory.soft_limit_in_bytes`, v2
    /// `memory.low`); `None` or `<= 0`: none.
    pub memory_reservation: Option<i64>,
    /// `--ulimit`s; `nofile` replaces the default `RLIMIT_NOFILE`.
    pub ulimits: Vec<Ulimit>,
    /// Host devices given to a `--privileged` container (Docker adds every host device).
    pub devices: Vec<oci_spec::runtime::LinuxDevice>,
    /// `--network`.
    pub network: NetMode,
    /// `--read-only`.
    pub readonly_rootfs: bool,
    /// `--cap-add` (`NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`...).
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `-t`: a terminal, and `TERM=xterm`.
    pub tty: bool,
    /// `--stop-signal`; `None`: the image's `StopSignal`, else SIGTERM.
    pub stop_signal: Option<String>,
    /// `--label`s, over the image's labels; they become the spec's annotations.
    pub labels: BTreeMap<String, String>,
    /// Cgroup path of the container (e.g. `berth/<id>`); empty: left to the runtime.
    pub cgroups_path: String,
}

/// A built spec and what goes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltSpec {
    /// The runtime spec (`config.json`).
    pub spec: Spec,
    /// Signal number `berth stop` sends first.
    pub stop_signal: i32,
    /// The resolved user (for e.g. creating the working directory with its owner, as
    /// Docker does; the spec's cwd must exist when the container starts).
    pub user: ResolvedUser,
}

/// Builds the runtime spec of a container from its image config and run options.
///
/// `rootfs` becomes `root.path`; `users` is the container's user database (usually
/// [`RootfsUserDb::new(rootfs)`](RootfsUserDb)); `host` holds the host facts.
pub fn build_spec(
    image: &ImageConfiguration,
    opts: &RunOptions,
    rootfs: &Path,
    users: &dyn UserDb,
    host: &HostInfo,
) -> Result<BuiltSpec, SpecError> {
    let config = image.config().as_ref();

    let args = command(config, opts)?;
    let user_spec = opts
        .user
        .as_deref()
        .filter(|u| !u.is_empty())
        .or_else(|| config.and_then(|c| c.user().as_deref()))
        .unwrap_or("");
    let user = resolve_user(user_spec, users)?;
    let image_env = config.and_then(|c| c.env().as_deref()).unwrap_or_default();
    let env = environment(image_env, opts, &user.home)?;
    let cwd = working_dir(config, opts)?;
    let stop_signal = parse_signal(
        opts.stop_signal
            .as_deref()
            .or_else(|| config.and_then(|c| c.stop_signal().as_deref()))
            .unwrap_or("SIGTERM"),
    )?;
    for (what, value) in [
        ("hostname", opts.hostname.as_str()),
        ("working directory", &cwd),
    ] {
        if value.contains('\0') {
            return Err(SpecError::NulByte(what));
        }
    }

    let mut caps = security::container_capabilities(
        &opts.cap_add,
        &opts.cap_drop,
        opts.privileged,
        host.cap_last_cap,
    )?;
    // "All" is all that the caller itself may grant (a capset beyond it fails).
    if opts.privileged || opts.cap_add.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        caps.retain(|c| {
            let n = security::capability_number(*c);
            n < 64 && host.cap_bounding & (1u64 << n) != 0
        });
    }
    let nofile = DEFAULT_NOFILE.min(host.nofile_hard);
    let mut process = ProcessBuilder::default()
        .terminal(opts.tty)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()?,
        )
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capability_sets(&caps, user.uid == 0)?)
        .rlimits(rlimits(&opts.ulimits, nofile)?)
        .build()?;
    // Privileged containers may gain privileges (setuid binaries); absent rather than `false`,
    // as youki treats any present value like `true` when ordering the seccomp setup.
    process.set_no_new_privileges((!opts.privileged).then_some(true));

    let mounts = mounts::container_mounts(
        opts.privileged,
        opts.shm_size.unwrap_or(DEFAULT_SHM_SIZE),
        &opts.mounts,
        &opts.etc_files,
        opts.readonly_rootfs,
    )?;

    // oci-spec's builders start from its own defaults (hostname "youki", default mounts,
    // masked paths...), so every field that matters is set explicitly, absent ones included.
    let mut linux = Linux::default();
    linux.set_namespaces(Some(namespaces(&opts.network, host.cgroup_unified)));
    linux.set_devices(Some(opts.devices.clone()).filter(|d| opts.privileged && !d.is_empty()));
    linux.set_resources(Some(resources(opts, host)?));
    linux.set_cgroups_path(
        Some(PathBuf::from(&opts.cgroups_path)).filter(|_| !opts.cgroups_path.is_empty()),
    );
    // Docker lets unprivileged processes bind low ports and ping in a private netns.
    linux.set_sysctl((opts.network != NetMode::Host).then(|| {
        HashMap::from([
            (
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            ),
            (
                "net.ipv4.ping_group_range".to_string(),
                "0 2147483647".to_string(),
            ),
        ])
    }));
    if opts.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
        linux.set_seccomp(None);
    } else {
        linux.set_masked_paths(Some(to_strings(&security::MASKED_PATHS)));
        linux.set_readonly_paths(Some(to_strings(&security::READONLY_PATHS)));
        linux.set_seccomp(Some(seccomp::default_profile(&caps, &host.arch)?));
    }

    let mut spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(opts.readonly_rootfs)
                .build()?,
        )
        .mounts(mounts)
        .process(process)
        .linux(linux)
        .build()?;
    spec.set_hostname(Some(opts.hostname.clone()).filter(|h| !h.is_empty()));
    spec.set_domainname(opts.domainname.clone().filter(|d| !d.is_empty()));
    let annotations = labels(config, opts);
    spec.set_annotations(Some(annotations).filter(|a| !a.is_empty()));
    spec.set_hooks(None);

    tracing::debug!(
        args = ?spec.process().as_ref().and_then(|p| p.args().as_ref()),
        uid = user.uid,
        gid = user.gid,
        privileged = opts.privileged,
        "built container spec"
    );
    Ok(BuiltSpec {
        spec,
        stop_signal,
        user,
    })
}

/// The process arguments with Docker's rules: the entrypoint (`--entrypoint`, else the
/// image's) followed by the command (the options', else the image's unless `--entrypoint` was
/// given).
pub fn command(image: Option<&ImageConfig>, opts: &RunOptions) -> Result<Vec<String>, SpecError> {
    let image_cmd = || image.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let (entrypoint, cmd) = match &opts.entrypoint {
        None => {
            let entrypoint = image
                .and_then(|c| c.entrypoint().clone())
                .unwrap_or_default();
            let cmd = if opts.cmd.is_empty() {
                image_cmd()
            } else {
                opts.cmd.clone()
            };
            (entrypoint, cmd)
        }
        Some(ep) if ep.len() == 1 && ep[0].is_empty() => (Vec::new(), opts.cmd.clone()),
        Some(ep) => (ep.clone(), opts.cmd.clone()),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(SpecError::NulByte("command"));
    }
    Ok(args)
}

/// The environment with Docker's rules: `PATH` (default), `HOSTNAME`, `TERM=xterm` with a
/// tty; then the options' `-e` entries, then the image's `Env` entries the options don't
/// name — each replacing an earlier entry of the same name in place; a bare `NAME` removes
/// `NAME`. `HOME` from passwd (else `/`) is appended when nothing set it.
pub fn environment(
    image_env: &[String],
    opts: &RunOptions,
    home: &str,
) -> Result<Vec<String>, SpecError> {
    for entry in &opts.env {
        if entry.split('=').next().is_none_or(str::is_empty) {
            return Err(SpecError::InvalidEnv(entry.clone()));
        }
    }
    let name = |e: &str| e.split('=').next().unwrap_or("").to_string();
    // moby `merge`: user entries first, then image entries the user does not name.
    let user_names: Vec<String> = opts.env.iter().map(|e| name(e)).collect();
    let config_env = opts.env.iter().cloned().chain(
        image_env
            .iter()
            .filter(|e| !user_names.contains(&name(e)))
            .cloned(),
    );

    let mut env: Vec<Option<String>> = vec![Some(format!("PATH={DEFAULT_PATH}"))];
    if !opts.hostname.is_empty() {
        env.push(Some(format!("HOSTNAME={}", opts.hostname)));
    }
    if opts.tty {
        env.push(Some("TERM=xterm".to_string()));
    }
    for entry in config_env {
        let key = name(&entry);
        let existing = env
            .iter()
            .position(|e| e.as_deref().is_some_and(|e| name(e) == key));
        let value = entry.contains('=').then_some(entry);
        match (existing, value) {
            (Some(i), value) => env[i] = value,
            (None, Some(value)) => env.push(Some(value)),
            (None, None) => {}
        }
    }
    let mut env: Vec<String> = env.into_iter().flatten().collect();
    if !env.iter().any(|e| name(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    if env.iter().any(|e| e.contains('\0')) {
        return Err(SpecError::NulByte("environment"));
    }
    Ok(env)
}

/// The working directory: `-w` (must be absolute), else the image's `WorkingDir`, else `/`;
/// cleaned lexically.
pub fn working_dir(image: Option<&ImageConfig>, opts: &RunOptions) -> Result<String, SpecError> {
    if let Some(dir) = opts.workdir.as_deref().filter(|d| !d.is_empty()) {
        if !dir.starts_with('/') {
            return Err(SpecError::RelativeWorkdir(dir.to_string()));
        }
        return Ok(clean_path(dir));
    }
    Ok(image
        .and_then(|c| c.working_dir().as_deref())
        .filter(|d| !d.is_empty())
        .map(clean_path)
        .unwrap_or_else(|| "/".to_string()))
}

/// Lexically cleans a container path, always absolute: `a/./b/../c//` → `/a/c`.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Parses a signal as Docker does: a number (1–64), or a name with or without `SIG`, any
/// case, including `RTMIN+n` and `RTMAX-n`.
pub fn parse_signal(s: &str) -> Result<i32, SpecError> {
    const RTMIN: i32 = 34;
    const RTMAX: i32 = 64;
    let invalid = || SpecError::InvalidSignal(s.to_string());
    let trimmed = s.trim();
    if let Ok(n) = trimmed.parse::<i32>() {
        return if (1..=RTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(invalid())
        };
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset = |rest: &str| -> Result<i32, SpecError> {
        if rest.is_empty() {
            return Ok(0);
        }
        rest.parse::<i32>()
            .ok()
            .filter(|n| (0..=RTMAX - RTMIN).contains(n))
            .ok_or_else(invalid)
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let rest = if rest.is_empty() {
            rest
        } else {
            rest.strip_prefix('+').ok_or_else(invalid)?
        };
        return Ok(RTMIN + offset(rest)?);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let rest = if rest.is_empty() {
            rest
        } else {
            rest.strip_prefix('-').ok_or_else(invalid)?
        };
        return Ok(RTMAX - offset(rest)?);
    }
    nix::sys::signal::Signal::from_str(&format!("SIG{name}"))
        .map(|sig| sig as i32)
        .map_err(|_| invalid())
}

/// The image's labels overlaid by `--label`s.
fn labels(image: Option<&ImageConfig>, opts: &RunOptions) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> =
        image.and_then(|c| c.labels().clone()).unwrap_or_default();
    labels.extend(opts.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels
}

/// Docker's capability sets: all in the bounding set; effective and permitted only for root
/// (a non-root process gets none, as after `execve`); inheritable and ambient empty. Empty
/// sets are explicit, because youki leaves an absent set unchanged.
fn capability_sets(caps: &[Capability], root: bool) -> Result<LinuxCapabilities, SpecError> {
    let all: Capabilities = caps.iter().copied().collect();
    let granted = if root {
        all.clone()
    } else {
        Capabilities::new()
    };
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(all)
        .effective(granted.clone())
        .permitted(granted)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()?)
}

/// Docker's namespaces (mount, network, uts, pid, ipc), the network one per `NetMode`, and a
/// cgroup namespace on unified-cgroup hosts (Docker's default `--cgroupns=private` there).
fn namespaces(net: &NetMode, cgroup_unified: bool) -> Vec<LinuxNamespace> {
    let ns = |typ: LinuxNamespaceType, path: Option<&Path>| {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ);
        ns.set_path(path.map(Path::to_path_buf));
        ns
    };
    let mut list = vec![ns(LinuxNamespaceType::Mount, None)];
    match net {
        NetMode::NewNs | NetMode::None => list.push(ns(LinuxNamespaceType::Network, None)),
        NetMode::Path(path) => list.push(ns(LinuxNamespaceType::Network, Some(path))),
        NetMode::Host => {}
    }
    list.push(ns(LinuxNamespaceType::Uts, None));
    list.push(ns(LinuxNamespaceType::Pid, None));
    list.push(ns(LinuxNamespaceType::Ipc, None));
    if cgroup_unified {
        list.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    list
}

/// The default `RLIMIT_NOFILE` (unless a ulimit names `nofile`) and the `--ulimit`s, in
/// the order given (a name given twice: the last wins).
fn rlimits(
    ulimits: &[Ulimit],
    nofile: u64,
) -> Result<Vec<oci_spec::runtime::PosixRlimit>, SpecError> {
    let mut out: Vec<oci_spec::runtime::PosixRlimit> = Vec::new();
    if !ulimits.iter().any(|u| u.name == "nofile") {
        out.push(
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(nofile)
                .soft(nofile)
                .build()?,
        );
    }
    for u in ulimits {
        let typ = u.typ()?;
        let (soft, hard) = u.limits();
        out.retain(|r| r.typ() != typ);
        out.push(
            PosixRlimitBuilder::default()
                .typ(typ)
                .hard(hard)
                .soft(soft)
                .build()?,
        );
    }
    Ok(out)
}

/// Device rules and the cpu, memory and pids limits.
fn resources(
    opts: &RunOptions,
    host: &HostInfo,
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let devices = if opts.privileged {
        security::privileged_device_rules()
    } else {
        security::default_device_rules()
    };
    let mut resources = LinuxResourcesBuilder::default().devices(devices);

    let mut cpu = LinuxCpuBuilder::default();
    let mut cpu_set = false;
    if let Some(cpus) = opts.cpus.filter(|c| *c != 0.0) {
        if !cpus.is_finite() || !(0.01..=host.cpus as f64).contains(&cpus) {
            return Err(SpecError::CpusOutOfRange { max: host.cpus });
        }
        // Docker: NanoCPUs = cpus * 1e9; quota = NanoCPUs * period / 1e9.
        let nano = (cpus * 1e9).round() as i64;
        let quota = nano * CPU_PERIOD as i64 / 1_000_000_000;
        cpu = cpu.quota(quota).period(CPU_PERIOD);
        cpu_set = true;
    }
    if let Some(shares) = opts.cpu_shares.filter(|s| *s > 0) {
        // The kernel clamps v1 shares to [2, 262144]; so does Docker (with a warning).
        cpu = cpu.shares(shares.clamp(MIN_CPU_SHARES, MAX_CPU_SHARES));
        cpu_set = true;
    }
    if cpu_set {
        resources = resources.cpu(cpu.build()?);
    }

    let memory = opts.memory.filter(|m| *m > 0);
    let reservation = opts.memory_reservation.filter(|r| *r > 0);
    if let Some(r) = reservation {
        if r < MIN_MEMORY {
            return Err(SpecError::ReservationTooLow);
        }
        if memory.is_some_and(|m| m < r) {
            return Err(SpecError::ReservationAboveMemory);
        }
    }
    let mut mem = LinuxMemoryBuilder::default();
    let mut mem_set = false;
    match (memory, opts.memory_swap.filter(|s| *s != 0)) {
        (None, Some(_)) => return Err(SpecError::SwapWithoutMemory),
        (None, None) => {}
        (Some(m), _) if m < MIN_MEMORY => return Err(SpecError::MemoryTooLow),
        (Some(m), swap) => {
            let swap = match swap {
                None => m,
                Some(-1) => -1,
                Some(s) if s < m => return Err(SpecError::SwapBelowMemory),
                Some(s) => s,
            };
            mem = mem.limit(m).swap(swap);
            mem_set = true;
        }
    }
    if let Some(r) = reservation {
        mem = mem.reservation(r);
        mem_set = true;
    }
    if mem_set {
        resources = resources.memory(mem.build()?);
    }

    if let Some(limit) = opts.pids_limit.filter(|p| *p > 0) {
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    Ok(resources.build()?)
}

fn to_strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests;
