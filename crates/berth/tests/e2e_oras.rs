//! End to end with the oras Python SDK (oras-py): artifacts with files, artifactType and
//! annotations; referrers (`subject`) and the referrers API with its artifactType filter.

mod common;

use common::*;
use serde_json::Value;

/// Runs tests/e2e/oras_artifacts.py against `srv` with the given oras-py auth backends (for
/// pushes and for pulls) and returns its JSON summary (the last stdout line).
fn run_script(
    py: &std::path::Path,
    srv: &Server,
    dir: &std::path::Path,
    repo: &str,
    push_auth: &str,
    pull_auth: &str,
) -> Value {
    let work = dir.join(format!("oras-{push_auth}-{pull_auth}"));
    std::fs::create_dir_all(&work).expect("workdir");
    let mut cmd = std::process::Command::new(py);
    cmd.arg(e2e_script("oras_artifacts.py"))
        .args([
            "--registry",
            &srv.addr,
            "--user",
            AKID,
            "--password",
            SECRET,
            "--repo",
            repo,
        ])
        .args(["--push-auth", push_auth, "--pull-auth", pull_auth])
        .arg("--workdir")
        .arg(&work)
        // No ~/.docker/config.json of the host.
        .env("HOME", &work)
        .env("DOCKER_CONFIG", work.join(".docker"));
    let out = run_ok(&mut cmd);
    let last = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from the script:\n{out}"));
    json(last)
}

async fn referrers(
    c: &reqwest::Client,
    srv: &Server,
    repo: &str,
    digest: &str,
    filter: Option<&str>,
) -> (reqwest::header::HeaderMap, Value) {
    let mut url = format!("{}/v2/{repo}/referrers/{digest}", srv.url);
    if let Some(f) = filter {
        url.push_str(&format!("?artifactType={f}"));
    }
    let (status, headers, body) = get(c, &url, None).await.expect("GET referrers");
    assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/vnd.oci.image.index.v1+json"),
        "GET {url}"
    );
    let v: Value = serde_json::from_slice(&body).expect("referrers JSON");
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    (headers, v)
}

fn digests(index: &Value) -> Vec<String> {
    let mut d: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["digest"].as_str().expect("digest").to_string())
        .collect();
    d.sort();
    d
}

fn check_referrers(srv: &Server, repo: &str, r: &Value) {
    let subject = r["subject"].as_str().expect("subject");
    let sbom = r["sbom"].as_str().expect("sbom");
    let sig = r["sig"].as_str().expect("sig");
    let c = http_client();
    block_on(async {
        // Everything that refers to the artifact.
        let (_, all) = referrers(&c, srv, repo, subject, None).await;
        let mut want = vec![sbom.to_string(), sig.to_string()];
        want.sort();
        assert_eq!(digests(&all), want, "referrers of {subject}: {all}");
        for m in all["manifests"].as_array().expect("manifests") {
            assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
            assert!(m["size"].as_u64().is_some_and(|s| s > 0));
            if m["digest"] == sbom {
                assert_eq!(m["artifactType"], r["sbom_type"]);
                assert_eq!(m["annotations"]["com.example.referrer"], "sbom");
            } else {
                // No artifactType in the manifest: the config's media type stands in.
                assert_eq!(m["artifactType"], r["sig_type"]);
            }
        }

        // Filtered by artifactType.
        let sbom_type = r["sbom_type"].as_str().expect("type");
        let (h, only) = referrers(&c, srv, repo, subject, Some(sbom_type)).await;
        assert_eq!(
            digests(&only),
            vec![sbom.to_string()],
            "filtered referrers: {only}"
        );
        assert_eq!(
            h.get("oci-filters-applied").and_then(|v| v.to_str().ok()),
            Some("artifactType"),
            "OCI-Filters-Applied missing on a filtered referrers response"
        );
        let (_, none) = referrers(&c, srv, repo, subject, Some("application/x-nothing")).await;
        assert!(digests(&none).is_empty(), "{none}");

        // The referrers themselves and unknown digests have no referrers (200, empty index).
        let (_, empty) = referrers(&c, srv, repo, sbom, None).await;
        assert!(digests(&empty).is_empty(), "{empty}");
        let unknown = format!("sha256:{}", "0".repeat(64));
        let (_, empty) = referrers(&c, srv, repo, &unknown, None).await;
        assert!(digests(&empty).is_empty(), "{empty}");

        // Deleting a referrer removes it from the index.
        let resp = c
            .delete(format!("{}/v2/{repo}/manifests/{sig}", srv.url))
            .basic_auth(AKID, Some(SECRET))
            .send()
            .await
            .expect("DELETE");
        assert_eq!(resp.status().as_u16(), 202);
        let (_, after) = referrers(&c, srv, repo, subject, None).await;
        assert_eq!(
            digests(&after),
            vec![sbom.to_string()],
            "after deleting {sig}: {after}"
        );
    });
}

/// Pushes with oras-py's basic backend, pulls through its token backend (Docker token flow).
#[test]
fn oras_artifacts_and_referrers() {
    let py = need!(python(&["oras.client"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::registry(&dir.path().join("data"), &[]);
    let r = run_script(&py, &srv, dir.path(), "artifacts/demo", "basic", "token");
    check_referrers(&srv, "artifacts/demo", &r);
}

/// Everything with the basic backend, into a second repository of another server.
#[test]
fn oras_basic_auth_only() {
    let py = need!(python(&["oras.client"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::registry(&dir.path().join("data"), &[]);
    let r = run_script(&py, &srv, dir.path(), "artifacts/basic", "basic", "basic");
    check_referrers(&srv, "artifacts/basic", &r);
}
