//! `dependsOn`: conditions, start order and stop order.
//!
//! Containers are grouped in levels: a container's level is one more than the highest level of
//! the containers it depends on. Containers start level by level (in definition order within a
//! level) and stop in reverse: the highest level first, the containers of one level together.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// When a container may start relative to one it depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Condition {
    /// The dependency has started.
    Start,
    /// The dependency has exited (any code).
    Complete,
    /// The dependency has exited with code 0 (else the task fails).
    Success,
    /// The dependency's health check passed (it must have one).
    Healthy,
}

impl Condition {
    pub fn parse(s: &str) -> Option<Condition> {
        match s {
            "START" => Some(Condition::Start),
            "COMPLETE" => Some(Condition::Complete),
            "SUCCESS" => Some(Condition::Success),
            "HEALTHY" => Some(Condition::Healthy),
            _ => None,
        }
    }

    /// Whether the dependency must have exited first.
    pub fn needs_exit(self) -> bool {
        matches!(self, Condition::Complete | Condition::Success)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Condition::Start => "START",
            Condition::Complete => "COMPLETE",
            Condition::Success => "SUCCESS",
            Condition::Healthy => "HEALTHY",
        })
    }
}

/// Why the dependencies of a task cannot be ordered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("container {container} depends on {dependency}, which is not in the task")]
    Unknown {
        container: String,
        dependency: String,
    },
    #[error("container {0} depends on itself")]
    SelfDependency(String),
    #[error("container {container} has an invalid dependency condition {condition:?}")]
    BadCondition {
        container: String,
        condition: String,
    },
    #[error("dependency cycle between containers {}", .0.join(", "))]
    Cycle(Vec<String>),
    #[error("two containers are named {0}")]
    DuplicateName(String),
}

/// Levels of `containers` (name, dependency names), each a list of indexes into `containers`.
pub fn levels(containers: &[(String, Vec<String>)]) -> Result<Vec<Vec<usize>>, OrderError> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, (name, _)) in containers.iter().enumerate() {
        if index.insert(name.as_str(), i).is_some() {
            return Err(OrderError::DuplicateName(name.clone()));
        }
    }
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(containers.len());
    for (name, ds) in containers {
        let mut v = Vec::new();
        for d in ds {
            if d == name {
                return Err(OrderError::SelfDependency(name.clone()));
            }
            let j = *index.get(d.as_str()).ok_or_else(|| OrderError::Unknown {
                container: name.clone(),
                dependency: d.clone(),
            })?;
            v.push(j);
        }
        deps.push(v);
    }
    // Kahn's algorithm, keeping the level of each container.
    let n = containers.len();
    let mut level: Vec<Option<usize>> = vec![None; n];
    let mut done = 0;
    while done < n {
        let mut progressed = false;
        for i in 0..n {
            if level[i].is_some() {
                continue;
            }
            let mut max = 0;
            let mut ready = true;
            for &j in &deps[i] {
                match level[j] {
                    Some(l) => max = max.max(l + 1),
                    None => {
                        ready = false;
                        break;
                    }
                }
            }
            if ready {
                level[i] = Some(max);
                done += 1;
                progressed = true;
            }
        }
        if !progressed {
            let cycle = (0..n)
                .filter(|&i| level[i].is_none())
                .map(|i| containers[i].0.clone())
                .collect();
            return Err(OrderError::Cycle(cycle));
        }
    }
    let depth = level.iter().flatten().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); depth];
    for (i, l) in level.into_iter().enumerate() {
        if let Some(l) = l {
            out[l].push(i);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, deps: &[&str]) -> (String, Vec<String>) {
        (
            name.to_string(),
            deps.iter().map(|d| d.to_string()).collect(),
        )
    }

    #[test]
    fn independent_containers_share_a_level() {
        assert_eq!(
            levels(&[c("a", &[]), c("b", &[])]).expect("levels"),
            vec![vec![0, 1]]
        );
        assert_eq!(levels(&[]).expect("levels"), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn dependencies_come_first() {
        // app -> (db, migrate), migrate -> db, sidecar alone.
        let cs = [
            c("app", &["db", "migrate"]),
            c("migrate", &["db"]),
            c("db", &[]),
            c("sidecar", &[]),
        ];
        assert_eq!(
            levels(&cs).expect("levels"),
            vec![vec![2, 3], vec![1], vec![0]]
        );
    }

    #[test]
    fn cycles_and_bad_references() {
        let err = levels(&[c("a", &["b"]), c("b", &["c"]), c("c", &["a"]), c("d", &[])])
            .expect_err("cycle");
        assert_eq!(
            err,
            OrderError::Cycle(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            levels(&[c("a", &["a"])]).expect_err("self"),
            OrderError::SelfDependency("a".into())
        );
        assert!(matches!(
            levels(&[c("a", &["zz"])]).expect_err("unknown"),
            OrderError::Unknown { .. }
        ));
        assert!(matches!(
            levels(&[c("a", &[]), c("a", &[])]).expect_err("dup"),
            OrderError::DuplicateName(_)
        ));
    }

    #[test]
    fn conditions() {
        assert_eq!(Condition::parse("SUCCESS"), Some(Condition::Success));
        assert!(Condition::Complete.needs_exit());
        assert!(!Condition::Healthy.needs_exit());
        assert_eq!(Condition::parse("start"), None);
    }
}
