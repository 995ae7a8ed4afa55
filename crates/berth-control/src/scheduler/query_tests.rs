//! Cluster query language tests: parsing, errors and their columns, printing, evaluation.

use std::collections::BTreeMap;

use super::query::*;
use super::{Instance, TaskOnInstance};

fn parse(s: &str) -> Expression {
    Expression::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn error(s: &str) -> QueryError {
    match Expression::parse(s) {
        Ok(e) => panic!("{s:?} parsed as {e:?}"),
        Err(e) => e,
    }
}

fn cmp(subject: Subject, op: Operator, arg: Argument) -> Expr {
    Expr::Cmp(Comparison { subject, op, arg })
}

fn attr(name: &str) -> Subject {
    Subject::Attribute(name.into())
}

fn text(s: &str) -> Argument {
    Argument::Value(Value::Text(s.into()))
}

#[test]
fn the_documented_examples_parse() {
    for s in [
        "attribute:ecs.instance-type == t2.small",
        "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
        "attribute:ecs.instance-type =~ g2.* and attribute:ecs.availability-zone != us-east-1d",
        "task:group == service:production",
        "not(task:group == database)",
        "runningTasksCount == 1",
        "agentVersion < 1.14.5",
        "registeredAt < 2018-02-13",
        "ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']",
        "(attribute:a == x or attribute:b == y) and attribute:c == z",
        "attribute:ecs.os-type == linux",
        "attribute:stack != prod",
        "attribute:ecs.instance-type in [t2.small, t2.medium]",
        "agentConnected == false",
        "registeredAt >= 2018-06-18T22:28:28+00:00",
        "registeredAt >= 2018-06-18T22:28:28Z",
        "registeredAt >= 2018-06-18T22:28:28",
    ] {
        parse(s);
    }
}

#[test]
fn tree_shapes() {
    assert_eq!(
        parse("attribute:ecs.instance-type == t2.small").root(),
        &cmp(attr("ecs.instance-type"), Operator::Eq, text("t2.small"))
    );
    assert_eq!(
        parse("ec2InstanceId in ['i-abcd1234', \"i-wxyx7890\"]").root(),
        &cmp(
            Subject::Ec2InstanceId,
            Operator::In,
            Argument::List(vec![
                Value::Text("i-abcd1234".into()),
                Value::Text("i-wxyx7890".into())
            ])
        )
    );
    // and binds tighter than or; chains are flat.
    let a = cmp(attr("a"), Operator::Exists, Argument::None);
    let b = cmp(attr("b"), Operator::Exists, Argument::None);
    let c = cmp(attr("c"), Operator::Exists, Argument::None);
    assert_eq!(
        parse("attribute:a exists or attribute:b exists and attribute:c exists").root(),
        &Expr::Or(vec![a.clone(), Expr::And(vec![b.clone(), c.clone()])])
    );
    assert_eq!(
        parse("attribute:a exists && attribute:b exists && attribute:c exists").root(),
        &Expr::And(vec![a.clone(), b.clone(), c.clone()])
    );
    assert_eq!(
        parse("(attribute:a exists || attribute:b exists) && attribute:c exists").root(),
        &Expr::And(vec![Expr::Or(vec![a.clone(), b.clone()]), c.clone()])
    );
    assert_eq!(
        parse("!attribute:a exists").root(),
        &Expr::Not(Box::new(a.clone()))
    );
    assert_eq!(
        parse("not not(attribute:a exists)").root(),
        &Expr::Not(Box::new(Expr::Not(Box::new(a))))
    );
}

#[test]
fn word_operators_equal_symbols() {
    for (word, sym) in [
        ("equals", "=="),
        ("not_equals", "!="),
        ("greater_than", ">"),
        ("greater_than_equal", ">="),
        ("less_than", "<"),
        ("less_than_equal", "<="),
        ("matches", "=~"),
        ("not_matches", "!~"),
    ] {
        assert_eq!(
            parse(&format!("attribute:x {word} 5")),
            parse(&format!("attribute:x {sym} 5")),
            "{word}"
        );
    }
    assert_eq!(
        parse("attribute:x not_exists"),
        parse("attribute:x !exists")
    );
    assert_eq!(
        parse("attribute:x not_in [a]"),
        parse("attribute:x !in [a]")
    );
    assert_eq!(
        parse("attribute:x not in [a]"),
        parse("attribute:x !in [a]")
    );
    // No spaces needed around symbols.
    assert_eq!(
        parse("attribute:x==5&&attribute:y!=6"),
        parse("attribute:x == 5 and attribute:y != 6")
    );
}

#[test]
fn typed_values() {
    assert_eq!(
        parse("agentConnected == TRUE").root(),
        &cmp(
            Subject::AgentConnected,
            Operator::Eq,
            Argument::Value(Value::Bool(true))
        )
    );
    assert_eq!(
        parse("runningTasksCount >= 007").root(),
        &cmp(
            Subject::RunningTasksCount,
            Operator::Ge,
            Argument::Value(Value::Count(7))
        )
    );
    assert_eq!(
        parse("agentVersion < 1.14.5").root(),
        &cmp(
            Subject::AgentVersion,
            Operator::Lt,
            Argument::Value(Value::Version(vec![1, 14, 5]))
        )
    );
    assert_eq!(
        parse("registeredAt < 2018-02-13").root(),
        &cmp(
            Subject::RegisteredAt,
            Operator::Lt,
            Argument::Value(Value::Date(DateArg {
                epoch_secs: 1_518_480_000,
                date_only: true
            }))
        )
    );
    // Offsets are folded into UTC.
    assert_eq!(
        parse("registeredAt < 2018-06-18T22:28:28+02:00"),
        parse("registeredAt < 2018-06-18T20:28:28Z")
    );
    assert_eq!(
        parse("registeredAt < 2018-06-18T22:28:28"),
        parse("registeredAt < 2018-06-18T22:28:28Z")
    );
}

#[test]
fn errors_name_the_column() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 1, "empty expression"),
        ("   ", 1, "empty expression"),
        ("instanceType == t2", 1, "unknown subject 'instanceType'"),
        ("attribute: == x", 11, "invalid attribute name ''"),
        ("attribute:a:b == x", 11, "invalid attribute name 'a:b'"),
        (
            "attribute:x ~= y",
            13,
            "expected an operator after attribute:x",
        ),
        ("attribute:x", 12, "expected an operator after attribute:x"),
        (
            "agentConnected > true",
            16,
            "operator '>' is not valid for agentConnected",
        ),
        (
            "runningTasksCount in [1]",
            19,
            "operator 'in' is not valid for runningTasksCount",
        ),
        (
            "registeredAt =~ 2018.*",
            14,
            "operator '=~' is not valid for registeredAt",
        ),
        (
            "task:group < a",
            12,
            "operator '<' is not valid for task:group",
        ),
        (
            "ec2InstanceId exists",
            15,
            "operator 'exists' is not valid for ec2InstanceId",
        ),
        ("attribute:x ==", 15, "expected a value"),
        ("attribute:x == (y)", 16, "expected a value"),
        ("attribute:x == 'y", 16, "unterminated quoted value"),
        (
            "attribute:x in a",
            16,
            "expected '[' to start the argument list of 'in'",
        ),
        ("attribute:x in []", 16, "empty argument list"),
        (
            "attribute:x in [a b]",
            19,
            "expected ',' or ']' in the argument list",
        ),
        ("attribute:x in [a,", 19, "expected a value"),
        (
            "agentConnected == yes",
            19,
            "invalid value 'yes' for agentConnected: expected true or false",
        ),
        (
            "runningTasksCount == -1",
            22,
            "invalid value '-1' for runningTasksCount: expected a non-negative integer",
        ),
        (
            "agentVersion < 1..4",
            16,
            "invalid value '1..4' for agentVersion: expected a version like 1.14.5",
        ),
        (
            "registeredAt < 2018-13-01",
            16,
            "invalid value '2018-13-01' for registeredAt",
        ),
        (
            "registeredAt < 2018-02-30",
            16,
            "invalid value '2018-02-30' for registeredAt",
        ),
        ("registeredAt < 2018-02-03T25:00:00Z", 16, "invalid value"),
        ("registeredAt < 2018-02-03T10:00:00.5Z", 16, "invalid value"),
        (
            "attribute:x =~ 'ab(c'",
            19,
            "invalid pattern 'ab(c': unclosed group",
        ),
        (
            "attribute:x =~ ab*+",
            19,
            "invalid pattern 'ab*+': possessive",
        ),
        // Parentheses end a bare value: patterns with groups are quoted.
        ("attribute:x =~ ab(c)", 18, "expected 'and', 'or'"),
        ("attribute:x =~ 'a\\1'", 18, "invalid pattern"),
        (
            "attribute:x == y z",
            18,
            "expected 'and', 'or', ')' or the end of the expression",
        ),
        (
            "attribute:x == y andattribute:z exists",
            18,
            "expected 'and', 'or'",
        ),
        ("(attribute:x == y", 18, "missing ')'"),
        ("attribute:x == y)", 17, "unmatched ')'"),
        ("attribute:x == y and", 21, "expected a subject"),
        ("not", 4, "expected a subject"),
        ("== y", 1, "expected a subject"),
    ];
    for (input, column, message) in cases {
        let e = error(input);
        assert_eq!(e.column, *column, "{input:?}: {e}");
        assert!(
            e.to_string().starts_with(message),
            "{input:?}: {e} (wanted {message})"
        );
        assert!(
            e.to_string().ends_with(&format!(" at column {column}")),
            "{e}"
        );
    }
}

#[test]
fn columns_count_characters_not_bytes() {
    let e = error("attribute:zone == 'é' zzz");
    assert_eq!(e.column, 23);
}

#[test]
fn nesting_is_capped() {
    let ok = format!(
        "{}attribute:x exists{}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    parse(&ok);
    let deep = format!(
        "{}attribute:x exists{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    let e = error(&deep);
    assert_eq!(e.kind, QueryErrorKind::TooDeep);
    assert_eq!(e.column, MAX_DEPTH + 1);
    parse(&format!("{}attribute:x exists", "!".repeat(MAX_DEPTH)));
    assert_eq!(
        error(&format!(
            "{}attribute:x exists",
            "not ".repeat(MAX_DEPTH + 1)
        ))
        .kind,
        QueryErrorKind::TooDeep
    );
    // Hostile input: deep, long, no stack overflow.
    let _ = Expression::parse(&"(".repeat(100_000));
    let _ = Expression::parse(&"!".repeat(100_000));
}

#[test]
fn display_round_trips() {
    for s in [
        "attribute:ecs.instance-type == t2.small",
        "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
        "attribute:ecs.instance-type =~ g2.* and attribute:ecs.availability-zone != us-east-1d",
        "not(task:group == database)",
        "not (a_b_c) == x",
        "ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']",
        "attribute:x == 'a b' or attribute:y == 'it''s'",
        "attribute:x == 'back\\\\slash \\' quote'",
        "attribute:x == \"double 'quoted'\"",
        "attribute:x =~ '(a|b)+[,]'",
        "((attribute:a exists or attribute:b exists) or attribute:c exists) and not not attribute:d !exists",
        "attribute:a exists or (attribute:b exists and attribute:c exists) or attribute:d exists",
        "(attribute:a exists and attribute:b exists) and attribute:c exists",
        "registeredAt > 2018-06-18T22:28:28+05:30 || registeredAt == 2018-06-18",
        "agentVersion >= 01.2.000 && runningTasksCount != 0 && agentConnected in [TRUE, false]",
        "task:group !in [service:a, 'family:b c']",
        "attribute:empty == ''",
    ] {
        let Ok(e) = Expression::parse(s) else {
            // A few inputs above are meant to be rejected; they must still not panic.
            continue;
        };
        let printed = e.to_string();
        assert_eq!(parse(&printed), e, "{s:?} printed as {printed:?}");
        // Printing is canonical.
        assert_eq!(parse(&printed).to_string(), printed);
    }
    assert_eq!(
        parse("not(task:group==database)&&attribute:x in[a,'b c']").to_string(),
        "not task:group == database and attribute:x in [a, 'b c']"
    );
    assert_eq!(
        parse("registeredAt > 2018-06-18T22:28:28+05:30").to_string(),
        "registeredAt > 2018-06-18T16:58:28Z"
    );
    assert_eq!(
        parse("attribute:a exists or attribute:b exists and attribute:c exists").to_string(),
        "attribute:a exists or attribute:b exists and attribute:c exists"
    );
}

#[test]
fn serde_uses_the_text() {
    let e: Expression = serde_json::from_str("\"attribute:x == y\"").expect("valid expression");
    assert_eq!(e, parse("attribute:x == y"));
    assert_eq!(
        serde_json::to_string(&e).expect("serializes"),
        "\"attribute:x == y\""
    );
    assert!(serde_json::from_str::<Expression>("\"attribute:x ==\"").is_err());
}

fn instance() -> Instance {
    let mut attributes = BTreeMap::new();
    attributes.insert("ecs.instance-type".to_owned(), Some("t2.small".to_owned()));
    attributes.insert("flag".to_owned(), None);
    attributes.insert("version".to_owned(), Some("10".to_owned()));
    Instance {
        arn: "arn:aws:ecs:us-east-1:1:container-instance/c/1".into(),
        ec2_instance_id: "i-abcd1234".into(),
        status: "ACTIVE".into(),
        agent_connected: true,
        registered_at_epoch_secs: 1_518_480_000 + 3600, // 2018-02-13T01:00:00Z
        agent_version: "1.14.5".into(),
        running_tasks_count: 2,
        running_tasks: vec![
            TaskOnInstance {
                group: "service:web".into(),
                ..TaskOnInstance::default()
            },
            TaskOnInstance {
                group: "family:batch".into(),
                ..TaskOnInstance::default()
            },
        ],
        attributes,
        ..Instance::default()
    }
}

#[test]
fn evaluation() {
    let i = instance();
    let cases: &[(&str, bool)] = &[
        ("attribute:ecs.instance-type == t2.small", true),
        ("attribute:ecs.instance-type == T2.SMALL", false),
        ("attribute:ecs.instance-type == t2.*", false),
        ("attribute:ecs.instance-type =~ t2.*", true),
        ("attribute:ecs.instance-type =~ t2", false),
        ("attribute:missing != x", false),
        ("attribute:missing !in [x]", false),
        ("attribute:missing !exists", true),
        ("attribute:flag exists", true),
        ("attribute:flag == ''", true),
        ("attribute:flag != x", true),
        ("attribute:version > 9", true),
        ("attribute:version > 9a", false),
        ("attribute:version < 9a", true),
        ("task:group == service:web", true),
        ("task:group == service:api", false),
        ("task:group != service:web", false),
        ("task:group != service:api", true),
        ("task:group =~ family:.*", true),
        ("task:group !~ family:.*", false),
        ("task:group in [service:api, family:batch]", true),
        ("task:group !in [service:api, family:batch]", false),
        ("task:group exists", true),
        ("task:group !exists", false),
        ("ec2InstanceId == i-abcd1234", true),
        ("ec2InstanceId !in ['i-abcd1234']", false),
        ("ec2InstanceId =~ 'i-[a-d]{4}\\d+'", true),
        ("agentConnected == true", true),
        ("agentConnected != true", false),
        ("agentConnected !in [false]", true),
        ("agentConnected =~ tr.*", true),
        ("agentVersion == 1.14.5.0", true),
        ("agentVersion > 1.14", true),
        ("agentVersion < 1.100", true),
        ("registeredAt == 2018-02-13", true),
        ("registeredAt != 2018-02-13", false),
        ("registeredAt > 2018-02-12", true),
        ("registeredAt >= 2018-02-13", true),
        ("registeredAt <= 2018-02-13", true),
        ("registeredAt < 2018-02-14", true),
        ("registeredAt > 2018-02-13T00:59:59Z", true),
        ("registeredAt > 2018-02-13T01:00:00Z", false),
        ("registeredAt == 2018-02-13T03:00:00+02:00", true),
        ("runningTasksCount == 2", true),
        ("runningTasksCount < 2", false),
        ("not runningTasksCount < 2", true),
        (
            "runningTasksCount == 2 and not (task:group == service:web or attribute:flag exists)",
            false,
        ),
        ("runningTasksCount == 3 || attribute:flag exists", true),
    ];
    for (expr, want) in cases {
        assert_eq!(parse(expr).matches(&i), *want, "{expr}");
    }
    let mut unparsable = instance();
    unparsable.agent_version = "dev".into();
    assert!(!parse("agentVersion >= 0").matches(&unparsable));
    assert!(parse("agentVersion != 1.0").matches(&unparsable));
    assert!(parse("task:group == service:api").references_task_group());
    assert!(!parse("attribute:a exists").references_task_group());
}
