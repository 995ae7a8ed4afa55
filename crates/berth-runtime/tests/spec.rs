//! The spec of a container built from an unpacked rootfs on disk: the user database is read
//! through `RootfsUserDb` (hostile symlinks, fifos, huge files), and the spec is written as
//! `config.json` and read back.

use std::os::unix::fs::symlink;
use std::path::Path;

use berth_runtime::spec::{
    build_spec, resolve_user, HostInfo, NetMode, RootfsUserDb, RunOptions, SpecError, UserDb,
    UserError,
};
use oci_spec::image::{ConfigBuilder, ImageConfiguration, ImageConfigurationBuilder};
use oci_spec::runtime::Spec;

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
const GROUP: &str = "\
root:x:0:
wheel:x:10:root
www-data:x:33:
web:x:1500:www-data
nogroup:x:65534:
";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A rootfs with `/etc/passwd` and `/etc/group`.
fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(&dir.path().join("etc/passwd"), PASSWD);
    write(&dir.path().join("etc/group"), GROUP);
    dir
}

fn image(user: Option<&str>) -> ImageConfiguration {
    let mut config = ConfigBuilder::default()
        .cmd(vec!["/bin/httpd".to_string(), "-f".to_string()])
        .env(vec!["PATH=/bin:/sbin".to_string()])
        .working_dir("/var/www")
        .stop_signal("SIGQUIT");
    if let Some(user) = user {
        config = config.user(user);
    }
    ImageConfigurationBuilder::default()
        .config(config.build().expect("config"))
        .build()
        .expect("image")
}

#[test]
fn reads_the_rootfs_user_database() {
    let root = rootfs();
    let db = RootfsUserDb::new(root.path());
    assert_eq!(db.users().unwrap().len(), 4);
    let u = resolve_user("www-data", &db).unwrap();
    assert_eq!((u.uid, u.gid, u.home.as_str()), (33, 33, "/var/www"));
    assert_eq!(u.additional_gids, [33, 1500]);
}

#[test]
fn missing_files_mean_numeric_ids_only() {
    let root = tempfile::tempdir().unwrap();
    let db = RootfsUserDb::new(root.path());
    assert!(db.users().unwrap().is_empty());
    let u = resolve_user("", &db).unwrap();
    assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/"));
    assert_eq!(resolve_user("1000:1000", &db).unwrap().gid, 1000);
    assert!(matches!(
        resolve_user("www-data", &db),
        Err(UserError::NoSuchUser(_))
    ));
    // /etc being a file is the same as no passwd.
    write(&root.path().join("etc"), "not a directory");
    assert!(db.users().unwrap().is_empty());
}

#[test]
fn symlinks_resolve_inside_the_rootfs() {
    let outside = tempfile::tempdir().unwrap();
    write(
        &outside.path().join("passwd"),
        "evil:x:0:0::/root:/bin/sh\n",
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();

    // Absolute link to a host file: read as <rootfs>/<that path>, which does not exist.
    let passwd = root.path().join("etc/passwd");
    symlink(outside.path().join("passwd"), &passwd).unwrap();
    let db = RootfsUserDb::new(root.path());
    assert!(db.users().unwrap().is_empty());

    // Relative link climbing out: `..` stops at the rootfs.
    std::fs::remove_file(&passwd).unwrap();
    let climb = format!("../../../../../../../..{}/passwd", outside.path().display());
    symlink(&climb, &passwd).unwrap();
    assert!(db.users().unwrap().is_empty());

    // The same paths inside the rootfs are what gets read.
    write(
        &root
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("passwd"),
        "inside:x:7:7::/home/inside:/bin/sh\n",
    );
    assert_eq!(db.users().unwrap()[0].name, "inside");

    // A symlinked /etc is followed within the rootfs.
    std::fs::remove_file(&passwd).unwrap();
    std::fs::rename(root.path().join("etc"), root.path().join("real-etc")).unwrap();
    write(&root.path().join("real-etc/passwd"), PASSWD);
    symlink("/real-etc", root.path().join("etc")).unwrap();
    assert_eq!(db.users().unwrap().len(), 4);
}

#[test]
fn symlink_loops_fail() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    symlink("/etc/group", root.path().join("etc/passwd")).unwrap();
    symlink("/etc/passwd", root.path().join("etc/group")).unwrap();
    let err = RootfsUserDb::new(root.path()).users().unwrap_err();
    assert!(matches!(err, UserError::Read { .. }), "{err}");
}

#[test]
fn special_and_huge_files_are_refused() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let db = RootfsUserDb::new(root.path());

    // A fifo must not block the engine.
    nix::unistd::mkfifo(
        &root.path().join("etc/passwd"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    assert!(matches!(db.users(), Err(UserError::NotRegular(_))));

    std::fs::create_dir_all(root.path().join("etc/group")).unwrap();
    assert!(matches!(db.groups(), Err(UserError::NotRegular(_))));

    std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
    let big = std::fs::File::create(root.path().join("etc/passwd")).unwrap();
    big.set_len(5 << 20).unwrap();
    assert!(matches!(db.users(), Err(UserError::TooLarge(_))));
}

#[test]
fn builds_a_spec_from_an_unpacked_image_and_writes_config_json() {
    let root = rootfs();
    let rootfs_path = root.path().join("rootfs-mountpoint");
    let opts = RunOptions {
        hostname: "c0ffee000001".to_string(),
        env: vec!["MODE=prod".to_string()],
        network: NetMode::Path("/run/netns/berth-c0ffee".into()),
        memory: Some(128 << 20),
        pids_limit: Some(64),
        cgroups_path: "berth/c0ffee000001".to_string(),
        ..RunOptions::default()
    };
    let built = build_spec(
        &image(Some("www-data")),
        &opts,
        &rootfs_path,
        &RootfsUserDb::new(root.path()),
        &HostInfo::detect(),
    )
    .unwrap();
    assert_eq!(built.stop_signal, 3);
    let process = built.spec.process().as_ref().unwrap();
    assert_eq!(process.user().uid(), 33);
    assert_eq!(process.cwd(), Path::new("/var/www"));
    assert_eq!(
        process.env().clone().unwrap(),
        [
            "PATH=/bin:/sbin",
            "HOSTNAME=c0ffee000001",
            "MODE=prod",
            "HOME=/var/www"
        ]
    );

    let bundle = tempfile::tempdir().unwrap();
    let config = bundle.path().join("config.json");
    built.spec.save(&config).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"ociVersion\":\"1.1.0\""));
    assert_eq!(Spec::load(&config).unwrap(), built.spec);
}

#[test]
fn unknown_image_user_is_an_error() {
    let root = rootfs();
    let err = build_spec(
        &image(Some("postgres")),
        &RunOptions::default(),
        root.path(),
        &RootfsUserDb::new(root.path()),
        &HostInfo::detect(),
    )
    .unwrap_err();
    assert!(matches!(err, SpecError::User(UserError::NoSuchUser(_))));
    assert_eq!(
        err.to_string(),
        "unable to find user postgres: no matching entries in passwd file"
    );
}
