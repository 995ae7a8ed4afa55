//! End to end with the real, unmodified skopeo: pushes and pulls of locally built images
//! (OCI and Docker schema2, single and multi-platform), inspect/list-tags/delete, cross-repo
//! copies, credentials (account key, users, anonymous, public repos) and ECR token login.

mod common;

use std::path::{Path, PathBuf};

use common::*;

struct Env {
    dir: tempfile::TempDir,
    srv: Server,
    sk: Skopeo,
    py: PathBuf,
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn oci(&self, layout: &Path, tag: &str) -> String {
        format!("oci:{}:{tag}", layout.display())
    }
}

/// Tempdir + registry + skopeo + python, or None (test skipped) when a client is missing.
fn setup() -> Option<Env> {
    let sk = skopeo()?;
    let py = python(&[])?;
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::registry(&dir.path().join("data"), &[]);
    let sk = Skopeo::new(sk, dir.path());
    Some(Env { dir, srv, sk, py })
}

fn dir_ref(p: &Path) -> String {
    format!("dir:{}", p.display())
}

#[test]
fn big_layer_push_pull() {
    let e = need!(setup());
    let layout = e.path("layout");
    let built = build_image(&e.py, &layout, "v1", 1, 64 << 20, &[]);
    e.sk.push(&e.oci(&layout, "v1"), &e.srv.docker_ref("big/app:v1"), &[]);

    let out = e.path("pulled");
    e.sk.pull(&e.srv.docker_ref("big/app:v1"), &dir_ref(&out), &[]);
    let (config, layers) = verify_dir_image(&out, "manifest.json");
    assert_eq!(config, built.images[0].config);
    assert_eq!(layers, built.images[0].layers);
    assert_eq!(
        sha256_file(&out.join("manifest.json")),
        built.digest,
        "manifest bytes changed on the way"
    );
    let layer_len = std::fs::metadata(out.join(layers[0].trim_start_matches("sha256:")))
        .expect("layer file")
        .len();
    assert!(
        layer_len > 64 << 20,
        "the big layer is only {layer_len} bytes"
    );

    let info = e.sk.inspect(&e.srv.docker_ref("big/app:v1"), false);
    assert_eq!(info["Digest"], built.digest.as_str());
    assert_eq!(info["Layers"], serde_json::json!(built.images[0].layers));
}

#[test]
fn hundred_small_layers() {
    let e = need!(setup());
    let layout = e.path("layout");
    let built = build_image(&e.py, &layout, "many", 100, 3000, &[]);
    e.sk.push(
        &e.oci(&layout, "many"),
        &e.srv.docker_ref("small/layers:many"),
        &[],
    );
    let out = e.path("pulled");
    e.sk.pull(&e.srv.docker_ref("small/layers:many"), &dir_ref(&out), &[]);
    let (config, layers) = verify_dir_image(&out, "manifest.json");
    assert_eq!(layers.len(), 100);
    assert_eq!(layers, built.images[0].layers);
    assert_eq!(config, built.images[0].config);
    assert_eq!(sha256_file(&out.join("manifest.json")), built.digest);
}

#[test]
fn multi_arch_oci_index() {
    let e = need!(setup());
    let layout = e.path("layout");
    let built = build_image(
        &e.py,
        &layout,
        "multi",
        2,
        100_000,
        &["linux/amd64", "linux/arm64"],
    );
    assert_eq!(built.media_type, "application/vnd.oci.image.index.v1+json");
    e.sk.push(
        &e.oci(&layout, "multi"),
        &e.srv.docker_ref("multi/app:1"),
        &["--all"],
    );

    let raw = e.sk.inspect(&e.srv.docker_ref("multi/app:1"), true);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let children: Vec<&str> = raw["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["digest"].as_str().expect("digest"))
        .collect();
    let want: Vec<&str> = built.images.iter().map(|i| i.digest.as_str()).collect();
    assert_eq!(children, want);

    // The whole index back.
    let out = e.path("all");
    e.sk.pull(&e.srv.docker_ref("multi/app:1"), &dir_ref(&out), &["--all"]);
    assert_eq!(sha256_file(&out.join("manifest.json")), built.digest);
    for img in &built.images {
        let name = format!("{}.manifest.json", img.digest.trim_start_matches("sha256:"));
        assert_eq!(sha256_file(&out.join(&name)), img.digest);
        let (config, layers) = verify_dir_image(&out, &name);
        assert_eq!(config, img.config);
        assert_eq!(layers, img.layers);
    }

    // One platform, chosen by the client from the index.
    let arm = &built.images[1];
    let info = json(&run_ok(&mut e.sk.cmd(&[
        "--override-arch",
        "arm64",
        "inspect",
        "--tls-verify=false",
        "--creds",
        &Skopeo::creds(),
        &e.srv.docker_ref("multi/app:1"),
    ])));
    assert_eq!(info["Architecture"], "arm64");
    assert_eq!(info["Layers"], serde_json::json!(arm.layers));
    let out = e.path("arm64");
    let creds = Skopeo::creds();
    run_ok(&mut e.sk.cmd(&[
        "--override-arch",
        "arm64",
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &e.srv.docker_ref("multi/app:1"),
        &dir_ref(&out),
    ]));
    assert_eq!(sha256_file(&out.join("manifest.json")), arm.digest);
    let (config, layers) = verify_dir_image(&out, "manifest.json");
    assert_eq!((config, layers), (arm.config.clone(), arm.layers.clone()));

    // And by digest.
    let by_digest = e
        .srv
        .docker_ref(&format!("multi/app@{}", built.images[0].digest));
    let raw = e.sk.inspect(&by_digest, true);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}

#[test]
fn docker_schema2_manifest_and_list() {
    let e = need!(setup());
    let layout = e.path("layout");
    let single = build_image(&e.py, &layout, "single", 2, 50_000, &[]);
    let multi = build_image(
        &e.py,
        &layout,
        "multi",
        1,
        50_000,
        &["linux/amd64", "linux/arm64"],
    );

    // Schema 2 manifest.
    e.sk.push(
        &e.oci(&layout, "single"),
        &e.srv.docker_ref("docker/app:s2"),
        &["--format", "v2s2"],
    );
    let raw = e.sk.inspect(&e.srv.docker_ref("docker/app:s2"), true);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let out = e.path("s2");
    e.sk.pull(&e.srv.docker_ref("docker/app:s2"), &dir_ref(&out), &[]);
    let (_, layers) = verify_dir_image(&out, "manifest.json");
    assert_eq!(layers, single.images[0].layers);
    let s2_digest = sha256_file(&out.join("manifest.json"));

    // The registry serves it with its own media type and digest.
    let c = http_client();
    let url = format!("{}/v2/docker/app/manifests/s2", e.srv.url);
    let (status, headers, body) = block_on(get(&c, &url, Some(ACCEPT_ALL))).expect("GET manifest");
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    assert_eq!(sha256_digest(&body), s2_digest);
    assert_eq!(
        headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok()),
        Some(s2_digest.as_str())
    );

    // Manifest list (skopeo converts the OCI index).
    e.sk.push(
        &e.oci(&layout, "multi"),
        &e.srv.docker_ref("docker/app:list"),
        &["--all", "--format", "v2s2"],
    );
    let raw = e.sk.inspect(&e.srv.docker_ref("docker/app:list"), true);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let entries = raw["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 2);
    for (entry, img) in entries.iter().zip(&multi.images) {
        assert_eq!(
            entry["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            entry["platform"]["architecture"],
            img.platform.split('/').nth(1).expect("arch")
        );
    }
    let out = e.path("list");
    e.sk.pull(
        &e.srv.docker_ref("docker/app:list"),
        &dir_ref(&out),
        &["--all"],
    );
    for (entry, img) in entries.iter().zip(&multi.images) {
        let d = entry["digest"].as_str().expect("digest");
        let name = format!("{}.manifest.json", d.trim_start_matches("sha256:"));
        assert_eq!(&sha256_file(&out.join(&name)), d);
        let (_, layers) = verify_dir_image(&out, &name);
        assert_eq!(layers, img.layers);
    }
    let (status, headers, _) = block_on(get(
        &c,
        &format!("{}/v2/docker/app/manifests/list", e.srv.url),
        Some(ACCEPT_ALL),
    ))
    .expect("GET list");
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/vnd.docker.distribution.manifest.list.v2+json")
    );
}

#[test]
fn inspect_list_tags_delete() {
    let e = need!(setup());
    let layout = e.path("layout");
    let a = build_image(&e.py, &layout, "a", 1, 10_000, &[]);
    let b = build_image(&e.py, &layout, "b", 1, 10_000, &[]);
    e.sk.push(&e.oci(&layout, "a"), &e.srv.docker_ref("lib/tags:one"), &[]);
    e.sk.push(&e.oci(&layout, "a"), &e.srv.docker_ref("lib/tags:two"), &[]);
    e.sk.push(
        &e.oci(&layout, "b"),
        &e.srv.docker_ref("lib/tags:three"),
        &[],
    );

    let creds = Skopeo::creds();
    let list = |e: &Env| -> Vec<String> {
        let v = json(&run_ok(&mut e.sk.cmd(&[
            "list-tags",
            "--tls-verify=false",
            "--creds",
            &creds,
            &e.srv.docker_ref("lib/tags"),
        ])));
        assert_eq!(v["Repository"], format!("{}/lib/tags", e.srv.addr));
        let mut t: Vec<String> = v["Tags"]
            .as_array()
            .expect("Tags")
            .iter()
            .map(|t| t.as_str().expect("tag").to_string())
            .collect();
        t.sort();
        t
    };
    assert_eq!(list(&e), ["one", "three", "two"]);

    let info = e.sk.inspect(&e.srv.docker_ref("lib/tags:two"), false);
    assert_eq!(info["Digest"], a.digest.as_str());
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    let mut repo_tags: Vec<&str> = info["RepoTags"]
        .as_array()
        .expect("RepoTags")
        .iter()
        .map(|t| t.as_str().expect("tag"))
        .collect();
    repo_tags.sort_unstable();
    assert_eq!(repo_tags, ["one", "three", "two"]);

    // Delete image a (by tag: skopeo resolves it and deletes the manifest, so both tags go).
    run_ok(&mut e.sk.cmd(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        &creds,
        &e.srv.docker_ref("lib/tags:one"),
    ]));
    assert_eq!(list(&e), ["three"]);
    let err = run_fail(&mut e.sk.cmd(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds,
        &e.srv.docker_ref("lib/tags:two"),
    ]));
    assert!(
        err.contains("manifest unknown") || err.contains("MANIFEST_UNKNOWN"),
        "{err}"
    );
    let c = http_client();
    let (status, _, body) = block_on(get(
        &c,
        &format!("{}/v2/lib/tags/manifests/{}", e.srv.url, a.digest),
        Some(ACCEPT_ALL),
    ))
    .expect("GET");
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");
    // Image b is untouched.
    let info = e.sk.inspect(&e.srv.docker_ref("lib/tags:three"), false);
    assert_eq!(info["Digest"], b.digest.as_str());
    // Delete by digest.
    run_ok(&mut e.sk.cmd(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        &creds,
        &e.srv.docker_ref(&format!("lib/tags@{}", b.digest)),
    ]));
    assert!(list(&e).is_empty());
}

#[test]
fn cross_repo_copy_mounts() {
    let e = need!(setup());
    let layout = e.path("layout");
    let built = build_image(&e.py, &layout, "x", 3, 200_000, &[]);
    e.sk.push(&e.oci(&layout, "x"), &e.srv.docker_ref("team/src:1"), &[]);

    let creds = Skopeo::creds();
    let out = run(&mut e.sk.cmd(&[
        "--debug",
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        &creds,
        "--dest-creds",
        &creds,
        &e.srv.docker_ref("team/src:1"),
        &e.srv.docker_ref("other/dst:1"),
    ]));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "skopeo copy failed:\n{log}");
    // skopeo knows (from its blob info cache) that the layers are in team/src and mounts them
    // instead of uploading them again. Its boltdb cache drops records when concurrent writers
    // time out under load (seen on 2-core CI: 1 or 2 of the 3 pushed layers recorded), so
    // every layer must be either mounted or uploaded, and at least one mounted.
    let mounted = log.matches("mount OK").count();
    let uploaded = log
        .matches("Uploading /v2/other/dst/blobs/uploads/")
        .count();
    assert!(
        mounted >= 1 && mounted + uploaded == 4,
        "expected mounts of the layers (3 layers + config); skopeo said:\n{log}"
    );

    let pulled = e.path("dst");
    e.sk.pull(&e.srv.docker_ref("other/dst:1"), &dir_ref(&pulled), &[]);
    let (config, layers) = verify_dir_image(&pulled, "manifest.json");
    assert_eq!(
        (config, layers),
        (
            built.images[0].config.clone(),
            built.images[0].layers.clone()
        )
    );
    assert_eq!(sha256_file(&pulled.join("manifest.json")), built.digest);

    // The mount itself, over plain HTTP: 201 with the blob's location.
    let c = http_client();
    let layer = &built.images[0].layers[0];
    let resp = block_on(async {
        c.post(format!(
            "{}/v2/third/repo/blobs/uploads/?mount={layer}&from=team/src",
            e.srv.url
        ))
        .basic_auth(AKID, Some(SECRET))
        .header("content-length", "0")
        .send()
        .await
    })
    .expect("mount POST");
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        resp.headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok()),
        Some(layer.as_str())
    );
}

#[test]
fn credentials_users_and_public_repos() {
    let e = need!(setup());
    let layout = e.path("layout");
    let built = build_image(&e.py, &layout, "p", 1, 20_000, &[]);
    e.sk.push(&e.oci(&layout, "p"), &e.srv.docker_ref("priv/app:1"), &[]);
    let out = |n: &str| dir_ref(&e.path(n));

    // Wrong secret.
    let bad = format!("{AKID}:not-the-secret");
    let err = run_fail(&mut e.sk.cmd(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &bad,
        &e.srv.docker_ref("priv/app:1"),
        &out("wrong"),
    ]));
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );
    // Unknown user.
    run_fail(&mut e.sk.cmd(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        "nobody:whatever1",
        &e.srv.docker_ref("priv/app:1"),
        &out("nobody"),
    ]));
    // Anonymous, private repository.
    let err = run_fail(&mut e.sk.cmd(&[
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        &e.srv.docker_ref("priv/app:1"),
        &out("anon1"),
    ]));
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );

    // Made public: anonymous pulls work, anonymous pushes still don't.
    run_ok(&mut e.srv.admin(&["repo", "public", "priv/app"]));
    run_ok(&mut e.sk.cmd(&[
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        &e.srv.docker_ref("priv/app:1"),
        &out("anon2"),
    ]));
    let (config, layers) = verify_dir_image(&e.path("anon2"), "manifest.json");
    assert_eq!(
        (config, layers),
        (
            built.images[0].config.clone(),
            built.images[0].layers.clone()
        )
    );
    run_fail(&mut e.sk.cmd(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &e.oci(&layout, "p"),
        &e.srv.docker_ref("priv/app:anon"),
    ]));
    // And private again.
    run_ok(&mut e.srv.admin(&["repo", "private", "priv/app"]));
    run_fail(&mut e.sk.cmd(&[
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        &e.srv.docker_ref("priv/app:1"),
        &out("anon3"),
    ]));

    // A registry user with rights on team/* only.
    run_with_stdin(
        &mut e
            .srv
            .admin(&["user", "add", "ci", "--grant", "team/*=pull,push"]),
        "ci-password-1\n",
    );
    let user = "ci:ci-password-1";
    run_ok(&mut e.sk.cmd(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        user,
        &e.oci(&layout, "p"),
        &e.srv.docker_ref("team/app:1"),
    ]));
    run_ok(&mut e.sk.cmd(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        user,
        &e.srv.docker_ref("team/app:1"),
        &out("user-pull"),
    ]));
    verify_dir_image(&e.path("user-pull"), "manifest.json");
    // The catalog shows the user only what it may pull.
    let c = http_client();
    let cat = block_on(async {
        let r = c
            .get(format!("{}/v2/_catalog", e.srv.url))
            .basic_auth("ci", Some("ci-password-1"))
            .send()
            .await?;
        r.json::<serde_json::Value>().await
    })
    .expect("GET /v2/_catalog");
    assert_eq!(
        cat["repositories"],
        serde_json::json!(["team/app"]),
        "{cat}"
    );
    let err = run_fail(&mut e.sk.cmd(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        user,
        &e.oci(&layout, "p"),
        &e.srv.docker_ref("elsewhere/app:1"),
    ]));
    assert!(denied_or_unauthorized(&err), "{err}");
    run_fail(&mut e.sk.cmd(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        user,
        &e.srv.docker_ref("priv/app:1"),
        &out("user-priv"),
    ]));
    // No delete right.
    let err = run_fail(&mut e.sk.cmd(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        user,
        &e.srv.docker_ref("team/app:1"),
    ]));
    assert!(denied_or_unauthorized(&err), "{err}");
    // Wrong password for the user.
    run_fail(&mut e.sk.cmd(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        "ci:wrong-password",
        &e.srv.docker_ref("team/app:1"),
        &out("user-wrong"),
    ]));
}

#[test]
fn ecr_token_login() {
    let e = need!(setup());
    let aws = need!(aws());
    let layout = e.path("layout");
    let built = build_image(&e.py, &layout, "t", 2, 30_000, &[]);

    let mut cmd = aws_cmd(&aws, e.dir.path());
    cmd.args(["ecr", "get-login-password", "--endpoint-url", &e.srv.url]);
    let password = run_ok(&mut cmd).trim().to_string();
    assert!(password.len() > 20, "suspicious ECR token {password:?}");

    let authfile = e.path("auth.json");
    let auth = authfile.to_str().expect("utf-8 path");
    let mut login = e.sk.cmd(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        auth,
        "-u",
        "AWS",
        "--password-stdin",
        &e.srv.addr,
    ]);
    run_with_stdin(&mut login, &password);
    let saved = std::fs::read_to_string(&authfile).expect("auth file written by skopeo login");
    assert!(saved.contains(&e.srv.addr), "{saved}");

    // Push and pull with nothing but the auth file.
    run_ok(&mut e.sk.cmd(&[
        "copy",
        "--dest-tls-verify=false",
        "--authfile",
        auth,
        &e.oci(&layout, "t"),
        &e.srv.docker_ref("ecr/login:1"),
    ]));
    let out = e.path("pulled");
    run_ok(&mut e.sk.cmd(&[
        "copy",
        "--src-tls-verify=false",
        "--authfile",
        auth,
        &e.srv.docker_ref("ecr/login:1"),
        &dir_ref(&out),
    ]));
    let (config, layers) = verify_dir_image(&out, "manifest.json");
    assert_eq!(
        (config, layers),
        (
            built.images[0].config.clone(),
            built.images[0].layers.clone()
        )
    );

    // A tampered token is refused at login.
    let mid = password.len() / 2;
    let flipped = if &password[mid..=mid] == "A" {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{flipped}{}", &password[..mid], &password[mid + 1..]);
    let out = run(e
        .sk
        .cmd(&[
            "login",
            "--tls-verify=false",
            "--authfile",
            auth,
            "-u",
            "AWS",
            "--password",
            &tampered,
            &e.srv.addr,
        ])
        .stdin(std::process::Stdio::null()));
    assert!(
        !out.status.success(),
        "login with a tampered ECR token succeeded"
    );
}

/// skopeo's error text for a 401/403 refusal.
fn denied_or_unauthorized(err: &str) -> bool {
    let low = err.to_lowercase();
    low.contains("denied") || low.contains("unauthorized") || low.contains("403")
}
