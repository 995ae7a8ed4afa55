//! The build executor: runs a parsed Dockerfile on the engine.
//!
//! Stages needed for the target (its `FROM` chain and `COPY --from` sources) run in order.
//! Each instruction turns the image state (config JSON with history + layers) into the next
//! one: metadata instructions edit the config and add an `empty_layer` history entry; RUN
//! runs in a container of the engine on an overlay of the state's snapshots and commits the
//! upper directory as a layer; COPY/ADD write into such an overlay directly (no container).
//! Every step goes through the [`cache`] first. Conventions of history and config follow
//! buildah 1.28 (see `crates/berth/tests/build_corpus/BUILDAH-NOTES.md`).

pub mod cache;
pub mod copy;
pub mod ignore;

mod exec;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use exec::build;

use berth_engine::Network;

/// What `berth build` asks for.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile (`-f`); default `CONTEXT/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    /// Names to tag the result with (`-t`).
    pub tags: Vec<String>,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`: run every step (results are still recorded).
    pub no_cache: bool,
    /// Network of RUN steps.
    pub network: Network,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The image id (config digest).
    pub image_id: berth_oci::Digest,
    pub manifest_digest: berth_oci::Digest,
    /// Normalized names tagged.
    pub tags: Vec<String>,
    /// Steps executed and steps taken from the cache.
    pub executed: usize,
    pub cached: usize,
}

/// Errors of a build. Located errors read `Dockerfile:LINE: INSTRUCTION: what`.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] crate::dockerfile::ParseError),
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{file}:{line}: {instruction}: {message}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    #[error("{file}:{line}: RUN {command}: process did not complete successfully: exit code {exit_code}\n--- output of the step (last lines) ---\n{output}")]
    RunFailed {
        file: String,
        line: usize,
        command: String,
        exit_code: i32,
        output: String,
    },
    #[error("target stage {0:?} could not be found")]
    TargetNotFound(String),
    #[error("build cancelled")]
    Cancelled,
    #[error("{0}")]
    Engine(String),
}

/// An error and its sources on one line (`a: b: c`), for messages that carry a cause.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}
