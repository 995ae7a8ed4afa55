//! ECR lifecycle policies: parsing with ECR's validation rules, evaluation, and the applier
//! that deletes what a repository's policy expires.
//!
//! [`parse`] and [`evaluate`] are pure; [`apply_lifecycle_policies`] is the only part that
//! touches the store.
//!
//! Evaluation follows ECR's documented rules:
//! - rules run in ascending `rulePriority`; an image is expired by exactly one or zero rules;
//! - an image that matches the tag selection of a rule can never be expired by a rule with a
//!   lower priority (a higher number), but lower rules still *count* it: an
//!   `imageCountMoreThan` rule ranks every image it selects, including ones an earlier rule
//!   selected or expired, and then only expires those no earlier rule selected;
//! - `tagPrefixList` / `tagPatternList` select an image when *every* prefix / pattern matches
//!   at least one of its tags;
//! - `imageCountMoreThan N` keeps the N most recently pushed selected images and expires the
//!   rest; `sinceImagePushed N days` expires selected images pushed more than N days ago;
//! - an image referenced by a manifest list (an index in the same repository) is never
//!   expired while the list exists.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::meta::{now_ms, wildcard_match, Image};
use crate::Registry;

/// Most `*` wildcards a `tagPatternList` entry may contain.
pub const MAX_WILDCARDS: usize = 4;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// ECR's integers in policies are 32-bit.
const MAX_INT: u64 = i32::MAX as u64;

/// Why a lifecycle policy was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not a JSON object.
    #[error("lifecycle policy is not a json object")]
    Unparseable,
    /// The policy breaks a rule; the detail is worded as ECR words it.
    #[error("lifecycle policy validation failure: {0}")]
    Invalid(String),
}

impl PolicyError {
    /// The part of ECR's message after `Lifecycle policy validation failure: `.
    pub fn detail(&self) -> &str {
        match self {
            PolicyError::Unparseable => "Could not map policyString into LifecyclePolicy.",
            PolicyError::Invalid(d) => d,
        }
    }
}

fn invalid(detail: impl Into<String>) -> PolicyError {
    PolicyError::Invalid(detail.into())
}

/// Which images a rule looks at, by whether they have tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

impl TagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TagStatus::Tagged => "tagged",
            TagStatus::Untagged => "untagged",
            TagStatus::Any => "any",
        }
    }
}

/// The tag filter of a `tagged` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    /// `untagged` and `any` rules.
    None,
    /// Every prefix must start at least one tag.
    Prefixes(Vec<String>),
    /// Every pattern (with `*` wildcards) must match at least one whole tag.
    Patterns(Vec<String>),
}

/// The count criterion of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Keep the N most recently pushed images, expire the rest.
    ImageCountMoreThan(u32),
    /// Expire images pushed more than N days ago.
    SinceImagePushedDays(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    pub description: Option<String>,
    pub tag_status: TagStatus,
    pub tag_filter: TagFilter,
    pub count: Count,
}

impl Rule {
    /// Whether the rule's tag selection matches the image.
    pub fn selects(&self, tags: &[String]) -> bool {
        match self.tag_status {
            TagStatus::Any => true,
            TagStatus::Untagged => tags.is_empty(),
            TagStatus::Tagged => match &self.tag_filter {
                TagFilter::None => !tags.is_empty(),
                TagFilter::Prefixes(ps) => ps
                    .iter()
                    .all(|p| tags.iter().any(|t| t.starts_with(p.as_str()))),
                TagFilter::Patterns(ps) => {
                    ps.iter().all(|p| tags.iter().any(|t| wildcard_match(p, t)))
                }
            },
        }
    }
}

/// A validated lifecycle policy; rules sorted by ascending priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// What evaluation needs to know about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub digest: String,
    pub tags: Vec<String>,
    pub pushed_at_ms: u64,
    /// A manifest list (index) in the repository references this image.
    pub referenced_by_manifest_list: bool,
}

impl ImageInfo {
    /// The evaluation view of every image of a repository.
    pub fn from_images(images: &[Image]) -> Vec<ImageInfo> {
        let children: HashSet<&str> = images
            .iter()
            .flat_map(|i| i.manifest.children.iter().map(String::as_str))
            .collect();
        images
            .iter()
            .map(|i| ImageInfo {
                digest: i.digest.clone(),
                tags: i.tags.clone(),
                pushed_at_ms: i.manifest.pushed_at,
                referenced_by_manifest_list: children.contains(i.digest.as_str()),
            })
            .collect()
    }
}

/// An image a policy expires, and the rule that expires it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiration {
    pub digest: String,
    pub rule_priority: u32,
}

// ---- parsing ------------------------------------------------------------------------------------

/// Parses and validates a lifecycle policy as ECR does.
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    let value: Value = serde_json::from_str(text).map_err(|_| PolicyError::Unparseable)?;
    let Value::Object(top) = value else {
        return Err(PolicyError::Unparseable);
    };
    check_properties(&top, &["rules"], &["rules"])?;
    let rules = match &top["rules"] {
        Value::Array(a) => a,
        other => return Err(wrong_type(other, "array")),
    };
    if rules.is_empty() {
        return Err(invalid(
            "array is too short: must have at least 1 elements but instance has 0 elements",
        ));
    }
    let mut parsed = rules
        .iter()
        .map(parse_rule)
        .collect::<Result<Vec<_>, _>>()?;
    check_rule_set(&parsed)?;
    parsed.sort_by_key(|r| r.priority);
    Ok(Policy { rules: parsed })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn wrong_type(v: &Value, allowed: &str) -> PolicyError {
    invalid(format!(
        "instance type ({}) does not match any allowed primitive type (allowed: [\"{allowed}\"])",
        json_type(v)
    ))
}

fn quoted_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", items.join(","))
}

/// JSON-schema style checks: required members present, no unknown members.
fn check_properties(
    obj: &Map<String, Value>,
    required: &[&str],
    allowed: &[&str],
) -> Result<(), PolicyError> {
    let missing: BTreeSet<&str> = required
        .iter()
        .copied()
        .filter(|k| !obj.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(invalid(format!(
            "object has missing required properties ({})",
            quoted_list(missing)
        )));
    }
    let unknown: BTreeSet<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(invalid(format!(
            "object instance has properties which are not allowed by the schema: ({})",
            quoted_list(unknown)
        )));
    }
    Ok(())
}

fn object(v: &Value) -> Result<&Map<String, Value>, PolicyError> {
    v.as_object().ok_or_else(|| wrong_type(v, "object"))
}

fn string(v: &Value) -> Result<&str, PolicyError> {
    v.as_str().ok_or_else(|| wrong_type(v, "string"))
}

/// An integer in `1..=i32::MAX`.
fn positive_int(v: &Value) -> Result<u32, PolicyError> {
    let n = match v {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u,
            (None, Some(i)) => {
                return Err(invalid(format!(
                    "numeric instance is lower than the required minimum (minimum: 1, found: {i})"
                )))
            }
            (None, None) => return Err(wrong_type(v, "integer")),
        },
        other => return Err(wrong_type(other, "integer")),
    };
    if n < 1 {
        return Err(invalid(format!(
            "numeric instance is lower than the required minimum (minimum: 1, found: {n})"
        )));
    }
    if n > MAX_INT {
        return Err(invalid(format!(
            "numeric instance is greater than the required maximum (maximum: {MAX_INT}, found: {n})"
        )));
    }
    u32::try_from(n).map_err(|_| wrong_type(v, "integer"))
}

fn enum_value<'a>(v: &'a Value, allowed: &[&str]) -> Result<&'a str, PolicyError> {
    let s = string(v)?;
    if allowed.contains(&s) {
        Ok(s)
    } else {
        Err(invalid(format!(
            "instance value (\"{s}\") not found in enum (possible values: {})",
            quoted_list(allowed.iter().copied())
        )))
    }
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    let items = v.as_array().ok_or_else(|| wrong_type(v, "array"))?;
    if items.is_empty() {
        return Err(invalid(format!("{what} must contain at least one element")));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let s = string(item)?;
        if s.is_empty() {
            return Err(invalid(format!("{what} must not contain empty strings")));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

fn parse_rule(v: &Value) -> Result<Rule, PolicyError> {
    let rule = object(v)?;
    check_properties(
        rule,
        &["action", "rulePriority", "selection"],
        &["action", "description", "rulePriority", "selection"],
    )?;
    let priority = positive_int(&rule["rulePriority"])?;
    let description = match rule.get("description") {
        None | Some(Value::Null) => None,
        Some(d) => Some(string(d)?.to_string()),
    };

    let action = object(&rule["action"])?;
    check_properties(action, &["type"], &["type"])?;
    enum_value(&action["type"], &["expire"])?;

    let sel = object(&rule["selection"])?;
    check_properties(
        sel,
        &["countNumber", "countType", "tagStatus"],
        &[
            "countNumber",
            "countType",
            "countUnit",
            "tagPatternList",
            "tagPrefixList",
            "tagStatus",
        ],
    )?;
    let tag_status = match enum_value(&sel["tagStatus"], &["any", "tagged", "untagged"])? {
        "tagged" => TagStatus::Tagged,
        "untagged" => TagStatus::Untagged,
        _ => TagStatus::Any,
    };
    let count_type = enum_value(
        &sel["countType"],
        &["imageCountMoreThan", "sinceImagePushed"],
    )?;
    let count_number = positive_int(&sel["countNumber"])?;
    let count = match (count_type, sel.get("countUnit")) {
        ("sinceImagePushed", Some(unit)) => {
            enum_value(unit, &["days"])?;
            Count::SinceImagePushedDays(count_number)
        }
        ("sinceImagePushed", None) => {
            return Err(invalid(
                "countUnit is required when countType is sinceImagePushed",
            ))
        }
        (_, Some(_)) => {
            return Err(invalid(
                "countUnit can only be used when countType is sinceImagePushed",
            ))
        }
        (_, None) => Count::ImageCountMoreThan(count_number),
    };

    let prefixes = sel
        .get("tagPrefixList")
        .map(|v| string_list(v, "tagPrefixList"))
        .transpose()?;
    let patterns = sel
        .get("tagPatternList")
        .map(|v| string_list(v, "tagPatternList"))
        .transpose()?;
    let tag_filter = match (tag_status, prefixes, patterns) {
        (TagStatus::Tagged, Some(_), Some(_)) => {
            return Err(invalid(
                "tagPrefixList and tagPatternList cannot both be specified in a rule",
            ))
        }
        (TagStatus::Tagged, Some(p), None) => TagFilter::Prefixes(p),
        (TagStatus::Tagged, None, Some(p)) => {
            if let Some(bad) = p.iter().find(|p| p.matches('*').count() > MAX_WILDCARDS) {
                return Err(invalid(format!(
                    "tagPatternList entry \"{bad}\" has more than {MAX_WILDCARDS} wildcards"
                )));
            }
            TagFilter::Patterns(p)
        }
        (TagStatus::Tagged, None, None) => {
            return Err(invalid(
                "tagPrefixList or tagPatternList is required when tagStatus is tagged",
            ))
        }
        (status, Some(_), _) | (status, None, Some(_)) => {
            return Err(invalid(format!(
            "tagPrefixList and tagPatternList can only be used when tagStatus is tagged, not {}",
            status.as_str()
        )))
        }
        (_, None, None) => TagFilter::None,
    };
    Ok(Rule {
        priority,
        description,
        tag_status,
        tag_filter,
        count,
    })
}

/// Rules about the set of rules as a whole.
fn check_rule_set(rules: &[Rule]) -> Result<(), PolicyError> {
    let mut priorities = BTreeSet::new();
    for r in rules {
        if !priorities.insert(r.priority) {
            return Err(invalid(format!(
                "rulePriority {} is used by more than one rule; rule priorities must be unique",
                r.priority
            )));
        }
    }
    let highest = priorities.last().copied().unwrap_or(0);
    if let Some(any) = rules
        .iter()
        .find(|r| r.tag_status == TagStatus::Any && r.priority != highest)
    {
        return Err(invalid(format!(
            "the rule with tagStatus any (rulePriority {}) must have the highest rulePriority",
            any.priority
        )));
    }
    if rules
        .iter()
        .filter(|r| r.tag_status == TagStatus::Untagged)
        .count()
        > 1
    {
        return Err(invalid(
            "only one rule is allowed to select untagged images",
        ));
    }
    let mut filters = BTreeSet::new();
    for r in rules {
        let key = match &r.tag_filter {
            TagFilter::Prefixes(p) => ("prefix", p.iter().cloned().collect::<BTreeSet<_>>()),
            TagFilter::Patterns(p) => ("pattern", p.iter().cloned().collect::<BTreeSet<_>>()),
            TagFilter::None => continue,
        };
        if !filters.insert(key) {
            return Err(invalid(format!(
                "rule with rulePriority {} repeats the tag list of another rule; the set of rules must contain a unique set of tag prefixes",
                r.priority
            )));
        }
    }
    Ok(())
}

// ---- evaluation ---------------------------------------------------------------------------------

/// The images `policy` expires at `now_ms`, oldest first.
pub fn evaluate(policy: &Policy, images: &[ImageInfo], now_ms: u64) -> Vec<Expiration> {
    let mut rules: Vec<&Rule> = policy.rules.iter().collect();
    rules.sort_by_key(|r| r.priority);
    // Images some higher-priority rule selected: no later rule may expire them.
    let mut claimed: HashSet<&str> = HashSet::new();
    let mut expired: BTreeMap<&str, u32> = BTreeMap::new();
    for rule in rules {
        let mut selected: Vec<&ImageInfo> =
            images.iter().filter(|i| rule.selects(&i.tags)).collect();
        let victims: Vec<&ImageInfo> = match rule.count {
            Count::ImageCountMoreThan(keep) => {
                // Newest first; the digest breaks ties so the result is deterministic.
                selected.sort_by(|a, b| {
                    b.pushed_at_ms
                        .cmp(&a.pushed_at_ms)
                        .then_with(|| a.digest.cmp(&b.digest))
                });
                selected.iter().skip(keep as usize).copied().collect()
            }
            Count::SinceImagePushedDays(days) => {
                let max_age = u64::from(days).saturating_mul(DAY_MS);
                selected
                    .iter()
                    .filter(|i| now_ms.saturating_sub(i.pushed_at_ms) > max_age)
                    .copied()
                    .collect()
            }
        };
        for v in victims {
            if !claimed.contains(v.digest.as_str()) && !v.referenced_by_manifest_list {
                expired.entry(v.digest.as_str()).or_insert(rule.priority);
            }
        }
        claimed.extend(selected.iter().map(|i| i.digest.as_str()));
    }
    let mut out: Vec<(&ImageInfo, u32)> = images
        .iter()
        .filter_map(|i| expired.get(i.digest.as_str()).map(|p| (i, *p)))
        .collect();
    out.sort_by(|(a, _), (b, _)| {
        a.pushed_at_ms
            .cmp(&b.pushed_at_ms)
            .then_with(|| a.digest.cmp(&b.digest))
    });
    out.dedup_by(|(a, _), (b, _)| a.digest == b.digest);
    out.into_iter()
        .map(|(i, p)| Expiration {
            digest: i.digest.clone(),
            rule_priority: p,
        })
        .collect()
}

// ---- applying -----------------------------------------------------------------------------------

/// Evaluates the lifecycle policy of every repository that has one and deletes the images it
/// expires (with their tags). Returns how many images were deleted.
///
/// An image is only deleted if it still has the tags and push time it was evaluated with and
/// no manifest list references it, checked in the deleting transaction, so a push racing the
/// sweep is never lost. A repository whose stored policy no longer parses is skipped with a
/// warning.
pub async fn apply_lifecycle_policies(reg: &Arc<Registry>) -> Result<usize, crate::Error> {
    const PAGE: usize = 100;
    let mut deleted = 0usize;
    let mut after: Option<String> = None;
    loop {
        let (r, a) = (reg.clone(), after.clone());
        let page =
            tokio::task::spawn_blocking(move || r.meta.list_repos(a.as_deref(), PAGE)).await??;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        let full = page.len() == PAGE;
        for (name, rec) in page {
            let Some(text) = rec.lifecycle_policy else {
                continue;
            };
            let policy = match parse(&text) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(repo = %name, error = %e, "skipping repository with an invalid lifecycle policy");
                    continue;
                }
            };
            deleted += apply_one(reg, &name, &text, &policy).await?;
        }
        if !full {
            break;
        }
    }
    Ok(deleted)
}

async fn apply_one(
    reg: &Arc<Registry>,
    repo: &str,
    text: &str,
    policy: &Policy,
) -> Result<usize, crate::Error> {
    let (r, n) = (reg.clone(), repo.to_string());
    let images = tokio::task::spawn_blocking(move || r.meta.list_images(&n)).await??;
    let infos = ImageInfo::from_images(&images);
    let now = now_ms();
    let expirations = evaluate(policy, &infos, now);
    let mut deleted = 0usize;
    for e in expirations {
        let Some(info) = infos.iter().find(|i| i.digest == e.digest).cloned() else {
            continue;
        };
        let (r, n) = (reg.clone(), repo.to_string());
        let gone = tokio::task::spawn_blocking(move || {
            r.meta
                .ecr_delete_if_unchanged(&n, &info.digest, info.pushed_at_ms, &info.tags)
        })
        .await??;
        if gone {
            deleted += 1;
            tracing::info!(repo, digest = %e.digest, rule = e.rule_priority, "lifecycle policy expired image");
        }
    }
    // Record the evaluation time, unless the policy changed meanwhile.
    let (r, n, t) = (reg.clone(), repo.to_string(), text.to_string());
    let updated = tokio::task::spawn_blocking(move || {
        r.meta.update_repo(&n, |rec| {
            if rec.lifecycle_policy.as_deref() == Some(t.as_str()) {
                rec.lifecycle_policy_updated_at = Some(now);
            }
            Ok(())
        })
    })
    .await?;
    match updated {
        Ok(_) | Err(crate::meta::MetaError::RepoNotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000_000;

    fn days_ago(d: u64) -> u64 {
        NOW - d * DAY_MS
    }

    fn img(digest: &str, tags: &[&str], pushed_at_ms: u64) -> ImageInfo {
        ImageInfo {
            digest: digest.to_string(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at_ms,
            referenced_by_manifest_list: false,
        }
    }

    fn policy(rules: Value) -> Policy {
        parse(&json!({ "rules": rules }).to_string()).expect("valid policy")
    }

    fn rule(priority: u32, selection: Value) -> Value {
        json!({
            "rulePriority": priority,
            "description": format!("rule {priority}"),
            "selection": selection,
            "action": { "type": "expire" },
        })
    }

    fn expired(p: &Policy, images: &[ImageInfo], now: u64) -> Vec<(String, u32)> {
        evaluate(p, images, now)
            .into_iter()
            .map(|e| (e.digest, e.rule_priority))
            .collect()
    }

    fn err(policy: Value) -> String {
        match parse(&policy.to_string()) {
            Err(PolicyError::Invalid(d)) => d,
            other => panic!("expected a validation failure, got {other:?}"),
        }
    }

    fn sel_err(selection: Value) -> String {
        err(json!({ "rules": [rule(1, selection)] }))
    }

    // ---- parsing ----

    #[test]
    fn parses_documented_examples() {
        let p = policy(json!([
            rule(
                2,
                json!({"tagStatus": "tagged", "tagPatternList": ["beta*"], "countType": "imageCountMoreThan", "countNumber": 1})
            ),
            rule(
                1,
                json!({"tagStatus": "tagged", "tagPrefixList": ["prod"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14})
            ),
            rule(
                3,
                json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5})
            ),
        ]));
        let priorities: Vec<u32> = p.rules.iter().map(|r| r.priority).collect();
        assert_eq!(priorities, vec![1, 2, 3], "rules are sorted by priority");
        assert_eq!(p.rules[0].count, Count::SinceImagePushedDays(14));
        assert_eq!(
            p.rules[0].tag_filter,
            TagFilter::Prefixes(vec!["prod".into()])
        );
        assert_eq!(
            p.rules[1].tag_filter,
            TagFilter::Patterns(vec!["beta*".into()])
        );
        assert_eq!(p.rules[2].tag_status, TagStatus::Any);
        assert_eq!(p.rules[2].description.as_deref(), Some("rule 3"));
        let untagged = policy(json!([rule(
            1,
            json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1})
        )]));
        assert_eq!(untagged.rules[0].tag_filter, TagFilter::None);
    }

    #[test]
    fn rejects_malformed_documents() {
        assert_eq!(parse("not json"), Err(PolicyError::Unparseable));
        assert_eq!(parse("[1]"), Err(PolicyError::Unparseable));
        assert_eq!(
            PolicyError::Unparseable.detail(),
            "Could not map policyString into LifecyclePolicy."
        );
        assert_eq!(
            err(json!({})),
            "object has missing required properties ([\"rules\"])"
        );
        assert!(err(json!({"rules": [], })).starts_with("array is too short"));
        assert!(err(json!({"rules": {}})).contains("allowed: [\"array\"]"));
        assert!(err(json!({"rules": [rule(1, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}))], "x": 1}))
            .contains("not allowed by the schema: ([\"x\"])"));
        assert_eq!(
            err(json!({"rules": [{"rulePriority": 1}]})),
            "object has missing required properties ([\"action\",\"selection\"])"
        );
        assert!(err(json!({"rules": [1]})).contains("allowed: [\"object\"]"));
    }

    #[test]
    fn rejects_bad_rules() {
        let any = json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1});
        let mut r = rule(1, any.clone());
        r["rulePriority"] = json!(0);
        assert!(err(json!({"rules": [r]})).contains("minimum: 1, found: 0"));
        let mut r = rule(1, any.clone());
        r["rulePriority"] = json!(1.5);
        assert!(err(json!({"rules": [r]})).contains("(number)"));
        let mut r = rule(1, any.clone());
        r["action"] = json!({"type": "transition"});
        assert!(err(json!({"rules": [r]})).contains("not found in enum"));
        let mut r = rule(1, any.clone());
        r["extra"] = json!(true);
        assert!(err(json!({"rules": [r]})).contains("[\"extra\"]"));
        let mut r = rule(1, any);
        r["description"] = json!(5);
        assert!(err(json!({"rules": [r]})).contains("allowed: [\"string\"]"));
    }

    #[test]
    fn rejects_bad_selections() {
        assert!(sel_err(
            json!({"tagStatus": "some", "countType": "imageCountMoreThan", "countNumber": 1})
        )
        .contains("(\"some\") not found in enum"));
        assert!(sel_err(json!({"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 1})).contains("not found in enum"));
        assert!(sel_err(
            json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 0})
        )
        .contains("minimum: 1"));
        assert!(sel_err(
            json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": -3})
        )
        .contains("minimum: 1, found: -3"));
        assert!(sel_err(json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 3_000_000_000u64})).contains("maximum"));
        assert!(sel_err(
            json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": "1"})
        )
        .contains("allowed: [\"integer\"]"));
        assert!(
            sel_err(json!({"tagStatus": "any", "countType": "imageCountMoreThan"}))
                .contains("[\"countNumber\"]")
        );
        assert!(sel_err(json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countUnit": "days", "countNumber": 1})).contains("countUnit can only be used"));
        assert!(sel_err(
            json!({"tagStatus": "any", "countType": "sinceImagePushed", "countNumber": 1})
        )
        .contains("countUnit is required"));
        assert!(sel_err(json!({"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "hours", "countNumber": 1})).contains("(\"hours\") not found in enum"));
        assert!(sel_err(
            json!({"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1})
        )
        .contains("tagPrefixList or tagPatternList is required"));
        assert!(sel_err(json!({"tagStatus": "tagged", "tagPrefixList": ["a"], "tagPatternList": ["b*"], "countType": "imageCountMoreThan", "countNumber": 1})).contains("cannot both"));
        assert!(sel_err(json!({"tagStatus": "untagged", "tagPrefixList": ["a"], "countType": "imageCountMoreThan", "countNumber": 1})).contains("only be used when tagStatus is tagged"));
        assert!(sel_err(json!({"tagStatus": "any", "tagPatternList": ["a*"], "countType": "imageCountMoreThan", "countNumber": 1})).contains("only be used when tagStatus is tagged"));
        assert!(sel_err(json!({"tagStatus": "tagged", "tagPrefixList": [], "countType": "imageCountMoreThan", "countNumber": 1})).contains("at least one"));
        assert!(sel_err(json!({"tagStatus": "tagged", "tagPrefixList": [""], "countType": "imageCountMoreThan", "countNumber": 1})).contains("empty"));
        assert!(sel_err(json!({"tagStatus": "tagged", "tagPatternList": [3], "countType": "imageCountMoreThan", "countNumber": 1})).contains("allowed: [\"string\"]"));
        assert!(sel_err(json!({"tagStatus": "tagged", "tagPatternList": ["test*1*2*3*4*5*6"], "countType": "imageCountMoreThan", "countNumber": 1})).contains("more than 4 wildcards"));
        // Four wildcards are fine (the documented example).
        policy(json!([rule(
            1,
            json!({"tagStatus": "tagged", "tagPatternList": ["*test*1*2*3", "test*1*2*3*"], "countType": "imageCountMoreThan", "countNumber": 1})
        )]));
    }

    #[test]
    fn rejects_bad_rule_sets() {
        let any = json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1});
        let untagged =
            json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1});
        let prod = json!({"tagStatus": "tagged", "tagPrefixList": ["prod", "x"], "countType": "imageCountMoreThan", "countNumber": 1});
        let prod2 = json!({"tagStatus": "tagged", "tagPrefixList": ["x", "prod"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1});
        assert!(
            err(json!({"rules": [rule(1, untagged.clone()), rule(1, prod.clone())]}))
                .contains("must be unique")
        );
        assert!(
            err(json!({"rules": [rule(1, any.clone()), rule(2, prod.clone())]}))
                .contains("must have the highest rulePriority")
        );
        assert!(
            err(json!({"rules": [rule(1, untagged.clone()), rule(2, untagged.clone())]}))
                .contains("only one rule is allowed to select untagged")
        );
        assert!(
            err(json!({"rules": [rule(1, prod.clone()), rule(2, prod2)]}))
                .contains("unique set of tag prefixes")
        );
        // Prefix and pattern lists with the same strings are different selections.
        let pat = json!({"tagStatus": "tagged", "tagPatternList": ["prod", "x"], "countType": "imageCountMoreThan", "countNumber": 1});
        policy(json!([
            rule(1, prod),
            rule(2, pat),
            rule(3, untagged),
            rule(9, any)
        ]));
    }

    // ---- evaluation ----

    /// The documentation's "Example A" with prefixes and with patterns: rule 2 would expire
    /// A and B, but A is already expired by rule 1 and B matches rule 1's tags.
    #[test]
    fn documented_example_a() {
        let images = [
            img("A", &["beta-1", "prod-1"], days_ago(10)),
            img("B", &["beta-2", "prod-2"], days_ago(9)),
            img("C", &["beta-3"], days_ago(8)),
        ];
        for (key, p1, p2) in [
            ("tagPrefixList", "prod", "beta"),
            ("tagPatternList", "prod*", "beta*"),
        ] {
            let p = policy(json!([
                rule(
                    1,
                    json!({"tagStatus": "tagged", key: [p1], "countType": "imageCountMoreThan", "countNumber": 1})
                ),
                rule(
                    2,
                    json!({"tagStatus": "tagged", key: [p2], "countType": "imageCountMoreThan", "countNumber": 1})
                ),
            ]));
            assert_eq!(
                expired(&p, &images, NOW),
                vec![("A".to_string(), 1)],
                "{key}"
            );
        }
    }

    /// "Example B": a rule selecting images with all of two prefixes expires A and B; the
    /// second rule sees the same images but may not expire them again.
    #[test]
    fn documented_example_b() {
        let images = [
            img("A", &["alpha-1", "beta-1", "gamma-1"], days_ago(10)),
            img("B", &["alpha-2", "beta-2"], days_ago(9)),
            img("C", &["alpha-3", "beta-3", "gamma-3"], days_ago(8)),
        ];
        let p = policy(json!([
            rule(
                1,
                json!({"tagStatus": "tagged", "tagPrefixList": ["alpha", "beta"], "countType": "imageCountMoreThan", "countNumber": 1})
            ),
            rule(
                2,
                json!({"tagStatus": "tagged", "tagPrefixList": ["alpha"], "countType": "imageCountMoreThan", "countNumber": 1})
            ),
        ]));
        assert_eq!(
            expired(&p, &images, NOW),
            vec![("A".to_string(), 1), ("B".to_string(), 1)]
        );
    }

    #[test]
    fn prefix_and_pattern_lists_need_every_entry_matched() {
        let images = [
            img("both", &["prod-1", "stable"], days_ago(3)),
            img("prod-only", &["prod-2"], days_ago(2)),
            img("untagged", &[], days_ago(1)),
        ];
        let p = policy(json!([rule(
            1,
            json!({"tagStatus": "tagged", "tagPrefixList": ["prod", "stab"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1})
        )]));
        assert_eq!(expired(&p, &images, NOW), vec![("both".to_string(), 1)]);
        let p = policy(json!([rule(
            1,
            json!({"tagStatus": "tagged", "tagPatternList": ["*rod*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1})
        )]));
        assert_eq!(
            expired(&p, &images, NOW),
            vec![("both".to_string(), 1), ("prod-only".to_string(), 1)]
        );
        // A pattern without wildcards matches whole tags only.
        let p = policy(json!([rule(
            1,
            json!({"tagStatus": "tagged", "tagPatternList": ["prod"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1})
        )]));
        assert!(expired(&p, &images, NOW).is_empty());
    }

    #[test]
    fn since_image_pushed_uses_the_injected_clock() {
        let images = [
            img("old", &[], days_ago(15)),
            img("edge", &[], days_ago(14)),
            img("new", &[], days_ago(13)),
        ];
        let p = policy(json!([rule(
            1,
            json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14})
        )]));
        assert_eq!(expired(&p, &images, NOW), vec![("old".to_string(), 1)]);
        // One millisecond later the 14-day-old image is older than 14 days too.
        assert_eq!(
            expired(&p, &images, NOW + 1),
            vec![("old".to_string(), 1), ("edge".to_string(), 1)]
        );
        assert!(
            expired(&p, &images, days_ago(30)).is_empty(),
            "clock before pushes"
        );
    }

    #[test]
    fn image_count_keeps_the_newest() {
        let images = [
            img("u1", &[], days_ago(1)),
            img("u2", &[], days_ago(2)),
            img("u3", &[], days_ago(3)),
            img("u4", &[], days_ago(4)),
            img("t", &["latest"], days_ago(5)),
        ];
        let p = policy(json!([rule(
            1,
            json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 2})
        )]));
        assert_eq!(
            expired(&p, &images, NOW),
            vec![("u4".to_string(), 1), ("u3".to_string(), 1)],
            "oldest first, tagged image untouched"
        );
        let keep_all = policy(json!([rule(
            1,
            json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 9999})
        )]));
        assert!(expired(&keep_all, &images, NOW).is_empty());
    }

    /// The "protect releases" idiom: a high-priority rule that never expires anything still
    /// shields its images from the catch-all rule, which nevertheless counts them.
    #[test]
    fn earlier_rules_shield_but_are_still_counted() {
        let images = [
            img("r3", &["release-3"], days_ago(1)),
            img("r2", &["release-2"], days_ago(2)),
            img("dev", &["dev"], days_ago(3)),
            img("u", &[], days_ago(4)),
            img("r1", &["release-1"], days_ago(50)),
        ];
        let p = policy(json!([
            rule(
                1,
                json!({"tagStatus": "tagged", "tagPatternList": ["release-*"], "countType": "imageCountMoreThan", "countNumber": 9999})
            ),
            rule(
                10,
                json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2})
            ),
        ]));
        // Rule 10 ranks all five, keeps r3 and r2, would expire dev, u and r1; r1 is shielded.
        assert_eq!(
            expired(&p, &images, NOW),
            vec![("u".to_string(), 10), ("dev".to_string(), 10)]
        );
    }

    #[test]
    fn each_image_is_expired_by_the_first_rule_only() {
        let images = [
            img("x", &["v1"], days_ago(40)),
            img("y", &["v2"], days_ago(1)),
        ];
        let p = policy(json!([
            rule(
                1,
                json!({"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 30})
            ),
            rule(
                2,
                json!({"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1})
            ),
        ]));
        assert_eq!(expired(&p, &images, NOW), vec![("x".to_string(), 1)]);
    }

    #[test]
    fn manifest_list_children_are_counted_but_never_expired() {
        let mut child = img("child", &[], days_ago(9));
        child.referenced_by_manifest_list = true;
        let images = [
            img("index", &["v1"], days_ago(8)),
            child,
            img("u1", &[], days_ago(10)),
            img("u2", &[], days_ago(1)),
        ];
        let p = policy(json!([rule(
            1,
            json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1})
        )]));
        // Untagged newest first: u2 (kept), child (protected), u1 (expired).
        assert_eq!(expired(&p, &images, NOW), vec![("u1".to_string(), 1)]);
    }

    #[test]
    fn ties_are_broken_by_digest() {
        let images = [img("b", &[], NOW), img("a", &[], NOW), img("c", &[], NOW)];
        let p = policy(json!([rule(
            1,
            json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1})
        )]));
        assert_eq!(
            expired(&p, &images, NOW),
            vec![("b".to_string(), 1), ("c".to_string(), 1)]
        );
    }

    #[test]
    fn from_images_marks_index_children() {
        use crate::meta::{Image, ManifestRecord};
        let rec = |children: &[&str]| ManifestRecord {
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            size: 1,
            pushed_at: 7,
            artifact_type: None,
            config_media_type: None,
            subject: None,
            content_size: 0,
            blobs: vec![],
            children: children.iter().map(|s| s.to_string()).collect(),
            annotations: Default::default(),
        };
        let images = vec![
            Image {
                digest: "i".into(),
                manifest: rec(&["c"]),
                tags: vec!["t".into()],
            },
            Image {
                digest: "c".into(),
                manifest: rec(&[]),
                tags: vec![],
            },
            Image {
                digest: "o".into(),
                manifest: rec(&[]),
                tags: vec![],
            },
        ];
        let infos = ImageInfo::from_images(&images);
        let flags: Vec<bool> = infos
            .iter()
            .map(|i| i.referenced_by_manifest_list)
            .collect();
        assert_eq!(flags, vec![false, true, false]);
        assert_eq!(infos[0].pushed_at_ms, 7);
    }
}
