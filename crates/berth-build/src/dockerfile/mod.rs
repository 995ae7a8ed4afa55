//! A Dockerfile parser following BuildKit's grammar (`frontend/dockerfile/parser`,
//! `instructions` and `shell` of github.com/moby/buildkit), written for Berth.
//!
//! [`parse`] turns source text into a typed [`Dockerfile`]: parser directives, meta `ARG`s,
//! and stages of instructions, each with its location and original text. Nothing is
//! expanded here: arguments are kept as the raw words BuildKit's parser produces, and the
//! executor expands them with [`ShellLex`] where [`expands_variables`] says so.
//!
//! Line handling, as BuildKit:
//! - a UTF-8 BOM at the start is ignored; lines end with `\n`, a `\r` before it is dropped;
//! - parser directives (`# syntax=`, `# escape=`, `# check=`, names case-insensitive) are
//!   recognized only before the first instruction, comment or empty line; each at most once;
//! - leading whitespace of an instruction's first line is ignored; lines whose first
//!   non-blank character is `#` are comments;
//! - the escape character (`\`, or `` ` `` with `# escape=``) as the last non-blank
//!   character continues the instruction on the next line (unless it is itself escaped);
//!   comment lines and empty lines inside a continuation are skipped (the latter with a
//!   [`Warning`]); continuation lines keep their leading whitespace;
//! - for `RUN`, `COPY`, `ADD` (also as `ONBUILD` triggers) in shell form, each `<<WORD`
//!   (`<<-WORD`, `<<"WORD"`, `N<<WORD`) on the line takes the following lines up to a line
//!   equal to `WORD` (after leading tabs for `<<-`) as its body, in order.

mod ast;
mod duration;
mod error;
mod instructions;
mod json;
mod shell;
mod split;

pub use ast::{
    Add, ArgPair, Command, Copy, Directive, Dockerfile, Healthcheck, Heredoc, Instruction,
    InstructionKind, KeyValue, KeyValues, Location, MountSpec, Run, Source, Stage, Warning,
};
pub use error::{ExpandError, ParseError};
pub use shell::{expands_variables, ShellLex, MAX_NESTING};

use instructions::{heredoc_capable, heredocs_from_line, parse_line, Parsed};

/// Parses a Dockerfile. Errors name the file `Dockerfile`; see [`parse_file`].
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    Parser::new(source).run()
}

/// Parses a Dockerfile whose errors name it `file` (e.g. `app/Dockerfile.dev`).
pub fn parse_file(file: &str, source: &str) -> Result<Dockerfile, ParseError> {
    parse(source).map_err(|e| e.with_file(file))
}

/// Parses bytes, replacing invalid UTF-8 with U+FFFD (as Go does when it meets it).
pub fn parse_bytes(source: &[u8]) -> Result<Dockerfile, ParseError> {
    parse(&String::from_utf8_lossy(source))
}

/// A logical line: the instruction text with continuations joined, and where it is.
struct Logical {
    text: String,
    line: usize,
    column: usize,
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    next: usize,
    escape: char,
    directives: Vec<Directive>,
    directives_done: bool,
    warnings: Vec<Warning>,
}

/// `\r` and `\n` at the end of a line (BuildKit's `trimNewline`).
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    s.trim_start().starts_with('#')
}

/// Go's `\s`: `[\t\n\f\r ]`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

impl<'a> Parser<'a> {
    fn new(source: &'a str) -> Self {
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        Parser {
            lines: source.split_inclusive('\n').collect(),
            next: 0,
            escape: '\\',
            directives: Vec::new(),
            directives_done: false,
            warnings: Vec::new(),
        }
    }

    /// The next raw line (with its line ending) and its 1-based number.
    fn next_line(&mut self) -> Option<(&'a str, usize)> {
        let line = self.lines.get(self.next).copied()?;
        self.next += 1;
        Some((line, self.next))
    }

    /// Looks for a parser directive on `line` (leading whitespace already removed);
    /// true when it was one.
    fn directive(&mut self, line: &str, number: usize) -> Result<bool, ParseError> {
        if self.directives_done {
            return Ok(false);
        }
        let Some((name, value)) = parse_directive(line) else {
            self.directives_done = true;
            return Ok(false);
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.directives_done = true;
            return Ok(false);
        }
        if self.directives.iter().any(|d| d.name == name) {
            return Err(ParseError::new(
                number,
                1,
                format!("only one {name} parser directive can be used"),
            ));
        }
        if name == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(ParseError::new(
                        number,
                        1,
                        format!("invalid escape token '{value}' does not match ` or \\"),
                    ))
                }
            };
        }
        self.directives.push(Directive {
            name,
            value: value.to_string(),
            line: number,
        });
        Ok(true)
    }

    /// Removes a trailing continuation (escape character then blanks); false when the line
    /// does not continue.
    fn trim_continuation<'s>(&self, line: &'s str) -> (&'s str, bool) {
        let t = line.trim_end_matches([' ', '\t']);
        let Some(before) = t.strip_suffix(self.escape) else {
            return (line, false);
        };
        if before.ends_with(self.escape) {
            // An escaped escape character does not continue the line.
            return (line, false);
        }
        (before, true)
    }

    /// The next instruction's text, or `None` at the end.
    fn logical_line(&mut self) -> Result<Option<Logical>, ParseError> {
        while let Some((raw, number)) = self.next_line() {
            let token = trim_newline(raw);
            let trimmed = token.trim_start();
            let column = token[..token.len() - trimmed.len()].chars().count() + 1;
            self.directive(trimmed, number)?;
            let content = if is_comment(trimmed) { "" } else { trimmed };
            let (first, mut continues) = self.trim_continuation(content);
            if !continues && first.is_empty() {
                continue;
            }
            let mut text = first.to_string();
            let mut empty_continuation = false;
            while continues {
                let Some((raw, _)) = self.next_line() else {
                    break;
                };
                let token = trim_newline(raw);
                if is_comment(token) {
                    continue;
                }
                if token.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, more) = self.trim_continuation(token);
                text.push_str(part);
                continues = more;
            }
            if empty_continuation {
                self.warnings.push(Warning {
                    line: self.next,
                    message: format!("empty continuation line found in: {}", text.trim()),
                });
            }
            return Ok(Some(Logical {
                text,
                line: number,
                column,
            }));
        }
        Ok(None)
    }

    /// Reads the bodies of `heredocs` from the following lines.
    fn heredoc_bodies(&mut self, heredocs: &mut [Heredoc], at: &Logical) -> Result<(), ParseError> {
        for h in heredocs.iter_mut() {
            let mut terminated = false;
            while let Some((raw, _)) = self.next_line() {
                let mut candidate = trim_newline(raw);
                if h.strip_tabs {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == h.name {
                    terminated = true;
                    break;
                }
                h.content.push_str(raw);
            }
            if !terminated {
                return Err(ParseError::new(
                    at.line,
                    at.column,
                    format!("unterminated heredoc {}", h.name),
                ));
            }
        }
        Ok(())
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut meta_args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        let mut seen_any = false;
        while let Some(logical) = self.logical_line()? {
            seen_any = true;
            let err = |message: String| ParseError::new(logical.line, logical.column, message);
            let mut heredocs = Vec::new();
            if logical.text.contains("<<") && heredoc_capable(&logical.text) {
                heredocs = heredocs_from_line(&logical.text).map_err(err)?;
                self.heredoc_bodies(&mut heredocs, &logical)?;
            }
            let parsed = parse_line(&logical.text, &heredocs, self.escape).map_err(err)?;
            let location = Location {
                line: logical.line,
                column: logical.column,
                end_line: self.next,
            };
            let original = logical.text.trim().to_string();
            match parsed {
                Parsed::From {
                    base,
                    name,
                    platform,
                } => {
                    if let Some(n) = &name {
                        if stages.iter().any(|s| s.name.as_ref() == Some(n)) {
                            self.warnings.push(Warning {
                                line: logical.line,
                                message: format!("duplicate stage name {n:?}"),
                            });
                        }
                    }
                    stages.push(Stage {
                        name,
                        base,
                        platform,
                        index: stages.len(),
                        location,
                        original,
                        instructions: Vec::new(),
                    });
                }
                Parsed::Instruction(kind) => {
                    let instruction = Instruction {
                        location,
                        original,
                        kind,
                    };
                    match stages.last_mut() {
                        Some(stage) => stage.instructions.push(instruction),
                        None if matches!(instruction.kind, InstructionKind::Arg(_)) => {
                            meta_args.push(instruction)
                        }
                        None => {
                            return Err(ParseError::new(
                                logical.line,
                                logical.column,
                                format!(
                                    "no build stage in current context: {} before the first FROM",
                                    instruction.kind.name()
                                ),
                            ))
                        }
                    }
                }
            }
        }
        if !seen_any {
            return Err(ParseError::new(
                self.lines.len(),
                1,
                "file with no instructions",
            ));
        }
        if stages.is_empty() {
            return Err(ParseError::new(
                self.lines.len(),
                1,
                "dockerfile contains no stages to build (no FROM instruction)",
            ));
        }
        Ok(Dockerfile {
            directives: self.directives,
            escape: self.escape,
            meta_args,
            stages,
            warnings: self.warnings,
        })
    }
}

/// `#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` on a line without leading whitespace.
fn parse_directive(line: &str) -> Option<(&str, &str)> {
    let s = line.strip_prefix('#')?.trim_start();
    let name_len = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(s.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, after) = s.split_at(name_len);
    let after = after.trim_start_matches(is_re_space).strip_prefix('=')?;
    if after.contains('\n') || after.is_empty() {
        return None;
    }
    let value = after.trim_matches(is_re_space);
    if value.is_empty() {
        // The lazy `(.+?)` still takes one blank character.
        return Some((name, &after[after.len() - 1..]));
    }
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_lines() {
        assert_eq!(parse_directive("# escape=`"), Some(("escape", "`")));
        assert_eq!(
            parse_directive("#SYNTAX = docker/dockerfile:1 "),
            Some(("SYNTAX", "docker/dockerfile:1"))
        );
        assert_eq!(
            parse_directive("# check=skip=all;error=true"),
            Some(("check", "skip=all;error=true"))
        );
        assert_eq!(parse_directive("# escape=  "), Some(("escape", " ")));
        assert_eq!(parse_directive("# escape="), None);
        assert_eq!(parse_directive("# just a comment"), None);
        assert_eq!(parse_directive("# 1abc=x"), None);
        assert_eq!(parse_directive("FROM x"), None);
    }

    #[test]
    fn continuation_rules() {
        let p = Parser::new("");
        assert_eq!(p.trim_continuation("RUN a \\"), ("RUN a ", true));
        assert_eq!(p.trim_continuation("RUN a \\ \t"), ("RUN a ", true));
        assert_eq!(p.trim_continuation("\\"), ("", true));
        assert_eq!(p.trim_continuation("RUN a \\\\"), ("RUN a \\\\", false));
        assert_eq!(p.trim_continuation("RUN a"), ("RUN a", false));
        let mut p = Parser::new("");
        p.escape = '`';
        assert_eq!(p.trim_continuation("COPY a c:\\"), ("COPY a c:\\", false));
        assert_eq!(p.trim_continuation("RUN a `"), ("RUN a ", true));
    }
}
