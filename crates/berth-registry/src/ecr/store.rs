//! Store queries the ECR API needs beyond the registry's own, each in one transaction so a
//! concurrent push can never interleave with the check that precedes a deletion.

use redb::ReadableTable;

use crate::meta::{
    db, delete_manifest_in, key2, key3, scan_prefix, tags_of, ManifestRecord, Meta, MetaError,
    Result, BLOBS, LINKS, MANIFESTS, REFS, REPOS, TAGS,
};

/// One validated entry of a BatchDeleteImage request.
#[derive(Debug, Clone)]
pub(crate) enum DeleteTarget {
    /// Delete the image and every tag pointing at it.
    Digest(String),
    /// Remove the tag (which must point at the digest, if given); the image goes with its
    /// last tag.
    Tag { tag: String, digest: Option<String> },
}

/// What happened to one [`DeleteTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeleteOutcome {
    /// The image (or tag) is gone; `tags` are the tags that were removed.
    Removed {
        digest: String,
        tags: Vec<String>,
    },
    NotFound,
    TagDoesNotMatchDigest,
    /// Manifest lists in the repository still reference the image.
    ReferencedByManifestList(Vec<String>),
}

/// Manifests of `repo` other than `digest` itself that reference `digest` (index children).
fn referencing(
    refs: &impl ReadableTable<&'static str, ()>,
    repo: &str,
    digest: &str,
) -> Result<Vec<String>> {
    Ok(scan_prefix(refs, &key3(digest, repo, ""))?
        .into_iter()
        .filter(|d| d != digest)
        .collect())
}

fn repo_exists(txn: &redb::WriteTransaction, repo: &str) -> Result<()> {
    let repos = txn.open_table(REPOS).map_err(db)?;
    if repos.get(repo).map_err(db)?.is_none() {
        return Err(MetaError::RepoNotFound(repo.to_string()));
    }
    Ok(())
}

fn delete_one(
    txn: &redb::WriteTransaction,
    repo: &str,
    target: &DeleteTarget,
) -> Result<DeleteOutcome> {
    match target {
        DeleteTarget::Digest(digest) => {
            let exists = {
                let manifests = txn.open_table(MANIFESTS).map_err(db)?;
                let found = manifests
                    .get(key2(repo, digest).as_str())
                    .map_err(db)?
                    .is_some();
                found
            };
            if !exists {
                return Ok(DeleteOutcome::NotFound);
            }
            let parents = {
                let refs = txn.open_table(REFS).map_err(db)?;
                referencing(&refs, repo, digest)?
            };
            if !parents.is_empty() {
                return Ok(DeleteOutcome::ReferencedByManifestList(parents));
            }
            let tags = delete_manifest_in(txn, repo, digest)?;
            Ok(DeleteOutcome::Removed {
                digest: digest.clone(),
                tags,
            })
        }
        DeleteTarget::Tag { tag, digest } => {
            let target = {
                let tags = txn.open_table(TAGS).map_err(db)?;
                let t = tags
                    .get(key2(repo, tag).as_str())
                    .map_err(db)?
                    .map(|v| v.value().to_string());
                t
            };
            let Some(target) = target else {
                return Ok(DeleteOutcome::NotFound);
            };
            if digest.as_ref().is_some_and(|d| *d != target) {
                return Ok(DeleteOutcome::TagDoesNotMatchDigest);
            }
            let remaining = {
                let mut tags = txn.open_table(TAGS).map_err(db)?;
                tags.remove(key2(repo, tag).as_str()).map_err(db)?;
                tags_of(&tags, repo, &target)?
            };
            if remaining.is_empty() {
                let parents = {
                    let refs = txn.open_table(REFS).map_err(db)?;
                    referencing(&refs, repo, &target)?
                };
                // An image a manifest list needs stays, untagged, until the list goes.
                if parents.is_empty() {
                    match delete_manifest_in(txn, repo, &target) {
                        Ok(_) | Err(MetaError::ManifestNotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(DeleteOutcome::Removed {
                digest: target,
                tags: vec![tag.clone()],
            })
        }
    }
}

impl Meta {
    /// BatchDeleteImage: applies every target in order, in one transaction.
    pub(crate) fn ecr_batch_delete(
        &self,
        repo: &str,
        targets: &[DeleteTarget],
    ) -> Result<Vec<DeleteOutcome>> {
        let txn = self.write()?;
        repo_exists(&txn, repo)?;
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            out.push(delete_one(&txn, repo, t)?);
        }
        txn.commit().map_err(db)?;
        Ok(out)
    }

    /// Deletes an image a lifecycle policy expired, if it still has the push time and tags it
    /// was evaluated with and no manifest list references it. True if it was deleted.
    pub(crate) fn ecr_delete_if_unchanged(
        &self,
        repo: &str,
        digest: &str,
        pushed_at: u64,
        tags: &[String],
    ) -> Result<bool> {
        let txn = self.write()?;
        let unchanged = {
            let manifests = txn.open_table(MANIFESTS).map_err(db)?;
            let rec: Option<ManifestRecord> =
                match manifests.get(key2(repo, digest).as_str()).map_err(db)? {
                    Some(v) => Some(crate::meta::dec(v.value())?),
                    None => None,
                };
            match rec {
                Some(r) if r.pushed_at == pushed_at => {
                    let tag_table = txn.open_table(TAGS).map_err(db)?;
                    let mut now = tags_of(&tag_table, repo, digest)?;
                    let mut then = tags.to_vec();
                    now.sort();
                    then.sort();
                    let refs = txn.open_table(REFS).map_err(db)?;
                    now == then && referencing(&refs, repo, digest)?.is_empty()
                }
                _ => false,
            }
        };
        if !unchanged {
            txn.abort().map_err(db)?;
            return Ok(false);
        }
        delete_manifest_in(&txn, repo, digest)?;
        txn.commit().map_err(db)?;
        Ok(true)
    }

    /// Of the blobs and child manifests a manifest references, those `repo` lacks.
    pub(crate) fn ecr_missing_references(
        &self,
        repo: &str,
        blobs: &[String],
        children: &[String],
    ) -> Result<(Vec<String>, Vec<String>)> {
        let txn = self.read()?;
        let links = txn.open_table(LINKS).map_err(db)?;
        let blob_table = txn.open_table(BLOBS).map_err(db)?;
        let manifests = txn.open_table(MANIFESTS).map_err(db)?;
        let mut missing_blobs = Vec::new();
        for b in blobs {
            if links.get(key2(repo, b).as_str()).map_err(db)?.is_none()
                || blob_table.get(b.as_str()).map_err(db)?.is_none()
            {
                missing_blobs.push(b.clone());
            }
        }
        let mut missing_children = Vec::new();
        for c in children {
            if manifests.get(key2(repo, c).as_str()).map_err(db)?.is_none() {
                missing_children.push(c.clone());
            }
        }
        Ok((missing_blobs, missing_children))
    }
}
