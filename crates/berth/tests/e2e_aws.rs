//! End to end with the real `aws ecr` CLI and boto3 against the ECR API on the registry port:
//! repositories, images pushed with skopeo, tag immutability, deletion, lifecycle policies and
//! their previews, resource tags, SigV4 failures. The boto3 script validates every response
//! against botocore's service model.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json as j, Value};

struct Env {
    dir: tempfile::TempDir,
    srv: Server,
    aws: PathBuf,
}

impl Env {
    /// `aws ecr <args> --endpoint-url URL --output json` → Ok(JSON) or Err(stderr).
    fn ecr(&self, args: &[&str]) -> Result<Value, String> {
        let mut cmd = aws_cmd(&self.aws, self.dir.path());
        cmd.arg("ecr")
            .args(args)
            .args(["--endpoint-url", &self.srv.url, "--output", "json"]);
        let out = run(&mut cmd);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let s = String::from_utf8_lossy(&out.stdout);
        Ok(if s.trim().is_empty() {
            Value::Null
        } else {
            json(&s)
        })
    }

    fn ecr_ok(&self, args: &[&str]) -> Value {
        self.ecr(args)
            .unwrap_or_else(|e| panic!("aws ecr {args:?} failed:\n{e}"))
    }

    /// Fails with the AWS error `code` (the CLI prints "An error occurred (CODE) ...").
    fn ecr_err(&self, args: &[&str], code: &str) -> String {
        match self.ecr(args) {
            Ok(v) => panic!("aws ecr {args:?} succeeded, expected {code}: {v}"),
            Err(e) => {
                assert!(
                    e.contains(&format!("({code})")),
                    "aws ecr {args:?}: expected {code}, got:\n{e}"
                );
                e
            }
        }
    }
}

fn setup(extra: &[&str]) -> Option<Env> {
    let aws = aws()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::registry(&dir.path().join("data"), extra);
    Some(Env { dir, srv, aws })
}

fn image_ids(v: &Value) -> Vec<(String, Option<String>)> {
    let mut ids: Vec<_> = v["imageIds"]
        .as_array()
        .expect("imageIds")
        .iter()
        .map(|i| {
            (
                i["imageDigest"].as_str().expect("imageDigest").to_string(),
                i["imageTag"].as_str().map(str::to_string),
            )
        })
        .collect();
    ids.sort();
    ids
}

/// Builds `n` distinct single-layer images in one layout, tagged t1..tn.
fn build_images(py: &Path, layout: &Path, n: usize) -> Vec<Built> {
    (1..=n)
        .map(|i| build_image(py, layout, &format!("t{i}"), 1, 4096, &[]))
        .collect()
}

#[test]
fn ecr_cli_repositories_and_images() {
    let e = need!(setup(&[]));
    let sk = Skopeo::new(need!(skopeo()), e.dir.path());
    let py = need!(python(&[]));
    let layout = e.dir.path().join("layout");
    let imgs = build_images(&py, &layout, 2);
    let oci = |t: &str| format!("oci:{}:{t}", layout.display());

    // create-repository with tags, IMMUTABLE.
    let r = e.ecr_ok(&[
        "create-repository",
        "--repository-name",
        "team/app",
        "--image-tag-mutability",
        "IMMUTABLE",
        "--tags",
        "Key=team,Value=berth",
        "Key=env,Value=test",
    ])["repository"]
        .clone();
    assert_eq!(r["repositoryName"], "team/app");
    assert_eq!(r["imageTagMutability"], "IMMUTABLE");
    assert_eq!(r["registryId"], "000000000000");
    assert_eq!(
        r["repositoryArn"],
        "arn:aws:ecr:us-east-1:000000000000:repository/team/app"
    );
    assert_eq!(r["repositoryUri"], format!("{}/team/app", e.srv.addr));
    assert!(
        r["createdAt"].is_number() || r["createdAt"].is_string(),
        "{r}"
    );
    let arn = r["repositoryArn"].as_str().expect("arn").to_string();
    e.ecr_err(
        &["create-repository", "--repository-name", "team/app"],
        "RepositoryAlreadyExistsException",
    );

    let d = e.ecr_ok(&["describe-repositories", "--repository-names", "team/app"]);
    assert_eq!(d["repositories"].as_array().map(Vec::len), Some(1));
    assert_eq!(d["repositories"][0]["repositoryArn"], arn.as_str());
    assert_eq!(d["repositories"][0]["imageTagMutability"], "IMMUTABLE");
    e.ecr_err(
        &["describe-repositories", "--repository-names", "nope"],
        "RepositoryNotFoundException",
    );

    // Images pushed by skopeo show up in the ECR API.
    sk.push(&oci("t1"), &e.srv.docker_ref("team/app:v1"), &[]);
    let l = e.ecr_ok(&["list-images", "--repository-name", "team/app"]);
    assert_eq!(
        image_ids(&l),
        vec![(imgs[0].digest.clone(), Some("v1".into()))]
    );
    let d = e.ecr_ok(&["describe-images", "--repository-name", "team/app"]);
    let det = &d["imageDetails"][0];
    assert_eq!(d["imageDetails"].as_array().map(Vec::len), Some(1));
    assert_eq!(det["imageDigest"], imgs[0].digest.as_str());
    assert_eq!(det["imageTags"], j!(["v1"]));
    assert_eq!(det["repositoryName"], "team/app");
    assert!(
        det["imageSizeInBytes"].as_u64().is_some_and(|s| s > 4096),
        "{det}"
    );
    assert!(!det["imagePushedAt"].is_null(), "{det}");
    assert_eq!(
        det["imageManifestMediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    e.ecr_err(
        &[
            "describe-images",
            "--repository-name",
            "team/app",
            "--image-ids",
            "imageTag=missing",
        ],
        "ImageNotFoundException",
    );

    let g = e.ecr_ok(&[
        "batch-get-image",
        "--repository-name",
        "team/app",
        "--image-ids",
        "imageTag=v1",
    ]);
    let manifest = g["images"][0]["imageManifest"]
        .as_str()
        .expect("imageManifest");
    assert_eq!(sha256_digest(manifest.as_bytes()), imgs[0].digest);
    assert_eq!(
        g["images"][0]["imageId"]["imageDigest"],
        imgs[0].digest.as_str()
    );
    assert_eq!(
        g["images"][0]["imageManifestMediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(g["failures"], j!([]));

    // Retag without pulling, as the ECR docs show: batch-get-image, then put-image.
    let p = e.ecr_ok(&[
        "put-image",
        "--repository-name",
        "team/app",
        "--image-tag",
        "release",
        "--image-manifest",
        manifest,
        "--image-manifest-media-type",
        "application/vnd.oci.image.manifest.v1+json",
    ]);
    assert_eq!(
        p["image"]["imageId"]["imageDigest"],
        imgs[0].digest.as_str()
    );
    assert_eq!(p["image"]["imageId"]["imageTag"], "release");
    let info = sk.inspect(&e.srv.docker_ref("team/app:release"), false);
    assert_eq!(info["Digest"], imgs[0].digest.as_str());
    // Deleting by tag removes only that tag while the image has another.
    let del = e.ecr_ok(&[
        "batch-delete-image",
        "--repository-name",
        "team/app",
        "--image-ids",
        "imageTag=release",
    ]);
    assert_eq!(del["imageIds"][0]["imageTag"], "release", "{del}");
    assert_eq!(
        del["imageIds"][0]["imageDigest"],
        imgs[0].digest.as_str(),
        "{del}"
    );
    let l = e.ecr_ok(&["list-images", "--repository-name", "team/app"]);
    assert_eq!(
        image_ids(&l),
        vec![(imgs[0].digest.clone(), Some("v1".into()))]
    );

    // IMMUTABLE: skopeo cannot move v1 to another image; v1 still points at the first.
    let err = run_fail(&mut sk.cmd(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &Skopeo::creds(),
        &oci("t2"),
        &e.srv.docker_ref("team/app:v1"),
    ]));
    assert!(
        err.to_lowercase().contains("tag invalid")
            || err.contains("TAG_INVALID")
            || err.contains("immutable"),
        "{err}"
    );
    let l = e.ecr_ok(&[
        "list-images",
        "--repository-name",
        "team/app",
        "--filter",
        "tagStatus=TAGGED",
    ]);
    assert_eq!(
        image_ids(&l),
        vec![(imgs[0].digest.clone(), Some("v1".into()))]
    );

    // MUTABLE: now it can.
    let m = e.ecr_ok(&[
        "put-image-tag-mutability",
        "--repository-name",
        "team/app",
        "--image-tag-mutability",
        "MUTABLE",
    ]);
    assert_eq!(m["imageTagMutability"], "MUTABLE");
    assert_eq!(m["repositoryName"], "team/app");
    sk.push(&oci("t2"), &e.srv.docker_ref("team/app:v1"), &[]);
    let l = e.ecr_ok(&["list-images", "--repository-name", "team/app"]);
    let mut want = vec![
        (imgs[0].digest.clone(), None),
        (imgs[1].digest.clone(), Some("v1".into())),
    ];
    want.sort();
    assert_eq!(image_ids(&l), want);
    let l = e.ecr_ok(&[
        "list-images",
        "--repository-name",
        "team/app",
        "--filter",
        "tagStatus=UNTAGGED",
    ]);
    assert_eq!(image_ids(&l), vec![(imgs[0].digest.clone(), None)]);

    // batch-delete-image: one found, one not.
    let del = e.ecr_ok(&[
        "batch-delete-image",
        "--repository-name",
        "team/app",
        "--image-ids",
        &format!("imageDigest={}", imgs[0].digest),
        "imageTag=nope",
    ]);
    assert_eq!(del["imageIds"][0]["imageDigest"], imgs[0].digest.as_str());
    assert_eq!(del["imageIds"].as_array().map(Vec::len), Some(1));
    assert_eq!(del["failures"][0]["failureCode"], "ImageNotFound");
    assert_eq!(del["failures"][0]["imageId"]["imageTag"], "nope");
    let l = e.ecr_ok(&["list-images", "--repository-name", "team/app"]);
    assert_eq!(
        image_ids(&l),
        vec![(imgs[1].digest.clone(), Some("v1".into()))]
    );
    let c = http_client();
    let (status, _, _) = block_on(get(
        &c,
        &format!("{}/v2/team/app/manifests/{}", e.srv.url, imgs[0].digest),
        Some(ACCEPT_ALL),
    ))
    .expect("GET");
    assert_eq!(status, 404, "a deleted image is still served");

    // Resource tags.
    e.ecr_ok(&[
        "tag-resource",
        "--resource-arn",
        &arn,
        "--tags",
        "Key=owner,Value=e2e",
    ]);
    let tags = |e: &Env| -> Vec<(String, String)> {
        let v = e.ecr_ok(&["list-tags-for-resource", "--resource-arn", &arn]);
        let mut t: Vec<_> = v["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| {
                (
                    t["Key"].as_str().expect("Key").to_string(),
                    t["Value"].as_str().expect("Value").to_string(),
                )
            })
            .collect();
        t.sort();
        t
    };
    let pairs = |p: &[(&str, &str)]| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tags(&e),
        pairs(&[("env", "test"), ("owner", "e2e"), ("team", "berth")])
    );
    e.ecr_ok(&[
        "untag-resource",
        "--resource-arn",
        &arn,
        "--tag-keys",
        "env",
        "team",
    ]);
    assert_eq!(tags(&e), pairs(&[("owner", "e2e")]));

    // delete-repository: refused while images remain, then forced.
    e.ecr_err(
        &["delete-repository", "--repository-name", "team/app"],
        "RepositoryNotEmptyException",
    );
    let d = e.ecr_ok(&[
        "delete-repository",
        "--repository-name",
        "team/app",
        "--force",
    ]);
    assert_eq!(d["repository"]["repositoryArn"], arn.as_str());
    e.ecr_err(
        &["describe-repositories", "--repository-names", "team/app"],
        "RepositoryNotFoundException",
    );
    let (status, _, _) = block_on(get(
        &c,
        &format!("{}/v2/team/app/manifests/v1", e.srv.url),
        Some(ACCEPT_ALL),
    ))
    .expect("GET");
    assert_eq!(
        status, 404,
        "an image of a deleted repository is still served"
    );

    // An empty repository goes without --force.
    e.ecr_ok(&["create-repository", "--repository-name", "empty"]);
    e.ecr_ok(&["delete-repository", "--repository-name", "empty"]);
}

const KEEP_TWO: &str = r#"{"rules":[{"rulePriority":1,"description":"keep the 2 newest","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}}]}"#;

/// Pushes 5 distinct images as t1..t5 (oldest first) into `repo`; returns their digests.
fn push_five(e: &Env, repo: &str) -> Vec<String> {
    let sk = Skopeo::new(skopeo().expect("skopeo"), e.dir.path());
    let py = python(&[]).expect("python3");
    let layout = e
        .dir
        .path()
        .join(format!("layout-{}", repo.replace('/', "_")));
    let imgs = build_images(&py, &layout, 5);
    for i in 1..=5 {
        sk.push(
            &format!("oci:{}:t{i}", layout.display()),
            &e.srv.docker_ref(&format!("{repo}:t{i}")),
            &[],
        );
    }
    imgs.into_iter().map(|b| b.digest).collect()
}

#[test]
fn ecr_cli_lifecycle_policy_preview() {
    let e = need!(setup(&[]));
    need!(skopeo());
    need!(python(&[]));
    e.ecr_ok(&["create-repository", "--repository-name", "lc/app"]);
    let digests = push_five(&e, "lc/app");

    e.ecr_err(
        &["get-lifecycle-policy", "--repository-name", "lc/app"],
        "LifecyclePolicyNotFoundException",
    );
    let p = e.ecr_ok(&[
        "put-lifecycle-policy",
        "--repository-name",
        "lc/app",
        "--lifecycle-policy-text",
        KEEP_TWO,
    ]);
    assert_eq!(p["repositoryName"], "lc/app");
    assert_eq!(
        json(p["lifecyclePolicyText"].as_str().expect("text")),
        json(KEEP_TWO)
    );
    let g = e.ecr_ok(&["get-lifecycle-policy", "--repository-name", "lc/app"]);
    assert_eq!(
        json(g["lifecyclePolicyText"].as_str().expect("text")),
        json(KEEP_TWO)
    );

    // An invalid policy (imageCountMoreThan without countNumber; long enough for the CLI's
    // own 100-character minimum) is refused by the server.
    let invalid = r#"{"rules":[{"rulePriority":1,"description":"no countNumber","selection":{"tagStatus":"any","countType":"imageCountMoreThan"},"action":{"type":"expire"}}]}"#;
    e.ecr_err(
        &[
            "put-lifecycle-policy",
            "--repository-name",
            "lc/app",
            "--lifecycle-policy-text",
            invalid,
        ],
        "InvalidParameterException",
    );

    let s = e.ecr_ok(&[
        "start-lifecycle-policy-preview",
        "--repository-name",
        "lc/app",
    ]);
    assert!(
        matches!(s["status"].as_str(), Some("IN_PROGRESS" | "COMPLETE")),
        "{s}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let preview = loop {
        let v = e.ecr_ok(&[
            "get-lifecycle-policy-preview",
            "--repository-name",
            "lc/app",
        ]);
        if v["status"] != "IN_PROGRESS" || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(preview["status"], "COMPLETE", "{preview}");
    let results = preview["previewResults"]
        .as_array()
        .expect("previewResults");
    let mut expiring: Vec<(String, Vec<String>)> = results
        .iter()
        .map(|r| {
            assert_eq!(r["action"]["type"], "EXPIRE", "{r}");
            assert_eq!(r["appliedRulePriority"], 1, "{r}");
            (
                r["imageDigest"].as_str().expect("imageDigest").to_string(),
                r["imageTags"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect();
    expiring.sort();
    let mut want: Vec<(String, Vec<String>)> = (0..3)
        .map(|i| (digests[i].clone(), vec![format!("t{}", i + 1)]))
        .collect();
    want.sort();
    assert_eq!(
        expiring, want,
        "the 3 oldest images should expire: {preview}"
    );
    assert_eq!(preview["summary"]["expiringImageTotalCount"], 3);

    // A preview changes nothing.
    let l = e.ecr_ok(&["list-images", "--repository-name", "lc/app"]);
    assert_eq!(image_ids(&l).len(), 5);

    e.ecr_ok(&["delete-lifecycle-policy", "--repository-name", "lc/app"]);
    e.ecr_err(
        &["get-lifecycle-policy", "--repository-name", "lc/app"],
        "LifecyclePolicyNotFoundException",
    );
}

#[test]
fn ecr_lifecycle_policy_is_applied() {
    // Lifecycle policies run on the GC schedule; every second here.
    let e = need!(setup(&["--gc-interval", "1"]));
    need!(skopeo());
    need!(python(&[]));
    e.ecr_ok(&["create-repository", "--repository-name", "lc/applied"]);
    let digests = push_five(&e, "lc/applied");
    e.ecr_ok(&[
        "put-lifecycle-policy",
        "--repository-name",
        "lc/applied",
        "--lifecycle-policy-text",
        KEEP_TWO,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let l = image_ids(&e.ecr_ok(&["list-images", "--repository-name", "lc/applied"]));
        if l.len() <= 2 || Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut want = vec![
        (digests[3].clone(), Some("t4".to_string())),
        (digests[4].clone(), Some("t5".to_string())),
    ];
    want.sort();
    assert_eq!(
        left, want,
        "the lifecycle policy should leave the 2 newest images"
    );
    let c = http_client();
    let (status, _, _) = block_on(get(
        &c,
        &format!("{}/v2/lc/applied/manifests/t1", e.srv.url),
        Some(ACCEPT_ALL),
    ))
    .expect("GET");
    assert_eq!(status, 404, "an expired image is still served");
}

#[test]
fn ecr_signature_failures() {
    let e = need!(setup(&[]));
    e.ecr_ok(&["describe-repositories"]);

    let mut cmd = aws_cmd(&e.aws, e.dir.path());
    cmd.env(
        "AWS_SECRET_ACCESS_KEY",
        "wrong-secret-wrong-secret-wrong-secret00",
    );
    cmd.args([
        "ecr",
        "describe-repositories",
        "--endpoint-url",
        &e.srv.url,
        "--output",
        "json",
    ]);
    let err = run_fail(&mut cmd);
    assert!(
        err.contains("(InvalidSignatureException)"),
        "wrong secret: {err}"
    );

    let mut cmd = aws_cmd(&e.aws, e.dir.path());
    cmd.env("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000");
    cmd.args([
        "ecr",
        "describe-repositories",
        "--endpoint-url",
        &e.srv.url,
        "--output",
        "json",
    ]);
    let err = run_fail(&mut cmd);
    assert!(
        err.contains("(UnrecognizedClientException)"),
        "unknown access key: {err}"
    );

    let mut cmd = aws_cmd(&e.aws, e.dir.path());
    cmd.args([
        "ecr",
        "describe-repositories",
        "--no-sign-request",
        "--endpoint-url",
        &e.srv.url,
        "--output",
        "json",
    ]);
    let err = run_fail(&mut cmd);
    assert!(
        err.contains("(MissingAuthenticationTokenException)"),
        "unsigned: {err}"
    );

    // get-login-password too.
    let mut cmd = aws_cmd(&e.aws, e.dir.path());
    cmd.env(
        "AWS_SECRET_ACCESS_KEY",
        "wrong-secret-wrong-secret-wrong-secret00",
    );
    cmd.args(["ecr", "get-login-password", "--endpoint-url", &e.srv.url]);
    let err = run_fail(&mut cmd);
    assert!(
        err.contains("(InvalidSignatureException)"),
        "get-login-password, wrong secret: {err}"
    );
}

#[test]
fn ecr_boto3_responses_match_botocore_model() {
    let py = need!(python(&["boto3", "botocore"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::registry(&dir.path().join("data"), &[]);
    let mut cmd = aws_cmd(&py, dir.path());
    cmd.arg(e2e_script("ecr_boto3.py")).args([
        "--endpoint",
        &srv.url,
        "--registry",
        &srv.addr,
        "--repo",
        "boto/app",
    ]);
    let out = run_ok(&mut cmd);
    let last = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no summary:\n{out}"));
    let v = json(last);
    let validated = v["validated"].as_array().expect("validated");
    eprintln!(
        "boto3: {} responses validated against botocore's model",
        validated.len()
    );
    assert!(validated.len() >= 30, "{v}");
}

#[test]
fn ecr_cli_multi_arch_images_and_pagination() {
    let e = need!(setup(&[]));
    let sk = Skopeo::new(need!(skopeo()), e.dir.path());
    let py = need!(python(&[]));
    let layout = e.dir.path().join("layout");
    let built = build_image(
        &py,
        &layout,
        "multi",
        1,
        20_000,
        &["linux/amd64", "linux/arm64"],
    );
    sk.push(
        &format!("oci:{}:multi", layout.display()),
        &e.srv.docker_ref("multi/app:1"),
        &["--all"],
    );

    // ECR lists the index (tagged) and each platform's manifest (untagged) as images.
    let l = e.ecr_ok(&["list-images", "--repository-name", "multi/app"]);
    let mut want = vec![
        (built.digest.clone(), Some("1".to_string())),
        (built.images[0].digest.clone(), None),
        (built.images[1].digest.clone(), None),
    ];
    want.sort();
    assert_eq!(image_ids(&l), want);

    let d = e.ecr_ok(&["describe-images", "--repository-name", "multi/app"]);
    let details = d["imageDetails"].as_array().expect("imageDetails");
    assert_eq!(details.len(), 3);
    let by_digest = |dg: &str| {
        details
            .iter()
            .find(|x| x["imageDigest"] == dg)
            .unwrap_or_else(|| panic!("{dg} not described: {d}"))
    };
    let index = by_digest(&built.digest);
    assert_eq!(
        index["imageManifestMediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let child_sizes: Vec<u64> = built
        .images
        .iter()
        .map(|i| {
            let c = by_digest(&i.digest);
            assert_eq!(
                c["imageManifestMediaType"],
                "application/vnd.oci.image.manifest.v1+json"
            );
            c["imageSizeInBytes"].as_u64().expect("imageSizeInBytes")
        })
        .collect();

    let g = e.ecr_ok(&[
        "batch-get-image",
        "--repository-name",
        "multi/app",
        "--image-ids",
        "imageTag=1",
    ]);
    let m = g["images"][0]["imageManifest"]
        .as_str()
        .expect("imageManifest");
    assert_eq!(sha256_digest(m.as_bytes()), built.digest);

    // Pagination: the CLI follows nextToken page by page.
    for op in ["list-images", "describe-images"] {
        let v = e.ecr_ok(&[op, "--repository-name", "multi/app", "--page-size", "1"]);
        let key = if op == "list-images" {
            "imageIds"
        } else {
            "imageDetails"
        };
        assert_eq!(
            v[key].as_array().map(Vec::len),
            Some(3),
            "{op} --page-size 1: {v}"
        );
        let v = e.ecr_ok(&[op, "--repository-name", "multi/app", "--max-items", "2"]);
        assert_eq!(
            v[key].as_array().map(Vec::len),
            Some(2),
            "{op} --max-items 2: {v}"
        );
        let next = v["NextToken"]
            .as_str()
            .unwrap_or_else(|| panic!("{op} --max-items 2: no NextToken: {v}"))
            .to_string();
        let rest = e.ecr_ok(&[
            op,
            "--repository-name",
            "multi/app",
            "--starting-token",
            &next,
        ]);
        assert_eq!(
            rest[key].as_array().map(Vec::len),
            Some(1),
            "{op} --starting-token: {rest}"
        );
    }
    e.ecr_ok(&["create-repository", "--repository-name", "multi/other"]);
    let v = e.ecr_ok(&["describe-repositories", "--page-size", "1"]);
    let mut names: Vec<&str> = v["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|r| r["repositoryName"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["multi/app", "multi/other"]);

    // Last, so that a failure here does not hide the checks above.
    // ECR: "If the image is a manifest list, this will be the max size of all manifests in
    // the list."
    assert_eq!(
        index["imageSizeInBytes"].as_u64(),
        child_sizes.iter().max().copied(),
        "imageSizeInBytes of an index should be the largest of its manifests: {d}"
    );
}

#[test]
fn ecr_no_auto_create() {
    // ECR's behaviour: pushing to a repository that was not created fails.
    let e = need!(setup(&["--no-auto-create"]));
    let sk = Skopeo::new(need!(skopeo()), e.dir.path());
    let py = need!(python(&[]));
    let layout = e.dir.path().join("layout");
    let built = build_image(&py, &layout, "x", 1, 5000, &[]);
    let src = format!("oci:{}:x", layout.display());
    let err = run_fail(&mut sk.cmd(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &Skopeo::creds(),
        &src,
        &e.srv.docker_ref("not/created:1"),
    ]));
    assert!(
        err.contains("NAME_UNKNOWN") || err.to_lowercase().contains("name unknown"),
        "{err}"
    );
    e.ecr_err(
        &["describe-repositories", "--repository-names", "not/created"],
        "RepositoryNotFoundException",
    );
    e.ecr_ok(&["create-repository", "--repository-name", "not/created"]);
    sk.push(&src, &e.srv.docker_ref("not/created:1"), &[]);
    let l = e.ecr_ok(&["list-images", "--repository-name", "not/created"]);
    assert_eq!(
        image_ids(&l),
        vec![(built.digest.clone(), Some("1".to_string()))]
    );
}

#[test]
fn ecr_immutable_with_exclusion() {
    let e = need!(setup(&[]));
    let sk = Skopeo::new(need!(skopeo()), e.dir.path());
    let py = need!(python(&[]));
    let layout = e.dir.path().join("layout");
    let imgs = build_images(&py, &layout, 2);
    let oci = |t: &str| format!("oci:{}:{t}", layout.display());
    let r = e.ecr_ok(&[
        "create-repository",
        "--repository-name",
        "excl/app",
        "--image-tag-mutability",
        "IMMUTABLE_WITH_EXCLUSION",
        "--image-tag-mutability-exclusion-filters",
        "filterType=WILDCARD,filter=latest*",
    ]);
    assert_eq!(
        r["repository"]["imageTagMutability"],
        "IMMUTABLE_WITH_EXCLUSION"
    );
    assert_eq!(
        r["repository"]["imageTagMutabilityExclusionFilters"],
        j!([{"filterType": "WILDCARD", "filter": "latest*"}])
    );
    // Excluded tags move freely.
    sk.push(&oci("t1"), &e.srv.docker_ref("excl/app:latest-dev"), &[]);
    sk.push(&oci("t2"), &e.srv.docker_ref("excl/app:latest-dev"), &[]);
    // Others are immutable.
    sk.push(&oci("t1"), &e.srv.docker_ref("excl/app:v1"), &[]);
    run_fail(&mut sk.cmd(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &Skopeo::creds(),
        &oci("t2"),
        &e.srv.docker_ref("excl/app:v1"),
    ]));
    let l = e.ecr_ok(&[
        "list-images",
        "--repository-name",
        "excl/app",
        "--filter",
        "tagStatus=TAGGED",
    ]);
    let mut want = vec![
        (imgs[0].digest.clone(), Some("v1".to_string())),
        (imgs[1].digest.clone(), Some("latest-dev".to_string())),
    ];
    want.sort();
    assert_eq!(image_ids(&l), want);
}
