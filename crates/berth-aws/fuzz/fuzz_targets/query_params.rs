#![no_main]
//! Parses arbitrary bytes as a query-protocol form body and walks it the way an API does:
//! scalars, nested structures and `X.member.N` lists, recursively. Nothing may panic; a list
//! that reads must have members numbered 1..=N; every value read back is a value of the form.

use berth_aws::query::{Node, Params, XmlWriter};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &["Name", "Names", "Tags", "Key", "Value", "Actions", "ForwardConfig",
    "TargetGroups", "Weight", "Conditions", "Values", "PathPatternConfig", "Port", "Enabled"];

fn walk(node: &Node<'_>, depth: usize, out: &mut XmlWriter) {
    if depth > 6 {
        return;
    }
    for name in NAMES {
        let _ = node.int(name);
        let _ = node.int_in(name, 1, 65535);
        let _ = node.bool(name);
        if let Some(s) = node.str(name) {
            out.elem(name, s);
        }
        if let Ok(Some(list)) = node.str_list(name) {
            out.str_list(name, &list);
        }
        if let Ok(Some(items)) = node.list(name) {
            for item in &items {
                walk(item, depth + 1, out);
            }
        }
        if let Some(child) = node.child(name) {
            walk(&child, depth + 1, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(params) = Params::parse(data) else { return };
    let _ = params.action();
    let mut out = XmlWriter::new();
    walk(&params.root(), 0, &mut out);
    let xml = out.finish();
    assert!(!xml.contains("<<"));
});
