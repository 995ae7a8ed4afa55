//! The ECR control API (AWS JSON 1.1, target prefix `AmazonEC2ContainerRegistry_V20150921`)
//! over the registry's metadata store, so the `aws ecr` CLI and boto3 work unmodified.
//!
//! Member names, shapes and error `__type`s follow botocore's `ecr/2015-09-21` model; messages
//! follow ECR's wording. Operations of the model that are not served here answer
//! `UnknownOperationException`.
//!
//! - `repositories`: repositories, their settings and resource tags, authorization tokens;
//! - `images`: listing, describing, fetching, deleting and putting image manifests;
//! - `policies`: lifecycle policies and their previews;
//! - `store`: the transactional store queries these need.

mod images;
mod input;
mod policies;
mod repositories;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use berth_aws::json::{epoch_seconds, JsonApi, RequestContext};
use berth_aws::AwsError;
use serde_json::Value;

use crate::error::error_chain;
use crate::meta::{MetaError, RepoRecord};
use crate::Registry;

use input::{invalid_param, Input};

/// `X-Amz-Target` prefix of ECR.
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";
/// SigV4 service name of ECR.
pub const SIGNING_NAME: &str = "ecr";

/// The ECR API of one registry.
pub struct EcrApi {
    reg: Arc<Registry>,
    /// `host[:port]` clients reach the registry at (repository URIs).
    registry_host: String,
    /// `scheme://host[:port]` (the authorization token's proxy endpoint).
    proxy_endpoint: String,
    /// The last lifecycle policy preview of each repository (previews are short-lived in ECR
    /// too; they do not survive a restart).
    previews: Arc<Mutex<HashMap<String, policies::Preview>>>,
}

/// The ECR API of `reg`, for an `AwsEndpoint`.
///
/// `registry_host` is the `host[:port]` (optionally with an `http://` / `https://` scheme)
/// Docker clients reach the registry at; it names repositories (`<host>/<name>`) and is the
/// authorization token's proxy endpoint. `reg.cfg.public_url`, when set, takes precedence.
pub fn ecr_api(reg: &Arc<Registry>, registry_host: String) -> Arc<dyn JsonApi> {
    Arc::new(EcrApi::new(reg.clone(), registry_host))
}

impl EcrApi {
    /// See [`ecr_api`].
    pub fn new(reg: Arc<Registry>, registry_host: String) -> Self {
        let configured = reg.cfg.public_url.clone().unwrap_or(registry_host);
        let (scheme, rest) = match configured.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r.to_string()),
            None => ("http".to_string(), configured),
        };
        let host = rest
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default()
            .to_string();
        EcrApi {
            reg,
            proxy_endpoint: format!("{scheme}://{host}"),
            registry_host: host,
            previews: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The registry id (account) of this registry.
    fn account(&self) -> &str {
        &self.reg.cfg.account_id
    }

    /// What request handlers need, cheap to move into blocking tasks.
    fn env(&self, ctx: &RequestContext) -> Env {
        Env {
            reg: self.reg.clone(),
            account: self.account().to_string(),
            region: ctx.region.clone(),
            host: self.registry_host.clone(),
        }
    }
}

#[async_trait::async_trait]
impl JsonApi for EcrApi {
    fn target_prefix(&self) -> &'static str {
        TARGET_PREFIX
    }

    fn signing_name(&self) -> Option<&'static str> {
        Some(SIGNING_NAME)
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        input: Value,
    ) -> Result<Value, AwsError> {
        let input = Input::new(&input)?;
        let env = self.env(ctx);
        match operation {
            "CreateRepository" => repositories::create(&env, &input).await,
            "DescribeRepositories" => repositories::describe(&env, &input).await,
            "DeleteRepository" => {
                let out = repositories::delete(&env, &input).await?;
                if let Some(name) = out["repository"]["repositoryName"].as_str() {
                    policies::forget_preview(&self.previews, name);
                }
                Ok(out)
            }
            "PutImageTagMutability" => repositories::put_tag_mutability(&env, &input).await,
            "PutImageScanningConfiguration" => repositories::put_scanning(&env, &input).await,
            "TagResource" => repositories::tag_resource(&env, &input).await,
            "UntagResource" => repositories::untag_resource(&env, &input).await,
            "ListTagsForResource" => repositories::list_tags(&env, &input).await,
            "GetAuthorizationToken" => {
                repositories::authorization_token(&env, &self.proxy_endpoint, &input)
            }
            "ListImages" => images::list(&env, &input).await,
            "DescribeImages" => images::describe(&env, &input).await,
            "BatchGetImage" => images::batch_get(&env, &input).await,
            "BatchDeleteImage" => images::batch_delete(&env, &input).await,
            "PutImage" => images::put(&env, &input).await,
            "PutLifecyclePolicy" => policies::put(&env, &input).await,
            "GetLifecyclePolicy" => policies::get(&env, &input).await,
            "DeleteLifecyclePolicy" => policies::delete(&env, &input).await,
            "StartLifecyclePolicyPreview" => {
                policies::start_preview(&env, &self.previews, &input).await
            }
            "GetLifecyclePolicyPreview" => {
                policies::get_preview(&env, &self.previews, &input).await
            }
            other => Err(AwsError::unknown_operation(format!(
                "Unknown operation {TARGET_PREFIX}.{other}"
            ))),
        }
    }
}

/// Per-request state of a handler.
#[derive(Clone)]
struct Env {
    reg: Arc<Registry>,
    account: String,
    region: String,
    host: String,
}

impl Env {
    /// Checks an optional `registryId` member: well formed, and this registry's.
    fn check_registry(&self, input: &Input<'_>) -> Result<(), AwsError> {
        let Some(id) = input.str("registryId")? else {
            return Ok(());
        };
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid_param(
                "registryId",
                "must satisfy regular expression '[0-9]{12}'",
            ));
        }
        if id != self.account {
            return Err(AwsError::client(
                "AccessDeniedException",
                format!(
                    "Registry with id '{id}' is not served here; this registry's id is '{}'",
                    self.account
                ),
            ));
        }
        Ok(())
    }

    fn partition(&self) -> &'static str {
        if self.region.starts_with("cn-") {
            "aws-cn"
        } else if self.region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        }
    }

    fn repository_arn(&self, name: &str) -> String {
        berth_aws::arn::arn(
            self.partition(),
            "ecr",
            &self.region,
            &self.account,
            &format!("repository/{name}"),
        )
    }

    /// The `Repository` shape.
    fn repository_json(&self, name: &str, rec: &RepoRecord) -> Value {
        let mut encryption = serde_json::json!({
            "encryptionType": rec.encryption_type.as_deref().unwrap_or("AES256"),
        });
        if let Some(k) = &rec.kms_key {
            encryption["kmsKey"] = Value::from(k.as_str());
        }
        let mut repo = serde_json::json!({
            "repositoryArn": self.repository_arn(name),
            "registryId": self.account,
            "repositoryName": name,
            "repositoryUri": format!("{}/{name}", self.host),
            "createdAt": timestamp(rec.created_at),
            "imageTagMutability": rec.tag_mutability.as_str(),
            "imageScanningConfiguration": { "scanOnPush": rec.scan_on_push },
            "encryptionConfiguration": encryption,
        });
        if !rec.mutability_exclusions.is_empty() {
            repo["imageTagMutabilityExclusionFilters"] =
                exclusion_filters_json(&rec.mutability_exclusions);
        }
        repo
    }

    /// Maps a store error: the store's "not found"/"exists" cases become ECR's exceptions,
    /// anything else a logged `ServerException`.
    fn store_error(&self, e: MetaError) -> AwsError {
        match e {
            MetaError::RepoNotFound(name) => self.repo_not_found(&name),
            MetaError::RepoExists(name) => AwsError::client(
                "RepositoryAlreadyExistsException",
                format!(
                    "The repository with name '{name}' already exists in the registry with id '{}'",
                    self.account
                ),
            ),
            MetaError::RepoNotEmpty(name) => AwsError::client(
                "RepositoryNotEmptyException",
                format!(
                    "The repository with name '{name}' in registry with id '{}' cannot be deleted because it still contains images",
                    self.account
                ),
            ),
            MetaError::TagImmutable { repo, tag } => AwsError::client(
                "ImageTagAlreadyExistsException",
                format!(
                    "The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the repository is immutable."
                ),
            ),
            other => server_error(&other),
        }
    }

    fn repo_not_found(&self, name: &str) -> AwsError {
        AwsError::client(
            "RepositoryNotFoundException",
            format!(
                "The repository with name '{name}' does not exist in the registry with id '{}'",
                self.account
            ),
        )
    }

    /// Runs store work off the async runtime, mapping store errors.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Registry) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, AwsError> {
        let reg = self.reg.clone();
        match tokio::task::spawn_blocking(move || f(&reg)).await {
            Ok(r) => r.map_err(|e| self.store_error(e)),
            Err(e) => Err(server_error(&e)),
        }
    }

    /// The repository's record, or `RepositoryNotFoundException`.
    async fn repo(&self, name: &str) -> Result<RepoRecord, AwsError> {
        let n = name.to_string();
        self.blocking(move |r| r.meta.get_repo(&n))
            .await?
            .ok_or_else(|| self.repo_not_found(name))
    }
}

/// A `ServerException` for an internal failure, logged with its cause.
fn server_error(e: &dyn std::error::Error) -> AwsError {
    tracing::error!(error = %error_chain(e), "ecr api internal error");
    AwsError::server("ServerException", "An internal error occurred")
}

/// An AWS timestamp from milliseconds since the epoch.
fn timestamp(ms: u64) -> Value {
    epoch_seconds(UNIX_EPOCH + Duration::from_millis(ms))
}

fn exclusion_filters_json(filters: &[String]) -> Value {
    Value::Array(
        filters
            .iter()
            .map(|f| serde_json::json!({ "filterType": "WILDCARD", "filter": f }))
            .collect(),
    )
}
