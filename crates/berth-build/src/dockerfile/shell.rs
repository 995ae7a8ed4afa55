//! BuildKit's shell-word lexer: quote removal, escapes, word splitting and `$VAR` expansion.
//!
//! This is what the executor applies to the raw words the parser keeps (see the table in
//! [`expands_variables`]). It follows `frontend/dockerfile/shell/lex.go` of BuildKit:
//!
//! - `'...'` is literal; `"..."` keeps everything except `$` expansions, and the escape
//!   character there only escapes `"`, `$` and itself (otherwise it stays);
//! - outside quotes the escape character (`\`, or `` ` `` under `# escape=``) makes the next
//!   character literal; a trailing escape character is dropped;
//! - `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME-word}`, `${NAME:+word}`, `${NAME+word}`,
//!   `${NAME:?message}`, `${NAME?message}`, `${NAME#pattern}`, `${NAME##pattern}`,
//!   `${NAME%pattern}`, `${NAME%%pattern}`, `${NAME/pattern/replacement}` and
//!   `${NAME//pattern/replacement}` (patterns: `*`, `?`, `\` escapes; no `[...]`);
//! - `$1`.. and the special parameters `$@ $* $# $? $- $$ $! $0` are looked up like any name
//!   (so they are normally unset); unset variables expand to the empty string; a `$` not
//!   followed by a name stays `$`;
//! - word splitting ([`ShellLex::process_words`]) happens on whitespace outside quotes,
//!   including whitespace produced by an unquoted expansion; empty words are dropped.
//!
//! Deviations: `?` and `*` in patterns also match newlines (Go's regexp `.` does not), the
//! replacement of `${V/p/r}` is literal (Go expands `$1`-style group references in it), and
//! `${...}` nesting deeper than [`MAX_NESTING`] is an error rather than unbounded recursion.

use super::error::ExpandError;

/// Deepest nesting of `${...}` expansions accepted (each level recurses).
pub const MAX_NESTING: usize = 100;

/// Shell-word lexer with a given escape character (the Dockerfile's `# escape=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellLex {
    escape: char,
}

impl Default for ShellLex {
    fn default() -> Self {
        ShellLex { escape: '\\' }
    }
}

impl ShellLex {
    /// A lexer whose escape character is `escape` (normally [`super::Dockerfile::escape`]).
    pub fn new(escape: char) -> Self {
        ShellLex { escape }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands variables in `word` and removes quotes and escapes, keeping whitespace between
    /// words (BuildKit's `ProcessWord`). `env` returns a variable's value, `None` when unset.
    pub fn process_word(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, ExpandError> {
        let opts = Options::plain(self.escape);
        process(opts, word, env).map(|(result, _)| result)
    }

    /// Like [`ShellLex::process_word`], then splits the result into words on unquoted
    /// whitespace (BuildKit's `ProcessWords`).
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, ExpandError> {
        let opts = Options::plain(self.escape);
        process(opts, word, env).map(|(_, words)| words)
    }
}

/// Lexer switches (BuildKit's `RawQuotes`, `RawEscapes`, `SkipUnsetEnv`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset: bool,
}

impl Options {
    pub(crate) fn plain(escape: char) -> Self {
        Options {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
        }
    }
}

/// Runs the lexer over `word`: the processed string and its words.
pub(crate) fn process(
    opts: Options,
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), ExpandError> {
    let mut lexer = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        opts,
        env,
        depth: 0,
    };
    let raw = opts.raw_escapes;
    lexer
        .process_stop_on(None, raw)
        .map_err(|message| ExpandError {
            word: word.to_string(),
            message,
        })
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    opts: Options,
    env: &'a dyn Fn(&str) -> Option<String>,
    depth: usize,
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// Processes up to `stop` (consumed) or the end of input when `stop` is `None`.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = self.opts.raw_escapes;
        self.opts.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.opts.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '\'' => {
                    let tmp = self.single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' => {
                    let tmp = self.double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.opts.escape {
                        if self.opts.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        match self.next() {
                            None => break,
                            Some(c) => {
                                words.add_raw_char(c);
                                result.push(c);
                            }
                        }
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(c) => Err(format!(
                "unexpected end of statement while looking for matching {c}"
            )),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        if let Some(q) = self.next() {
            if self.opts.raw_quotes {
                result.push(q);
            }
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.opts.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        if let Some(q) = self.next() {
            if self.opts.raw_quotes {
                result.push(q);
            }
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    if self.opts.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.opts.escape {
                        if self.opts.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.opts.escape => {
                                self.pos += 1;
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(format!(
                "variable substitutions nested deeper than {MAX_NESTING}"
            ));
        }
        let r = self.dollar_inner();
        self.depth -= 1;
        r
    }

    fn dollar_inner(&mut self) -> Result<String, String> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.opts.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{') | Some('}') | Some(':') => {
                return Err("syntax error: bad substitution".into())
            }
            Some(_) => {}
        }
        let name = self.process_name();
        let ch = self.next();
        let mut chs: String = ch.map(String::from).unwrap_or_default();
        match ch {
            None => Err("syntax error: missing '}'".into()),
            Some('}') => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.opts.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') | Some('+') | Some('-') | Some('?') | Some('#') | Some('%') => {
                let mut null_is_unset = false;
                let mut op = ch;
                if ch == Some(':') {
                    null_is_unset = true;
                    op = self.next();
                    if let Some(c) = op {
                        chs.push(c);
                    }
                }
                let raw = matches!(op, Some('#') | Some('%'));
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.lookup(&name);
                if self.opts.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let set = value.is_some();
                let value = value.unwrap_or_default();
                match op {
                    Some('-') => Ok(if !set || (null_is_unset && value.is_empty()) {
                        word
                    } else {
                        value
                    }),
                    Some('+') => Ok(if !set || (null_is_unset && value.is_empty()) {
                        String::new()
                    } else {
                        word
                    }),
                    Some('?') => {
                        if !set {
                            let msg = if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            };
                            return Err(format!("{name}: {msg}"));
                        }
                        if null_is_unset && value.is_empty() {
                            let msg = if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            };
                            return Err(format!("{name}: {msg}"));
                        }
                        Ok(value)
                    }
                    Some(c @ ('%' | '#')) => {
                        let (greedy, pattern) = match word.strip_prefix(c) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let toks = compile_pattern(&pattern).map_err(|e| {
                            format!("invalid pattern ({pattern}) in substitution: {e}")
                        })?;
                        let chars: Vec<char> = value.chars().collect();
                        if c == '#' {
                            Ok(match match_prefix(&toks, &chars, greedy) {
                                Some(n) => chars[n..].iter().collect(),
                                None => value,
                            })
                        } else {
                            let rtoks: Vec<Tok> = toks.into_iter().rev().collect();
                            let rchars: Vec<char> = chars.iter().rev().copied().collect();
                            Ok(match match_prefix(&rtoks, &rchars, greedy) {
                                Some(n) => chars[..chars.len() - n].iter().collect(),
                                None => value,
                            })
                        }
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '/' in ${}".into());
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.lookup(&name);
                let Some(value) = value else {
                    if self.opts.skip_unset {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    // BuildKit matches against the empty value.
                    return replace(&pattern, "", &replacement, replace_all);
                };
                replace(&pattern, &value, &replacement, replace_all)
            }
            Some(_) => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    /// A name: letters, digits and `_`; or a run of digits; or one special parameter.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(c) = self.peek() {
                    if !is_digit(c) {
                        break;
                    }
                    name.push(c);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !is_digit(ch) && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// One element of a shell pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
}

/// `*` any string, `?` any character, `\*` `\?` `\\` literal, `\}` and `\/` are `}` and `/`.
fn compile_pattern(pattern: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(cs.len());
    let mut i = 0;
    while i < cs.len() {
        match cs[i] {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' => match cs.get(i + 1) {
                Some('}') | Some('/') => {}
                Some(&c @ ('*' | '?' | '\\')) => {
                    out.push(Tok::Lit(c));
                    i += 1;
                }
                Some(c) => return Err(format!("invalid escape '\\{c}'")),
                None => return Err("invalid escape '\\' at end of pattern".into()),
            },
            c => out.push(Tok::Lit(c)),
        }
        i += 1;
    }
    Ok(out)
}

fn closure(toks: &[Tok], set: &mut [bool]) {
    for p in 0..toks.len() {
        if set[p] && toks[p] == Tok::Star {
            set[p + 1] = true;
        }
    }
}

/// Length of the shortest (or longest) prefix of `chars` that `toks` matches entirely.
fn match_prefix(toks: &[Tok], chars: &[char], longest: bool) -> Option<usize> {
    let m = toks.len();
    let mut cur = vec![false; m + 1];
    cur[0] = true;
    closure(toks, &mut cur);
    let mut best = None;
    if cur[m] {
        best = Some(0);
        if !longest {
            return best;
        }
    }
    for (i, &c) in chars.iter().enumerate() {
        let mut next = vec![false; m + 1];
        for p in 0..m {
            if !cur[p] {
                continue;
            }
            match toks[p] {
                Tok::Lit(x) if x == c => next[p + 1] = true,
                Tok::Lit(_) => {}
                Tok::Any => next[p + 1] = true,
                Tok::Star => next[p] = true,
            }
        }
        closure(toks, &mut next);
        if !next.iter().any(|&b| b) {
            break;
        }
        if next[m] {
            best = Some(i + 1);
            if !longest {
                return best;
            }
        }
        cur = next;
    }
    best
}

/// Leftmost match at or after `from`, longest there: `(start, end)` in characters.
fn find(toks: &[Tok], chars: &[char], from: usize) -> Option<(usize, usize)> {
    (from..=chars.len()).find_map(|s| match_prefix(toks, &chars[s..], true).map(|n| (s, s + n)))
}

/// `${V/pattern/replacement}` and `${V//pattern/replacement}` (Go `ReplaceAllString` rules
/// for empty matches).
fn replace(pattern: &str, value: &str, repl: &str, all: bool) -> Result<String, String> {
    let toks = compile_pattern(pattern)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    let chars: Vec<char> = value.chars().collect();
    if !all {
        return Ok(match find(&toks, &chars, 0) {
            Some((a, b)) => {
                let mut out: String = chars[..a].iter().collect();
                out.push_str(repl);
                out.extend(&chars[b..]);
                out
            }
            None => value.to_string(),
        });
    }
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= chars.len() {
        let Some((a, b)) = find(&toks, &chars, search) else {
            break;
        };
        out.extend(&chars[last_end..a]);
        if b > last_end || a == 0 {
            out.push_str(repl);
        }
        last_end = b;
        if search + 1 > b {
            search += 1;
        } else {
            search = b;
        }
    }
    out.extend(&chars[last_end..]);
    Ok(out)
}

/// Whether BuildKit expands variables in the arguments of `instruction` (any case) before
/// executing it: `ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME WORKDIR ARG` do
/// (each raw word goes through [`ShellLex::process_word`]; `FROM` only with the meta args,
/// and the flags `--from`, `--chown`, `--chmod`, `--platform`, `--mount` are expanded too);
/// `RUN CMD ENTRYPOINT SHELL` do not (the shell does it at run time), nor `HEALTHCHECK`,
/// `ONBUILD` (expanded when the trigger runs) and `MAINTAINER`.
pub fn expands_variables(instruction: &str) -> bool {
    matches!(
        instruction.to_ascii_lowercase().as_str(),
        "add"
            | "copy"
            | "env"
            | "expose"
            | "from"
            | "label"
            | "stopsignal"
            | "user"
            | "volume"
            | "workdir"
            | "arg"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn word(w: &str, pairs: &[(&str, &str)]) -> Result<String, ExpandError> {
        let env = env_of(pairs);
        ShellLex::default().process_word(w, &|k| env.get(k).cloned())
    }

    fn words(w: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        let env = env_of(pairs);
        match ShellLex::default().process_words(w, &|k| env.get(k).cloned()) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    fn ok(w: &str, pairs: &[(&str, &str)]) -> String {
        match word(w, pairs) {
            Ok(v) => v,
            Err(e) => panic!("{w}: {e}"),
        }
    }

    #[test]
    fn plain_and_quotes() {
        assert_eq!(ok("hello", &[]), "hello");
        assert_eq!(ok("he'l'lo", &[]), "hello");
        assert_eq!(ok("'$X' \"$X\"", &[("X", "x")]), "$X x");
        assert_eq!(ok(r#""a\"b""#, &[]), "a\"b");
        assert_eq!(ok(r#""a\nb""#, &[]), "a\\nb");
        assert_eq!(ok(r"a\ b", &[]), "a b");
        assert_eq!(ok(r"a\$X", &[("X", "x")]), "a$X");
        assert_eq!(ok("abc\\", &[]), "abc");
        assert_eq!(ok("'a\\b'", &[]), "a\\b");
    }

    #[test]
    fn simple_variables() {
        assert_eq!(ok("$X", &[("X", "x")]), "x");
        assert_eq!(ok("${X}y", &[("X", "x")]), "xy");
        assert_eq!(ok("$Xy", &[("X", "x")]), "");
        assert_eq!(ok("a$", &[]), "a$");
        assert_eq!(ok("$ a", &[]), "$ a");
        assert_eq!(ok("$UNSET-", &[]), "-");
        assert_eq!(ok("$1x", &[("1", "one")]), "onex");
        assert_eq!(ok("$$", &[]), "");
        assert_eq!(ok("${X_1}", &[("X_1", "v")]), "v");
    }

    #[test]
    fn modifiers() {
        let set = [("S", "s"), ("E", "")];
        assert_eq!(ok("${S:-d}", &set), "s");
        assert_eq!(ok("${E:-d}", &set), "d");
        assert_eq!(ok("${E-d}", &set), "");
        assert_eq!(ok("${U-d}", &set), "d");
        assert_eq!(ok("${U:-$S}", &set), "s");
        assert_eq!(ok("${S:+a}", &set), "a");
        assert_eq!(ok("${E:+a}", &set), "");
        assert_eq!(ok("${E+a}", &set), "a");
        assert_eq!(ok("${U+a}", &set), "");
        assert_eq!(ok("${S:?boom}", &set), "s");
        assert_eq!(ok("${E?boom}", &set), "");
        let e = word("${U?boom}", &set).err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("U: boom"));
        let e = word("${E:?}", &set).err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("E: is not allowed to be empty"));
        let e = word("${U?}", &set).err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("U: is not allowed to be unset"));
    }

    #[test]
    fn trims() {
        let v = [("P", "/usr/local/bin/app.tar.gz")];
        assert_eq!(ok("${P#*/}", &v), "usr/local/bin/app.tar.gz");
        assert_eq!(ok("${P##*/}", &v), "app.tar.gz");
        assert_eq!(ok("${P%.*}", &v), "/usr/local/bin/app.tar");
        assert_eq!(ok("${P%%.*}", &v), "/usr/local/bin/app");
        assert_eq!(ok("${P#nomatch}", &v), "/usr/local/bin/app.tar.gz");
        assert_eq!(ok("${P%.gz}", &v), "/usr/local/bin/app.tar");
        assert_eq!(ok("${P%\\*}", &[("P", "a*")]), "a");
        // Only `*`, `?` and `\` may be escaped in a pattern (BuildKit's rule).
        assert!(word("${P%\\.gz}", &v).is_err());
        assert_eq!(ok("${P#/usr?local}", &v), "/bin/app.tar.gz");
        assert_eq!(ok("${U#x}", &[]), "");
    }

    #[test]
    fn replacements() {
        let v = [("V", "aXbXc")];
        assert_eq!(ok("${V/X/-}", &v), "a-bXc");
        assert_eq!(ok("${V//X/-}", &v), "a-b-c");
        assert_eq!(ok("${V/X*/}", &v), "a");
        assert_eq!(ok("${V/nomatch/z}", &v), "aXbXc");
        assert_eq!(ok("${V/\\//z}", &[("V", "a/b")]), "azb");
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "${", "${}", "${:x}", "${a", "${a:x}", "${a!b}", "'abc", "\"abc", "${a:-x", "${a/b",
            "${a/b/c",
        ] {
            assert!(word(bad, &[]).is_err(), "{bad} should fail");
        }
        let e = word("${a!b}", &[]).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("failed to process \"${a!b}\": unsupported modifier (!) in substitution")
        );
    }

    #[test]
    fn word_splitting() {
        assert_eq!(words("a b  c", &[]), ["a", "b", "c"]);
        assert_eq!(words("'a b' \"c d\"", &[]), ["a b", "c d"]);
        assert_eq!(words("$V", &[("V", "x y")]), ["x", "y"]);
        assert_eq!(words("\"$V\"", &[("V", "x y")]), ["x y"]);
        assert_eq!(words("a\\ b c", &[]), ["a b", "c"]);
        assert_eq!(words("a \"\" b", &[]), ["a", "b"]);
        assert!(words("", &[]).is_empty());
    }

    #[test]
    fn backtick_escape() {
        let lex = ShellLex::new('`');
        let none = |_: &str| None;
        assert_eq!(
            lex.process_word(r"c:\windows\system32", &none)
                .ok()
                .as_deref(),
            Some(r"c:\windows\system32")
        );
        assert_eq!(lex.process_word("a` b", &none).ok().as_deref(), Some("a b"));
        assert_eq!(lex.process_word("`$X", &none).ok().as_deref(), Some("$X"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "${a:-".repeat(10_000);
        let e = word(&deep, &[]).err().map(|e| e.message);
        assert!(e.is_some_and(|m| m.contains("nested")));
        let ok_depth = format!("{}x{}", "${a:-".repeat(50), "}".repeat(50));
        assert_eq!(ok(&ok_depth, &[]), "x");
    }

    #[test]
    fn raw_options_keep_what_they_say() {
        let opts = Options {
            escape: '\\',
            raw_quotes: true,
            raw_escapes: true,
            skip_unset: true,
        };
        let none = |_: &str| None;
        let r = process(opts, r#"a "b c" \x $U ${U:-d}"#, &none).map(|r| r.1);
        assert_eq!(
            r.ok(),
            Some(vec![
                "a".to_string(),
                "\"b c\"".into(),
                "\\x".into(),
                "$U".into(),
                "${U:-d}".into()
            ])
        );
    }

    #[test]
    fn expansion_table() {
        for yes in [
            "ADD",
            "copy",
            "ENV",
            "expose",
            "FROM",
            "label",
            "STOPSIGNAL",
            "user",
        ] {
            assert!(expands_variables(yes), "{yes}");
        }
        for yes in ["VOLUME", "WORKDIR", "ARG"] {
            assert!(expands_variables(yes), "{yes}");
        }
        for no in [
            "RUN",
            "CMD",
            "ENTRYPOINT",
            "SHELL",
            "HEALTHCHECK",
            "ONBUILD",
            "MAINTAINER",
        ] {
            assert!(!expands_variables(no), "{no}");
        }
    }
}
