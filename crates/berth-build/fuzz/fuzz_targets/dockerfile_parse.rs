#![no_main]
//! Parses arbitrary bytes as a Dockerfile (UTF-8-lossy) and runs the shell lexer over every
//! raw word: nothing may panic or hang, and errors must point at a line ≥ 1.

use berth_build::dockerfile::{self, InstructionKind, ShellLex, Source};
use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    match name {
        "A" => Some("a b".into()),
        "EMPTY" => Some(String::new()),
        "P" => Some("/usr/local/bin/app.tar.gz".into()),
        "X" => Some("x*?/}".into()),
        _ => None,
    }
}

fn lex(lex: &ShellLex, word: &str) {
    let _ = lex.process_word(word, &env);
    let _ = lex.process_words(word, &env);
}

fn words(kind: &InstructionKind) -> Vec<&str> {
    match kind {
        InstructionKind::Env(kv) | InstructionKind::Label(kv) => kv
            .pairs
            .iter()
            .flat_map(|p| [p.key.as_str(), p.value.as_str()])
            .collect(),
        InstructionKind::Arg(pairs) => pairs
            .iter()
            .flat_map(|p| [Some(p.key.as_str()), p.value.as_deref()])
            .flatten()
            .collect(),
        InstructionKind::Expose(v) | InstructionKind::Volume(v) | InstructionKind::Shell(v) => {
            v.iter().map(String::as_str).collect()
        }
        InstructionKind::User(s)
        | InstructionKind::Workdir(s)
        | InstructionKind::StopSignal(s)
        | InstructionKind::Maintainer(s) => vec![s.as_str()],
        InstructionKind::Copy(c) => c
            .sources
            .iter()
            .map(|s| match s {
                Source::Path(p) => p.as_str(),
                Source::Heredoc(h) => h.content.as_str(),
            })
            .chain([c.dest.as_str()])
            .collect(),
        InstructionKind::Add(a) => a
            .sources
            .iter()
            .map(|s| match s {
                Source::Path(p) => p.as_str(),
                Source::Heredoc(h) => h.content.as_str(),
            })
            .chain([a.dest.as_str()])
            .collect(),
        InstructionKind::OnBuild {
            expression,
            trigger,
        } => {
            let mut v = words(trigger);
            v.push(expression.as_str());
            v
        }
        _ => Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The lexer on its own, with both escape characters.
    lex(&ShellLex::new('\\'), &text);
    lex(&ShellLex::new('`'), &text);
    match dockerfile::parse(&text) {
        Ok(df) => {
            assert!(!df.stages.is_empty());
            let shell = ShellLex::new(df.escape);
            for (i, stage) in df.stages.iter().enumerate() {
                assert_eq!(stage.index, i);
                assert!(stage.location.line >= 1 && stage.location.column >= 1);
                lex(&shell, &stage.base);
                for ins in &stage.instructions {
                    assert!(ins.location.line >= 1);
                    assert!(ins.location.end_line >= ins.location.line);
                    for w in words(&ins.kind) {
                        lex(&shell, w);
                    }
                    if let InstructionKind::Run(r) = &ins.kind {
                        for h in &r.heredocs {
                            let _ = h.body();
                        }
                    }
                }
            }
            for ins in &df.meta_args {
                for w in words(&ins.kind) {
                    lex(&shell, w);
                }
            }
        }
        Err(e) => {
            assert!(e.line >= 1, "error without a line: {e}");
            assert!(e.column >= 1, "error without a column: {e}");
            assert!(!e.message.is_empty());
        }
    }
});
