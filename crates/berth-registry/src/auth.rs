//! Who is calling and what they may do.
//!
//! Identities: the account's AWS access key (basic auth `AKID:SECRET`), an ECR authorization
//! token (basic auth `AWS:<token>`, from GetAuthorizationToken), registry users with argon2id
//! password hashes and per-repository grants, bearer tokens (HS256 JWTs) issued by the Docker
//! token endpoint, and anonymous callers, who may only pull public repositories.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use berth_aws::credentials::Credentials;

use crate::meta::{now_ms, wildcard_match, Meta, UserRecord};

type HmacSha256 = Hmac<Sha256>;

/// Actions on a repository.
pub const PULL: &str = "pull";
pub const PUSH: &str = "push";
pub const DELETE: &str = "delete";

/// One resource access entry of a token (Docker token spec).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

#[derive(Debug, Clone)]
pub enum Identity {
    Anonymous,
    /// The account owner: the AWS access key or an ECR authorization token.
    Account,
    User {
        name: String,
        record: UserRecord,
    },
    Token {
        subject: String,
        access: Vec<Access>,
    },
}

impl Identity {
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Identity::Anonymous)
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Identity::Account => true,
            Identity::User { record, .. } => record.admin,
            _ => false,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "",
            Identity::Account => "AWS",
            Identity::User { name, .. } => name,
            Identity::Token { subject, .. } => subject,
        }
    }
}

/// The credentials in a request could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid authorization header")]
    Malformed,
    #[error("invalid username or password")]
    BadCredentials,
    #[error("invalid or expired token")]
    BadToken,
}

pub struct Auth {
    secret: Vec<u8>,
    meta: Arc<Meta>,
    creds: Credentials,
    pub service: String,
    pub token_ttl_secs: u64,
    /// sha256(user \0 password) -> (identity, valid until ms), so basic auth does not pay
    /// argon2 on every request.
    cache: Mutex<HashMap<[u8; 32], (Identity, u64)>>,
}

const CACHE_TTL_MS: u64 = 5 * 60 * 1000;
/// ECR authorization tokens are valid for 12 hours.
pub const ECR_TOKEN_TTL_SECS: u64 = 12 * 3600;

impl Auth {
    pub fn new(secret: Vec<u8>, meta: Arc<Meta>, creds: Credentials, service: String) -> Self {
        Auth {
            secret,
            meta,
            creds,
            service,
            token_ttl_secs: 300,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, domain: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC keys of any length are accepted, so this cannot fail.
        let mut m = match HmacSha256::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        m.update(domain);
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    /// Resolves the `Authorization` header. Basic auth with a password hash check runs on a
    /// blocking thread.
    pub async fn identify(self: &Arc<Self>, header: Option<&str>) -> Result<Identity, AuthError> {
        let Some(h) = header else {
            return Ok(Identity::Anonymous);
        };
        let h = h.trim();
        if let Some(tok) = strip_scheme(h, "bearer") {
            return self.verify_token(tok.trim());
        }
        if let Some(b64) = strip_scheme(h, "basic") {
            let raw = STANDARD
                .decode(b64.trim())
                .map_err(|_| AuthError::Malformed)?;
            let raw = String::from_utf8(raw).map_err(|_| AuthError::Malformed)?;
            let (user, pass) = raw.split_once(':').ok_or(AuthError::Malformed)?;
            let this = self.clone();
            let (user, pass) = (user.to_string(), pass.to_string());
            return tokio::task::spawn_blocking(move || this.check_password(&user, &pass))
                .await
                .map_err(|_| AuthError::BadCredentials)?;
        }
        Err(AuthError::Malformed)
    }

    /// Checks a user name and password (any of the accepted kinds).
    pub fn check_password(&self, user: &str, pass: &str) -> Result<Identity, AuthError> {
        if user == self.creds.access_key_id {
            return if bool::from(
                pass.as_bytes()
                    .ct_eq(self.creds.secret_access_key.as_bytes()),
            ) {
                Ok(Identity::Account)
            } else {
                Err(AuthError::BadCredentials)
            };
        }
        if user == "AWS" {
            return if self.verify_ecr_password(pass) {
                Ok(Identity::Account)
            } else {
                Err(AuthError::BadCredentials)
            };
        }
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(user.as_bytes());
            h.update([0u8]);
            h.update(pass.as_bytes());
            h.finalize().into()
        };
        let now = now_ms();
        if let Ok(c) = self.cache.lock() {
            if let Some((id, until)) = c.get(&key) {
                if *until > now {
                    return Ok(id.clone());
                }
            }
        }
        let record = self
            .meta
            .get_user(user)
            .map_err(|_| AuthError::BadCredentials)?
            .ok_or(AuthError::BadCredentials)?;
        let parsed =
            PasswordHash::new(&record.password_hash).map_err(|_| AuthError::BadCredentials)?;
        Argon2::default()
            .verify_password(pass.as_bytes(), &parsed)
            .map_err(|_| AuthError::BadCredentials)?;
        let id = Identity::User {
            name: user.to_string(),
            record,
        };
        if let Ok(mut c) = self.cache.lock() {
            c.retain(|_, (_, until)| *until > now);
            c.insert(key, (id.clone(), now + CACHE_TTL_MS));
        }
        Ok(id)
    }

    /// Forgets cached password checks (after a user changes).
    pub fn invalidate_cache(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// May `id` perform `action` on `repo`? `public` says whether the repository allows
    /// anonymous pulls.
    pub fn allowed(&self, id: &Identity, repo: &str, action: &str, public: bool) -> bool {
        if action == PULL && public {
            return true;
        }
        match id {
            Identity::Anonymous => false,
            Identity::Account => true,
            Identity::User { record, .. } => {
                record.admin
                    || record.grants.iter().any(|g| {
                        wildcard_match(&g.repository, repo)
                            && g.actions.iter().any(|a| a == action || a == "*")
                    })
            }
            Identity::Token { access, .. } => access.iter().any(|a| {
                a.kind == "repository"
                    && a.name == repo
                    && a.actions.iter().any(|x| x == action || x == "*")
            }),
        }
    }

    /// Issues a bearer token for `subject` with `access`.
    pub fn issue_token(&self, subject: &str, access: Vec<Access>) -> (String, u64) {
        let now = now_ms() / 1000;
        let claims = Claims {
            iss: "berth".into(),
            sub: subject.to_string(),
            aud: self.service.clone(),
            exp: now + self.token_ttl_secs,
            nbf: now.saturating_sub(5),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let sig = URL_SAFE_NO_PAD.encode(self.jwt_mac(signing_input.as_bytes()));
        (format!("{signing_input}.{sig}"), self.token_ttl_secs)
    }

    fn jwt_mac(&self, data: &[u8]) -> Vec<u8> {
        match HmacSha256::new_from_slice(&self.secret) {
            Ok(mut m) => {
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }

    fn verify_token(&self, token: &str) -> Result<Identity, AuthError> {
        let mut parts = token.rsplitn(2, '.');
        let sig = parts.next().ok_or(AuthError::BadToken)?;
        let signing_input = parts.next().ok_or(AuthError::BadToken)?;
        let (header, payload) = signing_input.split_once('.').ok_or(AuthError::BadToken)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::BadToken)?;
        let expect = self.jwt_mac(signing_input.as_bytes());
        if expect.is_empty() || !bool::from(sig.as_slice().ct_eq(expect.as_slice())) {
            return Err(AuthError::BadToken);
        }
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::BadToken)?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| AuthError::BadToken)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(AuthError::BadToken);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::BadToken)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| AuthError::BadToken)?;
        let now = now_ms() / 1000;
        if claims.exp <= now || claims.nbf > now + 5 || claims.aud != self.service {
            return Err(AuthError::BadToken);
        }
        Ok(Identity::Token {
            subject: claims.sub,
            access: claims.access,
        })
    }

    /// The password half of an ECR authorization token: `<expiry>.<mac>`, valid for 12 hours.
    pub fn ecr_password(&self) -> (String, u64) {
        let exp = now_ms() / 1000 + ECR_TOKEN_TTL_SECS;
        let payload = format!("{}:{exp}", self.creds.access_key_id);
        let mac = URL_SAFE_NO_PAD.encode(self.mac(b"ecr-token\0", payload.as_bytes()));
        (
            format!("{}.{mac}", URL_SAFE_NO_PAD.encode(payload.as_bytes())),
            exp,
        )
    }

    fn verify_ecr_password(&self, pass: &str) -> bool {
        let Some((payload_b64, mac_b64)) = pass.split_once('.') else {
            return false;
        };
        let (Ok(payload), Ok(mac)) = (
            URL_SAFE_NO_PAD.decode(payload_b64),
            URL_SAFE_NO_PAD.decode(mac_b64),
        ) else {
            return false;
        };
        let expect = self.mac(b"ecr-token\0", &payload);
        if expect.is_empty() || !bool::from(mac.as_slice().ct_eq(expect.as_slice())) {
            return false;
        }
        let Ok(payload) = String::from_utf8(payload) else {
            return false;
        };
        let Some((akid, exp)) = payload.rsplit_once(':') else {
            return false;
        };
        let exp: u64 = exp.parse().unwrap_or(0);
        akid == self.creds.access_key_id && exp > now_ms() / 1000
    }
}

fn strip_scheme<'a>(h: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = h.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Hashes a password with argon2id.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| AuthError::BadCredentials)
}

/// Parses a token-request scope `repository:NAME:pull,push` (NAME may contain ':' only in a
/// port, which repository names cannot, so the last ':' separates the actions).
pub fn parse_scope(scope: &str) -> Option<Access> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some(Access {
        kind: kind.to_string(),
        name: name.to_string(),
        actions: actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> (tempfile::TempDir, Arc<Auth>) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(Meta::open(&dir.path().join("m.redb")).unwrap());
        let creds = Credentials {
            access_key_id: "AKIDTEST".into(),
            secret_access_key: "secret".into(),
        };
        (
            dir,
            Arc::new(Auth::new(vec![7; 32], meta, creds, "svc".into())),
        )
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let (_d, a) = auth();
        let access = vec![Access {
            kind: "repository".into(),
            name: "app".into(),
            actions: vec!["pull".into()],
        }];
        let (tok, _) = a.issue_token("bob", access);
        let id = a.verify_token(&tok).unwrap();
        assert!(a.allowed(&id, "app", PULL, false));
        assert!(!a.allowed(&id, "app", PUSH, false));
        assert!(!a.allowed(&id, "other", PULL, false));
        let mut bad = tok.clone();
        bad.pop();
        bad.push(if tok.ends_with('A') { 'B' } else { 'A' });
        assert!(a.verify_token(&bad).is_err());
    }

    #[test]
    fn passwords_and_grants() {
        let (_d, a) = auth();
        assert!(matches!(
            a.check_password("AKIDTEST", "secret"),
            Ok(Identity::Account)
        ));
        assert!(a.check_password("AKIDTEST", "nope").is_err());
        let (p, _) = a.ecr_password();
        assert!(matches!(a.check_password("AWS", &p), Ok(Identity::Account)));
        assert!(a.check_password("AWS", "x.y").is_err());
        a.meta
            .put_user(
                "ci",
                &UserRecord {
                    password_hash: hash_password("pw").unwrap(),
                    admin: false,
                    grants: vec![crate::meta::Grant {
                        repository: "team/*".into(),
                        actions: vec!["pull".into(), "push".into()],
                    }],
                    created_at: 0,
                },
            )
            .unwrap();
        let id = a.check_password("ci", "pw").unwrap();
        assert!(a.allowed(&id, "team/app", PUSH, false));
        assert!(!a.allowed(&id, "team/app", DELETE, false));
        assert!(!a.allowed(&id, "other", PULL, false));
        assert!(a.allowed(&Identity::Anonymous, "other", PULL, true));
        assert!(!a.allowed(&Identity::Anonymous, "other", PUSH, true));
        assert!(a.check_password("ci", "wrong").is_err());
    }

    #[test]
    fn scopes() {
        let s = parse_scope("repository:a/b:pull,push").unwrap();
        assert_eq!(s.name, "a/b");
        assert_eq!(s.actions, vec!["pull", "push"]);
        assert!(parse_scope("garbage").is_none());
    }
}
