//! Splitting an instruction line: keyword, `--flags`, and the argument forms of BuildKit's
//! line parsers (whitespace-delimited, quote-aware words, key/value pairs).

/// `[\t\v\f\r ]` — the whitespace BuildKit's `reWhitespace` splits on.
pub(crate) fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// A line split into its keyword (as written), its leading flags and the rest (trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    pub keyword: String,
    pub flags: Vec<String>,
    pub rest: String,
}

/// Splits `line` into keyword, `--flags` and arguments (BuildKit's `splitCommand`).
pub(crate) fn split_command(line: &str) -> Split {
    let line = line.trim();
    let (keyword, args) = match line.find(is_ws) {
        Some(i) => (&line[..i], line[i..].trim_start_matches(is_ws)),
        None => (line, ""),
    };
    let (rest, flags) = extract_flags(args);
    Split {
        keyword: keyword.to_string(),
        flags,
        rest: rest.trim().to_string(),
    }
}

/// Takes the words starting with `--` off the front of `line` (quotes removed, `\` escapes
/// applied); a bare `--` ends the flags. Returns the remaining text and the flags.
fn extract_flags(line: &str) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut it = line.char_indices().peekable();
    while let Some((pos, ch)) = it.next() {
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            if !line[pos..].starts_with("--") {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                continue;
            }
            if ch == '\\' {
                match it.next() {
                    None => continue,
                    Some((_, c)) => word.push(c),
                }
                continue;
            }
            word.push(ch);
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
            continue;
        }
        if ch == '\\' {
            match it.next() {
                None => {
                    phase = Phase::Word;
                    continue;
                }
                Some((_, c)) => word.push(c),
            }
            continue;
        }
        word.push(ch);
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    ("", words)
}

/// Splits on runs of `[\t\v\f\r ]` (BuildKit's `parseStringsWhitespaceDelimited`: quotes
/// are not special).
pub(crate) fn whitespace_words(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_ws)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Quote-aware words that keep their quotes and escapes (BuildKit's `parseWords`), for
/// `ENV`, `LABEL` and `ARG`: the executor removes them with the shell lexer.
pub(crate) fn quoted_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue; // a trailing escape is dropped
                }
                // The escape and the next character stay, even a quote.
                word.push(ch);
                i += 1;
                word.push(chars[i]);
                i += 1;
                continue;
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            word.push(ch);
            i += 1;
            word.push(chars[i]);
            i += 1;
            continue;
        }
        word.push(ch);
        i += 1;
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_and_flags() {
        let s = split_command("  COPY --from=build --chown=\"a b\" src dst  ");
        assert_eq!(s.keyword, "COPY");
        assert_eq!(s.flags, ["--from=build", "--chown=a b"]);
        assert_eq!(s.rest, "src dst");

        let s = split_command("RUN -- --not-a-flag");
        assert!(s.flags.is_empty());
        assert_eq!(s.rest, "--not-a-flag");

        let s = split_command("RUN --mount=type=cache,target=/x echo --flag");
        assert_eq!(s.flags, ["--mount=type=cache,target=/x"]);
        assert_eq!(s.rest, "echo --flag");

        let s = split_command("RUN --network=none");
        assert_eq!(s.flags, ["--network=none"]);
        assert_eq!(s.rest, "");

        let s = split_command("RUN -x");
        assert_eq!(s.rest, "-x");
        let s = split_command("CMD");
        assert_eq!((s.keyword.as_str(), s.rest.as_str()), ("CMD", ""));
        let s = split_command("COPY --a\\ b=c d");
        assert_eq!(s.flags, ["--a b=c"]);
    }

    #[test]
    fn whitespace_split_ignores_quotes() {
        assert_eq!(whitespace_words("\"a b\"\t c"), ["\"a", "b\"", "c"]);
        assert!(whitespace_words("").is_empty());
    }

    #[test]
    fn quoted_words_keep_quotes_and_escapes() {
        assert_eq!(
            quoted_words(r#"a=1 b="x y" c='p q' d=\"e"#, '\\'),
            ["a=1", "b=\"x y\"", "c='p q'", "d=\\\"e"]
        );
        assert_eq!(quoted_words(r#"a="" b"#, '\\'), ["a=\"\"", "b"]);
        assert_eq!(quoted_words("a\\ b c", '\\'), ["a\\ b", "c"]);
        assert_eq!(quoted_words("p=c:\\dir q=`\"", '`'), ["p=c:\\dir", "q=`\""]);
        assert_eq!(quoted_words("x\\", '\\'), ["x"]);
    }
}
