//! Crash safety: `kill -9` of `berth registry` in the middle of 20 concurrent pushes, then a
//! restart on the same data directory. Every push that got its 201 must be intact, nothing
//! half-written may be visible, the server must keep serving, and GC must keep intact images.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use rand::Rng;

const PUSHES: usize = 20;
const KILL_AFTER: usize = PUSHES / 2;
const MIB: usize = 1 << 20;

fn random_image(repo: &str, tag: &str) -> HttpImage {
    let n = rand::thread_rng().gen_range(2..=4);
    HttpImage::random(repo, tag, n, MIB..4 * MIB + 1)
}

/// What a GET of an incomplete push's tag may show: nothing (404 MANIFEST_UNKNOWN, or
/// NAME_UNKNOWN when not even the repository was created), or the whole image.
async fn check_incomplete(
    c: &reqwest::Client,
    base: &str,
    img: &HttpImage,
) -> Result<&'static str, String> {
    let url = format!("{base}/v2/{}/manifests/{}", img.repo, img.tag);
    let (status, _, body) = get(c, &url, Some(ACCEPT_ALL))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let state = match status {
        404 => {
            let code = error_code(&body);
            if code != "MANIFEST_UNKNOWN" && code != "NAME_UNKNOWN" {
                return Err(format!(
                    "GET {url}: 404 with code {code:?}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            "absent"
        }
        200 => {
            verify_http(c, base, img, &img.tag, Some(&img.manifest_digest())).await?;
            "complete"
        }
        s => return Err(format!("GET {url}: {s} {}", String::from_utf8_lossy(&body))),
    };
    // The tag list agrees with the manifest.
    let url = format!("{base}/v2/{}/tags/list", img.repo);
    let (status, _, body) = get(c, &url, None)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let tags = match status {
        200 => serde_json::from_slice::<serde_json::Value>(&body)
            .map_err(|e| format!("GET {url}: {e}"))?["tags"]
            .clone(),
        404 => serde_json::json!([]),
        s => return Err(format!("GET {url}: {s}")),
    };
    let listed = tags
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == img.tag.as_str()));
    if listed != (state == "complete") {
        return Err(format!(
            "GET {url}: tags {tags} but the manifest is {state}"
        ));
    }
    // Each blob is either unknown or whole.
    for b in img.blobs() {
        let d = sha256_digest(b);
        let url = format!("{base}/v2/{}/blobs/{d}", img.repo);
        let (status, _, body) = get(c, &url, None)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        match status {
            404 => {}
            200 if body == *b => {}
            200 => {
                return Err(format!(
                    "GET {url}: half-written blob visible ({} of {} bytes)",
                    body.len(),
                    b.len()
                ))
            }
            s => return Err(format!("GET {url}: {s}")),
        }
    }
    Ok(state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_concurrent_pushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // No scheduled GC: only the explicit one below.
    let mut srv = Server::registry(&data, &["--gc-interval", "0"]);
    let images: Vec<HttpImage> = (0..PUSHES)
        .map(|i| random_image(&format!("crash/img{i}"), "v1"))
        .collect();
    let total: usize = images.iter().flat_map(HttpImage::blobs).map(Vec::len).sum();
    eprintln!("pushing {PUSHES} images, {} MiB in all", total / MIB);

    let done = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::watch::channel(0usize);
    let tx = Arc::new(tx);
    let results: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(vec![None; PUSHES]));
    let mut tasks = Vec::new();
    for (i, img) in images.iter().cloned().enumerate() {
        let (base, done, tx, results) =
            (srv.url.clone(), done.clone(), tx.clone(), results.clone());
        tasks.push(tokio::spawn(async move {
            let c = http_client();
            match push_http(&c, &base, &img, false).await {
                Ok(digest) => {
                    results.lock().expect("lock")[i] = Some(digest);
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    let _ = tx.send(n);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }));
    }
    drop(tx);

    // Kill as soon as half the pushes have their 201.
    // (`wait_for` returns a guard holding the watch's read lock; drop it at once, or the
    // pushers' `send` blocks on it.)
    let reached = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        rx.wait_for(|n| *n >= KILL_AFTER),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(
        reached,
        "only {} pushes completed before the deadline",
        done.load(Ordering::SeqCst)
    );
    srv.kill9();
    let at_kill = done.load(Ordering::SeqCst);

    let mut failed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Err(e) = t.await.expect("push task") {
            failed.push((i, e.to_string()));
        }
    }
    let results = results.lock().expect("lock").clone();
    let completed: Vec<usize> = (0..PUSHES).filter(|i| results[*i].is_some()).collect();
    eprintln!(
        "killed with {at_kill} manifests acknowledged; {} acknowledged in all, {} cut off",
        completed.len(),
        failed.len()
    );
    for (i, e) in &failed {
        eprintln!(
            "  push {i} cut off: {}",
            e.chars().take(160).collect::<String>()
        );
    }
    for (i, e) in &failed {
        assert!(
            e.starts_with("transport"),
            "push {i} failed with a registry error before the kill: {e}"
        );
    }

    // Restart on the same data directory.
    let srv = Server::registry(&data, &["--gc-interval", "0"]);
    let c = http_client();
    for &i in &completed {
        let img = &images[i];
        let digest = results[i].as_deref().expect("digest");
        assert_eq!(
            digest,
            img.manifest_digest(),
            "push {i}: 201 with the wrong Docker-Content-Digest"
        );
        if let Err(e) = verify_http(&c, &srv.url, img, "v1", Some(digest)).await {
            panic!("push {i} was acknowledged (201) but is not intact after kill -9: {e}");
        }
        verify_http(&c, &srv.url, img, digest, Some(digest))
            .await
            .expect("by digest");
    }
    let mut intact_incomplete = Vec::new();
    for (i, _) in &failed {
        match check_incomplete(&c, &srv.url, &images[*i]).await {
            Ok("complete") => intact_incomplete.push(*i),
            Ok(_) => {}
            Err(e) => panic!("push {i} (cut off by the kill) left something half-written: {e}"),
        }
    }
    eprintln!(
        "{} cut-off pushes turned out complete, {} absent",
        intact_incomplete.len(),
        failed.len() - intact_incomplete.len()
    );

    // The server keeps serving pushes, including into the repositories of cut-off pushes.
    let mut fresh = Vec::new();
    for (n, (i, _)) in failed.iter().take(2).enumerate() {
        fresh.push(random_image(&images[*i].repo, &format!("after{n}")));
    }
    fresh.push(random_image("crash/fresh", "v1"));
    for img in &fresh {
        let d = push_http(&c, &srv.url, img, true)
            .await
            .unwrap_or_else(|e| panic!("push after restart: {e}"));
        assert_eq!(d, img.manifest_digest());
        verify_http(&c, &srv.url, img, &img.tag, Some(&d))
            .await
            .expect("fresh push intact");
    }
    // Retrying a cut-off push completes it.
    if let Some((i, _)) = failed.first() {
        let img = &images[*i];
        let d = push_http(&c, &srv.url, img, true)
            .await
            .unwrap_or_else(|e| panic!("retrying push {i}: {e}"));
        verify_http(&c, &srv.url, img, "v1", Some(&d))
            .await
            .expect("retried push intact");
        intact_incomplete.push(*i);
    }

    // GC with no grace keeps every intact image, and removes the leftovers of cut-off pushes.
    let report = gc(&srv, 0);
    eprintln!("gc after restart: {}", summary(&report));
    let intact: Vec<&HttpImage> = completed
        .iter()
        .chain(intact_incomplete.iter())
        .map(|i| &images[*i])
        .chain(fresh.iter())
        .collect();
    for img in &intact {
        if let Err(e) = verify_http(&c, &srv.url, img, &img.tag, Some(&img.manifest_digest())).await
        {
            panic!(
                "gc --grace 0 after the crash damaged {}:{}: {e}",
                img.repo, img.tag
            );
        }
    }
    let kept: std::collections::HashSet<String> = intact
        .iter()
        .flat_map(|i| i.blobs())
        .map(|b| sha256_digest(b))
        .collect();
    for (i, _) in &failed {
        let img = &images[*i];
        if intact_incomplete.contains(i) {
            continue;
        }
        for b in img.blobs() {
            let d = sha256_digest(b);
            if kept.contains(&d) {
                continue;
            }
            let (status, _, _) = get(&c, &format!("{}/v2/{}/blobs/{d}", srv.url, img.repo), None)
                .await
                .expect("GET blob");
            assert_eq!(
                status, 404,
                "unreferenced blob {d} of cut-off push {i} survived gc --grace 0"
            );
        }
    }
}

/// An upload session survives `kill -9`: after the restart the client asks where it is,
/// continues from there, and the blob is exactly what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_session_resumes_after_kill9() {
    use rand::RngCore;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut srv = Server::registry(&data, &["--gc-interval", "0"]);
    let c = http_client();
    let mut blob = vec![0u8; 3 * MIB + 4321];
    rand::thread_rng().fill_bytes(&mut blob);
    let digest = sha256_digest(&blob);
    let first = 2 * MIB;

    let r = c
        .post(format!("{}/v2/resume/app/blobs/uploads/", srv.url))
        .basic_auth(AKID, Some(SECRET))
        .header("content-length", "0")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 202);
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_string();
    // The path part: the restarted server listens on another port.
    let path = match loc.find("/v2/") {
        Some(i) => loc[i..].to_string(),
        None => panic!("Location {loc:?}"),
    };
    let r = c
        .patch(format!("{}{path}", srv.url))
        .basic_auth(AKID, Some(SECRET))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", first - 1))
        .body(blob[..first].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(
        r.headers().get("range").and_then(|v| v.to_str().ok()),
        Some(format!("0-{}", first - 1).as_str())
    );

    srv.kill9();
    let srv = Server::registry(&data, &["--gc-interval", "0"]);

    let url = |p: &str| format!("{}{p}", srv.url);
    let r = c
        .get(url(&path))
        .basic_auth(AKID, Some(SECRET))
        .send()
        .await
        .expect("GET upload status");
    assert_eq!(r.status().as_u16(), 204, "upload session lost by kill -9");
    assert_eq!(
        r.headers().get("range").and_then(|v| v.to_str().ok()),
        Some(format!("0-{}", first - 1).as_str()),
        "upload offset after restart"
    );
    // Out of order is refused and changes nothing.
    let r = c
        .patch(url(&path))
        .basic_auth(AKID, Some(SECRET))
        .header("content-range", format!("{}-{}", first + 10, first + 19))
        .body(vec![0u8; 10])
        .send()
        .await
        .expect("PATCH out of order");
    assert_eq!(r.status().as_u16(), 416);
    let r = c
        .patch(url(&path))
        .basic_auth(AKID, Some(SECRET))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{first}-{}", blob.len() - 1))
        .body(blob[first..].to_vec())
        .send()
        .await
        .expect("PATCH rest");
    assert_eq!(r.status().as_u16(), 202);
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = c
        .put(url(&format!("{path}{sep}digest={digest}")))
        .basic_auth(AKID, Some(SECRET))
        .header("content-length", "0")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    let (status, _, body) = get(&c, &url(&format!("/v2/resume/app/blobs/{digest}")), None)
        .await
        .expect("GET blob");
    assert_eq!(status, 200);
    assert!(body == blob, "resumed blob differs");
}
