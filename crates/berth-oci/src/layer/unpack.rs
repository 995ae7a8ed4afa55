//! Applying one tar entry at a time to a destination directory descriptor.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};

use super::fsops::{self, is_dir, lstat_at, open_dir_in_root, remove_all_at};
use super::{ApplyOptions, LayerError, WhiteoutMode};

const WH_PREFIX: &[u8] = b".wh.";
const WH_META_PREFIX: &[u8] = b".wh..wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
/// Longest file name Linux accepts.
const NAME_MAX: usize = 255;
/// PAX record prefix of extended attributes (GNU tar, Go's archive/tar, containerd, moby).
const PAX_XATTR: &[u8] = b"SCHILY.xattr.";
const COPY_BUF: usize = 256 * 1024;
/// [`super::OVERLAY_OPAQUE_XATTR`] as a C string.
const OPAQUE_XATTR_C: &std::ffi::CStr = c"trusted.overlay.opaque";

/// The entry's path for messages: lossy UTF-8, truncated.
fn shown(raw: &[u8]) -> String {
    crate::digest::echo(&String::from_utf8_lossy(raw))
}

/// Cleans a tar path lexically: leading `/` stripped, empty and `.` components dropped, `..`
/// removing the previous component. `None` when a `..` would climb above the root.
pub(crate) fn clean(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

fn io_err(entry: &str, op: &'static str, source: impl Into<io::Error>) -> LayerError {
    LayerError::Io {
        entry: entry.to_owned(),
        op,
        source: source.into(),
    }
}

fn invalid(entry: &str, reason: impl Into<String>) -> LayerError {
    LayerError::Invalid {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

/// What an entry creates.
enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Device(SFlag, u32, u32),
    Fifo,
}

/// Ownership, permissions, times and extended attributes of an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Parses a PAX time (`1700000000`, `1700000000.5`, `-1.25`).
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(value).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut secs: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().take(9).collect();
    let mut nanos: i64 = if digits.is_empty() {
        0
    } else {
        let n: i64 = digits.parse().ok()?;
        n * 10i64.pow(9 - u32::try_from(digits.len()).ok()?)
    };
    if neg {
        secs = -secs;
        if nanos > 0 {
            secs -= 1;
            nanos = 1_000_000_000 - nanos;
        }
    }
    Some(TimeSpec::new(secs, nanos))
}

/// Extended attributes a layer may set: file capabilities and the `user.` namespace.
fn xattr_allowed(name: &[u8]) -> bool {
    name == b"security.capability" || name.starts_with(b"user.")
}

/// Applies entries of one layer to a destination.
pub(super) struct Unpacker<'o> {
    root: OwnedFd,
    opts: &'o ApplyOptions,
    is_root: bool,
    /// Whether `/proc/self/fd` can be used to hand a sparse file's path to the tar crate.
    proc_fd: bool,
    /// Paths (cleaned, `/`-joined) this layer created, with their ancestors.
    added: HashSet<Vec<u8>>,
    /// Whiteout devices this layer created ([`WhiteoutMode::Overlay`]).
    whiteouts: HashSet<Vec<u8>>,
    /// Directories whose times are set at the end, when nothing more is created in them.
    dirs: Vec<(Vec<u8>, TimeSpec, TimeSpec)>,
    entries: u64,
    skipped: u64,
    buf: Vec<u8>,
}

impl<'o> Unpacker<'o> {
    pub(super) fn new(root: OwnedFd, opts: &'o ApplyOptions) -> Self {
        Unpacker {
            root,
            opts,
            is_root: nix::unistd::geteuid().is_root(),
            proc_fd: Path::new("/proc/self/fd").is_dir(),
            added: HashSet::new(),
            whiteouts: HashSet::new(),
            dirs: Vec::new(),
            entries: 0,
            skipped: 0,
            buf: Vec::new(),
        }
    }

    pub(super) fn counts(&self) -> (u64, u64) {
        (self.entries, self.skipped)
    }

    /// Applies one entry.
    pub(super) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        self.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let name = shown(&raw);
        if entry.header().entry_type().is_pax_global_extensions() {
            tracing::debug!(entry = %name, "pax global header ignored");
            return Ok(());
        }
        if raw.len() > self.opts.max_path_len {
            return Err(LayerError::PathTooLong {
                entry: name,
                len: raw.len(),
                limit: self.opts.max_path_len,
            });
        }
        let comps = clean(&raw).ok_or_else(|| LayerError::Escape {
            entry: name.clone(),
        })?;
        if comps.iter().any(|c| c.len() > NAME_MAX) {
            return Err(invalid(&name, "a path component is longer than 255 bytes"));
        }
        let kind = self.kind(entry, &raw, &name)?;
        let meta = self.meta(entry, &name)?;

        let Some((base, parents)) = comps.split_last() else {
            return match kind {
                Kind::Dir => self.root_dir(&meta, &name),
                _ => Err(invalid(&name, "only a directory can stand for the root")),
            };
        };
        if base.starts_with(WH_PREFIX) {
            return self.whiteout(parents, base, &meta, &name);
        }
        let parent = self
            .parent(parents, true, &name)?
            .ok_or_else(|| invalid(&name, "parent directory is missing"))?;
        let parent = parent.as_fd();
        match kind {
            Kind::File => self.file(parent, base, entry, &meta, &name)?,
            Kind::Dir => self.dir(parent, base, &comps, &meta, &name)?,
            Kind::Symlink(target) => {
                self.clear_target(parent, base, false, &name)?;
                symlinkat(os(&target), Some(parent.as_raw_fd()), os(base))
                    .map_err(|e| io_err(&name, "creating symlink", e))?;
                self.meta_at(parent, base, &meta, false, &name)?;
            }
            Kind::Hardlink(target) => self.hardlink(parent, base, &comps, &target, &name)?,
            Kind::Device(kind, major, minor) => {
                if !self.is_root {
                    tracing::warn!(entry = %name, "device node skipped: not running as root");
                    self.skipped += 1;
                    return Ok(());
                }
                self.clear_target(parent, base, false, &name)?;
                let dev = makedev(u64::from(major), u64::from(minor));
                match mknodat(
                    Some(parent.as_raw_fd()),
                    os(base),
                    kind,
                    Mode::S_IRUSR | Mode::S_IWUSR,
                    dev,
                ) {
                    Ok(()) => {}
                    Err(Errno::EPERM) => {
                        tracing::warn!(entry = %name, "device node skipped: not permitted");
                        self.skipped += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(io_err(&name, "creating device node", e)),
                }
                self.meta_at(parent, base, &meta, true, &name)?;
            }
            Kind::Fifo => {
                self.clear_target(parent, base, false, &name)?;
                mknodat(
                    Some(parent.as_raw_fd()),
                    os(base),
                    SFlag::S_IFIFO,
                    Mode::S_IRUSR | Mode::S_IWUSR,
                    0,
                )
                .map_err(|e| io_err(&name, "creating fifo", e))?;
                self.meta_at(parent, base, &meta, true, &name)?;
            }
        }
        self.mark_added(&comps);
        Ok(())
    }

    /// Sets the times of the directories this layer created or changed.
    pub(super) fn finish(&mut self) -> Result<(), LayerError> {
        for (path, atime, mtime) in std::mem::take(&mut self.dirs) {
            // A directory replaced or whited out later in the layer is simply skipped.
            match open_dir_in_root(self.root.as_fd(), &path, true) {
                Ok(fd) => futimens(fd.as_raw_fd(), &atime, &mtime)
                    .map_err(|e| io_err(&shown(&path), "setting directory times", e))?,
                Err(e) => {
                    tracing::debug!(path = %shown(&path), error = %e, "directory times not set")
                }
            }
        }
        Ok(())
    }

    fn kind<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        raw: &[u8],
        name: &str,
    ) -> Result<Kind, LayerError> {
        use tar::EntryType as T;
        let header = entry.header();
        let link = || -> Result<Vec<u8>, LayerError> {
            match entry.link_name_bytes() {
                Some(l) if !l.is_empty() => Ok(l.into_owned()),
                _ => Err(invalid(name, "link entry without a target")),
            }
        };
        let device = |flag| -> Result<Kind, LayerError> {
            let major = header
                .device_major()
                .map_err(|e| io_err(name, "reading device number", e))?
                .unwrap_or(0);
            let minor = header
                .device_minor()
                .map_err(|e| io_err(name, "reading device number", e))?
                .unwrap_or(0);
            Ok(Kind::Device(flag, major, minor))
        };
        Ok(match header.entry_type() {
            // Old archives mark directories with a trailing slash on a regular entry.
            T::Regular if raw.ends_with(b"/") => Kind::Dir,
            T::Regular | T::Continuous | T::GNUSparse => Kind::File,
            T::Directory => Kind::Dir,
            T::Symlink => Kind::Symlink(link()?),
            T::Link => Kind::Hardlink(link()?),
            T::Char => device(SFlag::S_IFCHR)?,
            T::Block => device(SFlag::S_IFBLK)?,
            T::Fifo => Kind::Fifo,
            other => {
                return Err(invalid(
                    name,
                    format!("unsupported entry type {:?}", other.as_byte() as char),
                ))
            }
        })
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, LayerError> {
        let header = entry.header();
        let mut uid = header.uid().map_err(|e| io_err(name, "reading uid", e))?;
        let mut gid = header.gid().map_err(|e| io_err(name, "reading gid", e))?;
        let mode = header.mode().map_err(|e| io_err(name, "reading mode", e))? & 0o7777;
        let secs = header
            .mtime()
            .map_err(|e| io_err(name, "reading mtime", e))?;
        let mut mtime = TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| io_err(name, "reading pax header", e))?
        {
            for ext in exts {
                let ext = ext.map_err(|e| io_err(name, "reading pax header", e))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                let number = || std::str::from_utf8(value).ok()?.parse::<u64>().ok();
                match key {
                    b"uid" => uid = number().ok_or_else(|| invalid(name, "bad pax uid"))?,
                    b"gid" => gid = number().ok_or_else(|| invalid(name, "bad pax gid"))?,
                    b"mtime" => mtime = parse_pax_time(value).unwrap_or(mtime),
                    b"atime" => atime = parse_pax_time(value),
                    k if k.starts_with(PAX_XATTR) => {
                        let xname = k.get(PAX_XATTR.len()..).unwrap_or_default();
                        if xattr_allowed(xname) {
                            if let Ok(c) = CString::new(xname) {
                                xattrs.push((c, value.to_vec()));
                            }
                        } else {
                            tracing::debug!(entry = %name, xattr = %String::from_utf8_lossy(xname), "xattr ignored");
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Meta {
            uid: u32::try_from(uid)
                .map_err(|_| invalid(name, format!("uid {uid} out of range")))?,
            gid: u32::try_from(gid)
                .map_err(|_| invalid(name, format!("gid {gid} out of range")))?,
            mode,
            atime: atime.unwrap_or(mtime),
            mtime,
            xattrs,
        })
    }

    /// Opens the parent directory `parents` inside the root. With `create`, missing directories
    /// are made (0755, like Docker); without, `Ok(None)` when it does not exist.
    fn parent(
        &mut self,
        parents: &[&[u8]],
        create: bool,
        name: &str,
    ) -> Result<Option<OwnedFd>, LayerError> {
        match open_dir_in_root(self.root.as_fd(), &join(parents), false) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) if create => self.create_parents(parents, name).map(Some),
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::ENOTDIR) => Err(invalid(name, "a parent is not a directory")),
            Err(Errno::EXDEV) => Err(invalid(name, "a parent resolves across a mount point")),
            Err(e) => Err(io_err(name, "opening parent directory", e)),
        }
    }

    fn create_parents(&mut self, parents: &[&[u8]], name: &str) -> Result<OwnedFd, LayerError> {
        let mut cur = fsops::openat(
            self.root.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .map_err(|e| io_err(name, "opening destination", e))?;
        for i in 0..parents.len() {
            let prefix = parents.get(..=i).unwrap_or_default();
            let comp = os(prefix.last().copied().unwrap_or_default());
            match open_dir_in_root(self.root.as_fd(), &join(prefix), false) {
                Ok(fd) => cur = fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(Some(cur.as_raw_fd()), comp, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(io_err(name, "creating parent directory", e)),
                    }
                    cur = fsops::openat(
                        cur.as_fd(),
                        comp,
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
                        Mode::empty(),
                    )
                    .map_err(|e| match e {
                        Errno::ELOOP | Errno::ENOTDIR => invalid(
                            name,
                            format!(
                                "parent {:?} is a symlink to a missing directory or not a directory",
                                shown(&join(prefix))
                            ),
                        ),
                        e => io_err(name, "opening parent directory", e),
                    })?;
                    // Not subject to the umask.
                    fchmod(cur.as_raw_fd(), Mode::from_bits_truncate(0o755))
                        .map_err(|e| io_err(name, "setting parent directory mode", e))?;
                    self.mark_added(prefix);
                }
                Err(Errno::ENOTDIR) => return Err(invalid(name, "a parent is not a directory")),
                Err(e) => return Err(io_err(name, "opening parent directory", e)),
            }
        }
        Ok(cur)
    }

    /// Removes what is at `base` unless both it and the entry are directories (then they merge).
    /// Returns whether an existing directory is kept.
    fn clear_target(
        &self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        entry_is_dir: bool,
        name: &str,
    ) -> Result<bool, LayerError> {
        match lstat_at(parent, os(base)).map_err(|e| io_err(name, "inspecting existing file", e))? {
            None => Ok(false),
            Some(st) if entry_is_dir && is_dir(&st) => Ok(true),
            Some(_) => {
                remove_all_at(parent, os(base))
                    .map_err(|e| io_err(name, "replacing existing file", e))?;
                Ok(false)
            }
        }
    }

    fn file<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        name: &str,
    ) -> Result<(), LayerError> {
        self.clear_target(parent, base, false, name)?;
        let file = if entry.header().entry_type().is_gnu_sparse() && self.proc_fd {
            // The tar crate seeks over a sparse file's holes only in `Entry::unpack`, which takes a
            // path: name the file through our descriptor of its parent, so no symlink in the
            // entry's path is involved. `O_EXCL` keeps a final symlink from being followed.
            let path =
                PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(os(base));
            entry.set_preserve_mtime(false);
            entry.set_preserve_permissions(false);
            entry.set_unpack_xattrs(false);
            entry.set_mask(0o077);
            match entry.unpack(&path) {
                Ok(tar::Unpacked::File(f)) => f,
                Ok(_) => return Err(invalid(name, "sparse entry did not unpack to a file")),
                Err(e) => return Err(io_err(name, "writing sparse file", e)),
            }
        } else {
            let fd = fsops::openat(
                parent,
                os(base),
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                Mode::S_IRUSR | Mode::S_IWUSR,
            )
            .map_err(|e| io_err(name, "creating file", e))?;
            let mut file = File::from(fd);
            self.copy(entry, &mut file)
                .map_err(|e| io_err(name, "writing file contents", e))?;
            file
        };
        self.meta_fd(file.as_fd(), meta, name)?;
        futimens(file.as_raw_fd(), &meta.atime, &meta.mtime)
            .map_err(|e| io_err(name, "setting times", e))?;
        Ok(())
    }

    fn copy(&mut self, from: &mut impl Read, to: &mut File) -> io::Result<()> {
        if self.buf.is_empty() {
            self.buf = vec![0; COPY_BUF];
        }
        loop {
            let n = match from.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            to.write_all(self.buf.get(..n).unwrap_or_default())?;
        }
    }

    fn dir(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        comps: &[&[u8]],
        meta: &Meta,
        name: &str,
    ) -> Result<(), LayerError> {
        if !self.clear_target(parent, base, true, name)? {
            mkdirat(Some(parent.as_raw_fd()), os(base), Mode::S_IRWXU)
                .map_err(|e| io_err(name, "creating directory", e))?;
        }
        let fd = fsops::openat(
            parent,
            os(base),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| io_err(name, "opening directory", e))?;
        self.meta_fd(fd.as_fd(), meta, name)?;
        let path = join(comps);
        if self.whiteouts.contains(&path) {
            // Whited out, then recreated by the same layer: in an overlay lower directory the
            // new directory must hide what lower layers had there.
            fsops::fsetxattr(fd.as_fd(), OPAQUE_XATTR_C, b"y")
                .map_err(|e| io_err(name, "setting trusted.overlay.opaque", e))?;
        }
        self.dirs.push((path, meta.atime, meta.mtime));
        Ok(())
    }

    fn root_dir(&mut self, meta: &Meta, name: &str) -> Result<(), LayerError> {
        let root = self
            .root
            .try_clone()
            .map_err(|e| io_err(name, "opening destination", e))?;
        self.meta_fd(root.as_fd(), meta, name)?;
        self.dirs.push((Vec::new(), meta.atime, meta.mtime));
        Ok(())
    }

    fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        comps: &[&[u8]],
        target_raw: &[u8],
        name: &str,
    ) -> Result<(), LayerError> {
        let escape = || LayerError::LinkEscape {
            entry: name.to_owned(),
            target: shown(target_raw),
        };
        let target = clean(target_raw).ok_or_else(escape)?;
        let Some((tbase, tparents)) = target.split_last() else {
            return Err(escape());
        };
        let missing = || {
            invalid(
                name,
                format!("hard link target {:?} does not exist", shown(target_raw)),
            )
        };
        if target == comps {
            return match lstat_at(parent, os(base)) {
                Ok(Some(_)) => Ok(()),
                _ => Err(missing()),
            };
        }
        let tparent = self.parent(tparents, false, name)?.ok_or_else(missing)?;
        match lstat_at(tparent.as_fd(), os(tbase)) {
            Ok(Some(st)) if is_dir(&st) => {
                return Err(invalid(name, "hard link to a directory"));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(missing()),
            Err(e) => return Err(io_err(name, "inspecting hard link target", e)),
        }
        self.clear_target(parent, base, false, name)?;
        linkat(
            Some(tparent.as_raw_fd()),
            os(tbase),
            Some(parent.as_raw_fd()),
            os(base),
            AtFlags::empty(),
        )
        .map_err(|e| io_err(name, "creating hard link", e))
    }

    fn whiteout(
        &mut self,
        parents: &[&[u8]],
        base: &[u8],
        meta: &Meta,
        name: &str,
    ) -> Result<(), LayerError> {
        if base == WH_OPAQUE {
            return self.opaque(parents, name);
        }
        if base.starts_with(WH_META_PREFIX) {
            tracing::debug!(entry = %name, "aufs metadata entry skipped");
            self.skipped += 1;
            return Ok(());
        }
        let target = base.get(WH_PREFIX.len()..).unwrap_or_default();
        if target.is_empty() || target == b"." || target == b".." {
            return Err(invalid(name, "invalid whiteout name"));
        }
        let mut path = parents.to_vec();
        path.push(target);
        if self.added.contains(&join(&path)) {
            // A whiteout only hides what lower layers have.
            tracing::warn!(entry = %name, "whiteout of a path added by the same layer ignored");
            return Ok(());
        }
        match self.opts.whiteout_mode {
            WhiteoutMode::Overlay => {
                let parent = self
                    .parent(parents, true, name)?
                    .ok_or_else(|| invalid(name, "parent directory is missing"))?;
                remove_all_at(parent.as_fd(), os(target))
                    .map_err(|e| io_err(name, "replacing existing file", e))?;
                mknodat(
                    Some(parent.as_raw_fd()),
                    os(target),
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    makedev(0, 0),
                )
                .map_err(|e| io_err(name, "creating whiteout device", e))?;
                if self.is_root {
                    fchownat(
                        Some(parent.as_raw_fd()),
                        os(target),
                        Some(Uid::from_raw(meta.uid)),
                        Some(Gid::from_raw(meta.gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io_err(name, "changing whiteout ownership", e))?;
                }
                self.whiteouts.insert(join(&path));
            }
            WhiteoutMode::Apply => {
                if let Some(parent) = self.parent(parents, false, name)? {
                    remove_all_at(parent.as_fd(), os(target))
                        .map_err(|e| io_err(name, "removing whited-out path", e))?;
                }
            }
        }
        Ok(())
    }

    fn opaque(&mut self, parents: &[&[u8]], name: &str) -> Result<(), LayerError> {
        match self.opts.whiteout_mode {
            WhiteoutMode::Overlay => {
                let dir = self
                    .parent(parents, true, name)?
                    .ok_or_else(|| invalid(name, "opaque directory is missing"))?;
                fsops::fsetxattr(dir.as_fd(), OPAQUE_XATTR_C, b"y")
                    .map_err(|e| io_err(name, "setting trusted.overlay.opaque", e))?;
            }
            WhiteoutMode::Apply => {
                if let Some(dir) = self.parent(parents, false, name)? {
                    self.clear_not_added(dir.as_fd(), &join(parents), name)?;
                }
            }
        }
        Ok(())
    }

    /// Removes everything below `dir` that this layer did not add.
    fn clear_not_added(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &[u8],
        name: &str,
    ) -> Result<(), LayerError> {
        let children =
            fsops::list_dir(dir).map_err(|e| io_err(name, "listing opaque directory", e))?;
        for child in children {
            let mut path = dir_path.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(child.as_bytes());
            if !self.added.contains(&path) {
                remove_all_at(dir, &child)
                    .map_err(|e| io_err(name, "clearing opaque directory", e))?;
                continue;
            }
            let is_directory = lstat_at(dir, &child)
                .map_err(|e| io_err(name, "clearing opaque directory", e))?
                .is_some_and(|st| is_dir(&st));
            if is_directory {
                let sub = fsops::open_child_dir(dir, &child)
                    .map_err(|e| io_err(name, "clearing opaque directory", e))?;
                self.clear_not_added(sub.as_fd(), &path, name)?;
            }
        }
        Ok(())
    }

    /// Ownership, then mode (so setuid/setgid survive the chown), then extended attributes
    /// (a chown would drop `security.capability`).
    fn meta_fd(&self, fd: BorrowedFd<'_>, meta: &Meta, name: &str) -> Result<(), LayerError> {
        if self.is_root {
            fchown(
                fd.as_raw_fd(),
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| io_err(name, "changing ownership", e))?;
        }
        fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(meta.mode))
            .map_err(|e| io_err(name, "setting mode", e))?;
        for (key, value) in &meta.xattrs {
            match fsops::fsetxattr(fd, key, value) {
                Ok(()) => {}
                Err(e @ (Errno::EPERM | Errno::ENOTSUP | Errno::EACCES)) => {
                    tracing::warn!(entry = %name, xattr = ?key, error = %e, "extended attribute not restored");
                }
                Err(e) => return Err(io_err(name, "setting extended attribute", e)),
            }
        }
        Ok(())
    }

    /// Metadata of an entry without a descriptor (symlinks, devices, fifos).
    fn meta_at(
        &self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        meta: &Meta,
        chmod: bool,
        name: &str,
    ) -> Result<(), LayerError> {
        if self.is_root {
            fchownat(
                Some(parent.as_raw_fd()),
                os(base),
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err(name, "changing ownership", e))?;
        }
        if chmod {
            // Just created by mknodat in this directory: not a symlink.
            fchmodat(
                Some(parent.as_raw_fd()),
                os(base),
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| io_err(name, "setting mode", e))?;
        }
        utimensat(
            Some(parent.as_raw_fd()),
            os(base),
            &meta.atime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_err(name, "setting times", e))
    }

    /// Records `comps` and its ancestors as created by this layer.
    fn mark_added(&mut self, comps: &[&[u8]]) {
        let mut end = comps.len();
        while end > 0 {
            let path = join(comps.get(..end).unwrap_or_default());
            if !self.added.insert(path) {
                break;
            }
            end -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths() {
        let c = |s: &str| clean(s.as_bytes()).map(|v| String::from_utf8(join(&v)).unwrap());
        assert_eq!(c("a/b/c").as_deref(), Some("a/b/c"));
        assert_eq!(c("./a//b/./c/").as_deref(), Some("a/b/c"));
        assert_eq!(c("/abs/path").as_deref(), Some("abs/path"));
        assert_eq!(c("///").as_deref(), Some(""));
        assert_eq!(c("a/../b").as_deref(), Some("b"));
        assert_eq!(c("a/..").as_deref(), Some(""));
        assert_eq!(c("../escape"), None);
        assert_eq!(c("a/../../x"), None);
        assert_eq!(c("/../x"), None);
        assert_eq!(c(".."), None);
    }

    #[test]
    fn pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
        assert_eq!(t("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(t("1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t("x"), None);
        assert_eq!(t("1.x"), None);
    }

    #[test]
    fn allowed_xattrs() {
        assert!(xattr_allowed(b"security.capability"));
        assert!(xattr_allowed(b"user.foo"));
        assert!(!xattr_allowed(b"trusted.overlay.opaque"));
        assert!(!xattr_allowed(b"trusted.overlay.redirect"));
        assert!(!xattr_allowed(b"security.selinux"));
    }
}
