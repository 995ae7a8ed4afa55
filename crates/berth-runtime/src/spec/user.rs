//! The container's user: `--user` / image `User` resolved against the container's own
//! `/etc/passwd` and `/etc/group`, with the rules of runc's `GetExecUserPath` that Docker uses.
//!
//! - `""` → uid 0 and root's passwd entry (home, supplementary groups) when there is one;
//! - `uid` / `name`, optionally `:gid` / `:group`; a numeric part is always an id, even when a
//!   user or group of that name exists; numeric ids work without the files;
//! - supplementary groups come from `/etc/group` membership, and only when no group was given;
//! - an unknown name is an error worded as Docker's.
//!
//! The files are read by [`RootfsUserDb`] through a path resolved inside the rootfs, so a
//! hostile image cannot make Berth read host files through symlinks.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Ids above this are refused, as runc does.
const MAX_ID: i64 = i32::MAX as i64;

/// `/etc/passwd` and `/etc/group` larger than this are refused.
const MAX_DB_FILE: u64 = 4 << 20;

/// Symlinks followed while resolving one path inside the rootfs before giving up.
const MAX_SYMLINKS: usize = 255;

/// Errors of user resolution.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A user name has no entry in the container's `/etc/passwd`.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoSuchUser(String),
    /// A group name has no entry in the container's `/etc/group`.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoSuchGroup(String),
    /// A numeric uid or gid outside `0..=2147483647`.
    #[error("uids and gids must be in range 0-{MAX_ID}")]
    IdOutOfRange,
    /// Reading `/etc/passwd` or `/etc/group` of the rootfs failed.
    #[error("failed to read {path} of the container")]
    Read {
        /// The file, as seen inside the container.
        path: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not a regular file (a device, a fifo, a directory...).
    #[error("{0} of the container is not a regular file")]
    NotRegular(&'static str),
    /// The file is implausibly large.
    #[error("{0} of the container is larger than 4 MiB")]
    TooLarge(&'static str),
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Names of the members (the primary group of a user is usually not listed).
    pub members: Vec<String>,
}

/// The user and group databases of a container. A missing file is an empty database.
pub trait UserDb {
    /// The entries of `/etc/passwd`, in file order.
    fn users(&self) -> Result<Vec<PasswdEntry>, UserError>;
    /// The entries of `/etc/group`, in file order.
    fn groups(&self) -> Result<Vec<GroupEntry>, UserError>;
}

/// A resolved user: what goes into `process.user`, plus the home directory for `HOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups, primary gid first (as Docker sets them), no duplicates.
    pub additional_gids: Vec<u32>,
    /// Home directory from passwd, `/` when there is no entry.
    pub home: String,
}

/// Resolves a `--user` value (`""`, `uid`, `uid:gid`, `name`, `name:group`, mixed forms).
pub fn resolve_user(spec: &str, db: &dyn UserDb) -> Result<ResolvedUser, UserError> {
    // Like runc's parseLine: fields split on ':', extra fields ignored.
    let mut parts = spec.splitn(3, ':');
    let user_arg = parts.next().unwrap_or("");
    let group_arg = parts.next().unwrap_or("");
    // Numeric means "parses as an integer" (a negative number is numeric and out of range).
    let uid_arg = user_arg.parse::<i64>().ok();
    let gid_arg = group_arg.parse::<i64>().ok();

    let users = db.users()?;
    let matched = users.iter().find(|u| match (user_arg, uid_arg) {
        ("", _) => u.uid == 0,
        (_, Some(uid)) => i64::from(u.uid) == uid,
        (name, None) => u.name == name,
    });

    let mut uid = 0u32;
    let mut gid = 0u32;
    let mut home = String::from("/");
    let mut matched_name = None;
    match (matched, uid_arg) {
        (Some(entry), _) => {
            uid = entry.uid;
            gid = entry.gid;
            home = entry.home.clone();
            matched_name = Some(entry.name.as_str());
        }
        (None, _) if user_arg.is_empty() => {}
        (None, Some(n)) => uid = checked_id(n)?,
        (None, None) => return Err(UserError::NoSuchUser(user_arg.to_string())),
    }

    let mut supplementary = Vec::new();
    if !group_arg.is_empty() || matched_name.is_some() {
        let groups = db.groups()?;
        if group_arg.is_empty() {
            // Implicit form: every group listing the matched user as a member.
            if let Some(name) = matched_name {
                supplementary = groups
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == name))
                    .map(|g| g.gid)
                    .collect();
            }
        } else {
            let group = groups.iter().find(|g| match gid_arg {
                Some(n) => i64::from(g.gid) == n,
                None => g.name == group_arg,
            });
            gid = match (group, gid_arg) {
                (Some(g), _) => g.gid,
                (None, Some(n)) => checked_id(n)?,
                (None, None) => return Err(UserError::NoSuchGroup(group_arg.to_string())),
            };
        }
    }

    let mut additional_gids = vec![gid];
    for g in supplementary {
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

fn checked_id(n: i64) -> Result<u32, UserError> {
    if (0..=MAX_ID).contains(&n) {
        u32::try_from(n).map_err(|_| UserError::IdOutOfRange)
    } else {
        Err(UserError::IdOutOfRange)
    }
}

/// Parses `/etc/passwd` (`name:password:uid:gid:gecos:home:shell`). Lines that are empty,
/// comments, or whose ids are not numbers (e.g. NIS `+` lines) are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            let uid = f.get(2)?.parse().ok()?;
            let gid = f.get(3)?.parse().ok()?;
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid,
                gid,
                home: f.get(5).copied().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Parses `/etc/group` (`name:password:gid:member,member`), skipping lines as
/// [`parse_passwd`] does.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            let gid = f.get(2)?.parse().ok()?;
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some(GroupEntry {
                name: f[0].to_string(),
                gid,
                members,
            })
        })
        .collect()
}

/// User and group databases given as text (tests, or files the caller already read).
#[derive(Debug, Clone, Default)]
pub struct StaticUserDb {
    users: Vec<PasswdEntry>,
    groups: Vec<GroupEntry>,
}

impl StaticUserDb {
    /// Parses the given `/etc/passwd` and `/etc/group` contents.
    pub fn new(passwd: &str, group: &str) -> Self {
        Self {
            users: parse_passwd(passwd),
            groups: parse_group(group),
        }
    }
}

impl UserDb for StaticUserDb {
    fn users(&self) -> Result<Vec<PasswdEntry>, UserError> {
        Ok(self.users.clone())
    }
    fn groups(&self) -> Result<Vec<GroupEntry>, UserError> {
        Ok(self.groups.clone())
    }
}

/// The databases of an unpacked rootfs: `<rootfs>/etc/passwd` and `<rootfs>/etc/group`,
/// read through paths resolved inside the rootfs (symlinks are followed as the container
/// would see them, never out of it), without following a final symlink, without blocking on
/// fifos, and only if they are regular files of at most 4 MiB.
///
/// The rootfs must not be in use by a running container while it is read (nothing else can
/// race the resolution): Berth reads it before the container starts.
#[derive(Debug, Clone)]
pub struct RootfsUserDb {
    rootfs: PathBuf,
}

impl RootfsUserDb {
    /// The databases of the rootfs at `rootfs`.
    pub fn new(rootfs: impl Into<PathBuf>) -> Self {
        Self {
            rootfs: rootfs.into(),
        }
    }

    fn read(&self, path: &'static str) -> Result<Option<String>, UserError> {
        let read_err = |source| UserError::Read { path, source };
        let host_path = match resolve_in_root(&self.rootfs, Path::new(path)) {
            Ok(p) => p,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&host_path);
        let file = match file {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(UserError::NotRegular(path));
        }
        if meta.len() > MAX_DB_FILE {
            return Err(UserError::TooLarge(path));
        }
        let mut bytes = Vec::new();
        file.take(MAX_DB_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_DB_FILE {
            return Err(UserError::TooLarge(path));
        }
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

/// A missing file, or a path component that is not a directory: the database is empty.
fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

impl UserDb for RootfsUserDb {
    fn users(&self) -> Result<Vec<PasswdEntry>, UserError> {
        Ok(self
            .read("/etc/passwd")?
            .map(|t| parse_passwd(&t))
            .unwrap_or_default())
    }
    fn groups(&self) -> Result<Vec<GroupEntry>, UserError> {
        Ok(self
            .read("/etc/group")?
            .map(|t| parse_group(&t))
            .unwrap_or_default())
    }
}

/// Resolves `path` as the container would see it with `root` as its `/`: absolute symlinks
/// restart at `root`, `..` never climbs above it. Components that do not exist are kept
/// lexically. The last component is resolved too (it is opened with `O_NOFOLLOW` afterwards,
/// which only matters if the tree changes in between).
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: Vec<OsString> = components_rev(path);
    let mut links = 0usize;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = join(root, &resolved).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                pending.extend(components_rev(&target));
            }
            Ok(_) => resolved.push(part),
            Err(e) if e.kind() == io::ErrorKind::NotFound => resolved.push(part),
            Err(e) => return Err(e),
        }
    }
    Ok(join(root, &resolved))
}

/// The normal and `..` components of `path`, last first (so `pop` yields them in order).
fn components_rev(path: &Path) -> Vec<OsString> {
    let mut parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    parts.reverse();
    parts
}

fn join(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in parts {
        p.push(part);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
# a comment
+nis::::::
app:x:1000:1000:App:/home/app:/bin/sh
1234:x:4321:4321:numeric name:/home/n:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:root,app
staff:x:50:app
app:x:1000:
docker:x:999:app,other
4321:x:4321:
nogroup:x:65534:
";

    fn db() -> StaticUserDb {
        StaticUserDb::new(PASSWD, GROUP)
    }

    fn user(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_user(spec, &db())
    }

    #[test]
    fn parses_passwd_and_skips_junk() {
        let users = parse_passwd(PASSWD);
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["root", "daemon", "app", "1234", "nobody"]);
        assert_eq!(users[2].home, "/home/app");
        assert_eq!(users[2].uid, 1000);
    }

    #[test]
    fn parses_group_members() {
        let groups = parse_group(GROUP);
        assert_eq!(groups[1].members, ["root", "app"]);
        assert!(groups[0].members.is_empty());
    }

    #[test]
    fn empty_user_is_root_with_its_groups() {
        let u = user("").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.home, "/root");
        assert_eq!(u.additional_gids, [0, 10]);
    }

    #[test]
    fn empty_user_without_files_is_root_at_slash() {
        let u = resolve_user("", &StaticUserDb::default()).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/"));
        assert_eq!(u.additional_gids, [0]);
    }

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        let u = user("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.home, "/home/app");
        assert_eq!(u.additional_gids, [1000, 10, 50, 999]);
    }

    #[test]
    fn numeric_uid_with_entry_uses_it() {
        let u = user("1000").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(u.additional_gids, [1000, 10, 50, 999]);
    }

    #[test]
    fn numeric_uid_without_entry_works() {
        let u = user("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert_eq!(u.additional_gids, [0]);
        let u = resolve_user("4242:4343", &StaticUserDb::default()).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
        assert_eq!(u.additional_gids, [4343]);
    }

    #[test]
    fn numeric_part_is_always_an_id() {
        // A user literally named "1234" exists, but "1234" means uid 1234.
        let u = user("1234").unwrap();
        assert_eq!((u.uid, u.gid), (1234, 0));
        // A group named "4321" has gid 4321 anyway; "daemon:4321" is gid 4321.
        let u = user("daemon:4321").unwrap();
        assert_eq!((u.uid, u.gid), (1, 4321));
    }

    #[test]
    fn explicit_group_replaces_gid_and_drops_supplementary_groups() {
        let u = user("app:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(u.additional_gids, [50]);
        let u = user("app:7777").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 7777));
        let u = user("1000:wheel").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
    }

    #[test]
    fn empty_group_part_is_implicit_form() {
        assert_eq!(user("app:").unwrap(), user("app").unwrap());
    }

    #[test]
    fn unknown_names_are_docker_errors() {
        assert_eq!(
            user("ghost").unwrap_err().to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            user("app:ghosts").unwrap_err().to_string(),
            "unable to find group ghosts: no matching entries in group file"
        );
        assert!(matches!(
            resolve_user("app", &StaticUserDb::default()),
            Err(UserError::NoSuchUser(_))
        ));
    }

    #[test]
    fn out_of_range_ids_are_refused() {
        for spec in ["-1", "2147483648", "0:-5", "0:99999999999"] {
            assert!(matches!(user(spec), Err(UserError::IdOutOfRange)), "{spec}");
        }
        assert_eq!(user("2147483647").unwrap().uid, 2147483647);
    }

    #[test]
    fn extra_fields_are_ignored() {
        let u = user("app:staff:junk").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
    }

    #[test]
    fn duplicate_group_membership_is_listed_once() {
        let db = StaticUserDb::new(
            "u:x:5:5::/h:/bin/sh\n",
            "five:x:5:u\nsix:x:6:u\nsix-again:x:6:u\n",
        );
        assert_eq!(resolve_user("u", &db).unwrap().additional_gids, [5, 6]);
    }
}
