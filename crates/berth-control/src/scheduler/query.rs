//! The ECS cluster query language: the expressions of `memberOf` placement constraints and of
//! `ListContainerInstances --filter`.
//!
//! ```text
//! expression := or
//! or         := and (("||" | "or") and)*
//! and        := unary (("&&" | "and") unary)*
//! unary      := ("!" | "not") unary | "(" expression ")" | comparison
//! comparison := subject operator [argument]
//! subject    := attribute:NAME | task:group | agentConnected | agentVersion | ec2InstanceId
//!             | registeredAt | runningTasksCount
//! operator   := == equals | != not_equals | > greater_than | >= greater_than_equal
//!             | < less_than | <= less_than_equal | exists | !exists not_exists
//!             | in | !in not_in | =~ matches | !~ not_matches
//! argument   := value | "[" value ("," value)* "]"            (lists for in / not_in)
//! value      := bare word | 'quoted' | "quoted"
//! ```
//!
//! What ECS documents, implemented as such: the subjects and which operators each accepts
//! (`agentConnected` and `ec2InstanceId`: `== != in !in =~ !~`; `agentVersion`,
//! `registeredAt` and `runningTasksCount`: `== != > >= < <=`), `registeredAt` dates in the four
//! documented forms (`2018-06-18T22:28:28+00:00`, `...Z`, `2018-06-18T22:28:28` read as UTC,
//! `2018-06-18`), argument lists, `=~`/`!~` patterns (see [`super::pattern`]), `&& and || or
//! ! not`, and parentheses only around expressions ("a single expression can't contain
//! parentheses").
//!
//! Where ECS is silent, Berth decides, and says so here:
//! - `attribute:` accepts every operator. A comparison on an attribute the instance lacks is
//!   false (only `!exists` is true), so `attribute:stack != prod` selects instances that have
//!   `stack` with another value, as the ECS guide describes. An attribute without a value
//!   compares as the empty string. `> >= < <=` compare numerically when both sides are
//!   numbers, else as strings.
//! - `task:group` is true for `== in =~ exists` when *any* task on the instance (running,
//!   pending, or placed earlier in the same plan) satisfies it; `!= !in !~ !exists` are the
//!   negations (`task:group != db` ≡ `not(task:group == db)`: anti-affinity).
//! - `agentVersion` compares dotted numbers component by component (`1.14.5 < 1.20`).
//! - A `registeredAt` date without a time stands for that whole UTC day: `== 2018-02-13` is
//!   any time that day, `< 2018-02-13` is before it, `> 2018-02-13` after it.
//! - Values are case-sensitive, `agentConnected`'s `true`/`false` aside. `not in` (two words)
//!   is accepted as a spelling of `not_in`.
//! - `=~` has to match the whole value (Java's `String.matches`). `==` has no wildcards: ECS
//!   documents none; use `=~` (`attribute:ecs.instance-type =~ t2.*`).
//!
//! Parsing validates everything that can be validated without an instance (operators per
//! subject, value types, patterns), so evaluation cannot fail. Nesting (parentheses and
//! negations) is capped at [`MAX_DEPTH`]; the 2000-character limit ECS puts on constraint
//! expressions is enforced where they arrive ([`super::PlacementConstraint::from_wire`]).
//! [`Expression`]'s `Display` prints a canonical form that parses back to the same tree.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use super::pattern::{Pattern, PatternError};
use super::Instance;

/// Deepest nesting of parentheses and negations.
pub const MAX_DEPTH: usize = 100;
/// Longest attribute name ECS accepts.
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 128;

/// A parse error: what went wrong and at which column (1-based, in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at column {column}")]
pub struct QueryError {
    pub column: usize,
    pub kind: QueryErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryErrorKind {
    #[error("empty expression")]
    Empty,
    #[error("expected a subject (attribute:NAME, task:group, agentConnected, agentVersion, ec2InstanceId, registeredAt or runningTasksCount)")]
    ExpectedSubject,
    #[error("unknown subject '{0}'")]
    UnknownSubject(String),
    #[error("invalid attribute name '{0}': 1 to 128 letters, digits, '-', '_', '.', '/' or '\\'")]
    InvalidAttributeName(String),
    #[error("expected an operator after {0}")]
    ExpectedOperator(String),
    #[error("operator '{op}' is not valid for {subject}")]
    InvalidOperator { op: String, subject: String },
    #[error("expected a value")]
    ExpectedValue,
    #[error("unterminated quoted value")]
    UnterminatedQuote,
    #[error("expected '[' to start the argument list of '{0}'")]
    ExpectedList(String),
    #[error("empty argument list")]
    EmptyList,
    #[error("expected ',' or ']' in the argument list")]
    UnterminatedList,
    #[error("invalid value '{0}' for agentConnected: expected true or false")]
    InvalidBool(String),
    #[error("invalid value '{0}' for runningTasksCount: expected a non-negative integer")]
    InvalidCount(String),
    #[error("invalid value '{0}' for agentVersion: expected a version like 1.14.5")]
    InvalidVersion(String),
    #[error("invalid value '{0}' for registeredAt: expected 2018-06-18T22:28:28+00:00, 2018-06-18T22:28:28Z, 2018-06-18T22:28:28 or 2018-06-18")]
    InvalidDate(String),
    #[error("invalid pattern '{pattern}': {message}")]
    InvalidPattern { pattern: String, message: String },
    #[error("expected 'and', 'or', ')' or the end of the expression")]
    ExpectedConnective,
    #[error("missing ')'")]
    MissingParen,
    #[error("unmatched ')'")]
    UnmatchedParen,
    #[error("expression nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// A validated cluster query expression.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Expression {
    root: Expr,
}

/// The expression tree. `And`/`Or` hold two or more operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(Comparison),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub subject: Subject,
    pub op: Operator,
    pub arg: Argument,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    AgentConnected,
    AgentVersion,
    /// `attribute:NAME`
    Attribute(String),
    Ec2InstanceId,
    RegisteredAt,
    RunningTasksCount,
    /// `task:group`
    TaskGroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Argument {
    /// `exists` / `!exists`
    None,
    Value(Value),
    /// `in` / `!in`; never empty.
    List(Vec<Value>),
    /// `=~` / `!~`
    Pattern(Pattern),
}

/// A literal, typed by its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    /// `agentConnected`
    Bool(bool),
    /// `runningTasksCount`
    Count(u64),
    /// `agentVersion`: the dotted components.
    Version(Vec<u64>),
    /// `registeredAt`
    Date(DateArg),
}

/// A `registeredAt` argument: an instant, or (`date_only`) the UTC day starting at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateArg {
    pub epoch_secs: i64,
    pub date_only: bool,
}

const SECS_PER_DAY: i64 = 86_400;

impl Subject {
    fn allows(&self, op: Operator) -> bool {
        use Operator::*;
        match self {
            Subject::Attribute(_) => true,
            Subject::AgentConnected | Subject::Ec2InstanceId => {
                matches!(op, Eq | Ne | In | NotIn | Matches | NotMatches)
            }
            Subject::AgentVersion | Subject::RegisteredAt | Subject::RunningTasksCount => {
                matches!(op, Eq | Ne | Gt | Ge | Lt | Le)
            }
            Subject::TaskGroup => {
                matches!(
                    op,
                    Eq | Ne | In | NotIn | Matches | NotMatches | Exists | NotExists
                )
            }
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::AgentConnected => f.write_str("agentConnected"),
            Subject::AgentVersion => f.write_str("agentVersion"),
            Subject::Attribute(name) => write!(f, "attribute:{name}"),
            Subject::Ec2InstanceId => f.write_str("ec2InstanceId"),
            Subject::RegisteredAt => f.write_str("registeredAt"),
            Subject::RunningTasksCount => f.write_str("runningTasksCount"),
            Subject::TaskGroup => f.write_str("task:group"),
        }
    }
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "==",
            Operator::Ne => "!=",
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Exists => "exists",
            Operator::NotExists => "!exists",
            Operator::In => "in",
            Operator::NotIn => "!in",
            Operator::Matches => "=~",
            Operator::NotMatches => "!~",
        }
    }

    /// The positive form of a negative operator (`!=` → `==`), or `None`.
    fn negated(self) -> Option<Operator> {
        match self {
            Operator::Ne => Some(Operator::Eq),
            Operator::NotExists => Some(Operator::Exists),
            Operator::NotIn => Some(Operator::In),
            Operator::NotMatches => Some(Operator::Matches),
            _ => None,
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Characters that end a bare value (besides whitespace).
fn ends_bare(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ',' | '\'' | '"' | '&' | '|')
}

fn write_text(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    if !text.is_empty() && !text.chars().any(ends_bare) {
        return f.write_str(text);
    }
    f.write_str("'")?;
    for c in text.chars() {
        if c == '\\' || c == '\'' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("'")
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(t) => write_text(f, t),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Count(n) => write!(f, "{n}"),
            Value::Version(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
            Value::Date(d) => {
                let Ok(t) = time::OffsetDateTime::from_unix_timestamp(d.epoch_secs) else {
                    return Err(fmt::Error);
                };
                write!(
                    f,
                    "{:04}-{:02}-{:02}",
                    t.year(),
                    u8::from(t.month()),
                    t.day()
                )?;
                if !d.date_only {
                    write!(f, "T{:02}:{:02}:{:02}Z", t.hour(), t.minute(), t.second())?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.subject, self.op)?;
        match &self.arg {
            Argument::None => Ok(()),
            Argument::Value(v) => write!(f, " {v}"),
            Argument::List(items) => {
                f.write_str(" [")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Argument::Pattern(p) => {
                f.write_str(" ")?;
                write_text(f, p.as_str())
            }
        }
    }
}

impl fmt::Display for Expr {
    /// Parentheses only where the tree needs them, so printing never nests deeper than the
    /// text it was parsed from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn operand(f: &mut fmt::Formatter<'_>, e: &Expr, paren: bool) -> fmt::Result {
            if paren {
                write!(f, "({e})")
            } else {
                write!(f, "{e}")
            }
        }
        match self {
            Expr::Cmp(c) => write!(f, "{c}"),
            Expr::Not(inner) => {
                f.write_str("not ")?;
                operand(f, inner, matches!(**inner, Expr::And(_) | Expr::Or(_)))
            }
            Expr::And(items) => {
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    operand(f, e, matches!(e, Expr::And(_) | Expr::Or(_)))?;
                }
                Ok(())
            }
            Expr::Or(items) => {
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    operand(f, e, matches!(e, Expr::Or(_)))?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root)
    }
}

impl FromStr for Expression {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self, QueryError> {
        Expression::parse(s)
    }
}

impl TryFrom<String> for Expression {
    type Error = QueryError;
    fn try_from(s: String) -> Result<Self, QueryError> {
        Expression::parse(&s)
    }
}

impl From<Expression> for String {
    fn from(e: Expression) -> String {
        e.to_string()
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

type PResult<T> = Result<T, QueryError>;

fn is_subject_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, ':' | '.' | '-' | '_' | '/' | '\\')
}

fn is_attribute_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '\\')
}

impl Parser {
    fn error<T>(&self, column: usize, kind: QueryErrorKind) -> PResult<T> {
        Err(QueryError { column, kind })
    }

    fn col(&self) -> usize {
        self.pos + 1
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn starts_with(&self, s: &str) -> bool {
        let rest = self.chars.get(self.pos..).unwrap_or_default();
        s.chars().count() <= rest.len() && s.chars().zip(rest).all(|(a, &b)| a == b)
    }

    /// `kw` at the cursor, followed by something that cannot continue a word.
    fn keyword(&self, kw: &str) -> bool {
        self.starts_with(kw)
            && self
                .chars
                .get(self.pos + kw.chars().count())
                .is_none_or(|&c| {
                    c.is_whitespace() || matches!(c, '(' | ')' | '!' | '[' | '\'' | '"')
                })
    }

    fn or(&mut self, depth: usize) -> PResult<Expr> {
        let mut items = vec![self.and(depth)?];
        loop {
            self.ws();
            if self.starts_with("||") || self.keyword("or") {
                self.pos += 2;
                items.push(self.and(depth)?);
            } else {
                break;
            }
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self, depth: usize) -> PResult<Expr> {
        let mut items = vec![self.unary(depth)?];
        loop {
            self.ws();
            if self.starts_with("&&") {
                self.pos += 2;
            } else if self.keyword("and") {
                self.pos += 3;
            } else {
                break;
            }
            items.push(self.unary(depth)?);
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self, depth: usize) -> PResult<Expr> {
        self.ws();
        let at = self.col();
        let skip = if self.peek() == Some('!') {
            1
        } else if self.keyword("not") {
            3
        } else if self.peek() == Some('(') {
            if depth >= MAX_DEPTH {
                return self.error(at, QueryErrorKind::TooDeep);
            }
            self.pos += 1;
            let inner = self.or(depth + 1)?;
            self.ws();
            if self.peek() != Some(')') {
                return self.error(self.col(), QueryErrorKind::MissingParen);
            }
            self.pos += 1;
            return Ok(inner);
        } else {
            return self.comparison().map(Expr::Cmp);
        };
        if depth >= MAX_DEPTH {
            return self.error(at, QueryErrorKind::TooDeep);
        }
        self.pos += skip;
        Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
    }

    fn comparison(&mut self) -> PResult<Comparison> {
        self.ws();
        let at = self.col();
        let start = self.pos;
        while self.peek().is_some_and(is_subject_char) {
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        let subject = match word.as_str() {
            "" => return self.error(at, QueryErrorKind::ExpectedSubject),
            "agentConnected" => Subject::AgentConnected,
            "agentVersion" => Subject::AgentVersion,
            "ec2InstanceId" => Subject::Ec2InstanceId,
            "registeredAt" => Subject::RegisteredAt,
            "runningTasksCount" => Subject::RunningTasksCount,
            "task:group" => Subject::TaskGroup,
            w => match w.strip_prefix("attribute:") {
                Some(name) => {
                    if name.is_empty()
                        || name.chars().count() > MAX_ATTRIBUTE_NAME_LEN
                        || !name.chars().all(is_attribute_name_char)
                    {
                        return self.error(
                            at + "attribute:".len(),
                            QueryErrorKind::InvalidAttributeName(name.to_owned()),
                        );
                    }
                    Subject::Attribute(name.to_owned())
                }
                None => return self.error(at, QueryErrorKind::UnknownSubject(word)),
            },
        };
        self.ws();
        let op_at = self.col();
        let Some(op) = self.operator() else {
            return self.error(op_at, QueryErrorKind::ExpectedOperator(subject.to_string()));
        };
        if !subject.allows(op) {
            return self.error(
                op_at,
                QueryErrorKind::InvalidOperator {
                    op: op.as_str().to_owned(),
                    subject: subject.to_string(),
                },
            );
        }
        let arg = match op {
            Operator::Exists | Operator::NotExists => Argument::None,
            Operator::In | Operator::NotIn => {
                self.ws();
                if self.peek() != Some('[') {
                    return self.error(
                        self.col(),
                        QueryErrorKind::ExpectedList(op.as_str().to_owned()),
                    );
                }
                let open = self.col();
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.ws();
                    if items.is_empty() && self.peek() == Some(']') {
                        return self.error(open, QueryErrorKind::EmptyList);
                    }
                    items.push(self.value(&subject)?);
                    self.ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(']') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return self.error(self.col(), QueryErrorKind::UnterminatedList),
                    }
                }
                Argument::List(items)
            }
            Operator::Matches | Operator::NotMatches => {
                self.ws();
                let at = self.col();
                let quoted = matches!(self.peek(), Some('\'' | '"'));
                let text = self.text()?;
                match Pattern::new(&text) {
                    Ok(p) => Argument::Pattern(p),
                    Err(PatternError { offset, message }) => {
                        return self.error(
                            at + offset + usize::from(quoted),
                            QueryErrorKind::InvalidPattern {
                                pattern: text,
                                message,
                            },
                        )
                    }
                }
            }
            _ => Argument::Value(self.value(&subject)?),
        };
        Ok(Comparison { subject, op, arg })
    }

    fn operator(&mut self) -> Option<Operator> {
        const SYMBOLS: [(&str, Operator); 8] = [
            ("==", Operator::Eq),
            ("!=", Operator::Ne),
            (">=", Operator::Ge),
            ("<=", Operator::Le),
            ("=~", Operator::Matches),
            ("!~", Operator::NotMatches),
            (">", Operator::Gt),
            ("<", Operator::Lt),
        ];
        if self.keyword("!exists") {
            self.pos += 7;
            return Some(Operator::NotExists);
        }
        if self.keyword("!in") {
            self.pos += 3;
            return Some(Operator::NotIn);
        }
        for (sym, op) in SYMBOLS {
            if self.starts_with(sym) {
                self.pos += sym.len();
                return Some(op);
            }
        }
        const WORDS: [(&str, Operator); 12] = [
            ("greater_than_equal", Operator::Ge),
            ("greater_than", Operator::Gt),
            ("less_than_equal", Operator::Le),
            ("less_than", Operator::Lt),
            ("not_equals", Operator::Ne),
            ("equals", Operator::Eq),
            ("not_exists", Operator::NotExists),
            ("exists", Operator::Exists),
            ("not_in", Operator::NotIn),
            ("in", Operator::In),
            ("not_matches", Operator::NotMatches),
            ("matches", Operator::Matches),
        ];
        for (word, op) in WORDS {
            if self.keyword(word) {
                self.pos += word.len();
                return Some(op);
            }
        }
        if self.keyword("not") {
            let save = self.pos;
            self.pos += 3;
            self.ws();
            if self.keyword("in") {
                self.pos += 2;
                return Some(Operator::NotIn);
            }
            self.pos = save;
        }
        None
    }

    /// A bare or quoted value, as text.
    fn text(&mut self) -> PResult<String> {
        self.ws();
        let at = self.col();
        match self.peek() {
            Some(q @ ('\'' | '"')) => {
                self.pos += 1;
                let mut out = String::new();
                loop {
                    match self.peek() {
                        None => return self.error(at, QueryErrorKind::UnterminatedQuote),
                        Some('\\')
                            if matches!(self.chars.get(self.pos + 1), Some('\\' | '\'' | '"')) =>
                        {
                            out.push(self.chars[self.pos + 1]);
                            self.pos += 2;
                        }
                        Some(c) if c == q => {
                            self.pos += 1;
                            return Ok(out);
                        }
                        Some(c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| !ends_bare(c)) {
                    self.pos += 1;
                }
                if self.pos == start {
                    return self.error(at, QueryErrorKind::ExpectedValue);
                }
                Ok(self.chars[start..self.pos].iter().collect())
            }
        }
    }

    fn value(&mut self, subject: &Subject) -> PResult<Value> {
        self.ws();
        let at = self.col();
        let text = self.text()?;
        match subject {
            Subject::AgentConnected => match text.to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => self.error(at, QueryErrorKind::InvalidBool(text)),
            },
            Subject::RunningTasksCount => match text.parse::<u64>() {
                Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(Value::Count(n)),
                _ => self.error(at, QueryErrorKind::InvalidCount(text)),
            },
            Subject::AgentVersion => match parse_version(&text) {
                Some(v) => Ok(Value::Version(v)),
                None => self.error(at, QueryErrorKind::InvalidVersion(text)),
            },
            Subject::RegisteredAt => match parse_date(&text) {
                Some(d) => Ok(Value::Date(d)),
                None => self.error(at, QueryErrorKind::InvalidDate(text)),
            },
            Subject::Attribute(_) | Subject::Ec2InstanceId | Subject::TaskGroup => {
                Ok(Value::Text(text))
            }
        }
    }
}

/// `1.14.5` → `[1, 14, 5]`.
fn parse_version(s: &str) -> Option<Vec<u64>> {
    s.split('.')
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse().ok()
            }
        })
        .collect()
}

fn compare_versions(a: &[u64], b: &[u64]) -> Ordering {
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        match x.cmp(&y) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// The four documented `registeredAt` forms; times without an offset are UTC.
fn parse_date(s: &str) -> Option<DateArg> {
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(&b[0..4])?).ok()?;
    let month = time::Month::try_from(u8::try_from(digits(&b[5..7])?).ok()?).ok()?;
    let day = u8::try_from(digits(&b[8..10])?).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let (time_of_day, offset, date_only) = if b.len() == 10 {
        (time::Time::MIDNIGHT, time::UtcOffset::UTC, true)
    } else {
        if b.len() < 19 || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let t = time::Time::from_hms(
            u8::try_from(digits(&b[11..13])?).ok()?,
            u8::try_from(digits(&b[14..16])?).ok()?,
            u8::try_from(digits(&b[17..19])?).ok()?,
        )
        .ok()?;
        let offset = match &b[19..] {
            [] | [b'Z'] => time::UtcOffset::UTC,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let h = i8::try_from(digits(&[*h1, *h2])?).ok()?;
                let m = i8::try_from(digits(&[*m1, *m2])?).ok()?;
                if h > 23 || m > 59 {
                    return None;
                }
                let sign = if *sign == b'-' { -1 } else { 1 };
                time::UtcOffset::from_hms(sign * h, sign * m, 0).ok()?
            }
            _ => return None,
        };
        (t, offset, false)
    };
    let instant = time::PrimitiveDateTime::new(date, time_of_day).assume_offset(offset);
    // Printing writes a four-digit UTC year; keep what parses within that.
    let utc = time::OffsetDateTime::from_unix_timestamp(instant.unix_timestamp()).ok()?;
    if !(0..=9999).contains(&utc.year()) {
        return None;
    }
    Some(DateArg {
        epoch_secs: instant.unix_timestamp(),
        date_only,
    })
}

/// The result of an operator given how the subject compares to the argument.
fn by_ordering(op: Operator, ord: Option<Ordering>) -> bool {
    match op {
        Operator::Eq => ord == Some(Ordering::Equal),
        Operator::Ne => ord != Some(Ordering::Equal),
        Operator::Gt => ord == Some(Ordering::Greater),
        Operator::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        Operator::Lt => ord == Some(Ordering::Less),
        Operator::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        _ => false,
    }
}

/// Attribute ordering: numeric when both sides are numbers, else by string.
fn compare_attribute(a: &str, b: &str) -> Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) if x.is_finite() && y.is_finite() => {
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        _ => a.cmp(b),
    }
}

/// A string subject against a string-typed argument (`==` … `!~`).
fn text_test(op: Operator, subject: &str, arg: &Argument) -> bool {
    match (op, arg) {
        (Operator::Eq, Argument::Value(Value::Text(v))) => subject == v,
        (Operator::Ne, Argument::Value(Value::Text(v))) => subject != v,
        (
            Operator::Gt | Operator::Ge | Operator::Lt | Operator::Le,
            Argument::Value(Value::Text(v)),
        ) => by_ordering(op, Some(compare_attribute(subject, v))),
        (Operator::In, Argument::List(items)) => items
            .iter()
            .any(|v| matches!(v, Value::Text(t) if t == subject)),
        (Operator::NotIn, Argument::List(items)) => !items
            .iter()
            .any(|v| matches!(v, Value::Text(t) if t == subject)),
        (Operator::Matches, Argument::Pattern(p)) => p.is_match(subject),
        (Operator::NotMatches, Argument::Pattern(p)) => !p.is_match(subject),
        (Operator::Exists, _) => true,
        _ => false,
    }
}

impl Comparison {
    fn eval(&self, inst: &Instance, planned_group: Option<&str>) -> bool {
        let op = self.op;
        match &self.subject {
            Subject::Attribute(name) => match inst.attributes.get(name) {
                None => op == Operator::NotExists,
                Some(value) => text_test(op, value.as_deref().unwrap_or(""), &self.arg),
            },
            Subject::TaskGroup => {
                let (positive, negate) = match op.negated() {
                    Some(p) => (p, true),
                    None => (op, false),
                };
                let any = inst
                    .running_tasks
                    .iter()
                    .map(|t| t.group.as_str())
                    .chain(planned_group)
                    .any(|g| text_test(positive, g, &self.arg));
                any != negate
            }
            Subject::Ec2InstanceId => text_test(op, &inst.ec2_instance_id, &self.arg),
            Subject::AgentConnected => match &self.arg {
                Argument::Pattern(_) => text_test(
                    op,
                    if inst.agent_connected {
                        "true"
                    } else {
                        "false"
                    },
                    &self.arg,
                ),
                Argument::List(items) => {
                    let hit = items.contains(&Value::Bool(inst.agent_connected));
                    hit == (op == Operator::In)
                }
                Argument::Value(Value::Bool(b)) => {
                    by_ordering(op, Some(inst.agent_connected.cmp(b)))
                }
                _ => false,
            },
            Subject::AgentVersion => {
                let ord = match (&self.arg, parse_version(&inst.agent_version)) {
                    (Argument::Value(Value::Version(v)), Some(mine)) => {
                        Some(compare_versions(&mine, v))
                    }
                    _ => None,
                };
                by_ordering(op, ord)
            }
            Subject::RegisteredAt => {
                let ord = match &self.arg {
                    Argument::Value(Value::Date(d)) => {
                        let t = inst.registered_at_epoch_secs;
                        Some(if !d.date_only {
                            t.cmp(&d.epoch_secs)
                        } else if t < d.epoch_secs {
                            Ordering::Less
                        } else if t >= d.epoch_secs.saturating_add(SECS_PER_DAY) {
                            Ordering::Greater
                        } else {
                            Ordering::Equal
                        })
                    }
                    _ => None,
                };
                by_ordering(op, ord)
            }
            Subject::RunningTasksCount => {
                let ord = match &self.arg {
                    Argument::Value(Value::Count(n)) => {
                        Some(u64::from(inst.running_tasks_count).cmp(n))
                    }
                    _ => None,
                };
                by_ordering(op, ord)
            }
        }
    }
}

impl Expr {
    fn eval(&self, inst: &Instance, planned_group: Option<&str>) -> bool {
        match self {
            Expr::And(items) => items.iter().all(|e| e.eval(inst, planned_group)),
            Expr::Or(items) => items.iter().any(|e| e.eval(inst, planned_group)),
            Expr::Not(e) => !e.eval(inst, planned_group),
            Expr::Cmp(c) => c.eval(inst, planned_group),
        }
    }

    fn references_task_group(&self) -> bool {
        match self {
            Expr::And(items) | Expr::Or(items) => items.iter().any(Expr::references_task_group),
            Expr::Not(e) => e.references_task_group(),
            Expr::Cmp(c) => c.subject == Subject::TaskGroup,
        }
    }
}

impl Expression {
    /// Parses and validates an expression.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let mut p = Parser {
            chars: text.chars().collect(),
            pos: 0,
        };
        p.ws();
        if p.peek().is_none() {
            return p.error(1, QueryErrorKind::Empty);
        }
        let root = p.or(0)?;
        p.ws();
        match p.peek() {
            None => Ok(Self { root }),
            Some(')') => p.error(p.col(), QueryErrorKind::UnmatchedParen),
            Some(_) => p.error(p.col(), QueryErrorKind::ExpectedConnective),
        }
    }

    /// The tree.
    pub fn root(&self) -> &Expr {
        &self.root
    }

    /// Whether `instance` is a member of the group this expression defines.
    pub fn matches(&self, instance: &Instance) -> bool {
        self.root.eval(instance, None)
    }

    /// As [`Self::matches`], counting one more task of `planned_group` on the instance (one
    /// placed earlier in the same plan).
    pub(crate) fn matches_with(&self, instance: &Instance, planned_group: Option<&str>) -> bool {
        self.root.eval(instance, planned_group)
    }

    /// Whether the result can change when tasks are placed (it mentions `task:group`).
    pub fn references_task_group(&self) -> bool {
        self.root.references_task_group()
    }
}
