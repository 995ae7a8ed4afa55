//! Repositories: create, describe, delete, settings, resource tags, authorization tokens.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use berth_aws::{Arn, AwsError};
use serde_json::{json, Value};

use super::input::{
    check_str_len, encode_token, invalid_param, max_results, next_token, repository_name,
    resource_tags, Input,
};
use super::{exclusion_filters_json, timestamp, Env};
use crate::meta::{RepoRecord, TagMutability};

/// Most resource tags a repository may carry.
const MAX_RESOURCE_TAGS: usize = 50;
const MUTABILITY_VALUES: &str =
    "[MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION, MUTABLE_WITH_EXCLUSION]";

/// `imageTagMutability` and `imageTagMutabilityExclusionFilters`, checked together: the
/// filters are required by the `*_WITH_EXCLUSION` settings and refused by the others.
fn tag_mutability(
    input: &Input<'_>,
    required: bool,
) -> Result<Option<(TagMutability, Vec<String>)>, AwsError> {
    let mutability = match input.str("imageTagMutability")? {
        None if required => return Err(super::input::required("imageTagMutability")),
        None => None,
        Some(s) => Some(TagMutability::parse(s).ok_or_else(|| {
            invalid_param(
                "imageTagMutability",
                format!("Member must satisfy enum value set: {MUTABILITY_VALUES}"),
            )
        })?),
    };
    let filters = match input.object_list("imageTagMutabilityExclusionFilters", 1, 5)? {
        None => None,
        Some(items) => {
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                let kind = item.required_str("filterType")?;
                if kind != "WILDCARD" {
                    return Err(invalid_param(
                        "imageTagMutabilityExclusionFilters.filterType",
                        "Member must satisfy enum value set: [WILDCARD]",
                    ));
                }
                let filter = item.required_str("filter")?;
                let valid = (1..=128).contains(&filter.len())
                    && filter
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._*-".contains(&b));
                if !valid {
                    return Err(invalid_param(
                        "imageTagMutabilityExclusionFilters.filter",
                        "Member must satisfy regular expression pattern: ^[0-9a-zA-Z._*-]{1,128}$",
                    ));
                }
                if out.iter().any(|f| f == filter) {
                    return Err(invalid_param(
                        "imageTagMutabilityExclusionFilters",
                        format!("Duplicate filter '{filter}'"),
                    ));
                }
                out.push(filter.to_string());
            }
            Some(out)
        }
    };
    match (mutability, filters) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(invalid_param(
            "imageTagMutabilityExclusionFilters",
            "imageTagMutabilityExclusionFilters can only be specified with imageTagMutability MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION",
        )),
        (Some(m @ (TagMutability::MutableWithExclusion | TagMutability::ImmutableWithExclusion)), f) => {
            match f {
                Some(f) => Ok(Some((m, f))),
                None => Err(invalid_param(
                    "imageTagMutabilityExclusionFilters",
                    format!(
                        "imageTagMutabilityExclusionFilters must be specified when imageTagMutability is {}",
                        m.as_str()
                    ),
                )),
            }
        }
        (Some(m), Some(_)) => Err(invalid_param(
            "imageTagMutabilityExclusionFilters",
            format!(
                "imageTagMutabilityExclusionFilters cannot be specified when imageTagMutability is {}",
                m.as_str()
            ),
        )),
        (Some(m), None) => Ok(Some((m, Vec::new()))),
    }
}

fn scan_on_push(cfg: &Input<'_>) -> Result<bool, AwsError> {
    Ok(cfg.bool("scanOnPush")?.unwrap_or(false))
}

/// `encryptionConfiguration`: type and optional KMS key.
fn encryption(input: &Input<'_>) -> Result<Option<(String, Option<String>)>, AwsError> {
    let Some(cfg) = input.object("encryptionConfiguration")? else {
        return Ok(None);
    };
    let kind = cfg.required_str("encryptionType")?;
    if !matches!(kind, "AES256" | "KMS" | "KMS_DSSE") {
        return Err(invalid_param(
            "encryptionConfiguration.encryptionType",
            "Member must satisfy enum value set: [AES256, KMS, KMS_DSSE]",
        ));
    }
    let key = cfg.str("kmsKey")?;
    if let Some(k) = key {
        check_str_len("encryptionConfiguration.kmsKey", k, 1, 2048)?;
        if kind == "AES256" {
            return Err(invalid_param(
                "encryptionConfiguration",
                "kmsKey can only be specified when encryptionType is KMS or KMS_DSSE",
            ));
        }
    }
    Ok(Some((kind.to_string(), key.map(str::to_string))))
}

fn too_many_tags() -> AwsError {
    AwsError::client(
        "TooManyTagsException",
        format!("A repository can have at most {MAX_RESOURCE_TAGS} tags"),
    )
}

pub(super) async fn create(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    env.check_registry(input)?;
    let name = repository_name("repositoryName", input.required_str("repositoryName")?)?;
    let mutability = tag_mutability(input, false)?;
    let scan = input.object("imageScanningConfiguration")?;
    let encryption = encryption(input)?;
    let tags = resource_tags(input)?.unwrap_or_default();
    if tags.len() > MAX_RESOURCE_TAGS {
        return Err(too_many_tags());
    }

    let mut rec = RepoRecord::new();
    if let Some((m, filters)) = mutability {
        rec.tag_mutability = m;
        rec.mutability_exclusions = filters;
    }
    if let Some(scan) = scan {
        rec.scan_on_push = scan_on_push(&scan)?;
    }
    if let Some((kind, key)) = encryption {
        rec.encryption_type = Some(kind);
        rec.kms_key = key;
    }
    rec.resource_tags = tags.into_iter().collect();
    let (n, r) = (name.clone(), rec.clone());
    env.blocking(move |reg| reg.meta.create_repo(&n, &r))
        .await?;
    tracing::info!(repo = %name, "ecr repository created");
    Ok(json!({ "repository": env.repository_json(&name, &rec) }))
}

pub(super) async fn describe(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    env.check_registry(input)?;
    let names = input.str_list("repositoryNames", 1, 100)?;
    let token = next_token(input)?;
    let max = max_results(input, 1000, 100)?;
    if let Some(names) = names {
        if token.is_some() || input.int("maxResults")?.is_some() {
            return Err(invalid_param(
                "repositoryNames",
                "repositoryNames cannot be used together with maxResults or nextToken",
            ));
        }
        let mut wanted: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            let n = repository_name("repositoryNames", n)?;
            if !wanted.contains(&n) {
                wanted.push(n);
            }
        }
        let found = env
            .blocking(move |reg| {
                wanted
                    .into_iter()
                    .map(|n| reg.meta.get_repo(&n).map(|r| (n, r)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut repos = Vec::with_capacity(found.len());
        for (name, rec) in found {
            let rec = rec.ok_or_else(|| env.repo_not_found(&name))?;
            repos.push(env.repository_json(&name, &rec));
        }
        return Ok(json!({ "repositories": repos }));
    }
    let mut page = env
        .blocking(move |reg| reg.meta.list_repos(token.as_deref(), max + 1))
        .await?;
    let more = page.len() > max;
    page.truncate(max);
    let mut out = json!({
        "repositories": page.iter().map(|(n, r)| env.repository_json(n, r)).collect::<Vec<_>>(),
    });
    if more {
        if let Some((last, _)) = page.last() {
            out["nextToken"] = Value::from(encode_token(last));
        }
    }
    Ok(out)
}

pub(super) async fn delete(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    env.check_registry(input)?;
    let name = repository_name("repositoryName", input.required_str("repositoryName")?)?;
    let force = input.bool("force")?.unwrap_or(false);
    let n = name.clone();
    let (rec, images) = env
        .blocking(move |reg| reg.meta.delete_repo(&n, force))
        .await?;
    tracing::info!(repo = %name, images, force, "ecr repository deleted");
    Ok(json!({ "repository": env.repository_json(&name, &rec) }))
}

pub(super) async fn put_tag_mutability(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    env.check_registry(input)?;
    let name = repository_name("repositoryName", input.required_str("repositoryName")?)?;
    let Some((mutability, filters)) = tag_mutability(input, true)? else {
        return Err(super::input::required("imageTagMutability"));
    };
    let n = name.clone();
    let rec = env
        .blocking(move |reg| {
            reg.meta.update_repo(&n, |r| {
                r.tag_mutability = mutability;
                r.mutability_exclusions = filters;
                Ok(())
            })
        })
        .await?;
    let mut out = json!({
        "registryId": env.account,
        "repositoryName": name,
        "imageTagMutability": rec.tag_mutability.as_str(),
    });
    if !rec.mutability_exclusions.is_empty() {
        out["imageTagMutabilityExclusionFilters"] =
            exclusion_filters_json(&rec.mutability_exclusions);
    }
    Ok(out)
}

pub(super) async fn put_scanning(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    env.check_registry(input)?;
    let name = repository_name("repositoryName", input.required_str("repositoryName")?)?;
    let cfg = input
        .object("imageScanningConfiguration")?
        .ok_or_else(|| super::input::required("imageScanningConfiguration"))?;
    let scan = scan_on_push(&cfg)?;
    let n = name.clone();
    let rec = env
        .blocking(move |reg| {
            reg.meta.update_repo(&n, |r| {
                r.scan_on_push = scan;
                Ok(())
            })
        })
        .await?;
    Ok(json!({
        "registryId": env.account,
        "repositoryName": name,
        "imageScanningConfiguration": { "scanOnPush": rec.scan_on_push },
    }))
}

/// The repository a `resourceArn` names, which must be one of this registry's.
fn arn_repository(env: &Env, input: &Input<'_>) -> Result<String, AwsError> {
    let raw = input.required_str("resourceArn")?;
    let bad = || invalid_param("resourceArn", "Invalid ARN");
    let arn: Arn = raw.parse().map_err(|_| bad())?;
    let (kind, id) = arn.resource_type_and_id();
    let name = match (arn.service.as_str(), kind, id) {
        ("ecr", "repository", Some(name)) if arn.resource.starts_with("repository/") => name,
        _ => return Err(bad()),
    };
    let name = repository_name("resourceArn", name).map_err(|_| bad())?;
    if arn.account != env.account {
        return Err(env.repo_not_found(&name));
    }
    Ok(name)
}

fn tags_json(tags: &BTreeMap<String, String>) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({ "Key": k, "Value": v }))
            .collect(),
    )
}

pub(super) async fn tag_resource(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let name = arn_repository(env, input)?;
    let tags = resource_tags(input)?.ok_or_else(|| super::input::required("tags"))?;
    let n = name.clone();
    let too_many = env
        .blocking(move |reg| {
            let mut too_many = false;
            reg.meta.update_repo(&n, |r| {
                let mut merged = r.resource_tags.clone();
                merged.extend(tags);
                if merged.len() > MAX_RESOURCE_TAGS {
                    too_many = true;
                } else {
                    r.resource_tags = merged;
                }
                Ok(())
            })?;
            Ok(too_many)
        })
        .await?;
    if too_many {
        return Err(too_many_tags());
    }
    Ok(json!({}))
}

pub(super) async fn untag_resource(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let name = arn_repository(env, input)?;
    let keys: Vec<String> = input
        .str_list("tagKeys", 0, usize::MAX)?
        .ok_or_else(|| super::input::required("tagKeys"))?
        .into_iter()
        .map(|k| super::input::check_tag_key(k).map(|()| k.to_string()))
        .collect::<Result<_, _>>()?;
    env.blocking(move |reg| {
        reg.meta.update_repo(&name, |r| {
            for k in &keys {
                r.resource_tags.remove(k);
            }
            Ok(())
        })
    })
    .await?;
    Ok(json!({}))
}

pub(super) async fn list_tags(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let name = arn_repository(env, input)?;
    let rec = env.repo(&name).await?;
    Ok(json!({ "tags": tags_json(&rec.resource_tags) }))
}

pub(super) fn authorization_token(
    env: &Env,
    proxy_endpoint: &str,
    input: &Input<'_>,
) -> Result<Value, AwsError> {
    let ids = input.str_list("registryIds", 1, 10)?;
    if let Some(ids) = &ids {
        for id in ids {
            if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid_param(
                    "registryIds",
                    "must satisfy regular expression '[0-9]{12}'",
                ));
            }
        }
    }
    let (password, expires) = env.reg.auth.ecr_password();
    let token = STANDARD.encode(format!("AWS:{password}"));
    let entry = json!({
        "authorizationToken": token,
        "expiresAt": timestamp(expires.saturating_mul(1000)),
        "proxyEndpoint": proxy_endpoint,
    });
    let count = ids.map_or(1, |ids| ids.len());
    Ok(json!({ "authorizationData": vec![entry; count] }))
}
