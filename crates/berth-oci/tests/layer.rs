//! Layer extraction against hostile and ordinary tars, built here with the `tar` crate (raw
//! header bytes where the crate refuses to write a hostile path).
//!
//! Each hostile case unpacks into `<tempdir>/dest` next to `<tempdir>/outside` (a directory with
//! a sentinel file that symlinks and links in the layers aim at) and checks that nothing in the
//! tempdir outside `dest` changed.
//!
//! Tests that need root (device nodes, chown, `trusted.*` xattrs, an overlay mount) run for real
//! as root; as another user they fail when `BERTH_REQUIRE_ROOT=1`, and are skipped otherwise.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_oci::layer::{
    apply_layer, read_xattr, ApplyOptions, ApplyStats, Compression, LayerError, WhiteoutMode,
};
use berth_oci::{Algorithm, Digest};
use tar::{EntryType, Header};

// ---------------------------------------------------------------------------------------------
// Tar building

const MTIME: u64 = 1_600_000_000;

struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// An entry whose name and link name are written as raw header bytes (no validation).
    fn raw(
        &mut self,
        kind: EntryType,
        name: &[u8],
        link: &[u8],
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.b.append(&h, data).expect("test setup");
        self
    }

    fn header(kind: EntryType, path: &str, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        h.set_path(path).expect("test setup");
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h
    }

    fn append(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).expect("test setup");
        self
    }

    fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.file_mode(path, data, 0o644)
    }

    fn file_mode(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.append(Self::header(EntryType::Regular, path, mode), data)
    }

    fn dir(&mut self, path: &str) -> &mut Self {
        self.append(Self::header(EntryType::Directory, path, 0o755), b"")
    }

    fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            EntryType::Symlink,
            path.as_bytes(),
            target.as_bytes(),
            b"",
            0o777,
        )
    }

    fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            EntryType::Link,
            path.as_bytes(),
            target.as_bytes(),
            b"",
            0o644,
        )
    }

    fn device(
        &mut self,
        kind: EntryType,
        path: &str,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> &mut Self {
        let mut h = Self::header(kind, path, mode);
        h.set_device_major(major).expect("test setup");
        h.set_device_minor(minor).expect("test setup");
        self.append(h, b"")
    }

    /// A PAX extended header applying to the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3; // ' ' '=' '\n'
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut h = Header::new_ustar();
        h.set_path("PaxHeaders/x").expect("test setup");
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        self.append(h, &data)
    }

    fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("test setup")
    }
}

fn octal12(v: u64) -> [u8; 12] {
    let s = format!("{v:011o}");
    let mut out = [0u8; 12];
    out[..s.len()].copy_from_slice(s.as_bytes());
    out
}

/// A GNU sparse file of `real_size` bytes whose data blocks (512 bytes each, filled with the
/// block's index + 1) sit at `offsets`. More than four map entries use extension headers; a
/// file ending in a hole gets GNU tar's zero-length final entry.
fn sparse_entry(tar: &mut Vec<u8>, name: &str, real_size: u64, offsets: &[u64]) {
    let mut map: Vec<(u64, u64)> = offsets.iter().map(|&o| (o, 512)).collect();
    if offsets.last().is_none_or(|&o| o + 512 != real_size) {
        map.push((real_size, 0));
    }
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(512 * offsets.len() as u64);
    let (first, rest) = map.split_at(map.len().min(4));
    {
        let gnu = h.as_gnu_mut().expect("test setup");
        for (slot, (off, len)) in gnu.sparse.iter_mut().zip(first) {
            slot.offset = octal12(*off);
            slot.numbytes = octal12(*len);
        }
        gnu.realsize = octal12(real_size);
        gnu.isextended = [u8::from(!rest.is_empty())];
    }
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    for (i, chunk) in rest.chunks(21).enumerate() {
        let mut ext = tar::GnuExtSparseHeader::new();
        for (slot, (off, len)) in ext.sparse.iter_mut().zip(chunk) {
            slot.offset = octal12(*off);
            slot.numbytes = octal12(*len);
        }
        ext.isextended = [u8::from((i + 1) * 21 < rest.len())];
        tar.extend_from_slice(ext.as_bytes());
    }
    for i in 0..offsets.len() {
        tar.extend_from_slice(&[i as u8 + 1; 512]);
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("test setup");
    e.finish().expect("test setup")
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("test setup")
}

// ---------------------------------------------------------------------------------------------
// Fixture

struct Fixture {
    tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("test setup");
        let dest = tmp.path().join("dest");
        let outside = tmp.path().join("outside");
        fs::create_dir(&dest).expect("test setup");
        fs::create_dir(&outside).expect("test setup");
        fs::write(outside.join("secret"), b"sentinel").expect("test setup");
        let mut fx = Fixture {
            tmp,
            dest,
            outside,
            before: BTreeMap::new(),
        };
        fx.before = fx.outside_state();
        fx
    }

    /// Everything under the tempdir except `dest`: path → type, size, nlink, content.
    fn outside_state(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        walk(self.tmp.path(), &self.dest, &mut out);
        out
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(
            self.outside_state(),
            self.before,
            "something changed outside dest"
        );
    }

    fn apply(&self, tar: &[u8], mode: WhiteoutMode) -> Result<ApplyStats, LayerError> {
        apply_layer(tar, &self.dest, &ApplyOptions::new(mode))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
}

fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for entry in fs::read_dir(dir).expect("test setup") {
        let path = entry.expect("test setup").path();
        if path == skip {
            continue;
        }
        let meta = fs::symlink_metadata(&path).expect("test setup");
        let desc = if meta.is_dir() {
            walk(&path, skip, out);
            format!("dir {:o}", meta.mode())
        } else if meta.is_file() {
            format!(
                "file {:o} nlink={} {:?}",
                meta.mode(),
                meta.nlink(),
                fs::read(&path).expect("test setup")
            )
        } else {
            format!("other {:o}", meta.mode())
        };
        out.insert(path, desc);
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a root-only test can run; panics when root is required and missing.
fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("BERTH_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test} needs root and BERTH_REQUIRE_ROOT=1 is set");
    }
    eprintln!("skipping {test}: needs root (set BERTH_REQUIRE_ROOT=1 to make this a failure)");
    false
}

fn assert_err_names(err: &LayerError, entry: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{entry:?}")),
        "error {msg:?} does not name entry {entry:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Formats and digests

fn sample_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.dir("etc/")
        .file("etc/hostname", b"berth\n")
        .dir("usr/bin/")
        .file_mode("usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
        .symlink("bin", "usr/bin")
        .hardlink("usr/bin/tool2", "usr/bin/tool");
    l.finish()
}

fn assert_sample_tree(fx: &Fixture) {
    assert_eq!(
        fs::read(fx.path("etc/hostname")).expect("test setup"),
        b"berth\n"
    );
    let tool = fs::metadata(fx.path("usr/bin/tool")).expect("test setup");
    assert_eq!(tool.mode() & 0o7777, 0o755);
    assert_eq!(tool.nlink(), 2);
    assert_eq!(
        fs::read_link(fx.path("bin")).expect("test setup"),
        Path::new("usr/bin")
    );
    assert_eq!(tool.mtime(), MTIME as i64);
    // Directory times are set after their children were created.
    assert_eq!(
        fs::metadata(fx.path("usr/bin"))
            .expect("test setup")
            .mtime(),
        MTIME as i64
    );
}

#[test]
fn plain_gzip_and_zstd_layers_apply_with_both_digests() {
    let tar = sample_layer();
    let diff_id = Digest::sha256_of(&tar);
    for (blob, compression, media_type) in [
        (
            tar.clone(),
            Compression::None,
            "application/vnd.oci.image.layer.v1.tar",
        ),
        (
            gzip(&tar),
            Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            gzip(&tar),
            Compression::Gzip,
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ),
        (
            zstd(&tar),
            Compression::Zstd,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    ] {
        let fx = Fixture::new();
        let digest = Digest::sha256_of(&blob);
        let opts = ApplyOptions {
            media_type: Some(media_type.into()),
            expected_digest: Some(digest.clone()),
            expected_diff_id: Some(diff_id.clone()),
            expected_size: Some(blob.len() as u64),
            ..ApplyOptions::default()
        };
        let stats = apply_layer(&blob[..], &fx.dest, &opts).unwrap();
        assert_eq!(stats.compression, compression);
        assert_eq!(stats.diff_id, diff_id);
        assert_eq!(stats.compressed_digest, digest);
        assert_eq!(stats.bytes, blob.len() as u64);
        assert_eq!(stats.uncompressed_bytes, tar.len() as u64);
        assert_eq!(stats.entries, 6);
        assert_eq!(stats.skipped, 0);
        assert_sample_tree(&fx);
        fx.assert_outside_untouched();
    }
}

#[test]
fn sha512_digests_and_multi_member_gzip() {
    let tar = sample_layer();
    // Two gzip members (as pigz or concatenation produce) form one stream.
    let (a, b) = tar.split_at(1536);
    let mut blob = gzip(a);
    blob.extend_from_slice(&gzip(b));
    let fx = Fixture::new();
    let opts = ApplyOptions {
        expected_digest: Some(Digest::of(Algorithm::Sha512, &blob)),
        expected_diff_id: Some(Digest::of(Algorithm::Sha512, &tar)),
        ..ApplyOptions::default()
    };
    let stats = apply_layer(&blob[..], &fx.dest, &opts).unwrap();
    assert_eq!(stats.diff_id.algorithm(), Algorithm::Sha512);
    assert_sample_tree(&fx);
}

#[test]
fn digest_and_diff_id_mismatches_are_errors() {
    let tar = sample_layer();
    let blob = gzip(&tar);
    let wrong = Digest::sha256_of(b"not this layer");

    let fx = Fixture::new();
    let opts = ApplyOptions {
        expected_digest: Some(wrong.clone()),
        ..ApplyOptions::default()
    };
    let err = apply_layer(&blob[..], &fx.dest, &opts).unwrap_err();
    assert!(matches!(err, LayerError::DigestMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "layer digest mismatch: expected {wrong}, got {}",
            Digest::sha256_of(&blob)
        )
    );

    let fx = Fixture::new();
    let opts = ApplyOptions {
        expected_digest: Some(Digest::sha256_of(&blob)),
        expected_diff_id: Some(wrong.clone()),
        ..ApplyOptions::default()
    };
    let err = apply_layer(&blob[..], &fx.dest, &opts).unwrap_err();
    assert!(matches!(err, LayerError::DiffIdMismatch { .. }), "{err}");
    assert!(err
        .to_string()
        .contains(&Digest::sha256_of(&tar).to_string()));

    let fx = Fixture::new();
    let opts = ApplyOptions {
        expected_size: Some(blob.len() as u64 + 1),
        ..ApplyOptions::default()
    };
    let err = apply_layer(&blob[..], &fx.dest, &opts).unwrap_err();
    assert!(matches!(err, LayerError::SizeMismatch { .. }), "{err}");

    // Trailing bytes after the tar's end are part of both digests.
    let mut padded = tar.clone();
    padded.extend_from_slice(&[0u8; 4096]);
    let fx = Fixture::new();
    let stats = fx.apply(&padded, WhiteoutMode::Overlay).unwrap();
    assert_eq!(stats.diff_id, Digest::sha256_of(&padded));
    assert_eq!(stats.uncompressed_bytes, padded.len() as u64);
}

#[test]
fn size_limit_and_trickling_reader() {
    let tar = sample_layer();
    let blob = zstd(&tar);
    // Reading stops with an error once the blob is longer than its descriptor says.
    let fx = Fixture::new();
    let opts = ApplyOptions {
        expected_size: Some(blob.len() as u64 / 2),
        ..ApplyOptions::default()
    };
    let err = apply_layer(&blob[..], &fx.dest, &opts).unwrap_err();
    assert!(
        format!("{:?}", err).contains("larger than its expected size"),
        "{err:?}"
    );

    // A reader returning one byte per call still gets its compression detected.
    struct Trickle<'a>(&'a [u8]);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(out)) => {
                    *out = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }
    let fx = Fixture::new();
    let stats = apply_layer(Trickle(&blob), &fx.dest, &ApplyOptions::default()).unwrap();
    assert_eq!(stats.compression, Compression::Zstd);
    assert_eq!(stats.compressed_digest, Digest::sha256_of(&blob));
    assert_sample_tree(&fx);
}

#[test]
fn media_types_and_unsupported_compression() {
    let tar = sample_layer();
    let fx = Fixture::new();
    let opts = ApplyOptions {
        media_type: Some("application/vnd.oci.image.config.v1+json".into()),
        ..ApplyOptions::default()
    };
    let err = apply_layer(&tar[..], &fx.dest, &opts).unwrap_err();
    assert!(matches!(err, LayerError::UnsupportedMediaType(_)), "{err}");
    assert!(fs::read_dir(&fx.dest).unwrap().next().is_none());

    let err = fx.apply(b"BZh91AY&SY", WhiteoutMode::Overlay).unwrap_err();
    assert_eq!(err.to_string(), "unsupported layer compression bzip2");
    let err = fx
        .apply(b"\xfd7zXZ\x00\x00\x04", WhiteoutMode::Overlay)
        .unwrap_err();
    assert_eq!(err.to_string(), "unsupported layer compression xz");

    // A gzip media type on an uncompressed tar (some tools do this): the content decides.
    let opts = ApplyOptions {
        media_type: Some("application/vnd.oci.image.layer.v1.tar+gzip".into()),
        ..ApplyOptions::default()
    };
    let stats = apply_layer(&tar[..], &fx.dest, &opts).unwrap();
    assert_eq!(stats.compression, Compression::None);
    assert_sample_tree(&fx);

    // Corrupt compressed data is a read error.
    let mut blob = gzip(&tar);
    let mid = blob.len() / 2;
    blob[mid] ^= 0xff;
    blob.truncate(blob.len() - 4);
    let fx = Fixture::new();
    assert!(fx.apply(&blob, WhiteoutMode::Overlay).is_err());

    // An empty blob is an empty layer.
    let fx = Fixture::new();
    let stats = fx.apply(b"", WhiteoutMode::Overlay).unwrap();
    assert_eq!(stats.entries, 0);
    assert_eq!(stats.diff_id, Digest::sha256_of(b""));
}

// ---------------------------------------------------------------------------------------------
// Hostile paths

#[test]
fn dotdot_escape_is_refused() {
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.file("ok", b"fine");
    l.raw(EntryType::Regular, b"../escape", b"", b"pwned", 0o644);
    let err = fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap_err();
    assert!(matches!(err, LayerError::Escape { .. }), "{err}");
    assert_err_names(&err, "../escape");
    assert!(!fx.tmp.path().join("escape").exists());
    fx.assert_outside_untouched();
}

#[test]
fn nested_dotdot_escape_is_refused() {
    for name in [
        "a/../../x",
        "a/b/../../../outside/secret",
        "/../x",
        "./../outside/secret",
    ] {
        let fx = Fixture::new();
        let mut l = Layer::new();
        l.dir("a/").dir("a/b/");
        l.raw(EntryType::Regular, name.as_bytes(), b"", b"pwned", 0o644);
        let err = fx.apply(&l.finish(), WhiteoutMode::Apply).unwrap_err();
        assert!(matches!(err, LayerError::Escape { .. }), "{name}: {err}");
        assert_err_names(&err, name);
        assert!(!fx.tmp.path().join("x").exists());
        fx.assert_outside_untouched();
    }
}

#[test]
fn inner_dotdot_that_stays_inside_is_cleaned() {
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.raw(EntryType::Regular, b"a/b/../c", b"", b"data", 0o644);
    fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap();
    assert_eq!(fs::read(fx.path("a/c")).unwrap(), b"data");
    assert!(!fx.path("a/b").exists());
    fx.assert_outside_untouched();
}

#[test]
fn absolute_paths_are_neutralised() {
    let fx = Fixture::new();
    let abs_outside = format!("{}/planted", fx.outside.display());
    let mut l = Layer::new();
    l.raw(EntryType::Regular, b"/abs/path", b"", b"data", 0o644);
    l.raw(
        EntryType::Regular,
        abs_outside.as_bytes(),
        b"",
        b"data",
        0o644,
    );
    l.raw(EntryType::Directory, b"/", b"", b"", 0o755);
    fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap();
    assert_eq!(fs::read(fx.path("abs/path")).unwrap(), b"data");
    // The absolute host path of `outside` landed inside dest.
    let inside = fx.dest.join(abs_outside.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"data");
    assert!(!fx.outside.join("planted").exists());
    fx.assert_outside_untouched();
}

#[test]
fn write_through_absolute_symlink_cannot_escape() {
    // lnk -> /<tempdir>/outside, then lnk/planted: resolved inside dest, where that directory
    // does not exist, so the entry is refused.
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.symlink("lnk", &fx.outside.display().to_string());
    l.file("lnk/planted", b"pwned");
    let err = fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap_err();
    assert_err_names(&err, "lnk/planted");
    assert!(!fx.outside.join("planted").exists());
    fx.assert_outside_untouched();
}

#[test]
fn write_through_relative_symlink_cannot_escape() {
    // dest/../outside is the real outside directory; inside the root `..` stops at dest.
    for target in ["../outside", "../../../../outside", "a/../../outside"] {
        let fx = Fixture::new();
        let mut l = Layer::new();
        l.symlink("lnk", target);
        l.file("lnk/planted", b"pwned");
        let err = fx.apply(&l.finish(), WhiteoutMode::Apply).unwrap_err();
        assert_err_names(&err, "lnk/planted");
        assert!(!fx.outside.join("planted").exists(), "{target}");
        fx.assert_outside_untouched();
    }
}

#[test]
fn symlinks_in_parents_resolve_inside_dest() {
    // `..` of the container's root is the root itself: lnk/tmp/x lands in dest/tmp/x. (Were
    // the link followed on the host, it would land in the tempdir, which is checked.)
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.symlink("lnk", "..");
    l.file("lnk/tmp/x", b"inside");
    l.dir("inner/");
    l.symlink("abs", "/inner");
    l.file("abs/file", b"through abs");
    fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap();
    assert_eq!(fs::read(fx.path("tmp/x")).unwrap(), b"inside");
    assert_eq!(fs::read(fx.path("inner/file")).unwrap(), b"through abs");
    assert_eq!(fs::read_link(fx.path("lnk")).unwrap(), Path::new(".."));
    fx.assert_outside_untouched();
}

#[test]
fn many_dotdots_in_a_symlink_stop_at_the_root() {
    // dest is three levels below the tempdir, so even a followed link stays in the tempdir.
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("x1/x2/dest");
    fs::create_dir_all(&dest).unwrap();
    let mut l = Layer::new();
    l.symlink("up", "../../..");
    l.file("up/y", b"inside");
    l.dir("x1/");
    l.symlink("d/up2", "../../../../x1");
    l.file("d/up2/z", b"inside too");
    apply_layer(&l.finish()[..], &dest, &ApplyOptions::default()).unwrap();
    assert_eq!(fs::read(dest.join("y")).unwrap(), b"inside");
    assert_eq!(fs::read(dest.join("x1/z")).unwrap(), b"inside too");
    assert!(!tmp.path().join("y").exists());
    assert!(!tmp.path().join("x1/z").exists());
    let names: Vec<_> = fs::read_dir(tmp.path().join("x1/x2"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["dest"]);
}

#[test]
fn file_replacing_a_symlink_does_not_write_through_it() {
    // A later regular file named like an existing symlink replaces the link itself.
    let fx = Fixture::new();
    let secret = fx.outside.join("secret");
    let mut l = Layer::new();
    l.symlink("victim", &secret.display().to_string());
    l.file("victim", b"pwned");
    l.symlink("rel", "../outside/secret");
    l.dir("rel/");
    fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap();
    assert_eq!(fs::read(fx.path("victim")).unwrap(), b"pwned");
    assert!(fs::symlink_metadata(fx.path("victim")).unwrap().is_file());
    assert!(fs::symlink_metadata(fx.path("rel")).unwrap().is_dir());
    assert_eq!(fs::read(&secret).unwrap(), b"sentinel");
    fx.assert_outside_untouched();
}

#[test]
fn hardlink_outside_is_refused() {
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.hardlink("h", "../outside/secret");
    let err = fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap_err();
    assert!(matches!(err, LayerError::LinkEscape { .. }), "{err}");
    assert_err_names(&err, "h");
    assert!(err.to_string().contains("../outside/secret"), "{err}");

    for target in ["../../etc/passwd", "a/../../../etc/passwd"] {
        let fx = Fixture::new();
        let mut l = Layer::new();
        l.hardlink("h", target);
        let err = fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap_err();
        assert!(matches!(err, LayerError::LinkEscape { .. }), "{err}");
        assert_err_names(&err, "h");
        fx.assert_outside_untouched();
    }
}

#[test]
fn hardlink_to_absolute_or_through_symlink_stays_inside() {
    let passwd_links = fs::metadata("/etc/passwd").map(|m| m.nlink()).ok();
    let fx = Fixture::new();
    let secret = fx.outside.join("secret");
    for (name, target) in [
        ("h1", "/etc/passwd".to_string()),
        ("h2", secret.display().to_string()),
        ("h3", "lnk/outside/secret".to_string()),
        ("h4", "rel/secret".to_string()),
    ] {
        let mut l = Layer::new();
        l.symlink("lnk", &fx.tmp.path().display().to_string());
        l.symlink("rel", "../outside");
        l.hardlink(name, &target);
        let err = fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap_err();
        assert_err_names(&err, name);
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!fx.path(name).exists());
    }
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
    assert_eq!(
        fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(),
        passwd_links
    );
    fx.assert_outside_untouched();
}

#[test]
fn hardlink_chain_shares_one_inode() {
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.file("a", b"content")
        .hardlink("b", "a")
        .hardlink("dir/c", "b")
        .hardlink("d", "./dir/c")
        .hardlink("e", "/d")
        .hardlink("e", "e"); // a link to itself is a no-op
    fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap();
    let ino = fs::metadata(fx.path("a")).unwrap().ino();
    for p in ["b", "dir/c", "d", "e"] {
        let m = fs::metadata(fx.path(p)).unwrap();
        assert_eq!(m.ino(), ino, "{p}");
        assert_eq!(m.nlink(), 5);
        assert_eq!(fs::read(fx.path(p)).unwrap(), b"content");
    }

    // A later entry replacing one name does not write through the shared inode.
    let mut l = Layer::new();
    l.file("a", b"new");
    fx.apply(&l.finish(), WhiteoutMode::Apply).unwrap();
    assert_eq!(fs::read(fx.path("a")).unwrap(), b"new");
    assert_eq!(fs::read(fx.path("b")).unwrap(), b"content");

    // Links to a missing target or a directory are errors naming the entry.
    let mut l = Layer::new();
    l.hardlink("x", "missing");
    let err = fx.apply(&l.finish(), WhiteoutMode::Apply).unwrap_err();
    assert_err_names(&err, "x");
    let mut l = Layer::new();
    l.hardlink("y", "dir");
    let err = fx.apply(&l.finish(), WhiteoutMode::Apply).unwrap_err();
    assert_err_names(&err, "y");
    fx.assert_outside_untouched();
}

#[test]
fn path_length_is_limited() {
    let fx = Fixture::new();
    let long = format!("{}/f", ["d"; 2100].join("/"));
    let mut l = Layer::new();
    l.b.append_data(
        &mut Layer::header(EntryType::Regular, "x", 0o644),
        &long,
        &b""[..],
    )
    .unwrap();
    let err = fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap_err();
    assert!(
        matches!(err, LayerError::PathTooLong { limit: 4096, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("\"d/d/d/"), "{err}");
    assert!(!fx.path("d").exists());

    let fx = Fixture::new();
    let mut l = Layer::new();
    let name = "n".repeat(300);
    l.b.append_data(
        &mut Layer::header(EntryType::Regular, "x", 0o644),
        &name,
        &b""[..],
    )
    .unwrap();
    let err = fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap_err();
    assert!(err.to_string().contains("longer than 255 bytes"), "{err}");

    // A stricter limit is honoured.
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.file("abcdefghij/k", b"");
    let opts = ApplyOptions {
        max_path_len: 8,
        ..ApplyOptions::default()
    };
    let err = apply_layer(&l.finish()[..], &fx.dest, &opts).unwrap_err();
    assert_err_names(&err, "abcdefghij/k");
}

// ---------------------------------------------------------------------------------------------
// Special files, permissions, sparse files

#[test]
fn device_nodes_only_as_root() {
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.dir("dev/")
        .device(EntryType::Char, "dev/null", 1, 3, 0o666)
        .device(EntryType::Block, "dev/loop7", 7, 7, 0o660)
        .append(Layer::header(EntryType::Fifo, "dev/fifo", 0o600), b"");
    let stats = fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap();
    let fifo = fs::symlink_metadata(fx.path("dev/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o600);
    if !root_or_skip("device_nodes_only_as_root (creation)") {
        // As non-root, device nodes are skipped with a warning.
        assert_eq!(stats.skipped, 2);
        assert!(!fx.path("dev/null").exists());
        return;
    }
    assert_eq!(stats.skipped, 0);
    let null = fs::symlink_metadata(fx.path("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lp = fs::symlink_metadata(fx.path("dev/loop7")).unwrap();
    assert!(lp.file_type().is_block_device());
    assert_eq!(lp.rdev(), nix::sys::stat::makedev(7, 7));
    assert_eq!(lp.mode() & 0o7777, 0o660);
    fx.assert_outside_untouched();
}

#[test]
fn setuid_bits_survive() {
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.file_mode("bin/su", b"\x7fELF", 0o4755);
    let mut h = Layer::header(EntryType::Regular, "bin/wall", 0o2755);
    h.set_uid(1000);
    h.set_gid(5);
    l.append(h, b"\x7fELF");
    let mut h = Layer::header(EntryType::Directory, "tmp/", 0o1777);
    h.set_uid(0);
    l.append(h, b"");
    fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap();
    assert_eq!(
        fs::metadata(fx.path("bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(fx.path("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    if root_or_skip("setuid_bits_survive (chown)") {
        // The mode is applied after the chown, which would otherwise clear setgid.
        let wall = fs::metadata(fx.path("bin/wall")).unwrap();
        assert_eq!((wall.uid(), wall.gid()), (1000, 5));
        assert_eq!(wall.mode() & 0o7777, 0o2755);
    }
}

#[test]
fn ownership_is_applied_as_root() {
    if !root_or_skip("ownership_is_applied_as_root") {
        return;
    }
    let fx = Fixture::new();
    let mut l = Layer::new();
    for (path, kind, uid) in [
        ("d/", EntryType::Directory, 101),
        ("d/f", EntryType::Regular, 102),
    ] {
        let mut h = Layer::header(kind, path, 0o750);
        h.set_uid(uid);
        h.set_gid(uid + 100);
        let data: &[u8] = if kind == EntryType::Directory {
            b""
        } else {
            b"x"
        };
        l.append(h, data);
    }
    let mut h = Layer::header(EntryType::Symlink, "d/l", 0o777);
    h.set_link_name("f").unwrap();
    h.set_uid(103);
    h.set_gid(203);
    l.append(h, b"");
    // Large ids from PAX records.
    l.pax(&[("uid", b"4000000000"), ("gid", b"4000000001")]);
    l.file("d/big", b"");
    fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap();
    let ids = |p: &str| {
        let m = fs::symlink_metadata(fx.path(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(ids("d"), (101, 201));
    assert_eq!(ids("d/f"), (102, 202));
    assert_eq!(ids("d/l"), (103, 203));
    assert_eq!(ids("d/big"), (4_000_000_000, 4_000_000_001));
}

#[test]
fn huge_sparse_file_is_written_sparsely() {
    const GIB: u64 = 1 << 30;
    let fx = Fixture::new();
    let mut tar = Vec::new();
    // 8 GiB apparent size, two 512-byte data blocks: one at the start, one at the very end.
    sparse_entry(&mut tar, "huge", 8 * GIB, &[0, 8 * GIB - 512]);
    // Seven data blocks spread over 7 GiB: needs a GNU sparse extension header.
    let offsets: Vec<u64> = (0..7).map(|i| i * GIB).collect();
    sparse_entry(&mut tar, "spread", 7 * GIB, &offsets);
    tar.extend_from_slice(&[0u8; 1024]);
    assert!(tar.len() < 16 * 1024, "the tar itself is tiny");

    let stats = fx.apply(&gzip(&tar), WhiteoutMode::Overlay).unwrap();
    assert_eq!(stats.entries, 2);

    let huge = fs::metadata(fx.path("huge")).unwrap();
    assert_eq!(huge.len(), 8 * GIB);
    assert!(
        huge.blocks() * 512 < 1 << 20,
        "8 GiB sparse file allocated {} bytes",
        huge.blocks() * 512
    );
    assert_eq!(huge.mode() & 0o7777, 0o644);
    assert_eq!(huge.mtime(), MTIME as i64);
    let spread = fs::metadata(fx.path("spread")).unwrap();
    assert_eq!(spread.len(), 7 * GIB);
    assert!(spread.blocks() * 512 < 1 << 20);

    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(fx.path("huge")).unwrap();
    let mut buf = [0u8; 512];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [1u8; 512]);
    f.seek(SeekFrom::Start(4 * GIB)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [0u8; 512]);
    f.seek(SeekFrom::Start(8 * GIB - 512)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [2u8; 512]);
    let mut f = fs::File::open(fx.path("spread")).unwrap();
    f.seek(SeekFrom::Start(6 * GIB)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [7u8; 512]);
    fx.assert_outside_untouched();
}

#[test]
fn times_and_xattrs() {
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.dir("d/");
    l.pax(&[("mtime", b"1234567890.5"), ("atime", b"1234567000")]);
    l.file("d/f", b"x");
    l.pax(&[
        ("SCHILY.xattr.user.comment", b"kept"),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("SCHILY.xattr.security.selinux", b"system_u:object_r:bin_t"),
    ]);
    l.file("d/x", b"x");
    l.symlink("d/l", "f");
    fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap();
    let f = fs::metadata(fx.path("d/f")).unwrap();
    assert_eq!((f.mtime(), f.mtime_nsec()), (1_234_567_890, 500_000_000));
    assert_eq!(f.atime(), 1_234_567_000);
    // The directory's time is restored after its children were created.
    assert_eq!(fs::metadata(fx.path("d")).unwrap().mtime(), MTIME as i64);
    assert_eq!(
        fs::symlink_metadata(fx.path("d/l")).unwrap().mtime(),
        MTIME as i64
    );
    let x = fx.path("d/x");
    assert_eq!(
        read_xattr(&x, "user.comment").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    if root_or_skip("times_and_xattrs (trusted.* checks)") {
        assert_eq!(read_xattr(&x, "trusted.overlay.redirect").unwrap(), None);
    }
}

#[test]
fn file_capabilities_are_kept() {
    if !root_or_skip("file_capabilities_are_kept") {
        return;
    }
    // VFS_CAP_REVISION_2 with CAP_NET_BIND_SERVICE (bit 10) permitted and effective.
    let mut cap = Vec::new();
    cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    let fx = Fixture::new();
    let mut l = Layer::new();
    l.pax(&[("SCHILY.xattr.security.capability", &cap)]);
    let mut h = Layer::header(EntryType::Regular, "bin/ping", 0o755);
    h.set_uid(1000);
    l.append(h, b"\x7fELF");
    fx.apply(&l.finish(), WhiteoutMode::Overlay).unwrap();
    let p = fx.path("bin/ping");
    assert_eq!(read_xattr(&p, "security.capability").unwrap(), Some(cap));
    assert_eq!(fs::metadata(&p).unwrap().uid(), 1000);
}

#[test]
fn existing_entries_are_replaced_like_docker() {
    let fx = Fixture::new();
    let mut lower = Layer::new();
    lower
        .dir("merge/")
        .file("merge/old", b"old")
        .dir("dir2file/")
        .file("dir2file/child", b"c")
        .file("file2dir", b"f")
        .symlink("link2dir", "/outside-target")
        .file("file2link", b"f");
    fx.apply(&lower.finish(), WhiteoutMode::Overlay).unwrap();

    let mut upper = Layer::new();
    upper
        .append(Layer::header(EntryType::Directory, "merge/", 0o700), b"")
        .file("merge/new", b"new")
        .file("dir2file", b"now a file")
        .dir("file2dir/")
        .dir("link2dir/")
        .symlink("file2link", "merge/new");
    fx.apply(&upper.finish(), WhiteoutMode::Apply).unwrap();

    // A directory over a directory merges, taking the new metadata.
    assert_eq!(fs::read(fx.path("merge/old")).unwrap(), b"old");
    assert_eq!(fs::read(fx.path("merge/new")).unwrap(), b"new");
    assert_eq!(
        fs::metadata(fx.path("merge")).unwrap().mode() & 0o7777,
        0o700
    );
    // Anything else replaces.
    assert_eq!(fs::read(fx.path("dir2file")).unwrap(), b"now a file");
    assert!(fs::metadata(fx.path("file2dir")).unwrap().is_dir());
    assert!(fs::symlink_metadata(fx.path("link2dir")).unwrap().is_dir());
    assert_eq!(
        fs::read_link(fx.path("file2link")).unwrap(),
        Path::new("merge/new")
    );
    fx.assert_outside_untouched();
}

// ---------------------------------------------------------------------------------------------
// Whiteouts

fn lower_tree(fx: &Fixture) {
    let mut l = Layer::new();
    l.dir("etc/")
        .file("etc/passwd", b"root:x:0:0")
        .file("etc/group", b"root:x:0:")
        .dir("var/")
        .dir("var/old/")
        .file("var/old/x", b"x")
        .file("var/keep", b"k")
        .dir("var/sub/")
        .file("var/sub/stale", b"s")
        .dir("tree/")
        .dir("tree/deep/")
        .file("tree/deep/f", b"f")
        .symlink("outlink", &fx.outside.display().to_string());
    fx.apply(&l.finish(), WhiteoutMode::Apply)
        .expect("test setup");
    // A read-only directory in the lower tree must not stop a whiteout.
    fs::set_permissions(fx.path("tree/deep"), fs::Permissions::from_mode(0o555))
        .expect("test setup");
}

fn whiteout_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.file("etc/.wh.passwd", b"")
        .dir("var/")
        .file("var/.wh..wh..opq", b"")
        .file("var/new", b"n")
        .dir("var/sub/")
        .file("var/sub/fresh", b"f")
        .file(".wh.tree", b"")
        .file(".wh.outlink", b"")
        .file(".wh.never-existed", b"")
        .file(".wh..wh.plnk", b"")
        // Opaque marker after the layer's own entries: they stay.
        .dir("late/")
        .file("late/mine", b"m")
        .file("late/.wh..wh..opq", b"")
        // A whiteout of a path the same layer added does not delete it.
        .file("etc/added", b"a")
        .file("etc/.wh.added", b"");
    l.finish()
}

#[test]
fn whiteouts_apply_mode_delete() {
    let fx = Fixture::new();
    lower_tree(&fx);
    fs::create_dir(fx.path("late")).unwrap();
    fs::write(fx.path("late/lower"), b"l").unwrap();
    let stats = fx.apply(&whiteout_layer(), WhiteoutMode::Apply).unwrap();
    assert_eq!(stats.skipped, 1, "aufs metadata skipped");

    assert!(!fx.path("etc/passwd").exists());
    assert_eq!(fs::read(fx.path("etc/group")).unwrap(), b"root:x:0:");
    // Opaque: everything var held before is gone, what this layer added stays.
    let mut var: Vec<_> = fs::read_dir(fx.path("var"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    var.sort();
    assert_eq!(var, ["new", "sub"]);
    let sub: Vec<_> = fs::read_dir(fx.path("var/sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(sub, ["fresh"]);
    assert!(!fx.path("tree").exists(), "recursive whiteout");
    assert!(fs::symlink_metadata(fx.path("outlink")).is_err());
    assert_eq!(fs::read(fx.path("late/mine")).unwrap(), b"m");
    assert!(!fx.path("late/lower").exists());
    assert_eq!(fs::read(fx.path("etc/added")).unwrap(), b"a");
    // No whiteout files themselves.
    assert!(!fx.path("etc/.wh.passwd").exists());
    assert!(!fx.path("var/.wh..wh..opq").exists());
    // The symlink was removed, not followed.
    assert_eq!(fs::read(fx.outside.join("secret")).unwrap(), b"sentinel");
    fx.assert_outside_untouched();
}

#[test]
fn whiteouts_overlay_mode_mark() {
    if !root_or_skip("whiteouts_overlay_mode_mark") {
        return;
    }
    let fx = Fixture::new();
    fx.apply(&whiteout_layer(), WhiteoutMode::Overlay).unwrap();
    let wh = fs::symlink_metadata(fx.path("etc/passwd")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(fs::symlink_metadata(fx.path("tree"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        read_xattr(&fx.path("var"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        read_xattr(&fx.path("late"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        read_xattr(&fx.path("etc"), "trusted.overlay.opaque").unwrap(),
        None
    );
    assert_eq!(fs::read(fx.path("var/new")).unwrap(), b"n");
    assert_eq!(fs::read(fx.path("etc/added")).unwrap(), b"a");
    assert!(!fx.path("etc/.wh.passwd").exists());
    fx.assert_outside_untouched();
}

/// Unmounts on drop, so a failing assertion does not leak the mount.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn overlayfs_honours_unpacked_whiteouts() {
    if !root_or_skip("overlayfs_honours_unpacked_whiteouts") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let l1 = tmp.path().join("l1");
    let l2 = tmp.path().join("l2");
    let merged = tmp.path().join("merged");
    for d in [&l1, &l2, &merged] {
        fs::create_dir(d).unwrap();
    }
    let mut lower = Layer::new();
    lower
        .dir("etc/")
        .file("etc/passwd", b"root")
        .file("etc/group", b"root")
        .dir("var/")
        .file("var/old", b"o");
    apply_layer(
        &lower.finish()[..],
        &l1,
        &ApplyOptions::new(WhiteoutMode::Overlay),
    )
    .unwrap();
    let mut upper = Layer::new();
    upper
        .file("etc/.wh.passwd", b"")
        .dir("var/")
        .file("var/.wh..wh..opq", b"")
        .file("var/new", b"n")
        // Deleted and recreated in the same layer: the lower contents stay hidden.
        .file(".wh.srv", b"")
        .dir("srv/")
        .file("srv/new", b"n");
    apply_layer(
        &upper.finish()[..],
        &l2,
        &ApplyOptions::new(WhiteoutMode::Overlay),
    )
    .unwrap();

    let opts = format!("lowerdir={}:{}", l2.display(), l1.display());
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .unwrap();
    let _guard = Mount(merged.clone());
    assert!(!merged.join("etc/passwd").exists());
    assert_eq!(fs::read(merged.join("etc/group")).unwrap(), b"root");
    let var: Vec<_> = fs::read_dir(merged.join("var"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(var, ["new"]);
    let srv: Vec<_> = fs::read_dir(merged.join("srv"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(srv, ["new"]);
}

#[test]
fn bad_whiteout_names_are_refused() {
    for name in ["a/.wh..", "a/.wh...", ".wh."] {
        let fx = Fixture::new();
        let mut l = Layer::new();
        l.dir("a/");
        l.raw(EntryType::Regular, name.as_bytes(), b"", b"", 0o644);
        let err = fx.apply(&l.finish(), WhiteoutMode::Apply).unwrap_err();
        assert_err_names(&err, name);
        assert!(fx.path("a").exists(), "{name}");
        fx.assert_outside_untouched();
    }
}
