//! OCI digests, repository names, references, media types and manifest validation.
//!
//! Everything here parses untrusted input (URL paths, pushed manifests) into validated types.

pub mod digest;
pub mod layer;
pub mod manifest;
pub mod media_type;
pub mod name;
pub mod store;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{
    build_index, parse_manifest, Descriptor, ManifestError, ManifestKind, ParsedManifest, Platform,
};
pub use name::{NameError, Reference, RepoName, Tag};

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A digest failed to parse.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// A repository name, tag or reference failed to parse.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A manifest was rejected.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}
