//! The executor proper (see the module docs of [`super`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use berth_engine::image::LayerRef;
use berth_engine::{BuildProcess, BuildRootfs, Engine};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use super::cache::{self, Cache, CachedLayer};
use super::copy::{self, CopyRules, Entry};
use super::ignore::{clean_relative, glob_match, has_glob, IgnoreMatcher};
use super::{chain, BuildError, BuildOptions, BuildOutput};
use crate::dockerfile::{
    self, Command, Dockerfile, Healthcheck, Instruction, InstructionKind, ShellLex, Source,
};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Paths a build container's runtime creates as mount points; removed from a RUN layer when
/// the step created them and left them empty (as BuildKit does).
const MOUNT_STUBS: &[&str] = &[
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "dev",
    "proc",
    "sys",
    "etc",
];
/// Lines of a failing step's output kept for the error.
const OUTPUT_TAIL: usize = 8 * 1024;

fn now() -> String {
    berth_runtime::logs::rfc3339_nano(time::OffsetDateTime::now_utc()).unwrap_or_default()
}

/// An image state.
#[derive(Debug, Clone)]
struct State {
    /// The image config without its `config` object.
    config: Map<String, Value>,
    /// The `config` object (Env, Cmd, ...).
    cfg: Map<String, Value>,
    layers: Vec<LayerRef>,
}

impl State {
    fn scratch() -> Self {
        let config = json!({
            "architecture": berth_engine::image::host_arch(),
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        });
        State::from_config(config.as_object().cloned().unwrap_or_default(), Vec::new())
    }

    fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(Value::Object(self.full()).to_string().as_bytes());
        for l in &self.layers {
            h.update(l.digest.to_string().as_bytes());
        }
        hex::encode(h.finalize())
    }

    fn cfg(&mut self) -> &mut Map<String, Value> {
        &mut self.cfg
    }

    fn cfg_ref(&self) -> Option<&Map<String, Value>> {
        Some(&self.cfg)
    }

    /// A state from a complete image config.
    fn from_config(mut config: Map<String, Value>, layers: Vec<LayerRef>) -> Self {
        let cfg = match config.remove("config") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        State {
            config,
            cfg,
            layers,
        }
    }

    /// The complete image config.
    fn full(&self) -> Map<String, Value> {
        let mut m = self.config.clone();
        m.insert("config".into(), Value::Object(self.cfg.clone()));
        m
    }

    fn cfg_str(&self, k: &str) -> String {
        self.cfg_ref()
            .and_then(|c| c.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    fn env(&self) -> Vec<String> {
        self.cfg_ref()
            .and_then(|c| c.get("Env"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn env_get(&self, k: &str) -> Option<String> {
        self.env().into_iter().find_map(|e| {
            e.split_once('=')
                .filter(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    fn set_env(&mut self, k: &str, v: &str) {
        let mut env = self.env();
        let entry = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(n, _)| n) == Some(k) || e.as_str() == k)
        {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
        self.cfg().insert("Env".into(), json!(env));
    }

    fn shell(&self) -> Vec<String> {
        self.cfg_ref()
            .and_then(|c| c.get("Shell"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn volumes(&self) -> Vec<String> {
        self.cfg_ref()
            .and_then(|c| c.get("Volumes"))
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn workdir(&self) -> String {
        let w = self.cfg_str("WorkingDir");
        if w.is_empty() {
            "/".into()
        } else {
            w
        }
    }

    fn history(&mut self, created_by: String, empty_layer: bool) {
        let created = now();
        let mut e = json!({"created": created, "created_by": created_by});
        if empty_layer {
            e["empty_layer"] = json!(true);
        }
        match self
            .config
            .entry("history")
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            Some(h) => h.push(e),
            None => {
                self.config.insert("history".into(), json!([e]));
            }
        }
        self.config.insert("created".into(), json!(created));
    }

    fn add_layer(&mut self, layer: LayerRef) {
        let diff_ids: Vec<Value> = self
            .layers
            .iter()
            .chain(std::iter::once(&layer))
            .map(|l| json!(l.diff_id.to_string()))
            .collect();
        self.config.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids}),
        );
        self.layers.push(layer);
    }

    fn to_cache(&self) -> cache::Entry {
        cache::Entry {
            config: self.full(),
            layers: self.layers.iter().map(CachedLayer::from_ref).collect(),
        }
    }

    fn from_cache(e: cache::Entry) -> Option<Self> {
        let layers = e
            .layers
            .iter()
            .map(CachedLayer::to_ref)
            .collect::<Option<Vec<_>>>()?;
        Some(State::from_config(e.config, layers))
    }
}

/// Per-stage variables.
struct StageVars {
    /// ARGs declared in the stage, with their values (only those that have one).
    args: BTreeMap<String, String>,
    /// `CMD` given in this stage (an `ENTRYPOINT` clears an inherited one otherwise).
    cmd_set: bool,
    name: String,
}

struct Executor<'a> {
    engine: &'a Engine,
    opts: &'a BuildOptions,
    out: &'a mut dyn Write,
    cancel: &'a AtomicBool,
    cache: Cache,
    lex: ShellLex,
    file: String,
    context: PathBuf,
    ignore: IgnoreMatcher,
    /// Global ARGs (before the first FROM) with their values.
    meta: BTreeMap<String, String>,
    stages: Vec<Option<State>>,
    stage_names: Vec<Option<String>>,
    step: usize,
    total: usize,
    executed: usize,
    cached: usize,
}

/// Builds the image described by `opts`, writing progress (`#N [stage k/n] INSTRUCTION`, the
/// steps' output, `#N CACHED`) to `out`. Nothing is tagged unless the whole build succeeds.
pub fn build(
    engine: &Engine,
    opts: &BuildOptions,
    out: &mut dyn Write,
    cancel: &AtomicBool,
) -> Result<BuildOutput, BuildError> {
    let context = opts.context.clone();
    if !context.is_dir() {
        return Err(BuildError::Read {
            path: context,
            message: "the build context is not a directory".into(),
        });
    }
    let df_path = opts
        .dockerfile
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let source = fs::read(&df_path).map_err(|e| BuildError::Read {
        path: df_path.clone(),
        message: e.to_string(),
    })?;
    let file = df_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    let df = dockerfile::parse_file(&file, &String::from_utf8_lossy(&source))?;
    let ignore = match fs::read_to_string(context.join(".dockerignore")) {
        Ok(t) => IgnoreMatcher::parse(&t),
        Err(_) => IgnoreMatcher::default(),
    };
    let mut ex = Executor {
        engine,
        opts,
        out,
        cancel,
        cache: Cache::new(engine.root()),
        lex: ShellLex::new(df.escape),
        file,
        context,
        ignore,
        meta: BTreeMap::new(),
        stages: vec![None; df.stages.len()],
        stage_names: df.stages.iter().map(|s| s.name.clone()).collect(),
        step: 0,
        total: 0,
        executed: 0,
        cached: 0,
    };
    ex.run(&df)
}

impl<'a> Executor<'a> {
    fn err(&self, ins: &Instruction, message: impl Into<String>) -> BuildError {
        BuildError::Step {
            file: self.file.clone(),
            line: ins.location.line,
            instruction: ins.kind.name().to_string(),
            message: message.into(),
        }
    }

    fn say(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    fn run(&mut self, df: &Dockerfile) -> Result<BuildOutput, BuildError> {
        // Global ARGs: defaults, overridden by --build-arg.
        for pair in df.meta_arg_pairs() {
            let meta = self.meta.clone();
            let env = |k: &str| meta.get(k).cloned();
            let key = self.lex.process_word(&pair.key, &env).unwrap_or_default();
            let value =
                match self.opts.build_args.get(&key) {
                    Some(v) => Some(v.clone()),
                    None => {
                        match &pair.value {
                            Some(v) => Some(self.lex.process_word(v, &env).map_err(|e| {
                                BuildError::Step {
                                    file: self.file.clone(),
                                    line: 1,
                                    instruction: "ARG".into(),
                                    message: e.to_string(),
                                }
                            })?),
                            None => None,
                        }
                    }
                };
            if let Some(v) = value {
                self.meta.insert(key, v);
            }
        }
        let target = match &self.opts.target {
            Some(t) => df
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.to_lowercase().as_str()))
                .ok_or_else(|| BuildError::TargetNotFound(t.clone()))?,
            None => df.stages.len() - 1,
        };
        let needed = self.needed(df, target);
        self.total = needed
            .iter()
            .map(|&i| df.stages[i].instructions.len() + 1)
            .sum();
        for i in 0..=target {
            if !needed.contains(&i) {
                continue;
            }
            let state = self.run_stage(df, i)?;
            self.stages[i] = Some(state);
        }
        let state = self.stages[target]
            .take()
            .ok_or_else(|| BuildError::Engine("the target stage produced no image".into()))?;
        self.finish(state)
    }

    /// The stages `target` depends on (itself included).
    fn needed(&self, df: &Dockerfile, target: usize) -> BTreeSet<usize> {
        let mut need = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !need.insert(i) {
                continue;
            }
            let st = &df.stages[i];
            let base = self.expand_meta(&st.base).to_lowercase();
            if let Some(j) = (0..i).find(|&j| self.stage_names[j].as_deref() == Some(&base)) {
                todo.push(j);
            }
            for ins in &st.instructions {
                if let InstructionKind::Copy(c) = &ins.kind {
                    if let Some(from) = &c.from {
                        let from = self.expand_meta(from);
                        if let Some(j) = self.stage_ref(&from, i) {
                            todo.push(j);
                        }
                    }
                }
            }
        }
        need
    }

    fn expand_meta(&self, word: &str) -> String {
        let meta = &self.meta;
        self.lex
            .process_word(word, &|k| meta.get(k).cloned())
            .unwrap_or_else(|_| word.to_string())
    }

    /// A stage named or numbered `r` before stage `before`.
    fn stage_ref(&self, r: &str, before: usize) -> Option<usize> {
        let lower = r.to_lowercase();
        if let Some(j) = (0..before).find(|&j| self.stage_names[j].as_deref() == Some(&lower)) {
            return Some(j);
        }
        r.parse::<usize>().ok().filter(|&j| j < before)
    }

    fn run_stage(&mut self, df: &Dockerfile, index: usize) -> Result<State, BuildError> {
        let stage = &df.stages[index];
        let base = self.expand_meta(&stage.base);
        let name = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"));
        self.step += 1;
        let n = stage.instructions.len() + 1;
        self.say(&format!("#{} [{name} 1/{n}] {}", self.step, stage.original));
        let lower = base.to_lowercase();
        let mut state =
            if let Some(j) = (0..index).find(|&j| self.stage_names[j].as_deref() == Some(&lower)) {
                self.stages[j].clone().ok_or_else(|| BuildError::Step {
                    file: self.file.clone(),
                    line: stage.location.line,
                    instruction: "FROM".into(),
                    message: format!("stage {base} was not built"),
                })?
            } else if lower == "scratch" {
                State::scratch()
            } else {
                let img = self
                    .engine
                    .resolve_image(&base)
                    .map_err(|e| BuildError::Step {
                        file: self.file.clone(),
                        line: stage.location.line,
                        instruction: "FROM".into(),
                        message: format!("{base}: {}", chain(&e)),
                    })?;
                State::from_config(
                    img.raw_config.as_object().cloned().unwrap_or_default(),
                    img.layers,
                )
            };
        if state.env_get("PATH").is_none() {
            let mut env = state.env();
            env.insert(0, DEFAULT_PATH.into());
            state.cfg().insert("Env".into(), json!(env));
        }
        let mut vars = StageVars {
            args: BTreeMap::new(),
            cmd_set: false,
            name: name.clone(),
        };
        // ONBUILD triggers of the base run first, as ordinary instructions.
        let triggers: Vec<String> = state
            .cfg_ref()
            .and_then(|c| c.get("OnBuild"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        state.cfg().remove("OnBuild");
        for t in triggers {
            let parsed = dockerfile::parse(&format!("FROM scratch\n{t}\n")).map_err(|e| {
                BuildError::Step {
                    file: self.file.clone(),
                    line: stage.location.line,
                    instruction: "ONBUILD".into(),
                    message: format!("trigger {t:?} of the base image: {}", e.message),
                }
            })?;
            let Some(mut ins) = parsed
                .stages
                .first()
                .and_then(|s| s.instructions.first())
                .cloned()
            else {
                continue;
            };
            ins.location = stage.location;
            self.say(&format!("#{} [{name} ONBUILD] {}", self.step, ins.original));
            self.instruction(&mut state, &mut vars, &ins, index)?;
        }
        for (k, ins) in stage.instructions.iter().enumerate() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(BuildError::Cancelled);
            }
            self.step += 1;
            self.say(&format!(
                "#{} [{} {}/{n}] {}",
                self.step,
                vars.name,
                k + 2,
                ins.original
            ));
            self.instruction(&mut state, &mut vars, ins, index)?;
        }
        Ok(state)
    }

    /// Runs one step through the cache: `descriptor` describes what it reads beyond the
    /// parent state; `work` changes the state.
    fn cached_step<F>(
        &mut self,
        state: &mut State,
        descriptor: Value,
        work: F,
    ) -> Result<(), BuildError>
    where
        F: FnOnce(&mut Self, &mut State) -> Result<(), BuildError>,
    {
        let key = cache::key(&state.digest(), &descriptor);
        if !self.opts.no_cache {
            if let Some(s) = self.cache.get(&key).and_then(State::from_cache) {
                if s.layers.iter().all(|l| self.engine.has_blob(&l.digest)) {
                    *state = s;
                    self.cached += 1;
                    let n = self.step;
                    self.say(&format!("#{n} CACHED"));
                    return Ok(());
                }
            }
        }
        let t = Instant::now();
        work(self, state)?;
        self.executed += 1;
        if let Err(e) = self.cache.put(&key, &state.to_cache()) {
            tracing::warn!(error = %e, "cannot record a build cache entry");
        }
        let n = self.step;
        self.say(&format!("#{n} DONE {:.1}s", t.elapsed().as_secs_f64()));
        Ok(())
    }

    fn expander<'s>(state: &'s State, vars: &'s StageVars) -> impl Fn(&str) -> Option<String> + 's {
        let env = state.env();
        move |k: &str| {
            env.iter()
                .find_map(|e| {
                    e.split_once('=')
                        .filter(|(n, _)| *n == k)
                        .map(|(_, v)| v.to_string())
                })
                .or_else(|| vars.args.get(k).cloned())
        }
    }

    fn expand(
        &self,
        ins: &Instruction,
        state: &State,
        vars: &StageVars,
        word: &str,
    ) -> Result<String, BuildError> {
        let f = Self::expander(state, vars);
        self.lex
            .process_word(word, &f)
            .map_err(|e| self.err(ins, e.to_string()))
    }

    fn instruction(
        &mut self,
        state: &mut State,
        vars: &mut StageVars,
        ins: &Instruction,
        stage: usize,
    ) -> Result<(), BuildError> {
        let nop = format!("/bin/sh -c #(nop) {}", ins.original);
        let descriptor = json!({"i": ins.original, "args": vars.args});
        match &ins.kind {
            InstructionKind::Arg(pairs) => {
                for p in pairs {
                    let key = self.expand(ins, state, vars, &p.key)?;
                    let value = match self.opts.build_args.get(&key) {
                        Some(v) => Some(v.clone()),
                        None => match &p.value {
                            Some(v) => Some(self.expand(ins, state, vars, v)?),
                            None => self.meta.get(&key).cloned(),
                        },
                    };
                    match value {
                        Some(v) => {
                            vars.args.insert(key, v);
                        }
                        None => {
                            vars.args.remove(&key);
                        }
                    }
                }
                let names: Vec<&str> = vars.args.keys().map(String::as_str).collect();
                let text = format!("/bin/sh -c #(nop) ARG {}", names.join(" "));
                let descriptor = json!({"i": ins.original, "args": vars.args});
                self.cached_step(state, descriptor, |_, s| {
                    s.history(text, true);
                    Ok(())
                })
            }
            InstructionKind::Env(kv) => {
                let mut pairs = Vec::new();
                for p in &kv.pairs {
                    let k = self.expand(ins, state, vars, &p.key)?;
                    let v = self.expand(ins, state, vars, &p.value)?;
                    pairs.push((k, v));
                }
                self.cached_step(state, descriptor, |_, s| {
                    for (k, v) in &pairs {
                        s.set_env(k, v);
                    }
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::Label(kv) => {
                let mut pairs = Vec::new();
                for p in &kv.pairs {
                    let k = self.expand(ins, state, vars, &p.key)?;
                    let v = self.expand(ins, state, vars, &p.value)?;
                    pairs.push((k, v));
                }
                self.cached_step(state, descriptor, |_, s| {
                    let labels = s.cfg().entry("Labels").or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    if let Some(m) = labels.as_object_mut() {
                        for (k, v) in pairs {
                            m.insert(k, json!(v));
                        }
                    }
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::Expose(ports) => {
                let mut keys = Vec::new();
                for p in ports {
                    let p = self.expand(ins, state, vars, p)?;
                    for word in p.split_whitespace() {
                        keys.push(parse_port(word).ok_or_else(|| {
                            self.err(ins, format!("invalid containerPort: {word}"))
                        })?);
                    }
                }
                self.cached_step(state, descriptor, |_, s| {
                    let e = s.cfg().entry("ExposedPorts").or_insert_with(|| json!({}));
                    if !e.is_object() {
                        *e = json!({});
                    }
                    if let Some(m) = e.as_object_mut() {
                        for k in keys {
                            m.insert(k, json!({}));
                        }
                    }
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::User(u) => {
                let u = self.expand(ins, state, vars, u)?;
                self.cached_step(state, descriptor, |_, s| {
                    s.cfg().insert("User".into(), json!(u));
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::Workdir(w) => {
                let w = self.expand(ins, state, vars, w)?;
                let joined = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", state.workdir())
                };
                let cleaned = format!("/{}", clean_relative(&joined).unwrap_or_default());
                self.cached_step(state, descriptor, |_, s| {
                    s.cfg().insert("WorkingDir".into(), json!(cleaned));
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::Volume(vols) => {
                let mut list = Vec::new();
                for v in vols {
                    let v = self.expand(ins, state, vars, v)?;
                    if v.trim().is_empty() {
                        return Err(self.err(ins, "VOLUME specified can not be an empty string"));
                    }
                    list.push(v);
                }
                self.cached_step(state, descriptor, |_, s| {
                    let e = s.cfg().entry("Volumes").or_insert_with(|| json!({}));
                    if !e.is_object() {
                        *e = json!({});
                    }
                    if let Some(m) = e.as_object_mut() {
                        for v in list {
                            m.insert(v, json!({}));
                        }
                    }
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::StopSignal(sig) => {
                let sig = self.expand(ins, state, vars, sig)?;
                self.cached_step(state, descriptor, |_, s| {
                    s.cfg().insert("StopSignal".into(), json!(sig));
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::Healthcheck(h) => {
                let value = match h {
                    Healthcheck::None => json!({"Test": ["NONE"]}),
                    Healthcheck::Cmd {
                        command,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let test: Vec<String> = match command {
                            Command::Exec(v) => std::iter::once("CMD".to_string())
                                .chain(v.iter().cloned())
                                .collect(),
                            Command::Shell(t) => vec!["CMD-SHELL".into(), t.clone()],
                        };
                        let mut m = Map::new();
                        m.insert("Test".into(), json!(test));
                        for (k, d) in [
                            ("Interval", interval),
                            ("Timeout", timeout),
                            ("StartPeriod", start_period),
                            ("StartInterval", start_interval),
                        ] {
                            if let Some(d) = d.filter(|d| !d.is_zero()) {
                                m.insert(k.into(), json!(d.as_nanos() as u64));
                            }
                        }
                        if let Some(r) = retries.filter(|r| *r != 0) {
                            m.insert("Retries".into(), json!(r));
                        }
                        Value::Object(m)
                    }
                };
                self.cached_step(state, descriptor, |_, s| {
                    s.cfg().insert("Healthcheck".into(), value);
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::Shell(sh) => {
                let sh = sh.clone();
                self.cached_step(state, descriptor, |_, s| {
                    s.cfg().insert("Shell".into(), json!(sh));
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::Cmd(c) => {
                let v = command_vec(c);
                vars.cmd_set = true;
                self.cached_step(state, descriptor, |_, s| {
                    s.cfg().insert("Cmd".into(), json!(v));
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::Entrypoint(c) => {
                let v = command_vec(c);
                let clear_cmd = !vars.cmd_set;
                self.cached_step(state, descriptor, |_, s| {
                    s.cfg().insert("Entrypoint".into(), json!(v));
                    if clear_cmd {
                        s.cfg().remove("Cmd");
                    }
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::OnBuild { expression, .. } => {
                let e = expression.clone();
                self.cached_step(state, descriptor, |_, s| {
                    let o = s.cfg().entry("OnBuild").or_insert_with(|| json!([]));
                    if !o.is_array() {
                        *o = json!([]);
                    }
                    if let Some(a) = o.as_array_mut() {
                        a.push(json!(e));
                    }
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::Maintainer(m) => {
                let m = m.clone();
                self.cached_step(state, descriptor, |_, s| {
                    s.config.insert("author".into(), json!(m));
                    s.history(nop, true);
                    Ok(())
                })
            }
            InstructionKind::Run(run) => self.run_step(state, vars, ins, run),
            InstructionKind::Copy(c) => {
                let spec = CopySpec {
                    sources: c.sources.clone(),
                    dest: c.dest.clone(),
                    from: c.from.clone(),
                    chown: c.chown.clone(),
                    chmod: c.chmod.clone(),
                    add: false,
                };
                self.copy_step(state, vars, ins, &spec, stage)
            }
            InstructionKind::Add(a) => {
                let spec = CopySpec {
                    sources: a.sources.clone(),
                    dest: a.dest.clone(),
                    from: None,
                    chown: a.chown.clone(),
                    chmod: a.chmod.clone(),
                    add: true,
                };
                self.copy_step(state, vars, ins, &spec, stage)
            }
        }
    }

    fn run_step(
        &mut self,
        state: &mut State,
        vars: &StageVars,
        ins: &Instruction,
        run: &dockerfile::Run,
    ) -> Result<(), BuildError> {
        let rest = after_keyword(&ins.original);
        let prefix = if vars.args.is_empty() {
            String::new()
        } else {
            let kv: Vec<String> = vars.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("|{} {} ", kv.len(), kv.join(" "))
        };
        let created_by = format!("{prefix}/bin/sh -c {rest}");
        let args: Vec<String> = match &run.command {
            Command::Exec(v) => v.clone(),
            Command::Shell(text) => {
                let mut a = state.shell();
                if run.heredocs.len() == 1
                    && text.trim().starts_with("<<")
                    && !text.trim().contains(' ')
                {
                    a.push(run.heredocs[0].body());
                } else if !run.heredocs.is_empty() {
                    let mut full = text.clone();
                    full.push('\n');
                    for h in &run.heredocs {
                        full.push_str(&h.content);
                        if !h.content.ends_with('\n') && !h.content.is_empty() {
                            full.push('\n');
                        }
                        full.push_str(&h.name);
                        full.push('\n');
                    }
                    a.push(full);
                } else {
                    a.push(text.clone());
                }
                a
            }
        };
        let mut env = state.env();
        for (k, v) in &vars.args {
            if !env
                .iter()
                .any(|e| e.split_once('=').map(|(n, _)| n) == Some(k))
            {
                env.push(format!("{k}={v}"));
            }
        }
        let process = BuildProcess {
            args: args.clone(),
            env: env.clone(),
            user: state.cfg_str("User"),
            workdir: state.workdir(),
            network: self.opts.network.clone(),
            mounts: Vec::new(),
        };
        let descriptor = json!({
            "i": ins.original, "args": vars.args, "argv": args, "env": env,
            "network": self.opts.network.mode(),
        });
        let line = ins.location.line;
        self.cached_step(state, descriptor, |ex, s| {
            let rootfs = ex.mount(s, ins)?;
            let root = rootfs.rootfs().to_path_buf();
            let io = |e: io::Error| ex_err(&ex.file, ins, chain(&e));
            copy::mkdir_p(&root, &process.workdir, None).map_err(io)?;
            let volumes = s.volumes();
            for v in &volumes {
                copy::mkdir_p(&root, v, None).map_err(io)?;
            }
            let stubs: Vec<&str> = MOUNT_STUBS
                .iter()
                .copied()
                .filter(|p| fs::symlink_metadata(root.join(p)).is_err())
                .collect();
            let mut tail: Vec<u8> = Vec::new();
            let out = &mut *ex.out;
            let mut on_output = |b: &[u8]| {
                let _ = out.write_all(b);
                let _ = out.flush();
                tail.extend_from_slice(b);
                if tail.len() > 2 * OUTPUT_TAIL {
                    tail.drain(..tail.len() - OUTPUT_TAIL);
                }
            };
            let exit = ex
                .engine
                .run_build_process(&rootfs, &process, &mut on_output, ex.cancel)
                .map_err(|e| ex_err(&ex.file, ins, chain(&e)))?;
            if ex.cancel.load(Ordering::Relaxed) {
                return Err(BuildError::Cancelled);
            }
            if exit.exit_code != 0 {
                let start = tail.len().saturating_sub(OUTPUT_TAIL);
                return Err(BuildError::RunFailed {
                    file: ex.file.clone(),
                    line,
                    command: rest.to_string(),
                    exit_code: exit.exit_code,
                    output: String::from_utf8_lossy(&tail[start..]).into_owned(),
                });
            }
            rootfs
                .unmount()
                .map_err(|e| ex_err(&ex.file, ins, chain(&e)))?;
            tidy_upper(rootfs.upper(), &stubs, &volumes).map_err(io)?;
            let layer = ex
                .engine
                .commit_build_layer(rootfs, &s.layers)
                .map_err(|e| ex_err(&ex.file, ins, chain(&e)))?;
            s.add_layer(layer);
            s.history(created_by, false);
            Ok(())
        })
    }

    fn mount(&self, s: &State, ins: &Instruction) -> Result<BuildRootfs, BuildError> {
        self.engine
            .mount_build_rootfs(&s.layers)
            .map_err(|e| ex_err(&self.file, ins, chain(&e)))
    }

    fn copy_step(
        &mut self,
        state: &mut State,
        vars: &StageVars,
        ins: &Instruction,
        spec: &CopySpec,
        stage: usize,
    ) -> Result<(), BuildError> {
        let dest = self.expand(ins, state, vars, &spec.dest)?;
        let chown = match &spec.chown {
            Some(c) => Some(self.expand(ins, state, vars, c)?),
            None => None,
        };
        let chmod = match &spec.chmod {
            Some(c) => {
                let c = self.expand(ins, state, vars, c)?;
                Some(
                    u32::from_str_radix(&c, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| self.err(ins, format!("invalid chmod parameter: {c}")))?,
                )
            }
            None => None,
        };
        // Where the sources come from.
        let from: Option<State> = match &spec.from {
            None => None,
            Some(f) => {
                let f = self.expand(ins, state, vars, f)?;
                match self.stage_ref(&f, stage) {
                    Some(j) => Some(
                        self.stages[j]
                            .clone()
                            .ok_or_else(|| self.err(ins, format!("stage {f} was not built")))?,
                    ),
                    None => {
                        let img = self.engine.resolve_image(&f).map_err(|e| {
                            self.err(
                                ins,
                                format!("--from={f}: no stage or image named {f}: {}", chain(&e)),
                            )
                        })?;
                        Some(State::from_config(
                            img.raw_config.as_object().cloned().unwrap_or_default(),
                            img.layers,
                        ))
                    }
                }
            }
        };
        let mut words = Vec::new();
        for s in &spec.sources {
            match s {
                Source::Path(p) => words.push(SrcWord::Path(self.expand(ins, state, vars, p)?)),
                Source::Heredoc(h) => {
                    let body = h.body();
                    let body = if h.expand {
                        self.expand(ins, state, vars, &body)?
                    } else {
                        body
                    };
                    words.push(SrcWord::Inline(h.name.clone(), body));
                }
            }
        }
        let keyword = if spec.add { "ADD" } else { "COPY" };
        // Resolve and hash the sources (context only; a stage's files are keyed by the
        // stage's state).
        let mut h = Sha256::new();
        let mut kinds: Vec<&'static str> = Vec::new();
        let mut resolved: Vec<Resolved> = Vec::new();
        match &from {
            None => {
                for w in &words {
                    match w {
                        SrcWord::Inline(name, body) => {
                            h.update(name.as_bytes());
                            h.update(body.as_bytes());
                            kinds.push("file");
                            resolved.push(Resolved::Inline(name.clone(), body.clone()));
                        }
                        SrcWord::Path(p) if spec.add && is_url(p) => {
                            h.update(p.as_bytes());
                            kinds.push("file");
                            resolved.push(Resolved::Url(p.clone()));
                        }
                        SrcWord::Path(p) => {
                            for (rel, abs) in self.context_sources(ins, p)? {
                                let entries = copy::collect(&abs, true, Some((&self.ignore, &rel)))
                                    .map_err(|e| self.err(ins, format!("{p}: {e}")))?;
                                h.update(rel.as_bytes());
                                copy::hash_entries(&mut h, &entries)
                                    .map_err(|e| self.err(ins, format!("{p}: {e}")))?;
                                let dir = entries.first().is_some_and(|e| e.md.is_dir());
                                kinds.push(if dir { "dir" } else { "file" });
                                resolved.push(Resolved::Context { abs, rel, entries });
                            }
                        }
                    }
                }
            }
            Some(other) => {
                h.update(other.digest().as_bytes());
                for w in &words {
                    if let SrcWord::Path(p) = w {
                        h.update(p.as_bytes());
                        h.update([0]);
                        resolved.push(Resolved::Stage(p.clone()));
                    }
                }
            }
        }
        let content = hex::encode(h.finalize());
        let descriptor = json!({
            "i": ins.original, "args": vars.args, "dest": dest, "content": content,
            "chown": chown, "chmod": chmod,
        });
        let from_state = from.clone();
        let raw_dest = spec.dest.clone();
        let add = spec.add;
        self.cached_step(state, descriptor, |ex, s| {
            let rootfs = ex.mount(s, ins)?;
            let root = rootfs.rootfs().to_path_buf();
            let src_mount = match &from_state {
                Some(o) => Some(ex.mount(o, ins)?),
                None => None,
            };
            // Sources from a stage: resolved (globs too) inside its tree.
            let mut items: Vec<Resolved> = Vec::new();
            for r in resolved {
                match (r, &src_mount) {
                    (Resolved::Stage(p), Some(m)) => {
                        let found = stage_sources(m.rootfs(), &p)
                            .map_err(|e| ex.err(ins, format!("{p}: {e}")))?;
                        if found.is_empty() {
                            return Err(ex.err(
                                ins,
                                format!("{p}: no such file or directory in the source stage"),
                            ));
                        }
                        for abs in found {
                            let entries = copy::collect(&abs, true, None)
                                .map_err(|e| ex.err(ins, format!("{p}: {e}")))?;
                            let dir = entries.first().is_some_and(|e| e.md.is_dir());
                            kinds.push(if dir { "dir" } else { "file" });
                            items.push(Resolved::Context {
                                abs,
                                rel: String::new(),
                                entries,
                            });
                        }
                    }
                    (r, _) => items.push(r),
                }
            }
            let owner = match &chown {
                Some(c) => Some(copy::resolve_chown(&root, c).map_err(|m| ex.err(ins, m))?),
                None => None,
            };
            let rules = CopyRules {
                owner,
                keep_owner: from_state.is_some(),
                chmod,
            };
            let abs_dest = if dest.starts_with('/') {
                dest.clone()
            } else {
                format!("{}/{dest}", s.workdir())
            };
            let dir_dest =
                dest.ends_with('/') || items.len() > 1 || dest == "." || dest.ends_with("/.");
            let io = |e: io::Error| ex_err(&ex.file, ins, chain(&e));
            let mut links = HashMap::new();
            for item in &items {
                match item {
                    Resolved::Context { abs, entries, .. } => {
                        let is_dir = entries.first().is_some_and(|e| e.md.is_dir());
                        if add && !is_dir && from_state.is_none() && copy::is_archive(abs) {
                            let target = copy::mkdir_p(&root, &abs_dest, owner).map_err(io)?;
                            ex.extract(abs, &target, ins)?;
                            continue;
                        }
                        let name = abs
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let target = if is_dir {
                            copy::mkdir_p(&root, &abs_dest, owner).map_err(io)?
                        } else {
                            file_target(&root, &abs_dest, dir_dest, &name, owner).map_err(io)?
                        };
                        copy::copy_entries(entries, &target, &rules, &mut links).map_err(io)?;
                    }
                    Resolved::Inline(name, body) => {
                        let target =
                            file_target(&root, &abs_dest, dir_dest, name, owner).map_err(io)?;
                        copy::write_file(
                            &target,
                            body.as_bytes(),
                            chmod.unwrap_or(0o644),
                            owner.unwrap_or((0, 0)),
                        )
                        .map_err(io)?;
                    }
                    Resolved::Url(url) => {
                        let data = download(url).map_err(|m| ex.err(ins, m))?;
                        let name = url
                            .rsplit('/')
                            .next()
                            .filter(|n| !n.is_empty())
                            .unwrap_or("download")
                            .to_string();
                        let target =
                            file_target(&root, &abs_dest, dir_dest, &name, owner).map_err(io)?;
                        copy::write_file(
                            &target,
                            &data,
                            chmod.unwrap_or(0o600),
                            owner.unwrap_or((0, 0)),
                        )
                        .map_err(io)?;
                    }
                    Resolved::Stage(_) => {}
                }
            }
            drop(src_mount);
            rootfs
                .unmount()
                .map_err(|e| ex_err(&ex.file, ins, chain(&e)))?;
            let layer = ex
                .engine
                .commit_build_layer(rootfs, &s.layers)
                .map_err(|e| ex_err(&ex.file, ins, chain(&e)))?;
            s.add_layer(layer);
            let kind = if kinds.len() > 1 {
                "multi"
            } else {
                kinds.first().copied().unwrap_or("file")
            };
            s.history(
                format!("/bin/sh -c #(nop) {keyword} {kind}:{content} in {raw_dest} "),
                false,
            );
            Ok(())
        })
    }

    /// Context paths of one COPY source word (globs expanded): (relative path, host path).
    fn context_sources(
        &self,
        ins: &Instruction,
        word: &str,
    ) -> Result<Vec<(String, PathBuf)>, BuildError> {
        let rel = clean_relative(word).ok_or_else(|| {
            self.err(
                ins,
                format!("forbidden path outside the build context: {word}"),
            )
        })?;
        if has_glob(&rel) {
            let mut found = Vec::new();
            self.glob_context(Path::new(""), &rel, &mut found);
            found.sort();
            if found.is_empty() {
                return Err(self.err(
                    ins,
                    format!("no source files were specified: {word} matches nothing in the build context"),
                ));
            }
            return Ok(found
                .into_iter()
                .map(|r| {
                    let abs = self.context.join(&r);
                    (r, abs)
                })
                .collect());
        }
        let abs = if rel.is_empty() {
            self.context.clone()
        } else {
            self.context.join(&rel)
        };
        // Symlinks on the way must stay inside the context.
        let real = fs::canonicalize(&abs).ok();
        let ctx = fs::canonicalize(&self.context).unwrap_or_else(|_| self.context.clone());
        let inside = real.as_ref().is_some_and(|r| r.starts_with(&ctx));
        if real.is_none() || !inside || (!rel.is_empty() && self.ignore.excluded(&rel)) {
            return Err(self.err(
                ins,
                format!("file not found in build context or excluded by .dockerignore: {word}"),
            ));
        }
        Ok(vec![(rel, abs)])
    }

    fn glob_context(&self, dir: &Path, pattern: &str, found: &mut Vec<String>) {
        let depth = pattern.split('/').count();
        let Ok(rd) = fs::read_dir(self.context.join(dir)) else {
            return;
        };
        for e in rd.flatten() {
            let rel = dir.join(e.file_name());
            let s = rel.display().to_string();
            let d = s.split('/').count();
            if d == depth {
                if glob_match(pattern, &s) && !self.ignore.excluded(&s) {
                    found.push(s);
                }
            } else if d < depth && e.file_type().is_ok_and(|t| t.is_dir()) {
                let prefix: Vec<&str> = pattern.split('/').take(d).collect();
                if glob_match(&prefix.join("/"), &s) {
                    self.glob_context(&rel, pattern, found);
                }
            }
        }
    }

    /// ADD of a local archive: unpacked into a scratch directory, owners reset to 0:0, then
    /// merged into `target`.
    fn extract(&self, archive: &Path, target: &Path, ins: &Instruction) -> Result<(), BuildError> {
        let tmp = self
            .engine
            .store()
            .temp_dir("add-")
            .map_err(|e| self.err(ins, chain(&e)))?;
        let result = (|| -> Result<(), BuildError> {
            let f = fs::File::open(archive).map_err(|e| self.err(ins, e.to_string()))?;
            let opts = berth_oci::layer::ApplyOptions::new(berth_oci::layer::WhiteoutMode::Apply);
            berth_oci::layer::apply_layer(io::BufReader::new(f), &tmp, &opts).map_err(|e| {
                self.err(
                    ins,
                    format!("cannot extract {}: {}", archive.display(), chain(&e)),
                )
            })?;
            copy::chown_tree_root(&tmp).map_err(|e| self.err(ins, e.to_string()))?;
            let entries =
                copy::collect(&tmp, false, None).map_err(|e| self.err(ins, e.to_string()))?;
            let rules = CopyRules {
                owner: Some((0, 0)),
                keep_owner: false,
                chmod: None,
            };
            copy::copy_entries(&entries, target, &rules, &mut HashMap::new())
                .map_err(|e| self.err(ins, e.to_string()))
        })();
        let _ = fs::remove_dir_all(&tmp);
        result
    }

    fn finish(&mut self, mut state: State) -> Result<BuildOutput, BuildError> {
        if !state.config.contains_key("created") {
            state.config.insert("created".into(), json!(now()));
        }
        let (manifest, id) = self
            .engine
            .write_image(&Value::Object(state.full()), &state.layers)
            .map_err(|e| BuildError::Engine(chain(&e)))?;
        let mut tags = Vec::new();
        for t in &self.opts.tags {
            let key = self
                .engine
                .tag_manifest(t, &manifest)
                .map_err(|e| BuildError::Engine(chain(&e)))?;
            tags.push(key);
        }
        self.say(&format!("writing image {id} done"));
        for t in &tags {
            self.say(&format!("naming to {t} done"));
        }
        Ok(BuildOutput {
            image_id: id,
            manifest_digest: manifest,
            tags,
            executed: self.executed,
            cached: self.cached,
        })
    }
}

struct CopySpec {
    sources: Vec<Source>,
    dest: String,
    from: Option<String>,
    chown: Option<String>,
    chmod: Option<String>,
    add: bool,
}

enum SrcWord {
    Path(String),
    Inline(String, String),
}

enum Resolved {
    Context {
        abs: PathBuf,
        #[allow(dead_code)]
        rel: String,
        entries: Vec<Entry>,
    },
    Inline(String, String),
    Url(String),
    Stage(String),
}

fn ex_err(file: &str, ins: &Instruction, message: String) -> BuildError {
    BuildError::Step {
        file: file.to_string(),
        line: ins.location.line,
        instruction: ins.kind.name().to_string(),
        message,
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn download(url: &str) -> Result<Vec<u8>, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot download {url}: {}", chain(&e)))?;
    let resp = client
        .get(url)
        .send()
        .map_err(|e| format!("cannot download {url}: {}", chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("cannot download {url}: HTTP {}", resp.status()));
    }
    resp.bytes()
        .map(|b| b.to_vec())
        .map_err(|e| format!("cannot download {url}: {}", chain(&e)))
}

/// Sources of `COPY --from`: the path inside the stage's tree (globs in the last component).
fn stage_sources(root: &Path, word: &str) -> io::Result<Vec<PathBuf>> {
    let clean = clean_relative(word).unwrap_or_default();
    if !has_glob(&clean) {
        let p = copy::in_root(root, &format!("/{clean}"))?;
        return Ok(if fs::symlink_metadata(&p).is_ok() {
            vec![p]
        } else {
            vec![]
        });
    }
    let (dir, pat) = clean.rsplit_once('/').unwrap_or(("", clean.as_str()));
    let d = copy::in_root(root, &format!("/{dir}"))?;
    let mut out: Vec<PathBuf> = fs::read_dir(&d)?
        .flatten()
        .filter(|e| super::ignore::fnmatch(pat, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// Where a file source goes: `dest/name` when the destination is a directory (trailing
/// slash, several sources, or an existing directory), else `dest` itself.
fn file_target(
    root: &Path,
    dest: &str,
    dir_dest: bool,
    name: &str,
    owner: Option<(u32, u32)>,
) -> io::Result<PathBuf> {
    if dir_dest {
        return Ok(copy::mkdir_p(root, dest, owner)?.join(name));
    }
    let resolved = copy::in_root(root, dest)?;
    if resolved.is_dir() {
        return Ok(resolved.join(name));
    }
    let (parent, base) = dest
        .trim_end_matches('/')
        .rsplit_once('/')
        .unwrap_or(("", dest));
    Ok(copy::mkdir_p(root, parent, owner)?.join(base))
}

/// `RUN x` → `x` (the text after the keyword, as written).
fn after_keyword(original: &str) -> &str {
    let t = original.trim_start();
    match t.find(char::is_whitespace) {
        Some(i) => t[i..].trim_start(),
        None => "",
    }
}

/// CMD/ENTRYPOINT value: exec form as is, shell form under `/bin/sh -c` (buildah ignores
/// SHELL here).
fn command_vec(c: &Command) -> Vec<String> {
    match c {
        Command::Exec(v) => v.clone(),
        Command::Shell(t) => vec!["/bin/sh".into(), "-c".into(), t.clone()],
    }
}

/// `EXPOSE` word → `port/proto` (`80` → `80/tcp`, ranges kept, protocol case kept).
fn parse_port(word: &str) -> Option<String> {
    let (port, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, Some(proto)),
        None => (word, None),
    };
    let valid = |s: &str| s.parse::<u16>().is_ok();
    let ok = match port.split_once('-') {
        Some((a, b)) => valid(a) && valid(b),
        None => valid(port),
    };
    if !ok {
        return None;
    }
    match proto {
        Some(p) if ["tcp", "udp", "sctp"].contains(&p.to_ascii_lowercase().as_str()) => {
            Some(format!("{port}/{p}"))
        }
        Some(_) => None,
        None => Some(format!("{port}/tcp")),
    }
}

/// After a RUN: drops mount points the runtime created (when the step left them empty) and
/// whatever the step changed inside declared volumes (buildah discards those changes).
fn tidy_upper(upper: &Path, stubs: &[&str], volumes: &[String]) -> io::Result<()> {
    for s in stubs {
        let p = upper.join(s);
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if fs::read_dir(&p)?.next().is_none() {
                fs::remove_dir(&p)?;
            }
        } else if md.is_file() && md.len() == 0 {
            fs::remove_file(&p)?;
        }
    }
    for v in volumes {
        let p = upper.join(v.trim_start_matches('/'));
        if let Ok(md) = fs::symlink_metadata(&p) {
            if md.is_dir() {
                for e in fs::read_dir(&p)? {
                    let e = e?;
                    let path = e.path();
                    if e.file_type()?.is_dir() {
                        fs::remove_dir_all(&path)?;
                    } else {
                        fs::remove_file(&path)?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("80").as_deref(), Some("80/tcp"));
        assert_eq!(parse_port("53/udp").as_deref(), Some("53/udp"));
        assert_eq!(parse_port("8080/TCP").as_deref(), Some("8080/TCP"));
        assert_eq!(parse_port("1000-1002").as_deref(), Some("1000-1002/tcp"));
        assert_eq!(parse_port("not-a-port"), None);
        assert_eq!(parse_port("80/xyz"), None);
    }

    #[test]
    fn keyword_rest() {
        assert_eq!(after_keyword("RUN  echo hi"), "echo hi");
        assert_eq!(after_keyword("RUN"), "");
    }

    #[test]
    fn state_env_and_history() {
        let mut s = State::scratch();
        s.set_env("A", "1");
        s.set_env("B", "2");
        s.set_env("A", "3");
        assert_eq!(s.env(), ["A=3", "B=2"]);
        let d1 = s.digest();
        s.history("x".into(), true);
        assert_ne!(d1, s.digest());
        assert_eq!(s.workdir(), "/");
        assert_eq!(s.shell(), ["/bin/sh", "-c"]);
    }
}
