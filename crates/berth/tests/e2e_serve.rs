//! `berth serve` smoke test: generated credentials (0600, AWS INI), the ECR API on the API port
//! with the aws CLI using that file, and the registry on the registry port.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// Parses the `[default]` section of an AWS shared-credentials file.
fn parse_ini(text: &str) -> (String, String) {
    let mut section = String::new();
    let (mut id, mut secret) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not INI: {line:?}"));
        if section == "default" {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    (
        id.expect("aws_access_key_id in [default]"),
        secret.expect("aws_secret_access_key in [default]"),
    )
}

/// `aws` using only the shared-credentials file.
fn aws_with_file(aws: &Path, creds: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(aws);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_SHARED_CREDENTIALS_FILE", creds)
        .env("AWS_CONFIG_FILE", dir.join("aws-config-none"))
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

#[test]
fn serve_smoke() {
    let aws = need!(aws());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let srv = Server::serve(&data, &[]);
    let api = srv.api_url.clone().expect("api url");
    let creds = data.join("credentials");

    // Prints where the credentials are.
    let log = srv.log_text();
    assert!(
        log.contains(&creds.display().to_string()),
        "credentials path not printed:\n{log}"
    );

    let mode = std::fs::metadata(&creds)
        .expect("credentials file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "credentials mode {mode:o}");
    let (id, secret) = parse_ini(&std::fs::read_to_string(&creds).expect("reading credentials"));
    assert!(
        id.len() >= 16
            && id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
        "access key id {id:?}"
    );
    assert!(secret.len() >= 30, "secret too short");

    // ECR API on the API port, authenticated by the file.
    let ecr = |args: &[&str], endpoint: &str| -> serde_json::Value {
        let mut cmd = aws_with_file(&aws, &creds, dir.path());
        cmd.arg("ecr")
            .args(args)
            .args(["--endpoint-url", endpoint, "--output", "json"]);
        json(&run_ok(&mut cmd))
    };
    let r = ecr(
        &["create-repository", "--repository-name", "smoke/app"],
        &api,
    );
    assert_eq!(
        r["repository"]["repositoryUri"],
        format!("{}/smoke/app", srv.addr)
    );
    // The same API on the registry port.
    let d = ecr(&["describe-repositories"], &srv.url);
    assert_eq!(d["repositories"][0]["repositoryName"], "smoke/app");

    // Registry on the registry port, with the generated key.
    let c = http_client();
    let status = block_on(async {
        c.get(format!("{}/v2/", srv.url))
            .basic_auth(&id, Some(&secret))
            .send()
            .await
            .map(|r| r.status().as_u16())
    })
    .expect("GET /v2/");
    assert_eq!(status, 200);
    let status = block_on(async {
        c.get(format!("{}/v2/", srv.url))
            .send()
            .await
            .map(|r| r.status().as_u16())
    })
    .expect("GET /v2/");
    assert_eq!(status, 401, "anonymous GET /v2/");
    // The registry is not on the API port.
    let status = block_on(async {
        c.get(format!("{api}/v2/"))
            .basic_auth(&id, Some(&secret))
            .send()
            .await
            .map(|r| r.status().as_u16())
    })
    .expect("GET api /v2/");
    assert_ne!(status, 200, "the API port serves the registry");

    // Push with skopeo through an ECR login obtained from the API port.
    if let Some(sk) = skopeo() {
        let py = need!(python(&[]));
        let sk = Skopeo::new(sk, dir.path());
        let mut cmd = aws_with_file(&aws, &creds, dir.path());
        cmd.args(["ecr", "get-login-password", "--endpoint-url", &api]);
        let password = run_ok(&mut cmd).trim().to_string();
        let authfile = dir.path().join("auth.json");
        let auth = authfile.to_str().expect("utf-8");
        run_with_stdin(
            &mut sk.cmd(&[
                "login",
                "--tls-verify=false",
                "--authfile",
                auth,
                "-u",
                "AWS",
                "--password-stdin",
                &srv.addr,
            ]),
            &password,
        );
        let layout = dir.path().join("layout");
        let built = build_image(&py, &layout, "s", 1, 10_000, &[]);
        run_ok(&mut sk.cmd(&[
            "copy",
            "--dest-tls-verify=false",
            "--authfile",
            auth,
            &format!("oci:{}:s", layout.display()),
            &srv.docker_ref("smoke/app:1"),
        ]));
        let l = ecr(&["list-images", "--repository-name", "smoke/app"], &api);
        assert_eq!(l["imageIds"][0]["imageDigest"], built.digest.as_str());
    }

    // A restart keeps the same key.
    drop(srv);
    let srv = Server::serve(&data, &[]);
    let (id2, secret2) = parse_ini(&std::fs::read_to_string(&creds).expect("reading credentials"));
    assert_eq!(
        (id2, secret2),
        (id, secret),
        "credentials changed across a restart"
    );
    let r = ecr(
        &["describe-repositories", "--repository-names", "smoke/app"],
        srv.api_url.as_deref().expect("api"),
    );
    assert_eq!(r["repositories"][0]["repositoryName"], "smoke/app");
}
