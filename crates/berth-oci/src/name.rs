//! Repository names, tags and references as defined by the OCI distribution spec.
//!
//! ```text
//! <name>      [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
//! <reference> [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}   (a tag) or a digest
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use crate::digest::{echo, Digest, DigestError};

/// Longest repository name accepted (the distribution spec's client-side limit).
pub const MAX_REPO_NAME_LEN: usize = 255;
/// Longest tag accepted.
pub const MAX_TAG_LEN: usize = 128;

/// Errors from parsing repository names, tags and references.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The repository name does not match the distribution spec's grammar.
    #[error("invalid repository name {name:?}: {reason}")]
    InvalidRepoName {
        /// The offending name (truncated if long).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The tag does not match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    #[error("invalid tag {tag:?}: {reason}")]
    InvalidTag {
        /// The offending tag (truncated if long).
        tag: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A reference containing `:` is not a valid digest.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A validated repository name such as `library/busybox` or `my-org/app.v2/api`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct RepoName(String);

impl RepoName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length in bytes (all characters are ASCII), for callers with their own limits
    /// (ECR allows 2..=256).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a valid name has at least one character.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `/`-separated path components.
    pub fn components(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split('/')
    }

    fn validate(s: &str) -> Result<(), NameError> {
        validate_repo_name(s).map_err(|reason| NameError::InvalidRepoName {
            name: echo(s),
            reason,
        })
    }
}

fn validate_repo_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > MAX_REPO_NAME_LEN {
        return Err("longer than 255 characters");
    }
    s.split('/').try_for_each(validate_component)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn validate_component(c: &str) -> Result<(), &'static str> {
    if c.is_empty() {
        return Err("empty path component");
    }
    let bytes = c.as_bytes();
    // Start index of the current run of separator characters, if inside one.
    let mut separator_start: Option<usize> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => {
                if let Some(start) = separator_start.take() {
                    if !is_valid_separator(&bytes[start..i]) {
                        return Err("invalid separator (allowed: '.', '_', '__' or dashes)");
                    }
                }
            }
            b'.' | b'_' | b'-' => {
                if i == 0 {
                    return Err("path component starts with a separator");
                }
                separator_start.get_or_insert(i);
            }
            b'A'..=b'Z' => return Err("uppercase letters are not allowed"),
            _ => return Err("invalid character (allowed: a-z, 0-9, '.', '_', '-', '/')"),
        }
    }
    if separator_start.is_some() {
        return Err("path component ends with a separator");
    }
    Ok(())
}

fn is_valid_separator(run: &[u8]) -> bool {
    matches!(run, b"." | b"_" | b"__") || run.iter().all(|&b| b == b'-')
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoName::validate(s)?;
        Ok(RepoName(s.to_owned()))
    }
}

impl TryFrom<String> for RepoName {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        RepoName::validate(&s)?;
        Ok(RepoName(s))
    }
}

impl TryFrom<&str> for RepoName {
    type Error = NameError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RepoName> for String {
    fn from(n: RepoName) -> String {
        n.0
    }
}

impl AsRef<str> for RepoName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RepoName").field(&self.0).finish()
    }
}

impl Serialize for RepoName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A validated tag such as `latest`, `v1.2.3` or `_build-42`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Tag(String);

impl Tag {
    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn validate(s: &str) -> Result<(), NameError> {
        validate_tag(s).map_err(|reason| NameError::InvalidTag {
            tag: echo(s),
            reason,
        })
    }
}

fn validate_tag(s: &str) -> Result<(), &'static str> {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err("must not be empty");
    };
    if bytes.len() > MAX_TAG_LEN {
        return Err("longer than 128 characters");
    }
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return Err("must start with a letter, digit or '_'");
    }
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("invalid character (allowed: a-z, A-Z, 0-9, '.', '_', '-')");
    }
    Ok(())
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tag::validate(s)?;
        Ok(Tag(s.to_owned()))
    }
}

impl TryFrom<String> for Tag {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Tag::validate(&s)?;
        Ok(Tag(s))
    }
}

impl TryFrom<&str> for Tag {
    type Error = NameError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> String {
        t.0
    }
}

impl AsRef<str> for Tag {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tag").field(&self.0).finish()
    }
}

impl Serialize for Tag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// A tag, e.g. `latest`.
    Tag(Tag),
    /// A digest, e.g. `sha256:...`.
    Digest(Digest),
}

impl Reference {
    /// The tag, if this is a tag reference.
    pub fn as_tag(&self) -> Option<&Tag> {
        match self {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }

    /// The digest, if this is a digest reference.
    pub fn as_digest(&self) -> Option<&Digest> {
        match self {
            Reference::Tag(_) => None,
            Reference::Digest(d) => Some(d),
        }
    }

    /// The reference as a string.
    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(t) => t.as_str(),
            Reference::Digest(d) => d.as_str(),
        }
    }
}

impl FromStr for Reference {
    type Err = NameError;

    /// A string containing `:` is parsed as a digest, anything else as a tag.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl From<Tag> for Reference {
    fn from(t: Tag) -> Reference {
        Reference::Tag(t)
    }
}

impl From<Digest> for Reference {
    fn from(d: Digest) -> Reference {
        Reference::Digest(d)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_err(s: &str) -> &'static str {
        match s.parse::<RepoName>() {
            Err(NameError::InvalidRepoName { reason, .. }) => reason,
            other => panic!("{s:?}: expected InvalidRepoName, got {other:?}"),
        }
    }

    #[test]
    fn valid_repo_names() {
        for name in [
            "a",
            "ab",
            "busybox",
            "library/busybox",
            "my-org/app",
            "my--org/app",
            "my---org/a-b-c",
            "a.b/c_d/e__f",
            "0/1/2",
            "foo.bar.baz",
            "registry/sub/path/deep/x9",
            "a_b.c-d__e",
        ] {
            let n: RepoName = name.parse().unwrap();
            assert_eq!(n.as_str(), name);
            assert_eq!(n.to_string(), name);
            assert_eq!(n.len(), name.len());
            assert!(!n.is_empty());
        }
        let n: RepoName = "a/b/c".parse().unwrap();
        assert_eq!(n.components().collect::<Vec<_>>(), ["a", "b", "c"]);
        let max = "a".repeat(MAX_REPO_NAME_LEN);
        assert!(max.parse::<RepoName>().is_ok());
    }

    #[test]
    fn invalid_repo_names() {
        assert_eq!(repo_err(""), "must not be empty");
        assert_eq!(
            repo_err(&"a".repeat(MAX_REPO_NAME_LEN + 1)),
            "longer than 255 characters"
        );
        assert_eq!(repo_err("Busybox"), "uppercase letters are not allowed");
        assert_eq!(
            repo_err("library/Busybox"),
            "uppercase letters are not allowed"
        );
        for s in ["/a", "a/", "a//b", "/", "//"] {
            assert_eq!(repo_err(s), "empty path component", "{s}");
        }
        for s in [".a", "_a", "-a", "a/.b", "a/-b", "a/__b"] {
            assert_eq!(repo_err(s), "path component starts with a separator", "{s}");
        }
        for s in ["a.", "a_", "a-", "a__", "a/b.", "a/b-", "a.b/c-"] {
            assert_eq!(repo_err(s), "path component ends with a separator", "{s}");
        }
        for s in [
            "a..b", "a___b", "a._b", "a_.b", "a-.b", "a.-b", "a-_b", "a_-b", "a/b..c",
        ] {
            assert!(repo_err(s).starts_with("invalid separator"), "{s}");
        }
        for s in [
            "a b", "a:b", "a@b", "a\\b", "é", "a\nb", "a\0", "a%2fb", "a+b",
        ] {
            assert!(repo_err(s).starts_with("invalid character"), "{s:?}");
        }
        // ".." as a whole component is rejected too.
        assert!("a/../b".parse::<RepoName>().is_err());
        assert!("..".parse::<RepoName>().is_err());
    }

    #[test]
    fn repo_name_error_message() {
        assert_eq!(
            "Foo".parse::<RepoName>().unwrap_err().to_string(),
            "invalid repository name \"Foo\": uppercase letters are not allowed"
        );
    }

    #[test]
    fn repo_name_serde() {
        let n: RepoName = serde_json::from_str("\"library/busybox\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"library/busybox\"");
        let err = serde_json::from_str::<RepoName>("\"a//b\"").unwrap_err();
        assert!(err.to_string().contains("empty path component"), "{err}");
        assert_eq!(RepoName::try_from("x".to_owned()).unwrap().as_str(), "x");
        assert_eq!(String::from(n), "library/busybox");
    }

    #[test]
    fn valid_tags() {
        for tag in [
            "latest",
            "v1.2.3",
            "_private",
            "1",
            "A",
            "Build-42_final.RC1",
            "sha256-abc.sig",
            "a..b",
            "x-",
        ] {
            let t: Tag = tag.parse().unwrap();
            assert_eq!(t.as_str(), tag);
            assert_eq!(t.to_string(), tag);
        }
        assert!("a".repeat(MAX_TAG_LEN).parse::<Tag>().is_ok());
    }

    #[test]
    fn invalid_tags() {
        for (tag, reason) in [
            ("", "must not be empty"),
            (".hidden", "must start with a letter, digit or '_'"),
            ("-x", "must start with a letter, digit or '_'"),
            (
                "a:b",
                "invalid character (allowed: a-z, A-Z, 0-9, '.', '_', '-')",
            ),
            (
                "a/b",
                "invalid character (allowed: a-z, A-Z, 0-9, '.', '_', '-')",
            ),
            (
                "a b",
                "invalid character (allowed: a-z, A-Z, 0-9, '.', '_', '-')",
            ),
            (
                "tä",
                "invalid character (allowed: a-z, A-Z, 0-9, '.', '_', '-')",
            ),
            (
                "a+b",
                "invalid character (allowed: a-z, A-Z, 0-9, '.', '_', '-')",
            ),
        ] {
            assert_eq!(
                tag.parse::<Tag>(),
                Err(NameError::InvalidTag {
                    tag: tag.into(),
                    reason
                }),
                "{tag:?}"
            );
        }
        let long = "a".repeat(MAX_TAG_LEN + 1);
        assert!(matches!(
            long.parse::<Tag>(),
            Err(NameError::InvalidTag {
                reason: "longer than 128 characters",
                ..
            })
        ));
        assert!(serde_json::from_str::<Tag>("\"-bad\"").is_err());
        assert_eq!(
            serde_json::to_string(&serde_json::from_str::<Tag>("\"v1\"").unwrap()).unwrap(),
            "\"v1\""
        );
    }

    #[test]
    fn references() {
        let r: Reference = "latest".parse().unwrap();
        assert_eq!(r.as_tag().map(Tag::as_str), Some("latest"));
        assert!(r.as_digest().is_none());
        assert_eq!(r.to_string(), "latest");

        let d = Digest::sha256_of(b"x");
        let r: Reference = d.as_str().parse().unwrap();
        assert_eq!(r.as_digest(), Some(&d));
        assert!(r.as_tag().is_none());
        assert_eq!(r.as_str(), d.as_str());
        assert_eq!(Reference::from(d.clone()), r);
        assert_eq!(
            Reference::from("v1".parse::<Tag>().unwrap()),
            "v1".parse::<Reference>().unwrap()
        );

        // ':' means digest, so an invalid digest is a digest error, never a tag.
        assert_eq!(
            "sha256:xyz".parse::<Reference>(),
            Err(NameError::Digest(DigestError::Invalid("sha256:xyz".into())))
        );
        assert_eq!(
            "md5:abc".parse::<Reference>(),
            Err(NameError::Digest(DigestError::UnsupportedAlgorithm(
                "md5".into()
            )))
        );
        assert_eq!(
            "sha256:xyz".parse::<Reference>().unwrap_err().to_string(),
            "invalid digest \"sha256:xyz\""
        );
        assert!(matches!(
            "".parse::<Reference>(),
            Err(NameError::InvalidTag { .. })
        ));
        assert!(matches!(
            "bad/tag".parse::<Reference>(),
            Err(NameError::InvalidTag { .. })
        ));
    }
}
