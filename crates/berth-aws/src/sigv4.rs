//! AWS Signature Version 4 verification (`AWS4-HMAC-SHA256`).
//!
//! Both forms real clients send are accepted: the `Authorization` header (with `X-Amz-Date` or
//! `Date`) and the presigned query string (`X-Amz-Algorithm`, `X-Amz-Credential`, ...).
//!
//! The canonical request follows botocore's non-S3 rules, which are what AWS checks: the path as
//! it appears on the wire is normalised (dot segments and empty segments removed) and then
//! percent-encoded once more (so `%20` on the wire becomes `%2520`); query keys and values are
//! decoded, re-encoded with the unreserved set and sorted by key then value; header values are
//! trimmed with inner whitespace runs collapsed and repeated headers joined with `,`.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::json::AwsError;

/// The only algorithm AWS SigV4 defines for HMAC signing.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// `x-amz-content-sha256` value meaning the body is not covered by the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far a request's timestamp may be from the server's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(SKEW_SECS as u64);
const SKEW_SECS: i64 = 15 * 60;
/// Longest lifetime of a presigned request (seven days), as AWS allows.
pub const MAX_PRESIGN_EXPIRES: u64 = 604_800;

const TERMINATOR: &str = "aws4_request";
const SIGNATURE_MISMATCH: &str =
    "The request signature we calculated does not match the signature \
     you provided. Check your AWS Secret Access Key and signing method. Consult the service \
     documentation for details.";

/// RFC 3986 unreserved characters stay as they are; everything else is `%XX` (upper case).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Path segments additionally keep their `/` separators.
const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// Headers botocore never signs; the test signer skips them too.
const UNSIGNABLE_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// Looks up the secret access key of an access key id.
pub trait KeyLookup: Send + Sync {
    /// The secret of `access_key_id`, or `None` when the key is unknown.
    fn secret_for(&self, access_key_id: &str) -> Option<String>;
}

/// Who signed a request that verified, and for which scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
}

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("request carries no authentication")]
    MissingAuthenticationToken,
    /// The message is the one AWS returns.
    #[error("incomplete signature: {0}")]
    IncompleteSignature(String),
    #[error("unknown access key id {0:?}")]
    UnrecognizedClient(String),
    #[error("signature does not match")]
    SignatureMismatch,
    #[error("signature expired: {date} is more than 15 minutes before {now}")]
    Expired { date: String, now: String },
    #[error("signature not yet current: {date} is more than 15 minutes after {now}")]
    NotYetCurrent { date: String, now: String },
    #[error("presigned request signed at {date} expired after {expires} seconds")]
    PresignExpired { date: String, expires: u64 },
    /// Well formed but unacceptable (for example scoped to another day or service); the message
    /// is the one AWS returns.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    #[error("x-amz-content-sha256 does not match the request body")]
    ContentSha256Mismatch,
}

impl AuthError {
    /// The AWS wire error for this failure (`__type`, message and HTTP status as AWS sends them).
    pub fn aws_error(&self) -> AwsError {
        match self {
            AuthError::MissingAuthenticationToken => AwsError::new(
                StatusCode::FORBIDDEN,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ),
            AuthError::IncompleteSignature(msg) => AwsError::new(
                StatusCode::BAD_REQUEST,
                "IncompleteSignatureException",
                msg.clone(),
            ),
            AuthError::UnrecognizedClient(_) => AwsError::new(
                StatusCode::BAD_REQUEST,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            AuthError::SignatureMismatch => AwsError::new(
                StatusCode::FORBIDDEN,
                "InvalidSignatureException",
                SIGNATURE_MISMATCH,
            ),
            AuthError::Expired { date, now } => {
                let limit = shift(now, -SKEW_SECS);
                AwsError::new(
                    StatusCode::FORBIDDEN,
                    "InvalidSignatureException",
                    format!(
                        "Signature expired: {date} is now earlier than {limit} ({now} - 15 min.)"
                    ),
                )
            }
            AuthError::NotYetCurrent { date, now } => {
                let limit = shift(now, SKEW_SECS);
                AwsError::new(
                    StatusCode::FORBIDDEN,
                    "InvalidSignatureException",
                    format!(
                        "Signature not yet current: {date} is still later than {limit} ({now} + 15 min.)"
                    ),
                )
            }
            AuthError::PresignExpired { .. } => AwsError::new(
                StatusCode::FORBIDDEN,
                "InvalidSignatureException",
                "Request has expired",
            ),
            AuthError::InvalidSignature(msg) => AwsError::new(
                StatusCode::FORBIDDEN,
                "InvalidSignatureException",
                msg.clone(),
            ),
            AuthError::ContentSha256Mismatch => AwsError::new(
                StatusCode::BAD_REQUEST,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ),
        }
    }
}

/// Moves an `X-Amz-Date` formatted timestamp by `seconds` (for error messages only).
fn shift(amz: &str, seconds: i64) -> String {
    match parse_amz_date(amz) {
        Some(t) => format_amz_date(t + time::Duration::seconds(seconds)),
        None => amz.to_string(),
    }
}

/// Verifies the SigV4 signature of a request whose whole body is `body`.
///
/// `uri` is the request target as received (path and query exactly as on the wire); the host is
/// taken from the `Host` header, or from the URI's authority (HTTP/2) when that header is absent.
pub fn verify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    keys: &dyn KeyLookup,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let target = Target {
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        authority: uri.authority().map(|a| a.as_str()),
    };
    verify_target(method, &target, headers, body, keys, now)
}

/// The parts of the request target that are signed, as raw wire strings.
pub(crate) struct Target<'a> {
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    /// Stands in for a missing `Host` header (HTTP/2 `:authority`).
    pub(crate) authority: Option<&'a str>,
}

pub(crate) fn verify_target(
    method: &Method,
    target: &Target<'_>,
    headers: &HeaderMap,
    body: &[u8],
    keys: &dyn KeyLookup,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let auth = parse_auth(headers, target.query)?;
    let secret = keys
        .secret_for(&auth.access_key_id)
        .ok_or_else(|| AuthError::UnrecognizedClient(auth.access_key_id.clone()))?;
    check_time(&auth, now)?;

    let payload_hashes: Vec<String> = match payload_hash(headers, body)? {
        Some(hash) => vec![hash],
        // A presigned URL signs either the (usually empty) body or nothing at all.
        None if auth.expires.is_some() => vec![sha256_hex(body), UNSIGNED_PAYLOAD.to_string()],
        None => vec![sha256_hex(body)],
    };
    let key = signing_key(&secret, &auth.date, &auth.region, &auth.service);
    let presigned = auth.expires.is_some();
    for payload in &payload_hashes {
        let creq = canonical_request(
            method,
            target,
            headers,
            &auth.signed_headers,
            payload,
            presigned,
        );
        let sts = string_to_sign(&auth.timestamp, &auth.scope(), &creq);
        let expected = hex::encode(hmac_sha256(&key, sts.as_bytes()));
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            return Ok(Verified {
                access_key_id: auth.access_key_id,
                region: auth.region,
                service: auth.service,
            });
        }
    }
    Err(AuthError::SignatureMismatch)
}

/// What the `Authorization` header or the presigned query string says.
#[derive(Debug)]
struct AuthParams {
    access_key_id: String,
    /// `yyyymmdd` of the credential scope.
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
    /// `X-Amz-Date` form of the request time, as signed.
    timestamp: String,
    when: OffsetDateTime,
    /// `X-Amz-Expires` of a presigned request.
    expires: Option<u64>,
}

impl AuthParams {
    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/{TERMINATOR}",
            self.date, self.region, self.service
        )
    }
}

fn incomplete(msg: impl Into<String>) -> AuthError {
    AuthError::IncompleteSignature(msg.into())
}

fn parse_auth(headers: &HeaderMap, query: &str) -> Result<AuthParams, AuthError> {
    let presign = query_params(query);
    let has_presign = presign.iter().any(|(k, _)| k == "X-Amz-Algorithm");
    match headers.get(http::header::AUTHORIZATION) {
        Some(_) if has_presign => Err(incomplete(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the \
             Authorization header should be specified",
        )),
        Some(value) => parse_header_auth(value, headers),
        None if has_presign => parse_presigned(&presign),
        None => Err(AuthError::MissingAuthenticationToken),
    }
}

fn parse_header_auth(value: &HeaderValue, headers: &HeaderMap) -> Result<AuthParams, AuthError> {
    let raw = value
        .to_str()
        .map_err(|_| incomplete("Authorization header contains invalid characters"))?;
    let rest = raw
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            incomplete(format!(
                "Authorization header requires the {ALGORITHM} algorithm. Authorization={raw}"
            ))
        })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').ok_or_else(|| {
            incomplete(format!(
                "'{part}' not a valid key=value pair (missing equal-sign) in Authorization header: '{raw}'."
            ))
        })?;
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let mut missing = String::new();
    for (name, v) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed),
    ] {
        if v.is_none() {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(incomplete(format!("{missing}Authorization={raw}")));
    };

    let (timestamp, when) = if let Some(v) = headers.get("x-amz-date") {
        let s = v
            .to_str()
            .map_err(|_| incomplete("X-Amz-Date header contains invalid characters"))?;
        let t = parse_amz_date(s).ok_or_else(|| {
            incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{s}'."
            ))
        })?;
        (s.to_string(), t)
    } else if let Some(v) = headers.get(http::header::DATE) {
        let s = v
            .to_str()
            .map_err(|_| incomplete("Date header contains invalid characters"))?;
        let t = parse_http_date(s)
            .ok_or_else(|| incomplete(format!("Date header is not a valid HTTP date: '{s}'.")))?;
        (format_amz_date(t), t)
    } else {
        return Err(incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. \
             Authorization="
                .to_string()
                + raw,
        ));
    };
    build_params(credential, signed, signature, timestamp, when, None)
}

fn parse_presigned(params: &[(String, String)]) -> Result<AuthParams, AuthError> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut missing = Vec::new();
    for name in [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
        "X-Amz-Expires",
    ] {
        if get(name).is_none() {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        return Err(incomplete(format!(
            "AWS query-string parameters must include {}. Re-examine the query-string parameters.",
            missing
                .iter()
                .map(|m| format!("'{m}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let field = |name: &str| get(name).unwrap_or_default();
    if field("X-Amz-Algorithm") != ALGORITHM {
        return Err(incomplete(format!(
            "X-Amz-Algorithm only supports \"{ALGORITHM}\""
        )));
    }
    let timestamp = field("X-Amz-Date");
    let when = parse_amz_date(timestamp).ok_or_else(|| {
        incomplete(format!(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\". Got '{timestamp}'."
        ))
    })?;
    let expires = field("X-Amz-Expires")
        .parse::<u64>()
        .ok()
        .filter(|e| (1..=MAX_PRESIGN_EXPIRES).contains(e))
        .ok_or_else(|| {
            incomplete(format!(
                "X-Amz-Expires must be a number of seconds between 1 and {MAX_PRESIGN_EXPIRES}"
            ))
        })?;
    build_params(
        field("X-Amz-Credential"),
        field("X-Amz-SignedHeaders"),
        field("X-Amz-Signature"),
        timestamp.to_string(),
        when,
        Some(expires),
    )
}

fn build_params(
    credential: &str,
    signed: &str,
    signature: &str,
    timestamp: String,
    when: OffsetDateTime,
    expires: Option<u64>,
) -> Result<AuthParams, AuthError> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, terminator] = parts.as_slice() else {
        return Err(incomplete(format!(
            "Credential should be of the form 'AccessKeyId/yyyymmdd/region/service/{TERMINATOR}', \
             not '{credential}'."
        )));
    };
    if akid.is_empty() || region.is_empty() || service.is_empty() {
        return Err(incomplete(format!(
            "Credential is missing its access key id, region or service: '{credential}'."
        )));
    }
    if *terminator != TERMINATOR {
        return Err(AuthError::InvalidSignature(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'."
        )));
    }
    if timestamp.get(..8) != Some(*date) {
        return Err(AuthError::InvalidSignature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{date}' != '{}', from '{timestamp}'.",
            timestamp.get(..8).unwrap_or_default()
        )));
    }
    let signed_headers: Vec<String> = signed
        .split(';')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if signed_headers.iter().any(String::is_empty) {
        return Err(incomplete(format!(
            "SignedHeaders is malformed: '{signed}'."
        )));
    }
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(AuthError::InvalidSignature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    if signature.is_empty() {
        return Err(incomplete("Signature is empty."));
    }
    Ok(AuthParams {
        access_key_id: (*akid).to_string(),
        date: (*date).to_string(),
        region: (*region).to_string(),
        service: (*service).to_string(),
        signed_headers,
        signature: signature.to_string(),
        timestamp,
        when,
        expires,
    })
}

fn check_time(auth: &AuthParams, now: SystemTime) -> Result<(), AuthError> {
    let now = OffsetDateTime::from(now);
    let now_s = format_amz_date(now);
    if auth.when > now + MAX_CLOCK_SKEW {
        return Err(AuthError::NotYetCurrent {
            date: auth.timestamp.clone(),
            now: now_s,
        });
    }
    match auth.expires {
        Some(expires) => {
            if auth.when + Duration::from_secs(expires) < now {
                return Err(AuthError::PresignExpired {
                    date: auth.timestamp.clone(),
                    expires,
                });
            }
        }
        None => {
            if auth.when + MAX_CLOCK_SKEW < now {
                return Err(AuthError::Expired {
                    date: auth.timestamp.clone(),
                    now: now_s,
                });
            }
        }
    }
    Ok(())
}

/// The payload hash named by `x-amz-content-sha256`, checked against the body when it is a hash.
fn payload_hash(headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, AuthError> {
    let Some(value) = headers.get("x-amz-content-sha256") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| incomplete("x-amz-content-sha256 contains invalid characters"))?;
    if value == UNSIGNED_PAYLOAD {
        return Ok(Some(value.to_string()));
    }
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        if value.eq_ignore_ascii_case(&sha256_hex(body)) {
            return Ok(Some(value.to_string()));
        }
        return Err(AuthError::ContentSha256Mismatch);
    }
    Err(incomplete(format!(
        "x-amz-content-sha256 must be {UNSIGNED_PAYLOAD} or the hex SHA-256 of the body, not '{value}'"
    )))
}

/// Splits a raw query string into percent-decoded `(key, value)` pairs.
fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The canonical URI: the wire path normalised and percent-encoded once more.
pub(crate) fn canonical_uri(path: &str) -> String {
    let normalized = remove_dot_segments(path);
    percent_encode(normalized.as_bytes(), PATH).to_string()
}

/// RFC 3986 §5.2.4 plus removal of empty segments, exactly as botocore does it.
fn remove_dot_segments(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(path.len());
    if path.starts_with('/') {
        result.push('/');
    }
    result.push_str(&out.join("/"));
    if path.ends_with('/') && !out.is_empty() {
        result.push('/');
    }
    result
}

/// The canonical query string: decoded, re-encoded, sorted by key then value.
pub(crate) fn canonical_query(query: &str, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query_params(query)
        .into_iter()
        .filter(|(k, _)| !(presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            (
                percent_encode(k.as_bytes(), UNRESERVED).to_string(),
                percent_encode(v.as_bytes(), UNRESERVED).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `Trimall`: trims and collapses runs of whitespace to one space.
fn trim_all(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for word in value
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(word);
    }
    out
}

pub(crate) fn canonical_request(
    method: &Method,
    target: &Target<'_>,
    headers: &HeaderMap,
    signed_headers: &[String],
    payload_hash: &str,
    presigned: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(target.path).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(target.query, presigned).as_bytes());
    out.push(b'\n');
    for name in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut values = headers.get_all(name.as_str()).iter().peekable();
        if values.peek().is_none() && name == "host" {
            if let Some(authority) = target.authority {
                out.extend_from_slice(&trim_all(authority.as_bytes()));
            }
        }
        let mut first = true;
        for value in values {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&trim_all(value.as_bytes()));
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

pub(crate) fn string_to_sign(timestamp: &str, scope: &str, canonical_request: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request))
    )
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, TERMINATOR.as_bytes())
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    PrimitiveDateTime::parse(s, format)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

fn format_amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses an HTTP `Date` (RFC 7231 IMF-fixdate, or RFC 2822 as Python's `formatdate` writes it).
fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc2822;
    let s = s.trim();
    OffsetDateTime::parse(s, &Rfc2822).ok().or_else(|| {
        let fixed = s.strip_suffix(" GMT").or_else(|| s.strip_suffix(" UTC"))?;
        OffsetDateTime::parse(&format!("{fixed} +0000"), &Rfc2822).ok()
    })
}

/// What [`sign`] needs to know to sign a request.
#[derive(Clone)]
pub struct SigningParams<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub time: SystemTime,
}

/// A minimal SigV4 signer (header form) for tests and loopback clients.
///
/// Sets `X-Amz-Date`, adds `Host` from the URI's authority when absent, signs every header
/// present except those botocore never signs, and sets `Authorization`.
pub fn sign(
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    body: &[u8],
    params: &SigningParams<'_>,
) -> Result<(), http::header::InvalidHeaderValue> {
    headers.remove(http::header::AUTHORIZATION);
    let timestamp = format_amz_date(OffsetDateTime::from(params.time));
    headers.insert("x-amz-date", HeaderValue::from_str(&timestamp)?);
    if !headers.contains_key(http::header::HOST) {
        if let Some(authority) = uri.authority() {
            headers.insert(
                http::header::HOST,
                HeaderValue::from_str(authority.as_str())?,
            );
        }
    }
    let mut signed: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| !UNSIGNABLE_HEADERS.contains(&k.as_str()))
        .collect();
    signed.sort();
    signed.dedup();
    let payload = match headers.get("x-amz-content-sha256") {
        Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        None => sha256_hex(body),
    };
    let target = Target {
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        authority: uri.authority().map(|a| a.as_str()),
    };
    let creq = canonical_request(method, &target, headers, &signed, &payload, false);
    let date = &timestamp[..8];
    let scope = format!("{date}/{}/{}/{TERMINATOR}", params.region, params.service);
    let sts = string_to_sign(&timestamp, &scope, &creq);
    let key = signing_key(
        params.secret_access_key,
        date,
        params.region,
        params.service,
    );
    let signature = hex::encode(hmac_sha256(&key, sts.as_bytes()));
    let value = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
        params.access_key_id,
        signed.join(";")
    );
    headers.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&value)?);
    Ok(())
}

#[cfg(test)]
mod tests;
