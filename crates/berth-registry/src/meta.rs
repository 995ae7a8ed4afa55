//! Registry metadata in an embedded transactional store (redb).
//!
//! Blob *bytes* live in the blob store (files); everything else — repositories, which blobs a
//! repository may serve, manifests (bodies included), tags, the referrers index, upload sessions,
//! users — lives here, so each logical change is one ACID transaction. A blob only becomes visible
//! once its record commits, and its file is renamed into place before that.
//!
//! Keys are strings joined with `\0` (which no repository name, tag or digest may contain), so a
//! prefix scan lists one repository's rows in lexical order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A table of JSON-encoded records keyed by string.
type JsonTable = TableDefinition<'static, &'static str, &'static [u8]>;

/// name -> RepoRecord
pub(crate) const REPOS: TableDefinition<&str, &[u8]> = TableDefinition::new("repos");
/// digest -> BlobRecord
pub(crate) const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// repo \0 digest -> () : the repository may serve this blob
pub(crate) const LINKS: TableDefinition<&str, ()> = TableDefinition::new("links");
/// repo \0 digest -> ManifestRecord
pub(crate) const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests");
/// digest -> manifest body (content addressed, shared by repositories)
pub(crate) const BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("manifest_bodies");
/// repo \0 tag -> digest
pub(crate) const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
/// referenced digest \0 repo \0 referencing manifest digest -> ()
pub(crate) const REFS: TableDefinition<&str, ()> = TableDefinition::new("refs");
/// repo \0 subject digest \0 referrer digest -> ()
pub(crate) const REFERRERS: TableDefinition<&str, ()> = TableDefinition::new("referrers");
/// upload id -> UploadRecord
pub(crate) const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// user name -> UserRecord
pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store")]
    Db(#[source] Box<redb::Error>),
    #[error("metadata record is corrupt")]
    Codec(#[from] serde_json::Error),
    #[error("metadata store is in use by another process")]
    Locked,
    #[error("repository {0} not found")]
    RepoNotFound(String),
    #[error("repository {0} already exists")]
    RepoExists(String),
    #[error("repository {0} still contains images")]
    RepoNotEmpty(String),
    #[error("manifest {0} not found")]
    ManifestNotFound(String),
    #[error("blob {0} is unknown to the repository")]
    BlobUnknown(String),
    #[error("manifest {0} is unknown to the repository")]
    ManifestRefUnknown(String),
    #[error("tag {tag} already exists in repository {repo}, which has immutable tags")]
    TagImmutable { repo: String, tag: String },
    #[error("manifest {digest} is referenced by {by:?}")]
    ManifestReferenced { digest: String, by: Vec<String> },
    #[error("user {0} not found")]
    UserNotFound(String),
}

pub(crate) fn db<E: Into<redb::Error>>(e: E) -> MetaError {
    MetaError::Db(Box::new(e.into()))
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Tag mutability of a repository (ECR semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagMutability {
    #[default]
    Mutable,
    Immutable,
    MutableWithExclusion,
    ImmutableWithExclusion,
}

impl TagMutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutable => "MUTABLE",
            Self::Immutable => "IMMUTABLE",
            Self::MutableWithExclusion => "MUTABLE_WITH_EXCLUSION",
            Self::ImmutableWithExclusion => "IMMUTABLE_WITH_EXCLUSION",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "MUTABLE" => Self::Mutable,
            "IMMUTABLE" => Self::Immutable,
            "MUTABLE_WITH_EXCLUSION" => Self::MutableWithExclusion,
            "IMMUTABLE_WITH_EXCLUSION" => Self::ImmutableWithExclusion,
            _ => return None,
        })
    }
}

/// Matches `*` wildcards (any run of characters) against a whole tag.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RepoRecord {
    pub created_at: u64,
    /// Anonymous pull allowed (the Docker Hub case); private otherwise (the ECR case).
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub tag_mutability: TagMutability,
    /// Wildcard tag filters that are exempt from `tag_mutability`.
    #[serde(default)]
    pub mutability_exclusions: Vec<String>,
    #[serde(default)]
    pub scan_on_push: bool,
    #[serde(default)]
    pub encryption_type: Option<String>,
    #[serde(default)]
    pub kms_key: Option<String>,
    #[serde(default)]
    pub lifecycle_policy: Option<String>,
    #[serde(default)]
    pub lifecycle_policy_updated_at: Option<u64>,
    #[serde(default)]
    pub resource_tags: BTreeMap<String, String>,
}

impl RepoRecord {
    pub fn new() -> Self {
        RepoRecord {
            created_at: now_ms(),
            ..Default::default()
        }
    }

    /// Whether `tag` may be moved to another manifest once it exists.
    pub fn tag_is_immutable(&self, tag: &str) -> bool {
        let excluded = self
            .mutability_exclusions
            .iter()
            .any(|f| wildcard_match(f, tag));
        match self.tag_mutability {
            TagMutability::Mutable => false,
            TagMutability::Immutable => true,
            TagMutability::MutableWithExclusion => excluded,
            TagMutability::ImmutableWithExclusion => !excluded,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    pub created_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    pub pushed_at: u64,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub config_media_type: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    /// Sum of the sizes of config and layers (image) or of the child manifests (index).
    #[serde(default)]
    pub content_size: u64,
    /// Digests of the blobs this manifest references (config + layers).
    #[serde(default)]
    pub blobs: Vec<String>,
    /// Digests of the manifests this index references.
    #[serde(default)]
    pub children: Vec<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl ManifestRecord {
    /// The record of a validated manifest of `size` bytes, pushed now.
    pub fn from_parsed(parsed: &berth_oci::ParsedManifest, size: usize) -> ManifestRecord {
        let mut blobs: Vec<String> = Vec::new();
        let mut content_size = 0u64;
        for d in parsed.blob_references() {
            let s = d.digest.to_string();
            if !blobs.contains(&s) {
                blobs.push(s);
            }
            content_size = content_size.saturating_add(d.size);
        }
        let mut children: Vec<String> = Vec::new();
        for d in parsed.manifest_references() {
            let s = d.digest.to_string();
            if !children.contains(&s) {
                children.push(s);
            }
            content_size = content_size.saturating_add(d.size);
        }
        ManifestRecord {
            media_type: parsed.media_type.clone(),
            size: size as u64,
            pushed_at: now_ms(),
            artifact_type: parsed.effective_artifact_type().map(str::to_string),
            config_media_type: parsed.config.as_ref().map(|c| c.media_type.clone()),
            subject: parsed.subject.as_ref().map(|s| s.digest.to_string()),
            content_size,
            blobs,
            children,
            annotations: parsed.annotations.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    pub repo: String,
    pub started_at: u64,
}

/// A right on repositories matching `repository` (a `*` wildcard pattern).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    pub repository: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// Argon2id PHC string.
    pub password_hash: String,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub grants: Vec<Grant>,
    pub created_at: u64,
}

/// One image of a repository: a manifest and the tags that point at it.
#[derive(Debug, Clone)]
pub struct Image {
    pub digest: String,
    pub manifest: ManifestRecord,
    pub tags: Vec<String>,
}

/// What a manifest PUT changed.
#[derive(Debug, Clone, Default)]
pub struct PutManifestOutcome {
    /// The repository did not exist and was created by this push.
    pub created_repo: bool,
    /// The tag previously pointed at this digest.
    pub previous_tag_target: Option<String>,
}

/// Result of a GC sweep over blob records.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweptBlobs {
    pub digests: Vec<String>,
    pub bytes: u64,
    pub links_removed: u64,
}

pub(crate) fn key2(a: &str, b: &str) -> String {
    let mut k = String::with_capacity(a.len() + b.len() + 1);
    k.push_str(a);
    k.push('\0');
    k.push_str(b);
    k
}

pub(crate) fn key3(a: &str, b: &str, c: &str) -> String {
    let mut k = key2(a, b);
    k.push('\0');
    k.push_str(c);
    k
}

pub(crate) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

pub(crate) fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(b)?)
}

/// Lists the keys of `table` that start with `prefix`, returning the remainder after the prefix.
pub(crate) fn scan_prefix<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    prefix: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in table.range::<&str>(prefix..).map_err(db)? {
        let (k, _) = item.map_err(db)?;
        let k = k.value();
        match k.strip_prefix(prefix) {
            Some(rest) => out.push(rest.to_string()),
            None => break,
        }
    }
    Ok(out)
}

pub(crate) fn scan_prefix_values(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for item in table.range::<&str>(prefix..).map_err(db)? {
        let (k, v) = item.map_err(db)?;
        match k.value().strip_prefix(prefix) {
            Some(rest) => out.push((rest.to_string(), v.value().to_vec())),
            None => break,
        }
    }
    Ok(out)
}

pub(crate) fn has_prefix<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    prefix: &str,
) -> Result<bool> {
    if let Some(item) = table.range::<&str>(prefix..).map_err(db)?.next() {
        let (k, _) = item.map_err(db)?;
        return Ok(k.value().starts_with(prefix));
    }
    Ok(false)
}

/// The registry's metadata store.
pub struct Meta {
    pub(crate) db: Database,
}

impl Meta {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Meta> {
        let database = match Database::create(path) {
            Ok(d) => d,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(MetaError::Locked),
            Err(e) => return Err(db(e)),
        };
        let txn = database.begin_write().map_err(db)?;
        {
            txn.open_table(REPOS).map_err(db)?;
            txn.open_table(BLOBS).map_err(db)?;
            txn.open_table(LINKS).map_err(db)?;
            txn.open_table(MANIFESTS).map_err(db)?;
            txn.open_table(BODIES).map_err(db)?;
            txn.open_table(TAGS).map_err(db)?;
            txn.open_table(REFS).map_err(db)?;
            txn.open_table(REFERRERS).map_err(db)?;
            txn.open_table(UPLOADS).map_err(db)?;
            txn.open_table(USERS).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(Meta { db: database })
    }

    pub(crate) fn read(&self) -> Result<redb::ReadTransaction> {
        self.db.begin_read().map_err(db)
    }

    pub(crate) fn write(&self) -> Result<redb::WriteTransaction> {
        self.db.begin_write().map_err(db)
    }

    // ---- repositories -------------------------------------------------------------------------

    pub fn get_repo(&self, name: &str) -> Result<Option<RepoRecord>> {
        self.get_rec(REPOS, name)
    }

    /// Creates a repository; fails with [`MetaError::RepoExists`] if it exists.
    pub fn create_repo(&self, name: &str, rec: &RepoRecord) -> Result<()> {
        let txn = self.write()?;
        {
            let mut t = txn.open_table(REPOS).map_err(db)?;
            if t.get(name).map_err(db)?.is_some() {
                return Err(MetaError::RepoExists(name.to_string()));
            }
            t.insert(name, enc(rec)?.as_slice()).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Applies `f` to a repository record and stores the result.
    pub fn update_repo(
        &self,
        name: &str,
        f: impl FnOnce(&mut RepoRecord) -> Result<()>,
    ) -> Result<RepoRecord> {
        let txn = self.write()?;
        let rec = {
            let mut t = txn.open_table(REPOS).map_err(db)?;
            let mut rec: RepoRecord = match t.get(name).map_err(db)? {
                Some(v) => dec(v.value())?,
                None => return Err(MetaError::RepoNotFound(name.to_string())),
            };
            f(&mut rec)?;
            t.insert(name, enc(&rec)?.as_slice()).map_err(db)?;
            rec
        };
        txn.commit().map_err(db)?;
        Ok(rec)
    }

    /// Lists repositories in lexical order, starting after `after`, at most `limit`.
    pub fn list_repos(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, RepoRecord)>> {
        let t = self.read()?.open_table(REPOS).map_err(db)?;
        let mut out = Vec::new();
        let iter = match after {
            Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => t.range::<&str>(..),
        }
        .map_err(db)?;
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(db)?;
            out.push((k.value().to_string(), dec(v.value())?));
        }
        Ok(out)
    }

    /// Deletes a repository. Without `force`, fails if it still has images. Returns the record
    /// and the number of images deleted with it.
    pub fn delete_repo(&self, name: &str, force: bool) -> Result<(RepoRecord, usize)> {
        let txn = self.write()?;
        let out = {
            let mut repos = txn.open_table(REPOS).map_err(db)?;
            let rec: RepoRecord = match repos.get(name).map_err(db)? {
                Some(v) => dec(v.value())?,
                None => return Err(MetaError::RepoNotFound(name.to_string())),
            };
            let prefix = key2(name, "");
            let manifests = {
                let t = txn.open_table(MANIFESTS).map_err(db)?;
                scan_prefix(&t, &prefix)?
            };
            if !manifests.is_empty() && !force {
                return Err(MetaError::RepoNotEmpty(name.to_string()));
            }
            for d in &manifests {
                delete_manifest_in(&txn, name, d)?;
            }
            let mut links = txn.open_table(LINKS).map_err(db)?;
            for d in scan_prefix(&links, &prefix)? {
                links.remove(key2(name, &d).as_str()).map_err(db)?;
            }
            let mut tags = txn.open_table(TAGS).map_err(db)?;
            for tg in scan_prefix(&tags, &prefix)? {
                tags.remove(key2(name, &tg).as_str()).map_err(db)?;
            }
            repos.remove(name).map_err(db)?;
            (rec, manifests.len())
        };
        txn.commit().map_err(db)?;
        Ok(out)
    }

    // ---- blobs --------------------------------------------------------------------------------

    pub fn blob(&self, digest: &str) -> Result<Option<BlobRecord>> {
        self.get_rec(BLOBS, digest)
    }

    /// The blob's record, if `repo` may serve it.
    pub fn repo_blob(&self, repo: &str, digest: &str) -> Result<Option<BlobRecord>> {
        let txn = self.read()?;
        let links = txn.open_table(LINKS).map_err(db)?;
        if links
            .get(key2(repo, digest).as_str())
            .map_err(db)?
            .is_none()
        {
            return Ok(None);
        }
        let t = txn.open_table(BLOBS).map_err(db)?;
        match t.get(digest).map_err(db)? {
            Some(v) => Ok(Some(dec(v.value())?)),
            None => Ok(None),
        }
    }

    /// Records a verified blob (its file already in place) and links it into `repo`, creating
    /// the repository if `create_repo` says so. Fails with RepoNotFound otherwise.
    pub fn commit_blob(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        create_repo: bool,
    ) -> Result<()> {
        let txn = self.write()?;
        {
            ensure_repo_in(&txn, repo, create_repo)?;
            let mut blobs = txn.open_table(BLOBS).map_err(db)?;
            let rec = BlobRecord {
                size,
                created_at: now_ms(),
            };
            blobs.insert(digest, enc(&rec)?.as_slice()).map_err(db)?;
            let mut links = txn.open_table(LINKS).map_err(db)?;
            links.insert(key2(repo, digest).as_str(), ()).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Links an existing blob into `repo` (cross-repository mount). False if the blob is unknown.
    pub fn link_blob(&self, repo: &str, digest: &str, create_repo: bool) -> Result<bool> {
        let txn = self.write()?;
        {
            let blobs = txn.open_table(BLOBS).map_err(db)?;
            if blobs.get(digest).map_err(db)?.is_none() {
                return Ok(false);
            }
            ensure_repo_in(&txn, repo, create_repo)?;
            let mut links = txn.open_table(LINKS).map_err(db)?;
            links.insert(key2(repo, digest).as_str(), ()).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(true)
    }

    /// Removes a blob from a repository. The bytes go when GC finds nothing referencing them.
    pub fn unlink_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let txn = self.write()?;
        let removed = {
            let mut links = txn.open_table(LINKS).map_err(db)?;
            let r = links
                .remove(key2(repo, digest).as_str())
                .map_err(db)?
                .is_some();
            r
        };
        txn.commit().map_err(db)?;
        Ok(removed)
    }

    /// Deletes the records of blobs that no manifest references and that were created or
    /// touched before `cutoff_ms` (as judged by `last_touch`), together with their repository
    /// links, in one transaction. The caller removes the files afterwards, under the finalize
    /// lock, so a concurrent re-upload cannot lose its file.
    pub fn sweep_blobs(
        &self,
        cutoff_ms: u64,
        last_touch: impl Fn(&str) -> Option<u64>,
        dry_run: bool,
    ) -> Result<SweptBlobs> {
        let txn = self.write()?;
        let mut out = SweptBlobs::default();
        {
            let mut blobs = txn.open_table(BLOBS).map_err(db)?;
            let refs = txn.open_table(REFS).map_err(db)?;
            let mut victims = Vec::new();
            for item in blobs.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let rec: BlobRecord = dec(v.value())?;
                let digest = k.value().to_string();
                let touched = last_touch(&digest).unwrap_or(0).max(rec.created_at);
                if touched >= cutoff_ms {
                    continue;
                }
                if has_prefix(&refs, &key2(&digest, ""))? {
                    continue;
                }
                out.bytes += rec.size;
                victims.push(digest);
            }
            if !dry_run {
                let mut links = txn.open_table(LINKS).map_err(db)?;
                let linked: Vec<String> = {
                    let mut all = Vec::new();
                    for item in links.iter().map_err(db)? {
                        let (k, _) = item.map_err(db)?;
                        all.push(k.value().to_string());
                    }
                    all
                };
                let victim_set: BTreeSet<&str> = victims.iter().map(String::as_str).collect();
                for k in linked {
                    if let Some((_, d)) = k.split_once('\0') {
                        if victim_set.contains(d) {
                            links.remove(k.as_str()).map_err(db)?;
                            out.links_removed += 1;
                        }
                    }
                }
                for d in &victims {
                    blobs.remove(d.as_str()).map_err(db)?;
                }
            }
            out.digests = victims;
        }
        if dry_run {
            txn.abort().map_err(db)?;
        } else {
            txn.commit().map_err(db)?;
        }
        Ok(out)
    }

    /// All blob digests with a record.
    pub fn blob_digests(&self) -> Result<BTreeSet<String>> {
        let t = self.read()?.open_table(BLOBS).map_err(db)?;
        let mut out = BTreeSet::new();
        for item in t.iter().map_err(db)? {
            let (k, _) = item.map_err(db)?;
            out.insert(k.value().to_string());
        }
        Ok(out)
    }

    // ---- manifests and tags -------------------------------------------------------------------

    pub fn get_manifest(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<(ManifestRecord, Vec<u8>)>> {
        let txn = self.read()?;
        let t = txn.open_table(MANIFESTS).map_err(db)?;
        let rec: ManifestRecord = match t.get(key2(repo, digest).as_str()).map_err(db)? {
            Some(v) => dec(v.value())?,
            None => return Ok(None),
        };
        let bodies = txn.open_table(BODIES).map_err(db)?;
        match bodies.get(digest).map_err(db)? {
            Some(b) => Ok(Some((rec, b.value().to_vec()))),
            None => Ok(None),
        }
    }

    pub fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<String>> {
        let t = self.read()?.open_table(TAGS).map_err(db)?;
        Ok(t.get(key2(repo, tag).as_str())
            .map_err(db)?
            .map(|v| v.value().to_string()))
    }

    /// Stores a manifest (and optionally points `tag` at it) in one transaction, after checking
    /// that every blob and child manifest it references is present in `repo` and that the tag
    /// may move.
    pub fn put_manifest(
        &self,
        repo: &str,
        digest: &str,
        rec: &ManifestRecord,
        body: &[u8],
        tag: Option<&str>,
        create_repo: bool,
    ) -> Result<PutManifestOutcome> {
        let txn = self.write()?;
        let mut outcome = PutManifestOutcome::default();
        {
            let repo_rec = ensure_repo_in(&txn, repo, create_repo)?;
            outcome.created_repo = repo_rec.is_none();
            let repo_rec = repo_rec.unwrap_or_default();
            {
                let links = txn.open_table(LINKS).map_err(db)?;
                let blobs = txn.open_table(BLOBS).map_err(db)?;
                for b in &rec.blobs {
                    if links.get(key2(repo, b).as_str()).map_err(db)?.is_none()
                        || blobs.get(b.as_str()).map_err(db)?.is_none()
                    {
                        return Err(MetaError::BlobUnknown(b.clone()));
                    }
                }
                let manifests = txn.open_table(MANIFESTS).map_err(db)?;
                for c in &rec.children {
                    if manifests.get(key2(repo, c).as_str()).map_err(db)?.is_none() {
                        return Err(MetaError::ManifestRefUnknown(c.clone()));
                    }
                }
            }
            if let Some(tag) = tag {
                let mut tags = txn.open_table(TAGS).map_err(db)?;
                let k = key2(repo, tag);
                let prev = tags
                    .get(k.as_str())
                    .map_err(db)?
                    .map(|v| v.value().to_string());
                if let Some(p) = &prev {
                    if p != digest && repo_rec.tag_is_immutable(tag) {
                        return Err(MetaError::TagImmutable {
                            repo: repo.to_string(),
                            tag: tag.to_string(),
                        });
                    }
                }
                tags.insert(k.as_str(), digest).map_err(db)?;
                outcome.previous_tag_target = prev;
            }
            let mut manifests = txn.open_table(MANIFESTS).map_err(db)?;
            let mk = key2(repo, digest);
            let existing: Option<ManifestRecord> = match manifests.get(mk.as_str()).map_err(db)? {
                Some(v) => Some(dec(v.value())?),
                None => None,
            };
            if existing.is_none() {
                manifests
                    .insert(mk.as_str(), enc(rec)?.as_slice())
                    .map_err(db)?;
                let mut bodies = txn.open_table(BODIES).map_err(db)?;
                bodies.insert(digest, body).map_err(db)?;
                let mut refs = txn.open_table(REFS).map_err(db)?;
                refs.insert(key3(digest, repo, digest).as_str(), ())
                    .map_err(db)?;
                for b in rec.blobs.iter().chain(rec.children.iter()) {
                    refs.insert(key3(b, repo, digest).as_str(), ())
                        .map_err(db)?;
                }
                if let Some(s) = &rec.subject {
                    let mut referrers = txn.open_table(REFERRERS).map_err(db)?;
                    referrers
                        .insert(key3(repo, s, digest).as_str(), ())
                        .map_err(db)?;
                }
            }
        }
        txn.commit().map_err(db)?;
        Ok(outcome)
    }

    /// Deletes a manifest and every tag pointing at it. Returns the removed tags. Refuses
    /// while an index in the repository still references it (as ECR does), so no index is
    /// left pointing at a missing child.
    pub fn delete_manifest(&self, repo: &str, digest: &str) -> Result<Vec<String>> {
        let txn = self.write()?;
        {
            let refs = txn.open_table(REFS).map_err(db)?;
            let parents: Vec<String> = scan_prefix(&refs, &key3(digest, repo, ""))?
                .into_iter()
                .filter(|d| d != digest)
                .collect();
            if !parents.is_empty() {
                return Err(MetaError::ManifestReferenced {
                    digest: digest.to_string(),
                    by: parents,
                });
            }
        }
        let tags = delete_manifest_in(&txn, repo, digest)?;
        txn.commit().map_err(db)?;
        Ok(tags)
    }

    /// Removes a tag; false if it did not exist.
    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        let txn = self.write()?;
        let removed = {
            let mut t = txn.open_table(TAGS).map_err(db)?;
            let r = t.remove(key2(repo, tag).as_str()).map_err(db)?.is_some();
            r
        };
        txn.commit().map_err(db)?;
        Ok(removed)
    }

    /// Tags of a repository in lexical order after `last`, at most `n` (plus whether more exist).
    pub fn list_tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<(Vec<String>, bool)> {
        let t = self.read()?.open_table(TAGS).map_err(db)?;
        let prefix = key2(repo, "");
        let start = match last {
            Some(l) => std::ops::Bound::Excluded(key2(repo, l)),
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let mut out = Vec::new();
        let range = t
            .range::<&str>((
                start.as_ref().map(String::as_str),
                std::ops::Bound::Unbounded,
            ))
            .map_err(db)?;
        for item in range {
            let (k, _) = item.map_err(db)?;
            let Some(tag) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            if out.len() == n {
                return Ok((out, true));
            }
            out.push(tag.to_string());
        }
        Ok((out, false))
    }

    /// Every image (manifest with its tags) of a repository.
    pub fn list_images(&self, repo: &str) -> Result<Vec<Image>> {
        let txn = self.read()?;
        let prefix = key2(repo, "");
        let manifests = txn.open_table(MANIFESTS).map_err(db)?;
        let tags = txn.open_table(TAGS).map_err(db)?;
        let mut by_digest: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in tags.range::<&str>(prefix.as_str()..).map_err(db)? {
            let (k, v) = item.map_err(db)?;
            let Some(tag) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            by_digest
                .entry(v.value().to_string())
                .or_default()
                .push(tag.to_string());
        }
        let mut out = Vec::new();
        for (digest, bytes) in scan_prefix_values(&manifests, &prefix)? {
            let manifest: ManifestRecord = dec(&bytes)?;
            let tags = by_digest.remove(&digest).unwrap_or_default();
            out.push(Image {
                digest,
                manifest,
                tags,
            });
        }
        Ok(out)
    }

    /// Manifests in `repo` whose subject is `subject`.
    pub fn referrers(&self, repo: &str, subject: &str) -> Result<Vec<(String, ManifestRecord)>> {
        let txn = self.read()?;
        let referrers = txn.open_table(REFERRERS).map_err(db)?;
        let manifests = txn.open_table(MANIFESTS).map_err(db)?;
        let mut out = Vec::new();
        for d in scan_prefix(&referrers, &key3(repo, subject, ""))? {
            if let Some(v) = manifests.get(key2(repo, &d).as_str()).map_err(db)? {
                out.push((d, dec(v.value())?));
            }
        }
        Ok(out)
    }

    /// Whether any manifest in any repository references `digest`.
    pub fn is_referenced(&self, digest: &str) -> Result<bool> {
        let t = self.read()?.open_table(REFS).map_err(db)?;
        has_prefix(&t, &key2(digest, ""))
    }

    pub fn manifest_count(&self) -> Result<u64> {
        let t = self.read()?.open_table(MANIFESTS).map_err(db)?;
        t.len().map_err(db)
    }

    // ---- uploads ------------------------------------------------------------------------------

    pub fn create_upload(&self, id: &str, rec: &UploadRecord) -> Result<()> {
        self.put_rec(UPLOADS, id, rec)
    }

    pub fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        self.get_rec(UPLOADS, id)
    }

    pub fn delete_upload(&self, id: &str) -> Result<bool> {
        self.delete_rec(UPLOADS, id)
    }

    pub fn list_uploads(&self) -> Result<Vec<(String, UploadRecord)>> {
        self.list_recs(UPLOADS)
    }

    // ---- users --------------------------------------------------------------------------------

    pub fn put_user(&self, name: &str, rec: &UserRecord) -> Result<()> {
        self.put_rec(USERS, name, rec)
    }

    pub fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.get_rec(USERS, name)
    }

    pub fn delete_user(&self, name: &str) -> Result<bool> {
        self.delete_rec(USERS, name)
    }

    pub fn list_users(&self) -> Result<Vec<(String, UserRecord)>> {
        self.list_recs(USERS)
    }

    // ---- single JSON records ------------------------------------------------------------------

    fn put_rec<T: Serialize>(&self, table: JsonTable, key: &str, rec: &T) -> Result<()> {
        let txn = self.write()?;
        {
            let mut t = txn.open_table(table).map_err(db)?;
            t.insert(key, enc(rec)?.as_slice()).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    fn get_rec<T: DeserializeOwned>(&self, table: JsonTable, key: &str) -> Result<Option<T>> {
        let t = self.read()?.open_table(table).map_err(db)?;
        match t.get(key).map_err(db)? {
            Some(v) => Ok(Some(dec(v.value())?)),
            None => Ok(None),
        }
    }

    fn delete_rec(&self, table: JsonTable, key: &str) -> Result<bool> {
        let txn = self.write()?;
        let removed = {
            let mut t = txn.open_table(table).map_err(db)?;
            let r = t.remove(key).map_err(db)?.is_some();
            r
        };
        txn.commit().map_err(db)?;
        Ok(removed)
    }

    fn list_recs<T: DeserializeOwned>(&self, table: JsonTable) -> Result<Vec<(String, T)>> {
        let t = self.read()?.open_table(table).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.push((k.value().to_string(), dec(v.value())?));
        }
        Ok(out)
    }
}

/// Tags of `repo` pointing at `digest`.
pub(crate) fn tags_of(
    tags: &impl ReadableTable<&'static str, &'static str>,
    repo: &str,
    digest: &str,
) -> Result<Vec<String>> {
    let prefix = key2(repo, "");
    let mut out = Vec::new();
    for item in tags.range::<&str>(prefix.as_str()..).map_err(db)? {
        let (k, v) = item.map_err(db)?;
        let Some(tag) = k.value().strip_prefix(prefix.as_str()) else {
            break;
        };
        if v.value() == digest {
            out.push(tag.to_string());
        }
    }
    Ok(out)
}

/// Returns the repository's record, creating it when allowed. `Ok(None)` means it was created.
pub(crate) fn ensure_repo_in(
    txn: &redb::WriteTransaction,
    repo: &str,
    create: bool,
) -> Result<Option<RepoRecord>> {
    let mut repos = txn.open_table(REPOS).map_err(db)?;
    if let Some(v) = repos.get(repo).map_err(db)? {
        return Ok(Some(dec(v.value())?));
    }
    if !create {
        return Err(MetaError::RepoNotFound(repo.to_string()));
    }
    repos
        .insert(repo, enc(&RepoRecord::new())?.as_slice())
        .map_err(db)?;
    Ok(None)
}

pub(crate) fn delete_manifest_in(
    txn: &redb::WriteTransaction,
    repo: &str,
    digest: &str,
) -> Result<Vec<String>> {
    let mut manifests = txn.open_table(MANIFESTS).map_err(db)?;
    let rec: ManifestRecord = match manifests.remove(key2(repo, digest).as_str()).map_err(db)? {
        Some(v) => dec(v.value())?,
        None => return Err(MetaError::ManifestNotFound(digest.to_string())),
    };
    let mut refs = txn.open_table(REFS).map_err(db)?;
    refs.remove(key3(digest, repo, digest).as_str())
        .map_err(db)?;
    for b in rec.blobs.iter().chain(rec.children.iter()) {
        refs.remove(key3(b, repo, digest).as_str()).map_err(db)?;
    }
    if let Some(s) = &rec.subject {
        let mut referrers = txn.open_table(REFERRERS).map_err(db)?;
        referrers
            .remove(key3(repo, s, digest).as_str())
            .map_err(db)?;
    }
    if !has_prefix(&refs, &key2(digest, ""))? {
        let mut bodies = txn.open_table(BODIES).map_err(db)?;
        bodies.remove(digest).map_err(db)?;
    }
    let mut tags = txn.open_table(TAGS).map_err(db)?;
    let removed = tags_of(&tags, repo, digest)?;
    for t in &removed {
        tags.remove(key2(repo, t).as_str()).map_err(db)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(blobs: &[&str]) -> ManifestRecord {
        ManifestRecord {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 10,
            pushed_at: now_ms(),
            artifact_type: None,
            config_media_type: None,
            subject: None,
            content_size: 0,
            blobs: blobs.iter().map(|s| s.to_string()).collect(),
            children: vec![],
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn wildcard() {
        assert!(wildcard_match("prod*", "prod-1"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(!wildcard_match("latest", "latest2"));
    }

    #[test]
    fn manifest_lifecycle_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
        // unknown blob -> refused
        let err = m.put_manifest(
            "a",
            "sha256:m1",
            &rec(&["sha256:b1"]),
            b"{}",
            Some("t"),
            true,
        );
        assert!(matches!(err, Err(MetaError::BlobUnknown(_))));
        assert!(
            m.get_repo("a").unwrap().is_none(),
            "failed push must not create the repo"
        );
        m.commit_blob("a", "sha256:b1", 5, true).unwrap();
        m.put_manifest(
            "a",
            "sha256:m1",
            &rec(&["sha256:b1"]),
            b"{}",
            Some("t"),
            true,
        )
        .unwrap();
        assert_eq!(
            m.resolve_tag("a", "t").unwrap().as_deref(),
            Some("sha256:m1")
        );
        assert!(m.is_referenced("sha256:b1").unwrap());
        // referenced blob survives a sweep with a cutoff in the future
        let s = m.sweep_blobs(u64::MAX, |_| None, false).unwrap();
        assert!(s.digests.is_empty());
        let removed = m.delete_manifest("a", "sha256:m1").unwrap();
        assert_eq!(removed, vec!["t".to_string()]);
        assert!(m.get_manifest("a", "sha256:m1").unwrap().is_none());
        // touched recently -> kept
        let s = m
            .sweep_blobs(now_ms(), |_| Some(u64::MAX - 1), false)
            .unwrap();
        assert!(s.digests.is_empty());
        let s = m.sweep_blobs(u64::MAX, |_| None, false).unwrap();
        assert_eq!(s.digests, vec!["sha256:b1".to_string()]);
        assert!(m.repo_blob("a", "sha256:b1").unwrap().is_none());
    }

    #[test]
    fn immutable_tags_and_pagination() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
        m.create_repo("r", &RepoRecord::new()).unwrap();
        m.update_repo("r", |r| {
            r.tag_mutability = TagMutability::ImmutableWithExclusion;
            r.mutability_exclusions = vec!["latest".into()];
            Ok(())
        })
        .unwrap();
        for (d, t) in [
            ("sha256:1", "v1"),
            ("sha256:2", "latest"),
            ("sha256:3", "latest"),
        ] {
            m.put_manifest("r", d, &rec(&[]), b"{}", Some(t), false)
                .unwrap();
        }
        let err = m.put_manifest("r", "sha256:4", &rec(&[]), b"{}", Some("v1"), false);
        assert!(matches!(err, Err(MetaError::TagImmutable { .. })));
        // same digest again is fine
        m.put_manifest("r", "sha256:1", &rec(&[]), b"{}", Some("v1"), false)
            .unwrap();
        let (tags, more) = m.list_tags("r", None, 1).unwrap();
        assert_eq!(tags, vec!["latest".to_string()]);
        assert!(more);
        let (tags, more) = m.list_tags("r", Some("latest"), 5).unwrap();
        assert_eq!(tags, vec!["v1".to_string()]);
        assert!(!more);
        assert!(matches!(
            m.delete_repo("r", false),
            Err(MetaError::RepoNotEmpty(_))
        ));
        let (_, n) = m.delete_repo("r", true).unwrap();
        assert_eq!(n, 3);
        assert!(m.list_tags("r", None, 10).unwrap().0.is_empty());
    }

    #[test]
    fn index_children_cannot_be_deleted_under_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
        m.put_manifest("r", "sha256:child", &rec(&[]), b"{}", None, true)
            .unwrap();
        let mut index = rec(&[]);
        index.children = vec!["sha256:child".into()];
        m.put_manifest("r", "sha256:index", &index, b"{}", Some("multi"), true)
            .unwrap();
        assert!(matches!(
            m.delete_manifest("r", "sha256:child"),
            Err(MetaError::ManifestReferenced { .. })
        ));
        assert!(m.get_manifest("r", "sha256:child").unwrap().is_some());
        m.delete_manifest("r", "sha256:index").unwrap();
        m.delete_manifest("r", "sha256:child").unwrap();
        assert!(m.get_manifest("r", "sha256:child").unwrap().is_none());
    }
}
