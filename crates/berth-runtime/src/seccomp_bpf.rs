//! Precompiled seccomp filters.
//!
//! libcontainer compiles a spec's `linux.seccomp` profile with libseccomp in every container's
//! init (~20 ms of CPU for Docker's profile, on every `berth run` and `berth exec`). Berth
//! compiles each distinct profile once into classic BPF, caches it by content in the engine's
//! state directory, and hands the container's init the ready program:
//!
//! - [`precompile`] (engine, when it writes a bundle): compiles or reuses the cached program,
//!   removes `linux.seccomp` from the spec and records the program's path and SHA-256 in the
//!   spec's annotations ([`ANNOTATION_PATH`], [`ANNOTATION_DIGEST`]). Only profiles that need
//!   nothing but a plain filter qualify: no filter flags, no notify actions, and a process with
//!   `noNewPrivileges` (the filter is installed without `CAP_SYS_ADMIN`). Others stay in the
//!   spec for libcontainer.
//! - [`Filter::from_spec`] (shim and `berth exec`, before the container's processes exist):
//!   reads the program and verifies its digest.
//! - [`SeccompExecutor`] (the container's init or exec'd process): installs the program right
//!   before `execve`, as runc does, after capabilities and `no_new_privs` are set.
//!
//! Argument comparisons follow runc's reading of the OCI spec: for `SCMP_CMP_MASKED_EQ`,
//! `value` is the mask and `valueTwo` the expected masked value (Docker's clone rule allows
//! clone only when no namespace flag is set).

use std::fs;
use std::io::{self, Read, Seek};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall, Spec,
};
use sha2::{Digest, Sha256};

/// Spec annotation: path of the compiled program.
pub const ANNOTATION_PATH: &str = "org.berth.seccomp.bpf";
/// Spec annotation: hex SHA-256 of the compiled program.
pub const ANNOTATION_DIGEST: &str = "org.berth.seccomp.bpf.sha256";

/// Size of one classic BPF instruction (`struct sock_filter`).
const INSN: usize = 8;
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("cannot compile the seccomp profile: {0}")]
    Compile(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the seccomp program {path} does not match its digest (expected sha256 {expected})")]
    Digest { path: PathBuf, expected: String },
    #[error("the seccomp program {path} is not a valid filter ({len} bytes)")]
    Invalid { path: PathBuf, len: usize },
    #[error("the spec names a seccomp program without its digest")]
    NoDigest,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BpfError + 'a {
    move |source| BpfError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn compile_err(e: impl std::fmt::Display) -> BpfError {
    BpfError::Compile(e.to_string())
}

/// Whether the spec's profile can be replaced by a program that the init installs itself.
fn qualifies(spec: &Spec, profile: &LinuxSeccomp) -> bool {
    let nnp = spec
        .process()
        .as_ref()
        .and_then(|p| p.no_new_privileges())
        .unwrap_or(false);
    let flags = profile.flags().as_ref().is_none_or(|f| f.is_empty());
    let notify = profile.default_action() == LinuxSeccompAction::ScmpActNotify
        || profile.syscalls().as_ref().is_some_and(|s| {
            s.iter()
                .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
        });
    nnp && flags && !notify && profile.listener_path().is_none()
}

/// Replaces the spec's seccomp profile by a cached compiled program (see the module docs).
/// Returns whether it did; a spec without a profile, or with one that doesn't qualify, is
/// left as it is.
pub fn precompile(spec: &mut Spec, cache_dir: &Path) -> Result<bool, BpfError> {
    let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
        return Ok(false);
    };
    if !qualifies(spec, &profile) {
        return Ok(false);
    }
    let key = {
        let json = serde_json::to_vec(&profile).map_err(compile_err)?;
        let mut h = Sha256::new();
        h.update(b"berth-seccomp-bpf-v2\0");
        h.update(libseccomp_version().as_bytes());
        h.update(json);
        hex::encode(h.finalize())
    };
    let path = cache_dir.join(format!("{key}.bpf"));
    let program = match fs::read(&path) {
        Ok(p) if valid_len(p.len()) => p,
        Ok(_) | Err(_) => {
            let program = compile(&profile)?;
            write_atomic(cache_dir, &path, &program)?;
            program
        }
    };
    let digest = hex::encode(Sha256::digest(&program));
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(ANNOTATION_PATH.into(), path.display().to_string());
    annotations.insert(ANNOTATION_DIGEST.into(), digest);
    spec.set_annotations(Some(annotations));
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(None);
    }
    Ok(true)
}

fn valid_len(len: usize) -> bool {
    len > 0 && len.is_multiple_of(INSN) && len / INSN <= MAX_INSNS
}

fn libseccomp_version() -> String {
    libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default()
}

/// Temp file + fsync + rename: concurrent engines may compile the same profile at once.
fn write_atomic(dir: &Path, path: &Path, data: &[u8]) -> Result<(), BpfError> {
    use std::io::Write;
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err("create a file in", dir))?;
    tmp.write_all(data).map_err(io_err("write", path))?;
    tmp.as_file().sync_all().map_err(io_err("write", path))?;
    tmp.persist(path).map_err(|e| BpfError::Io {
        action: "write",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, BpfError> {
    let ret = errno.unwrap_or(libc::EPERM as u32);
    let errno = i32::try_from(ret).map_err(compile_err)?;
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(u16::try_from(ret).map_err(compile_err)?)
        }
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(BpfError::Compile("notify actions need a listener".into()))
        }
    })
}

fn comparisons(rule: &LinuxSyscall) -> Vec<ScmpArgCompare> {
    rule.args()
        .as_ref()
        .map(|args| {
            args.iter()
                .map(|a| {
                    let index = a.index() as u32;
                    let value = a.value();
                    let two = a.value_two().unwrap_or(0);
                    let (op, datum) = match a.op() {
                        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
                        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, value),
                        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
                        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, value),
                        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
                        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, value),
                        // runc: `value` is the mask, `valueTwo` what the masked argument equals.
                        LinuxSeccompOperator::ScmpCmpMaskedEq => {
                            (ScmpCompareOp::MaskedEqual(value), two)
                        }
                    };
                    ScmpArgCompare::new(index, op, datum)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Compiles a profile into a classic BPF program (the bytes of `struct sock_filter[]`).
///
/// The program is a binary tree of syscall numbers (libseccomp's optimization level 2)
/// instead of a linear chain: Docker's profile takes ~10 comparisons per syscall instead of
/// up to ~350, for every syscall the container makes, and the kernel's per-syscall action
/// cache (built by emulating the filter for every syscall number when it is installed) is
/// built in half the time.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>, BpfError> {
    compile_at(profile, 2)
}

/// [`compile`] at a libseccomp optimization level (1: linear, 2: binary tree).
fn compile_at(profile: &LinuxSeccomp, optimize: u32) -> Result<Vec<u8>, BpfError> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(compile_err)?;
    // The init sets no_new_privs itself (the spec asks for it); the program must not.
    ctx.set_ctl_nnp(false).map_err(compile_err)?;
    ctx.set_ctl_optimize(optimize).map_err(compile_err)?;
    for a in profile.architectures().iter().flatten() {
        ctx.add_arch(arch(*a)).map_err(compile_err)?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let cmps = comparisons(rule);
        let mut indexes: Vec<usize> = rule.args().iter().flatten().map(|a| a.index()).collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            // A name this libseccomp doesn't know is a syscall this kernel can't have.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                tracing::debug!(syscall = %name, "unknown to libseccomp, skipped");
                continue;
            };
            if cmps.is_empty() {
                ctx.add_rule(act, sc).map_err(compile_err)?;
            } else if repeated {
                // libseccomp compares each argument once per rule: one rule per comparison
                // (as runc does).
                for c in &cmps {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map_err(compile_err)?;
                }
            } else {
                ctx.add_rule_conditional(act, sc, &cmps)
                    .map_err(compile_err)?;
            }
        }
    }
    let mut file = tempfile::tempfile().map_err(compile_err)?;
    ctx.export_bpf(file.as_fd()).map_err(compile_err)?;
    file.rewind().map_err(compile_err)?;
    let mut program = Vec::new();
    file.read_to_end(&mut program).map_err(compile_err)?;
    if !valid_len(program.len()) {
        return Err(BpfError::Compile(format!(
            "libseccomp exported {} bytes",
            program.len()
        )));
    }
    Ok(program)
}

/// A verified compiled program, ready to install.
#[derive(Clone, Debug)]
pub struct Filter(Arc<Vec<u8>>);

impl Filter {
    /// The program named by the spec's annotations (`None`: the spec has none), its digest
    /// verified.
    pub fn from_spec(spec: &Spec) -> Result<Option<Filter>, BpfError> {
        let Some(annotations) = spec.annotations() else {
            return Ok(None);
        };
        let Some(path) = annotations.get(ANNOTATION_PATH) else {
            return Ok(None);
        };
        let expected = annotations
            .get(ANNOTATION_DIGEST)
            .ok_or(BpfError::NoDigest)?;
        let path = PathBuf::from(path);
        let program = fs::read(&path).map_err(io_err("read", &path))?;
        if hex::encode(Sha256::digest(&program)) != *expected {
            return Err(BpfError::Digest {
                path,
                expected: expected.clone(),
            });
        }
        if !valid_len(program.len()) {
            return Err(BpfError::Invalid {
                len: program.len(),
                path,
            });
        }
        Ok(Some(Filter(Arc::new(program))))
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.0.len() / INSN
    }

    /// Whether the program is empty (never true for a loaded filter).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Installs the program on the calling thread (which must have `no_new_privs` or
    /// `CAP_SYS_ADMIN`).
    #[allow(unsafe_code)]
    pub fn install(&self) -> io::Result<()> {
        let insns: Vec<libc::sock_filter> = self
            .0
            .chunks_exact(INSN)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let len = u16::try_from(insns.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?;
        let prog = libc::sock_fprog {
            len,
            filter: insns.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `len` valid instructions that outlive the call; the kernel
        // copies the program.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0u32,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// libcontainer's default executor, with the compiled filter installed right before `execve`.
#[derive(Clone)]
pub struct SeccompExecutor {
    filter: Option<Filter>,
    inner: Box<dyn Executor>,
}

impl SeccompExecutor {
    pub fn new(filter: Option<Filter>) -> Self {
        SeccompExecutor {
            filter,
            inner: libcontainer::workload::default::get_executor(),
        }
    }
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(f) = &self.filter {
            f.install().map_err(|e| {
                ExecutorError::Other(format!("cannot install the seccomp filter: {e}"))
            })?;
        }
        self.inner.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        self.inner.validate(spec)
    }

    fn setup_envs(
        &self,
        envs: std::collections::HashMap<String, String>,
    ) -> Result<(), libcontainer::workload::ExecutorSetEnvsError> {
        self.inner.setup_envs(envs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::seccomp::default_profile;
    use oci_spec::runtime::{Capability, LinuxBuilder, ProcessBuilder, SpecBuilder};

    fn spec_with_profile(nnp: bool) -> Spec {
        let profile =
            default_profile(&[Capability::Chown], std::env::consts::ARCH).expect("profile");
        SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .no_new_privileges(nnp)
                    .build()
                    .expect("process"),
            )
            .linux(
                LinuxBuilder::default()
                    .seccomp(profile)
                    .build()
                    .expect("linux"),
            )
            .build()
            .expect("spec")
    }

    #[test]
    fn compiles_docker_profile() {
        let s = spec_with_profile(true);
        let p = compile(
            s.linux()
                .as_ref()
                .and_then(|l| l.seccomp().as_ref())
                .expect("seccomp"),
        )
        .expect("compile");
        assert!(valid_len(p.len()), "{} bytes", p.len());
        assert!(
            p.len() / INSN > 100,
            "Docker's profile is hundreds of instructions"
        );
    }

    /// Runs a classic BPF seccomp program on one `struct seccomp_data`; returns the action
    /// and how many instructions ran. Knows the opcodes libseccomp emits.
    fn run_bpf(prog: &[u8], nr: u32, arch: u32, args: [u64; 6]) -> (u32, usize) {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let insn = |pc: usize| {
            let b = &prog[pc * INSN..(pc + 1) * INSN];
            let code = u16::from_le_bytes([b[0], b[1]]);
            let k = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            (code, b[2] as usize, b[3] as usize, k)
        };
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0;
        for steps in 1..=prog.len() / INSN {
            let (code, jt, jf, k) = insn(pc);
            pc += 1;
            let jump = |cond: bool| if cond { jt } else { jf };
            match code {
                0x20 => {
                    let o = k as usize;
                    a = u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
                }
                0x00 => a = k,
                0x01 => x = k,
                0x60 => a = mem[k as usize],
                0x61 => x = mem[k as usize],
                0x02 => mem[k as usize] = a,
                0x03 => mem[k as usize] = x,
                0x07 => x = a,
                0x87 => a = x,
                0x54 => a &= k,
                0x44 => a |= k,
                0x05 => pc += k as usize,
                0x15 => pc += jump(a == k),
                0x25 => pc += jump(a > k),
                0x35 => pc += jump(a >= k),
                0x45 => pc += jump(a & k != 0),
                0x1d => pc += jump(a == x),
                0x2d => pc += jump(a > x),
                0x3d => pc += jump(a >= x),
                0x06 => return (k, steps),
                0x16 => return (a, steps),
                other => panic!("opcode {other:#x} at {}", pc - 1),
            }
        }
        panic!("program ran off its end")
    }

    #[test]
    fn tree_program_decides_as_the_linear_one() {
        let profile = default_profile(&[Capability::Chown], "x86_64").expect("profile");
        let tree = compile(&profile).expect("tree");
        let linear = compile_at(&profile, 1).expect("linear");
        assert_ne!(tree, linear, "optimization level 2 changed nothing");
        const X86_64: u32 = 0xc000_003e;
        const I386: u32 = 0x4000_0003;
        const X32: u32 = 0x4000_0000;
        let arg_sets: [[u64; 6]; 9] = [
            [0; 6],
            [0x1000_0000, 0, 0, 0, 0, 0], // clone(CLONE_NEWUSER)
            [0x7e02_0000, 0, 0, 0, 0, 0], // every namespace flag
            [0x11, 0, 0, 0, 0, 0],        // clone(SIGCHLD)
            [0x8, 0, 0, 0, 0, 0],         // personality(PER_LINUX32)
            [0xffff_ffff, 0, 0, 0, 0, 0], // personality query
            [40, 1, 0, 0, 0, 0],          // socket(AF_VSOCK)
            [16, 3, 9, 0, 0, 0],          // socket(AF_NETLINK, NETLINK_AUDIT)
            [1 << 40 | 0x20000, u64::MAX, 2, 3, 4, 5],
        ];
        let (mut tree_steps, mut linear_steps, mut calls) = (0, 0, 0);
        for (arch, base, count) in [(X86_64, 0, 470), (X86_64, X32, 560), (I386, 0, 470)] {
            for nr in base..base + count {
                for args in arg_sets {
                    let (t, ts) = run_bpf(&tree, nr, arch, args);
                    let (l, ls) = run_bpf(&linear, nr, arch, args);
                    assert_eq!(t, l, "arch {arch:#x} nr {nr:#x} args {args:x?}");
                    tree_steps += ts;
                    linear_steps += ls;
                    calls += 1;
                }
            }
        }
        // Foreign architectures are killed (SECCOMP_RET_KILL_THREAD); allowed syscalls
        // answer SECCOMP_RET_ALLOW.
        assert_eq!(run_bpf(&tree, 0, 0xc000_00b7, [0; 6]).0, 0);
        assert_eq!(run_bpf(&tree, 1, X86_64, [0; 6]).0, 0x7fff_0000, "write");
        assert!(
            tree_steps * 3 < linear_steps,
            "tree {tree_steps} vs linear {linear_steps} instructions over {calls} calls"
        );
    }

    #[test]
    fn precompile_caches_and_annotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = spec_with_profile(true);
        assert!(precompile(&mut a, dir.path()).expect("precompile"));
        assert!(a
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .is_none());
        let f = Filter::from_spec(&a).expect("load").expect("filter");
        assert!(!f.is_empty());
        let files: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(files.len(), 1);
        // Same profile: same cached program.
        let mut b = spec_with_profile(true);
        assert!(precompile(&mut b, dir.path()).expect("precompile"));
        assert_eq!(a.annotations(), b.annotations());
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn tampered_program_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = spec_with_profile(true);
        precompile(&mut a, dir.path()).expect("precompile");
        let path = a.annotations().as_ref().expect("annotations")[ANNOTATION_PATH].clone();
        let mut bytes = fs::read(&path).expect("read");
        bytes[8] ^= 1;
        fs::write(&path, bytes).expect("write");
        assert!(matches!(
            Filter::from_spec(&a),
            Err(BpfError::Digest { .. })
        ));
    }

    #[test]
    fn without_no_new_privs_the_profile_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec_with_profile(false);
        assert!(!precompile(&mut s, dir.path()).expect("precompile"));
        assert!(s
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .is_some());
        assert!(Filter::from_spec(&s).expect("load").is_none());
    }
}
