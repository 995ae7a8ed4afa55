//! Writing a layer from an overlayfs upper directory (the changes of one build step).
//!
//! overlayfs records a deletion as a 0/0 character device and a directory that replaced
//! what was below it with the `trusted.overlay.opaque=y` xattr; a layer tar expresses the
//! same with OCI whiteouts: `.wh.NAME` (an empty regular file, mode 0000, 0:0) and
//! `.wh..wh..opq` inside the directory. Entries are written in name order, parents first;
//! files sharing an inode are written once and then as hard links to the first path.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{fsops, OVERLAY_OPAQUE_XATTR};

/// What [`write_overlay_diff`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Tar entries written, whiteouts included.
    pub entries: u64,
    /// Whiteouts (`.wh.NAME` and `.wh..wh..opq`) among them.
    pub whiteouts: u64,
}

/// Whether `md` is overlayfs' deletion marker (a character device 0/0).
pub fn is_overlay_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Writes the changes recorded in the overlayfs upper directory `upper` as a tar stream
/// (uncompressed) into `out`, with OCI whiteouts; returns the writer and statistics.
/// Sockets are skipped (they cannot be in a layer).
pub fn write_overlay_diff<W: Write>(upper: &Path, out: W) -> io::Result<(W, DiffStats)> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut state = Walk {
        builder,
        links: HashMap::new(),
        stats: DiffStats::default(),
    };
    state.dir(upper, Path::new(""))?;
    let out = state.builder.into_inner()?;
    Ok((out, state.stats))
}

struct Walk<W: Write> {
    builder: tar::Builder<W>,
    /// (dev, ino) → the first path written for a file with several links.
    links: HashMap<(u64, u64), PathBuf>,
    stats: DiffStats,
}

fn empty_file_header(mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(0);
    h
}

impl<W: Write> Walk<W> {
    fn dir(&mut self, abs: &Path, rel: &Path) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(abs)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let path = abs.join(&name);
            let rel = rel.join(&name);
            let md = fs::symlink_metadata(&path)?;
            let ft = md.file_type();
            if is_overlay_whiteout(&md) {
                let mut wh_name = std::ffi::OsString::from(".wh.");
                wh_name.push(&name);
                let wh = rel.with_file_name(wh_name);
                let mut h = empty_file_header(0);
                self.builder.append_data(&mut h, &wh, io::empty())?;
                self.stats.entries += 1;
                self.stats.whiteouts += 1;
                continue;
            }
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&md, tar::HeaderMode::Complete);
            if ft.is_dir() {
                h.set_size(0);
                self.builder.append_data(&mut h, &rel, io::empty())?;
                self.stats.entries += 1;
                if fsops::lgetxattr(&path, OVERLAY_OPAQUE_XATTR)?.as_deref() == Some(b"y") {
                    let mut h = empty_file_header(0o755);
                    self.builder
                        .append_data(&mut h, rel.join(".wh..wh..opq"), io::empty())?;
                    self.stats.entries += 1;
                    self.stats.whiteouts += 1;
                }
                self.dir(&path, &rel)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path)?;
                h.set_size(0);
                self.builder.append_link(&mut h, &rel, &target)?;
                self.stats.entries += 1;
            } else if ft.is_file() {
                if md.nlink() > 1 {
                    let key = (md.dev(), md.ino());
                    if let Some(first) = self.links.get(&key) {
                        h.set_entry_type(tar::EntryType::Link);
                        h.set_size(0);
                        self.builder.append_link(&mut h, &rel, first)?;
                        self.stats.entries += 1;
                        continue;
                    }
                    self.links.insert(key, rel.clone());
                }
                let file = File::open(&path)?;
                h.set_size(md.len());
                self.builder.append_data(&mut h, &rel, file)?;
                self.stats.entries += 1;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                h.set_size(0);
                self.builder.append_data(&mut h, &rel, io::empty())?;
                self.stats.entries += 1;
            } else {
                tracing::debug!(path = %path.display(), "socket skipped in a layer diff");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, String, u32)> {
        let mut a = tar::Archive::new(tar_bytes);
        let mut out = vec![];
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            let link = e
                .link_name()
                .expect("link")
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let mode = e.header().mode().expect("mode");
            let mut body = String::new();
            let _ = e.read_to_string(&mut body);
            out.push((path, e.header().entry_type(), link + &body, mode));
        }
        out
    }

    #[test]
    fn files_links_and_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let up = tmp.path();
        fs::create_dir_all(up.join("b/sub")).expect("mkdir");
        fs::write(up.join("b/sub/f"), "data").expect("write");
        fs::hard_link(up.join("b/sub/f"), up.join("a-hard")).expect("link");
        std::os::unix::fs::symlink("/target", up.join("c-link")).expect("symlink");
        let (bytes, stats) = write_overlay_diff(up, Vec::new()).expect("diff");
        let e = entries(&bytes);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["a-hard", "b", "b/sub", "b/sub/f", "c-link"]);
        assert_eq!(e[0].2, "data");
        assert_eq!(e[3].1, tar::EntryType::Link);
        assert_eq!(e[3].2, "a-hard");
        assert_eq!(e[4].1, tar::EntryType::Symlink);
        assert_eq!(e[4].2, "/target");
        assert_eq!(stats.whiteouts, 0);
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: whiteout devices and trusted xattrs need root");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let up = tmp.path();
        fs::create_dir_all(up.join("d")).expect("mkdir");
        nix::sys::stat::mknod(
            &up.join("d/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .expect("mknod");
        fs::create_dir(up.join("opq")).expect("mkdir");
        fs::write(up.join("opq/new"), "n").expect("write");
        let c = std::ffi::CString::new(OVERLAY_OPAQUE_XATTR).expect("cstring");
        let f = File::open(up.join("opq")).expect("open");
        fsops::fsetxattr(std::os::fd::AsFd::as_fd(&f), &c, b"y").expect("xattr");
        let (bytes, stats) = write_overlay_diff(up, Vec::new()).expect("diff");
        let e = entries(&bytes);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            ["d", "d/.wh.gone", "opq", "opq/.wh..wh..opq", "opq/new"]
        );
        assert_eq!(e[1].1, tar::EntryType::Regular);
        assert_eq!(e[1].3, 0);
        assert_eq!(stats.whiteouts, 2);
    }
}
