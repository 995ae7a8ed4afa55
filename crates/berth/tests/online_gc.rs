//! Online garbage collection while pushes continue: `berth registry --gc-grace 0`, pushers
//! looping over HTTP while `berth registry gc --grace 0` runs again and again. Every manifest
//! that got its 201 must stay fully pullable. A push may get MANIFEST_BLOB_UNKNOWN (GC took an
//! unreferenced blob first) and retry; those are counted.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use rand::Rng;

const PUSHERS: usize = 3;
const IMAGES_PER_PUSHER: usize = 40;
const MAX_ATTEMPTS: usize = 50;
const KIB: usize = 1 << 10;

#[derive(Default)]
struct Stats {
    blob_unknown_retries: AtomicUsize,
    deleted: AtomicUsize,
    gc_runs: AtomicUsize,
    gc_blobs_deleted: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_while_pushing_keeps_every_acknowledged_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::registry(
        &dir.path().join("data"),
        &["--gc-grace", "0", "--gc-interval", "0"],
    );
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));

    // A base layer shared by every image (pushers HEAD it and skip the upload, as clients do).
    let base_layer = HttpImage::random("unused", "unused", 1, 512 * KIB..512 * KIB + 1)
        .layers
        .remove(0);

    // GC in a loop, through the CLI. Back to back, with grace 0, GC takes every freshly
    // uploaded blob before its manifest arrives and no push ever completes; a random pause of
    // up to 40 ms between runs leaves pushes a chance while still racing them constantly.
    let gc_task = {
        let (stop, stats, admin) = (stop.clone(), stats.clone(), GcRunner::new(&srv));
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::SeqCst) {
                let report = admin.run();
                stats.gc_runs.fetch_add(1, Ordering::SeqCst);
                let n = report["blobs_deleted"].as_array().map_or(0, Vec::len);
                stats.gc_blobs_deleted.fetch_add(n, Ordering::SeqCst);
                let pause = rand::thread_rng().gen_range(0..40);
                std::thread::sleep(std::time::Duration::from_millis(pause));
            }
        })
    };

    let acknowledged: Arc<Mutex<Vec<(HttpImage, String)>>> = Arc::default();
    let mut pushers = Vec::new();
    for p in 0..PUSHERS {
        let (base, stats, acknowledged, base_layer) = (
            srv.url.clone(),
            stats.clone(),
            acknowledged.clone(),
            base_layer.clone(),
        );
        pushers.push(tokio::spawn(async move {
            let c = http_client();
            for k in 0..IMAGES_PER_PUSHER {
                let size = rand::thread_rng().gen_range(64 * KIB..512 * KIB);
                let mut img =
                    HttpImage::random(&format!("gc/p{p}"), &format!("i{k}"), 1, size..size + 1);
                img.layers.insert(0, base_layer.clone());
                let mut attempt = 0;
                let digest = loop {
                    attempt += 1;
                    match push_http(&c, &base, &img, true).await {
                        Ok(d) => break d,
                        Err(PushError::Status { code, .. })
                            if code == "MANIFEST_BLOB_UNKNOWN" && attempt < MAX_ATTEMPTS =>
                        {
                            stats.blob_unknown_retries.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => panic!("push gc/p{p}:i{k} (attempt {attempt}): {e}"),
                    }
                };
                assert_eq!(digest, img.manifest_digest());
                // Every third image is deleted again, so GC has garbage to collect.
                if k % 3 == 2 {
                    let r = c
                        .delete(format!("{base}/v2/{}/manifests/{digest}", img.repo))
                        .basic_auth(AKID, Some(SECRET))
                        .send()
                        .await
                        .expect("DELETE manifest");
                    assert_eq!(r.status().as_u16(), 202, "DELETE manifest");
                    stats.deleted.fetch_add(1, Ordering::SeqCst);
                } else {
                    acknowledged.lock().expect("lock").push((img, digest));
                }
            }
        }));
    }
    for p in pushers {
        p.await.expect("pusher");
    }
    stop.store(true, Ordering::SeqCst);
    gc_task.await.expect("gc loop");

    let acknowledged = acknowledged.lock().expect("lock").clone();
    eprintln!(
        "{} images kept, {} deleted; {} gc runs deleted {} blobs; {} pushes retried after MANIFEST_BLOB_UNKNOWN",
        acknowledged.len(),
        stats.deleted.load(Ordering::SeqCst),
        stats.gc_runs.load(Ordering::SeqCst),
        stats.gc_blobs_deleted.load(Ordering::SeqCst),
        stats.blob_unknown_retries.load(Ordering::SeqCst),
    );
    assert!(
        stats.gc_runs.load(Ordering::SeqCst) >= 3,
        "GC ran too few times to mean anything"
    );

    let c = http_client();
    let verify_all = |when: &'static str| {
        let (c, base, acknowledged) = (c.clone(), srv.url.clone(), acknowledged.clone());
        async move {
            for (img, digest) in &acknowledged {
                for reference in [img.tag.as_str(), digest.as_str()] {
                    if let Err(e) = verify_http(&c, &base, img, reference, Some(digest)).await {
                        panic!(
                            "{when}: {}:{} got 201 but is not fully pullable: {e}",
                            img.repo, img.tag
                        );
                    }
                }
            }
        }
    };
    verify_all("after the push/gc race").await;

    // One more collection with nothing running: still intact, and the garbage is gone.
    let report = gc(&srv, 0);
    eprintln!("final gc: {}", summary(&report));
    verify_all("after the final gc").await;
    assert!(
        stats.gc_blobs_deleted.load(Ordering::SeqCst)
            + report["blobs_deleted"].as_array().map_or(0, Vec::len)
            > 0,
        "GC never deleted anything although manifests were deleted"
    );
    let report = gc(&srv, 0);
    assert_eq!(
        report["blobs_deleted"].as_array().map(Vec::len),
        Some(0),
        "a second gc found more: {report}"
    );
}

/// Runs `berth registry gc --grace 0` (a blocking process call) against one server.
struct GcRunner {
    url: String,
    data: std::path::PathBuf,
}

impl GcRunner {
    fn new(s: &Server) -> GcRunner {
        GcRunner {
            url: s.url.clone(),
            data: s.data.clone(),
        }
    }

    fn run(&self) -> serde_json::Value {
        let mut cmd = std::process::Command::new(berth_bin());
        cmd.args(["registry", "gc", "--grace", "0", "--server", &self.url])
            .arg("--data")
            .arg(&self.data)
            .env("BERTH_ACCESS_KEY_ID", AKID)
            .env("BERTH_SECRET_ACCESS_KEY", SECRET);
        json(&run_ok(&mut cmd))
    }
}
