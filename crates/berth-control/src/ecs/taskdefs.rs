//! Task definition families and revisions.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    client_error, includes, invalid_param, page_params, paginate, parse, parse_tags, with_token,
    Ctx,
};
use crate::control::{now, State};
use crate::model::{tags_json, TaskDefRecord};
use crate::store::Durability;
use crate::taskdef;
use berth_aws::AwsError;

pub(super) fn register(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let spec = taskdef::validate_register(&input).map_err(AwsError::from)?;
    let tags = parse_tags(spec.tags())?;
    let family = spec.family().to_string();
    c.control.write(Durability::Immediate, |tx| {
        let revision = tx
            .state
            .region(c.region)
            .and_then(|r| r.taskdefs.get(&family))
            .and_then(|m| m.keys().next_back().copied())
            .unwrap_or(0)
            + 1;
        let rec = TaskDefRecord {
            arn: c.arn(&format!("task-definition/{family}:{revision}")),
            family: family.clone(),
            revision,
            status: "ACTIVE".into(),
            registered_at: now(),
            deregistered_at: None,
            registered_by: Some(format!("arn:aws:iam::{}:root", c.account)),
            spec,
        };
        tx.put_taskdef(c.region, rec.clone());
        if !tags.is_empty() {
            tx.set_tags(&rec.arn, tags.clone());
        }
        if rec
            .spec
            .supports(crate::taskdef::model::Compatibility::Fargate)
        {
            // The platform's agents pull its images before a task asks for them.
            let hosts: Vec<String> = tx
                .state
                .region(c.region)
                .map(|r| {
                    r.instances
                        .values()
                        .flat_map(|m| m.values())
                        .filter(|i| super::fargate::is_platform(i) && i.status == "ACTIVE")
                        .map(|i| i.arn.clone())
                        .collect()
                })
                .unwrap_or_default();
            for h in hosts {
                tx.touch(&h);
            }
        }
        Ok(json!({ "taskDefinition": rec.output(), "tags": tags_json(&tags) }))
    })
}

/// Resolves `family`, `family:revision` or an ARN. A bare family names its latest ACTIVE
/// revision.
pub(crate) fn resolve(s: &State, region: &str, reference: &str) -> Result<TaskDefRecord, AwsError> {
    let name = if reference.starts_with("arn:") {
        reference
            .split_once(":task-definition/")
            .map(|(_, n)| n)
            .ok_or_else(|| invalid_param(format!("Invalid task definition ARN: {reference}")))?
    } else {
        reference
    };
    let missing = || client_error("Unable to describe task definition.");
    let revs = s
        .region(region)
        .and_then(|r| {
            let fam = name.split_once(':').map(|(f, _)| f).unwrap_or(name);
            r.taskdefs.get(fam)
        })
        .ok_or_else(missing)?;
    match name.split_once(':') {
        Some((_, rev)) => {
            let rev: u32 = rev
                .parse()
                .map_err(|_| client_error(format!("Invalid revision number. Number: {rev}")))?;
            revs.get(&rev).cloned().ok_or_else(missing)
        }
        None => revs
            .values()
            .rev()
            .find(|t| t.status == "ACTIVE")
            .cloned()
            .ok_or_else(missing),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DescribeInput {
    task_definition: String,
    include: Option<Vec<String>>,
}

pub(super) fn describe(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DescribeInput = parse(input)?;
    c.control.read(|s| {
        let t = resolve(s, c.region, &i.task_definition)?;
        let mut out = json!({ "taskDefinition": t.output() });
        if includes(&i.include, "TAGS") {
            out["tags"] = tags_json(s.tags.get(&t.arn).map(|x| x.as_slice()).unwrap_or(&[]));
        }
        Ok(out)
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeregisterInput {
    task_definition: String,
}

pub(super) fn deregister(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DeregisterInput = parse(input)?;
    if !i.task_definition.contains(':') || i.task_definition.ends_with(':') {
        return Err(client_error(
            "The specified task definition must include a revision (family:revision or a full ARN).",
        ));
    }
    c.control.write(Durability::Immediate, |tx| {
        let mut t = resolve(tx.state, c.region, &i.task_definition)?;
        if t.status == "ACTIVE" {
            t.status = "INACTIVE".into();
            t.deregistered_at = Some(now());
            tx.put_taskdef(c.region, t.clone());
        }
        Ok(json!({ "taskDefinition": t.output() }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteInput {
    task_definitions: Vec<String>,
}

pub(super) fn delete(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: DeleteInput = parse(input)?;
    if i.task_definitions.is_empty() || i.task_definitions.len() > 10 {
        return Err(invalid_param(
            "taskDefinitions must name 1 to 10 task definitions",
        ));
    }
    c.control.write(Durability::Immediate, |tx| {
        let mut done = Vec::new();
        let mut failures = Vec::new();
        for r in &i.task_definitions {
            if !r.contains(':') || r.ends_with(':') {
                failures.push(json!({"arn": r, "reason": "The specified task definition must include a revision."}));
                continue;
            }
            match resolve(tx.state, c.region, r) {
                Err(_) => failures.push(json!({"arn": r, "reason": "The specified task definition does not exist."})),
                Ok(t) if t.status == "ACTIVE" => failures.push(json!({
                    "arn": t.arn,
                    "reason": "The specified task definition is still in ACTIVE status. Please deregister the target and try again."
                })),
                Ok(mut t) => {
                    t.status = "DELETE_IN_PROGRESS".into();
                    tx.put_taskdef(c.region, t.clone());
                    done.push(t.output());
                }
            }
        }
        Ok(json!({"taskDefinitions": done, "failures": failures}))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListInput {
    family_prefix: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

pub(super) fn list(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: ListInput = parse(input)?;
    let status = i.status.unwrap_or_else(|| "ACTIVE".into());
    if !["ACTIVE", "INACTIVE", "DELETE_IN_PROGRESS"].contains(&status.as_str()) {
        return Err(invalid_param(format!("Invalid status: {status}")));
    }
    let desc = match i.sort.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(o) => return Err(invalid_param(format!("Invalid sort order: {o}"))),
    };
    let (n, after) = page_params(i.max_results, i.next_token.as_deref(), 100)?;
    let mut items: Vec<(String, String)> = c.control.read(|s| {
        s.region(c.region)
            .map(|r| {
                r.taskdefs
                    .iter()
                    .filter(|(f, _)| i.family_prefix.as_deref().map(|p| *f == p).unwrap_or(true))
                    .flat_map(|(_, revs)| revs.values())
                    .filter(|t| t.status == status)
                    .map(|t| {
                        // Keys sort by family, then numerically by revision (either way).
                        let rev = if desc {
                            u32::MAX - t.revision
                        } else {
                            t.revision
                        };
                        (format!("{}\u{0}{rev:010}", t.family), t.arn.clone())
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    if desc {
        // Families descending too.
        items.sort_by(|a, b| {
            let (fa, ra) = a.0.split_once('\u{0}').unwrap_or((&a.0, ""));
            let (fb, rb) = b.0.split_once('\u{0}').unwrap_or((&b.0, ""));
            fb.cmp(fa).then(ra.cmp(rb))
        });
        // Re-key so that pagination follows this order.
        items = items
            .into_iter()
            .enumerate()
            .map(|(idx, (_, v))| (format!("{idx:010}"), v))
            .collect();
    }
    let (arns, token) = paginate(items, n, after.as_deref());
    Ok(with_token(json!({ "taskDefinitionArns": arns }), token))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListFamiliesInput {
    family_prefix: Option<String>,
    status: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

pub(super) fn list_families(c: &Ctx<'_>, input: Value) -> Result<Value, AwsError> {
    let i: ListFamiliesInput = parse(input)?;
    let status = i.status.unwrap_or_else(|| "ALL".into());
    if !["ACTIVE", "INACTIVE", "ALL"].contains(&status.as_str()) {
        return Err(invalid_param(format!("Invalid status: {status}")));
    }
    let (n, after) = page_params(i.max_results, i.next_token.as_deref(), 100)?;
    let items: Vec<(String, String)> = c.control.read(|s| {
        s.region(c.region)
            .map(|r| {
                r.taskdefs
                    .iter()
                    .filter(|(f, _)| {
                        i.family_prefix
                            .as_deref()
                            .map(|p| f.starts_with(p))
                            .unwrap_or(true)
                    })
                    .filter(|(_, revs)| {
                        let active = revs.values().any(|t| t.status == "ACTIVE");
                        let inactive = revs.values().any(|t| t.status == "INACTIVE");
                        match status.as_str() {
                            "ACTIVE" => active,
                            "INACTIVE" => !active && inactive,
                            _ => active || inactive,
                        }
                    })
                    .map(|(f, _)| (f.clone(), f.clone()))
                    .collect()
            })
            .unwrap_or_default()
    });
    let (families, token) = paginate(items, n, after.as_deref());
    Ok(with_token(json!({ "families": families }), token))
}
