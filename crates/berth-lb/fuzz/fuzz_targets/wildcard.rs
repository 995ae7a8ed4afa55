//! The ELBv2 wildcard matcher against a dynamic-programming reference, both case modes.
//! Input: pattern and text separated by the first NUL byte.
#![no_main]

use berth_lb::pattern::Pattern;
use libfuzzer_sys::fuzz_target;

fn char_eq(p: char, t: char, ic: bool) -> bool {
    p == t || (ic && p.to_lowercase().eq(t.to_lowercase()))
}

fn reference(p: &str, t: &str, ic: bool) -> bool {
    let p: Vec<char> = p.chars().collect();
    let t: Vec<char> = t.chars().collect();
    let mut prev = vec![false; t.len() + 1];
    prev[0] = true;
    for &pc in &p {
        let mut cur = vec![false; t.len() + 1];
        for j in 0..=t.len() {
            cur[j] = match pc {
                '*' => prev[j] || (j > 0 && cur[j - 1]),
                '?' => j > 0 && prev[j - 1],
                c => j > 0 && prev[j - 1] && char_eq(c, t[j - 1], ic),
            };
        }
        prev = cur;
    }
    prev[t.len()]
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (p, t) = s.split_once('\0').unwrap_or((s, ""));
    if p.len() > 64 || t.len() > 256 {
        return;
    }
    assert_eq!(Pattern::new(p).matches(t), reference(p, t, false), "{p:?} {t:?}");
    assert_eq!(
        Pattern::new_ignore_case(p).matches(t),
        reference(p, t, true),
        "{p:?} {t:?} (ignore case)"
    );
});
