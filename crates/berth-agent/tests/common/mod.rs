//! What the agent's root tests share: the root check, unique names, and an engine root (in a
//! temp dir) with a busybox image imported.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_engine::Engine;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `prefix` + 8 random hex digits.
pub fn unique(prefix: &str) -> String {
    use std::io::Read;
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    format!(
        "{prefix}{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// A temp dir (`prefix`...) with an engine root `engine/` holding `image`: busybox with
/// `applets` linked, `/tmp`, and `/www/index.html` = `index`. `None` (skipped) when not root,
/// unless `BERTH_REQUIRE_ROOT=1`, which makes it a failure.
pub fn engine_with_busybox(
    what: &str,
    prefix: &str,
    image: &str,
    applets: &[&str],
    index: &str,
) -> Option<(tempfile::TempDir, PathBuf, Engine)> {
    if !is_root() {
        assert!(
            std::env::var("BERTH_REQUIRE_ROOT").as_deref() != Ok("1"),
            "{what} need root (BERTH_REQUIRE_ROOT=1)"
        );
        eprintln!("skipping: {what} need root");
        return None;
    }
    assert!(
        Path::new("/bin/busybox").exists(),
        "busybox-static is not installed"
    );
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    let fs = dir.path().join("fs");
    std::fs::create_dir_all(fs.join("bin")).expect("mkdir");
    std::fs::create_dir_all(fs.join("tmp")).expect("mkdir");
    std::fs::create_dir_all(fs.join("www")).expect("mkdir");
    std::fs::write(fs.join("www/index.html"), index).expect("write");
    std::fs::copy("/bin/busybox", fs.join("bin/busybox")).expect("copy busybox");
    for a in applets {
        std::os::unix::fs::symlink("busybox", fs.join("bin").join(a)).expect("symlink");
    }
    let tar = dir.path().join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&fs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    let root = dir.path().join("engine");
    let engine = Engine::open(&root, env!("CARGO_BIN_EXE_berth-agent-test-shim")).expect("engine");
    engine
        .import_image(&tar, image, &[r#"CMD ["/bin/sh"]"#.to_string()])
        .expect("import");
    Some((dir, root, engine))
}
