//! The typed syntax tree of a Dockerfile.
//!
//! Arguments are kept **raw**: exactly the words BuildKit's parser produces, with quotes,
//! escapes and `$VAR` references still in them (JSON-form arguments are already decoded).
//! Expansion is the executor's job: for an instruction where [`super::expands_variables`] is
//! true it calls [`super::ShellLex::process_word`] on each raw word with the environment in
//! effect *before* the instruction. That is also why `ENV a=1 b=$a` sets `b` from the `a` of
//! an earlier instruction, not from this one (BuildKit expands the whole instruction first).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dockerfile {
    /// Parser directives found at the top (`syntax`, `escape`, `check`), in order.
    pub directives: Vec<Directive>,
    /// The escape character in effect (`\` or `` ` ``); build the executor's
    /// [`super::ShellLex`] with it.
    pub escape: char,
    /// `ARG` instructions before the first `FROM` (every item is [`InstructionKind::Arg`]).
    pub meta_args: Vec<Instruction>,
    /// The build stages, in order; never empty.
    pub stages: Vec<Stage>,
    /// Things BuildKit accepts but warns about (empty continuation lines, ...).
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// The value of directive `name` (lowercase: `syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }

    /// The first stage named `name` (compared case-insensitively, like BuildKit).
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        let name = name.to_lowercase();
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name.as_str()))
    }

    /// Every `ARG` declaration before the first `FROM`, flattened, in order.
    pub fn meta_arg_pairs(&self) -> impl Iterator<Item = &ArgPair> {
        self.meta_args.iter().flat_map(|i| match &i.kind {
            InstructionKind::Arg(pairs) => pairs.as_slice(),
            _ => &[],
        })
    }
}

/// A parser directive such as `# syntax=docker/dockerfile:1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    /// Lowercased name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value, surrounding whitespace removed.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// A warning about something accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// 1-based line the warning is about.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Where an instruction is in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// 1-based line of the instruction keyword.
    pub line: usize,
    /// 1-based column (in characters) of the instruction keyword.
    pub column: usize,
    /// 1-based last line of the instruction, including continuation lines and heredoc bodies.
    pub end_line: usize,
}

/// One build stage: a `FROM` and the instructions up to the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// The stage name from `FROM image AS name`, lowercased; `None` when unnamed.
    pub name: Option<String>,
    /// The base image or stage reference, raw (`$VAR`s are expanded with the meta args).
    pub base: String,
    /// `--platform=` value, raw.
    pub platform: Option<String>,
    /// 0-based position among the stages (also usable as `--from=<index>`).
    pub index: usize,
    /// Where the `FROM` is.
    pub location: Location,
    /// The `FROM` line as written (continuations joined, trimmed).
    pub original: String,
    /// The stage's instructions after `FROM`.
    pub instructions: Vec<Instruction>,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// Where it is.
    pub location: Location,
    /// The instruction as written: continuation lines joined (escape character and line
    /// break removed, comment lines dropped), trimmed; heredoc bodies are not included.
    /// This is what goes into image history.
    pub original: String,
    /// What it is.
    pub kind: InstructionKind,
}

/// A command of `RUN`, `CMD`, `ENTRYPOINT` or `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// JSON (exec) form: the argument vector, run without a shell.
    Exec(Vec<String>),
    /// Shell form: the raw text, run as `SHELL + [text]` (default `/bin/sh -c`). Empty when
    /// the instruction had no arguments.
    Shell(String),
}

/// A here-document attached to `RUN`, `COPY` or `ADD` (`<<EOF`, `<<-EOF`, `<<"EOF"`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heredoc {
    /// The terminator word with quotes removed (`EOF`); for `COPY`/`ADD` also the file name.
    pub name: String,
    /// The body exactly as written: every line up to the terminator, each with its line
    /// ending (`\n` or `\r\n`). Leading tabs are still there; see [`Heredoc::body`].
    pub content: String,
    /// `false` when any part of the word was quoted (`<<"EOF"`, `<<'EOF'`): the body is
    /// then used literally; otherwise variables in it are expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines (and the terminator may be indented
    /// with tabs).
    pub strip_tabs: bool,
    /// File descriptor written before `<<` (`3<<EOF`), if any.
    pub fd: Option<u32>,
}

impl Heredoc {
    /// The body with leading tabs removed from each line when [`Heredoc::strip_tabs`].
    pub fn body(&self) -> String {
        if !self.strip_tabs {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// A key/value pair of `ENV` or `LABEL`, both raw (quotes and `$VAR`s still in them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Raw key.
    pub key: String,
    /// Raw value.
    pub value: String,
}

/// `ENV` or `LABEL` pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValues {
    /// The pairs in order.
    pub pairs: Vec<KeyValue>,
    /// The legacy `ENV key value` form (one pair; the value is all the rest of the line).
    pub legacy: bool,
}

/// One `ARG` declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgPair {
    /// Name, raw.
    pub key: String,
    /// Default value, raw; `None` for `ARG name`.
    pub value: Option<String>,
}

/// One `RUN --mount=` flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// The flag value as written (`type=cache,target=/root/.cache`).
    pub raw: String,
    /// The comma-separated fields (CSV: `"..."` quoting allowed), split at the first `=`;
    /// `None` for a bare field such as `readonly`. Not validated here.
    pub options: Vec<(String, Option<String>)>,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The command. With heredocs, the shell text still contains the `<<EOF` words.
    pub command: Command,
    /// Heredocs, in the order of their `<<` words.
    pub heredocs: Vec<Heredoc>,
    /// `--mount=` flags.
    pub mounts: Vec<MountSpec>,
    /// `--network=` (`default`, `none`, `host`), raw.
    pub network: Option<String>,
    /// `--security=` (`sandbox`, `insecure`), raw.
    pub security: Option<String>,
}

/// A source of `COPY` or `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A path, URL or git reference, raw.
    Path(String),
    /// A heredoc: a file named [`Heredoc::name`] with the heredoc's body.
    Heredoc(Heredoc),
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// Sources, in order.
    pub sources: Vec<Source>,
    /// Destination, raw.
    pub dest: String,
    /// Arguments were in JSON form.
    pub json: bool,
    /// `--from=` stage name, index or image, raw.
    pub from: Option<String>,
    /// `--chown=`, raw.
    pub chown: Option<String>,
    /// `--chmod=`, raw.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude=` patterns (repeatable), raw.
    pub exclude: Vec<String>,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    /// Sources, in order.
    pub sources: Vec<Source>,
    /// Destination, raw.
    pub dest: String,
    /// Arguments were in JSON form.
    pub json: bool,
    /// `--chown=`, raw.
    pub chown: Option<String>,
    /// `--chmod=`, raw.
    pub chmod: Option<String>,
    /// `--checksum=`, raw.
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--link`.
    pub link: bool,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [flags] CMD ...`. Durations of `0` (or absent) mean "inherit/default".
    Cmd {
        /// The test: exec form → `["CMD", ...]`, shell form → `["CMD-SHELL", text]`.
        command: Command,
        /// `--interval=`.
        interval: Option<Duration>,
        /// `--timeout=`.
        timeout: Option<Duration>,
        /// `--start-period=`.
        start_period: Option<Duration>,
        /// `--start-interval=`.
        start_interval: Option<Duration>,
        /// `--retries=`.
        retries: Option<u32>,
    },
}

/// What an instruction is, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstructionKind {
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `ENV`.
    Env(KeyValues),
    /// `ARG` (one or more declarations).
    Arg(Vec<ArgPair>),
    /// `LABEL`.
    Label(KeyValues),
    /// `EXPOSE` ports (`80`, `53/udp`, `$PORT`), raw, in the order written.
    Expose(Vec<String>),
    /// `USER`, raw (`user[:group]`).
    User(String),
    /// `WORKDIR`, raw.
    Workdir(String),
    /// `COPY`.
    Copy(Copy),
    /// `ADD`.
    Add(Add),
    /// `VOLUME` paths, raw (JSON or whitespace-separated).
    Volume(Vec<String>),
    /// `STOPSIGNAL`, raw.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `SHELL` (JSON form only).
    Shell(Vec<String>),
    /// `ONBUILD`.
    OnBuild {
        /// The trigger as stored in the image config (`RUN echo hi`; heredoc bodies are
        /// appended like BuildKit does).
        expression: String,
        /// The trigger parsed (never `ONBUILD`, `FROM` or `MAINTAINER`).
        trigger: Box<InstructionKind>,
    },
    /// `MAINTAINER` (deprecated), raw.
    Maintainer(String),
}

impl InstructionKind {
    /// The instruction keyword, uppercase.
    pub fn name(&self) -> &'static str {
        match self {
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::User(_) => "USER",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::StopSignal(_) => "STOPSIGNAL",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::OnBuild { .. } => "ONBUILD",
            InstructionKind::Maintainer(_) => "MAINTAINER",
        }
    }

    /// Whether the executor expands variables in this instruction's raw words
    /// (see [`super::expands_variables`]).
    pub fn expands_variables(&self) -> bool {
        super::expands_variables(self.name())
    }
}
