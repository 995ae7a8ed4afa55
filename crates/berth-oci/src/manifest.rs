//! Validation of pushed manifests: OCI image manifests and indexes (image-spec 1.1), Docker
//! schema 2 manifests and manifest lists.
//!
//! [`parse_manifest`] walks the JSON by hand rather than through `#[derive(Deserialize)]` so that
//! every rejection names the exact field (`layers[3].digest: invalid digest "sha256:xyz"`). The
//! registry stores the pushed bytes unchanged; the [`ParsedManifest`] only tells it what the
//! manifest refers to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::digest::{echo, Digest};
use crate::media_type;

/// Why a manifest was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The manifest is malformed; the message names the offending field.
    #[error("{0}")]
    Invalid(String),
    /// The manifest is of a known type this registry does not accept (Docker schema 1).
    #[error("manifest media type {0:?} is not supported")]
    Unsupported(String),
    /// The manifest's media type is not a manifest type.
    #[error("unknown manifest media type {0:?}")]
    UnknownMediaType(String),
}

fn invalid(path: &str, problem: impl std::fmt::Display) -> ManifestError {
    if path.is_empty() {
        ManifestError::Invalid(problem.to_string())
    } else {
        ManifestError::Invalid(format!("{path}: {problem}"))
    }
}

/// Content descriptor (image-spec `descriptor.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes of the referenced content.
    pub size: u64,
    /// Alternative locations of the content (foreign / non-distributable layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Arbitrary metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Artifact type of the referenced manifest (referrers responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Platform of the referenced manifest (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor with only the three required fields.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            artifact_type: None,
            platform: None,
        }
    }

    /// Whether the content may live outside the registry: a foreign or non-distributable layer
    /// that lists `urls`.
    pub fn is_external(&self) -> bool {
        !self.urls.is_empty() && media_type::is_non_distributable(&self.media_type)
    }
}

/// Platform of an index entry (image-spec `image-index.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`, `windows`.
    pub os: String,
    /// Operating system version, e.g. `10.0.17763.1040`.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// Required operating system features, e.g. `win32k`.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant, e.g. `v7`, `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Whether a manifest is a single image or a list of manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    /// OCI image manifest or Docker schema 2 manifest: `config` + `layers`.
    Image,
    /// OCI image index or Docker manifest list: `manifests`.
    Index,
}

/// What a validated manifest refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    /// The manifest's media type (from the Content-Type, the body, or detected).
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// The config descriptor (images only).
    pub config: Option<Descriptor>,
    /// Layer descriptors (images only).
    pub layers: Vec<Descriptor>,
    /// Child manifest descriptors (indexes only).
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 referrers).
    pub subject: Option<Descriptor>,
    /// The manifest's `artifactType` (absent when missing or empty).
    pub artifact_type: Option<String>,
    /// Manifest-level annotations.
    pub annotations: BTreeMap<String, String>,
}

impl ParsedManifest {
    /// The artifact type reported by the referrers API: `artifactType` if set, else for an
    /// image manifest its config's media type; an index without `artifactType` has none.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        match (&self.artifact_type, self.kind) {
            (Some(t), _) => Some(t),
            (None, ManifestKind::Image) => self.config.as_ref().map(|c| c.media_type.as_str()),
            (None, ManifestKind::Index) => None,
        }
    }

    /// Blobs that must exist in the repository: the config and every layer except foreign /
    /// non-distributable layers that list `urls`.
    pub fn blob_references(&self) -> impl Iterator<Item = &Descriptor> + '_ {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|l| !l.is_external()))
    }

    /// Manifests that must exist in the repository: an index's children.
    pub fn manifest_references(&self) -> impl Iterator<Item = &Descriptor> + '_ {
        self.manifests.iter()
    }
}

/// Validates a pushed manifest.
///
/// `content_type` is the request's Content-Type header, if any. Parameters are ignored, and
/// `application/json`, `application/octet-stream` or an empty value count as absent. The declared
/// type is the header, else the body's `mediaType`; both present and different is an error.
/// Without either, a body with `manifests` is an OCI index and one with `config` an OCI manifest.
pub fn parse_manifest(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<ParsedManifest, ManifestError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ManifestError::Invalid(format!("invalid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ManifestError::Invalid(format!(
            "expected a JSON object, found {}",
            kind_of(&value)
        )));
    };

    let header = content_type
        .map(media_type::essence)
        .filter(|t| !t.is_empty() && t != media_type::JSON && t != media_type::OCTET_STREAM);
    let body_type = match present(&obj, "mediaType") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => return Err(expected("mediaType", "a string", other)),
    };

    let declared: String = match (header, body_type) {
        (Some(h), Some(b)) if h != b => {
            return Err(ManifestError::Invalid(format!(
                "mediaType {:?} does not match the Content-Type {:?}",
                echo(b),
                echo(&h)
            )))
        }
        (Some(h), _) => h,
        (None, Some(b)) => b.to_owned(),
        (None, None) => detect(&obj)?.to_owned(),
    };

    let kind = if media_type::is_image_manifest(&declared) {
        ManifestKind::Image
    } else if media_type::is_index(&declared) {
        ManifestKind::Index
    } else if media_type::is_schema1(&declared) {
        return Err(ManifestError::Unsupported(declared));
    } else {
        return Err(ManifestError::UnknownMediaType(echo(&declared)));
    };

    match present(&obj, "schemaVersion") {
        None => return Err(invalid("schemaVersion", "missing")),
        Some(v) if v.as_u64() == Some(2) => {}
        Some(Value::Number(n)) => {
            return Err(invalid("schemaVersion", format!("expected 2, found {n}")))
        }
        Some(other) => return Err(expected("schemaVersion", "the number 2", other)),
    }

    let mut parsed = ParsedManifest {
        media_type: declared,
        kind,
        config: None,
        layers: Vec::new(),
        manifests: Vec::new(),
        subject: None,
        artifact_type: None,
        annotations: BTreeMap::new(),
    };

    // A body that is valid as both kinds could be served as either; reject the ambiguity
    // (distribution GHSA-mc8v-mgrf-8f4m).
    match kind {
        ManifestKind::Image => {
            if present(&obj, "manifests").is_some() {
                return Err(invalid("manifests", "not allowed in an image manifest"));
            }
            let config = present(&obj, "config").ok_or_else(|| invalid("config", "missing"))?;
            parsed.config = Some(descriptor(config, "config")?);
            parsed.layers = descriptors(&obj, "layers")?;
        }
        ManifestKind::Index => {
            for key in ["config", "layers"] {
                if present(&obj, key).is_some() {
                    return Err(invalid(key, "not allowed in an image index"));
                }
            }
            parsed.manifests = descriptors(&obj, "manifests")?;
        }
    }

    parsed.subject = present(&obj, "subject")
        .map(|v| descriptor(v, "subject"))
        .transpose()?;
    parsed.artifact_type = artifact_type(&obj, "")?;
    parsed.annotations = annotations(&obj, "")?;
    Ok(parsed)
}

/// Guesses the type of a manifest that names none.
fn detect(obj: &Map<String, Value>) -> Result<&'static str, ManifestError> {
    if present(obj, "schemaVersion").and_then(Value::as_u64) == Some(1) {
        return Err(ManifestError::Unsupported(
            media_type::DOCKER_SCHEMA1.to_owned(),
        ));
    }
    if present(obj, "manifests").is_some() {
        Ok(media_type::OCI_INDEX)
    } else if present(obj, "config").is_some() {
        Ok(media_type::OCI_MANIFEST)
    } else {
        Err(ManifestError::Invalid(
            "cannot determine the manifest type: no Content-Type, mediaType, config or manifests"
                .to_owned(),
        ))
    }
}

/// A field's value, with `null` treated as absent.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(path: &str, what: &str, found: &Value) -> ManifestError {
    invalid(path, format!("expected {what}, found {}", kind_of(found)))
}

/// A required array of descriptors, e.g. `layers` or `manifests`.
fn descriptors(obj: &Map<String, Value>, key: &str) -> Result<Vec<Descriptor>, ManifestError> {
    match present(obj, key) {
        None => Err(invalid(key, "missing")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| descriptor(v, &format!("{key}[{i}]")))
            .collect(),
        Some(other) => Err(expected(key, "an array", other)),
    }
}

fn descriptor(v: &Value, path: &str) -> Result<Descriptor, ManifestError> {
    let Value::Object(obj) = v else {
        return Err(expected(path, "an object", v));
    };

    let media_type_path = join(path, "mediaType");
    let media_type = match present(obj, "mediaType") {
        None => return Err(invalid(&media_type_path, "missing")),
        Some(Value::String(s)) => checked_media_type(s, &media_type_path)?,
        Some(other) => return Err(expected(&media_type_path, "a string", other)),
    };

    let digest_path = join(path, "digest");
    let digest = match present(obj, "digest") {
        None => return Err(invalid(&digest_path, "missing")),
        Some(Value::String(s)) => s.parse().map_err(|e| invalid(&digest_path, e))?,
        Some(other) => return Err(expected(&digest_path, "a string", other)),
    };

    let size_path = join(path, "size");
    let size = match present(obj, "size") {
        None => return Err(invalid(&size_path, "missing")),
        Some(v) => size(v, &size_path)?,
    };

    let urls = match present(obj, "urls") {
        None => Vec::new(),
        Some(v) => strings(v, &join(path, "urls"))?,
    };

    let platform = present(obj, "platform")
        .map(|v| platform(v, &join(path, "platform")))
        .transpose()?;

    Ok(Descriptor {
        media_type,
        digest,
        size,
        urls,
        annotations: annotations(obj, path)?,
        artifact_type: artifact_type(obj, path)?,
        platform,
    })
}

/// A non-negative integer that fits in an `i64` (the image spec's `int64`).
fn size(v: &Value, path: &str) -> Result<u64, ManifestError> {
    let Value::Number(n) = v else {
        return Err(expected(path, "a number", v));
    };
    if let Some(size) = n.as_u64() {
        if i64::try_from(size).is_ok() {
            return Ok(size);
        }
        return Err(invalid(path, format!("{size} is too large")));
    }
    if n.as_i64().is_some() {
        return Err(invalid(path, format!("must not be negative, found {n}")));
    }
    Err(invalid(path, format!("expected an integer, found {n}")))
}

/// A media type: non-empty, with a `/`.
fn checked_media_type(s: &str, path: &str) -> Result<String, ManifestError> {
    match s.split_once('/') {
        Some((t, sub)) if !t.is_empty() && !sub.is_empty() => Ok(s.to_owned()),
        _ => Err(invalid(path, format!("invalid media type {:?}", echo(s)))),
    }
}

/// Optional `artifactType`; an empty string counts as absent.
fn artifact_type(obj: &Map<String, Value>, path: &str) -> Result<Option<String>, ManifestError> {
    let path = join(path, "artifactType");
    match present(obj, "artifactType") {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => checked_media_type(s, &path).map(Some),
        Some(other) => Err(expected(&path, "a string", other)),
    }
}

/// Optional `annotations`: an object of strings.
fn annotations(
    obj: &Map<String, Value>,
    path: &str,
) -> Result<BTreeMap<String, String>, ManifestError> {
    let path = join(path, "annotations");
    match present(obj, "annotations") {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(expected(
                    &format!("{path}[{:?}]", echo(k)),
                    "a string",
                    other,
                )),
            })
            .collect(),
        Some(other) => Err(expected(&path, "an object", other)),
    }
}

/// An array of strings.
fn strings(v: &Value, path: &str) -> Result<Vec<String>, ManifestError> {
    let Value::Array(items) = v else {
        return Err(expected(path, "an array", v));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(expected(&format!("{path}[{i}]"), "a string", other)),
        })
        .collect()
}

fn required_string(
    obj: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<String, ManifestError> {
    let path = join(path, key);
    match present(obj, key) {
        None => Err(invalid(&path, "missing")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(expected(&path, "a string", other)),
    }
}

fn optional_string(
    obj: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<String>, ManifestError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(expected(&join(path, key), "a string", other)),
    }
}

fn platform(v: &Value, path: &str) -> Result<Platform, ManifestError> {
    let Value::Object(obj) = v else {
        return Err(expected(path, "an object", v));
    };
    Ok(Platform {
        architecture: required_string(obj, path, "architecture")?,
        os: required_string(obj, path, "os")?,
        os_version: optional_string(obj, path, "os.version")?,
        os_features: match present(obj, "os.features") {
            None => Vec::new(),
            Some(v) => strings(v, &join(path, "os.features"))?,
        },
        variant: optional_string(obj, path, "variant")?,
    })
}

/// The canonical OCI image index listing `manifests` (the referrers API response body).
pub fn build_index(manifests: Vec<Descriptor>) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Index<'a> {
        schema_version: u32,
        media_type: &'a str,
        manifests: &'a [Descriptor],
    }
    let index = Index {
        schema_version: 2,
        media_type: media_type::OCI_INDEX,
        manifests: &manifests,
    };
    // Serializing plain strings, integers and string-keyed maps into a Vec cannot fail.
    serde_json::to_vec(&index).expect("an index always serializes to JSON")
}

#[cfg(test)]
mod tests;
