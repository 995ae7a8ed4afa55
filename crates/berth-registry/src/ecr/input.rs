//! Typed access to a request's JSON members, and the constraint checks of the ECR model
//! (lengths, patterns, enums) that botocore leaves to the server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_aws::AwsError;
use serde_json::{Map, Value};

/// The model's `RepositoryName` pattern, quoted in errors as ECR quotes it.
pub(super) const REPOSITORY_NAME_PATTERN: &str =
    "(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*";
const TOKEN_PREFIX: &str = "berth-ecr-1\n";

/// `InvalidParameterException` worded as ECR words it.
pub(super) fn invalid_param(field: &str, constraint: impl std::fmt::Display) -> AwsError {
    AwsError::client(
        "InvalidParameterException",
        format!("Invalid parameter at '{field}' failed to satisfy constraint: '{constraint}'"),
    )
}

fn wrong_type(key: &str, expected: &str) -> AwsError {
    AwsError::serialization(format!("Member {key} must be {expected}"))
}

/// A request's members.
#[derive(Clone, Copy)]
pub(super) struct Input<'a>(&'a Map<String, Value>);

impl<'a> Input<'a> {
    pub(super) fn new(v: &'a Value) -> Result<Input<'a>, AwsError> {
        v.as_object()
            .map(Input)
            .ok_or_else(|| AwsError::serialization("Expected a JSON object"))
    }

    /// A member; JSON `null` counts as absent, as in botocore.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn str(&self, key: &str) -> Result<Option<&'a str>, AwsError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(key, "a string")),
        }
    }

    pub(super) fn required_str(&self, key: &str) -> Result<&'a str, AwsError> {
        self.str(key)?.ok_or_else(|| required(key))
    }

    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>, AwsError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(key, "a boolean")),
        }
    }

    pub(super) fn int(&self, key: &str) -> Result<Option<i64>, AwsError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(key, "an integer")),
            Some(_) => Err(wrong_type(key, "an integer")),
        }
    }

    pub(super) fn list(&self, key: &str) -> Result<Option<&'a [Value]>, AwsError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.as_slice())),
            Some(_) => Err(wrong_type(key, "a list")),
        }
    }

    pub(super) fn object(&self, key: &str) -> Result<Option<Input<'a>>, AwsError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(Input(o))),
            Some(_) => Err(wrong_type(key, "a structure")),
        }
    }

    /// A list of strings with `min..=max` elements.
    pub(super) fn str_list(
        &self,
        key: &str,
        min: usize,
        max: usize,
    ) -> Result<Option<Vec<&'a str>>, AwsError> {
        let Some(items) = self.list(key)? else {
            return Ok(None);
        };
        check_list_len(key, items.len(), min, max)?;
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| wrong_type(key, "a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A list of structures with `min..=max` elements.
    pub(super) fn object_list(
        &self,
        key: &str,
        min: usize,
        max: usize,
    ) -> Result<Option<Vec<Input<'a>>>, AwsError> {
        let Some(items) = self.list(key)? else {
            return Ok(None);
        };
        check_list_len(key, items.len(), min, max)?;
        items
            .iter()
            .map(|v| {
                v.as_object()
                    .map(Input)
                    .ok_or_else(|| wrong_type(key, "a list of structures"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

pub(super) fn required(key: &str) -> AwsError {
    invalid_param(key, "Member must not be null")
}

pub(super) fn check_list_len(
    key: &str,
    len: usize,
    min: usize,
    max: usize,
) -> Result<(), AwsError> {
    if len < min {
        return Err(invalid_param(
            key,
            format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if len > max {
        return Err(invalid_param(
            key,
            format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

pub(super) fn check_str_len(key: &str, s: &str, min: usize, max: usize) -> Result<(), AwsError> {
    check_list_len(key, s.chars().count(), min, max)
}

/// A repository name: 2 to 256 characters of the OCI name grammar.
pub(super) fn repository_name(key: &str, s: &str) -> Result<String, AwsError> {
    check_str_len(key, s, 2, 256)?;
    s.parse::<berth_oci::RepoName>()
        .map(|n| n.as_str().to_string())
        .map_err(|_| {
            invalid_param(
                key,
                format!("must satisfy regular expression '{REPOSITORY_NAME_PATTERN}'"),
            )
        })
}

/// The `maxResults` member: `1..=max`, `default` when absent.
pub(super) fn max_results(
    input: &Input<'_>,
    max: usize,
    default: usize,
) -> Result<usize, AwsError> {
    match input.int("maxResults")? {
        None => Ok(default),
        Some(n) if n < 1 => Err(invalid_param(
            "maxResults",
            "Member must have value greater than or equal to 1",
        )),
        Some(n) if n > max as i64 => Err(invalid_param(
            "maxResults",
            format!("Member must have value less than or equal to {max}"),
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(default)),
    }
}

/// An opaque pagination token holding a resume key.
pub(super) fn encode_token(cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{cursor}"))
}

/// The resume key of the `nextToken` member, if any.
pub(super) fn next_token(input: &Input<'_>) -> Result<Option<String>, AwsError> {
    let Some(token) = input.str("nextToken")? else {
        return Ok(None);
    };
    let bad = || invalid_param("nextToken", "Invalid NextToken");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    s.strip_prefix(TOKEN_PREFIX)
        .map(|c| Some(c.to_string()))
        .ok_or_else(bad)
}

/// An image identifier as a request gives it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ImageId {
    pub(super) digest: Option<String>,
    pub(super) tag: Option<String>,
}

impl ImageId {
    pub(super) fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(d) = &self.digest {
            m.insert("imageDigest".into(), Value::from(d.as_str()));
        }
        if let Some(t) = &self.tag {
            m.insert("imageTag".into(), Value::from(t.as_str()));
        }
        Value::Object(m)
    }

    /// How ECR prints an image id in messages.
    pub(super) fn describe(&self) -> String {
        format!(
            "{{imageDigest:'{}', imageTag:'{}'}}",
            self.digest.as_deref().unwrap_or("null"),
            self.tag.as_deref().unwrap_or("null")
        )
    }

    /// ECR's per-image failure for an identifier that cannot name an image.
    pub(super) fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self.digest.is_none() && self.tag.is_none() {
            return Some((
                "MissingDigestAndTag",
                "Invalid request parameters: both tag and digest cannot be null",
            ));
        }
        if let Some(d) = &self.digest {
            if d.parse::<berth_oci::Digest>().is_err() {
                return Some((
                    "InvalidImageDigest",
                    "Invalid request parameters: image digest should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'",
                ));
            }
        }
        if let Some(t) = &self.tag {
            if t.parse::<berth_oci::Tag>().is_err() {
                return Some((
                    "InvalidImageTag",
                    "Invalid request parameters: image tag should satisfy the regex '[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}'",
                ));
            }
        }
        None
    }
}

/// The `ImageIdentifierList` member `key`.
pub(super) fn image_ids(input: &Input<'_>, key: &str) -> Result<Option<Vec<ImageId>>, AwsError> {
    let Some(items) = input.object_list(key, 1, 100)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|i| {
            let digest = i.str("imageDigest")?.map(str::to_string);
            let tag = i.str("imageTag")?.map(str::to_string);
            if let Some(t) = &tag {
                check_str_len("imageTag", t, 1, 300)?;
            }
            Ok(ImageId { digest, tag })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The `tagStatus` member of a filter structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TagStatusFilter {
    Tagged,
    Untagged,
    Any,
}

impl TagStatusFilter {
    pub(super) fn admits(self, tagged: bool) -> bool {
        match self {
            TagStatusFilter::Any => true,
            TagStatusFilter::Tagged => tagged,
            TagStatusFilter::Untagged => !tagged,
        }
    }
}

/// A filter's `tagStatus` (ANY when the filter or the member is absent).
pub(super) fn tag_status_filter(filter: Option<&Input<'_>>) -> Result<TagStatusFilter, AwsError> {
    let Some(filter) = filter else {
        return Ok(TagStatusFilter::Any);
    };
    match filter.str("tagStatus")? {
        None | Some("ANY") => Ok(TagStatusFilter::Any),
        Some("TAGGED") => Ok(TagStatusFilter::Tagged),
        Some("UNTAGGED") => Ok(TagStatusFilter::Untagged),
        Some(_) => Err(invalid_param(
            "filter.tagStatus",
            "Member must satisfy enum value set: [TAGGED, UNTAGGED, ANY]",
        )),
    }
}

/// `filter.tagStatus` (ANY when absent) and whether `filter.imageStatus` admits active images.
pub(super) fn image_filter(input: &Input<'_>) -> Result<(TagStatusFilter, bool), AwsError> {
    let Some(filter) = input.object("filter")? else {
        return Ok((TagStatusFilter::Any, true));
    };
    let tag_status = tag_status_filter(Some(&filter))?;
    let active = match filter.str("imageStatus")? {
        None | Some("ACTIVE") | Some("ANY") => true,
        Some("ARCHIVED") | Some("ACTIVATING") => false,
        Some(_) => {
            return Err(invalid_param(
                "filter.imageStatus",
                "Member must satisfy enum value set: [ACTIVE, ARCHIVED, ACTIVATING, ANY]",
            ))
        }
    };
    Ok((tag_status, active))
}

/// A resource tag key: 1 to 128 characters of letters, digits, spaces and `_.:/=+-@`, not
/// starting with the reserved `aws:` prefix.
pub(super) fn check_tag_key(key: &str) -> Result<(), AwsError> {
    let n = key.chars().count();
    if n == 0 || n > 128 {
        return Err(invalid_tag(format!(
            "Tag key '{key}' must be between 1 and 128 characters long"
        )));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(invalid_tag(format!(
            "Tag key '{key}' uses the reserved prefix 'aws:'"
        )));
    }
    if !key.chars().all(tag_char) {
        return Err(invalid_tag(format!(
            "Tag key '{key}' contains characters other than letters, digits, spaces and _.:/=+-@"
        )));
    }
    Ok(())
}

/// A resource tag value: up to 256 characters of the tag key alphabet.
pub(super) fn check_tag_value(key: &str, value: &str) -> Result<(), AwsError> {
    if value.chars().count() > 256 {
        return Err(invalid_tag(format!(
            "Tag value for key '{key}' must be at most 256 characters long"
        )));
    }
    if !value.chars().all(tag_char) {
        return Err(invalid_tag(format!(
            "Tag value for key '{key}' contains characters other than letters, digits, spaces and _.:/=+-@"
        )));
    }
    Ok(())
}

fn tag_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c)
}

pub(super) fn invalid_tag(message: String) -> AwsError {
    AwsError::client("InvalidTagParameterException", message)
}

/// The `tags` member (`[{Key, Value}]`), validated, in request order without duplicates.
pub(super) fn resource_tags(input: &Input<'_>) -> Result<Option<Vec<(String, String)>>, AwsError> {
    let Some(items) = input.object_list("tags", 0, usize::MAX)? else {
        return Ok(None);
    };
    let mut out: Vec<(String, String)> = Vec::with_capacity(items.len());
    for item in items {
        let key = item.required_str("Key")?;
        let value = item.required_str("Value")?;
        check_tag_key(key)?;
        check_tag_value(key, value)?;
        if out.iter().any(|(k, _)| k == key) {
            return Err(invalid_tag(format!(
                "Tag key '{key}' appears more than once"
            )));
        }
        out.push((key.to_string(), value.to_string()));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = encode_token("sha256:abc\0v1");
        let v = json!({ "nextToken": t });
        let input = Input::new(&v).expect("object");
        assert_eq!(
            next_token(&input).expect("token").as_deref(),
            Some("sha256:abc\0v1")
        );
        for bad in ["!!", "YWJj", ""] {
            let v = json!({ "nextToken": bad });
            let err = next_token(&Input::new(&v).expect("object")).expect_err("bad token");
            assert_eq!(err.code, "InvalidParameterException");
        }
    }

    #[test]
    fn member_types_are_checked() {
        let v = json!({ "a": 1, "b": "x", "c": null, "d": [1] });
        let input = Input::new(&v).expect("object");
        assert_eq!(
            input.str("a").expect_err("int").code,
            "SerializationException"
        );
        assert_eq!(input.str("c").expect("null"), None);
        assert_eq!(input.int("a").expect("int"), Some(1));
        assert_eq!(
            input.str_list("d", 1, 5).expect_err("ints").code,
            "SerializationException"
        );
        assert_eq!(
            input.required_str("zz").expect_err("missing").code,
            "InvalidParameterException"
        );
    }

    #[test]
    fn repository_names() {
        assert_eq!(
            repository_name("n", "web/frontend").expect("ok"),
            "web/frontend"
        );
        for bad in ["a", "Web", "a//b", "-a", "a_", &"a".repeat(257)] {
            let e = repository_name("repositoryName", bad).expect_err(bad);
            assert_eq!(e.code, "InvalidParameterException");
            assert!(
                e.message
                    .starts_with("Invalid parameter at 'repositoryName'"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn image_id_problems() {
        let id = |d: Option<&str>, t: Option<&str>| ImageId {
            digest: d.map(str::to_string),
            tag: t.map(str::to_string),
        };
        assert_eq!(
            id(None, None).problem().map(|p| p.0),
            Some("MissingDigestAndTag")
        );
        assert_eq!(
            id(Some("sha256:xyz"), None).problem().map(|p| p.0),
            Some("InvalidImageDigest")
        );
        assert_eq!(
            id(None, Some(".bad")).problem().map(|p| p.0),
            Some("InvalidImageTag")
        );
        assert_eq!(id(None, Some("v1")).problem(), None);
        assert_eq!(
            id(None, Some("v1")).describe(),
            "{imageDigest:'null', imageTag:'v1'}"
        );
    }

    #[test]
    fn tag_rules() {
        assert!(check_tag_key("team").is_ok());
        assert!(check_tag_key("cost center:a/b=c+d-e@f_g.h").is_ok());
        assert_eq!(
            check_tag_key("").expect_err("empty").code,
            "InvalidTagParameterException"
        );
        assert!(check_tag_key("aws:x").is_err());
        assert!(check_tag_key("AWS:x").is_err());
        assert!(check_tag_key(&"k".repeat(129)).is_err());
        assert!(check_tag_key("a*b").is_err());
        assert!(check_tag_value("k", "").is_ok());
        assert!(check_tag_value("k", &"v".repeat(257)).is_err());
        let v = json!({ "tags": [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}] });
        assert!(resource_tags(&Input::new(&v).expect("object")).is_err());
    }
}
