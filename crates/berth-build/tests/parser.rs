//! The Dockerfile parser against BuildKit's semantics, through the public API only.

use std::collections::HashMap;
use std::time::Duration;

use berth_build::dockerfile::{
    self, parse, parse_file, ArgPair, Command, Dockerfile, Healthcheck, Instruction,
    InstructionKind, KeyValue, ParseError, ShellLex, Source,
};

fn ok(src: &str) -> Dockerfile {
    match parse(src) {
        Ok(d) => d,
        Err(e) => panic!("{e}\n--- source ---\n{src}"),
    }
}

fn err(src: &str) -> ParseError {
    match parse(src) {
        Ok(d) => panic!("expected an error, got {d:#?}"),
        Err(e) => e,
    }
}

/// The instructions of the only stage.
fn body(src: &str) -> Vec<Instruction> {
    let d = ok(src);
    assert_eq!(d.stages.len(), 1);
    d.stages
        .into_iter()
        .next()
        .map(|s| s.instructions)
        .unwrap_or_default()
}

fn first(src: &str) -> InstructionKind {
    match body(src).into_iter().next() {
        Some(i) => i.kind,
        None => panic!("no instruction in {src}"),
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

fn expand(lex: &ShellLex, word: &str, env: &HashMap<&str, &str>) -> String {
    match lex.process_word(word, &|k| env.get(k).map(|v| v.to_string())) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

// ---------- directives ----------

#[test]
fn directives_at_the_top() {
    let d = ok("# syntax=docker/dockerfile:1.7\n# ESCAPE=`\n#check = skip=all\nFROM a\n");
    assert_eq!(d.directive("syntax"), Some("docker/dockerfile:1.7"));
    assert_eq!(d.directive("escape"), Some("`"));
    assert_eq!(d.directive("check"), Some("skip=all"));
    assert_eq!(d.escape, '`');
    assert_eq!(
        d.directives.iter().map(|d| d.line).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[test]
fn directives_after_a_comment_empty_line_or_instruction_are_comments() {
    for src in [
        "# hello\n# escape=`\nFROM a\n",
        "\n# escape=`\nFROM a\n",
        "FROM a\n# escape=`\n",
        "# unknown=1\n# escape=`\nFROM a\n",
    ] {
        let d = ok(src);
        assert_eq!(d.escape, '\\', "{src:?}");
        assert!(d.directive("escape").is_none(), "{src:?}");
    }
}

#[test]
fn directive_errors() {
    let e = err("# escape=\\\n# escape=`\nFROM a\n");
    assert_eq!(e.message, "only one escape parser directive can be used");
    assert_eq!(e.line, 2);
    let e = err("# escape=x\nFROM a\n");
    assert!(
        e.message.contains("invalid escape token 'x'"),
        "{}",
        e.message
    );
    let e = err("# syntax=a\n# SYNTAX=b\nFROM a\n");
    assert_eq!(e.message, "only one syntax parser directive can be used");
}

#[test]
fn leading_whitespace_before_directive_is_allowed() {
    let d = ok("   # escape=`\nFROM a\nRUN x `\n  y\n");
    assert_eq!(d.escape, '`');
    assert_eq!(d.stages[0].instructions[0].original, "RUN x   y");
}

// ---------- lines ----------

#[test]
fn continuations_comments_and_empty_lines() {
    let src = "FROM a\nRUN echo a \\\n# a comment inside\n    b \\\n\n  \\\n  c\nRUN next\n";
    let d = ok(src);
    let ins = &d.stages[0].instructions;
    assert_eq!(ins.len(), 2);
    assert_eq!(ins[0].original, "RUN echo a     b     c");
    assert_eq!(
        ins[0].kind,
        InstructionKind::Run(run_shell("echo a     b     c"))
    );
    assert_eq!((ins[0].location.line, ins[0].location.end_line), (2, 7));
    assert_eq!(ins[1].location.line, 8);
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert!(d.warnings[0].message.contains("empty continuation line"));
}

fn run_shell(s: &str) -> berth_build::dockerfile::Run {
    berth_build::dockerfile::Run {
        command: Command::Shell(s.into()),
        heredocs: vec![],
        mounts: vec![],
        network: None,
        security: None,
    }
}

#[test]
fn escaped_escape_does_not_continue() {
    let ins = body("FROM a\nRUN echo \\\\\nRUN b\n");
    assert_eq!(ins.len(), 2);
    assert_eq!(ins[0].original, "RUN echo \\\\");
}

#[test]
fn continuation_at_end_of_file() {
    let ins = body("FROM a\nRUN echo a \\");
    assert_eq!(ins[0].original, "RUN echo a");
}

#[test]
fn crlf_bom_and_leading_whitespace() {
    let d = ok("\u{feff}FROM a\r\n   run  echo \\\r\n hi\r\n\tCMD x\r\n");
    let ins = &d.stages[0].instructions;
    assert_eq!(ins[0].kind, InstructionKind::Run(run_shell("echo  hi")));
    assert_eq!((ins[0].location.line, ins[0].location.column), (2, 4));
    assert_eq!((ins[1].location.line, ins[1].location.column), (4, 2));
    assert_eq!(d.stages[0].location.column, 1);
}

#[test]
fn keywords_are_case_insensitive() {
    let d = ok("from a as B\nrUn x\n");
    assert_eq!(d.stages[0].name.as_deref(), Some("b"));
    assert!(matches!(
        d.stages[0].instructions[0].kind,
        InstructionKind::Run(_)
    ));
    assert!(d.stage("B").is_some());
}

#[test]
fn windows_escape_and_paths() {
    // BuildKit's escape-backtick test file: backslashes are plain characters.
    let src = "# escape=`\nFROM mcr.microsoft.com/windowsservercore\nCOPY testfile.txt c:\\\nRUN dir c:\\\nENV PATH=c:\\windows;c:\\tools `\n    X=1\nRUN [\"c:\\\\tools\\\\a.exe\", \"-x\"]\n";
    let d = ok(src);
    let ins = &d.stages[0].instructions;
    match &ins[0].kind {
        InstructionKind::Copy(c) => {
            assert_eq!(c.sources, vec![Source::Path("testfile.txt".into())]);
            assert_eq!(c.dest, "c:\\");
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(ins[1].kind, InstructionKind::Run(run_shell("dir c:\\")));
    match &ins[2].kind {
        InstructionKind::Env(e) => {
            assert_eq!(
                e.pairs,
                vec![kv("PATH", "c:\\windows;c:\\tools"), kv("X", "1")]
            );
            let lex = ShellLex::new(d.escape);
            assert_eq!(
                expand(&lex, &e.pairs[0].value, &HashMap::new()),
                "c:\\windows;c:\\tools"
            );
        }
        k => panic!("{k:?}"),
    }
    match &ins[3].kind {
        InstructionKind::Run(r) => {
            assert_eq!(r.command, Command::Exec(strs(&["c:\\tools\\a.exe", "-x"])))
        }
        k => panic!("{k:?}"),
    }
}

// ---------- JSON and shell forms ----------

#[test]
fn exec_and_shell_forms() {
    assert_eq!(
        first("FROM a\nCMD [\"echo\", \"say \\\"hi\\\"\"]\n"),
        InstructionKind::Cmd(Command::Exec(strs(&["echo", "say \"hi\""])))
    );
    assert_eq!(
        first("FROM a\nCMD echo [not json\n"),
        InstructionKind::Cmd(Command::Shell("echo [not json".into()))
    );
    // Invalid JSON falls back to the shell form, like BuildKit.
    assert_eq!(
        first("FROM a\nENTRYPOINT ['single', 'quotes']\n"),
        InstructionKind::Entrypoint(Command::Shell("['single', 'quotes']".into()))
    );
    assert_eq!(
        first("FROM a\nENTRYPOINT [\"a\",]\n"),
        InstructionKind::Entrypoint(Command::Shell("[\"a\",]".into()))
    );
    assert_eq!(
        first("FROM a\nCMD []\n"),
        InstructionKind::Cmd(Command::Exec(vec![]))
    );
    assert_eq!(
        first("FROM a\nCMD\n"),
        InstructionKind::Cmd(Command::Shell(String::new()))
    );
    let e = err("FROM a\nCMD [\"a\", 1]\n");
    assert_eq!(
        e.message,
        "when using JSON array syntax, arrays must be comprised of strings only"
    );
    assert_eq!((e.line, e.column), (2, 1));
}

#[test]
fn shell_requires_json() {
    assert_eq!(
        first("FROM a\nSHELL [\"powershell\", \"-command\"]\n"),
        InstructionKind::Shell(strs(&["powershell", "-command"]))
    );
    assert_eq!(
        err("FROM a\nSHELL /bin/bash -c\n").message,
        "SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        err("FROM a\nSHELL []\n").message,
        "SHELL requires at least one argument"
    );
}

#[test]
fn volume_forms() {
    assert_eq!(
        first("FROM a\nVOLUME /a  /b\n"),
        InstructionKind::Volume(strs(&["/a", "/b"]))
    );
    assert_eq!(
        first("FROM a\nVOLUME [\"/a b\", \"/c\"]\n"),
        InstructionKind::Volume(strs(&["/a b", "/c"]))
    );
    assert_eq!(
        err("FROM a\nVOLUME [\" \"]\n").message,
        "VOLUME specified can not be an empty string"
    );
    assert_eq!(
        err("FROM a\nVOLUME\n").message,
        "VOLUME requires at least one argument"
    );
}

// ---------- FROM, stages, meta args ----------

#[test]
fn stages_and_meta_args() {
    let d = ok("ARG A=1 B\nARG C\nFROM --platform=$BUILDPLATFORM golang:${V} AS Build\nRUN x\nFROM scratch\nCOPY --from=build /a /b\n");
    let pairs: Vec<&ArgPair> = d.meta_arg_pairs().collect();
    assert_eq!(
        pairs
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_deref()))
            .collect::<Vec<_>>(),
        [("A", Some("1")), ("B", None), ("C", None)]
    );
    assert_eq!(d.stages.len(), 2);
    let s0 = &d.stages[0];
    assert_eq!(s0.name.as_deref(), Some("build"));
    assert_eq!(s0.base, "golang:${V}");
    assert_eq!(s0.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!((s0.index, s0.location.line), (0, 3));
    assert_eq!(
        s0.original,
        "FROM --platform=$BUILDPLATFORM golang:${V} AS Build"
    );
    assert_eq!(s0.instructions.len(), 1);
    let s1 = &d.stages[1];
    assert_eq!(
        (s1.name.as_deref(), s1.index, s1.base.as_str()),
        (None, 1, "scratch")
    );
    assert_eq!(d.stage("BUILD").map(|s| s.index), Some(0));
}

#[test]
fn from_errors() {
    assert_eq!(
        err("FROM a b\n").message,
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM\n").message,
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM a TO b\n").message,
        "FROM requires either one or three arguments"
    );
    let e = err("FROM a AS 1st\n");
    assert!(
        e.message
            .starts_with("invalid name for build stage: \"1st\""),
        "{}",
        e.message
    );
    assert_eq!(err("FROM --plat=x a\n").message, "unknown flag: plat");
}

#[test]
fn no_from() {
    let e = err("RUN x\nFROM a\n");
    assert!(
        e.message.starts_with("no build stage in current context"),
        "{}",
        e.message
    );
    assert_eq!((e.line, e.column), (1, 1));
    let e = err("ARG a\n");
    assert!(e.message.contains("no stages"), "{}", e.message);
    let e = err("");
    assert_eq!(
        (e.message.as_str(), e.line),
        ("file with no instructions", 1)
    );
    let e = err("# just a comment\n\n   \n");
    assert_eq!(
        (e.message.as_str(), e.line),
        ("file with no instructions", 3)
    );
}

#[test]
fn duplicate_stage_names_warn() {
    let d = ok("FROM a AS x\nFROM b AS X\n");
    assert_eq!(d.warnings.len(), 1);
    assert_eq!(d.stage("x").map(|s| s.base.as_str()), Some("a"));
}

// ---------- ENV, LABEL, ARG ----------

#[test]
fn env_forms() {
    match first("FROM a\nENV a=1 b=\"v 2\" c='x y' d=e\\ f\n") {
        InstructionKind::Env(e) => {
            assert!(!e.legacy);
            assert_eq!(
                e.pairs,
                vec![
                    kv("a", "1"),
                    kv("b", "\"v 2\""),
                    kv("c", "'x y'"),
                    kv("d", "e\\ f")
                ]
            );
            let lex = ShellLex::default();
            let none = HashMap::new();
            let values: Vec<String> = e
                .pairs
                .iter()
                .map(|p| expand(&lex, &p.value, &none))
                .collect();
            assert_eq!(values, ["1", "v 2", "x y", "e f"]);
        }
        k => panic!("{k:?}"),
    }
    match first("FROM a\nENV key   value with  spaces \"q\"\n") {
        InstructionKind::Env(e) => {
            assert!(e.legacy);
            assert_eq!(e.pairs, vec![kv("key", "value with  spaces \"q\"")]);
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(
        err("FROM a\nENV a\n").message,
        "ENV must have two arguments"
    );
    assert_eq!(
        err("FROM a\nENV\n").message,
        "ENV requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nENV =x\n").message,
        "ENV names can not be blank"
    );
    assert!(err("FROM a\nENV a=1 b\n")
        .message
        .contains("can't find = in \"b\""));
}

#[test]
fn env_pairs_do_not_see_each_other() {
    // BuildKit expands the whole ENV instruction against the environment *before* it, so
    // `b=$a` sees the previous `a` (documented Docker behaviour: `ENV abc=bye def=$abc`
    // gives def=hello after `ENV abc=hello`).
    let ins = body("FROM a\nENV abc=hello\nENV abc=bye def=$abc\n");
    let lex = ShellLex::default();
    let mut env: HashMap<String, String> = HashMap::new();
    for i in &ins {
        let InstructionKind::Env(e) = &i.kind else {
            panic!()
        };
        let snapshot = env.clone();
        let lookup = |k: &str| snapshot.get(k).cloned();
        for p in &e.pairs {
            let k = lex.process_word(&p.key, &lookup).unwrap_or_default();
            let v = lex.process_word(&p.value, &lookup).unwrap_or_default();
            env.insert(k, v);
        }
    }
    assert_eq!(env.get("abc").map(String::as_str), Some("bye"));
    assert_eq!(env.get("def").map(String::as_str), Some("hello"));
}

#[test]
fn label_forms() {
    match first(
        "FROM a\nLABEL \"com.example.vendor\"=\"ACME Inc\" version=1.0 multi.line=\"a \\\nb\"\n",
    ) {
        InstructionKind::Label(l) => assert_eq!(
            l.pairs,
            vec![
                kv("\"com.example.vendor\"", "\"ACME Inc\""),
                kv("version", "1.0"),
                kv("multi.line", "\"a b\"")
            ]
        ),
        k => panic!("{k:?}"),
    }
    match first("FROM a\nLABEL maintainer someone@example.com\n") {
        InstructionKind::Label(l) => {
            assert!(l.legacy);
            assert_eq!(l.pairs, vec![kv("maintainer", "someone@example.com")]);
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn arg_forms() {
    assert_eq!(
        first("FROM a\nARG a b=2 c=\"x y\" d=\n"),
        InstructionKind::Arg(vec![
            ArgPair {
                key: "a".into(),
                value: None
            },
            ArgPair {
                key: "b".into(),
                value: Some("2".into())
            },
            ArgPair {
                key: "c".into(),
                value: Some("\"x y\"".into())
            },
            ArgPair {
                key: "d".into(),
                value: Some(String::new())
            },
        ])
    );
    assert_eq!(
        err("FROM a\nARG\n").message,
        "ARG requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nARG =1\n").message,
        "ARG names can not be blank"
    );
}

// ---------- simple instructions ----------

#[test]
fn single_argument_instructions() {
    let ins = body("FROM a\nUSER app:app\nWORKDIR /my dir\nSTOPSIGNAL SIGKILL\nMAINTAINER Jane <j@x>\nEXPOSE 80 443/tcp $P\n");
    let kinds: Vec<InstructionKind> = ins.into_iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        vec![
            InstructionKind::User("app:app".into()),
            InstructionKind::Workdir("/my dir".into()),
            InstructionKind::StopSignal("SIGKILL".into()),
            InstructionKind::Maintainer("Jane <j@x>".into()),
            InstructionKind::Expose(strs(&["80", "443/tcp", "$P"])),
        ]
    );
    assert_eq!(
        err("FROM a\nUSER\n").message,
        "USER requires exactly one argument"
    );
    assert_eq!(
        err("FROM a\nWORKDIR\n").message,
        "WORKDIR requires exactly one argument"
    );
    assert_eq!(
        err("FROM a\nEXPOSE\n").message,
        "EXPOSE requires at least one argument"
    );
}

#[test]
fn expansion_helper_covers_instruction_kinds() {
    let ins = body("FROM a\nRUN x\nENV a=b\nCOPY a b\nHEALTHCHECK NONE\nONBUILD RUN x\nUSER u\n");
    let flags: Vec<(&str, bool)> = ins
        .iter()
        .map(|i| (i.kind.name(), i.kind.expands_variables()))
        .collect();
    assert_eq!(
        flags,
        [
            ("RUN", false),
            ("ENV", true),
            ("COPY", true),
            ("HEALTHCHECK", false),
            ("ONBUILD", false),
            ("USER", true)
        ]
    );
    assert!(dockerfile::expands_variables("from"));
}

// ---------- RUN ----------

#[test]
fn run_flags() {
    match first("FROM a\nRUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=secret,id=tok --network=none --security=insecure make\n") {
        InstructionKind::Run(r) => {
            assert_eq!(r.command, Command::Shell("make".into()));
            assert_eq!(r.mounts.len(), 2);
            assert_eq!(r.mounts[0].raw, "type=cache,target=/root/.cache,sharing=locked");
            assert_eq!(
                r.mounts[1].options,
                vec![("type".into(), Some("secret".into())), ("id".into(), Some("tok".into()))]
            );
            assert_eq!(r.network.as_deref(), Some("none"));
            assert_eq!(r.security.as_deref(), Some("insecure"));
        }
        k => panic!("{k:?}"),
    }
    let e = err("FROM a\n  RUN --bogus=1 x\n");
    assert_eq!(e.to_string(), "Dockerfile:2:3: unknown flag: bogus");
    assert_eq!(
        err("FROM a\nRUN --network x\n").message,
        "missing a value on flag: network"
    );
    // Flags only count before the command.
    assert_eq!(
        first("FROM a\nRUN echo --mount=x\n"),
        InstructionKind::Run(run_shell("echo --mount=x"))
    );
}

// ---------- heredocs ----------

fn run_of(src: &str) -> berth_build::dockerfile::Run {
    match first(src) {
        InstructionKind::Run(r) => r,
        k => panic!("{k:?}"),
    }
}

#[test]
fn run_heredoc() {
    let ins = body("FROM a\nRUN <<EOF\necho $HOME\n  EOF\nEOF\nRUN after\n");
    assert_eq!(ins.len(), 2);
    let InstructionKind::Run(r) = &ins[0].kind else {
        panic!()
    };
    assert_eq!(r.command, Command::Shell("<<EOF".into()));
    assert_eq!(r.heredocs.len(), 1);
    let h = &r.heredocs[0];
    assert_eq!(
        (h.name.as_str(), h.expand, h.strip_tabs),
        ("EOF", true, false)
    );
    assert_eq!(h.content, "echo $HOME\n  EOF\n");
    assert_eq!(ins[0].original, "RUN <<EOF");
    assert_eq!((ins[0].location.line, ins[0].location.end_line), (2, 5));
    assert_eq!(ins[1].location.line, 6);
}

#[test]
fn heredoc_quoting_and_tabs() {
    let r = run_of("FROM a\nRUN <<-\"EOT\" bash\n\tif true; then\n\t\techo $X\n\tfi\n\tEOT\n");
    let h = &r.heredocs[0];
    assert_eq!(
        (h.name.as_str(), h.expand, h.strip_tabs),
        ("EOT", false, true)
    );
    assert_eq!(h.content, "\tif true; then\n\t\techo $X\n\tfi\n");
    assert_eq!(h.body(), "if true; then\necho $X\nfi\n");
    assert_eq!(r.command, Command::Shell("<<-\"EOT\" bash".into()));

    let r = run_of("FROM a\nRUN <<'E' cat\n$literal\nE\n");
    assert!(!r.heredocs[0].expand);
    // Without `-`, an indented terminator is just content.
    let e = err("FROM a\nRUN <<EOF\n\tEOF\n");
    assert!(
        e.message.starts_with("unterminated heredoc"),
        "{}",
        e.message
    );
    assert_eq!((e.line, e.column), (2, 1));
}

#[test]
fn heredoc_terminator_must_match_exactly() {
    // Trailing spaces make it content; CRLF is fine (line endings are trimmed).
    let r = run_of("FROM a\nRUN <<EOF\nEOF \r\nEOF\r\n");
    assert_eq!(r.heredocs[0].content, "EOF \r\n");
}

#[test]
fn several_heredocs_on_one_line() {
    let r = run_of("FROM a\nRUN <<A cat /dev/stdin <<B > /out\nfirst\nA\nsecond\nB\n");
    assert_eq!(
        r.heredocs
            .iter()
            .map(|h| (h.name.as_str(), h.content.as_str()))
            .collect::<Vec<_>>(),
        [("A", "first\n"), ("B", "second\n")]
    );
    let r = run_of("FROM a\nRUN 3<<FD cat <&3\nx\nFD\n");
    assert_eq!(r.heredocs[0].fd, Some(3));
}

#[test]
fn heredoc_after_continuation() {
    let r = run_of("FROM a\nRUN python3 \\\n  <<EOF\nprint(1)\nEOF\n");
    assert_eq!(r.command, Command::Shell("python3   <<EOF".into()));
    assert_eq!(r.heredocs[0].content, "print(1)\n");
}

#[test]
fn heredoc_only_for_run_copy_add_in_shell_form() {
    // CMD does not take heredocs: the next lines are instructions (and fail).
    let e = err("FROM a\nCMD <<EOF\nhello\nEOF\n");
    assert_eq!(e.message, "unknown instruction: hello");
    assert_eq!(e.line, 3);
    // JSON form RUN does not either.
    let e = err("FROM a\nRUN [\"<<EOF\"]\nbody\nEOF\n");
    assert_eq!(e.message, "unknown instruction: body");
    // Quoted `<<` is not a heredoc.
    assert!(run_of("FROM a\nRUN echo '<<EOF'\n").heredocs.is_empty());
    // Unbalanced quotes: BuildKit's lexer fails on the line, so no heredocs.
    assert!(run_of("FROM a\nRUN echo \"<<EOF\n").heredocs.is_empty());
}

#[test]
fn copy_heredocs() {
    match first("FROM a\nCOPY <<EOF /etc/conf\nkey=$V\nEOF\n") {
        InstructionKind::Copy(c) => {
            assert_eq!(c.dest, "/etc/conf");
            let [Source::Heredoc(h)] = c.sources.as_slice() else {
                panic!("{:?}", c.sources)
            };
            assert_eq!(
                (h.name.as_str(), h.content.as_str(), h.expand),
                ("EOF", "key=$V\n", true)
            );
        }
        k => panic!("{k:?}"),
    }
    match first("FROM a\nCOPY <<a file.txt <<'b' /dir/\none\na\ntwo $x\nb\n") {
        InstructionKind::Copy(c) => {
            assert_eq!(c.dest, "/dir/");
            assert_eq!(c.sources.len(), 3);
            assert!(
                matches!(&c.sources[0], Source::Heredoc(h) if h.name == "a" && h.content == "one\n")
            );
            assert_eq!(c.sources[1], Source::Path("file.txt".into()));
            assert!(
                matches!(&c.sources[2], Source::Heredoc(h) if h.name == "b" && h.content == "two $x\n" && !h.expand)
            );
        }
        k => panic!("{k:?}"),
    }
    let e = err("FROM a\nCOPY file <<EOF\nx\nEOF\n");
    assert_eq!(e.message, "COPY cannot accept a heredoc as a destination");
}

#[test]
fn add_heredoc() {
    match first("FROM a\nADD <<-EOF /x\n\tv\n\tEOF\n") {
        InstructionKind::Add(a) => {
            let [Source::Heredoc(h)] = a.sources.as_slice() else {
                panic!()
            };
            assert_eq!(h.body(), "v\n");
        }
        k => panic!("{k:?}"),
    }
}

// ---------- COPY / ADD ----------

#[test]
fn copy_flags_and_forms() {
    match first("FROM a\nCOPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=.git ./a ./b /dst/\n") {
        InstructionKind::Copy(c) => {
            assert_eq!(c.from.as_deref(), Some("build"));
            assert_eq!(c.chown.as_deref(), Some("app:app"));
            assert_eq!(c.chmod.as_deref(), Some("0755"));
            assert!(c.link && c.parents && !c.json);
            assert_eq!(c.exclude, strs(&["*.md", ".git"]));
            assert_eq!(c.sources, vec![Source::Path("./a".into()), Source::Path("./b".into())]);
            assert_eq!(c.dest, "/dst/");
        }
        k => panic!("{k:?}"),
    }
    match first("FROM a\nCOPY [\"a b\", \"c\", \"/d e/\"]\n") {
        InstructionKind::Copy(c) => {
            assert!(c.json);
            assert_eq!(
                c.sources,
                vec![Source::Path("a b".into()), Source::Path("c".into())]
            );
            assert_eq!(c.dest, "/d e/");
        }
        k => panic!("{k:?}"),
    }
    assert!(err("FROM a\nCOPY onlyone\n")
        .message
        .starts_with("COPY requires at least two arguments"));
    assert_eq!(
        err("FROM a\nCOPY --checksum=x a b\n").message,
        "unknown flag: checksum"
    );
    assert_eq!(
        err("FROM a\nCOPY --link=maybe a b\n").message,
        "expecting boolean value for flag link, not: maybe"
    );
}

#[test]
fn add_flags() {
    match first("FROM a\nADD --checksum=sha256:abc --keep-git-dir=true --link --chown=1:2 --chmod=644 https://x/y.tgz /z\n") {
        InstructionKind::Add(a) => {
            assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
            assert!(a.keep_git_dir && a.link);
            assert_eq!((a.chown.as_deref(), a.chmod.as_deref()), (Some("1:2"), Some("644")));
            assert_eq!(a.sources, vec![Source::Path("https://x/y.tgz".into())]);
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(
        err("FROM a\nADD --from=x a b\n").message,
        "unknown flag: from"
    );
}

// ---------- HEALTHCHECK ----------

#[test]
fn healthcheck() {
    assert_eq!(
        first("FROM a\nHEALTHCHECK NONE\n"),
        InstructionKind::Healthcheck(Healthcheck::None)
    );
    match first("FROM a\nHEALTHCHECK --interval=1m30s --timeout=.5s --start-period=0 --start-interval=5ms --retries=3 CMD curl -f http://localhost/\n") {
        InstructionKind::Healthcheck(Healthcheck::Cmd { command, interval, timeout, start_period, start_interval, retries }) => {
            assert_eq!(command, Command::Shell("curl -f http://localhost/".into()));
            assert_eq!(interval, Some(Duration::from_secs(90)));
            assert_eq!(timeout, Some(Duration::from_millis(500)));
            assert_eq!(start_period, Some(Duration::ZERO));
            assert_eq!(start_interval, Some(Duration::from_millis(5)));
            assert_eq!(retries, Some(3));
        }
        k => panic!("{k:?}"),
    }
    match first("FROM a\nHEALTHCHECK cmd [\"/bin/check\", \"-v\"]\n") {
        InstructionKind::Healthcheck(Healthcheck::Cmd {
            command,
            interval,
            retries,
            ..
        }) => {
            assert_eq!(command, Command::Exec(strs(&["/bin/check", "-v"])));
            assert_eq!((interval, retries), (None, None));
        }
        k => panic!("{k:?}"),
    }
    for (src, msg) in [
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "missing command after HEALTHCHECK CMD"),
        (
            "HEALTHCHECK PING x",
            "unknown type \"PING\" in HEALTHCHECK (try CMD)",
        ),
        (
            "HEALTHCHECK --interval=500us CMD x",
            "interval \"interval\" cannot be less than 1ms",
        ),
        (
            "HEALTHCHECK --timeout=-1s CMD x",
            "interval \"timeout\" cannot be less than 1ms",
        ),
        (
            "HEALTHCHECK --retries=-1 CMD x",
            "--retries cannot be negative (-1)",
        ),
        (
            "HEALTHCHECK --interval=5 CMD x",
            "time: missing unit in duration \"5\"",
        ),
        (
            "HEALTHCHECK --interval=5x CMD x",
            "time: unknown unit \"x\" in duration \"5x\"",
        ),
        ("HEALTHCHECK --bogus=1 CMD x", "unknown flag: bogus"),
    ] {
        assert_eq!(err(&format!("FROM a\n{src}\n")).message, msg, "{src}");
    }
    assert!(matches!(
        first("FROM a\nHEALTHCHECK --retries=0 CMD x\n"),
        InstructionKind::Healthcheck(Healthcheck::Cmd {
            retries: Some(0),
            ..
        })
    ));
}

// ---------- ONBUILD ----------

#[test]
fn onbuild() {
    match first("FROM a\nONBUILD RUN echo hi\n") {
        InstructionKind::OnBuild {
            expression,
            trigger,
        } => {
            assert_eq!(expression, "RUN echo hi");
            assert_eq!(*trigger, InstructionKind::Run(run_shell("echo hi")));
        }
        k => panic!("{k:?}"),
    }
    match first("FROM a\nonbuild COPY --chown=1 <<EOF /x\nbody\nEOF\n") {
        InstructionKind::OnBuild {
            expression,
            trigger,
        } => {
            assert_eq!(expression, "COPY --chown=1 <<EOF /x\nbody\nEOF");
            let InstructionKind::Copy(c) = *trigger else {
                panic!()
            };
            assert_eq!(c.chown.as_deref(), Some("1"));
            assert!(matches!(&c.sources[0], Source::Heredoc(h) if h.content == "body\n"));
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(
        err("FROM a\nONBUILD ONBUILD RUN x\n").message,
        "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        err("FROM a\nONBUILD FROM x\n").message,
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err("FROM a\nONBUILD maintainer x\n").message,
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err("FROM a\nONBUILD\n").message,
        "ONBUILD requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nONBUILD RUN --nope x\n").message,
        "unknown flag: nope"
    );
}

// ---------- errors ----------

#[test]
fn unknown_instruction_location_and_file_name() {
    let src = "FROM a\n\n# c\nRUN ok\n\n\n\n\n\n\n\n    RUNN x\n";
    let e = err(src);
    assert_eq!((e.line, e.column), (12, 5));
    assert_eq!(e.to_string(), "Dockerfile:12:5: unknown instruction: RUNN");
    let e = parse_file("app/Dockerfile.dev", src).err();
    assert_eq!(
        e.map(|e| e.to_string()).as_deref(),
        Some("app/Dockerfile.dev:12:5: unknown instruction: RUNN")
    );
}

#[test]
fn error_location_of_continued_instruction_is_its_first_line() {
    let e = err("FROM a\nCOPY \\\n  --bad=1 \\\n  a b\n");
    assert_eq!((e.line, e.message.as_str()), (2, "unknown flag: bad"));
}

#[test]
fn unterminated_heredoc_at_eof() {
    let e = err("FROM a\nCOPY <<EOF /x\nno end");
    assert_eq!(e.message, "unterminated heredoc EOF");
    assert_eq!(e.line, 2);
}

// ---------- serde + original ----------

#[test]
fn ast_serializes() {
    let d = ok("FROM a AS b\nRUN <<EOF\nx\nEOF\nHEALTHCHECK --interval=2s CMD true\n");
    let json = serde_json::to_string(&d).unwrap_or_default();
    assert!(json.contains("\"name\":\"b\""), "{json}");
    let back: Dockerfile = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, d);
}

#[test]
fn original_text_for_history() {
    let ins =
        body("FROM a\n  RUN   apt-get update && \\\n      apt-get install -y x   \nENV A=1\n");
    assert_eq!(
        ins[0].original,
        "RUN   apt-get update &&       apt-get install -y x"
    );
    assert_eq!(ins[1].original, "ENV A=1");
}
