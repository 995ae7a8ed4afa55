//! The ECR API called through `JsonApi::call` on a registry in a temporary directory, with
//! blobs pushed through the distribution API. Every successful response is validated against
//! the output shape of botocore's ECR model (member names, types, enums, required members),
//! and every error `__type` against the operation's declared errors, when botocore is
//! installed (`BERTH_VENV`, `./.venv` or `/opt/berth-venv`; required when
//! `BERTH_REQUIRE_E2E` is set).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use berth_aws::json::{JsonApi, RequestContext};
use berth_aws::AwsError;
use berth_oci::Digest;
use berth_registry::ecr::EcrApi;
use berth_registry::{Config, Registry};
use http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

const HOST: &str = "localhost:5000";
const REGION: &str = "eu-west-1";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

// ---- the botocore model -------------------------------------------------------------------------

fn model() -> Option<&'static Value> {
    static MODEL: OnceLock<Option<Value>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let mut venvs: Vec<PathBuf> = Vec::new();
            if let Some(v) = std::env::var_os("BERTH_VENV") {
                venvs.push(v.into());
            }
            venvs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
            venvs.push("/opt/berth-venv".into());
            let script = "import json, botocore.loaders as l; \
                          print(json.dumps(l.Loader().load_service_model('ecr', 'service-2')))";
            for v in venvs {
                let python = v.join("bin/python");
                if !python.exists() {
                    continue;
                }
                let Ok(out) = Command::new(&python).args(["-c", script]).output() else {
                    continue;
                };
                if out.status.success() {
                    if let Ok(m) = serde_json::from_slice::<Value>(&out.stdout) {
                        return Some(m);
                    }
                }
            }
            if std::env::var_os("BERTH_REQUIRE_E2E").is_some() {
                panic!(
                    "botocore's ECR model is required (BERTH_REQUIRE_E2E) but no venv has botocore"
                );
            }
            eprintln!("botocore not found: responses are not validated against the ECR model");
            None
        })
        .as_ref()
}

/// Checks `value` against the model shape `shape`; `path` names the position for messages.
fn validate(model: &Value, shape: &str, value: &Value, path: &str) {
    let s = &model["shapes"][shape];
    assert!(s.is_object(), "{path}: unknown shape {shape}");
    match s["type"].as_str().unwrap_or_default() {
        "structure" => {
            let obj = value
                .as_object()
                .unwrap_or_else(|| panic!("{path}: expected a structure ({shape}), got {value}"));
            let members = s["members"].as_object().expect("members");
            for (k, v) in obj {
                let m = members
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}: {shape} has no member {k:?}"));
                validate(
                    model,
                    m["shape"].as_str().expect("shape"),
                    v,
                    &format!("{path}.{k}"),
                );
            }
            for r in s["required"].as_array().into_iter().flatten() {
                let r = r.as_str().expect("name");
                assert!(
                    obj.contains_key(r),
                    "{path}: required member {r} of {shape} missing"
                );
            }
        }
        "list" => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("{path}: expected a list ({shape}), got {value}"));
            let member = s["member"]["shape"].as_str().expect("member");
            for (i, v) in items.iter().enumerate() {
                validate(model, member, v, &format!("{path}[{i}]"));
            }
        }
        "map" => {
            let obj = value
                .as_object()
                .unwrap_or_else(|| panic!("{path}: expected a map ({shape}), got {value}"));
            for (k, v) in obj {
                validate(
                    model,
                    s["key"]["shape"].as_str().expect("key"),
                    &json!(k),
                    path,
                );
                validate(
                    model,
                    s["value"]["shape"].as_str().expect("value"),
                    v,
                    &format!("{path}[{k}]"),
                );
            }
        }
        "string" => {
            let text = value
                .as_str()
                .unwrap_or_else(|| panic!("{path}: expected a string ({shape}), got {value}"));
            if let Some(allowed) = s["enum"].as_array() {
                assert!(
                    allowed.iter().any(|a| a == text),
                    "{path}: {text:?} is not one of {shape}'s values {allowed:?}"
                );
            }
            if let Some(min) = s["min"].as_u64() {
                assert!(
                    text.chars().count() as u64 >= min,
                    "{path}: shorter than {min}"
                );
            }
        }
        "integer" | "long" => {
            assert!(
                value.is_i64() || value.is_u64(),
                "{path}: expected an integer ({shape}), got {value}"
            );
        }
        "boolean" => assert!(
            value.is_boolean(),
            "{path}: expected a boolean, got {value}"
        ),
        "timestamp" | "double" | "float" => {
            assert!(
                value.is_number(),
                "{path}: expected a number ({shape}), got {value}"
            );
        }
        "blob" => assert!(value.is_string(), "{path}: expected base64 ({shape})"),
        other => panic!("{path}: shape type {other} not handled"),
    }
}

fn check_output(op: &str, out: &Value) {
    if let Some(m) = model() {
        let shape = m["operations"][op]["output"]["shape"]
            .as_str()
            .unwrap_or_else(|| panic!("{op} is not an operation of the model"));
        validate(m, shape, out, op);
    }
}

/// Error codes any operation may answer besides those it declares.
const GENERIC_ERRORS: &[&str] = &[
    "UnknownOperationException",
    "SerializationException",
    "AccessDeniedException",
    "ValidationException",
];

fn check_error(op: &str, err: &AwsError) {
    if let Some(m) = model() {
        let declared: Vec<&str> = m["operations"][op]["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["shape"].as_str())
            .collect();
        assert!(
            declared.contains(&err.code.as_str()) || GENERIC_ERRORS.contains(&err.code.as_str()),
            "{op} answered {} which the model does not declare ({declared:?})",
            err.code
        );
        if declared.contains(&err.code.as_str()) {
            assert!(m["shapes"][&err.code]["exception"]
                .as_bool()
                .unwrap_or(false));
        }
    }
    assert!(
        !err.message.is_empty(),
        "{op}: {} without a message",
        err.code
    );
}

// ---- harness ------------------------------------------------------------------------------------

struct Harness {
    _dir: tempfile::TempDir,
    reg: Arc<Registry>,
    api: EcrApi,
    ctx: RequestContext,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::new(dir.path().join("data"));
        cfg.account_id = "123456789012".into();
        let reg = Registry::open(cfg).expect("open registry");
        let api = EcrApi::new(reg.clone(), HOST.to_string());
        let ctx = RequestContext {
            access_key_id: reg.credentials.access_key_id.clone(),
            region: REGION.into(),
            request_id: "test".into(),
            account_id: "123456789012".into(),
        };
        Harness {
            _dir: dir,
            reg,
            api,
            ctx,
        }
    }

    async fn try_call(&self, op: &str, input: Value) -> Result<Value, AwsError> {
        let out = self.api.call(&self.ctx, op, input).await;
        match &out {
            Ok(v) => check_output(op, v),
            Err(e) => check_error(op, e),
        }
        out
    }

    async fn call(&self, op: &str, input: Value) -> Value {
        match self.try_call(op, input.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{op} {input} failed: {e}"),
        }
    }

    async fn fail(&self, op: &str, input: Value, code: &str) -> AwsError {
        match self.try_call(op, input.clone()).await {
            Ok(v) => panic!("{op} {input} succeeded with {v}, expected {code}"),
            Err(e) => {
                assert_eq!(e.code, code, "{op} {input}: {}", e.message);
                e
            }
        }
    }

    fn basic_auth(&self) -> String {
        let (password, _) = self.reg.auth.ecr_password();
        format!("Basic {}", STANDARD.encode(format!("AWS:{password}")))
    }

    async fn http(&self, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let resp = self.reg.router().oneshot(req).await.expect("router");
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, body)
    }

    /// Uploads a blob to `repo` through the distribution API.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> (String, usize) {
        let digest = Digest::sha256_of(data).to_string();
        let req = Request::post(format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
            .header("authorization", self.basic_auth())
            .header("content-type", "application/octet-stream")
            .body(Body::from(data.to_vec()))
            .expect("request");
        let (status, body) = self.http(req).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        (digest, data.len())
    }

    /// Pushes a config and one layer (content `seed`) and returns an image manifest over them.
    async fn image_manifest(&self, repo: &str, seed: &str) -> String {
        let (config, config_size) = self
            .push_blob(
                repo,
                format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}")
                    .as_bytes(),
            )
            .await;
        let (layer, layer_size) = self
            .push_blob(repo, format!("layer {seed}").as_bytes())
            .await;
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config, "size": config_size },
            "layers": [{ "mediaType": OCI_LAYER, "digest": layer, "size": layer_size }],
        })
        .to_string()
    }

    async fn create_repo(&self, name: &str) -> Value {
        self.call("CreateRepository", json!({ "repositoryName": name }))
            .await
    }

    async fn put_image(&self, repo: &str, manifest: &str, tag: Option<&str>) -> String {
        let mut input = json!({ "repositoryName": repo, "imageManifest": manifest });
        if let Some(t) = tag {
            input["imageTag"] = json!(t);
        }
        let out = self.call("PutImage", input).await;
        out["image"]["imageId"]["imageDigest"]
            .as_str()
            .expect("digest")
            .to_string()
    }
}

fn digest_of(manifest: &str) -> String {
    Digest::sha256_of(manifest.as_bytes()).to_string()
}

/// `(digest, tag)` pairs of a ListImages answer, sorted.
fn ids(v: &Value) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|i| {
            (
                i["imageDigest"].as_str().expect("digest").to_string(),
                i["imageTag"].as_str().map(str::to_string),
            )
        })
        .collect();
    out.sort();
    out
}

// ---- tests --------------------------------------------------------------------------------------

#[tokio::test]
async fn repositories() {
    let h = Harness::new();
    let out = h.create_repo("web/frontend").await;
    let repo = &out["repository"];
    assert_eq!(
        repo["repositoryArn"],
        "arn:aws:ecr:eu-west-1:123456789012:repository/web/frontend"
    );
    assert_eq!(repo["registryId"], "123456789012");
    assert_eq!(repo["repositoryName"], "web/frontend");
    assert_eq!(repo["repositoryUri"], "localhost:5000/web/frontend");
    assert_eq!(repo["imageTagMutability"], "MUTABLE");
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], false);
    assert_eq!(repo["encryptionConfiguration"]["encryptionType"], "AES256");
    let created = repo["createdAt"].as_f64().expect("createdAt");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now - created).abs() < 60.0,
        "createdAt {created} is epoch seconds"
    );

    let e = h
        .fail(
            "CreateRepository",
            json!({"repositoryName": "web/frontend"}),
            "RepositoryAlreadyExistsException",
        )
        .await;
    assert_eq!(
        e.message,
        "The repository with name 'web/frontend' already exists in the registry with id '123456789012'"
    );
    for bad in ["a", "UPPER", "a//b", "-x", "a..b"] {
        let e = h
            .fail(
                "CreateRepository",
                json!({"repositoryName": bad}),
                "InvalidParameterException",
            )
            .await;
        assert!(
            e.message
                .starts_with("Invalid parameter at 'repositoryName'"),
            "{}",
            e.message
        );
    }
    h.fail(
        "CreateRepository",
        json!({"repositoryName": 5}),
        "SerializationException",
    )
    .await;
    h.fail("CreateRepository", json!({}), "InvalidParameterException")
        .await;
    h.fail(
        "CreateRepository",
        json!({"repositoryName": "x1", "registryId": "999999999999"}),
        "AccessDeniedException",
    )
    .await;
    h.fail(
        "CreateRepository",
        json!({"repositoryName": "x1", "imageTagMutability": "SOMETIMES"}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "CreateRepository",
        json!({"repositoryName": "x1", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "CreateRepository",
        json!({"repositoryName": "x1", "imageTagMutability": "IMMUTABLE",
        "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "dev*"}]}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "CreateRepository",
        json!({"repositoryName": "x1", "imageTagMutability": "MUTABLE_WITH_EXCLUSION",
        "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "a b"}]}),
        "InvalidParameterException",
    )
    .await;
    h.fail("CreateRepository", json!({"repositoryName": "x1", "encryptionConfiguration": {"encryptionType": "AES256", "kmsKey": "k"}}), "InvalidParameterException").await;
    h.fail(
        "CreateRepository",
        json!({"repositoryName": "x1", "tags": [{"Key": "aws:x", "Value": "1"}]}),
        "InvalidTagParameterException",
    )
    .await;
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"Key": format!("k{i}"), "Value": "v"}))
        .collect();
    h.fail(
        "CreateRepository",
        json!({"repositoryName": "x1", "tags": many}),
        "TooManyTagsException",
    )
    .await;

    let out = h
        .call("CreateRepository", json!({
            "repositoryName": "app",
            "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}],
            "imageScanningConfiguration": {"scanOnPush": true},
            "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "arn:aws:kms:eu-west-1:123456789012:key/k"},
            "tags": [{"Key": "team", "Value": "web"}],
        }))
        .await;
    let repo = &out["repository"];
    assert_eq!(repo["imageTagMutability"], "IMMUTABLE_WITH_EXCLUSION");
    assert_eq!(
        repo["imageTagMutabilityExclusionFilters"],
        json!([{"filterType": "WILDCARD", "filter": "latest"}])
    );
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], true);
    assert_eq!(
        repo["encryptionConfiguration"]["kmsKey"],
        "arn:aws:kms:eu-west-1:123456789012:key/k"
    );
    h.create_repo("zz").await;

    // Describe: all, by name, missing, paginated.
    let all = h.call("DescribeRepositories", json!({})).await;
    let names: Vec<&str> = all["repositories"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["repositoryName"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["app", "web/frontend", "zz"]);
    assert!(all.get("nextToken").is_none());
    let some = h
        .call(
            "DescribeRepositories",
            json!({"repositoryNames": ["zz", "app"], "registryId": "123456789012"}),
        )
        .await;
    assert_eq!(some["repositories"][0]["repositoryName"], "zz");
    assert_eq!(some["repositories"][1]["repositoryName"], "app");
    let e = h
        .fail(
            "DescribeRepositories",
            json!({"repositoryNames": ["app", "nope"]}),
            "RepositoryNotFoundException",
        )
        .await;
    assert_eq!(
        e.message,
        "The repository with name 'nope' does not exist in the registry with id '123456789012'"
    );
    h.fail(
        "DescribeRepositories",
        json!({"maxResults": 1001}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "DescribeRepositories",
        json!({"maxResults": 0}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "DescribeRepositories",
        json!({"nextToken": "garbage"}),
        "InvalidParameterException",
    )
    .await;
    let mut token: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let mut input = json!({"maxResults": 1});
        if let Some(t) = &token {
            input["nextToken"] = json!(t);
        }
        let page = h.call("DescribeRepositories", input).await;
        for r in page["repositories"].as_array().expect("list") {
            paged.push(r["repositoryName"].as_str().expect("name").to_string());
        }
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, vec!["app", "web/frontend", "zz"]);

    // Settings.
    let out = h
        .call(
            "PutImageTagMutability",
            json!({"repositoryName": "zz", "imageTagMutability": "MUTABLE_WITH_EXCLUSION",
        "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "release-*"}]}),
        )
        .await;
    assert_eq!(out["imageTagMutability"], "MUTABLE_WITH_EXCLUSION");
    assert_eq!(
        out["imageTagMutabilityExclusionFilters"][0]["filter"],
        "release-*"
    );
    let out = h
        .call(
            "PutImageTagMutability",
            json!({"repositoryName": "zz", "imageTagMutability": "IMMUTABLE"}),
        )
        .await;
    assert!(out.get("imageTagMutabilityExclusionFilters").is_none());
    h.fail(
        "PutImageTagMutability",
        json!({"repositoryName": "nope", "imageTagMutability": "IMMUTABLE"}),
        "RepositoryNotFoundException",
    )
    .await;
    h.fail(
        "PutImageTagMutability",
        json!({"repositoryName": "zz"}),
        "InvalidParameterException",
    )
    .await;
    let out = h
        .call(
            "PutImageScanningConfiguration",
            json!({"repositoryName": "zz", "imageScanningConfiguration": {"scanOnPush": true}}),
        )
        .await;
    assert_eq!(out["imageScanningConfiguration"]["scanOnPush"], true);
    let d = h
        .call("DescribeRepositories", json!({"repositoryNames": ["zz"]}))
        .await;
    assert_eq!(d["repositories"][0]["imageTagMutability"], "IMMUTABLE");
    assert_eq!(
        d["repositories"][0]["imageScanningConfiguration"]["scanOnPush"],
        true
    );

    // Resource tags.
    let arn = "arn:aws:ecr:eu-west-1:123456789012:repository/app";
    h.call("TagResource", json!({"resourceArn": arn, "tags": [{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "api"}]})).await;
    let t = h
        .call("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(
        t["tags"],
        json!([{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "api"}])
    );
    h.call(
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["env", "absent"]}),
    )
    .await;
    let t = h
        .call("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(t["tags"], json!([{"Key": "team", "Value": "api"}]));
    let many: Vec<Value> = (0..50)
        .map(|i| json!({"Key": format!("k{i}"), "Value": "v"}))
        .collect();
    h.fail(
        "TagResource",
        json!({"resourceArn": arn, "tags": many}),
        "TooManyTagsException",
    )
    .await;
    h.fail(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"Key": "", "Value": "v"}]}),
        "InvalidTagParameterException",
    )
    .await;
    h.fail(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"Key": "k", "Value": "x".repeat(257)}]}),
        "InvalidTagParameterException",
    )
    .await;
    h.fail(
        "ListTagsForResource",
        json!({"resourceArn": "arn:aws:ecr:eu-west-1:123456789012:repository/nope"}),
        "RepositoryNotFoundException",
    )
    .await;
    h.fail(
        "ListTagsForResource",
        json!({"resourceArn": "not-an-arn"}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "ListTagsForResource",
        json!({"resourceArn": "arn:aws:ecs:eu-west-1:123456789012:cluster/app"}),
        "InvalidParameterException",
    )
    .await;

    // Delete.
    let out = h
        .call("DeleteRepository", json!({"repositoryName": "zz"}))
        .await;
    assert_eq!(out["repository"]["repositoryName"], "zz");
    h.fail(
        "DeleteRepository",
        json!({"repositoryName": "zz"}),
        "RepositoryNotFoundException",
    )
    .await;
    let manifest = h.image_manifest("app", "1").await;
    h.put_image("app", &manifest, Some("v1")).await;
    let e = h
        .fail(
            "DeleteRepository",
            json!({"repositoryName": "app"}),
            "RepositoryNotEmptyException",
        )
        .await;
    assert!(e
        .message
        .contains("cannot be deleted because it still contains images"));
    h.call(
        "DeleteRepository",
        json!({"repositoryName": "app", "force": true}),
    )
    .await;
    let d = h.call("DescribeRepositories", json!({})).await;
    assert_eq!(d["repositories"].as_array().expect("list").len(), 1);
}

#[tokio::test]
async fn authorization_token_logs_into_the_registry() {
    let h = Harness::new();
    let out = h.call("GetAuthorizationToken", json!({})).await;
    let data = &out["authorizationData"][0];
    assert_eq!(data["proxyEndpoint"], "http://localhost:5000");
    let expires = data["expiresAt"].as_f64().expect("expiresAt");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(expires > now + 3600.0, "token lives for hours");
    let token = STANDARD
        .decode(data["authorizationToken"].as_str().expect("token"))
        .expect("base64");
    let token = String::from_utf8(token).expect("utf8");
    assert!(token.starts_with("AWS:"));
    let req = Request::get("/v2/")
        .header(
            "authorization",
            format!("Basic {}", STANDARD.encode(&token)),
        )
        .body(Body::empty())
        .expect("request");
    assert_eq!(h.http(req).await.0, StatusCode::OK);
    let two = h
        .call(
            "GetAuthorizationToken",
            json!({"registryIds": ["123456789012", "123456789012"]}),
        )
        .await;
    assert_eq!(two["authorizationData"].as_array().expect("list").len(), 2);
    h.fail(
        "GetAuthorizationToken",
        json!({"registryIds": ["12"]}),
        "InvalidParameterException",
    )
    .await;

    // A public URL takes precedence over the host given to the API.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::new(dir.path());
    cfg.public_url = Some("https://registry.example.com:8443/".into());
    let reg = Registry::open(cfg).expect("open");
    let api = EcrApi::new(reg, "ignored:1".into());
    let out = api
        .call(&h.ctx, "GetAuthorizationToken", json!({}))
        .await
        .expect("token");
    assert_eq!(
        out["authorizationData"][0]["proxyEndpoint"],
        "https://registry.example.com:8443"
    );
    let out = api
        .call(&h.ctx, "CreateRepository", json!({"repositoryName": "r1"}))
        .await
        .expect("create");
    assert_eq!(
        out["repository"]["repositoryUri"],
        "registry.example.com:8443/r1"
    );
}

#[tokio::test]
async fn put_and_read_images() {
    let h = Harness::new();
    h.create_repo("app").await;
    h.fail(
        "PutImage",
        json!({"repositoryName": "nope", "imageManifest": "{}"}),
        "RepositoryNotFoundException",
    )
    .await;

    let m1 = h.image_manifest("app", "1").await;
    let out = h
        .call(
            "PutImage",
            json!({"repositoryName": "app", "imageManifest": m1, "imageTag": "v1"}),
        )
        .await;
    let d1 = digest_of(&m1);
    assert_eq!(
        out["image"]["imageId"],
        json!({"imageDigest": d1, "imageTag": "v1"})
    );
    assert_eq!(out["image"]["imageManifest"], m1.as_str());
    assert_eq!(out["image"]["imageManifestMediaType"], OCI_MANIFEST);
    assert_eq!(out["image"]["registryId"], "123456789012");

    let e = h
        .fail(
            "PutImage",
            json!({"repositoryName": "app", "imageManifest": m1, "imageTag": "v1"}),
            "ImageAlreadyExistsException",
        )
        .await;
    assert!(
        e.message.contains(&d1) && e.message.contains("'v1'"),
        "{}",
        e.message
    );
    h.fail(
        "PutImage",
        json!({"repositoryName": "app", "imageManifest": m1}),
        "ImageAlreadyExistsException",
    )
    .await;
    // The same manifest under another tag adds the tag.
    h.put_image("app", &m1, Some("latest")).await;
    h.call("PutImage", json!({"repositoryName": "app", "imageManifest": m1, "imageTag": "stable", "imageDigest": d1,
        "imageManifestMediaType": OCI_MANIFEST})).await;

    // Refusals.
    let other = Digest::sha256_of(b"other").to_string();
    h.fail("PutImage", json!({"repositoryName": "app", "imageManifest": m1, "imageTag": "x", "imageDigest": other}), "ImageDigestDoesNotMatchException").await;
    h.fail(
        "PutImage",
        json!({"repositoryName": "app", "imageManifest": "not json"}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "PutImage",
        json!({"repositoryName": "app", "imageManifest": m1, "imageTag": ".bad"}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "PutImage",
        json!({"repositoryName": "app", "imageManifest": m1, "imageTag": "y",
        "imageManifestMediaType": "application/vnd.docker.distribution.manifest.v2+json"}),
        "InvalidParameterException",
    )
    .await;
    let missing_layer = Digest::sha256_of(b"never uploaded").to_string();
    let bad = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": serde_json::from_str::<Value>(&m1).expect("json")["config"],
        "layers": [{"mediaType": OCI_LAYER, "digest": missing_layer, "size": 3}],
    })
    .to_string();
    let e = h
        .fail(
            "PutImage",
            json!({"repositoryName": "app", "imageManifest": bad, "imageTag": "broken"}),
            "LayersNotFoundException",
        )
        .await;
    assert!(e.message.contains(&missing_layer), "{}", e.message);
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": other, "size": 5}]})
    .to_string();
    h.fail(
        "PutImage",
        json!({"repositoryName": "app", "imageManifest": index}),
        "ReferencedImagesNotFoundException",
    )
    .await;

    // A second image takes over `latest` (the repository is mutable); an untagged third.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let m2 = h.image_manifest("app", "2").await;
    let d2 = h.put_image("app", &m2, Some("latest")).await;
    let m3 = h.image_manifest("app", "3").await;
    let d3 = h.put_image("app", &m3, None).await;

    // An image pushed through the distribution API is an ECR image too.
    let m4 = h.image_manifest("app", "4").await;
    let req = Request::put("/v2/app/manifests/dist")
        .header("authorization", h.basic_auth())
        .header("content-type", OCI_MANIFEST)
        .body(Body::from(m4.clone()))
        .expect("request");
    assert_eq!(h.http(req).await.0, StatusCode::CREATED);
    let d4 = digest_of(&m4);

    let all = h.call("ListImages", json!({"repositoryName": "app"})).await;
    let mut want = vec![
        (d1.clone(), Some("stable".to_string())),
        (d1.clone(), Some("v1".to_string())),
        (d2.clone(), Some("latest".to_string())),
        (d3.clone(), None),
        (d4.clone(), Some("dist".to_string())),
    ];
    want.sort();
    assert_eq!(ids(&all["imageIds"]), want);
    let tagged = h
        .call(
            "ListImages",
            json!({"repositoryName": "app", "filter": {"tagStatus": "TAGGED"}}),
        )
        .await;
    assert_eq!(ids(&tagged["imageIds"]).len(), 4);
    let untagged = h
        .call(
            "ListImages",
            json!({"repositoryName": "app", "filter": {"tagStatus": "UNTAGGED"}}),
        )
        .await;
    assert_eq!(ids(&untagged["imageIds"]), vec![(d3.clone(), None)]);
    let archived = h
        .call(
            "ListImages",
            json!({"repositoryName": "app", "filter": {"imageStatus": "ARCHIVED"}}),
        )
        .await;
    assert!(archived["imageIds"].as_array().expect("list").is_empty());
    h.fail(
        "ListImages",
        json!({"repositoryName": "app", "filter": {"tagStatus": "SOME"}}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "ListImages",
        json!({"repositoryName": "nope"}),
        "RepositoryNotFoundException",
    )
    .await;
    let mut token: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let mut input = json!({"repositoryName": "app", "maxResults": 2});
        if let Some(t) = &token {
            input["nextToken"] = json!(t);
        }
        let page = h.call("ListImages", input).await;
        assert!(page["imageIds"].as_array().expect("list").len() <= 2);
        paged.extend(ids(&page["imageIds"]));
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    paged.sort();
    assert_eq!(paged, want);

    // DescribeImages.
    let all = h
        .call("DescribeImages", json!({"repositoryName": "app"}))
        .await;
    let details = all["imageDetails"].as_array().expect("list");
    assert_eq!(details.len(), 4);
    let first = details
        .iter()
        .find(|d| d["imageDigest"] == d1.as_str())
        .expect("image 1");
    let mut tags: Vec<&str> = first["imageTags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, vec!["stable", "v1"]);
    let parsed: Value = serde_json::from_str(&m1).expect("json");
    let content = parsed["config"]["size"].as_u64().expect("size")
        + parsed["layers"][0]["size"].as_u64().expect("size");
    assert_eq!(
        first["imageSizeInBytes"].as_u64(),
        Some(content + m1.len() as u64)
    );
    assert_eq!(first["imageManifestMediaType"], OCI_MANIFEST);
    assert_eq!(first["artifactMediaType"], OCI_CONFIG);
    assert_eq!(first["repositoryName"], "app");
    assert!(first["imagePushedAt"].is_number());
    let third = details
        .iter()
        .find(|d| d["imageDigest"] == d3.as_str())
        .expect("image 3");
    assert!(
        third.get("imageTags").is_none(),
        "untagged images have no imageTags"
    );
    let one = h.call("DescribeImages", json!({"repositoryName": "app", "imageIds": [{"imageTag": "latest"}, {"imageDigest": d2}]})).await;
    assert_eq!(
        one["imageDetails"].as_array().expect("list").len(),
        1,
        "duplicates collapse"
    );
    assert_eq!(one["imageDetails"][0]["imageDigest"], d2.as_str());
    let e = h
        .fail(
            "DescribeImages",
            json!({"repositoryName": "app", "imageIds": [{"imageTag": "nope"}]}),
            "ImageNotFoundException",
        )
        .await;
    assert_eq!(
        e.message,
        "The image with imageId {imageDigest:'null', imageTag:'nope'} does not exist within the repository with name 'app' in the registry with id '123456789012'"
    );
    h.fail(
        "DescribeImages",
        json!({"repositoryName": "app", "imageIds": [{"imageTag": "v1", "imageDigest": d2}]}),
        "ImageNotFoundException",
    )
    .await;
    let untagged = h
        .call(
            "DescribeImages",
            json!({"repositoryName": "app", "filter": {"tagStatus": "UNTAGGED"}}),
        )
        .await;
    assert_eq!(untagged["imageDetails"].as_array().expect("list").len(), 1);
    let p1 = h
        .call(
            "DescribeImages",
            json!({"repositoryName": "app", "maxResults": 3}),
        )
        .await;
    let token = p1["nextToken"].as_str().expect("more");
    let p2 = h
        .call(
            "DescribeImages",
            json!({"repositoryName": "app", "maxResults": 3, "nextToken": token}),
        )
        .await;
    assert_eq!(
        p1["imageDetails"].as_array().expect("list").len()
            + p2["imageDetails"].as_array().expect("list").len(),
        4
    );
    assert!(p2.get("nextToken").is_none());

    // BatchGetImage.
    let out = h
        .call(
            "BatchGetImage",
            json!({
                "repositoryName": "app",
                "acceptedMediaTypes": [OCI_MANIFEST],
                "imageIds": [
                    {"imageTag": "v1"},
                    {"imageDigest": d2},
                    {"imageTag": "missing"},
                    {"imageTag": "v1", "imageDigest": d2},
                    {"imageDigest": "sha256:nothex"},
                    {},
                ],
            }),
        )
        .await;
    let images = out["images"].as_array().expect("images");
    assert_eq!(images.len(), 2);
    assert_eq!(
        images[0]["imageId"],
        json!({"imageDigest": d1, "imageTag": "v1"})
    );
    assert_eq!(images[0]["imageManifest"], m1.as_str());
    assert_eq!(images[1]["imageId"], json!({"imageDigest": d2}));
    assert_eq!(images[1]["imageManifestMediaType"], OCI_MANIFEST);
    let codes: Vec<&str> = out["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["failureCode"].as_str().expect("code"))
        .collect();
    assert_eq!(
        codes,
        vec![
            "ImageNotFound",
            "ImageTagDoesNotMatchDigest",
            "InvalidImageDigest",
            "MissingDigestAndTag"
        ]
    );
    assert_eq!(
        out["failures"][0]["imageId"],
        json!({"imageTag": "missing"})
    );
    assert_eq!(
        out["failures"][0]["failureReason"],
        "Requested image not found"
    );
    h.fail(
        "BatchGetImage",
        json!({"repositoryName": "app"}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "BatchGetImage",
        json!({"repositoryName": "app", "imageIds": []}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "BatchGetImage",
        json!({"repositoryName": "nope", "imageIds": [{"imageTag": "v1"}]}),
        "RepositoryNotFoundException",
    )
    .await;
}

#[tokio::test]
async fn tag_immutability() {
    let h = Harness::new();
    h.call(
        "CreateRepository",
        json!({"repositoryName": "app", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
        "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}]}),
    )
    .await;
    let m1 = h.image_manifest("app", "1").await;
    let m2 = h.image_manifest("app", "2").await;
    h.put_image("app", &m1, Some("v1")).await;
    h.put_image("app", &m1, Some("latest")).await;
    let e = h
        .fail(
            "PutImage",
            json!({"repositoryName": "app", "imageManifest": m2, "imageTag": "v1"}),
            "ImageTagAlreadyExistsException",
        )
        .await;
    assert_eq!(
        e.message,
        "The image tag 'v1' already exists in the 'app' repository and cannot be overwritten because the repository is immutable."
    );
    // Excluded from immutability.
    h.put_image("app", &m2, Some("latest")).await;
    h.call(
        "PutImageTagMutability",
        json!({"repositoryName": "app", "imageTagMutability": "MUTABLE"}),
    )
    .await;
    h.put_image("app", &m2, Some("v1")).await;
}

#[tokio::test]
async fn batch_delete_images() {
    let h = Harness::new();
    h.create_repo("app").await;
    let m1 = h.image_manifest("app", "1").await;
    let m2 = h.image_manifest("app", "2").await;
    let d1 = h.put_image("app", &m1, Some("a")).await;
    h.put_image("app", &m1, Some("b")).await;
    let d2 = h.put_image("app", &m2, Some("c")).await;

    // By tag: untags; the image stays while it has other tags.
    let out = h
        .call(
            "BatchDeleteImage",
            json!({"repositoryName": "app", "imageIds": [{"imageTag": "a"}]}),
        )
        .await;
    assert_eq!(
        out["imageIds"],
        json!([{"imageDigest": d1, "imageTag": "a"}])
    );
    assert_eq!(out["failures"], json!([]));
    let left = h.call("ListImages", json!({"repositoryName": "app"})).await;
    assert_eq!(ids(&left["imageIds"]).len(), 2);
    // Removing the last tag deletes the image.
    h.call(
        "BatchDeleteImage",
        json!({"repositoryName": "app", "imageIds": [{"imageTag": "b", "imageDigest": d1}]}),
    )
    .await;
    let left = h.call("ListImages", json!({"repositoryName": "app"})).await;
    assert_eq!(
        ids(&left["imageIds"]),
        vec![(d2.clone(), Some("c".to_string()))]
    );

    // By digest: the image and its tags; failures for the rest.
    let out = h
        .call(
            "BatchDeleteImage",
            json!({"repositoryName": "app", "imageIds": [
                {"imageDigest": d2},
                {"imageDigest": d1},
                {"imageTag": "zz"},
                {"imageDigest": "bogus"},
                {"imageTag": "c", "imageDigest": d1},
            ]}),
        )
        .await;
    assert_eq!(
        out["imageIds"],
        json!([{"imageDigest": d2, "imageTag": "c"}])
    );
    let codes: Vec<&str> = out["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["failureCode"].as_str().expect("code"))
        .collect();
    assert_eq!(
        codes,
        vec![
            "InvalidImageDigest",
            "ImageNotFound",
            "ImageNotFound",
            "ImageNotFound"
        ]
    );
    let left = h.call("ListImages", json!({"repositoryName": "app"})).await;
    assert!(left["imageIds"].as_array().expect("list").is_empty());
    h.fail(
        "BatchDeleteImage",
        json!({"repositoryName": "nope", "imageIds": [{"imageTag": "a"}]}),
        "RepositoryNotFoundException",
    )
    .await;

    // Manifest lists protect their children.
    let child = h.image_manifest("app", "child").await;
    let dc = h.put_image("app", &child, None).await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": dc, "size": child.len(),
         "platform": {"architecture": "amd64", "os": "linux"}}]})
    .to_string();
    let di = h.put_image("app", &index, Some("multi")).await;
    let listed = h
        .call(
            "DescribeImages",
            json!({"repositoryName": "app", "imageIds": [{"imageTag": "multi"}]}),
        )
        .await;
    assert_eq!(
        listed["imageDetails"][0]["imageManifestMediaType"],
        OCI_INDEX
    );
    let out = h
        .call(
            "BatchDeleteImage",
            json!({"repositoryName": "app", "imageIds": [{"imageDigest": dc}]}),
        )
        .await;
    assert_eq!(
        out["failures"][0]["failureCode"],
        "ImageReferencedByManifestList"
    );
    assert!(out["failures"][0]["failureReason"]
        .as_str()
        .expect("reason")
        .contains(&di));
    let out = h.call("BatchDeleteImage", json!({"repositoryName": "app", "imageIds": [{"imageDigest": di}, {"imageDigest": dc}]})).await;
    assert_eq!(
        out["imageIds"],
        json!([{"imageDigest": di, "imageTag": "multi"}, {"imageDigest": dc}])
    );
}

const KEEP_ONE_UNTAGGED: &str = r#"{"rules":[{"rulePriority":1,"description":"keep one untagged image","selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;

#[tokio::test]
async fn lifecycle_policies() {
    let h = Harness::new();
    h.create_repo("app").await;
    h.fail(
        "GetLifecyclePolicy",
        json!({"repositoryName": "app"}),
        "LifecyclePolicyNotFoundException",
    )
    .await;
    h.fail(
        "DeleteLifecyclePolicy",
        json!({"repositoryName": "app"}),
        "LifecyclePolicyNotFoundException",
    )
    .await;
    h.fail(
        "StartLifecyclePolicyPreview",
        json!({"repositoryName": "app"}),
        "LifecyclePolicyNotFoundException",
    )
    .await;
    h.fail(
        "GetLifecyclePolicyPreview",
        json!({"repositoryName": "app"}),
        "LifecyclePolicyPreviewNotFoundException",
    )
    .await;
    h.fail(
        "PutLifecyclePolicy",
        json!({"repositoryName": "nope", "lifecyclePolicyText": KEEP_ONE_UNTAGGED}),
        "RepositoryNotFoundException",
    )
    .await;
    h.fail(
        "PutLifecyclePolicy",
        json!({"repositoryName": "app", "lifecyclePolicyText": "{}"}),
        "InvalidParameterException",
    )
    .await;
    let bad = KEEP_ONE_UNTAGGED.replace("\"untagged\"", "\"tagged\"");
    let e = h
        .fail(
            "PutLifecyclePolicy",
            json!({"repositoryName": "app", "lifecyclePolicyText": bad}),
            "InvalidParameterException",
        )
        .await;
    assert!(
        e.message.starts_with("Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Lifecycle policy validation failure: "),
        "{}",
        e.message
    );
    let garbage = format!("{{{}", " ".repeat(120));
    let e = h
        .fail(
            "PutLifecyclePolicy",
            json!({"repositoryName": "app", "lifecyclePolicyText": garbage}),
            "InvalidParameterException",
        )
        .await;
    assert!(
        e.message
            .contains("Could not map policyString into LifecyclePolicy."),
        "{}",
        e.message
    );

    // Three untagged images and a tagged one, pushed a few milliseconds apart.
    let mut untagged = Vec::new();
    for i in 0..3 {
        let m = h.image_manifest("app", &format!("u{i}")).await;
        untagged.push(h.put_image("app", &m, None).await);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let m = h.image_manifest("app", "tagged").await;
    let tagged = h.put_image("app", &m, Some("v1")).await;

    let out = h
        .call(
            "PutLifecyclePolicy",
            json!({"repositoryName": "app", "lifecyclePolicyText": KEEP_ONE_UNTAGGED}),
        )
        .await;
    assert_eq!(out["lifecyclePolicyText"], KEEP_ONE_UNTAGGED);
    let got = h
        .call("GetLifecyclePolicy", json!({"repositoryName": "app"}))
        .await;
    assert_eq!(got["lifecyclePolicyText"], KEEP_ONE_UNTAGGED);
    assert!(got["lastEvaluatedAt"].is_number());

    // Preview: the two older untagged images expire under rule 1.
    let start = h
        .call(
            "StartLifecyclePolicyPreview",
            json!({"repositoryName": "app"}),
        )
        .await;
    assert_eq!(start["status"], "COMPLETE");
    let preview = h
        .call(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app"}),
        )
        .await;
    assert_eq!(preview["status"], "COMPLETE");
    assert_eq!(preview["summary"]["expiringImageTotalCount"], 2);
    let results = preview["previewResults"].as_array().expect("results");
    let digests: Vec<&str> = results
        .iter()
        .map(|r| r["imageDigest"].as_str().expect("digest"))
        .collect();
    assert_eq!(digests, vec![untagged[0].as_str(), untagged[1].as_str()]);
    assert_eq!(results[0]["action"], json!({"type": "EXPIRE"}));
    assert_eq!(results[0]["appliedRulePriority"], 1);
    assert!(results[0]["imagePushedAt"].is_number());
    let page = h
        .call(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app", "maxResults": 1}),
        )
        .await;
    assert_eq!(page["previewResults"].as_array().expect("list").len(), 1);
    let next = h
        .call(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app", "maxResults": 1,
        "nextToken": page["nextToken"].as_str().expect("token")}),
        )
        .await;
    assert_eq!(
        next["previewResults"][0]["imageDigest"],
        untagged[1].as_str()
    );
    assert!(next.get("nextToken").is_none());
    let tagged_only = h
        .call(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app", "filter": {"tagStatus": "TAGGED"}}),
        )
        .await;
    assert!(tagged_only["previewResults"]
        .as_array()
        .expect("list")
        .is_empty());
    let by_id = h
        .call(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app", "imageIds": [{"imageDigest": untagged[1]}]}),
        )
        .await;
    assert_eq!(by_id["previewResults"].as_array().expect("list").len(), 1);

    // A preview of another policy text leaves the stored policy alone.
    let everything = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
    let start = h
        .call(
            "StartLifecyclePolicyPreview",
            json!({"repositoryName": "app", "lifecyclePolicyText": everything}),
        )
        .await;
    assert_eq!(start["lifecyclePolicyText"], everything);
    let preview = h
        .call(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app"}),
        )
        .await;
    assert_eq!(preview["summary"]["expiringImageTotalCount"], 3);
    let got = h
        .call("GetLifecyclePolicy", json!({"repositoryName": "app"}))
        .await;
    assert_eq!(got["lifecyclePolicyText"], KEEP_ONE_UNTAGGED);

    // Applying deletes what the stored policy expires, and only that.
    let deleted = berth_registry::lifecycle::apply_lifecycle_policies(&h.reg)
        .await
        .expect("apply");
    assert_eq!(deleted, 2);
    let left = h.call("ListImages", json!({"repositoryName": "app"})).await;
    let mut want = vec![
        (untagged[2].clone(), None),
        (tagged.clone(), Some("v1".to_string())),
    ];
    want.sort();
    assert_eq!(ids(&left["imageIds"]), want);
    assert_eq!(
        berth_registry::lifecycle::apply_lifecycle_policies(&h.reg)
            .await
            .expect("apply"),
        0
    );

    let out = h
        .call("DeleteLifecyclePolicy", json!({"repositoryName": "app"}))
        .await;
    assert_eq!(out["lifecyclePolicyText"], KEEP_ONE_UNTAGGED);
    assert!(out["lastEvaluatedAt"].is_number());
    h.fail(
        "GetLifecyclePolicy",
        json!({"repositoryName": "app"}),
        "LifecyclePolicyNotFoundException",
    )
    .await;

    // Deleting the repository drops its preview.
    h.call(
        "DeleteRepository",
        json!({"repositoryName": "app", "force": true}),
    )
    .await;
    h.create_repo("app").await;
    h.fail(
        "GetLifecyclePolicyPreview",
        json!({"repositoryName": "app"}),
        "LifecyclePolicyPreviewNotFoundException",
    )
    .await;
}

#[tokio::test]
async fn unknown_operations_and_bad_input() {
    let h = Harness::new();
    let e = h
        .api
        .call(&h.ctx, "SetRepositoryPolicy", json!({}))
        .await
        .expect_err("unserved");
    assert_eq!(e.code, "UnknownOperationException");
    let e = h
        .api
        .call(&h.ctx, "NoSuchThing", json!({}))
        .await
        .expect_err("unknown");
    assert_eq!(e.code, "UnknownOperationException");
    let e = h
        .api
        .call(&h.ctx, "DescribeRepositories", json!([1]))
        .await
        .expect_err("array");
    assert_eq!(e.code, "SerializationException");
    assert_eq!(
        h.api.target_prefix(),
        "AmazonEC2ContainerRegistry_V20150921"
    );
    assert_eq!(h.api.signing_name(), Some("ecr"));
    h.fail(
        "DescribeRepositories",
        json!({"registryId": "abc"}),
        "InvalidParameterException",
    )
    .await;
    h.fail(
        "ListImages",
        json!({"repositoryName": "app", "registryId": "000000000001"}),
        "AccessDeniedException",
    )
    .await;
}

/// The validator itself rejects what botocore's model does not allow.
#[test]
fn validator_catches_shape_mistakes() {
    let Some(m) = model() else {
        return;
    };
    let ok = json!({"repository": {"repositoryName": "ab", "createdAt": 1.5, "imageTagMutability": "MUTABLE"}});
    validate(m, "CreateRepositoryResponse", &ok, "ok");
    for bad in [
        json!({"repository": {"repositoryname": "ab"}}),
        json!({"repository": {"createdAt": "yesterday"}}),
        json!({"repository": {"imageTagMutability": "SOMETIMES"}}),
        json!({"repository": {"imageScanningConfiguration": {"scanOnPush": "yes"}}}),
        json!({"repository": {"imageTagMutabilityExclusionFilters": [{"filter": "x"}]}}),
    ] {
        let caught =
            std::panic::catch_unwind(|| validate(m, "CreateRepositoryResponse", &bad, "bad"));
        assert!(caught.is_err(), "accepted {bad}");
    }
}
