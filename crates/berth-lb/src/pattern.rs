//! ELBv2 wildcard patterns, as used by path-pattern, host-header, http-header and query-string
//! conditions: `*` matches any run of characters (also none), `?` exactly one character,
//! everything else itself. Characters, not bytes: `?` matches one `é`.
//!
//! Pure and allocation-free on the match path (the pattern is split into characters once, at
//! compile time); the classic greedy algorithm with one backtrack point, so a match costs
//! O(pattern × text) at worst and usually O(text). Fuzzed against a dynamic-programming
//! reference in `fuzz/fuzz_targets/wildcard.rs`.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    chars: Vec<char>,
    ignore_case: bool,
}

impl Pattern {
    /// A case-sensitive pattern (path patterns).
    pub fn new(pattern: &str) -> Pattern {
        Pattern {
            chars: pattern.chars().collect(),
            ignore_case: false,
        }
    }

    /// A case-insensitive pattern (host, header and query-string conditions).
    pub fn new_ignore_case(pattern: &str) -> Pattern {
        Pattern {
            chars: pattern.chars().collect(),
            ignore_case: true,
        }
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        wildcard_match(&self.chars, text, self.ignore_case)
    }
}

/// Whether `text` matches `pattern` (see the module docs), case-sensitively.
pub fn matches(pattern: &str, text: &str) -> bool {
    Pattern::new(pattern).matches(text)
}

/// Whether `text` matches `pattern`, ignoring case (Unicode simple lowercase per character).
pub fn matches_ignore_case(pattern: &str, text: &str) -> bool {
    Pattern::new_ignore_case(pattern).matches(text)
}

fn char_eq(p: char, t: char, ignore_case: bool) -> bool {
    p == t || (ignore_case && p.to_lowercase().eq(t.to_lowercase()))
}

fn wildcard_match(p: &[char], t: &str, ignore_case: bool) -> bool {
    let mut pi = 0usize;
    let mut ti = 0usize;
    // The last `*` seen: its index in `p` and where in `t` its run currently ends.
    let mut star: Option<(usize, usize)> = None;
    loop {
        let tc = t[ti..].chars().next();
        match (p.get(pi), tc) {
            (Some('*'), _) => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            (Some('?'), Some(c)) => {
                pi += 1;
                ti += c.len_utf8();
                continue;
            }
            (Some(&pc), Some(c)) if char_eq(pc, c, ignore_case) => {
                pi += 1;
                ti += c.len_utf8();
                continue;
            }
            (None, None) => return true,
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more character and retry after it.
        let Some((sp, st)) = star else {
            return false;
        };
        let Some(c) = t[st..].chars().next() else {
            return false;
        };
        let st = st + c.len_utf8();
        star = Some((sp, st));
        pi = sp + 1;
        ti = st;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dynamic-programming reference: m[i][j] = p[..i] matches t[..j].
    fn reference(p: &str, t: &str, ic: bool) -> bool {
        let p: Vec<char> = p.chars().collect();
        let t: Vec<char> = t.chars().collect();
        let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
        m[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=t.len() {
                m[i][j] = match p[i - 1] {
                    '*' => m[i - 1][j] || (j > 0 && m[i][j - 1]),
                    '?' => j > 0 && m[i - 1][j - 1],
                    c => j > 0 && m[i - 1][j - 1] && char_eq(c, t[j - 1], ic),
                };
            }
        }
        m[p.len()][t.len()]
    }

    #[test]
    fn literals_and_wildcards() {
        assert!(matches("/api", "/api"));
        assert!(!matches("/api", "/api/"));
        assert!(!matches("/api", "/API"));
        assert!(matches("/api/*", "/api/"));
        assert!(matches("/api/*", "/api/v1/users"));
        assert!(!matches("/api/*", "/api"));
        assert!(matches("*", ""));
        assert!(matches("*", "anything at all"));
        assert!(matches("/img/*.png", "/img/a/b.png"));
        assert!(!matches("/img/*.png", "/img/a/b.png.txt"));
        assert!(matches("/v?/x", "/v1/x"));
        assert!(!matches("/v?/x", "/v10/x"));
        assert!(!matches("?", ""));
        assert!(matches("?", "é"));
        assert!(matches("a*b*c", "aXbYc"));
        assert!(matches("a*b*c", "abbbc"));
        assert!(!matches("a*b*c", "acb"));
        assert!(matches("**a**", "xxa"));
        assert!(!matches("", "a"));
        assert!(matches("", ""));
    }

    #[test]
    fn ignore_case() {
        assert!(matches_ignore_case("*.Example.COM", "api.example.com"));
        assert!(matches_ignore_case("API.example.com", "api.EXAMPLE.com"));
        assert!(!matches_ignore_case("api.example.com", "api.example.org"));
        assert!(matches_ignore_case("ÉCOLE", "école"));
    }

    #[test]
    fn agrees_with_reference_exhaustively() {
        // Every pattern over {a, b, *, ?} up to 5 characters against every text over {a, b, A}
        // up to 5 characters.
        let palpha = ['a', 'b', '*', '?'];
        let talpha = ['a', 'b', 'A'];
        let mut patterns = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for s in &frontier {
                for c in palpha {
                    next.push(format!("{s}{c}"));
                }
            }
            patterns.extend(next.iter().cloned());
            frontier = next;
        }
        let mut texts = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for s in &frontier {
                for c in talpha {
                    next.push(format!("{s}{c}"));
                }
            }
            texts.extend(next.iter().cloned());
            frontier = next;
        }
        for p in &patterns {
            let cs = Pattern::new(p);
            let ci = Pattern::new_ignore_case(p);
            for t in &texts {
                assert_eq!(cs.matches(t), reference(p, t, false), "{p:?} vs {t:?}");
                assert_eq!(ci.matches(t), reference(p, t, true), "{p:?} vs {t:?} (ic)");
            }
        }
    }
}
