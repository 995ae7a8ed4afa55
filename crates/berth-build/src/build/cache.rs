//! The build cache: `<engine root>/build-cache/<key>.json`, one file per executed step.
//!
//! The key is sha256 of the parent image state's digest (the config JSON, which holds the
//! history and the layers' diff_ids) and a description of the step: the instruction as
//! written, the build args in scope, and what the step reads (the expanded command and its
//! environment for RUN; a digest of the source files' content, or of the source stage, for
//! COPY/ADD). The value is the state after the step (config and layers), so a hit costs
//! one small file read and never starts a container.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use berth_engine::image::LayerRef;
use berth_oci::Digest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Bumped when the meaning of keys or entries changes.
const SCHEMA: u32 = 1;

/// An image state: its config (a complete image config JSON) and layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub config: Map<String, Value>,
    pub layers: Vec<CachedLayer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub diff_id: String,
    pub chain_id: String,
}

impl CachedLayer {
    pub fn from_ref(l: &LayerRef) -> Self {
        CachedLayer {
            digest: l.digest.to_string(),
            media_type: l.media_type.clone(),
            size: l.size,
            diff_id: l.diff_id.to_string(),
            chain_id: l.chain_id.to_string(),
        }
    }

    pub fn to_ref(&self) -> Option<LayerRef> {
        Some(LayerRef {
            digest: self.digest.parse::<Digest>().ok()?,
            media_type: self.media_type.clone(),
            size: self.size,
            diff_id: self.diff_id.parse::<Digest>().ok()?,
            chain_id: self.chain_id.parse::<Digest>().ok()?,
        })
    }
}

/// The cache key of a step: hex sha256 of the schema, the parent state digest and the step.
pub fn key(parent_state: &str, step: &Value) -> String {
    let mut h = Sha256::new();
    h.update(format!("berth-build-cache/{SCHEMA}\n{parent_state}\n").as_bytes());
    h.update(step.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(engine_root: &Path) -> Self {
        Cache {
            dir: engine_root.join("build-cache"),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The entry of `key`, if any (an unreadable entry is a miss).
    pub fn get(&self, key: &str) -> Option<Entry> {
        let data = fs::read(self.path(key)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Stores an entry durably (temp file, fsync, rename, directory fsync).
    pub fn put(&self, key: &str, entry: &Entry) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let data = serde_json::to_vec(entry).map_err(io::Error::other)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)?;
        tmp.write_all(&data)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.path(key)).map_err(|e| e.error)?;
        fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_depend_on_parent_and_step() {
        let a = key("p1", &json!({"i": "RUN x"}));
        assert_eq!(a, key("p1", &json!({"i": "RUN x"})));
        assert_ne!(a, key("p2", &json!({"i": "RUN x"})));
        assert_ne!(a, key("p1", &json!({"i": "RUN y"})));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = Cache::new(tmp.path());
        assert!(c.get("k").is_none());
        let e = Entry {
            config: json!({"config": {"Env": ["A=1"]}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            layers: vec![],
        };
        c.put("k", &e).expect("put");
        assert_eq!(c.get("k"), Some(e));
    }
}
