//! A blocking OCI distribution client for one repository: ping, the Docker token flow and
//! basic auth, manifests, blobs and uploads.
//!
//! Requests go through [`Repo::send`], which attaches the current `Authorization`, and on a
//! 401 reads the `WWW-Authenticate` challenge, authenticates (a bearer token from the realm,
//! with basic credentials when logged in and anonymously otherwise, or basic auth) and retries
//! once. Request builders are closures so that a retried upload reopens its body.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use berth_oci::{media_type, Digest};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde_json::Value;

use super::auth::Credentials;
use super::DistributionError;

/// Largest manifest accepted (the distribution reference implementation's limit).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Accept header of manifest requests: every manifest type Berth understands.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Per operation: connect, each read of a body, each write.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether plain HTTP is used for `domain`: loopback hosts, `--insecure`, or a host listed in
/// `BERTH_INSECURE_REGISTRIES` (comma-separated `host[:port]`).
pub fn use_http(domain: &str, insecure: bool) -> bool {
    if insecure {
        return true;
    }
    let host = if let Some(rest) = domain.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        domain.rsplit_once(':').map_or(domain, |(h, _)| h)
    };
    if host == "localhost" || host == "::1" || host.starts_with("127.") {
        return true;
    }
    std::env::var("BERTH_INSECURE_REGISTRIES").is_ok_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|r| !r.is_empty() && (r == domain || r == host))
    })
}

/// The HTTP client (rustls for https).
pub fn http_client() -> Result<Client, reqwest::Error> {
    Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(IO_TIMEOUT)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(8)
        .build()
}

/// One repository of one registry.
#[derive(Debug)]
pub struct Repo {
    http: Client,
    /// The registry as users name it (`localhost:5000`, `docker.io`).
    pub domain: String,
    /// `http(s)://host[:port]` of the registry API.
    base: String,
    /// Repository path.
    pub path: String,
    creds: Option<Credentials>,
    /// Scopes asked for in token requests.
    scopes: Mutex<Vec<String>>,
    authorization: Mutex<Option<HeaderValue>>,
    /// The last bearer challenge answered (to ask for a token with more scopes).
    bearer_challenge: Mutex<Option<String>>,
    scope_lock: Mutex<()>,
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = std::collections::HashMap::new();
    let mut s = rest.trim();
    // key=value or key="quoted, value" pairs separated by commas; bounded by the input length.
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, rest) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// The first error of a registry error body: (code, message).
fn error_body(body: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(body).ok()?;
    let e = v.get("errors")?.get(0)?;
    Some((
        e.get("code")?.as_str()?.to_string(),
        e.get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    ))
}

/// Reads at most `limit` bytes of a body (an error past it).
pub fn read_limited(
    resp: Response,
    limit: u64,
    what: &str,
    registry: &str,
) -> Result<Vec<u8>, DistributionError> {
    let mut out = Vec::new();
    resp.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|source| DistributionError::Read {
            what: what.to_string(),
            registry: registry.to_string(),
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(DistributionError::InvalidResponse {
            registry: registry.to_string(),
            what: what.to_string(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    Ok(out)
}

impl Repo {
    /// A client of `path` on `domain`, whose API is at `api_host` (`docker.io` →
    /// `registry-1.docker.io`). `push` asks for push rights too.
    pub fn new(
        http: Client,
        domain: &str,
        api_host: &str,
        path: &str,
        creds: Option<Credentials>,
        insecure: bool,
        push: bool,
    ) -> Repo {
        let scheme = if use_http(domain, insecure) {
            "http"
        } else {
            "https"
        };
        let actions = if push { "pull,push" } else { "pull" };
        Repo {
            http,
            domain: domain.to_string(),
            base: format!("{scheme}://{api_host}"),
            path: path.to_string(),
            creds,
            scopes: Mutex::new(vec![format!("repository:{path}:{actions}")]),
            authorization: Mutex::new(None),
            bearer_challenge: Mutex::new(None),
            scope_lock: Mutex::new(()),
        }
    }

    fn network(&self, source: reqwest::Error) -> DistributionError {
        DistributionError::Network {
            registry: self.domain.clone(),
            source,
        }
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.path)
    }

    /// Adds a scope to token requests (cross-repository mounts need pull on the source); when
    /// the registry uses tokens, a new token with every scope is fetched right away.
    pub fn add_scope(&self, scope: String) -> Result<(), DistributionError> {
        // Held until the new token is in place, so concurrent callers wait for it.
        let _guard = self.scope_lock.lock();
        let added = match self.scopes.lock() {
            Ok(mut s) if !s.contains(&scope) => {
                s.push(scope);
                true
            }
            _ => false,
        };
        let challenge = self.bearer_challenge.lock().ok().and_then(|c| c.clone());
        match challenge {
            Some(c) if added => self.authenticate(&c),
            _ => Ok(()),
        }
    }

    fn current_authorization(&self) -> Option<HeaderValue> {
        self.authorization.lock().ok().and_then(|a| a.clone())
    }

    fn basic_value(&self) -> Option<HeaderValue> {
        let c = self.creds.as_ref()?;
        let enc = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", c.username, c.password));
        HeaderValue::from_str(&format!("Basic {enc}")).ok()
    }

    /// Answers a challenge: sets the `Authorization` later requests carry.
    fn authenticate(&self, challenge: &str) -> Result<(), DistributionError> {
        let unauthorized = |m: String| DistributionError::Unauthorized(m);
        match parse_challenge(challenge) {
            Some(Challenge::Basic) => {
                let v = self.basic_value().ok_or_else(|| {
                    unauthorized(format!(
                        "authentication required by {} (run `berth login {}`)",
                        self.domain, self.domain
                    ))
                })?;
                if let Ok(mut a) = self.authorization.lock() {
                    *a = Some(v);
                }
                Ok(())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                if let Ok(mut c) = self.bearer_challenge.lock() {
                    *c = Some(challenge.to_string());
                }
                let mut scopes = self.scopes.lock().map(|s| s.clone()).unwrap_or_default();
                if let Some(s) = scope {
                    for one in s.split(' ') {
                        if !one.is_empty() && !scopes.iter().any(|x| x == one) {
                            scopes.push(one.to_string());
                        }
                    }
                }
                let mut query: Vec<(&str, String)> = Vec::new();
                if let Some(s) = service {
                    query.push(("service", s));
                }
                for s in scopes {
                    query.push(("scope", s));
                }
                let mut req = self.http.get(&realm).query(&query);
                if let Some(v) = self.basic_value() {
                    req = req.header(AUTHORIZATION, v);
                }
                tracing::debug!(%realm, "requesting a registry token");
                let resp = req.send().map_err(|e| self.network(e))?;
                let status = resp.status();
                let body = read_limited(resp, 1 << 20, "token", &self.domain)?;
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(unauthorized(match &self.creds {
                        Some(c) => format!(
                            "{} refused the credentials of {:?}: incorrect username or password",
                            self.domain, c.username
                        ),
                        None => format!(
                            "{} requires authentication (run `berth login {}`)",
                            self.domain, self.domain
                        ),
                    }));
                }
                if !status.is_success() {
                    return Err(DistributionError::Status {
                        registry: self.domain.clone(),
                        what: "token request".into(),
                        status: status.as_u16(),
                        message: String::from_utf8_lossy(&body).chars().take(300).collect(),
                    });
                }
                let v: Value = serde_json::from_slice(&body).map_err(|e| {
                    DistributionError::InvalidResponse {
                        registry: self.domain.clone(),
                        what: "token".into(),
                        reason: e.to_string(),
                    }
                })?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| DistributionError::InvalidResponse {
                        registry: self.domain.clone(),
                        what: "token".into(),
                        reason: "no token in the response".into(),
                    })?;
                let hv = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    DistributionError::InvalidResponse {
                        registry: self.domain.clone(),
                        what: "token".into(),
                        reason: "the token is not a valid header value".into(),
                    }
                })?;
                if let Ok(mut a) = self.authorization.lock() {
                    *a = Some(hv);
                }
                Ok(())
            }
            None => Err(unauthorized(format!(
                "{} answered 401 with an unsupported challenge {challenge:?}",
                self.domain
            ))),
        }
    }

    /// `GET /v2/`: checks the registry speaks the distribution API and authenticates up front
    /// when it asks for it. With `verify`, the credentials must be accepted (for login).
    pub fn ping(&self, verify: bool) -> Result<(), DistributionError> {
        let url = format!("{}/v2/", self.base);
        let resp = self.http.get(&url).send().map_err(|e| self.network(e))?;
        match resp.status() {
            s if s.is_success() => {
                if verify && self.creds.is_some() {
                    tracing::info!(registry = %self.domain, "the registry needs no authentication");
                }
                Ok(())
            }
            StatusCode::UNAUTHORIZED => {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                self.authenticate(&challenge)?;
                if verify {
                    let mut req = self.http.get(&url);
                    if let Some(a) = self.current_authorization() {
                        req = req.header(AUTHORIZATION, a);
                    }
                    let resp = req.send().map_err(|e| self.network(e))?;
                    if resp.status() == StatusCode::UNAUTHORIZED
                        || resp.status() == StatusCode::FORBIDDEN
                    {
                        return Err(DistributionError::Unauthorized(format!(
                            "{}: incorrect username or password",
                            self.domain
                        )));
                    }
                }
                Ok(())
            }
            s => Err(DistributionError::Status {
                registry: self.domain.clone(),
                what: "GET /v2/".into(),
                status: s.as_u16(),
                message: "not an OCI distribution registry?".into(),
            }),
        }
    }

    /// Sends a request (authenticating and retrying once on a 401). Statuses other than 401
    /// are the caller's to check.
    pub fn send(
        &self,
        what: &str,
        make: &dyn Fn(&Client) -> Result<RequestBuilder, DistributionError>,
    ) -> Result<Response, DistributionError> {
        for attempt in 0..2 {
            let mut req = make(&self.http)?;
            if let Some(a) = self.current_authorization() {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req.send().map_err(|e| self.network(e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = read_limited(resp, 64 << 10, what, &self.domain).unwrap_or_default();
            match challenge {
                Some(c) if attempt == 0 => {
                    tracing::debug!(%what, challenge = %c, "401, authenticating");
                    self.authenticate(&c)?;
                }
                _ => {
                    let mut detail = error_body(&String::from_utf8_lossy(&body))
                        .map(|(code, m)| format!("{code}: {m}"))
                        .unwrap_or_else(|| "authentication required".into());
                    if self.creds.is_none() {
                        detail.push_str(&format!(" (run `berth login {}`)", self.domain));
                    }
                    return Err(DistributionError::Unauthorized(format!(
                        "{what} on {}/{}: {detail}",
                        self.domain, self.path
                    )));
                }
            }
        }
        Err(DistributionError::Unauthorized(format!(
            "{what} on {}/{}",
            self.domain, self.path
        )))
    }

    /// Turns a non-success response into an error.
    fn fail(&self, what: &str, reference: &str, resp: Response) -> DistributionError {
        let status = resp.status();
        let body = read_limited(resp, 64 << 10, what, &self.domain).unwrap_or_default();
        let body = String::from_utf8_lossy(&body).into_owned();
        let (code, message) = error_body(&body).unwrap_or_default();
        let name = format!("{}/{}", self.domain, self.path);
        match (status, code.as_str()) {
            (StatusCode::NOT_FOUND, _) | (_, "MANIFEST_UNKNOWN" | "NAME_UNKNOWN")
                if what == "manifest" =>
            {
                DistributionError::ManifestUnknown(format!("{name}:{reference}"))
            }
            (StatusCode::FORBIDDEN, _) | (_, "DENIED") => DistributionError::Denied(format!(
                "{what} {name}:{reference}: {}",
                if message.is_empty() { &body } else { &message }
            )),
            _ => DistributionError::Status {
                registry: self.domain.clone(),
                what: format!("{what} {reference}"),
                status: status.as_u16(),
                message: if code.is_empty() {
                    body.chars().take(300).collect()
                } else {
                    format!("{code}: {message}")
                },
            },
        }
    }

    /// `GET /manifests/<reference>`: the exact bytes, their media type and digest (verified
    /// against a digest reference and the `Docker-Content-Digest` header).
    pub fn get_manifest(
        &self,
        reference: &str,
    ) -> Result<(Vec<u8>, String, Digest), DistributionError> {
        let url = self.url(&format!("manifests/{reference}"));
        let resp = self.send("manifest", &|c| {
            Ok(c.get(&url).header("accept", MANIFEST_ACCEPT))
        })?;
        if !resp.status().is_success() {
            return Err(self.fail("manifest", reference, resp));
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(media_type::essence)
            .unwrap_or_default();
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let body = read_limited(resp, MAX_MANIFEST_SIZE, "manifest", &self.domain)?;
        let expected = match reference.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => header_digest,
        };
        let digest = match expected {
            Some(d) => {
                if !d.matches(&body) {
                    return Err(DistributionError::InvalidResponse {
                        registry: self.domain.clone(),
                        what: format!("manifest {reference}"),
                        reason: format!(
                            "digest mismatch: expected {d}, got {}",
                            Digest::of(d.algorithm(), &body)
                        ),
                    });
                }
                d
            }
            None => Digest::sha256_of(&body),
        };
        let parsed = berth_oci::parse_manifest(
            (!content_type.is_empty()).then_some(content_type.as_str()),
            &body,
        )
        .map_err(|e| DistributionError::InvalidResponse {
            registry: self.domain.clone(),
            what: format!("manifest {reference}"),
            reason: e.to_string(),
        })?;
        Ok((body, parsed.media_type, digest))
    }

    /// `GET /blobs/<digest>` (redirects followed): the response to stream from.
    pub fn get_blob(&self, digest: &Digest) -> Result<Response, DistributionError> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.send("blob", &|c| Ok(c.get(&url)))?;
        if !resp.status().is_success() {
            return Err(self.fail("blob", digest.as_str(), resp));
        }
        Ok(resp)
    }

    /// `HEAD /blobs/<digest>`: whether the repository has the blob.
    pub fn blob_exists(&self, digest: &Digest) -> Result<bool, DistributionError> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.send("blob check", &|c| Ok(c.head(&url)))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail("blob check", digest.as_str(), resp)),
        }
    }

    fn location(&self, resp: &Response) -> Result<String, DistributionError> {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| DistributionError::InvalidResponse {
                registry: self.domain.clone(),
                what: "upload".into(),
                reason: "no Location header".into(),
            })?;
        Ok(
            if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_string()
            } else if loc.starts_with('/') {
                format!("{}{loc}", self.base)
            } else {
                format!("{}/{loc}", self.base)
            },
        )
    }

    /// Tries a cross-repository mount of `digest` from `from` (same registry). Ok(true) when
    /// mounted; Ok(false) when the registry started a plain upload instead (abandoned).
    pub fn mount_blob(&self, digest: &Digest, from: &str) -> Result<bool, DistributionError> {
        self.add_scope(format!("repository:{from}:pull"))?;
        let url = self.url("blobs/uploads/");
        let query = [("mount", digest.to_string()), ("from", from.to_string())];
        let resp = self.send("blob mount", &|c| {
            Ok(c.post(&url).query(&query).header("content-length", "0"))
        })?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(loc) = self.location(&resp) {
                    let _ = self.send("upload cancel", &|c| Ok(c.delete(&loc)));
                }
                Ok(false)
            }
            _ => Err(self.fail("blob mount", digest.as_str(), resp)),
        }
    }

    /// Uploads a blob: POST a session, then one PUT of the whole content (`open` is called
    /// once per attempt and must yield exactly `size` bytes).
    pub fn upload_blob(
        &self,
        digest: &Digest,
        size: u64,
        open: &dyn Fn() -> Result<Box<dyn Read + Send>, DistributionError>,
    ) -> Result<(), DistributionError> {
        let url = self.url("blobs/uploads/");
        let resp = self.send("blob upload", &|c| {
            Ok(c.post(&url).header("content-length", "0"))
        })?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.fail("blob upload", digest.as_str(), resp));
        }
        let loc = self.location(&resp)?;
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put_url = format!("{loc}{sep}digest={digest}");
        let resp = self.send("blob upload", &|c| {
            let body = reqwest::blocking::Body::sized(open()?, size);
            Ok(c.put(&put_url)
                .header("content-type", "application/octet-stream")
                .body(body))
        })?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.fail("blob upload", digest.as_str(), resp));
        }
        Ok(())
    }

    /// `PUT /manifests/<reference>` with the exact bytes; returns the digest the registry
    /// reports (or computed).
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Digest, DistributionError> {
        let url = self.url(&format!("manifests/{reference}"));
        let resp = self.send("manifest upload", &|c| {
            Ok(c.put(&url)
                .header("content-type", media_type)
                .body(body.to_vec()))
        })?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self.fail("manifest upload", reference, resp));
        }
        let computed = Digest::sha256_of(body);
        let reported = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        match reported {
            Some(d) if d != computed => Err(DistributionError::InvalidResponse {
                registry: self.domain.clone(),
                what: "manifest upload".into(),
                reason: format!("the registry stored {d}, the manifest is {computed}"),
            }),
            _ => Ok(computed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="http://x/token", scope="a:b:pull,push""#),
            Some(Challenge::Bearer {
                realm: "http://x/token".into(),
                service: None,
                scope: Some("a:b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Digest x=1"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn http_for_loopback() {
        assert!(use_http("localhost:5000", false));
        assert!(use_http("127.0.0.1:5000", false));
        assert!(use_http("[::1]:5000", false));
        assert!(!use_http("registry.example.com", false));
        assert!(use_http("registry.example.com", true));
    }
}
