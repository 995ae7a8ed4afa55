#![no_main]
//! Parses arbitrary UTF-8 as a cluster query expression (and as a memberOf constraint from
//! the wire). Nothing may panic or overflow the stack; an error must point at a column
//! inside the input (or just past its end); an expression that parses must print to text
//! that parses back to the same tree, and print the same again; evaluating it against an
//! instance must not panic.

use std::collections::BTreeMap;

use berth_control::scheduler::query::Expression;
use berth_control::scheduler::{Instance, PlacementConstraint, TaskOnInstance};
use libfuzzer_sys::fuzz_target;

fn instance() -> Instance {
    let mut attributes = BTreeMap::new();
    attributes.insert("ecs.instance-type".to_owned(), Some("t2.small".to_owned()));
    attributes.insert(
        "ecs.availability-zone".to_owned(),
        Some("us-east-1a".to_owned()),
    );
    attributes.insert("flag".to_owned(), None);
    attributes.insert("n".to_owned(), Some("10".to_owned()));
    Instance {
        arn: "arn:aws:ecs:us-east-1:123456789012:container-instance/c/1".into(),
        ec2_instance_id: "i-abcd1234".into(),
        status: "ACTIVE".into(),
        agent_connected: true,
        registered_at_epoch_secs: 1_518_483_600,
        agent_version: "1.14.5".into(),
        running_tasks_count: 2,
        running_tasks: vec![TaskOnInstance {
            group: "service:web".into(),
            ..TaskOnInstance::default()
        }],
        attributes,
        ..Instance::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = PlacementConstraint::from_wire("memberOf", Some(text));
    match Expression::parse(text) {
        Ok(expr) => {
            let printed = expr.to_string();
            let again = match Expression::parse(&printed) {
                Ok(e) => e,
                Err(e) => panic!("{text:?} printed as {printed:?}, which fails: {e}"),
            };
            assert_eq!(again, expr, "{text:?} printed as {printed:?}");
            assert_eq!(again.to_string(), printed, "printing is not stable");
            let inst = instance();
            let _ = expr.matches(&inst);
            let _ = expr.matches(&Instance::default());
        }
        Err(e) => {
            let len = text.chars().count();
            assert!(
                e.column >= 1 && e.column <= len + 1,
                "column {} outside 1..={} for {text:?}: {e}",
                e.column,
                len + 1
            );
            assert!(!e.to_string().is_empty());
        }
    }
});
