//! The image normalizer of the build corpus tests: reads an image written by `berth save`
//! (oci-archive or docker-archive) or by `buildah push` (`dir:`, `oci:`, `oci-archive:`),
//! applies its layers in order with OCI whiteouts into an in-memory tree, and keeps the parts
//! of the config the build tests compare. Modification times are ignored everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// What a path is, with what matters of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File { size: u64, sha256: String },
    Dir,
    Symlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits plus setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Hard-link identity: paths sharing it are one inode. Compared as groups, not as numbers.
    ino: u64,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = match &self.kind {
            Kind::File { size, sha256 } => format!("file {size} bytes sha256:{}", &sha256[..12]),
            Kind::Dir => "dir".into(),
            Kind::Symlink(t) => format!("symlink -> {t}"),
            Kind::Char(a, b) => format!("char {a},{b}"),
            Kind::Block(a, b) => format!("block {a},{b}"),
            Kind::Fifo => "fifo".into(),
        };
        write!(f, "{k} {:04o} {}:{}", self.mode, self.uid, self.gid)
    }
}

/// An image reduced to what the build tests compare.
#[derive(Debug, Clone)]
pub struct Image {
    /// Relative paths (no leading `/`, no `./`; the root itself is left out) → node.
    pub tree: BTreeMap<String, Node>,
    /// The compared `config` fields (see [`CONFIG_FIELDS`]), empty values dropped.
    pub config: BTreeMap<String, Value>,
    pub architecture: String,
    pub os: String,
    pub history: Vec<History>,
    /// Number of layers in the manifest (= non-empty history entries, checked on load).
    pub layers: usize,
    /// Problems found while reading (inconsistent history/layers, odd entries).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// `created_by` with content digests of COPY/ADD sources masked (`file:<hash>`).
    pub created_by: String,
    pub empty_layer: bool,
}

/// The image config fields compared (Docker names; the OCI config shares them, Healthcheck,
/// OnBuild and Shell are Docker extensions that buildah writes only with `--format docker`).
pub const CONFIG_FIELDS: &[&str] = &[
    "Cmd",
    "Entrypoint",
    "Env",
    "ExposedPorts",
    "Labels",
    "User",
    "WorkingDir",
    "Healthcheck",
    "StopSignal",
    "Volumes",
    "OnBuild",
    "Shell",
];

/// Labels that identify the builder, not the image.
pub const IGNORED_LABELS: &[&str] = &["io.buildah.version"];

/// Files and directories a build container's runtime creates as mount points. buildah leaves
/// them in the first RUN layer (empty dirs `dev proc sys run`, an empty `etc/hostname`);
/// BuildKit removes them. Both are accepted: they are dropped from both trees while empty.
pub const MOUNT_STUBS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "run",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
];

/// Reads an image: a directory (OCI layout, containers-image `dir:`, unpacked docker-archive)
/// or a tar file of one of those (unpacked into a temporary directory first).
pub fn load(path: &Path) -> Result<Image, String> {
    if path.is_dir() {
        return load_dir(path);
    }
    let tmp = tempfile::Builder::new()
        .prefix("berth-norm-")
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let st = Command::new("tar")
        .arg("-xf")
        .arg(path)
        .arg("-C")
        .arg(tmp.path())
        .status()
        .map_err(|e| format!("tar: {e}"))?;
    if !st.success() {
        return Err(format!("tar -xf {} failed: {st}", path.display()));
    }
    load_dir(tmp.path())
}

fn read_json(p: &Path) -> Result<Value, String> {
    let b = std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
    serde_json::from_slice(&b).map_err(|e| format!("parsing {}: {e}", p.display()))
}

fn digest_hex(d: &Value) -> Result<String, String> {
    d.as_str()
        .and_then(|s| s.strip_prefix("sha256:"))
        .map(str::to_string)
        .ok_or_else(|| format!("not a sha256 digest: {d}"))
}

/// (config file, layer files) of the single image in `dir`.
fn locate(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>), String> {
    let index = dir.join("index.json");
    if index.is_file() {
        // OCI layout: index → (nested index →) manifest.
        let blob = |d: &Value| -> Result<PathBuf, String> {
            Ok(dir.join("blobs/sha256").join(digest_hex(d)?))
        };
        let mut m = read_json(&index)?;
        loop {
            let ms = m["manifests"].as_array().ok_or("index without manifests")?;
            if ms.len() != 1 {
                return Err(format!(
                    "expected one image in the index, found {}",
                    ms.len()
                ));
            }
            let next = read_json(&blob(&ms[0]["digest"])?)?;
            if next.get("manifests").is_some() {
                m = next;
                continue;
            }
            let config = blob(&next["config"]["digest"])?;
            let layers = next["layers"]
                .as_array()
                .ok_or("manifest without layers")?
                .iter()
                .map(|l| blob(&l["digest"]))
                .collect::<Result<_, _>>()?;
            return Ok((config, layers));
        }
    }
    let manifest = read_json(&dir.join("manifest.json"))?;
    if let Some(arr) = manifest.as_array() {
        // docker-archive: [{"Config": "x.json", "Layers": ["y/layer.tar", ...]}]
        if arr.len() != 1 {
            return Err(format!(
                "expected one image in manifest.json, found {}",
                arr.len()
            ));
        }
        let config = dir.join(arr[0]["Config"].as_str().ok_or("no Config")?);
        let layers = arr[0]["Layers"]
            .as_array()
            .ok_or("no Layers")?
            .iter()
            .map(|l| l.as_str().map(|s| dir.join(s)).ok_or("layer path"))
            .collect::<Result<_, _>>()?;
        return Ok((config, layers));
    }
    // containers-image dir: manifest.json + blobs named by their hex digest.
    let config = dir.join(digest_hex(&manifest["config"]["digest"])?);
    let layers = manifest["layers"]
        .as_array()
        .ok_or("manifest without layers")?
        .iter()
        .map(|l| Ok(dir.join(digest_hex(&l["digest"])?)))
        .collect::<Result<_, String>>()?;
    Ok((config, layers))
}

fn load_dir(dir: &Path) -> Result<Image, String> {
    let (config_path, layers) = locate(dir)?;
    let cfg = read_json(&config_path)?;
    let mut img = Image {
        tree: BTreeMap::new(),
        config: normalize_config(&cfg["config"]),
        architecture: cfg["architecture"].as_str().unwrap_or_default().to_string(),
        os: cfg["os"].as_str().unwrap_or_default().to_string(),
        history: cfg["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|e| History {
                        created_by: mask_digests(e["created_by"].as_str().unwrap_or_default()),
                        empty_layer: e["empty_layer"].as_bool().unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        layers: layers.len(),
        warnings: vec![],
    };
    let non_empty = img.history.iter().filter(|h| !h.empty_layer).count();
    if !img.history.is_empty() && non_empty != layers.len() {
        img.warnings.push(format!(
            "{} layers but {non_empty} history entries without empty_layer",
            layers.len()
        ));
    }
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len);
    if diff_ids != layers.len() {
        img.warnings.push(format!(
            "{} layers but {diff_ids} rootfs.diff_ids",
            layers.len()
        ));
    }
    let mut tree = Tree::default();
    for l in &layers {
        tree.apply(l)
            .map_err(|e| format!("layer {}: {e}", l.display()))?;
    }
    img.tree = tree.finish();
    Ok(img)
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

pub fn normalize_config(c: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for f in CONFIG_FIELDS {
        let mut v = c.get(*f).cloned().unwrap_or(Value::Null);
        if *f == "Labels" {
            if let Value::Object(o) = &mut v {
                for l in IGNORED_LABELS {
                    o.remove(*l);
                }
            }
        }
        if *f == "Healthcheck" {
            // Zero durations/retries are "inherit the default" and may be left out.
            if let Value::Object(o) = &mut v {
                let drop: Vec<String> = o
                    .iter()
                    .filter(|(k, v)| *k != "Test" && (v.as_i64() == Some(0) || v.is_null()))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in drop {
                    o.remove(&k);
                }
            }
        }
        if !is_empty_value(&v) {
            out.insert((*f).to_string(), v);
        }
    }
    out
}

/// `COPY file:3f2a…(64 hex) in /x` → `COPY file:<hash> in /x` (also `dir:` and `multi:`):
/// buildah's content summaries of COPY/ADD sources are its own hash of a tar stream.
pub fn mask_digests(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    'outer: while !rest.is_empty() {
        for p in ["file:", "dir:", "multi:"] {
            if let Some(after) = rest.strip_prefix(p) {
                let hex = after.bytes().take_while(u8::is_ascii_hexdigit).count();
                if hex == 64 {
                    out.push_str(p);
                    out.push_str("<hash>");
                    rest = &after[64..];
                    continue 'outer;
                }
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[derive(Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    next_ino: u64,
}

fn clean(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    let p = p.trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

fn parent_and_name(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

impl Tree {
    fn remove_subtree(&mut self, p: &str) {
        self.nodes.remove(p);
        let prefix = format!("{p}/");
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    fn ensure_parents(&mut self, p: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = p.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            let is_dir = matches!(
                self.nodes.get(&acc),
                Some(Node {
                    kind: Kind::Dir,
                    ..
                })
            );
            if !is_dir {
                self.remove_subtree(&acc.clone());
                self.next_ino += 1;
                self.nodes.insert(
                    acc.clone(),
                    Node {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        ino: self.next_ino,
                    },
                );
            }
        }
    }

    fn apply(&mut self, layer: &Path) -> Result<(), String> {
        let mut f = std::fs::File::open(layer).map_err(|e| e.to_string())?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).map_err(|e| e.to_string())?;
        drop(f);
        let f = std::fs::File::open(layer).map_err(|e| e.to_string())?;
        let reader: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(f))
        } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            return Err("zstd layers are not supported by the test normalizer".into());
        } else {
            Box::new(f)
        };
        let mut ar = tar::Archive::new(reader);
        // Whiteouts apply to the layers below: collect this layer first.
        let mut adds: Vec<(String, Node, Option<String>)> = vec![];
        let mut whiteouts: Vec<String> = vec![];
        let mut opaque: Vec<String> = vec![];
        for e in ar.entries().map_err(|e| e.to_string())? {
            let mut e = e.map_err(|e| e.to_string())?;
            let path = clean(&e.path().map_err(|e| e.to_string())?.to_string_lossy());
            let (parent, name) = parent_and_name(&path);
            if name == ".wh..wh..opq" {
                opaque.push(parent.to_string());
                continue;
            }
            if let Some(target) = name.strip_prefix(".wh.") {
                whiteouts.push(if parent.is_empty() {
                    target.to_string()
                } else {
                    format!("{parent}/{target}")
                });
                continue;
            }
            if path.is_empty() {
                continue; // the root directory itself
            }
            let h = e.header();
            let mode = h.mode().map_err(|e| e.to_string())? & 0o7777;
            let uid = h.uid().map_err(|e| e.to_string())?;
            let gid = h.gid().map_err(|e| e.to_string())?;
            let link = e
                .link_name()
                .map_err(|e| e.to_string())?
                .map(|l| l.to_string_lossy().into_owned());
            let et = h.entry_type();
            let dev = || -> Result<(u32, u32), String> {
                Ok((
                    h.device_major().map_err(|e| e.to_string())?.unwrap_or(0),
                    h.device_minor().map_err(|e| e.to_string())?.unwrap_or(0),
                ))
            };
            let (kind, hardlink) = match et {
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    let mut hasher = Sha256::new();
                    let size = std::io::copy(&mut e, &mut hasher).map_err(|e| e.to_string())?;
                    (
                        Kind::File {
                            size,
                            sha256: hex::encode(hasher.finalize()),
                        },
                        None,
                    )
                }
                tar::EntryType::Directory => (Kind::Dir, None),
                tar::EntryType::Symlink => (Kind::Symlink(link.unwrap_or_default()), None),
                tar::EntryType::Link => (Kind::Fifo, Some(clean(&link.unwrap_or_default()))),
                tar::EntryType::Char => {
                    let (a, b) = dev()?;
                    (Kind::Char(a, b), None)
                }
                tar::EntryType::Block => {
                    let (a, b) = dev()?;
                    (Kind::Block(a, b), None)
                }
                tar::EntryType::Fifo => (Kind::Fifo, None),
                other => return Err(format!("{path}: unexpected tar entry type {other:?}")),
            };
            adds.push((
                path,
                Node {
                    kind,
                    mode,
                    uid,
                    gid,
                    ino: 0,
                },
                hardlink,
            ));
        }
        for p in opaque {
            let prefix = if p.is_empty() {
                String::new()
            } else {
                format!("{p}/")
            };
            let doomed: Vec<String> = self
                .nodes
                .keys()
                .filter(|k| k.starts_with(&prefix) && k.as_str() != p)
                .cloned()
                .collect();
            for k in doomed {
                self.nodes.remove(&k);
            }
        }
        for w in whiteouts {
            self.remove_subtree(&w);
        }
        for (path, mut node, hardlink) in adds {
            if let Some(target) = hardlink {
                match self.nodes.get(&target) {
                    Some(t) => node = t.clone(),
                    None => return Err(format!("{path}: hard link to missing {target}")),
                }
            } else {
                self.next_ino += 1;
                node.ino = self.next_ino;
            }
            self.ensure_parents(&path);
            match (self.nodes.get(&path), &node.kind) {
                (
                    Some(Node {
                        kind: Kind::Dir, ..
                    }),
                    Kind::Dir,
                ) => {}
                (Some(_), _) => self.remove_subtree(&path),
                (None, _) => {}
            }
            self.nodes.insert(path, node);
        }
        Ok(())
    }

    fn finish(self) -> BTreeMap<String, Node> {
        let mut nodes = self.nodes;
        // Hard-link groups are compared by their members: give each group the inode number
        // of... its first path's position, so two trees with the same groups compare equal.
        let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (p, n) in &nodes {
            groups.entry(n.ino).or_default().push(p.clone());
        }
        let order: BTreeMap<String, u64> = nodes
            .keys()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u64))
            .collect();
        for members in groups.values() {
            let first = order[&members[0]];
            for m in members {
                if let Some(n) = nodes.get_mut(m) {
                    n.ino = if members.len() > 1 { first + 1 } else { 0 };
                }
            }
        }
        // Mount stubs left by the build runtime (see MOUNT_STUBS), only while empty.
        for stub in MOUNT_STUBS {
            let empty = match nodes.get(*stub) {
                Some(Node {
                    kind: Kind::Dir, ..
                }) => {
                    let prefix = format!("{stub}/");
                    !nodes.keys().any(|k| k.starts_with(&prefix))
                }
                Some(Node {
                    kind: Kind::File { size: 0, .. },
                    ..
                }) => true,
                _ => false,
            };
            if empty {
                nodes.remove(*stub);
            }
        }
        nodes
    }
}

/// Hard-link partners of `path` in `tree` (empty when it is not hard-linked).
fn links(tree: &BTreeMap<String, Node>, path: &str) -> BTreeSet<String> {
    match tree.get(path) {
        Some(n) if n.ino != 0 => tree
            .iter()
            .filter(|(p, m)| m.ino == n.ino && p.as_str() != path)
            .map(|(p, _)| p.clone())
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// What may differ between a reference and a candidate image, per corpus case.
#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    /// false: compare only the number of history entries and their empty_layer flags (the
    /// reference was built from an equivalent Dockerfile, e.g. without heredocs).
    pub history_text: bool,
}

/// Readable differences between `got` (berth) and `want` (the reference); empty when equal.
pub fn compare(got: &Image, want: &Image, opts: &CompareOptions) -> Vec<String> {
    let mut d = vec![];
    for w in &got.warnings {
        d.push(format!("berth image: {w}"));
    }
    for w in &want.warnings {
        d.push(format!("reference image: {w}"));
    }
    if got.architecture != want.architecture || got.os != want.os {
        d.push(format!(
            "platform: got {}/{}, want {}/{}",
            got.os, got.architecture, want.os, want.architecture
        ));
    }
    let keys: BTreeSet<&String> = got.config.keys().chain(want.config.keys()).collect();
    for k in keys {
        let (g, w) = (got.config.get(k), want.config.get(k));
        if g != w {
            let show = |v: Option<&Value>| v.map_or("(unset)".to_string(), Value::to_string);
            d.push(format!("config.{k}: got {}, want {}", show(g), show(w)));
        }
    }
    let (gh, wh) = (&got.history, &want.history);
    if gh.len() != wh.len() {
        d.push(format!(
            "history: got {} entries, want {}:\n  got:  {}\n  want: {}",
            gh.len(),
            wh.len(),
            show_history(gh),
            show_history(wh)
        ));
    } else {
        for (i, (g, w)) in gh.iter().zip(wh).enumerate() {
            if g.empty_layer != w.empty_layer {
                d.push(format!(
                    "history[{i}].empty_layer: got {}, want {} ({:?})",
                    g.empty_layer, w.empty_layer, w.created_by
                ));
            }
            if opts.history_text && g.created_by != w.created_by {
                d.push(format!(
                    "history[{i}].created_by:\n  got:  {:?}\n  want: {:?}",
                    g.created_by, w.created_by
                ));
            }
        }
    }
    let paths: BTreeSet<&String> = got.tree.keys().chain(want.tree.keys()).collect();
    for p in paths {
        match (got.tree.get(p), want.tree.get(p)) {
            (Some(g), None) => d.push(format!("/{p}: only in berth's image ({g})")),
            (None, Some(w)) => d.push(format!("/{p}: missing in berth's image ({w})")),
            (Some(g), Some(w)) => {
                if g.kind != w.kind || g.mode != w.mode || g.uid != w.uid || g.gid != w.gid {
                    d.push(format!("/{p}: got {g}, want {w}"));
                }
                let (gl, wl) = (links(&got.tree, p), links(&want.tree, p));
                if gl != wl {
                    d.push(format!(
                        "/{p}: hard-linked with {gl:?} in berth's image, with {wl:?} in the reference"
                    ));
                }
            }
            (None, None) => {}
        }
    }
    d
}

fn show_history(h: &[History]) -> String {
    h.iter()
        .map(|e| {
            format!(
                "{}{}",
                e.created_by,
                if e.empty_layer { " (empty)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A readable dump (tests print it when asked to, `BERTH_BUILD_DUMP=1`).
pub fn dump(img: &Image) -> String {
    let mut s = String::new();
    let cfg: Map<String, Value> = img
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    s.push_str(&format!("config: {}\n", Value::Object(cfg)));
    for h in &img.history {
        s.push_str(&format!(
            "history: {}{}\n",
            h.created_by,
            if h.empty_layer { " (empty)" } else { "" }
        ));
    }
    for (p, n) in &img.tree {
        s.push_str(&format!("/{p}: {n}\n"));
    }
    s
}

/// The config and history part of [`dump`] (a cache key for base images).
pub fn dump_config(img: &Image) -> String {
    dump(img)
        .lines()
        .filter(|l| l.starts_with("config:") || l.starts_with("history:"))
        .collect::<Vec<_>>()
        .join("\n")
}
