//! Amazon Resource Names: `arn:partition:service:region:account:resource`.

use std::fmt;
use std::str::FromStr;

/// Formats an ARN from its parts.
pub fn arn(partition: &str, service: &str, region: &str, account: &str, resource: &str) -> String {
    format!("arn:{partition}:{service}:{region}:{account}:{resource}")
}

/// A parsed ARN. `region` and `account` may be empty (global resources); `resource` keeps any
/// further `:` or `/` separators as they are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Arn {
    pub partition: String,
    pub service: String,
    pub region: String,
    pub account: String,
    pub resource: String,
}

/// Why a string is not an ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    #[error("arn must start with \"arn:\": {0:?}")]
    Prefix(String),
    #[error("arn must have six colon-separated parts: {0:?}")]
    Parts(String),
    #[error("arn has an empty {part}: {arn:?}")]
    Empty { part: &'static str, arn: String },
}

impl Arn {
    /// The resource split at its first `/` or `:` into type and id, e.g. `repository/app` →
    /// `("repository", Some("app"))`.
    pub fn resource_type_and_id(&self) -> (&str, Option<&str>) {
        match self.resource.find(['/', ':']) {
            Some(i) => (&self.resource[..i], Some(&self.resource[i + 1..])),
            None => (&self.resource, None),
        }
    }
}

impl FromStr for Arn {
    type Err = ArnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("arn:")
            .ok_or_else(|| ArnError::Prefix(s.to_string()))?;
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, service, region, account, resource] = parts.as_slice() else {
            return Err(ArnError::Parts(s.to_string()));
        };
        for (part, value) in [
            ("partition", partition),
            ("service", service),
            ("resource", resource),
        ] {
            if value.is_empty() {
                return Err(ArnError::Empty {
                    part,
                    arn: s.to_string(),
                });
            }
        }
        Ok(Arn {
            partition: (*partition).to_string(),
            service: (*service).to_string(),
            region: (*region).to_string(),
            account: (*account).to_string(),
            resource: (*resource).to_string(),
        })
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&arn(
            &self.partition,
            &self.service,
            &self.region,
            &self.account,
            &self.resource,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        let s = arn(
            "aws",
            "ecr",
            "us-east-1",
            "123456789012",
            "repository/web/frontend",
        );
        assert_eq!(
            s,
            "arn:aws:ecr:us-east-1:123456789012:repository/web/frontend"
        );
        let a: Arn = s.parse().expect("parse");
        assert_eq!(a.partition, "aws");
        assert_eq!(a.service, "ecr");
        assert_eq!(a.region, "us-east-1");
        assert_eq!(a.account, "123456789012");
        assert_eq!(a.resource, "repository/web/frontend");
        assert_eq!(
            a.resource_type_and_id(),
            ("repository", Some("web/frontend"))
        );
        assert_eq!(a.to_string(), s);
    }

    #[test]
    fn resource_may_contain_colons_and_scope_may_be_empty() {
        let a: Arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3"
            .parse()
            .expect("parse");
        assert_eq!(a.resource, "task-definition/web:3");
        let a: Arn = "arn:aws:iam::123456789012:role/x".parse().expect("parse");
        assert_eq!(a.region, "");
        let a: Arn = "arn:aws:logs:us-east-1:1:log-group:g:*"
            .parse()
            .expect("parse");
        assert_eq!(a.resource_type_and_id(), ("log-group", Some("g:*")));
        let a: Arn = "arn:aws:s3:::bucket".parse().expect("parse");
        assert_eq!(a.resource_type_and_id(), ("bucket", None));
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            "aws:ecr:r:a:x".parse::<Arn>(),
            Err(ArnError::Prefix(_))
        ));
        assert!(matches!(
            "arn:aws:ecr:r".parse::<Arn>(),
            Err(ArnError::Parts(_))
        ));
        assert!(matches!(
            "arn::ecr:r:a:x".parse::<Arn>(),
            Err(ArnError::Empty {
                part: "partition",
                ..
            })
        ));
        assert!(matches!(
            "arn:aws:ecr:r:a:".parse::<Arn>(),
            Err(ArnError::Empty {
                part: "resource",
                ..
            })
        ));
    }
}
