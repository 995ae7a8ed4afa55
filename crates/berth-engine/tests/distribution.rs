//! The engine's distribution code against a real Berth registry served in-process (no root,
//! no external tools): login, push, pull (dedup, up to date, corrupted blobs, unknown
//! images, missing credentials) and archives (save/load round trips, hostile archives).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_engine::distribution::{
    self, ArchiveError, ArchiveFormat, AuthStore, Credentials, DistributionError, NoProgress,
};
use berth_engine::{Engine, ProgressEvent, RegistryOptions};
use berth_oci::store::StoreError;
use rand::RngCore;

const AKID: &str = "AKIAENGINETEST000001";
const SECRET: &str = "engineTestSecret/0123456789abcdefghij";

/// A `berth registry` served on 127.0.0.1:0 by a runtime of its own.
struct Registry {
    _rt: tokio::runtime::Runtime,
    addr: String,
    data: PathBuf,
}

fn start_registry(dir: &Path) -> Registry {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = dir.join("registry");
    let mut cfg = berth_registry::Config::new(&data);
    cfg.credentials = Some(berth_aws::credentials::Credentials {
        access_key_id: AKID.into(),
        secret_access_key: SECRET.into(),
    });
    let reg = berth_registry::Registry::open(cfg).expect("open registry");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let app = reg.router();
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Registry {
        _rt: rt,
        addr,
        data,
    }
}

struct Env {
    dir: tempfile::TempDir,
    reg: Registry,
    opts: RegistryOptions,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = start_registry(dir.path());
        let opts = RegistryOptions {
            auth: AuthStore::new(dir.path().join("auth.json"), None),
            insecure: false,
        };
        Env { dir, reg, opts }
    }

    fn engine(&self, name: &str) -> Engine {
        Engine::open(self.dir.path().join(name), "/nonexistent").expect("engine")
    }

    fn login(&self) {
        distribution::login(
            &self.reg.addr,
            Credentials {
                username: AKID.into(),
                password: SECRET.into(),
            },
            &self.opts,
        )
        .expect("login");
    }

    fn reference(&self, rest: &str) -> String {
        format!("{}/{rest}", self.reg.addr)
    }
}

/// A rootfs tar with one random file of `size` bytes.
fn rootfs_tar(dir: &Path, name: &str, size: usize) -> PathBuf {
    let mut data = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut data);
    let path = dir.join(name);
    let mut b = tar::Builder::new(std::fs::File::create(&path).expect("create"));
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "data/file.bin", &data[..])
        .expect("append");
    b.into_inner().expect("finish").flush().expect("flush");
    path
}

/// Records every progress event.
#[derive(Default)]
struct Recorder(Mutex<Vec<ProgressEvent>>);

impl berth_engine::Progress for Recorder {
    fn event(&self, e: ProgressEvent) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e);
        }
    }
}

impl Recorder {
    fn count(&self, f: impl Fn(&ProgressEvent) -> bool) -> usize {
        self.0
            .lock()
            .map(|v| v.iter().filter(|e| f(e)).count())
            .unwrap_or(0)
    }
}

#[test]
fn login_push_pull_dedup_and_up_to_date() {
    let env = Env::new();
    let a = env.engine("a");
    let tar = rootfs_tar(env.dir.path(), "rootfs.tar", 300_000);
    a.import_image(&tar, "app:1", &[]).expect("import");
    let remote = env.reference("team/app:1");
    a.tag_image("app:1", &remote).expect("tag");

    // Without credentials the registry refuses the push.
    let err = a
        .push(&remote, &env.opts, Arc::new(NoProgress))
        .expect_err("anonymous push");
    assert!(
        matches!(err, DistributionError::Unauthorized(_)),
        "unexpected {err:?}"
    );
    // Wrong password: refused and not stored.
    let err = distribution::login(
        &env.reg.addr,
        Credentials {
            username: AKID.into(),
            password: "wrong".into(),
        },
        &env.opts,
    )
    .expect_err("wrong password");
    assert!(err.to_string().starts_with("unauthorized: "), "{err}");
    assert_eq!(env.opts.auth.get(&env.reg.addr).expect("auth"), None);
    env.login();

    let pushed = a
        .push(&remote, &env.opts, Arc::new(NoProgress))
        .expect("push");
    assert_eq!(pushed.blobs_uploaded, 2);
    let local = a.resolve_image(&remote).expect("resolve");
    assert_eq!(pushed.digest, local.manifest_digest);
    // Pushing again uploads nothing.
    let again = a
        .push(&remote, &env.opts, Arc::new(NoProgress))
        .expect("push again");
    assert_eq!((again.blobs_uploaded, again.blobs_existing), (0, 2));
    // A second repository of the same registry gets the blobs by cross-repository mounts.
    let other = env.reference("team/other:1");
    a.tag_image("app:1", &other).expect("tag");
    let mounted = a
        .push(&other, &env.opts, Arc::new(NoProgress))
        .expect("push other");
    assert_eq!(mounted.blobs_mounted, 2, "{mounted:?}");

    let b = env.engine("b");
    let rec = Recorder::default();
    let pulled = b.pull(&remote, None, &env.opts, &rec).expect("pull");
    assert!(!pulled.up_to_date);
    assert_eq!(pulled.layers_downloaded, 1);
    assert_eq!(pulled.id, local.id);
    assert_eq!(pulled.manifest_digest, local.manifest_digest);
    assert_eq!(pulled.reference, remote);
    assert_eq!(rec.count(|e| matches!(e, ProgressEvent::Done { .. })), 1);
    assert!(rec.count(|e| matches!(e, ProgressEvent::Transfer { .. })) >= 1);
    let img = b.resolve_image(&remote).expect("pulled image resolves");
    assert_eq!(img.layers.len(), 1);

    // Again: up to date, nothing downloaded.
    let rec = Recorder::default();
    let again = b.pull(&remote, None, &env.opts, &rec).expect("pull again");
    assert!(again.up_to_date);
    assert_eq!(again.bytes_downloaded, 0);
    assert_eq!(
        rec.count(|e| matches!(e, ProgressEvent::Transfer { .. })),
        0
    );
    assert!(
        rec.count(|e| matches!(e, ProgressEvent::Status(s) if s.contains("Image is up to date")))
            == 1
    );

    // The same image under another name: the layer already exists (dedup).
    let rec = Recorder::default();
    let other_pull = b.pull(&other, None, &env.opts, &rec).expect("pull other");
    assert_eq!(other_pull.layers_downloaded, 0);
    assert_eq!(rec.count(|e| matches!(e, ProgressEvent::Exists { .. })), 1);

    // By digest.
    let by_digest = format!("{}/team/app@{}", env.reg.addr, local.manifest_digest);
    let c = env.engine("c");
    let r = c
        .pull(&by_digest, None, &env.opts, &NoProgress)
        .expect("pull by digest");
    assert_eq!(r.id, local.id);
    assert_eq!(c.resolve_image(&by_digest).expect("resolve").id, local.id);

    // Unknown tag and repository.
    for missing in ["team/app:nope", "nobody/here:1"] {
        let err = c
            .pull(&env.reference(missing), None, &env.opts, &NoProgress)
            .expect_err("missing image");
        assert!(
            matches!(err, DistributionError::ManifestUnknown(_)),
            "{missing}: {err:?}"
        );
        assert!(err.to_string().starts_with("manifest unknown: "), "{err}");
    }

    // Logged out: the (private) repository cannot be pulled.
    assert!(distribution::logout(&env.reg.addr, &env.opts).expect("logout"));
    let d = env.engine("d");
    let err = d
        .pull(&remote, None, &env.opts, &NoProgress)
        .expect_err("anonymous pull");
    assert!(
        matches!(err, DistributionError::Unauthorized(_)),
        "unexpected {err:?}"
    );

    // An unreachable registry is named in the error.
    let err = d
        .pull("127.0.0.1:9/x:1", None, &env.opts, &NoProgress)
        .expect_err("no registry");
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
}

/// The registry's file of a blob.
fn registry_blob(data: &Path, digest: &berth_oci::Digest) -> PathBuf {
    data.join("blobs")
        .join("sha256")
        .join(&digest.hex()[..2])
        .join(digest.hex())
}

#[test]
fn corrupted_blob_is_rejected_and_nothing_registered() {
    let env = Env::new();
    env.login();
    let a = env.engine("a");
    let tar = rootfs_tar(env.dir.path(), "rootfs.tar", 200_000);
    let remote = env.reference("bad/app:1");
    a.import_image(&tar, &remote, &[]).expect("import");
    a.push(&remote, &env.opts, Arc::new(NoProgress))
        .expect("push");
    let img = a.resolve_image(&remote).expect("resolve");
    let layer = &img.layers[0].digest;
    let file = registry_blob(&env.reg.data, layer);
    let mut bytes = std::fs::read(&file).expect("registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).expect("corrupt");

    let b = env.engine("b");
    let err = b
        .pull(&remote, None, &env.opts, &NoProgress)
        .expect_err("corrupted pull");
    match &err {
        DistributionError::Blob {
            digest,
            source: StoreError::DigestMismatch { .. },
            ..
        } => assert_eq!(digest, layer),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!b.store().contains(layer).expect("contains"));
    assert!(b.images().expect("images").is_empty());
    // The temporary file is gone too.
    let tmp = b.store().root().join("tmp");
    assert_eq!(std::fs::read_dir(tmp).expect("tmp").count(), 0);
}

fn save_to(engine: &Engine, refs: &[&str], format: ArchiveFormat, path: &Path) {
    let refs: Vec<String> = refs.iter().map(|s| s.to_string()).collect();
    let f = std::fs::File::create(path).expect("create archive");
    engine.save(&refs, format, f).expect("save");
}

#[test]
fn save_and_load_round_trips_keep_image_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Engine::open(dir.path().join("a"), "/nonexistent").expect("engine");
    let tar = rootfs_tar(dir.path(), "rootfs.tar", 100_000);
    let img = a.import_image(&tar, "app:1", &[]).expect("import");
    a.tag_image("app:1", "localhost:5000/app:2").expect("tag");
    for format in [ArchiveFormat::Docker, ArchiveFormat::Oci] {
        let archive = dir.path().join(format!("{format:?}.tar"));
        save_to(&a, &["app:1", "localhost:5000/app:2"], format, &archive);
        let b = Engine::open(dir.path().join(format!("b-{format:?}")), "/x").expect("engine");
        let loaded = b
            .load(std::fs::File::open(&archive).expect("open"))
            .expect("load");
        assert_eq!(loaded.len(), 1, "{format:?}");
        let mut names = loaded[0].names.clone();
        names.sort();
        assert_eq!(names, ["app:1", "localhost:5000/app:2"], "{format:?}");
        for n in &names {
            assert_eq!(
                b.resolve_image(n).expect("resolve").id,
                img.id,
                "{format:?}"
            );
        }
        if format == ArchiveFormat::Oci {
            // The manifest is kept byte for byte.
            assert_eq!(
                b.resolve_image("app:1").expect("resolve").manifest_digest,
                img.manifest_digest
            );
        }
        // Loading twice is harmless.
        b.load(std::fs::File::open(&archive).expect("open"))
            .expect("load again");
    }
}

/// Writes a tar with the given entries: (path, Some(data)) files, (path, None) symlinks to
/// `target`.
fn hostile_tar(path: &Path, entries: &[(&str, &[u8])], links: &[(&str, &str)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).expect("create"));
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Bypass the builder's own path checks: hostile archives come from elsewhere.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    for (name, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_entry_type(tar::EntryType::Symlink);
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        h.set_cksum();
        b.append(&h, &[][..]).expect("append link");
    }
    b.into_inner().expect("finish").flush().expect("flush");
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Engine::open(dir.path().join("a"), "/x").expect("engine");
    let tar = rootfs_tar(dir.path(), "rootfs.tar", 50_000);
    a.import_image(&tar, "good:1", &[]).expect("import");
    let good = dir.path().join("good.tar");
    save_to(&a, &["good:1"], ArchiveFormat::Oci, &good);
    // The good archive's files, to build bad ones from.
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&good).expect("open"));
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).expect("read");
        files.push((name, data));
    }
    let layer_path = format!("blobs/sha256/{}", img_layer(&a, "good:1"));
    let check = |name: &str,
                 entries: Vec<(String, Vec<u8>)>,
                 links: &[(&str, &str)],
                 want: &dyn Fn(&ArchiveError) -> bool| {
        let path = dir.path().join(format!("{name}.tar"));
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        hostile_tar(&path, &refs, links);
        let b = Engine::open(dir.path().join(format!("b-{name}")), "/x").expect("engine");
        let err = b
            .load(std::fs::File::open(&path).expect("open"))
            .expect_err(name);
        assert!(want(&err), "{name}: unexpected error {err:?} ({err})");
        assert!(
            b.images().expect("images").is_empty(),
            "{name}: image registered"
        );
        assert!(
            b.store().list().expect("list").is_empty(),
            "{name}: blobs stored"
        );
        assert_eq!(
            std::fs::read_dir(b.store().root().join("tmp"))
                .map(|d| d.count())
                .unwrap_or(0),
            0,
            "{name}: temporary files left"
        );
    };

    // A path escaping the archive.
    let mut e = files.clone();
    e.push(("../../escaped".into(), b"x".to_vec()));
    check("traversal", e, &[], &|e| {
        matches!(e, ArchiveError::PathTraversal(_))
    });
    assert!(!dir.path().join("escaped").exists());
    // An absolute path.
    let mut e = files.clone();
    e.push(("/tmp/berth-absolute-entry".into(), b"x".to_vec()));
    check("absolute", e, &[], &|e| {
        matches!(e, ArchiveError::PathTraversal(_))
    });
    // The layer replaced by a symlink out of the archive.
    let e: Vec<_> = files
        .iter()
        .filter(|(n, _)| *n != layer_path)
        .cloned()
        .collect();
    check(
        "symlink",
        e,
        &[(&layer_path, "../../../../etc/passwd")],
        &|e| matches!(e, ArchiveError::LinkEscape { .. }),
    );
    // A missing blob.
    let e: Vec<_> = files
        .iter()
        .filter(|(n, _)| *n != layer_path)
        .cloned()
        .collect();
    check("missing", e, &[], &|e| {
        matches!(e, ArchiveError::Missing(_))
    });
    // A blob whose content does not match its digest (same size).
    let e: Vec<_> = files
        .iter()
        .map(|(n, d)| {
            let mut d = d.clone();
            if *n == layer_path {
                let mid = d.len() / 2;
                d[mid] ^= 0x55;
            }
            (n.clone(), d)
        })
        .collect();
    check("mismatch", e, &[], &|e| {
        matches!(e, ArchiveError::DigestMismatch { .. })
    });
    // Neither format.
    check("empty", vec![("hello".into(), b"x".to_vec())], &[], &|e| {
        matches!(e, ArchiveError::UnknownFormat)
    });
}

fn img_layer(e: &Engine, r: &str) -> String {
    e.resolve_image(r).expect("resolve").layers[0]
        .digest
        .hex()
        .to_string()
}

#[test]
fn docker_archive_with_a_wrong_layer_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Engine::open(dir.path().join("a"), "/x").expect("engine");
    let tar1 = rootfs_tar(dir.path(), "one.tar", 20_000);
    let tar2 = rootfs_tar(dir.path(), "two.tar", 20_000);
    a.import_image(&tar1, "one:1", &[]).expect("import");
    a.import_image(&tar2, "two:1", &[]).expect("import");
    let good = dir.path().join("docker.tar");
    save_to(&a, &["one:1"], ArchiveFormat::Docker, &good);
    // Swap in the other image's layer under the first one's name.
    let two_layer = a.resolve_image("two:1").expect("two").layers[0]
        .digest
        .clone();
    let two_bytes = std::fs::read(a.store().blob_path(&two_layer)).expect("layer");
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&good).expect("open"));
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).expect("read");
        if name.ends_with("/layer.tar") {
            data = two_bytes.clone();
        }
        entries.push((name, data));
    }
    let bad = dir.path().join("bad.tar");
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    hostile_tar(&bad, &refs, &[]);
    let b = Engine::open(dir.path().join("b"), "/x").expect("engine");
    let err = b
        .load(std::fs::File::open(&bad).expect("open"))
        .expect_err("wrong layer");
    assert!(matches!(err, ArchiveError::DiffId { .. }), "{err:?}");
    assert!(b.images().expect("images").is_empty());
}
