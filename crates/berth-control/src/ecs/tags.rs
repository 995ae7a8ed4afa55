//! Resource tags of clusters, services, task definitions, tasks, container instances and
//! capacity providers.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{client_error, cluster_not_found, invalid_param, parse, parse_tags, Ctx};
use crate::control::State;
use crate::model::tags_json;
use crate::store::Durability;
use crate::taskdef::model::Tag as WireTag;
use berth_aws::AwsError;

/// Whether `arn` names an existing resource of this region and account.
fn exists(s: &State, c: &Ctx<'_>, arn: &str) -> Result<bool, AwsError> {
    let prefix = format!("arn:aws:ecs:{}:{}:", c.region, c.account);
    let Some(resource) = arn.strip_prefix(&prefix) else {
        return Err(invalid_param(format!("Invalid resource ARN: {arn}")));
    };
    let Some(r) = s.region(c.region) else {
        return Ok(false);
    };
    let (kind, rest) = resource.split_once('/').unwrap_or((resource, ""));
    let mut parts = rest.splitn(2, '/');
    let (a, b) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    Ok(match kind {
        "cluster" => r
            .clusters
            .get(a)
            .map(|x| x.status == "ACTIVE")
            .unwrap_or(false),
        "task-definition" => a
            .split_once(':')
            .and_then(|(f, rev)| Some((f, rev.parse::<u32>().ok()?)))
            .and_then(|(f, rev)| r.taskdefs.get(f)?.get(&rev))
            .map(|t| t.status != "DELETE_IN_PROGRESS")
            .unwrap_or(false),
        "task" => r.tasks.get(a).map(|m| m.contains_key(b)).unwrap_or(false),
        "container-instance" => r
            .instances
            .get(a)
            .map(|m| m.contains_key(b))
            .unwrap_or(false),
        "service" => r
            .services
            .get(a)
            .and_then(|m| m.get(b))
            .map(|x| x.status != "INACTIVE")
            .unwrap_or(false),
        "capacity-provider" => r
            .capacity_providers
            .get(a)
            .map(|p| p.status == "ACTIVE")
            .unwrap_or(false),
        _ => return Err(invalid_param(format!("Invalid resource ARN: {arn}"))),
    })
}

fn not_found() -> AwsError {
    AwsError::client(
        "ResourceNotFoundException",
        "The specified resource could not be found.",
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TagInput {
    resource_arn: String,
    tags: Vec<WireTag>,
}

pub(super) fn tag(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: TagInput = parse(input)?;
    let new = parse_tags(&i.tags)?;
    c.control.write(Durability::Immediate, |tx| {
        if !exists(tx.state, c, &i.resource_arn)? {
            return Err(not_found());
        }
        let mut tags = tx
            .state
            .tags
            .get(&i.resource_arn)
            .cloned()
            .unwrap_or_default();
        for t in new {
            match tags.iter_mut().find(|x| x.key == t.key) {
                Some(x) => x.value = t.value,
                None => tags.push(t),
            }
        }
        if tags.len() > 50 {
            return Err(invalid_param("Too many tags: at most 50 per resource"));
        }
        tx.set_tags(&i.resource_arn, tags);
        Ok(json!({}))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UntagInput {
    resource_arn: String,
    tag_keys: Vec<String>,
}

pub(super) fn untag(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: UntagInput = parse(input)?;
    c.control.write(Durability::Immediate, |tx| {
        if !exists(tx.state, c, &i.resource_arn)? {
            return Err(not_found());
        }
        let mut tags = tx
            .state
            .tags
            .get(&i.resource_arn)
            .cloned()
            .unwrap_or_default();
        tags.retain(|t| !i.tag_keys.contains(&t.key));
        tx.set_tags(&i.resource_arn, tags);
        Ok(json!({}))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListInput {
    resource_arn: String,
}

pub(super) fn list(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: ListInput = parse(input)?;
    c.control.read(|s| {
        if !exists(s, c, &i.resource_arn)? {
            // ResourceNotFoundException is not an error of ListTagsForResource in the model.
            return Err(if i.resource_arn.contains(":cluster/") {
                cluster_not_found()
            } else {
                client_error("The specified resource could not be found.")
            });
        }
        let tags = s.tags.get(&i.resource_arn).cloned().unwrap_or_default();
        Ok(json!({ "tags": tags_json(&tags) }))
    })
}
