//! Docker-style image references: `[DOMAIN/]PATH[:TAG][@DIGEST]`.
//!
//! The first `/`-separated component is a registry domain when it contains `.` or `:` or is
//! `localhost`; otherwise the domain is `docker.io`, where a one-component path gets the
//! `library/` prefix (`busybox` → `docker.io/library/busybox:latest`). Locally, images are
//! named in Docker's "familiar" form: `docker.io/` and `library/` are dropped again.

use std::fmt;
use std::str::FromStr;

use berth_oci::{Digest, RepoName, Tag};

/// The default registry of bare names.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API is.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key of Docker Hub in docker's `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A reference that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference format: {0}")]
pub struct InvalidReference(pub String);

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry domain, e.g. `docker.io`, `localhost:5000`.
    pub domain: String,
    /// Repository path in the registry, e.g. `library/busybox`.
    pub path: RepoName,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<Tag>,
    /// The digest, when given (`name@sha256:...`); it wins over the tag for pulls.
    pub digest: Option<Digest>,
}

fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

impl FromStr for ImageRef {
    type Err = InvalidReference;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidReference(s.to_string());
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::from_str(d).map_err(|_| bad())?)),
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        let (domain, path) = match name.split_once('/') {
            Some((h, p)) if h.contains(['.', ':']) || h == "localhost" => (h.to_string(), p),
            _ => (DOCKER_HUB.to_string(), name),
        };
        if !is_domain(&domain) {
            return Err(bad());
        }
        let domain = if domain == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            domain
        };
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let path = RepoName::from_str(&path).map_err(|_| bad())?;
        let tag = match tag {
            Some(t) => Some(Tag::from_str(t).map_err(|_| bad())?),
            None if digest.is_none() => Some(Tag::from_str("latest").map_err(|_| bad())?),
            None => None,
        };
        Ok(ImageRef {
            domain,
            path,
            tag,
            digest,
        })
    }
}

impl ImageRef {
    /// The repository in Docker's familiar form: `busybox`, `user/app`,
    /// `localhost:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DOCKER_HUB {
            let p = self.path.as_str();
            p.strip_prefix("library/")
                .filter(|rest| !rest.contains('/'))
                .unwrap_or(p)
                .to_string()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The key of this image in the engine's tag file: `NAME@DIGEST` for digest references,
    /// else `NAME:TAG`.
    pub fn local_key(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{d}", self.familiar_name()),
            (None, Some(t)) => format!("{}:{t}", self.familiar_name()),
            (None, None) => format!("{}:latest", self.familiar_name()),
        }
    }

    /// The `<reference>` part of a manifest URL: the digest if any, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        }
    }

    /// Where the registry API of this domain is (`docker.io` → `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        if self.domain == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.domain
        }
    }

    /// This reference with `tag` instead of its tag and digest.
    pub fn with_tag(&self, tag: Tag) -> ImageRef {
        ImageRef {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag),
            digest: None,
        }
    }
}

impl fmt::Display for ImageRef {
    /// The familiar form with the tag and/or digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar_name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageRef {
        s.parse().expect(s)
    }

    #[test]
    fn docker_hub_names() {
        let r = p("busybox");
        assert_eq!(r.domain, "docker.io");
        assert_eq!(r.path.as_str(), "library/busybox");
        assert_eq!(r.manifest_reference(), "latest");
        assert_eq!(r.local_key(), "busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("docker.io/library/busybox:1").local_key(), "busybox:1");
        assert_eq!(p("index.docker.io/user/app").local_key(), "user/app:latest");
        assert_eq!(p("user/app:2").path.as_str(), "user/app");
    }

    #[test]
    fn registries_tags_digests() {
        let r = p("localhost:5000/app:1");
        assert_eq!(r.domain, "localhost:5000");
        assert_eq!(r.path.as_str(), "app");
        assert_eq!(r.local_key(), "localhost:5000/app:1");
        let d = "sha256:".to_string() + &"ab".repeat(32);
        let r = p(&format!("127.0.0.1:5000/a/b@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.local_key(), format!("127.0.0.1:5000/a/b@{d}"));
        let r = p(&format!("app:1@{d}"));
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(p("localhost/app").domain, "localhost");
        assert_eq!(p("example.com/app").to_string(), "example.com/app:latest");
    }

    #[test]
    fn rejects() {
        for s in [
            "",
            "UPPER",
            "a:b:c!",
            "app@sha256:12",
            "a//b",
            "/a",
            "a/",
            "a:",
            "bad host!/x",
        ] {
            assert!(s.parse::<ImageRef>().is_err(), "{s:?} should be rejected");
        }
    }
}
