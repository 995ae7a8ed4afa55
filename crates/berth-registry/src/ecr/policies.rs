//! Lifecycle policies: Put/Get/DeleteLifecyclePolicy and their previews.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_aws::AwsError;
use serde_json::{json, Value};

use super::input::{
    check_str_len, encode_token, image_ids, invalid_param, next_token, repository_name,
    tag_status_filter, Input,
};
use super::{timestamp, Env};
use crate::lifecycle::{self, ImageInfo, PolicyError};
use crate::meta::now_ms;

/// A finished lifecycle policy preview of one repository.
pub(super) struct Preview {
    /// `created_at` of the repository it was computed for (a recreated repository with the
    /// same name has no preview).
    repo_created_at: u64,
    text: String,
    results: Vec<PreviewResult>,
}

#[derive(Clone)]
struct PreviewResult {
    digest: String,
    tags: Vec<String>,
    pushed_at: u64,
    rule_priority: u32,
}

type Previews = Mutex<HashMap<String, Preview>>;

pub(super) fn forget_preview(previews: &Previews, repo: &str) {
    previews
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(repo);
}

fn repo_param(env: &Env, input: &Input<'_>) -> Result<String, AwsError> {
    env.check_registry(input)?;
    repository_name("repositoryName", input.required_str("repositoryName")?)
}

fn policy_error(e: &PolicyError) -> AwsError {
    invalid_param(
        "LifecyclePolicyText",
        format!("Lifecycle policy validation failure: {}", e.detail()),
    )
}

/// The `lifecyclePolicyText` member, validated; `None` when absent.
fn policy_text<'a>(input: &Input<'a>) -> Result<Option<&'a str>, AwsError> {
    let Some(text) = input.str("lifecyclePolicyText")? else {
        return Ok(None);
    };
    check_str_len("lifecyclePolicyText", text, 100, 30720)?;
    lifecycle::parse(text).map_err(|e| policy_error(&e))?;
    Ok(Some(text))
}

fn policy_not_found(env: &Env, repo: &str) -> AwsError {
    AwsError::client(
        "LifecyclePolicyNotFoundException",
        format!(
            "Lifecycle policy does not exist for the repository with name '{repo}' in the registry with id '{}'",
            env.account
        ),
    )
}

pub(super) async fn put(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let repo = repo_param(env, input)?;
    let text = policy_text(input)?.ok_or_else(|| super::input::required("lifecyclePolicyText"))?;
    let (n, t) = (repo.clone(), text.to_string());
    env.blocking(move |reg| {
        reg.meta.update_repo(&n, |r| {
            r.lifecycle_policy = Some(t);
            r.lifecycle_policy_updated_at = Some(now_ms());
            Ok(())
        })
    })
    .await?;
    tracing::info!(repo = %repo, "ecr lifecycle policy set");
    Ok(json!({
        "registryId": env.account,
        "repositoryName": repo,
        "lifecyclePolicyText": text,
    }))
}

fn policy_json(env: &Env, repo: &str, text: &str, evaluated: Option<u64>) -> Value {
    let mut out = json!({
        "registryId": env.account,
        "repositoryName": repo,
        "lifecyclePolicyText": text,
    });
    if let Some(t) = evaluated {
        out["lastEvaluatedAt"] = timestamp(t);
    }
    out
}

pub(super) async fn get(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let repo = repo_param(env, input)?;
    let rec = env.repo(&repo).await?;
    let text = rec
        .lifecycle_policy
        .as_deref()
        .ok_or_else(|| policy_not_found(env, &repo))?;
    Ok(policy_json(
        env,
        &repo,
        text,
        rec.lifecycle_policy_updated_at,
    ))
}

pub(super) async fn delete(env: &Env, input: &Input<'_>) -> Result<Value, AwsError> {
    let repo = repo_param(env, input)?;
    let n = repo.clone();
    let removed = env
        .blocking(move |reg| {
            let mut removed = None;
            reg.meta.update_repo(&n, |r| {
                if let Some(text) = r.lifecycle_policy.take() {
                    removed = Some((text, r.lifecycle_policy_updated_at.take()));
                }
                Ok(())
            })?;
            Ok(removed)
        })
        .await?;
    let (text, evaluated) = removed.ok_or_else(|| policy_not_found(env, &repo))?;
    tracing::info!(repo = %repo, "ecr lifecycle policy deleted");
    Ok(policy_json(env, &repo, &text, evaluated))
}

pub(super) async fn start_preview(
    env: &Env,
    previews: &Previews,
    input: &Input<'_>,
) -> Result<Value, AwsError> {
    let repo = repo_param(env, input)?;
    let given = policy_text(input)?;
    let n = repo.clone();
    let (rec, images) = env
        .blocking(move |reg| {
            let Some(rec) = reg.meta.get_repo(&n)? else {
                return Err(crate::meta::MetaError::RepoNotFound(n));
            };
            let images = reg.meta.list_images(&n)?;
            Ok((rec, images))
        })
        .await?;
    let text = match given {
        Some(t) => t.to_string(),
        None => rec
            .lifecycle_policy
            .clone()
            .ok_or_else(|| policy_not_found(env, &repo))?,
    };
    // A stored policy was validated when it was put.
    let policy = lifecycle::parse(&text).map_err(|e| policy_error(&e))?;
    let infos = ImageInfo::from_images(&images);
    let results = lifecycle::evaluate(&policy, &infos, now_ms())
        .into_iter()
        .filter_map(|e| {
            infos
                .iter()
                .find(|i| i.digest == e.digest)
                .map(|i| PreviewResult {
                    digest: e.digest.clone(),
                    tags: i.tags.clone(),
                    pushed_at: i.pushed_at_ms,
                    rule_priority: e.rule_priority,
                })
        })
        .collect();
    previews.lock().unwrap_or_else(|e| e.into_inner()).insert(
        repo.clone(),
        Preview {
            repo_created_at: rec.created_at,
            text: text.clone(),
            results,
        },
    );
    Ok(json!({
        "registryId": env.account,
        "repositoryName": repo,
        "lifecyclePolicyText": text,
        "status": "COMPLETE",
    }))
}

pub(super) async fn get_preview(
    env: &Env,
    previews: &Previews,
    input: &Input<'_>,
) -> Result<Value, AwsError> {
    let repo = repo_param(env, input)?;
    let ids = image_ids(input, "imageIds")?;
    let tag_status = tag_status_filter(input.object("filter")?.as_ref())?;
    let max = super::input::max_results(input, 100, 100)?;
    let start = match next_token(input)? {
        None => 0,
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| invalid_param("nextToken", "Invalid NextToken"))?,
    };
    if let Some(ids) = &ids {
        if let Some((_, reason)) = ids.iter().find_map(|i| i.problem()) {
            return Err(invalid_param("imageIds", reason));
        }
    }
    let rec = env.repo(&repo).await?;

    let (text, total, selected) = {
        let map = previews.lock().unwrap_or_else(|e| e.into_inner());
        let preview = map
            .get(&repo)
            .filter(|p| p.repo_created_at == rec.created_at)
            .ok_or_else(|| {
                AwsError::client(
                    "LifecyclePolicyPreviewNotFoundException",
                    format!(
                        "There is no lifecycle policy preview for the repository with name '{repo}' in the registry with id '{}'",
                        env.account
                    ),
                )
            })?;
        let selected: Vec<PreviewResult> = preview
            .results
            .iter()
            .filter(|r| tag_status.admits(!r.tags.is_empty()))
            .filter(|r| {
                ids.as_ref().is_none_or(|ids| {
                    ids.iter().any(|id| {
                        id.digest.as_ref().is_none_or(|d| *d == r.digest)
                            && id.tag.as_ref().is_none_or(|t| r.tags.contains(t))
                    })
                })
            })
            .cloned()
            .collect();
        (preview.text.clone(), preview.results.len(), selected)
    };
    let page: Vec<Value> = selected
        .iter()
        .skip(start)
        .take(max)
        .map(|r| {
            let mut v = json!({
                "imageDigest": r.digest,
                "imagePushedAt": timestamp(r.pushed_at),
                "action": { "type": "EXPIRE" },
                "appliedRulePriority": r.rule_priority,
            });
            if !r.tags.is_empty() {
                v["imageTags"] = json!(r.tags);
            }
            v
        })
        .collect();
    let mut out = json!({
        "registryId": env.account,
        "repositoryName": repo,
        "lifecyclePolicyText": text,
        "status": "COMPLETE",
        "previewResults": page,
        "summary": { "expiringImageTotalCount": total },
    });
    if start.saturating_add(max) < selected.len() {
        out["nextToken"] = Value::from(encode_token(&(start + max).to_string()));
    }
    Ok(out)
}
