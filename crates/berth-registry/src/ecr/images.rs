//! Images: ListImages, DescribeImages, BatchGetImage, BatchDeleteImage, PutImage.

use berth_aws::AwsError;
use berth_oci::{Digest, ManifestError};
use serde_json::{json, Map, Value};

use super::input::{
    check_str_len, encode_token, image_filter, image_ids, invalid_param, max_results, next_token,
    repository_name, ImageId, Input,
};
use super::store::{DeleteOutcome, DeleteTarget};
use super::{timestamp, Env};
use crate::meta::{Image, ManifestRecord, MetaError};

/// The repository name of a request, validated.
fn repo_param(env: &Env, input: &Input<'_>) -> Result<String, AwsError> {
    env.check_registry(input)?;
    repository_name("repositoryName", input.required_str("repositoryName")?)
}

/// Every image of a repository (sorted by digest), or `RepositoryNotFoundException`.
async fn all_images(env: &Env, repo: &str) -> Result<Vec<Image>, AwsError> {
    let n = repo.to_string();
    env.blocking(move |reg| {
        if reg.meta.get_repo(&n)?.is_none() {
            return Err(MetaError::RepoNotFound(n));
        }
        reg.meta.list_images(&n)
    })
    .await
}

pub(super) async fn list(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let repo = repo_param(env, input)?;
    let (tag_status, active) = image_filter(input)?;
    let max = max_results(input, 1000, 100)?;
    let after = next_token(input)?;
    let images = all_images(env, &repo).await?;

    // One entry per tag (untagged images: one without a tag), ordered by (digest, tag).
    let mut entries: Vec<(String, String)> = Vec::new();
    if active {
        for img in &images {
            if !tag_status.admits(!img.tags.is_empty()) {
                continue;
            }
            if img.tags.is_empty() {
                entries.push((img.digest.clone(), String::new()));
            }
            for t in &img.tags {
                entries.push((img.digest.clone(), t.clone()));
            }
        }
    }
    entries.sort();
    let start = match &after {
        None => 0,
        Some(cursor) => {
            let (d, t) = cursor.split_once('\0').unwrap_or((cursor.as_str(), ""));
            entries.partition_point(|(ed, et)| (ed.as_str(), et.as_str()) <= (d, t))
        }
    };
    let page: Vec<&(String, String)> = entries.iter().skip(start).take(max).collect();
    let ids: Vec<Value> = page
        .iter()
        .map(|(d, t)| {
            let mut id = json!({ "imageDigest": d });
            if !t.is_empty() {
                id["imageTag"] = Value::from(t.as_str());
            }
            id
        })
        .collect();
    let mut out = json!({ "imageIds": ids });
    if start + page.len() < entries.len() {
        if let Some((d, t)) = page.last() {
            out["nextToken"] = Value::from(encode_token(&format!("{d}\0{t}")));
        }
    }
    Ok(out)
}

/// ECR's `imageSizeInBytes`: config + layers (+ the manifest) for an image; for a manifest
/// list, the largest of the images it lists.
fn image_size(images: &[Image], img: &Image) -> u64 {
    let own = |i: &Image| i.manifest.content_size.saturating_add(i.manifest.size);
    if img.manifest.children.is_empty() {
        return own(img);
    }
    img.manifest
        .children
        .iter()
        .filter_map(|c| images.iter().find(|i| i.digest == *c))
        .map(own)
        .max()
        .unwrap_or_else(|| own(img))
}

/// The `ImageDetail` shape.
fn image_detail(env: &Env, repo: &str, images: &[Image], img: &Image) -> Value {
    let m = &img.manifest;
    let mut d = json!({
        "registryId": env.account,
        "repositoryName": repo,
        "imageDigest": img.digest,
        "imageSizeInBytes": image_size(images, img),
        "imagePushedAt": timestamp(m.pushed_at),
        "imageManifestMediaType": m.media_type,
        "imageStatus": "ACTIVE",
    });
    if !img.tags.is_empty() {
        d["imageTags"] = json!(img.tags);
    }
    if let Some(t) = m.config_media_type.as_ref().or(m.artifact_type.as_ref()) {
        d["artifactMediaType"] = Value::from(t.as_str());
    }
    if let Some(s) = &m.subject {
        d["subjectManifestDigest"] = Value::from(s.as_str());
    }
    d
}

fn image_not_found(env: &Env, repo: &str, id: &ImageId) -> AwsError {
    AwsError::client(
        "ImageNotFoundException",
        format!(
            "The image with imageId {} does not exist within the repository with name '{repo}' in the registry with id '{}'",
            id.describe(),
            env.account
        ),
    )
}

/// The image an identifier names: by tag (checked against the digest, if both are given)
/// or by digest.
fn find<'a>(images: &'a [Image], id: &ImageId) -> Option<&'a Image> {
    match (&id.digest, &id.tag) {
        (d, Some(t)) => images
            .iter()
            .find(|i| i.tags.contains(t))
            .filter(|i| d.as_ref().is_none_or(|d| *d == i.digest)),
        (Some(d), None) => images.iter().find(|i| i.digest == *d),
        (None, None) => None,
    }
}

pub(super) async fn describe(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let repo = repo_param(env, input)?;
    let ids = image_ids(input, "imageIds")?;
    let (tag_status, active) = image_filter(input)?;
    let max = max_results(input, 1000, 100)?;
    let after = next_token(input)?;
    let images = all_images(env, &repo).await?;

    if let Some(ids) = ids {
        if after.is_some() || input.int("maxResults")?.is_some() {
            return Err(invalid_param(
                "imageIds",
                "imageIds cannot be used together with maxResults or nextToken",
            ));
        }
        let mut details: Vec<Value> = Vec::with_capacity(ids.len());
        let mut seen: Vec<&str> = Vec::new();
        for id in &ids {
            if let Some((_, reason)) = id.problem() {
                return Err(invalid_param("imageIds", reason));
            }
            let img = find(&images, id).ok_or_else(|| image_not_found(env, &repo, id))?;
            if !seen.contains(&img.digest.as_str()) {
                seen.push(&img.digest);
                details.push(image_detail(env, &repo, &images, img));
            }
        }
        return Ok(json!({ "imageDetails": details }));
    }

    let selected: Vec<&Image> = images
        .iter()
        .filter(|i| active && tag_status.admits(!i.tags.is_empty()))
        .filter(|i| {
            after
                .as_ref()
                .is_none_or(|a| i.digest.as_str() > a.as_str())
        })
        .collect();
    let page = &selected[..selected.len().min(max)];
    let mut out = json!({
        "imageDetails": page.iter().map(|i| image_detail(env, &repo, &images, i)).collect::<Vec<_>>(),
    });
    if selected.len() > max {
        if let Some(last) = page.last() {
            out["nextToken"] = Value::from(encode_token(&last.digest));
        }
    }
    Ok(out)
}

fn failure(id: &ImageId, code: &str, reason: &str) -> Value {
    json!({ "imageId": id.to_json(), "failureCode": code, "failureReason": reason })
}

/// What one BatchGetImage identifier resolved to.
enum Got {
    Image {
        digest: String,
        media_type: String,
        body: Vec<u8>,
    },
    NotFound,
    Mismatch,
    Invalid,
}

const NOT_FOUND_REASON: &str = "Requested image not found";
const MISMATCH_REASON: &str = "Invalid request parameters: image tag does not match image digest";

pub(super) async fn batch_get(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let repo = repo_param(env, input)?;
    let ids = image_ids(input, "imageIds")?.ok_or_else(|| super::input::required("imageIds"))?;
    // Accepted for compatibility: manifests are returned as pushed (ECR does the same when
    // it cannot convert), so clients check the returned media type.
    let _accepted = input.str_list("acceptedMediaTypes", 1, 100)?;

    let (r, n, ids2) = (repo.clone(), repo.clone(), ids.clone());
    let resolved = env
        .blocking(move |reg| {
            if reg.meta.get_repo(&n)?.is_none() {
                return Err(MetaError::RepoNotFound(n));
            }
            let mut out = Vec::with_capacity(ids2.len());
            for id in &ids2 {
                if id.problem().is_some() {
                    out.push(Got::Invalid);
                    continue;
                }
                let digest = match (&id.digest, &id.tag) {
                    (d, Some(t)) => match reg.meta.resolve_tag(&r, t)? {
                        None => {
                            out.push(Got::NotFound);
                            continue;
                        }
                        Some(actual) if d.as_ref().is_some_and(|d| *d != actual) => {
                            out.push(Got::Mismatch);
                            continue;
                        }
                        Some(actual) => actual,
                    },
                    (Some(d), None) => d.clone(),
                    (None, None) => {
                        out.push(Got::Invalid);
                        continue;
                    }
                };
                out.push(match reg.meta.get_manifest(&r, &digest)? {
                    Some((rec, body)) => Got::Image {
                        digest,
                        media_type: rec.media_type,
                        body,
                    },
                    None => Got::NotFound,
                });
            }
            Ok(out)
        })
        .await?;

    let mut images = Vec::new();
    let mut failures = Vec::new();
    let mut seen: Vec<&ImageId> = Vec::new();
    for (id, got) in ids.iter().zip(resolved) {
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        match got {
            Got::Image {
                digest,
                media_type,
                body,
            } => {
                let image_id = ImageId {
                    digest: Some(digest),
                    tag: id.tag.clone(),
                };
                images.push(json!({
                    "registryId": env.account,
                    "repositoryName": repo,
                    "imageId": image_id.to_json(),
                    "imageManifest": String::from_utf8_lossy(&body),
                    "imageManifestMediaType": media_type,
                }));
            }
            Got::Mismatch => {
                failures.push(failure(id, "ImageTagDoesNotMatchDigest", MISMATCH_REASON));
            }
            Got::Invalid => {
                if let Some((code, reason)) = id.problem() {
                    failures.push(failure(id, code, reason));
                }
            }
            Got::NotFound => failures.push(failure(id, "ImageNotFound", NOT_FOUND_REASON)),
        }
    }
    Ok(json!({ "images": images, "failures": failures }))
}

pub(super) async fn batch_delete(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let repo = repo_param(env, input)?;
    let ids = image_ids(input, "imageIds")?.ok_or_else(|| super::input::required("imageIds"))?;

    let mut failures = Vec::new();
    let mut targets = Vec::new();
    let mut target_ids = Vec::new();
    for id in &ids {
        if let Some((code, reason)) = id.problem() {
            failures.push(failure(id, code, reason));
            continue;
        }
        let target = match (&id.digest, &id.tag) {
            (digest, Some(tag)) => DeleteTarget::Tag {
                tag: tag.clone(),
                digest: digest.clone(),
            },
            (Some(d), None) => DeleteTarget::Digest(d.clone()),
            (None, None) => continue,
        };
        targets.push(target);
        target_ids.push(id);
    }

    let n = repo.clone();
    let outcomes = env
        .blocking(move |reg| reg.meta.ecr_batch_delete(&n, &targets))
        .await?;
    let mut deleted = Vec::new();
    for (id, outcome) in target_ids.into_iter().zip(outcomes) {
        match outcome {
            DeleteOutcome::Removed { digest, tags } => {
                if tags.is_empty() {
                    deleted.push(json!({ "imageDigest": digest }));
                }
                for t in tags {
                    deleted.push(json!({ "imageDigest": digest, "imageTag": t }));
                }
            }
            DeleteOutcome::NotFound => {
                failures.push(failure(id, "ImageNotFound", NOT_FOUND_REASON));
            }
            DeleteOutcome::TagDoesNotMatchDigest => {
                failures.push(failure(id, "ImageTagDoesNotMatchDigest", MISMATCH_REASON));
            }
            DeleteOutcome::ReferencedByManifestList(parents) => {
                failures.push(failure(
                    id,
                    "ImageReferencedByManifestList",
                    &format!(
                        "Requested image referenced by manifest list: [{}]",
                        parents.join(", ")
                    ),
                ));
            }
        }
    }
    if !deleted.is_empty() {
        tracing::info!(repo = %repo, images = deleted.len(), "ecr images deleted");
    }
    Ok(json!({ "imageIds": deleted, "failures": failures }))
}

pub(super) async fn put(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let repo = repo_param(env, input)?;
    let manifest = input.required_str("imageManifest")?;
    env.repo(&repo).await?;
    check_str_len("imageManifest", manifest, 1, 4 * 1024 * 1024)?;
    if manifest.len() > env.reg.cfg.max_manifest_bytes {
        return Err(invalid_param(
            "imageManifest",
            format!(
                "Member must be at most {} bytes long",
                env.reg.cfg.max_manifest_bytes
            ),
        ));
    }
    let media_type = input.str("imageManifestMediaType")?;
    let tag = match input.str("imageTag")? {
        None => None,
        Some(t) => {
            check_str_len("imageTag", t, 1, 300)?;
            Some(
                t.parse::<berth_oci::Tag>()
                    .map_err(|e| invalid_param("imageTag", e))?
                    .as_str()
                    .to_string(),
            )
        }
    };
    let wanted = match input.str("imageDigest")? {
        None => None,
        Some(d) => Some(
            d.parse::<Digest>()
                .map_err(|_| invalid_param("imageDigest", "Invalid image digest"))?,
        ),
    };
    let body = manifest.as_bytes().to_vec();
    let parsed = berth_oci::parse_manifest(media_type, &body).map_err(|e| match e {
        ManifestError::Invalid(m) => invalid_param("imageManifest", m),
        ManifestError::Unsupported(t) => invalid_param(
            "imageManifestMediaType",
            format!("Media type {t} is not supported"),
        ),
        ManifestError::UnknownMediaType(t) => invalid_param(
            "imageManifestMediaType",
            format!("Unknown manifest media type {t}"),
        ),
    })?;
    let digest = match &wanted {
        Some(w) => {
            let actual = Digest::of(w.algorithm(), &body);
            if actual != *w {
                return Err(AwsError::client(
                    "ImageDigestDoesNotMatchException",
                    format!(
                        "Provided image digest '{w}' does not match the digest of the image manifest '{actual}'"
                    ),
                ));
            }
            actual
        }
        None => Digest::sha256_of(&body),
    }
    .to_string();
    let rec = ManifestRecord::from_parsed(&parsed, body.len());

    let (n, d, t) = (repo.clone(), digest.clone(), tag.clone());
    let account = env.account.clone();
    let result = env
        .blocking(move |reg| {
            if reg.meta.get_repo(&n)?.is_none() {
                return Err(MetaError::RepoNotFound(n));
            }
            let exists = reg.meta.get_manifest(&n, &d)?.is_some();
            let tag_target = match &t {
                Some(t) => reg.meta.resolve_tag(&n, t)?,
                None => None,
            };
            if exists && (t.is_none() || tag_target.as_deref() == Some(d.as_str())) {
                return Ok(Err(PutRefused::AlreadyExists));
            }
            match reg
                .meta
                .put_manifest(&n, &d, &rec, &body, t.as_deref(), false)
            {
                Ok(_) => Ok(Ok(rec.media_type)),
                Err(MetaError::BlobUnknown(_)) | Err(MetaError::ManifestRefUnknown(_)) => {
                    let (blobs, children) =
                        reg.meta
                            .ecr_missing_references(&n, &rec.blobs, &rec.children)?;
                    Ok(Err(PutRefused::Missing { blobs, children }))
                }
                Err(e) => Err(e),
            }
        })
        .await?;
    let media_type = match result {
        Ok(m) => m,
        Err(PutRefused::AlreadyExists) => {
            let what = match &tag {
                Some(t) => format!("Image with digest '{digest}' and tag '{t}'"),
                None => format!("Image with digest '{digest}'"),
            };
            return Err(AwsError::client(
                "ImageAlreadyExistsException",
                format!(
                    "{what} already exists in the repository with name '{repo}' in registry with id '{account}'"
                ),
            ));
        }
        Err(PutRefused::Missing { blobs, .. }) if !blobs.is_empty() => {
            return Err(AwsError::client(
                "LayersNotFoundException",
                format!(
                    "Layers with digests '[{}]' required for pushing image into repository with name '{repo}' in registry with id '{account}' do not exist",
                    blobs.join(", ")
                ),
            ));
        }
        Err(PutRefused::Missing { children, .. }) => {
            return Err(AwsError::client(
                "ReferencedImagesNotFoundException",
                format!(
                    "Images with digests '[{}]' referenced by the manifest list do not exist in the repository with name '{repo}' in registry with id '{account}'",
                    children.join(", ")
                ),
            ));
        }
    };
    tracing::info!(repo = %repo, %digest, tag = tag.as_deref().unwrap_or(""), "ecr image put");
    let image_id = ImageId {
        digest: Some(digest),
        tag,
    };
    let mut image = Map::new();
    image.insert("registryId".into(), Value::from(env.account.as_str()));
    image.insert("repositoryName".into(), Value::from(repo));
    image.insert("imageId".into(), image_id.to_json());
    image.insert("imageManifest".into(), Value::from(manifest));
    image.insert("imageManifestMediaType".into(), Value::from(media_type));
    Ok(json!({ "image": image }))
}

/// Why a PutImage was refused after validation.
enum PutRefused {
    AlreadyExists,
    Missing {
        blobs: Vec<String>,
        children: Vec<String>,
    },
}
