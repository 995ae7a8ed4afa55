//! `--ulimit NAME=SOFT[:HARD]`: Docker's names (go-units `ulimit.go`) → OCI rlimits.

use oci_spec::runtime::PosixRlimitType;
use serde::{Deserialize, Serialize};

/// Docker's ulimit names and their OCI types.
const NAMES: [(&str, PosixRlimitType); 15] = [
    ("core", PosixRlimitType::RlimitCore),
    ("cpu", PosixRlimitType::RlimitCpu),
    ("data", PosixRlimitType::RlimitData),
    ("fsize", PosixRlimitType::RlimitFsize),
    ("locks", PosixRlimitType::RlimitLocks),
    ("memlock", PosixRlimitType::RlimitMemlock),
    ("msgqueue", PosixRlimitType::RlimitMsgqueue),
    ("nice", PosixRlimitType::RlimitNice),
    ("nofile", PosixRlimitType::RlimitNofile),
    ("nproc", PosixRlimitType::RlimitNproc),
    ("rss", PosixRlimitType::RlimitRss),
    ("rtprio", PosixRlimitType::RlimitRtprio),
    ("rttime", PosixRlimitType::RlimitRttime),
    ("sigpending", PosixRlimitType::RlimitSigpending),
    ("stack", PosixRlimitType::RlimitStack),
];

/// Errors of `--ulimit`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlimitError {
    #[error("invalid ulimit argument: {0}")]
    Syntax(String),
    #[error("invalid ulimit type: {0}")]
    Name(String),
    #[error("invalid ulimit argument: {0} (a number, or -1 for unlimited)")]
    Value(String),
    #[error("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")]
    SoftAboveHard { soft: i64, hard: i64 },
}

/// One ulimit, as Docker's inspect shows it (`-1`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

fn value(s: &str) -> Result<i64, UlimitError> {
    match s {
        "unlimited" => Ok(-1),
        _ => s
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= -1)
            .ok_or_else(|| UlimitError::Value(s.to_string())),
    }
}

/// An rlimit value of the kernel (`-1` is `RLIM_INFINITY`).
fn limit(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Ulimit {
    /// `NAME=SOFT[:HARD]` (HARD defaults to SOFT; `-1` or `unlimited`: no limit).
    pub fn parse(s: &str) -> Result<Ulimit, UlimitError> {
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| UlimitError::Syntax(s.to_string()))?;
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (value(soft)?, value(hard)?),
            None => {
                let v = value(values)?;
                (v, v)
            }
        };
        Ulimit::new(name, soft, hard)
    }

    /// Checks the name and `soft <= hard`.
    pub fn new(name: &str, soft: i64, hard: i64) -> Result<Ulimit, UlimitError> {
        if limit(soft) > limit(hard) {
            return Err(UlimitError::SoftAboveHard { soft, hard });
        }
        let u = Ulimit {
            name: name.to_string(),
            soft,
            hard,
        };
        u.typ()?;
        Ok(u)
    }

    /// The OCI rlimit type.
    pub fn typ(&self) -> Result<PosixRlimitType, UlimitError> {
        NAMES
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, t)| *t)
            .ok_or_else(|| UlimitError::Name(self.name.clone()))
    }

    /// (soft, hard) for the kernel.
    pub fn limits(&self) -> (u64, u64) {
        (limit(self.soft), limit(self.hard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let u = Ulimit::parse("nofile=1024:2048").expect("ulimit");
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 1024, 2048));
        assert_eq!(u.typ(), Ok(PosixRlimitType::RlimitNofile));
        let u = Ulimit::parse("nproc=64").expect("ulimit");
        assert_eq!((u.soft, u.hard), (64, 64));
        let u = Ulimit::parse("core=-1").expect("ulimit");
        assert_eq!(u.limits(), (u64::MAX, u64::MAX));
        let u = Ulimit::parse("memlock=1024:unlimited").expect("ulimit");
        assert_eq!(u.limits(), (1024, u64::MAX));
        for name in [
            "core",
            "cpu",
            "data",
            "fsize",
            "locks",
            "memlock",
            "msgqueue",
            "nice",
            "nofile",
            "nproc",
            "rss",
            "rtprio",
            "rttime",
            "sigpending",
            "stack",
        ] {
            assert!(Ulimit::parse(&format!("{name}=1")).is_ok(), "{name}");
        }
        assert_eq!(
            Ulimit::parse("nofile"),
            Err(UlimitError::Syntax("nofile".into()))
        );
        assert_eq!(Ulimit::parse("as=1"), Err(UlimitError::Name("as".into())));
        assert_eq!(
            Ulimit::parse("NOFILE=1"),
            Err(UlimitError::Name("NOFILE".into()))
        );
        assert_eq!(
            Ulimit::parse("nofile=x"),
            Err(UlimitError::Value("x".into()))
        );
        assert_eq!(
            Ulimit::parse("nofile=-2"),
            Err(UlimitError::Value("-2".into()))
        );
        assert_eq!(
            Ulimit::parse("nofile=10:5"),
            Err(UlimitError::SoftAboveHard { soft: 10, hard: 5 })
        );
        assert!(Ulimit::parse("nofile=-1:5").is_err());
        let json = serde_json::to_value(Ulimit::parse("nofile=1:2").expect("u")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"Name": "nofile", "Soft": 1, "Hard": 2})
        );
    }
}
