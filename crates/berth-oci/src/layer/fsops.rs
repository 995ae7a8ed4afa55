//! Directory-fd based file system operations used by the layer applier.
//!
//! Every path handed to these functions is relative to a directory file descriptor, never to the
//! process's working directory. Parent directories of a tar entry are resolved with `openat2(2)`
//! and `RESOLVE_IN_ROOT`, so a symlink met on the way (`lnk -> /etc`, `lnk -> ../../..`) is
//! interpreted as it would be inside the container: relative to the destination root, never
//! beyond it. The final component is never followed.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fchmodat, fstatat, FchmodatFlags, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use nix::NixPath;

/// Set once `openat2(2)` turned out to be unavailable (old kernel, or a seccomp filter that
/// answers `ENOSYS`); resolution then falls back to a component walk that refuses symlinks.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Takes ownership of a file descriptor just returned by a successful `open`-like call.
#[allow(unsafe_code)]
pub(crate) fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass only descriptors freshly returned by a successful openat/openat2, which
    // nothing else owns or will close.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `openat(2)` returning an owned descriptor. `O_CLOEXEC` is always added.
pub(crate) fn openat<P: ?Sized + NixPath>(
    dir: BorrowedFd<'_>,
    path: &P,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(Some(dir.as_raw_fd()), path, flags | OFlag::O_CLOEXEC, mode).map(own_fd)
}

/// Opens the directory `path` (a `/`-separated relative path, may be empty for `root` itself)
/// resolved inside `root`: symlinks on the way are followed as if `root` were `/`, `..` never
/// climbs above `root`, magic links and mount crossings are refused. With `nofollow` a symlink
/// as the last component fails with `ELOOP` instead of being followed.
pub(crate) fn open_dir_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    nofollow: bool,
) -> nix::Result<OwnedFd> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if nofollow {
        flags |= OFlag::O_NOFOLLOW;
    }
    if path.is_empty() {
        return openat(root, ".", flags, Mode::empty());
    }
    let path = OsStr::from_bytes(path);
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new().flags(flags).resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
        match nix::fcntl::openat2(root.as_raw_fd(), path, how) {
            Ok(fd) => return Ok(own_fd(fd)),
            Err(Errno::ENOSYS) => {
                tracing::warn!("openat2 is unavailable; symlinked parent directories in layers will be refused");
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            // EAGAIN: a concurrent rename raced the resolution; retry once, then give up.
            Err(Errno::EAGAIN) => {
                return nix::fcntl::openat2(root.as_raw_fd(), path, how).map(own_fd);
            }
            Err(e) => return Err(e),
        }
    }
    walk_nofollow(root, path.as_bytes(), flags)
}

/// Fallback resolution without `openat2`: one `openat(O_NOFOLLOW)` per component, so a symlink
/// anywhere in the path fails with `ELOOP`/`ENOTDIR`.
fn walk_nofollow(root: BorrowedFd<'_>, path: &[u8], flags: OFlag) -> nix::Result<OwnedFd> {
    let mut cur = openat(root, ".", flags, Mode::empty())?;
    for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if comp == b".." || comp == b"." {
            return Err(Errno::EINVAL);
        }
        cur = openat(
            cur.as_fd(),
            OsStr::from_bytes(comp),
            flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?;
    }
    Ok(cur)
}

/// `fstatat(2)` without following a final symlink; `Ok(None)` when nothing is there.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<Option<FileStat>> {
    match fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a `st_mode` is a directory.
pub(crate) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
}

/// Removes `name` in `dir` and, when it is a directory, everything below it. Symlinks are removed,
/// never followed. A missing `name` is not an error.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if !is_dir(&st) {
        return match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            Err(Errno::ENOENT) => Ok(()),
            other => other,
        };
    }
    let child = open_child_dir(dir, name)?;
    for entry in list_dir(child.as_fd())? {
        remove_all_at(child.as_fd(), &entry)?;
    }
    drop(child);
    match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir) {
        Err(Errno::ENOENT) => Ok(()),
        other => other,
    }
}

/// Opens the directory `name` in `dir` without following a symlink; when permission is denied
/// (a non-root caller and a `0500` directory from a layer), grants the owner `rwx` first.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
    match openat(dir, name, flags, Mode::empty()) {
        Err(Errno::EACCES) => {
            fchmodat(
                Some(dir.as_raw_fd()),
                name,
                Mode::S_IRWXU,
                FchmodatFlags::FollowSymlink,
            )?;
            let fd = openat(dir, name, flags, Mode::empty())?;
            Ok(fd)
        }
        Ok(fd) => {
            // Make sure its entries can be unlinked even when the directory is read-only.
            if !nix::unistd::geteuid().is_root() {
                let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
                if st.st_mode & 0o300 != 0o300 {
                    fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(st.st_mode | 0o700))?;
                }
            }
            Ok(fd)
        }
        Err(e) => Err(e),
    }
}

/// Names in a directory, without `.` and `..`.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> nix::Result<Vec<std::ffi::OsString>> {
    // `Dir` takes ownership of the descriptor it reads; give it a duplicate.
    let dup = dir.try_clone_to_owned().map_err(io_to_errno)?;
    let mut d = nix::dir::Dir::from(dup)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(OsStr::from_bytes(name).to_owned());
    }
    Ok(names)
}

fn io_to_errno(e: io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// `fsetxattr(2)`.
#[allow(unsafe_code)]
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: `fd` is a live descriptor borrowed for the duration of the call, `name` is a
    // NUL-terminated string, and `value`'s pointer and length describe one initialised slice.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// `lgetxattr(2)` on `path` (a final symlink is not followed). `Ok(None)` when the attribute is
/// not set.
#[allow(unsafe_code)]
pub(crate) fn lgetxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let cname = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated and outlive the call; `buf`'s pointer and
        // length describe one writable allocation that the kernel fills at most `len` bytes of.
        let rc = unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if rc >= 0 {
            buf.truncate(usize::try_from(rc).unwrap_or_default());
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn root(dir: &Path) -> OwnedFd {
        fs::File::open(dir).unwrap().into()
    }

    fn ino_of(fd: OwnedFd) -> u64 {
        nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_ino
    }

    fn ino(p: &Path) -> u64 {
        fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn in_root_resolution_clamps_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir_all(dest.join("usr/lib")).unwrap();
        symlink("/usr/lib", dest.join("lib")).unwrap();
        symlink("../../../../..", dest.join("up")).unwrap();
        symlink(tmp.path(), dest.join("host")).unwrap();
        let r = root(&dest);
        let open = |p: &[u8], nofollow| open_dir_in_root(r.as_fd(), p, nofollow);
        assert_eq!(
            ino_of(open(b"lib", false).unwrap()),
            ino(&dest.join("usr/lib"))
        );
        assert_eq!(ino_of(open(b"up", false).unwrap()), ino(&dest));
        assert_eq!(
            ino_of(open(b"up/usr", false).unwrap()),
            ino(&dest.join("usr"))
        );
        assert_eq!(ino_of(open(b"", false).unwrap()), ino(&dest));
        // The host path does not exist inside the root.
        assert_eq!(open(b"host", false).unwrap_err(), Errno::ENOENT);
        // A final symlink is refused with nofollow.
        let err = open(b"lib", true).unwrap_err();
        assert!(matches!(err, Errno::ELOOP | Errno::ENOTDIR), "{err}");
    }

    #[test]
    fn fallback_walk_refuses_every_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        symlink("a", tmp.path().join("lnk")).unwrap();
        let r = root(tmp.path());
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        assert_eq!(
            ino_of(walk_nofollow(r.as_fd(), b"a/b", flags).unwrap()),
            ino(&tmp.path().join("a/b"))
        );
        assert!(walk_nofollow(r.as_fd(), b"lnk/b", flags).is_err());
        assert!(walk_nofollow(r.as_fd(), b"lnk", flags).is_err());
        assert_eq!(
            walk_nofollow(r.as_fd(), b"a/../a", flags).unwrap_err(),
            Errno::EINVAL
        );
    }

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let keep = tmp.path().join("keep");
        fs::create_dir(&keep).unwrap();
        fs::write(keep.join("f"), b"x").unwrap();
        let victim = tmp.path().join("victim");
        fs::create_dir_all(victim.join("ro/deep")).unwrap();
        symlink(&keep, victim.join("link")).unwrap();
        fs::write(victim.join("ro/deep/f"), b"x").unwrap();
        fs::set_permissions(victim.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
        let r = root(tmp.path());
        remove_all_at(r.as_fd(), OsStr::new("victim")).unwrap();
        assert!(!victim.exists());
        assert_eq!(fs::read(keep.join("f")).unwrap(), b"x");
        // Missing is fine.
        remove_all_at(r.as_fd(), OsStr::new("victim")).unwrap();
        assert_eq!(
            list_dir(r.as_fd()).unwrap(),
            vec![std::ffi::OsString::from("keep")]
        );
    }
}
