//! Placement strategies and constraints, and their wire forms (`{"type", "field"}` and
//! `{"type", "expression"}` in RunTask, CreateService, UpdateService and task definitions).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::query::{Expression, QueryError};

/// Most strategies a task may have (ECS: "a maximum of 5 strategy rules").
pub const MAX_STRATEGIES: usize = 5;
/// Most constraints a task may have, the task definition's included.
pub const MAX_CONSTRAINTS: usize = 10;
/// Longest `memberOf` expression ECS accepts.
pub const MAX_EXPRESSION_LEN: usize = 2000;

/// Why a strategy or constraint from the wire was refused. The messages are what the API
/// returns in an `InvalidParameterException`. Only "distinctInstance expression should not be
/// specified" and "constraint.type 'distinctInstance' is not supported" are ECS's own words
/// (seen in client reports); the others are ours, in the same voice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("placement strategy type '{0}' is not valid: expected random, spread or binpack")]
    UnknownStrategyType(String),
    #[error("placement strategy field must be specified for type {0}")]
    MissingField(&'static str),
    #[error("binpack placement strategy field '{0}' is not valid: expected cpu or memory")]
    InvalidBinpackField(String),
    #[error("spread placement strategy field '{0}' is not valid: expected instanceId, host or attribute:NAME")]
    InvalidSpreadField(String),
    #[error("placement constraint type '{0}' is not valid: expected distinctInstance or memberOf")]
    UnknownConstraintType(String),
    #[error("distinctInstance expression should not be specified")]
    DistinctInstanceExpression,
    #[error("constraint.type 'distinctInstance' is not supported")]
    DistinctInstanceInTaskDefinition,
    #[error("memberOf expression must be specified")]
    MissingExpression,
    #[error("memberOf expression must be at most {MAX_EXPRESSION_LEN} characters")]
    ExpressionTooLong,
    #[error("memberOf expression '{expression}' is not valid: {error}")]
    InvalidExpression {
        expression: String,
        error: QueryError,
    },
    #[error("a task can have at most {MAX_STRATEGIES} placement strategies, got {0}")]
    TooManyStrategies(usize),
    #[error("a task can have at most {MAX_CONSTRAINTS} placement constraints (its task definition's included), got {0}")]
    TooManyConstraints(usize),
}

/// How `place` orders the instances that can take a task. Strategies apply in order; each
/// breaks the ties of the one before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireStrategy", into = "WireStrategy")]
pub enum PlacementStrategy {
    /// Uniformly at random (seeded); later strategies never get a tie to break.
    Random,
    /// Fewest tasks of the request's group per value of `field`.
    Spread { field: SpreadField },
    /// Least remaining CPU or memory.
    Binpack { field: BinpackField },
}

/// What `spread` balances over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpreadField {
    /// `instanceId`: each instance is its own bucket.
    InstanceId,
    /// `host`: the same as `instanceId` (kept apart only to echo what the client sent).
    Host,
    /// `attribute:NAME`: instances sharing the attribute's value share a bucket; instances
    /// without the attribute share one more bucket.
    Attribute(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinpackField {
    Cpu,
    Memory,
}

/// Rules an instance must satisfy to get the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireConstraint", into = "WireConstraint")]
pub enum PlacementConstraint {
    /// No two tasks of the request's group on one instance (counting tasks already there).
    DistinctInstance,
    /// Only instances the expression selects.
    MemberOf(Expression),
}

/// `PlacementStrategy` as ECS spells it in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStrategy {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `PlacementConstraint` / `TaskDefinitionPlacementConstraint` as ECS spells it in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireConstraint {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= super::query::MAX_ATTRIBUTE_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '\\'))
}

impl PlacementStrategy {
    /// Parses a strategy as it arrives in a request. `field` is ignored for `random` (ECS:
    /// "not used"); `cpu`, `memory`, `instanceId` and `host` are matched without regard to case.
    pub fn from_wire(kind: &str, field: Option<&str>) -> Result<Self, PlacementError> {
        match kind {
            "random" => Ok(Self::Random),
            "binpack" => match field.map(str::to_ascii_lowercase).as_deref() {
                None | Some("") => Err(PlacementError::MissingField("binpack")),
                Some("cpu") => Ok(Self::Binpack {
                    field: BinpackField::Cpu,
                }),
                Some("memory") => Ok(Self::Binpack {
                    field: BinpackField::Memory,
                }),
                Some(_) => Err(PlacementError::InvalidBinpackField(
                    field.unwrap_or_default().to_owned(),
                )),
            },
            "spread" => {
                let field = match field {
                    None | Some("") => return Err(PlacementError::MissingField("spread")),
                    Some(f) => f,
                };
                let spread = if field.eq_ignore_ascii_case("instanceId") {
                    SpreadField::InstanceId
                } else if field.eq_ignore_ascii_case("host") {
                    SpreadField::Host
                } else {
                    match field.strip_prefix("attribute:") {
                        Some(name) if valid_attribute_name(name) => {
                            SpreadField::Attribute(name.to_owned())
                        }
                        _ => return Err(PlacementError::InvalidSpreadField(field.to_owned())),
                    }
                };
                Ok(Self::Spread { field: spread })
            }
            other => Err(PlacementError::UnknownStrategyType(other.to_owned())),
        }
    }

    /// The wire `type`.
    pub fn wire_type(&self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Spread { .. } => "spread",
            Self::Binpack { .. } => "binpack",
        }
    }

    /// The wire `field` (`None` for random).
    pub fn wire_field(&self) -> Option<String> {
        match self {
            Self::Random => None,
            Self::Spread {
                field: SpreadField::InstanceId,
            } => Some("instanceId".into()),
            Self::Spread {
                field: SpreadField::Host,
            } => Some("host".into()),
            Self::Spread {
                field: SpreadField::Attribute(name),
            } => Some(format!("attribute:{name}")),
            Self::Binpack {
                field: BinpackField::Cpu,
            } => Some("cpu".into()),
            Self::Binpack {
                field: BinpackField::Memory,
            } => Some("memory".into()),
        }
    }

    /// What ECS applies to service tasks when the service names no strategy: spread over
    /// `attribute:ecs.availability-zone`. (Standalone tasks with no strategy are placed at
    /// random; see the module documentation.)
    pub fn service_default() -> Vec<Self> {
        vec![Self::Spread {
            field: SpreadField::Attribute("ecs.availability-zone".into()),
        }]
    }
}

impl fmt::Display for PlacementStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.wire_field() {
            Some(field) => write!(f, "{}({field})", self.wire_type()),
            None => f.write_str(self.wire_type()),
        }
    }
}

impl TryFrom<WireStrategy> for PlacementStrategy {
    type Error = PlacementError;
    fn try_from(w: WireStrategy) -> Result<Self, PlacementError> {
        Self::from_wire(&w.kind, w.field.as_deref())
    }
}

impl From<PlacementStrategy> for WireStrategy {
    fn from(s: PlacementStrategy) -> Self {
        WireStrategy {
            kind: s.wire_type().to_owned(),
            field: s.wire_field(),
        }
    }
}

impl PlacementConstraint {
    /// Parses a constraint of RunTask, CreateService or UpdateService.
    pub fn from_wire(kind: &str, expression: Option<&str>) -> Result<Self, PlacementError> {
        match kind {
            "distinctInstance" => match expression {
                None => Ok(Self::DistinctInstance),
                Some(_) => Err(PlacementError::DistinctInstanceExpression),
            },
            "memberOf" => {
                let text = match expression {
                    None => return Err(PlacementError::MissingExpression),
                    Some(t) if t.trim().is_empty() => {
                        return Err(PlacementError::MissingExpression)
                    }
                    Some(t) => t,
                };
                if text.chars().count() > MAX_EXPRESSION_LEN {
                    return Err(PlacementError::ExpressionTooLong);
                }
                Expression::parse(text)
                    .map(Self::MemberOf)
                    .map_err(|error| PlacementError::InvalidExpression {
                        expression: text.to_owned(),
                        error,
                    })
            }
            other => Err(PlacementError::UnknownConstraintType(other.to_owned())),
        }
    }

    /// Parses a constraint of RegisterTaskDefinition, where only `memberOf` is allowed.
    pub fn from_wire_task_definition(
        kind: &str,
        expression: Option<&str>,
    ) -> Result<Self, PlacementError> {
        if kind == "distinctInstance" {
            return Err(PlacementError::DistinctInstanceInTaskDefinition);
        }
        Self::from_wire(kind, expression)
    }

    pub fn wire_type(&self) -> &'static str {
        match self {
            Self::DistinctInstance => "distinctInstance",
            Self::MemberOf(_) => "memberOf",
        }
    }

    /// The wire `expression`, in canonical form.
    pub fn wire_expression(&self) -> Option<String> {
        match self {
            Self::DistinctInstance => None,
            Self::MemberOf(e) => Some(e.to_string()),
        }
    }
}

impl TryFrom<WireConstraint> for PlacementConstraint {
    type Error = PlacementError;
    fn try_from(w: WireConstraint) -> Result<Self, PlacementError> {
        Self::from_wire(&w.kind, w.expression.as_deref())
    }
}

impl From<PlacementConstraint> for WireConstraint {
    fn from(c: PlacementConstraint) -> Self {
        WireConstraint {
            kind: c.wire_type().to_owned(),
            expression: c.wire_expression(),
        }
    }
}

/// The per-task limits: at most [`MAX_STRATEGIES`] strategies and [`MAX_CONSTRAINTS`]
/// constraints (the request's and the task definition's together).
pub fn check_limits(
    strategies: &[PlacementStrategy],
    constraints: &[PlacementConstraint],
) -> Result<(), PlacementError> {
    if strategies.len() > MAX_STRATEGIES {
        return Err(PlacementError::TooManyStrategies(strategies.len()));
    }
    if constraints.len() > MAX_CONSTRAINTS {
        return Err(PlacementError::TooManyConstraints(constraints.len()));
    }
    Ok(())
}
