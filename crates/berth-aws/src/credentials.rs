//! Access keys: generation, the AWS shared-credentials file, and a static key table.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::rngs::OsRng;
use rand::RngCore;

use crate::sigv4::KeyLookup;

const ACCESS_KEY_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const PROFILE: &str = "default";
const KEY_ID: &str = "aws_access_key_id";
const SECRET: &str = "aws_secret_access_key";

/// An access key pair. `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Why a credentials file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read credentials file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write credentials file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("credentials file {path} has no [default] profile")]
    NoProfile { path: PathBuf },
    #[error("credentials file {path} has no {key} in its [default] profile")]
    MissingKey { path: PathBuf, key: &'static str },
    #[error(
        "credentials file {path} line {line} is neither a section, a key = value, nor a comment"
    )]
    Syntax { path: PathBuf, line: usize },
}

/// Generates a fresh key pair shaped like AWS's: `AKIA` + 16 base32 characters, and a 40
/// character secret, from the operating system's CSPRNG.
pub fn generate() -> Credentials {
    Credentials {
        access_key_id: format!("AKIA{}", random_string(ACCESS_KEY_ALPHABET, 16)),
        secret_access_key: random_string(SECRET_ALPHABET, 40),
    }
}

/// `len` characters drawn uniformly from `alphabet`, whose length divides 256.
fn random_string(alphabet: &[u8], len: usize) -> String {
    debug_assert!(256 % alphabet.len() == 0);
    let mut bytes = vec![0u8; len];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect()
}

/// Reads the `[default]` profile of the shared-credentials file at `path`, or, when the file
/// does not exist, generates credentials and creates it (mode 0600, atomically: never a partly
/// written file, and never overwriting one that appeared meanwhile). Returns whether it created
/// the file.
pub fn load_or_create(path: &Path) -> Result<(Credentials, bool), CredentialsError> {
    match load(path) {
        Ok(creds) => return Ok((creds, false)),
        Err(CredentialsError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let creds = generate();
    let write_err = |source| CredentialsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = parent_dir(path);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_err)?;
    let tmp = write_temp(dir, path, &creds).map_err(write_err)?;
    // A hard link fails if the target exists, so a file created concurrently wins and we use it.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir).map_err(write_err)?;
            tracing::info!(path = %path.display(), access_key_id = %creds.access_key_id,
                "created credentials file");
            Ok((creds, true))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((load(path)?, false)),
        Err(e) => Err(write_err(e)),
    }
}

/// Reads the `[default]` profile of the shared-credentials file at `path`.
pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
    let read_err = |source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = fs::read_to_string(path).map_err(read_err)?;
    let mode = fs::metadata(path).map_err(read_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777),
            "credentials file is accessible by group or others; chmod 600 it");
    }
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<Credentials, CredentialsError> {
    let mut section: Option<&str> = None;
    let mut seen_profile = false;
    let (mut key_id, mut secret) = (None, None);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            section = Some(name);
            seen_profile |= name == PROFILE;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(CredentialsError::Syntax {
                path: path.to_path_buf(),
                line: i + 1,
            });
        };
        if section != Some(PROFILE) {
            continue;
        }
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            KEY_ID => key_id = Some(value),
            SECRET => secret = Some(value),
            _ => {}
        }
    }
    if !seen_profile {
        return Err(CredentialsError::NoProfile {
            path: path.to_path_buf(),
        });
    }
    let missing = |key| CredentialsError::MissingKey {
        path: path.to_path_buf(),
        key,
    };
    Ok(Credentials {
        access_key_id: key_id
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing(KEY_ID))?,
        secret_access_key: secret
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing(SECRET))?,
    })
}

/// Writes `creds` as the `[default]` profile of a new shared-credentials file at `path`,
/// atomically replacing any file there (mode 0600).
pub fn write(path: &Path, creds: &Credentials) -> Result<(), CredentialsError> {
    let write_err = |source| CredentialsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = parent_dir(path);
    let tmp = write_temp(dir, path, creds).map_err(write_err)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    sync_dir(dir).map_err(write_err)
}

fn render(creds: &Credentials) -> String {
    format!(
        "[{PROFILE}]\n{KEY_ID} = {}\n{SECRET} = {}\n",
        creds.access_key_id, creds.secret_access_key
    )
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes the file's content to a fresh 0600 temporary file in `dir` and fsyncs it.
fn write_temp(dir: &Path, path: &Path, creds: &Credentials) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "credentials".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}",
        random_string(ACCESS_KEY_ALPHABET, 12)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(render(creds).as_bytes())?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A fixed table of access key id → secret.
#[derive(Clone, Default)]
pub struct StaticKeys(pub HashMap<String, String>);

impl StaticKeys {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, creds: &Credentials) {
        self.0
            .insert(creds.access_key_id.clone(), creds.secret_access_key.clone());
    }
}

impl From<&Credentials> for StaticKeys {
    fn from(creds: &Credentials) -> Self {
        let mut keys = Self::new();
        keys.insert(creds);
        keys
    }
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StaticKeys")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyLookup for StaticKeys {
    fn secret_for(&self, access_key_id: &str) -> Option<String> {
        self.0.get(access_key_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_look_like_aws_keys() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.access_key_id.len(), 20);
        assert!(a.access_key_id.starts_with("AKIA"));
        assert!(a.access_key_id[4..]
            .bytes()
            .all(|c| ACCESS_KEY_ALPHABET.contains(&c)));
        assert_eq!(a.secret_access_key.len(), 40);
        assert!(a
            .secret_access_key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/'));
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = generate();
        let shown = format!("{c:?} {:?}", StaticKeys::from(&c));
        assert!(shown.contains(&c.access_key_id));
        assert!(!shown.contains(&c.secret_access_key));
    }

    #[test]
    fn creates_then_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/credentials");
        let (created, was_created) = load_or_create(&path).expect("create");
        assert!(was_created);
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (loaded, was_created) = load_or_create(&path).expect("load");
        assert!(!was_created);
        assert_eq!(created, loaded);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("credentials")]);
    }

    #[test]
    fn parses_aws_cli_style_file() {
        let text = "# written by hand\n\
                    [profile other]\naws_access_key_id=OTHER\n\n\
                    [ default ]\n  aws_access_key_id   =  AKIAEXAMPLE  \n\
                    ; a comment\nregion = us-east-1\n\
                    AWS_SECRET_ACCESS_KEY = abc/def+ghi=\n[next]\naws_secret_access_key = no\n";
        let c = parse(text, Path::new("x")).expect("parse");
        assert_eq!(c.access_key_id, "AKIAEXAMPLE");
        assert_eq!(c.secret_access_key, "abc/def+ghi=");
    }

    #[test]
    fn reports_bad_files() {
        let p = Path::new("x");
        assert!(matches!(
            parse("[other]\naws_access_key_id = a\n", p),
            Err(CredentialsError::NoProfile { .. })
        ));
        assert!(matches!(
            parse("[default]\naws_access_key_id = a\n", p),
            Err(CredentialsError::MissingKey { key: SECRET, .. })
        ));
        assert!(matches!(
            parse("[default]\ngarbage\n", p),
            Err(CredentialsError::Syntax { line: 2, .. })
        ));
    }

    #[test]
    fn write_replaces_atomically_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("credentials");
        fs::write(&path, "old").expect("seed");
        let c = generate();
        write(&path, &c).expect("write");
        assert_eq!(load(&path).expect("load"), c);
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn static_keys_lookup() {
        let c = generate();
        let keys = StaticKeys::from(&c);
        assert_eq!(
            keys.secret_for(&c.access_key_id),
            Some(c.secret_access_key.clone())
        );
        assert_eq!(keys.secret_for("AKIAUNKNOWN"), None);
    }
}
