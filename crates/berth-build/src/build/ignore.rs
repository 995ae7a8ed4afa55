//! `.dockerignore` patterns and the glob matching of COPY/ADD sources, as Docker's
//! `patternmatcher`: one pattern per line, `#` comments, `!` exceptions, the last matching
//! pattern decides; a path is excluded when it or any of its parent directories matches;
//! `*` and `?` never match `/`, `**` matches any number of directories, `[...]` classes
//! (`^`/`!` negation, ranges), `\` escapes.

/// One pattern, split into path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    segments: Vec<String>,
    exclusion: bool,
}

/// The patterns of a `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
}

/// Cleans a slash path lexically (`a//b/./c/../d` → `a/b/d`), without a leading `/`;
/// `None` when `..` climbs above the root.
pub fn clean_relative(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            p => out.push(p),
        }
    }
    Some(out.join("/"))
}

impl IgnoreMatcher {
    /// Parses the content of a `.dockerignore`.
    pub fn parse(text: &str) -> Self {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclusion, pat) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            // Docker cleans the pattern (filepath.Clean) and drops a leading `/`; `..` above
            // the root is clamped there.
            let mut segs: Vec<&str> = Vec::new();
            for part in pat.split('/') {
                match part {
                    "" | "." => {}
                    ".." => {
                        segs.pop();
                    }
                    p => segs.push(p),
                }
            }
            if segs.is_empty() {
                continue;
            }
            patterns.push(Pattern {
                segments: segs.into_iter().map(str::to_string).collect(),
                exclusion,
            });
        }
        IgnoreMatcher { patterns }
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the context path `rel` (slash-separated, relative, cleaned) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        if self.patterns.is_empty() || rel.is_empty() {
            return false;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        let mut excluded = false;
        for p in &self.patterns {
            // The path or one of its parents matches.
            let hit = (1..=parts.len()).any(|n| match_segments(&p.segments, &parts[..n]));
            if hit {
                excluded = !p.exclusion;
            }
        }
        excluded
    }

    /// Whether some exception pattern could re-include a path under the directory `rel`
    /// (so an excluded directory must still be walked).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }
}

/// Matches a whole slash path against a glob (COPY sources): segment by segment, no `**`
/// special meaning beyond `*`.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    pat.len() == parts.len() && pat.iter().zip(&parts).all(|(p, s)| fnmatch(p, s))
}

/// Whether a source word contains glob meta characters.
pub fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn match_segments<S: AsRef<str>>(pat: &[S], path: &[&str]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(p) if p.as_ref() == "**" => {
            (0..=path.len()).any(|i| match_segments(&pat[1..], &path[i..]))
        }
        Some(p) => match path.first() {
            Some(s) => fnmatch(p.as_ref(), s) && match_segments(&pat[1..], &path[1..]),
            None => false,
        },
    }
}

/// Shell-style match of one path segment.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn go(p: &[char], n: &[char]) -> bool {
        let Some(&c) = p.first() else {
            return n.is_empty();
        };
        match c {
            '*' => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            '?' => !n.is_empty() && go(&p[1..], &n[1..]),
            '[' => {
                let Some(&ch) = n.first() else { return false };
                let mut i = 1;
                let negate = matches!(p.get(1), Some('^') | Some('!'));
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let mut first = true;
                while i < p.len() && (p[i] != ']' || first) {
                    first = false;
                    let mut lo = p[i];
                    if lo == '\\' && i + 1 < p.len() {
                        i += 1;
                        lo = p[i];
                    }
                    let mut hi = lo;
                    if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                        hi = p[i + 2];
                        i += 2;
                    }
                    if lo <= ch && ch <= hi {
                        matched = true;
                    }
                    i += 1;
                }
                if i >= p.len() {
                    // No closing bracket: a literal `[`.
                    return ch == '[' && go(&p[1..], &n[1..]);
                }
                matched != negate && go(&p[i + 1..], &n[1..])
            }
            '\\' if p.len() > 1 => !n.is_empty() && n[0] == p[1] && go(&p[2..], &n[1..]),
            c => !n.is_empty() && n[0] == c && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_semantics() {
        let m = IgnoreMatcher::parse(
            "# comment\n\n**/*.o\n!src/keep.o\nlogs/\n!logs/important.log\nnode_modules\n*.env\nDockerfile\n.dockerignore\n",
        );
        assert!(m.excluded("src/sub/util.o"));
        assert!(m.excluded("a.o"));
        assert!(!m.excluded("src/keep.o"));
        assert!(m.excluded("logs"));
        assert!(m.excluded("logs/a.log"));
        assert!(!m.excluded("logs/important.log"));
        assert!(m.excluded("node_modules/dep/index.js"));
        assert!(m.excluded("secret.env"));
        assert!(!m.excluded("src/secret.env"));
        assert!(m.excluded("Dockerfile"));
        assert!(!m.excluded("README.md"));
        assert!(!m.excluded("src/main.c"));
        assert!(m.has_exceptions());
    }

    #[test]
    fn globs() {
        assert!(fnmatch("*.txt", "a.txt"));
        assert!(!fnmatch("*.txt", "a.md"));
        assert!(fnmatch("a?.md", "a1.md"));
        assert!(!fnmatch("a?.md", "ab1.md"));
        assert!(fnmatch("[ab].txt", "b.txt"));
        assert!(!fnmatch("[ab].txt", "c.txt"));
        assert!(fnmatch("[^ab].txt", "c.txt"));
        assert!(fnmatch("[a-c]", "b"));
        assert!(fnmatch("\\*", "*"));
        assert!(glob_match("conf/*.conf", "conf/x.conf"));
        assert!(!glob_match("conf/*.conf", "conf/sub/x.conf"));
        assert_eq!(clean_relative("./a//b/../c/"), Some("a/c".into()));
        assert_eq!(clean_relative("../x"), None);
        assert_eq!(clean_relative("/"), Some(String::new()));
    }
}
