//! Online garbage collection.
//!
//! Safe while pushes continue because the decision and the push both go through the metadata
//! store's serialized write transactions:
//! - a manifest PUT checks, inside its transaction, that every blob it references has a
//!   record, and adds reference rows for them;
//! - GC deletes, inside one transaction, only blob records that have no reference rows and
//!   that nobody created or learnt about (HEAD, mount, upload) within the grace period.
//!
//! So either the manifest commits first (GC then sees its references and keeps the blob) or
//! GC commits first (the PUT then fails with MANIFEST_BLOB_UNKNOWN and the client re-uploads):
//! a committed manifest never points at a deleted blob. Files are deleted after the records,
//! under the exclusive finalize lock, so a blob being re-uploaded at that moment keeps its
//! file. Files without records (crash between rename and commit) and stale upload sessions
//! are swept after the grace period too.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::meta::now_ms;
use crate::{Registry, Result};

#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    pub grace: Duration,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub blobs_deleted: Vec<String>,
    pub bytes_freed: u64,
    pub links_removed: u64,
    pub orphan_files_removed: u64,
    pub stale_uploads_removed: u64,
    pub duration_ms: u64,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Registry {
    /// Runs one garbage collection pass.
    pub async fn gc(self: &Arc<Self>, opts: GcOptions) -> Result<GcReport> {
        let started = std::time::Instant::now();
        let cutoff = now_ms().saturating_sub(opts.grace.as_millis() as u64);
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        {
            let _exclusive = self.finalize.write().await;
            let this = self.clone();
            let swept = tokio::task::spawn_blocking(move || {
                let swept = this
                    .meta
                    .sweep_blobs(cutoff, |d| this.last_touch(d), opts.dry_run)?;
                let mut orphans = 0u64;
                if !opts.dry_run {
                    for d in &swept.digests {
                        if let Ok(d) = d.parse() {
                            this.store.remove_blob(&d)?;
                        }
                    }
                    // Files whose record never committed (crash between rename and commit).
                    let known = this.meta.blob_digests()?;
                    for (d, mtime) in this.store.list_blob_files()? {
                        if ms(mtime) < cutoff && !known.contains(d.as_str()) {
                            this.store.remove_blob(&d)?;
                            orphans += 1;
                        }
                    }
                }
                Ok::<_, crate::Error>((swept, orphans))
            })
            .await??;
            report.blobs_deleted = swept.0.digests;
            report.bytes_freed = swept.0.bytes;
            report.links_removed = swept.0.links_removed;
            report.orphan_files_removed = swept.1;
        }
        self.forget_touches_before(cutoff);
        if !opts.dry_run {
            report.stale_uploads_removed = self.sweep_uploads(cutoff).await?;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            blobs = report.blobs_deleted.len(),
            bytes = report.bytes_freed,
            orphans = report.orphan_files_removed,
            uploads = report.stale_uploads_removed,
            dry_run = opts.dry_run,
            "garbage collection finished"
        );
        Ok(report)
    }

    /// Removes upload sessions idle past the upload TTL, and upload files with no session
    /// (monolithic uploads cut off by a crash) older than `cutoff`.
    async fn sweep_uploads(self: &Arc<Self>, cutoff: u64) -> Result<u64> {
        let ttl_cutoff = now_ms().saturating_sub(self.cfg.upload_ttl.as_millis() as u64);
        let this = self.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let sessions = this.meta.list_uploads()?;
            let files = this.store.list_upload_files()?;
            let mut removed = 0u64;
            for (name, mtime) in &files {
                let recorded = sessions.iter().any(|(id, _)| id == name);
                let idle_since = ms(*mtime);
                let stale = if recorded {
                    idle_since < ttl_cutoff && this.uploads.expire(name)
                } else {
                    // Monolithic uploads in progress are live (reserved) but unrecorded.
                    idle_since < cutoff && !this.uploads.is_live(name)
                };
                if stale {
                    this.store.remove_upload(name)?;
                    this.meta.delete_upload(name)?;
                    removed += 1;
                }
            }
            // Sessions whose file is gone (finished before a crash) are dead too.
            for (id, _) in sessions {
                if !files.iter().any(|(n, _)| *n == id) {
                    this.meta.delete_upload(&id)?;
                }
            }
            Ok::<_, crate::Error>(removed)
        })
        .await??;
        Ok(removed)
    }

    /// Runs GC every `interval` until the process ends.
    pub fn spawn_gc_schedule(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let opts = GcOptions {
                    grace: this.cfg.gc_grace,
                    dry_run: false,
                };
                if let Err(e) = this.gc(opts).await {
                    tracing::error!(error = %crate::error::error_chain(&e), "scheduled garbage collection failed");
                }
            }
        })
    }
}
