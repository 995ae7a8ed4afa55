//! The OCI distribution API (spec 1.1) over HTTP, and the Docker token endpoint.
//!
//! Repository names contain slashes, so `/v2/...` is routed by hand from the last path
//! segments: `.../tags/list`, `.../blobs/uploads/[id]`, `.../manifests/<ref>`,
//! `.../blobs/<digest>`, `.../referrers/<digest>`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use berth_oci::{Algorithm, Descriptor, Digest, Hasher, Reference, RepoName};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::json;

use crate::auth::{parse_scope, Access, Identity, DELETE, PULL, PUSH};
use crate::error::{ApiError, Code};
use crate::meta::{now_ms, ManifestRecord, UploadRecord};
use crate::{blocking, Registry};

type Reg = Arc<Registry>;
type ApiResult<T = Response> = Result<T, ApiError>;

const WRITE_CHUNK: usize = 1 << 20;
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;

pub(crate) fn router() -> Router<Reg> {
    Router::new()
        .route("/v2", any(v2))
        .route("/v2/", any(v2))
        .route("/v2/{*rest}", any(v2))
        .route("/token", get(token).post(token_post))
}

// ---- routing ------------------------------------------------------------------------------------

#[derive(Debug)]
enum Route {
    Base,
    Catalog,
    Tags(String),
    UploadStart(String),
    Upload(String, String),
    Manifest(String, String),
    Blob(String, String),
    Referrers(String, String),
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let rest = rest.strip_suffix('/').map_or(rest, |r| r);
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let repo = |k: usize| segs[..n - k].join("/");
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Some(Route::Tags(repo(2)));
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Some(Route::UploadStart(repo(2)));
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        return Some(Route::Upload(repo(3), segs[n - 1].to_string()));
    }
    if n >= 3 {
        let last = segs[n - 1].to_string();
        match segs[n - 2] {
            "manifests" => return Some(Route::Manifest(repo(2), last)),
            "blobs" => return Some(Route::Blob(repo(2), last)),
            "referrers" => return Some(Route::Referrers(repo(2), last)),
            _ => {}
        }
    }
    None
}

fn not_found() -> ApiError {
    ApiError::new(Code::NameUnknown, "no such route").status(StatusCode::NOT_FOUND)
}

fn unsupported() -> ApiError {
    ApiError::new(Code::Unsupported, "the operation is unsupported")
}

async fn v2(State(reg): State<Reg>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match dispatch(reg, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code.as_str(), message = %e.message, "request failed");
            e.into_response()
        }
    }
}

async fn dispatch(reg: Reg, req: Request) -> ApiResult {
    let path = percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8()
        .map_err(|_| not_found())?
        .to_string();
    let route = route(&path).ok_or_else(not_found)?;
    let header_auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let base = base_url(&reg, req.headers());
    let id = match reg.auth.identify(header_auth.as_deref()).await {
        Ok(id) => id,
        Err(e) => {
            return Err(
                challenge(&reg, &base, None, true).detail(json!({ "reason": e.to_string() }))
            )
        }
    };
    let method = req.method().clone();
    match route {
        Route::Base => {
            if id.is_anonymous() {
                return Err(challenge(&reg, &base, None, false));
            }
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{}",
            )
                .into_response())
        }
        Route::Catalog => {
            if method != Method::GET {
                return Err(unsupported());
            }
            catalog(&reg, &id, &query(&req)).await
        }
        Route::Tags(repo) => {
            let repo = repo_name(&repo)?;
            authorize(&reg, &id, &base, &repo, PULL).await?;
            match method {
                Method::GET => tags_list(&reg, &repo, &query(&req)).await,
                _ => Err(unsupported()),
            }
        }
        Route::Manifest(repo, reference) => {
            let repo = repo_name(&repo)?;
            let reference = reference.parse::<Reference>().map_err(|e| {
                ApiError::new(Code::ManifestInvalid, format!("invalid reference: {e}"))
            })?;
            match method {
                Method::GET | Method::HEAD => {
                    authorize(&reg, &id, &base, &repo, PULL).await?;
                    get_manifest(&reg, &repo, &reference, method == Method::HEAD).await
                }
                Method::PUT => {
                    authorize(&reg, &id, &base, &repo, PUSH).await?;
                    put_manifest(&reg, &repo, &reference, req).await
                }
                Method::DELETE => {
                    authorize(&reg, &id, &base, &repo, DELETE).await?;
                    delete_manifest(&reg, &repo, &reference).await
                }
                _ => Err(unsupported()),
            }
        }
        Route::Blob(repo, digest) => {
            let repo = repo_name(&repo)?;
            match method {
                Method::GET | Method::HEAD => {
                    authorize(&reg, &id, &base, &repo, PULL).await?;
                    let digest = parse_digest(&digest)?;
                    let range = req
                        .headers()
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    get_blob(&reg, &repo, &digest, range, method == Method::HEAD).await
                }
                Method::DELETE => {
                    authorize(&reg, &id, &base, &repo, DELETE).await?;
                    let digest = parse_digest(&digest)?;
                    let (r, d) = (repo.clone(), digest.to_string());
                    if !blocking(move || reg.meta.unlink_blob(&r, &d)).await? {
                        return Err(blob_unknown(&digest));
                    }
                    Ok(StatusCode::ACCEPTED.into_response())
                }
                _ => Err(unsupported()),
            }
        }
        Route::UploadStart(repo) => {
            let repo = repo_name(&repo)?;
            if method != Method::POST {
                return Err(unsupported());
            }
            authorize(&reg, &id, &base, &repo, PUSH).await?;
            start_upload(&reg, &id, &repo, req).await
        }
        Route::Upload(repo, upload_id) => {
            let repo = repo_name(&repo)?;
            authorize(&reg, &id, &base, &repo, PUSH).await?;
            match method {
                Method::GET => upload_status(&reg, &repo, &upload_id).await,
                Method::PATCH => patch_upload(&reg, &repo, &upload_id, req).await,
                Method::PUT => finish_upload(&reg, &repo, &upload_id, req).await,
                Method::DELETE => cancel_upload(&reg, &repo, &upload_id).await,
                _ => Err(unsupported()),
            }
        }
        Route::Referrers(repo, digest) => {
            let repo = repo_name(&repo)?;
            if method != Method::GET {
                return Err(unsupported());
            }
            authorize(&reg, &id, &base, &repo, PULL).await?;
            let digest = parse_digest(&digest)?;
            referrers(&reg, &repo, &digest, &query(&req)).await
        }
    }
}

fn repo_name(s: &str) -> ApiResult<String> {
    s.parse::<RepoName>()
        .map(|n| n.as_str().to_string())
        .map_err(|e| {
            ApiError::new(Code::NameInvalid, format!("invalid repository name: {e}"))
                .detail(json!({ "name": s }))
        })
}

fn parse_digest(s: &str) -> ApiResult<Digest> {
    s.parse::<Digest>()
        .map_err(|e| ApiError::new(Code::DigestInvalid, format!("invalid digest: {e}")))
}

fn blob_unknown(d: &Digest) -> ApiError {
    ApiError::new(Code::BlobUnknown, "blob unknown to registry")
        .detail(json!({ "digest": d.to_string() }))
}

/// The URL clients reach us by: the configured public URL, else the Host header.
fn base_url(reg: &Registry, headers: &HeaderMap) -> String {
    if let Some(u) = &reg.cfg.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{proto}://{host}")
}

/// 401 with a `WWW-Authenticate: Bearer` challenge for `scope`.
fn challenge(reg: &Registry, base: &str, scope: Option<&str>, invalid: bool) -> ApiError {
    let mut c = format!(
        "Bearer realm=\"{base}/token\",service=\"{}\"",
        reg.cfg.service
    );
    if let Some(s) = scope {
        c.push_str(&format!(",scope=\"{s}\""));
    }
    if invalid {
        c.push_str(",error=\"invalid_token\"");
    } else if scope.is_some() {
        c.push_str(",error=\"insufficient_scope\"");
    }
    ApiError::new(Code::Unauthorized, "authentication required")
        .header(header::WWW_AUTHENTICATE, &c)
}

async fn repo_is_public(reg: &Reg, repo: &str) -> ApiResult<bool> {
    let (r, n) = (reg.clone(), repo.to_string());
    Ok(blocking(move || r.meta.get_repo(&n))
        .await?
        .map(|r| r.public)
        .unwrap_or(false))
}

async fn authorize(
    reg: &Reg,
    id: &Identity,
    base: &str,
    repo: &str,
    action: &str,
) -> ApiResult<()> {
    // Callers with the right need no store lookup; only a pull otherwise denied asks whether
    // the repository is public.
    if reg.auth.allowed(id, repo, action, false)
        || (action == PULL && repo_is_public(reg, repo).await?)
    {
        return Ok(());
    }
    match id {
        Identity::Anonymous | Identity::Token { .. } => {
            let actions = if action == PULL {
                "pull".to_string()
            } else {
                format!("pull,{action}")
            };
            Err(challenge(
                reg,
                base,
                Some(&format!("repository:{repo}:{actions}")),
                false,
            ))
        }
        _ => Err(ApiError::new(
            Code::Denied,
            format!("requested access to the resource is denied: {action} on {repo}"),
        )),
    }
}

fn query(req: &Request) -> Vec<(String, String)> {
    req.uri().query().map(url_decode_pairs).unwrap_or_default()
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .to_string()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn query_get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str())
}

fn page_size(q: &[(String, String)]) -> ApiResult<usize> {
    match query_get(q, "n") {
        None => Ok(DEFAULT_PAGE),
        // A well-formed number too large for usize is just a large page.
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(n.parse::<usize>().map_or(MAX_PAGE, |n| n.min(MAX_PAGE)))
        }
        Some(_) => {
            Err(ApiError::new(Code::Unsupported, "invalid n").status(StatusCode::BAD_REQUEST))
        }
    }
}

fn hv(s: &str) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_str(s).unwrap_or(axum::http::HeaderValue::from_static(""))
}

// ---- catalog and tags ---------------------------------------------------------------------------

async fn catalog(reg: &Reg, id: &Identity, q: &[(String, String)]) -> ApiResult {
    let n = page_size(q)?;
    let mut last = query_get(q, "last").map(str::to_string);
    let mut out = Vec::new();
    let mut more = false;
    // A token scoped `registry:catalog:*` (issued to admins only) sees every repository.
    let everything = match id {
        Identity::Token { access, .. } => access.iter().any(|a| {
            a.kind == "registry" && a.name == "catalog" && a.actions.iter().any(|x| x == "*")
        }),
        _ => false,
    };
    // Visible repositories only; page through the store until `n` are found.
    'outer: loop {
        let (r, after) = (reg.clone(), last.clone());
        let batch = blocking(move || r.meta.list_repos(after.as_deref(), 512)).await?;
        if batch.is_empty() {
            break;
        }
        for (name, rec) in batch {
            last = Some(name.clone());
            if everything || reg.auth.allowed(id, &name, PULL, rec.public) {
                if out.len() == n {
                    more = true;
                    break 'outer;
                }
                out.push(name);
            }
        }
    }
    let mut resp = axum::Json(json!({ "repositories": out })).into_response();
    if more {
        if let Some(l) = out.last() {
            resp.headers_mut().insert(
                header::LINK,
                hv(&format!("</v2/_catalog?last={l}&n={n}>; rel=\"next\"")),
            );
        }
    }
    Ok(resp)
}

async fn tags_list(reg: &Reg, repo: &str, q: &[(String, String)]) -> ApiResult {
    let n = page_size(q)?;
    let last = query_get(q, "last").map(str::to_string);
    let (r, name) = (reg.clone(), repo.to_string());
    let (tags, more) = blocking(move || {
        if r.meta.get_repo(&name)?.is_none() {
            return Err(crate::meta::MetaError::RepoNotFound(name));
        }
        r.meta.list_tags(&name, last.as_deref(), n)
    })
    .await?;
    let mut resp = axum::Json(json!({ "name": repo, "tags": tags })).into_response();
    if more {
        if let Some(l) = tags.last() {
            resp.headers_mut().insert(
                header::LINK,
                hv(&format!(
                    "</v2/{repo}/tags/list?last={l}&n={n}>; rel=\"next\""
                )),
            );
        }
    }
    Ok(resp)
}

// ---- manifests ----------------------------------------------------------------------------------

async fn resolve(reg: &Reg, repo: &str, reference: &Reference) -> ApiResult<String> {
    match reference {
        Reference::Digest(d) => Ok(d.to_string()),
        Reference::Tag(t) => {
            let (r, n, t2) = (reg.clone(), repo.to_string(), t.as_str().to_string());
            blocking(move || r.meta.resolve_tag(&n, &t2))
                .await?
                .ok_or_else(|| {
                    ApiError::new(
                        Code::ManifestUnknown,
                        format!("manifest unknown: tag {} not found", t.as_str()),
                    )
                })
        }
    }
}

async fn get_manifest(reg: &Reg, repo: &str, reference: &Reference, head: bool) -> ApiResult {
    let digest = resolve(reg, repo, reference).await?;
    let (r, n, d) = (reg.clone(), repo.to_string(), digest.clone());
    let (rec, body) = blocking(move || r.meta.get_manifest(&n, &d))
        .await?
        .ok_or_else(|| {
            ApiError::new(Code::ManifestUnknown, format!("manifest unknown: {digest}"))
        })?;
    let mut resp = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(body))
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, hv(&rec.media_type));
    h.insert(header::CONTENT_LENGTH, hv(&rec.size.to_string()));
    h.insert("docker-content-digest", hv(&digest));
    h.insert(header::ETAG, hv(&format!("\"{digest}\"")));
    Ok(resp)
}

async fn read_limited(body: Body, limit: usize) -> ApiResult<Bytes> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(Code::ManifestInvalid, format!("reading request body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::new(
                Code::SizeInvalid,
                format!("manifest larger than {limit} bytes"),
            )
            .status(StatusCode::PAYLOAD_TOO_LARGE));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn put_manifest(reg: &Reg, repo: &str, reference: &Reference, req: Request) -> ApiResult {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_limited(req.into_body(), reg.cfg.max_manifest_bytes).await?;
    let parsed = berth_oci::parse_manifest(content_type.as_deref(), &body)
        .map_err(|e| ApiError::new(Code::ManifestInvalid, format!("manifest invalid: {e}")))?;
    let (digest, tag) = match reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &body);
            if &actual != d {
                return Err(ApiError::new(
                    Code::DigestInvalid,
                    format!("provided digest {d} does not match content digest {actual}"),
                ));
            }
            (actual, None)
        }
        Reference::Tag(t) => (Digest::sha256_of(&body), Some(t.as_str().to_string())),
    };
    let rec = ManifestRecord::from_parsed(&parsed, body.len());
    let subject = rec.subject.clone();
    let (r, n, d) = (reg.clone(), repo.to_string(), digest.to_string());
    let create = reg.cfg.auto_create_repos;
    blocking(move || {
        r.meta
            .put_manifest(&n, &d, &rec, &body, tag.as_deref(), create)
    })
    .await?;
    tracing::info!(repo, %digest, "manifest pushed");
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        hv(&format!("/v2/{repo}/manifests/{digest}")),
    );
    h.insert("docker-content-digest", hv(digest.as_str()));
    if let Some(s) = subject {
        h.insert("oci-subject", hv(&s));
    }
    Ok(resp)
}

async fn delete_manifest(reg: &Reg, repo: &str, reference: &Reference) -> ApiResult {
    let (r, n) = (reg.clone(), repo.to_string());
    match reference {
        Reference::Tag(t) => {
            let t = t.as_str().to_string();
            if !blocking(move || r.meta.delete_tag(&n, &t)).await? {
                return Err(ApiError::new(
                    Code::ManifestUnknown,
                    "manifest unknown: no such tag",
                ));
            }
        }
        Reference::Digest(d) => {
            let d = d.to_string();
            blocking(move || r.meta.delete_manifest(&n, &d)).await?;
        }
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn referrers(reg: &Reg, repo: &str, subject: &Digest, q: &[(String, String)]) -> ApiResult {
    let filter = query_get(q, "artifactType").map(str::to_string);
    let (r, n, s) = (reg.clone(), repo.to_string(), subject.to_string());
    let found = blocking(move || r.meta.referrers(&n, &s)).await?;
    let mut descs = Vec::new();
    for (digest, rec) in found {
        if let Some(f) = &filter {
            if rec.artifact_type.as_deref() != Some(f.as_str()) {
                continue;
            }
        }
        let Ok(d) = digest.parse::<Digest>() else {
            continue;
        };
        let mut desc = Descriptor::new(rec.media_type.clone(), d, rec.size);
        desc.artifact_type = rec.artifact_type.clone();
        desc.annotations = rec.annotations.clone();
        descs.push(desc);
    }
    let mut resp = Response::new(Body::from(berth_oci::build_index(descs)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, hv(berth_oci::media_type::OCI_INDEX));
    if filter.is_some() {
        resp.headers_mut()
            .insert("oci-filters-applied", hv("artifactType"));
    }
    Ok(resp)
}

// ---- blobs --------------------------------------------------------------------------------------

/// Parses a single `Range: bytes=a-b` / `bytes=a-` / `bytes=-n` against `size`.
fn parse_range(h: &str, size: u64) -> Option<(u64, u64)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (size.saturating_sub(n), size.checked_sub(1)?)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?)
        };
        (start, end)
    };
    (start <= end && start < size).then_some((start, end))
}

async fn get_blob(
    reg: &Reg,
    repo: &str,
    digest: &Digest,
    range: Option<String>,
    head: bool,
) -> ApiResult {
    let (r, n, d) = (reg.clone(), repo.to_string(), digest.to_string());
    let rec = blocking(move || r.meta.repo_blob(&n, &d))
        .await?
        .ok_or_else(|| blob_unknown(digest))?;
    reg.touch(digest.as_str());
    let range = match range.as_deref() {
        Some(h) => match parse_range(h, rec.size) {
            Some(r) => Some(r),
            None => {
                return Err(
                    ApiError::new(Code::RangeInvalid, "requested range not satisfiable")
                        .header(header::CONTENT_RANGE, &format!("bytes */{}", rec.size)),
                )
            }
        },
        None => None,
    };
    let (status, start, len) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, rec.size),
    };
    let body = if head {
        Body::empty()
    } else {
        let mut f = reg
            .store
            .open_blob(digest)
            .await
            .map_err(|_| blob_unknown(digest))?;
        if start > 0 {
            use tokio::io::AsyncSeekExt;
            f.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(ApiError::internal)?;
        }
        use tokio::io::AsyncReadExt;
        // 1 MiB reads (15-20% less server CPU per big blob than 256 KiB, bench/registry),
        // never more than the blob: small blobs get a buffer of their size.
        let chunk = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .clamp(8 << 10, 1 << 20);
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            f.take(len),
            chunk,
        ))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    h.insert(header::CONTENT_TYPE, hv("application/octet-stream"));
    h.insert("docker-content-digest", hv(digest.as_str()));
    h.insert(header::ACCEPT_RANGES, hv("bytes"));
    h.insert(header::ETAG, hv(&format!("\"{digest}\"")));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {}-{}/{}", start, start + len - 1, rec.size)),
        );
    }
    Ok(resp)
}

// ---- uploads ------------------------------------------------------------------------------------

/// A file being written, with the running sha256 of what it holds (None when unknown, e.g.
/// after a restart or a rejected chunk; the file is then re-hashed at the end).
struct Sink {
    file: std::fs::File,
    hasher: Option<Hasher>,
    written: u64,
    /// Background `fdatasync`s of what is written so far (see [`Sink::write`]).
    syncer: crate::storage::BackgroundSync,
}

impl Sink {
    fn new(file: std::fs::File, hasher: Option<Hasher>, written: u64) -> Sink {
        Sink {
            file,
            hasher,
            written,
            syncer: crate::storage::BackgroundSync::new(written),
        }
    }

    /// Writes a block; the sink comes back even when the write fails.
    fn write(mut self, data: Bytes) -> (Sink, std::io::Result<()>) {
        if let Err(e) = self.file.write_all(&data) {
            return (self, Err(e));
        }
        // Queue this block for writeback now, and every few MiB flush what is written on
        // another thread, so the fsync before the 201 has little left to do.
        crate::storage::start_writeback(&self.file, self.written, data.len() as u64);
        if let Some(h) = self.hasher.as_mut() {
            h.update(&data);
        }
        self.written += data.len() as u64;
        self.syncer.progress(&self.file, self.written);
        (self, Ok(()))
    }
}

pub(crate) struct UploadState {
    repo: String,
    sink: Option<Sink>,
}

#[derive(Default)]
pub(crate) struct Uploads {
    live: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadState>>>>,
}

impl Uploads {
    fn get(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<UploadState>>> {
        self.live.lock().ok()?.get(id).cloned()
    }

    fn insert(&self, id: &str, st: UploadState) -> Arc<tokio::sync::Mutex<UploadState>> {
        let a = Arc::new(tokio::sync::Mutex::new(st));
        if let Ok(mut m) = self.live.lock() {
            m.insert(id.to_string(), a.clone());
        }
        a
    }

    fn remove(&self, id: &str) {
        if let Ok(mut m) = self.live.lock() {
            m.remove(id);
        }
    }

    pub(crate) fn is_live(&self, id: &str) -> bool {
        self.live.lock().map(|m| m.contains_key(id)).unwrap_or(true)
    }

    /// Ends an idle session so that GC may remove its file and record: false while a request
    /// holds it. A request that looked the session up just before finds it closed.
    pub(crate) fn expire(&self, id: &str) -> bool {
        let Ok(mut m) = self.live.lock() else {
            return false;
        };
        let Some(st) = m.get(id).cloned() else {
            return true;
        };
        let Ok(mut st) = st.try_lock() else {
            return false;
        };
        st.sink = None;
        m.remove(id);
        true
    }
}

/// Marks an upload file as in use for as long as a request works on it, so that GC, which
/// removes session-less upload files older than its cutoff, leaves it alone.
struct Reserved<'a> {
    uploads: &'a Uploads,
    id: String,
    /// Released on drop unless the session was kept.
    release: bool,
}

impl<'a> Reserved<'a> {
    fn new(
        uploads: &'a Uploads,
        id: &str,
        repo: &str,
    ) -> (Self, Arc<tokio::sync::Mutex<UploadState>>) {
        let st = uploads.insert(
            id,
            UploadState {
                repo: repo.to_string(),
                sink: None,
            },
        );
        let r = Reserved {
            uploads,
            id: id.to_string(),
            release: true,
        };
        (r, st)
    }

    /// The session lives on after this request.
    fn keep(mut self) {
        self.release = false;
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.release {
            self.uploads.remove(&self.id);
        }
    }
}

fn io_internal(e: std::io::Error) -> ApiError {
    ApiError::internal(e)
}

fn upload_unknown() -> ApiError {
    ApiError::new(Code::BlobUploadUnknown, "blob upload unknown to registry")
}

type PendingWrite = tokio::task::JoinHandle<(Sink, std::io::Result<()>)>;

/// Takes the sink back, waiting for the write in flight if there is one. `None` only if the
/// writer thread panicked.
async fn reclaim(
    idle: &mut Option<Sink>,
    pending: &mut Option<PendingWrite>,
) -> (Option<Sink>, ApiResult<()>) {
    if let Some(s) = idle.take() {
        return (Some(s), Ok(()));
    }
    match pending.take() {
        None => (None, Err(ApiError::internal("upload sink missing"))),
        Some(p) => match p.await {
            Ok((s, Ok(()))) => (Some(s), Ok(())),
            Ok((s, Err(e))) => (Some(s), Err(ApiError::internal(e))),
            Err(e) => (None, Err(ApiError::internal(e))),
        },
    }
}

/// Streams `body` into the sink, writing 1 MiB blocks on a blocking thread while the next
/// block is read from the socket. Returns the sink (unless a writer thread panicked) and
/// whether the whole body was written.
async fn stream_into(sink: Sink, body: Body) -> (Option<Sink>, ApiResult<()>) {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::with_capacity(WRITE_CHUNK);
    let mut pending: Option<PendingWrite> = None;
    let mut idle = Some(sink);
    loop {
        let next = stream.next().await;
        match &next {
            Some(Ok(c)) => {
                buf.extend_from_slice(c);
                if buf.len() < WRITE_CHUNK {
                    continue;
                }
            }
            Some(Err(e)) => {
                let err = ApiError::new(
                    Code::BlobUploadInvalid,
                    format!("reading request body: {e}"),
                );
                let (s, _) = reclaim(&mut idle, &mut pending).await;
                return (s, Err(err));
            }
            None => {}
        }
        if !buf.is_empty() {
            let s = match reclaim(&mut idle, &mut pending).await {
                (Some(s), Ok(())) => s,
                other => return other,
            };
            let data = buf.split().freeze();
            pending = Some(tokio::task::spawn_blocking(move || s.write(data)));
        }
        if next.is_none() {
            break;
        }
    }
    reclaim(&mut idle, &mut pending).await
}

fn new_sink(path: &std::path::Path) -> std::io::Result<Sink> {
    // Append mode, like a revived session: after a rejected chunk is cut off with `set_len`,
    // the next write must land at the new end, not at the old file position.
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    Ok(Sink::new(file, Some(Hasher::new(Algorithm::Sha256)), 0))
}

fn upload_headers(resp: &mut Response, repo: &str, id: &str, offset: u64) {
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        hv(&format!("/v2/{repo}/blobs/uploads/{id}")),
    );
    h.insert("docker-upload-uuid", hv(id));
    let range = if offset == 0 {
        "0-0".to_string()
    } else {
        format!("0-{}", offset - 1)
    };
    h.insert(header::RANGE, hv(&range));
    h.insert(header::CONTENT_LENGTH, hv("0"));
}

fn created_blob(repo: &str, digest: &Digest) -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{repo}/blobs/{digest}")));
    h.insert("docker-content-digest", hv(digest.as_str()));
    h.insert(header::CONTENT_LENGTH, hv("0"));
    resp
}

async fn start_upload(reg: &Reg, id: &Identity, repo: &str, req: Request) -> ApiResult {
    let q = query(&req);
    if let Some(mount) = query_get(&q, "mount") {
        let digest = parse_digest(mount)?;
        if let Some(from) = query_get(&q, "from") {
            let from = repo_name(from)?;
            let public = repo_is_public(reg, &from).await?;
            if reg.auth.allowed(id, &from, PULL, public) {
                // Touch first: a GC between the link and a later touch would see the blob as
                // untouched and collect it under a client that is about to get 201.
                reg.touch(digest.as_str());
                let (r, f, n, d) = (
                    reg.clone(),
                    from.clone(),
                    repo.to_string(),
                    digest.to_string(),
                );
                let create = reg.cfg.auto_create_repos;
                let mounted = blocking(move || {
                    if r.meta.repo_blob(&f, &d)?.is_none() {
                        return Ok::<_, crate::meta::MetaError>(false);
                    }
                    r.meta.link_blob(&n, &d, create)
                })
                .await?;
                if mounted {
                    return Ok(created_blob(repo, &digest));
                }
            }
        }
    }
    if let Some(d) = query_get(&q, "digest") {
        // Monolithic upload: the whole blob in the POST body.
        let digest = parse_digest(d)?;
        let tmp_id = format!("mono-{}", uuid::Uuid::new_v4().simple());
        let _reserved = Reserved::new(&reg.uploads, &tmp_id, repo);
        let path = reg.store.upload_path(&tmp_id);
        let sink = new_sink(&path).map_err(io_internal)?;
        let sink = match stream_into(sink, req.into_body()).await {
            (Some(s), Ok(())) => s,
            (_, res) => {
                let _ = std::fs::remove_file(&path);
                res?;
                return Err(ApiError::internal("upload sink missing"));
            }
        };
        finalize(reg, repo, &tmp_id, sink, &digest).await?;
        return Ok(created_blob(repo, &digest));
    }
    let upload_id = uuid::Uuid::new_v4().simple().to_string();
    // The session is live before its file exists, so GC never sees the file unaccounted for.
    let (reserved, state) = Reserved::new(&reg.uploads, &upload_id, repo);
    let path = reg.store.upload_path(&upload_id);
    let sink = new_sink(&path).map_err(io_internal)?;
    let (r, uid, rec) = (
        reg.clone(),
        upload_id.clone(),
        UploadRecord {
            repo: repo.to_string(),
            started_at: now_ms(),
        },
    );
    if let Err(e) = blocking(move || r.meta.create_upload(&uid, &rec)).await {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    state.lock().await.sink = Some(sink);
    reserved.keep();
    let mut resp = StatusCode::ACCEPTED.into_response();
    upload_headers(&mut resp, repo, &upload_id, 0);
    Ok(resp)
}

/// Finds a live upload session, or revives one recorded before a restart.
async fn session(
    reg: &Reg,
    repo: &str,
    upload_id: &str,
) -> ApiResult<Arc<tokio::sync::Mutex<UploadState>>> {
    if upload_id.is_empty() || !upload_id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(upload_unknown());
    }
    if let Some(s) = reg.uploads.get(upload_id) {
        if s.lock().await.repo != repo {
            return Err(upload_unknown());
        }
        return Ok(s);
    }
    let (r, uid) = (reg.clone(), upload_id.to_string());
    let rec = blocking(move || r.meta.get_upload(&uid))
        .await?
        .ok_or_else(upload_unknown)?;
    if rec.repo != repo {
        return Err(upload_unknown());
    }
    let path = reg.store.upload_path(upload_id);
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|_| upload_unknown())?;
    let written = file.metadata().map_err(io_internal)?.len();
    Ok(reg.uploads.insert(
        upload_id,
        UploadState {
            repo: rec.repo,
            sink: Some(Sink::new(file, None, written)),
        },
    ))
}

/// Parses `Content-Range: start-end` (also tolerating a `bytes ` prefix).
fn content_range(h: &HeaderMap) -> ApiResult<Option<(u64, u64)>> {
    let Some(v) = h.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    let s = s
        .strip_prefix("bytes ")
        .or_else(|| s.strip_prefix("bytes="))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let parsed = s
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    match parsed {
        Some((a, b)) if a <= b => Ok(Some((a, b))),
        _ => Err(ApiError::new(
            Code::BlobUploadInvalid,
            format!("invalid Content-Range {s:?}"),
        )),
    }
}

fn range_error(repo: &str, id: &str, offset: u64) -> ApiError {
    let range = if offset == 0 {
        "0-0".to_string()
    } else {
        format!("0-{}", offset - 1)
    };
    ApiError::new(
        Code::RangeInvalid,
        format!("chunk out of order: upload is at offset {offset}"),
    )
    .header(header::LOCATION, &format!("/v2/{repo}/blobs/uploads/{id}"))
    .header(header::RANGE, &range)
    .header(HeaderName::from_static("docker-upload-uuid"), id)
}

/// Appends one request body to an upload, enforcing Content-Range and Content-Length.
async fn append(repo: &str, upload_id: &str, st: &mut UploadState, req: Request) -> ApiResult<()> {
    // Validate the headers before taking the sink: an early return must leave it in place.
    let declared = content_range(req.headers())?;
    let Some(sink) = st.sink.take() else {
        return Err(upload_unknown());
    };
    let start = sink.written;
    if let Some((a, _)) = declared {
        if a != start {
            st.sink = Some(sink);
            return Err(range_error(repo, upload_id, start));
        }
    }
    let expect_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (sink, res) = stream_into(sink, req.into_body()).await;
    // Without its sink (a writer thread panicked) the upload is broken for good.
    let Some(mut sink) = sink else {
        return Err(res
            .err()
            .unwrap_or_else(|| ApiError::internal("upload sink missing")));
    };
    let got = sink.written.saturating_sub(start);
    let mismatch =
        declared.is_some_and(|(a, b)| b - a + 1 != got) || expect_len.is_some_and(|l| l != got);
    if res.is_err() || mismatch {
        // Roll the upload back to where this request began.
        let _ = sink.file.set_len(start);
        sink.written = start;
        sink.hasher = None;
        st.sink = Some(sink);
        res?;
        return Err(ApiError::new(
            Code::BlobUploadInvalid,
            "request body length does not match Content-Range/Content-Length",
        ));
    }
    st.sink = Some(sink);
    Ok(())
}

async fn patch_upload(reg: &Reg, repo: &str, upload_id: &str, req: Request) -> ApiResult {
    let s = session(reg, repo, upload_id).await?;
    let mut st = s.lock().await;
    append(repo, upload_id, &mut st, req).await?;
    let offset = st.sink.as_ref().map(|s| s.written).unwrap_or(0);
    let mut resp = StatusCode::ACCEPTED.into_response();
    upload_headers(&mut resp, repo, upload_id, offset);
    Ok(resp)
}

async fn upload_status(reg: &Reg, repo: &str, upload_id: &str) -> ApiResult {
    let s = session(reg, repo, upload_id).await?;
    let st = s.lock().await;
    let offset = st.sink.as_ref().map(|s| s.written).unwrap_or(0);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    upload_headers(&mut resp, repo, upload_id, offset);
    Ok(resp)
}

async fn cancel_upload(reg: &Reg, repo: &str, upload_id: &str) -> ApiResult {
    let s = session(reg, repo, upload_id).await?;
    let mut st = s.lock().await;
    st.sink = None;
    drop_upload(reg, upload_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn drop_upload(reg: &Reg, upload_id: &str) -> ApiResult<()> {
    reg.uploads.remove(upload_id);
    reg.store.remove_upload(upload_id)?;
    let (r, uid) = (reg.clone(), upload_id.to_string());
    blocking(move || r.meta.delete_upload(&uid)).await?;
    Ok(())
}

async fn finish_upload(reg: &Reg, repo: &str, upload_id: &str, req: Request) -> ApiResult {
    let q = query(&req);
    let digest = parse_digest(query_get(&q, "digest").ok_or_else(|| {
        ApiError::new(Code::DigestInvalid, "digest query parameter is required")
    })?)?;
    let s = session(reg, repo, upload_id).await?;
    let mut st = s.lock().await;
    append(repo, upload_id, &mut st, req).await?;
    let sink = st.sink.take().ok_or_else(upload_unknown)?;
    let res = finalize(reg, repo, upload_id, sink, &digest).await;
    // A finished upload is over either way: verified and stored, or rejected and discarded.
    drop_upload(reg, upload_id).await?;
    res?;
    Ok(created_blob(repo, &digest))
}

/// Verifies an upload file against `digest`, installs it and records it in `repo`.
async fn finalize(
    reg: &Reg,
    repo: &str,
    upload_id: &str,
    sink: Sink,
    digest: &Digest,
) -> ApiResult<()> {
    let path = reg.store.upload_path(upload_id);
    let Sink {
        file,
        hasher,
        written,
        ..
    } = sink;
    let fsync = tokio::task::spawn_blocking(move || file.sync_all()).await?;
    fsync.map_err(io_internal)?;
    let actual = match (digest.algorithm(), hasher) {
        (Algorithm::Sha256, Some(h)) => h.finalize(),
        (alg, _) => crate::storage::hash_file(&path, alg).await?.0,
    };
    if &actual != digest {
        let _ = std::fs::remove_file(&path);
        return Err(ApiError::new(
            Code::DigestInvalid,
            format!("provided digest {digest} does not match content digest {actual}"),
        )
        .detail(json!({ "digest": digest.to_string() })));
    }
    let _guard = reg.finalize.read().await;
    let (r, n, d, p) = (reg.clone(), repo.to_string(), digest.clone(), path.clone());
    let create = reg.cfg.auto_create_repos;
    blocking(move || {
        let known = r.meta.blob(d.as_str())?.is_some() && r.store.blob_path(&d).exists();
        if known {
            let _ = std::fs::remove_file(&p);
        } else {
            r.store.install(&p, &d)?;
        }
        r.meta.commit_blob(&n, d.as_str(), written, create)?;
        Ok::<_, crate::Error>(())
    })
    .await?;
    reg.touch(digest.as_str());
    Ok(())
}

// ---- token endpoint -----------------------------------------------------------------------------

async fn token(State(reg): State<Reg>, req: Request) -> Response {
    let q = query(&req);
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let scopes: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let id = match reg.auth.identify(auth.as_deref()).await {
        Ok(id) => id,
        Err(e) => return ApiError::new(Code::Unauthorized, e.to_string()).into_response(),
    };
    issue(&reg, id, scopes).await
}

async fn token_post(State(reg): State<Reg>, req: Request) -> Response {
    let body = match read_limited(req.into_body(), 64 << 10).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let form = url_decode_pairs(&String::from_utf8_lossy(&body));
    let scopes: Vec<String> = query_get(&form, "scope")
        .map(|s| s.split(' ').map(str::to_string).collect())
        .unwrap_or_default();
    let id = match query_get(&form, "grant_type") {
        Some("password") => {
            let (u, p) = (
                query_get(&form, "username").unwrap_or("").to_string(),
                query_get(&form, "password").unwrap_or("").to_string(),
            );
            let auth = reg.auth.clone();
            match tokio::task::spawn_blocking(move || auth.check_password(&u, &p)).await {
                Ok(Ok(id)) => id,
                _ => {
                    return ApiError::new(Code::Unauthorized, "invalid username or password")
                        .into_response()
                }
            }
        }
        _ => {
            return ApiError::new(Code::Unsupported, "unsupported grant_type")
                .status(StatusCode::BAD_REQUEST)
                .into_response()
        }
    };
    issue(&reg, id, scopes).await
}

/// Grants the requested scopes, each narrowed to what `id` may do.
async fn issue(reg: &Reg, id: Identity, scopes: Vec<String>) -> Response {
    let mut access = Vec::new();
    for s in scopes.iter().filter(|s| !s.is_empty()) {
        let Some(a) = parse_scope(s) else {
            continue;
        };
        if a.kind != "repository" {
            if a.kind == "registry" && id.is_admin() {
                access.push(a);
            }
            continue;
        }
        let public = match repo_is_public(reg, &a.name).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
        let granted: Vec<String> = a
            .actions
            .iter()
            .filter(|act| reg.auth.allowed(&id, &a.name, act, public))
            .cloned()
            .collect();
        if !granted.is_empty() {
            access.push(Access {
                kind: a.kind,
                name: a.name,
                actions: granted,
            });
        }
    }
    let subject = id.name().to_string();
    let (tok, ttl) = reg.auth.issue_token(&subject, access);
    let issued = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    axum::Json(json!({
        "token": tok,
        "access_token": tok,
        "expires_in": ttl,
        "issued_at": issued,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(route("/v2/"), Some(Route::Base)));
        assert!(matches!(route("/v2"), Some(Route::Base)));
        assert!(matches!(route("/v2/_catalog"), Some(Route::Catalog)));
        match route("/v2/a/b/tags/list") {
            Some(Route::Tags(r)) => assert_eq!(r, "a/b"),
            other => panic!("{other:?}"),
        }
        match route("/v2/a/manifests/x/manifests/latest") {
            Some(Route::Manifest(r, t)) => {
                assert_eq!(r, "a/manifests/x");
                assert_eq!(t, "latest");
            }
            other => panic!("{other:?}"),
        }
        match route("/v2/a/blobs/uploads/") {
            Some(Route::UploadStart(r)) => assert_eq!(r, "a"),
            other => panic!("{other:?}"),
        }
        match route("/v2/a/blobs/uploads/abc") {
            Some(Route::Upload(r, id)) => {
                assert_eq!(r, "a");
                assert_eq!(id, "abc");
            }
            other => panic!("{other:?}"),
        }
        match route("/v2/a/blobs/sha256:00") {
            Some(Route::Blob(r, d)) => {
                assert_eq!(r, "a");
                assert_eq!(d, "sha256:00");
            }
            other => panic!("{other:?}"),
        }
        assert!(route("/v2/a").is_none());
        assert!(route("/v3/a/tags/list").is_none());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
