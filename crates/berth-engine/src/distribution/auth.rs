//! Registry credentials: `berth login` writes them to `$BERTH_CONFIG` (a file path) or
//! `~/.config/berth/auth.json`, in docker's `config.json` format
//! (`{"auths": {"REGISTRY": {"auth": base64("user:pass")}}}`, mode 0600, replaced atomically).
//! Lookups fall back to docker's `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`
//! (inline `auths` only; credential helpers are not run).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::reference::{DOCKER_HUB, DOCKER_HUB_AUTH_KEY};

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Errors of the credential files.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid credentials file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AuthFileError + 'a {
    move |source| AuthFileError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The key of a registry domain in an `auths` map.
pub fn auth_key(domain: &str) -> String {
    if domain == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        domain.to_string()
    }
}

/// An `auths` key reduced to a registry domain: scheme and path dropped, Docker Hub's
/// aliases mapped to `docker.io`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

/// The credential store.
#[derive(Debug, Clone)]
pub struct AuthStore {
    path: PathBuf,
    docker: Option<PathBuf>,
    /// Credentials given in memory (the agent's ECR tokens), looked up before the files.
    extra: Vec<(String, Credentials)>,
}

impl AuthStore {
    /// `$BERTH_CONFIG`, else `$HOME/.config/berth/auth.json`; docker's config as fallback.
    pub fn from_env() -> AuthStore {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let path = std::env::var_os("BERTH_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                home.clone()
                    .unwrap_or_else(|| PathBuf::from("/root"))
                    .join(".config/berth/auth.json")
            });
        let docker = std::env::var_os("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| home.map(|h| h.join(".docker/config.json")));
        AuthStore {
            path,
            docker,
            extra: Vec::new(),
        }
    }

    /// A store at `path` with an optional docker `config.json` fallback.
    pub fn new(path: impl Into<PathBuf>, docker: Option<PathBuf>) -> AuthStore {
        AuthStore {
            path: path.into(),
            docker,
            extra: Vec::new(),
        }
    }

    /// This store with `creds` for the registry `domain` in memory (never written), used
    /// before any file.
    pub fn with_credentials(mut self, domain: &str, creds: Credentials) -> AuthStore {
        let domain = normalize_key(domain);
        self.extra.retain(|(d, _)| *d != domain);
        self.extra.push((domain, creds));
        self
    }

    /// The file `berth login` writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(path: &Path) -> Result<Option<Map<String, Value>>, AuthFileError> {
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        match serde_json::from_slice::<Value>(&data) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(AuthFileError::Invalid {
                path: path.to_path_buf(),
                reason: "not a JSON object".into(),
            }),
            Err(e) => Err(AuthFileError::Invalid {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    fn lookup(path: &Path, domain: &str) -> Result<Option<Credentials>, AuthFileError> {
        let Some(file) = Self::read(path)? else {
            return Ok(None);
        };
        let Some(Value::Object(auths)) = file.get("auths") else {
            return Ok(None);
        };
        for (key, entry) in auths {
            if normalize_key(key) != domain {
                continue;
            }
            if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| AuthFileError::Invalid {
                        path: path.to_path_buf(),
                        reason: format!("the auth of {key} is not base64 of user:password"),
                    })?;
                if let Some((u, p)) = decoded.split_once(':') {
                    return Ok(Some(Credentials {
                        username: u.to_string(),
                        password: p.to_string(),
                    }));
                }
            }
            if let (Some(u), Some(p)) = (
                entry.get("username").and_then(Value::as_str),
                entry.get("password").and_then(Value::as_str),
            ) {
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                }));
            }
        }
        Ok(None)
    }

    /// The credentials for a registry domain (`localhost:5000`, `docker.io`), if any: from
    /// berth's file, else docker's.
    pub fn get(&self, domain: &str) -> Result<Option<Credentials>, AuthFileError> {
        let domain = normalize_key(domain);
        if let Some((_, c)) = self.extra.iter().find(|(d, _)| *d == domain) {
            return Ok(Some(c.clone()));
        }
        if let Some(c) = Self::lookup(&self.path, &domain)? {
            return Ok(Some(c));
        }
        match &self.docker {
            Some(d) => Self::lookup(d, &domain).or_else(|e| {
                tracing::warn!(error = %e, "ignoring docker's credentials file");
                Ok(None)
            }),
            None => Ok(None),
        }
    }

    fn write(&self, file: &Map<String, Value>) -> Result<(), AuthFileError> {
        let path = &self.path;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create", dir))?;
        let data = serde_json::to_vec_pretty(&Value::Object(file.clone())).map_err(|e| {
            AuthFileError::Invalid {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".auth-")
            .tempfile_in(dir)
            .map_err(io_err("create a temporary file in", dir))?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod", tmp.path()))?;
        tmp.write_all(&data).map_err(io_err("write", tmp.path()))?;
        tmp.as_file()
            .sync_all()
            .map_err(io_err("sync", tmp.path()))?;
        tmp.persist(path)
            .map_err(|e| io_err("replace", path)(e.error))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", dir))
    }

    /// Saves credentials for a registry domain (replacing any for the same registry).
    pub fn store(&self, domain: &str, creds: &Credentials) -> Result<(), AuthFileError> {
        let domain = normalize_key(domain);
        let mut file = Self::read(&self.path)?.unwrap_or_default();
        let auths = file.entry("auths").or_insert_with(|| json!({}));
        if !auths.is_object() {
            *auths = json!({});
        }
        if let Value::Object(auths) = auths {
            auths.retain(|k, _| normalize_key(k) != domain);
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", creds.username, creds.password));
            auths.insert(auth_key(&domain), json!({ "auth": auth }));
        }
        self.write(&file)
    }

    /// Removes the credentials of a registry domain from berth's file. Returns whether there
    /// were any.
    pub fn remove(&self, domain: &str) -> Result<bool, AuthFileError> {
        let domain = normalize_key(domain);
        let Some(mut file) = Self::read(&self.path)? else {
            return Ok(false);
        };
        let mut removed = false;
        if let Some(Value::Object(auths)) = file.get_mut("auths") {
            let before = auths.len();
            auths.retain(|k, _| normalize_key(k) != domain);
            removed = auths.len() != before;
        }
        if removed {
            self.write(&file)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_get_remove_and_docker_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docker = dir.path().join("docker.json");
        fs::write(
            &docker,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},"other:1":{"auth":"bzpw"}}}"#,
        )
        .expect("write");
        let store = AuthStore::new(dir.path().join("sub/auth.json"), Some(docker));
        assert_eq!(store.get("localhost:5000").expect("get"), None);
        let hub = store.get("docker.io").expect("get").expect("hub creds");
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "secret")
        );
        let c = Credentials {
            username: "AKID".into(),
            password: "se:cret".into(),
        };
        store.store("localhost:5000", &c).expect("store");
        assert_eq!(store.get("localhost:5000").expect("get"), Some(c));
        let mode = fs::metadata(store.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = fs::read_to_string(store.path()).expect("read");
        assert!(text.contains("\"localhost:5000\""), "{text}");
        assert!(store.remove("localhost:5000").expect("remove"));
        assert!(!store.remove("localhost:5000").expect("remove"));
        assert_eq!(store.get("localhost:5000").expect("get"), None);
        // docker's entry still answers for `other:1`.
        assert_eq!(
            store.get("other:1").expect("get").map(|c| c.username),
            Some("o".to_string())
        );
    }

    #[test]
    fn in_memory_credentials_come_first_and_are_not_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("auth.json");
        let file = AuthStore::new(&path, None);
        let on_disk = Credentials {
            username: "disk".into(),
            password: "p".into(),
        };
        file.store("127.0.0.1:5000", &on_disk).expect("store");
        let token = Credentials {
            username: "AWS".into(),
            password: "token".into(),
        };
        let store = file
            .clone()
            .with_credentials("http://127.0.0.1:5000", token.clone());
        assert_eq!(store.get("127.0.0.1:5000").expect("get"), Some(token));
        assert_eq!(file.get("127.0.0.1:5000").expect("get"), Some(on_disk));
        assert!(!fs::read_to_string(&path).expect("read").contains("token"));
    }
}
