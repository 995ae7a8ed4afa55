//! File operations of COPY/ADD on a mounted root file system: collecting the sources (with
//! `.dockerignore`), hashing them for the cache, creating destination directories inside
//! the root (symlinks resolved as the container sees them), copying trees with their modes,
//! hard links and symlinks, owners and `--chmod`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{lchown, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::ignore::IgnoreMatcher;

/// One entry to copy: `rel` is its path under the copied source ("" for the source itself).
#[derive(Debug, Clone)]
pub struct Entry {
    pub rel: PathBuf,
    pub abs: PathBuf,
    pub md: fs::Metadata,
}

/// Owner and mode rules of a copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyRules {
    /// `--chown` (also for created destination directories); `None`: see `keep_owner`.
    pub owner: Option<(u32, u32)>,
    /// Keep the source's owners (COPY --from); otherwise 0:0.
    pub keep_owner: bool,
    /// `--chmod` for every copied file and directory.
    pub chmod: Option<u32>,
}

/// The entries of a source: the source itself (its symlink followed when `follow_top`) and,
/// for a directory, everything under it in name order, minus what `ignore` excludes
/// (`ctx_rel` is the source's path relative to the context for matching). An excluded
/// directory is kept only when something under it is re-included by an exception.
pub fn collect(
    abs: &Path,
    follow_top: bool,
    ignore: Option<(&IgnoreMatcher, &str)>,
) -> io::Result<Vec<Entry>> {
    let md = if follow_top {
        fs::metadata(abs)?
    } else {
        fs::symlink_metadata(abs)?
    };
    let mut out = vec![Entry {
        rel: PathBuf::new(),
        abs: abs.to_path_buf(),
        md: md.clone(),
    }];
    if md.is_dir() {
        walk(abs, Path::new(""), ignore, &mut out)?;
    }
    Ok(out)
}

fn walk(
    dir: &Path,
    rel: &Path,
    ignore: Option<(&IgnoreMatcher, &str)>,
    out: &mut Vec<Entry>,
) -> io::Result<bool> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    let mut any = false;
    for name in names {
        let abs = dir.join(&name);
        let rel = rel.join(&name);
        let md = fs::symlink_metadata(&abs)?;
        let excluded = match ignore {
            Some((m, base)) => {
                let ctx = if base.is_empty() {
                    rel.display().to_string()
                } else {
                    format!("{base}/{}", rel.display())
                };
                m.excluded(&ctx)
            }
            None => false,
        };
        if md.is_dir() {
            if excluded && !ignore.is_some_and(|(m, _)| m.has_exceptions()) {
                continue;
            }
            let at = out.len();
            out.push(Entry {
                rel: rel.clone(),
                abs: abs.clone(),
                md,
            });
            let inner = walk(&abs, &rel, ignore, out)?;
            if excluded && !inner {
                out.truncate(at);
                continue;
            }
            any = true;
        } else if !excluded {
            out.push(Entry { rel, abs, md });
            any = true;
        }
    }
    Ok(any)
}

/// Hashes entries (paths, types, modes, owners, sizes, content, link targets) into `h`.
pub fn hash_entries(h: &mut Sha256, entries: &[Entry]) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    for e in entries {
        let md = &e.md;
        h.update(e.rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(format!("{:o} {} {} {}\0", md.mode(), md.uid(), md.gid(), md.len()).as_bytes());
        let ft = md.file_type();
        if ft.is_symlink() {
            h.update(fs::read_link(&e.abs)?.as_os_str().as_encoded_bytes());
        } else if ft.is_file() {
            let mut f = File::open(&e.abs)?;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        h.update([1]);
    }
    Ok(())
}

/// `path` inside `root` with symlinks resolved as in the container.
pub fn in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    berth_runtime::spec::user::resolve_in_root(root, Path::new(path))
}

/// Creates the directory `path` (absolute container path) and its missing parents inside
/// `root`, mode 0755, owned by `owner` (default 0:0). Returns its host path.
pub fn mkdir_p(root: &Path, path: &str, owner: Option<(u32, u32)>) -> io::Result<PathBuf> {
    let mut cur = String::new();
    let mut host = root.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        cur.push('/');
        cur.push_str(part);
        host = in_root(root, &cur)?;
        match fs::metadata(&host) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{cur} exists and is not a directory"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&host)?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755))?;
                let (u, g) = owner.unwrap_or((0, 0));
                lchown(&host, Some(u), Some(g))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(host)
}

/// Copies `entries` (from [`collect`]) so that the source itself becomes `target` (a host
/// path inside the root whose parent exists). For a directory source whose target exists
/// already, the content is merged into it and the directory itself is left as it is.
pub fn copy_entries(
    entries: &[Entry],
    target: &Path,
    rules: &CopyRules,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let mut dirs: Vec<(PathBuf, &fs::Metadata)> = Vec::new();
    for e in entries {
        let dst = if e.rel.as_os_str().is_empty() {
            target.to_path_buf()
        } else {
            target.join(&e.rel)
        };
        let md = &e.md;
        let ft = md.file_type();
        let top = e.rel.as_os_str().is_empty();
        let existing = fs::symlink_metadata(&dst).ok();
        if ft.is_dir() {
            match &existing {
                Some(x) if x.is_dir() => {
                    if top {
                        continue;
                    }
                }
                Some(_) => {
                    fs::remove_file(&dst)?;
                    fs::create_dir(&dst)?;
                }
                None => fs::create_dir(&dst)?,
            }
            if top && existing.is_some() {
                continue;
            }
            apply_meta(&dst, md, rules, true)?;
            dirs.push((dst, md));
            continue;
        }
        if let Some(x) = &existing {
            if x.is_dir() {
                fs::remove_dir_all(&dst)?;
            } else {
                fs::remove_file(&dst)?;
            }
        }
        if ft.is_file() && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = links.get(&key) {
                fs::hard_link(first, &dst)?;
                continue;
            }
            links.insert(key, dst.clone());
        }
        if ft.is_symlink() {
            let t = fs::read_link(&e.abs)?;
            std::os::unix::fs::symlink(&t, &dst)?;
            let (u, g) = owner_of(md, rules);
            lchown(&dst, Some(u), Some(g))?;
        } else if ft.is_file() {
            let mut src = File::open(&e.abs)?;
            let mut out = File::create(&dst)?;
            io::copy(&mut src, &mut out)?;
            drop(out);
            apply_meta(&dst, md, rules, false)?;
            let f = File::options().write(true).open(&dst)?;
            if let Ok(m) = md.modified() {
                let _ = f.set_modified(m);
            }
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                nix::sys::stat::SFlag::S_IFIFO
            } else if ft.is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else {
                nix::sys::stat::SFlag::S_IFBLK
            };
            nix::sys::stat::mknod(
                &dst,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(md.mode() & 0o7777),
                md.rdev(),
            )
            .map_err(io::Error::from)?;
            apply_meta(&dst, md, rules, false)?;
        }
    }
    // Directory times after their content.
    for (d, md) in dirs.into_iter().rev() {
        if let (Ok(f), Ok(m)) = (File::open(&d), md.modified()) {
            let _ = f.set_modified(m);
        }
    }
    Ok(())
}

fn owner_of(md: &fs::Metadata, rules: &CopyRules) -> (u32, u32) {
    match rules.owner {
        Some(o) => o,
        None if rules.keep_owner => (md.uid(), md.gid()),
        None => (0, 0),
    }
}

fn apply_meta(dst: &Path, md: &fs::Metadata, rules: &CopyRules, _dir: bool) -> io::Result<()> {
    let (u, g) = owner_of(md, rules);
    lchown(dst, Some(u), Some(g))?;
    let mode = rules.chmod.unwrap_or(md.mode() & 0o7777);
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))
}

/// Writes a file with `content` at `target` (replacing what is there), mode and owner.
pub fn write_file(target: &Path, content: &[u8], mode: u32, owner: (u32, u32)) -> io::Result<()> {
    if let Ok(x) = fs::symlink_metadata(target) {
        if x.is_dir() {
            fs::remove_dir_all(target)?;
        } else {
            fs::remove_file(target)?;
        }
    }
    fs::write(target, content)?;
    lchown(target, Some(owner.0), Some(owner.1))?;
    fs::set_permissions(target, fs::Permissions::from_mode(mode))
}

/// Whether the file starts like a tar archive ADD extracts (gzip, bzip2, xz, zstd or a
/// plain tar with the `ustar` magic).
pub fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 262];
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &h[257..262] == b"ustar")
}

/// Makes every entry under `dir` (and `dir`) owned by 0:0.
pub fn chown_tree_root(dir: &Path) -> io::Result<()> {
    lchown(dir, Some(0), Some(0))?;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let md = fs::symlink_metadata(&p)?;
        lchown(&p, Some(0), Some(0))?;
        if md.is_dir() {
            chown_tree_root(&p)?;
        } else if md.is_file() && md.mode() & 0o6000 != 0 {
            // chown cleared setuid/setgid: put them back.
            fs::set_permissions(&p, fs::Permissions::from_mode(md.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// Resolves `--chown` (`user[:group]`, names looked up in the root's `/etc/passwd` and
/// `/etc/group`). A user alone gives the user's primary group (its uid when numeric).
pub fn resolve_chown(root: &Path, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |p: &str| -> String {
        in_root(root, p)
            .ok()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(u) => (u, u),
        Err(_) => {
            let passwd = read("/etc/passwd");
            passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 4 && f[0] == user)
                .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .ok_or_else(|| {
                    format!("unable to find user {user}: no matching entries in passwd file")
                })?
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(g) => g,
            Err(_) => read("/etc/group")
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_honours_ignore_and_exceptions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        for p in ["logs", "node_modules/dep", "src"] {
            fs::create_dir_all(d.join(p)).expect("mkdir");
        }
        for p in [
            "logs/a.log",
            "logs/important.log",
            "node_modules/dep/i.js",
            "src/a.o",
            "src/m.c",
        ] {
            fs::write(d.join(p), p).expect("write");
        }
        let m = IgnoreMatcher::parse("logs/\n!logs/important.log\nnode_modules\n**/*.o\n");
        let e = collect(d, false, Some((&m, ""))).expect("collect");
        let rels: Vec<String> = e.iter().map(|e| e.rel.display().to_string()).collect();
        assert_eq!(rels, ["", "logs", "logs/important.log", "src", "src/m.c"]);
        let mut h1 = Sha256::new();
        hash_entries(&mut h1, &e).expect("hash");
        fs::write(d.join("src/m.c"), "changed").expect("write");
        let e2 = collect(d, false, Some((&m, ""))).expect("collect");
        let mut h2 = Sha256::new();
        hash_entries(&mut h2, &e2).expect("hash");
        assert_ne!(h1.finalize(), h2.finalize());
    }

    #[test]
    fn chown_lookup() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(tmp.path().join("etc")).expect("mkdir");
        fs::write(
            tmp.path().join("etc/passwd"),
            "svc:x:1500:1600::/:/bin/sh\n",
        )
        .expect("w");
        fs::write(tmp.path().join("etc/group"), "grp:x:1700:\n").expect("w");
        assert_eq!(resolve_chown(tmp.path(), "svc"), Ok((1500, 1600)));
        assert_eq!(resolve_chown(tmp.path(), "svc:grp"), Ok((1500, 1700)));
        assert_eq!(resolve_chown(tmp.path(), "12:34"), Ok((12, 34)));
        assert_eq!(resolve_chown(tmp.path(), "12"), Ok((12, 12)));
        assert!(resolve_chown(tmp.path(), "nobody").is_err());
    }
}
