//! Docker restart policies (`--restart`) and the shim's back-off between restarts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// First back-off delay (Docker's restart manager: 100 ms, doubled on each consecutive restart).
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// The back-off never exceeds this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A container that ran at least this long starts the back-off over.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// What the shim does when the container's init exits (Docker's `--restart`).
///
/// A manual stop (`shim::stop`, `shim::kill`) disables restarting for the rest of the shim's
/// life, whatever the policy, so `always` and `unless-stopped` behave the same here: they only
/// differ in Docker when the daemon restarts, and there is no daemon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart (the default).
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times (`None`: no limit).
    #[serde(rename_all = "camelCase")]
    OnFailure { max_retries: Option<u32> },
    /// Restart after any exit.
    Always,
    /// Restart after any exit unless stopped by the user.
    UnlessStopped,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseRestartPolicyError {
    #[error("invalid restart policy {0:?}: expected no, on-failure[:max-retries], always or unless-stopped")]
    Unknown(String),
    #[error("invalid restart policy {0:?}: the maximum retry count is only valid with on-failure")]
    RetriesNotAllowed(String),
    #[error(
        "invalid restart policy {0:?}: the maximum retry count must be a non-negative integer"
    )]
    BadRetries(String),
}

impl FromStr for RestartPolicy {
    type Err = ParseRestartPolicyError;

    /// Docker's syntax: `no`, `on-failure`, `on-failure:N`, `always`, `unless-stopped`. As in
    /// Docker, `on-failure:0` means no limit; an empty string means `no`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, retries) = match s.split_once(':') {
            Some((name, n)) => (name, Some(n)),
            None => (s, None),
        };
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => {
                let max_retries = match retries {
                    None => None,
                    Some(n) => match n.parse::<u32>() {
                        Ok(0) => None,
                        Ok(n) => Some(n),
                        Err(_) => return Err(ParseRestartPolicyError::BadRetries(s.to_owned())),
                    },
                };
                return Ok(RestartPolicy::OnFailure { max_retries });
            }
            _ => return Err(ParseRestartPolicyError::Unknown(s.to_owned())),
        };
        if retries.is_some() {
            return Err(ParseRestartPolicyError::RetriesNotAllowed(s.to_owned()));
        }
        Ok(policy)
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max_retries: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl RestartPolicy {
    /// Whether to restart after an exit with `exit_code` when `restarts` restarts happened so far
    /// (the caller handles manual stops).
    pub fn should_restart(&self, exit_code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && max_retries.is_none_or(|max| restarts < max)
            }
        }
    }
}

/// Docker's restart back-off: 100 ms, doubled on each consecutive restart, at most 1 minute,
/// back to 100 ms once the container ran for 10 s.
#[derive(Debug, Clone, Default)]
pub(crate) struct Backoff {
    delay: Duration,
}

impl Backoff {
    /// The delay before the next restart, for a container that ran `ran_for`.
    pub(crate) fn next(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= BACKOFF_RESET_AFTER {
            self.delay = Duration::ZERO;
        }
        self.delay = if self.delay.is_zero() {
            BACKOFF_INITIAL
        } else {
            (self.delay * 2).min(BACKOFF_MAX)
        };
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_syntax() {
        let p = |s: &str| s.parse::<RestartPolicy>();
        assert_eq!(p("no"), Ok(RestartPolicy::No));
        assert_eq!(p(""), Ok(RestartPolicy::No));
        assert_eq!(p("always"), Ok(RestartPolicy::Always));
        assert_eq!(p("unless-stopped"), Ok(RestartPolicy::UnlessStopped));
        assert_eq!(
            p("on-failure"),
            Ok(RestartPolicy::OnFailure { max_retries: None })
        );
        assert_eq!(
            p("on-failure:5"),
            Ok(RestartPolicy::OnFailure {
                max_retries: Some(5)
            })
        );
        assert_eq!(
            p("on-failure:0"),
            Ok(RestartPolicy::OnFailure { max_retries: None })
        );
    }

    #[test]
    fn rejects_bad_policies_clearly() {
        let err = |s: &str| s.parse::<RestartPolicy>().expect_err(s).to_string();
        assert!(err("sometimes").contains("expected no, on-failure"));
        assert!(err("Always").contains("\"Always\""));
        assert!(err("always:3").contains("only valid with on-failure"));
        assert!(err("no:1").contains("only valid with on-failure"));
        assert!(err("on-failure:-1").contains("non-negative integer"));
        assert!(err("on-failure:x").contains("non-negative integer"));
        assert!(err("on-failure:").contains("non-negative integer"));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "no",
            "on-failure",
            "on-failure:3",
            "always",
            "unless-stopped",
        ] {
            let p: RestartPolicy = s.parse().expect(s);
            assert_eq!(p.to_string(), s);
        }
    }

    #[test]
    fn serde_shape() {
        let p = RestartPolicy::OnFailure {
            max_retries: Some(2),
        };
        let json = serde_json::to_string(&p).expect("encode");
        assert_eq!(json, r#"{"name":"on-failure","maxRetries":2}"#);
        assert_eq!(
            serde_json::from_str::<RestartPolicy>(&json).expect("decode"),
            p
        );
        assert_eq!(
            serde_json::to_string(&RestartPolicy::UnlessStopped).expect("encode"),
            r#"{"name":"unless-stopped"}"#
        );
    }

    #[test]
    fn restart_decisions() {
        let on_failure_2 = RestartPolicy::OnFailure {
            max_retries: Some(2),
        };
        assert!(on_failure_2.should_restart(3, 0));
        assert!(on_failure_2.should_restart(3, 1));
        assert!(!on_failure_2.should_restart(3, 2));
        assert!(!on_failure_2.should_restart(0, 0));
        let unlimited = RestartPolicy::OnFailure { max_retries: None };
        assert!(unlimited.should_restart(1, 1000));
        assert!(!unlimited.should_restart(0, 0));
        assert!(RestartPolicy::Always.should_restart(0, 1000));
        assert!(RestartPolicy::UnlessStopped.should_restart(137, 3));
        assert!(!RestartPolicy::No.should_restart(1, 0));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(50);
        let ms = |n| Duration::from_millis(n);
        assert_eq!(b.next(quick), ms(100));
        assert_eq!(b.next(quick), ms(200));
        assert_eq!(b.next(quick), ms(400));
        for _ in 0..20 {
            b.next(quick);
        }
        assert_eq!(b.next(quick), BACKOFF_MAX);
        assert_eq!(b.next(Duration::from_secs(10)), ms(100));
        assert_eq!(b.next(Duration::from_secs(9)), ms(200));
    }
}
