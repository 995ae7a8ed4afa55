//! From a split instruction line to a typed [`InstructionKind`] (BuildKit's line parsers and
//! `instructions/parse.go`).

use std::time::Duration;

use super::ast::{
    Add, ArgPair, Command, Copy, Healthcheck, Heredoc, InstructionKind, KeyValue, KeyValues,
    MountSpec, Run, Source,
};
use super::duration::parse_go_duration;
use super::json::{parse_string_array, JsonError};
use super::shell::{self, Options};
use super::split::{is_ws, quoted_words, split_command, whitespace_words, Split};

/// What a line is: the start of a stage, or an instruction.
pub(crate) enum Parsed {
    /// `FROM`.
    From {
        base: String,
        name: Option<String>,
        platform: Option<String>,
    },
    /// Anything else.
    Instruction(InstructionKind),
}

/// Parses one logical line (continuations joined) with its heredocs.
pub(crate) fn parse_line(line: &str, heredocs: &[Heredoc], escape: char) -> Result<Parsed, String> {
    let split = split_command(line);
    if split.keyword.eq_ignore_ascii_case("from") {
        return parse_from(&split);
    }
    parse_instruction(&split, line, heredocs, escape).map(Parsed::Instruction)
}

fn parse_instruction(
    split: &Split,
    original: &str,
    heredocs: &[Heredoc],
    escape: char,
) -> Result<InstructionKind, String> {
    let rest = split.rest.as_str();
    let kind = match split.keyword.to_ascii_lowercase().as_str() {
        "run" => {
            let flags = parse_flags(
                &split.flags,
                &[
                    ("mount", FlagType::Strings),
                    ("network", FlagType::String),
                    ("security", FlagType::String),
                ],
            )?;
            let mounts = flags
                .all("mount")
                .into_iter()
                .map(|raw| parse_mount(&raw).map(|options| MountSpec { raw, options }))
                .collect::<Result<Vec<_>, _>>()?;
            InstructionKind::Run(Run {
                command: command(rest)?,
                heredocs: heredocs.to_vec(),
                mounts,
                network: flags.string("network"),
                security: flags.string("security"),
            })
        }
        "cmd" => {
            parse_flags(&split.flags, &[])?;
            InstructionKind::Cmd(command(rest)?)
        }
        "entrypoint" => {
            parse_flags(&split.flags, &[])?;
            InstructionKind::Entrypoint(command(rest)?)
        }
        "shell" => {
            parse_flags(&split.flags, &[])?;
            match maybe_json(rest)? {
                Args::Json(v) if !v.is_empty() => InstructionKind::Shell(v),
                Args::Json(_) => return Err("SHELL requires at least one argument".into()),
                Args::Text(t) if t.is_empty() => {
                    return Err("SHELL requires at least one argument".into())
                }
                Args::Text(_) => {
                    return Err("SHELL requires the arguments to be in JSON form".into())
                }
            }
        }
        "env" => {
            parse_flags(&split.flags, &[])?;
            InstructionKind::Env(name_values(rest, "ENV", escape)?)
        }
        "label" => {
            parse_flags(&split.flags, &[])?;
            InstructionKind::Label(name_values(rest, "LABEL", escape)?)
        }
        "arg" => {
            parse_flags(&split.flags, &[])?;
            let words = quoted_words(rest, escape);
            if words.is_empty() {
                return Err("ARG requires at least one argument".into());
            }
            let mut pairs = Vec::with_capacity(words.len());
            for w in words {
                let pair = match w.split_once('=') {
                    Some(("", _)) => return Err("ARG names can not be blank".into()),
                    Some((k, v)) => ArgPair {
                        key: k.to_string(),
                        value: Some(v.to_string()),
                    },
                    None => ArgPair {
                        key: w,
                        value: None,
                    },
                };
                pairs.push(pair);
            }
            InstructionKind::Arg(pairs)
        }
        "expose" => {
            parse_flags(&split.flags, &[])?;
            let ports = whitespace_words(rest);
            if ports.is_empty() {
                return Err("EXPOSE requires at least one argument".into());
            }
            InstructionKind::Expose(ports)
        }
        "user" => InstructionKind::User(one_argument(split, "USER")?),
        "workdir" => InstructionKind::Workdir(one_argument(split, "WORKDIR")?),
        "stopsignal" => InstructionKind::StopSignal(one_argument(split, "STOPSIGNAL")?),
        "maintainer" => InstructionKind::Maintainer(one_argument(split, "MAINTAINER")?),
        "copy" => {
            let (args, json) = maybe_json_list(rest)?;
            let flags = parse_flags(
                &split.flags,
                &[
                    ("chown", FlagType::String),
                    ("chmod", FlagType::String),
                    ("from", FlagType::String),
                    ("link", FlagType::Bool),
                    ("parents", FlagType::Bool),
                    ("exclude", FlagType::Strings),
                ],
            )?;
            let (sources, dest) = sources_and_dest(args, json, heredocs, "COPY")?;
            InstructionKind::Copy(Copy {
                sources,
                dest,
                json,
                from: flags.string("from"),
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool("link"),
                parents: flags.bool("parents"),
                exclude: flags.all("exclude"),
            })
        }
        "add" => {
            let (args, json) = maybe_json_list(rest)?;
            let flags = parse_flags(
                &split.flags,
                &[
                    ("chown", FlagType::String),
                    ("chmod", FlagType::String),
                    ("checksum", FlagType::String),
                    ("keep-git-dir", FlagType::Bool),
                    ("link", FlagType::Bool),
                ],
            )?;
            let (sources, dest) = sources_and_dest(args, json, heredocs, "ADD")?;
            InstructionKind::Add(Add {
                sources,
                dest,
                json,
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                checksum: flags.string("checksum"),
                keep_git_dir: flags.bool("keep-git-dir"),
                link: flags.bool("link"),
            })
        }
        "volume" => {
            parse_flags(&split.flags, &[])?;
            let (args, _) = maybe_json_list(rest)?;
            if args.is_empty() {
                return Err("VOLUME requires at least one argument".into());
            }
            let mut paths = Vec::with_capacity(args.len());
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                paths.push(v.to_string());
            }
            InstructionKind::Volume(paths)
        }
        "healthcheck" => InstructionKind::Healthcheck(healthcheck(split)?),
        "onbuild" => {
            parse_flags(&split.flags, &[])?;
            if rest.is_empty() {
                return Err("ONBUILD requires at least one argument".into());
            }
            let child = split_command(rest);
            let trigger = child.keyword.to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())
                }
                "FROM" | "MAINTAINER" => {
                    return Err(format!("{trigger} isn't allowed as an ONBUILD trigger"))
                }
                _ => {}
            }
            let trigger = parse_instruction(&child, rest, heredocs, escape)?;
            let mut expression = strip_onbuild(original).to_string();
            for h in heredocs {
                expression.push('\n');
                expression.push_str(&h.content);
                expression.push_str(&h.name);
            }
            InstructionKind::OnBuild {
                expression,
                trigger: Box::new(trigger),
            }
        }
        _ => return Err(format!("unknown instruction: {}", split.keyword)),
    };
    Ok(kind)
}

/// `original` without a leading `ONBUILD` and the whitespace around it.
fn strip_onbuild(original: &str) -> &str {
    let s = original.trim_start();
    match s.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => s[7..].trim_start(),
        _ => s,
    }
}

fn parse_from(split: &Split) -> Result<Parsed, String> {
    let args = whitespace_words(&split.rest);
    let name = match args.as_slice() {
        [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            if !valid_stage_name(&lower) {
                return Err(format!(
                    "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                ));
            }
            Some(lower)
        }
        [_] => None,
        _ => return Err("FROM requires either one or three arguments".into()),
    };
    let flags = parse_flags(&split.flags, &[("platform", FlagType::String)])?;
    Ok(Parsed::From {
        base: args.first().cloned().unwrap_or_default(),
        name,
        platform: flags.string("platform"),
    })
}

/// `^[a-z][a-z0-9-_.]*$`
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// `USER`, `WORKDIR`, `STOPSIGNAL`, `MAINTAINER`: the whole rest of the line is the argument.
fn one_argument(split: &Split, name: &str) -> Result<String, String> {
    parse_flags(&split.flags, &[])?;
    if split.rest.is_empty() {
        return Err(format!("{name} requires exactly one argument"));
    }
    Ok(split.rest.clone())
}

enum Args {
    Json(Vec<String>),
    Text(String),
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// BuildKit's `parseMaybeJSON`: JSON array of strings, else the raw text.
fn maybe_json(rest: &str) -> Result<Args, String> {
    if rest.is_empty() {
        return Ok(Args::Text(String::new()));
    }
    match parse_string_array(rest) {
        Ok(v) => Ok(Args::Json(v)),
        Err(JsonError::NotStringArray) => Err(NOT_STRING_ARRAY.into()),
        Err(JsonError::NotJson) => Ok(Args::Text(rest.to_string())),
    }
}

/// BuildKit's `parseMaybeJSONToList`: JSON array of strings, else whitespace-separated words.
fn maybe_json_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    match parse_string_array(rest) {
        Ok(v) => Ok((v, true)),
        Err(JsonError::NotStringArray) => Err(NOT_STRING_ARRAY.into()),
        Err(JsonError::NotJson) => Ok((whitespace_words(rest), false)),
    }
}

fn command(rest: &str) -> Result<Command, String> {
    Ok(match maybe_json(rest)? {
        Args::Json(v) => Command::Exec(v),
        Args::Text(t) => Command::Shell(t),
    })
}

/// `ENV`/`LABEL`: `key=value ...`, or the legacy `key value` when the first word has no `=`.
fn name_values(rest: &str, name: &str, escape: char) -> Result<KeyValues, String> {
    let words = quoted_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{name} requires at least one argument"));
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_ws) else {
            return Err(format!("{name} must have two arguments"));
        };
        let key = &rest[..i];
        let value = rest[i..].trim_start_matches(is_ws);
        return Ok(KeyValues {
            pairs: vec![KeyValue {
                key: key.to_string(),
                value: value.to_string(),
            }],
            legacy: true,
        });
    }
    let mut pairs = Vec::with_capacity(words.len());
    for w in &words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "syntax error - can't find = in {w:?}. Must be of the form: name=value"
            ));
        };
        if k.is_empty() {
            return Err(format!("{name} names can not be blank"));
        }
        pairs.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        });
    }
    Ok(KeyValues {
        pairs,
        legacy: false,
    })
}

/// `COPY`/`ADD` arguments: the last is the destination; `<<NAME` sources are heredocs.
fn sources_and_dest(
    mut args: Vec<String>,
    json: bool,
    heredocs: &[Heredoc],
    name: &str,
) -> Result<(Vec<Source>, String), String> {
    if args.len() < 2 {
        return Err(format!(
            "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    }
    let dest = args.pop().unwrap_or_default();
    if matches!(parse_heredoc_word(&dest), Ok(Some(_))) {
        return Err(format!("{name} cannot accept a heredoc as a destination"));
    }
    let sources = args
        .into_iter()
        .map(|src| {
            if json {
                return Source::Path(src);
            }
            match parse_heredoc_word(&src) {
                Ok(Some(word)) => Source::Heredoc(
                    heredocs
                        .iter()
                        .find(|h| h.name == word.name)
                        .cloned()
                        .unwrap_or(word),
                ),
                _ => Source::Path(src),
            }
        })
        .collect();
    Ok((sources, dest))
}

fn healthcheck(split: &Split) -> Result<Healthcheck, String> {
    let rest = split.rest.as_str();
    let (typ, after) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim_start()),
        None => (rest, ""),
    };
    if typ.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".into());
    }
    let flags = parse_flags(
        &split.flags,
        &[
            ("interval", FlagType::String),
            ("timeout", FlagType::String),
            ("start-period", FlagType::String),
            ("start-interval", FlagType::String),
            ("retries", FlagType::String),
        ],
    )?;
    let typ = typ.to_uppercase();
    if typ == "NONE" {
        if !after.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        return Ok(Healthcheck::None);
    }
    if typ != "CMD" {
        return Err(format!("unknown type {typ:?} in HEALTHCHECK (try CMD)"));
    }
    let command = match maybe_json(after)? {
        Args::Json(v) if v.is_empty() => None,
        Args::Json(v) => Some(Command::Exec(v)),
        Args::Text(t) if t.is_empty() => None,
        Args::Text(t) => Some(Command::Shell(t)),
    };
    let Some(command) = command else {
        return Err("missing command after HEALTHCHECK CMD".into());
    };
    let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => {
            let n: i64 =
                parse_go_int32(&v).ok_or_else(|| format!("--retries: invalid number {v:?}"))?;
            if n < 0 {
                return Err(format!("--retries cannot be negative ({n})"));
            }
            u32::try_from(n).ok()
        }
    };
    Ok(Healthcheck::Cmd {
        command,
        interval: interval(&flags, "interval")?,
        timeout: interval(&flags, "timeout")?,
        start_period: interval(&flags, "start-period")?,
        start_interval: interval(&flags, "start-interval")?,
        retries,
    })
}

/// `strconv.ParseInt(s, 10, 32)`.
fn parse_go_int32(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    (i64::from(i32::MIN)..=i64::from(i32::MAX))
        .contains(&n)
        .then_some(n)
}

/// A healthcheck duration: absent → `None`; `0` (or empty) → zero; otherwise at least 1ms.
fn interval(flags: &FlagValues, name: &str) -> Result<Option<Duration>, String> {
    let Some(v) = flags.string(name) else {
        return Ok(None);
    };
    if v.is_empty() {
        return Ok(Some(Duration::ZERO));
    }
    let ns = parse_go_duration(&v)?;
    if ns == 0 {
        return Ok(Some(Duration::ZERO));
    }
    if ns < 1_000_000 {
        return Err(format!("interval {name:?} cannot be less than 1ms"));
    }
    Ok(Some(Duration::from_nanos(ns.unsigned_abs())))
}

/// `--mount=` value: CSV fields split at the first `=`.
fn parse_mount(raw: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = raw.chars().peekable();
    let mut at_start = true;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            '"' if at_start => quoted = true,
            '"' => {
                return Err(format!(
                    "invalid mount {raw:?}: bare \" in non-quoted field"
                ))
            }
            c => field.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err(format!("invalid mount {raw:?}: unterminated quote"));
    }
    fields.push(field);
    Ok(fields
        .into_iter()
        .filter(|f| !f.is_empty())
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (f, None),
        })
        .collect())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagType {
    Bool,
    String,
    Strings,
}

/// Flag values by name, in the order given.
#[derive(Default)]
struct FlagValues(Vec<(&'static str, String)>);

impl FlagValues {
    fn string(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    fn bool(&self, name: &str) -> bool {
        self.string(name).as_deref() == Some("true")
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// BuildKit's `BFlags.Parse`: `--name=value`, `--name` for booleans, a bare `--` ends them.
fn parse_flags(args: &[String], defs: &[(&'static str, FlagType)]) -> Result<FlagValues, String> {
    let mut out = FlagValues::default();
    for arg in args {
        let Some(a) = arg.strip_prefix("--") else {
            return Err(format!("arg should start with -- : {arg}"));
        };
        if a.is_empty() {
            break;
        }
        let (name, value) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (a, None),
        };
        let Some(&(key, ty)) = defs.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unknown flag: {name}"));
        };
        if ty != FlagType::Strings && out.0.iter().any(|(n, _)| *n == key) {
            return Err(format!("duplicate flag specified: {name}"));
        }
        let v = match (ty, value) {
            (FlagType::Bool, None) => "true".to_string(),
            (_, Some("")) if ty == FlagType::Bool => {
                return Err(format!("missing a value on flag: {name}"))
            }
            (FlagType::Bool, Some(v)) => match v.to_lowercase().as_str() {
                l @ ("true" | "false") => l.to_string(),
                _ => return Err(format!("expecting boolean value for flag {name}, not: {v}")),
            },
            (_, None) => return Err(format!("missing a value on flag: {name}")),
            (_, Some(v)) => v.to_string(),
        };
        out.0.push((key, v));
    }
    Ok(out)
}

/// Whether the instruction on `line` takes heredoc bodies: `RUN`, `COPY`, `ADD` (directly
/// or as an `ONBUILD` trigger) not in JSON form.
pub(crate) fn heredoc_capable(line: &str) -> bool {
    let split = split_command(line);
    let (keyword, rest) = if split.keyword.eq_ignore_ascii_case("onbuild") {
        let child = split_command(&split.rest);
        (child.keyword, child.rest)
    } else {
        (split.keyword, split.rest)
    };
    let keyword = keyword.to_ascii_lowercase();
    matches!(keyword.as_str(), "run" | "copy" | "add") && parse_string_array(&rest).is_err()
}

/// The heredocs announced on `line`, in order (bodies empty). The line is lexed like
/// BuildKit does: quotes and escapes kept, variables left alone; a line that does not lex
/// has no heredocs.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let opts = Options {
        escape: '\\',
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
    };
    let Ok((_, words)) = shell::process(opts, line, &|_| None) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc_word(&w)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// A heredoc word `^(\d*)<<(-?)([^<]*)$` with a one-word name, or `None`.
pub(crate) fn parse_heredoc_word(src: &str) -> Result<Option<Heredoc>, String> {
    let digits_len = src.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = src[digits_len..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (strip_tabs, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let none = |_: &str| None;
    let mut opts = Options {
        escape: '\\',
        raw_quotes: false,
        raw_escapes: false,
        skip_unset: true,
    };
    let (_, words) = shell::process(opts, rest, &none).map_err(|e| e.to_string())?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    opts.raw_quotes = true;
    let (_, raw) = shell::process(opts, rest, &none).map_err(|e| e.to_string())?;
    let [raw] = raw.as_slice() else {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    };
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(Heredoc {
        name: name.clone(),
        content: String::new(),
        expand: quotes(name) == quotes(raw),
        strip_tabs,
        fd: src[..digits_len].parse().ok(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flag_rules() {
        let defs = [
            ("link", FlagType::Bool),
            ("from", FlagType::String),
            ("exclude", FlagType::Strings),
        ];
        let f = parse_flags(
            &flags(&["--link", "--from=a", "--exclude=x", "--exclude=y"]),
            &defs,
        );
        let f = f.ok();
        assert!(f.as_ref().is_some_and(|f| f.bool("link")));
        assert_eq!(
            f.as_ref().and_then(|f| f.string("from")).as_deref(),
            Some("a")
        );
        assert_eq!(f.map(|f| f.all("exclude")), Some(flags(&["x", "y"])));

        let err = |v: &[&str]| parse_flags(&flags(v), &defs).err();
        assert_eq!(err(&["--nope=1"]).as_deref(), Some("unknown flag: nope"));
        assert_eq!(
            err(&["--from"]).as_deref(),
            Some("missing a value on flag: from")
        );
        assert_eq!(
            err(&["--link="]).as_deref(),
            Some("missing a value on flag: link")
        );
        assert_eq!(
            err(&["--link=yes"]).as_deref(),
            Some("expecting boolean value for flag link, not: yes")
        );
        assert_eq!(
            err(&["--from=a", "--from=b"]).as_deref(),
            Some("duplicate flag specified: from")
        );
        assert!(parse_flags(&flags(&["--link=FALSE"]), &defs).is_ok_and(|f| !f.bool("link")));
    }

    #[test]
    fn heredoc_words() {
        let h = |s: &str| parse_heredoc_word(s).ok().flatten();
        let eof = h("<<EOF");
        assert_eq!(
            eof.as_ref()
                .map(|h| (h.name.as_str(), h.expand, h.strip_tabs)),
            Some(("EOF", true, false))
        );
        assert_eq!(h("<<-EOF").map(|h| h.strip_tabs), Some(true));
        assert_eq!(
            h("<<\"EOF\"").map(|h| (h.name, h.expand)),
            Some(("EOF".into(), false))
        );
        assert_eq!(h("<<'EOF'").map(|h| h.expand), Some(false));
        assert_eq!(
            h("<<E\"O\"F").map(|h| (h.name, h.expand)),
            Some(("EOF".into(), false))
        );
        assert_eq!(h("3<<EOF").and_then(|h| h.fd), Some(3));
        for not in [
            "<<",
            "<<-",
            "<EOF",
            "<<<EOF",
            "a<<EOF",
            "<<A<B",
            "<<\"\"",
            "<<'a b'x y",
        ] {
            assert!(h(not).is_none(), "{not}");
        }
    }

    #[test]
    fn mounts() {
        assert_eq!(
            parse_mount("type=cache,target=/root/.cache,readonly"),
            Ok(vec![
                ("type".into(), Some("cache".into())),
                ("target".into(), Some("/root/.cache".into())),
                ("readonly".into(), None),
            ])
        );
        assert_eq!(
            parse_mount("\"source=a,b\",target=/x"),
            Ok(vec![
                ("source".into(), Some("a,b".into())),
                ("target".into(), Some("/x".into())),
            ])
        );
        assert!(parse_mount("a\"b").is_err());
        assert!(parse_mount("\"abc").is_err());
    }

    #[test]
    fn stage_names() {
        for ok in ["a", "build-1", "x_y.z"] {
            assert!(valid_stage_name(ok), "{ok}");
        }
        for bad in ["", "1a", "-a", "a/b", "a:b", "é"] {
            assert!(!valid_stage_name(bad), "{bad}");
        }
    }

    #[test]
    fn go_int32() {
        assert_eq!(parse_go_int32("3"), Some(3));
        assert_eq!(parse_go_int32("+3"), Some(3));
        assert_eq!(parse_go_int32("-1"), Some(-1));
        assert_eq!(parse_go_int32("2147483648"), None);
        assert_eq!(parse_go_int32("1.0"), None);
        assert_eq!(parse_go_int32(""), None);
    }
}
