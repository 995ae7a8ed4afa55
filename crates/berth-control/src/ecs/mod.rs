//! The ECS API (AWS JSON 1.1, target prefix `AmazonEC2ContainerServiceV20141113`) over the
//! control plane's state, so the unmodified `aws ecs` CLI and boto3 drive Berth.
//!
//! Member names, shapes and error `__type`s follow botocore's `ecs/2014-11-13` model. Operations
//! of the model not served here answer `UnknownOperationException`.
//!
//! - `clusters`: clusters and capacity providers;
//! - `taskdefs`: task definition families and revisions;
//! - `tasks`: RunTask/StartTask (through the scheduler), StopTask, DescribeTasks, ListTasks and
//!   the agents' SubmitTaskStateChange;
//! - `instances`: container instances and their attributes;
//! - `services`: CreateService, UpdateService, DeleteService, DescribeServices, ListServices
//!   (the controller that carries them out is `crate::services`);
//! - `tags`: resource tags of every kind of resource.

pub mod clusters;
pub mod fargate;
pub(crate) mod instances;
pub(crate) mod services;
mod tags;
mod taskdefs;
pub(crate) mod tasks;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_aws::json::{JsonApi, RequestContext};
use berth_aws::AwsError;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::control::Control;
use crate::proto::ECS_TARGET_PREFIX;
use crate::services::TargetRegistry;

/// SigV4 service name of ECS.
pub const SIGNING_NAME: &str = "ecs";

/// The ECS API of a control plane.
pub struct EcsApi {
    pub(crate) control: Arc<Control>,
    pub(crate) lb: Option<Arc<dyn TargetRegistry>>,
    /// `X-Amz-Target` prefix: ECS's, or Berth's own Fargate operations.
    prefix: &'static str,
}

/// `X-Amz-Target` prefix of Berth's Fargate operations (`ReclaimSpotCapacity`), served
/// next to ECS with the same signing name and credentials.
pub const FARGATE_TARGET_PREFIX: &str = "BerthFargate_V1";

/// Berth's Fargate operations of `control`, for an `AwsEndpoint`.
pub fn fargate_api(control: &Arc<Control>) -> Arc<dyn JsonApi> {
    Arc::new(EcsApi {
        control: control.clone(),
        lb: None,
        prefix: FARGATE_TARGET_PREFIX,
    })
}

/// The ECS API of `control`, for an `AwsEndpoint`; `lb` is the load balancer services may
/// name target groups of (none: services with `loadBalancers` are refused).
pub fn ecs_api(control: &Arc<Control>, lb: Option<Arc<dyn TargetRegistry>>) -> Arc<dyn JsonApi> {
    Arc::new(EcsApi {
        control: control.clone(),
        lb,
        prefix: ECS_TARGET_PREFIX,
    })
}

/// Who calls, where: what every handler needs.
pub(crate) struct Ctx<'a> {
    pub control: &'a Control,
    pub region: &'a str,
    pub account: &'a str,
    pub lb: Option<&'a dyn TargetRegistry>,
}

impl Ctx<'_> {
    pub fn arn(&self, resource: &str) -> String {
        format!("arn:aws:ecs:{}:{}:{resource}", self.region, self.account)
    }
}

#[async_trait::async_trait]
impl JsonApi for EcsApi {
    fn target_prefix(&self) -> &'static str {
        self.prefix
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
        if !input.is_object() {
            return Err(AwsError::serialization("Expected a JSON object"));
        }
        let control = self.control.clone();
        let region = ctx.region.clone();
        let account = ctx.account_id.clone();
        let op = operation.to_string();
        let lb = self.lb.clone();
        let fargate = self.prefix == FARGATE_TARGET_PREFIX;
        // The store commits (fsync) block: keep them off the async workers.
        tokio::task::spawn_blocking(move || {
            let c = Ctx {
                control: &control,
                region: &region,
                account: &account,
                lb: lb.as_deref(),
            };
            if fargate {
                dispatch_fargate(&c, &op, input)
            } else {
                dispatch(&c, &op, input)
            }
        })
        .await
        .map_err(|e| AwsError::server("ServerException", format!("request failed: {e}")))?
    }
}

/// Berth's Fargate operations ([`FARGATE_TARGET_PREFIX`]).
pub(crate) fn dispatch_fargate(c: &Ctx<'_>, op: &str, input: Value) -> Result<Value, AwsError> {
    match op {
        "ReclaimSpotCapacity" => fargate::reclaim_spot(c, input),
        other => Err(AwsError::unknown_operation(format!(
            "operation {other} is not one of Berth's Fargate operations"
        ))),
    }
}

pub(crate) fn dispatch(c: &Ctx<'_>, op: &str, input: Value) -> Result<Value, AwsError> {
    match op {
        "CreateCluster" => clusters::create(c, input),
        "DescribeClusters" => clusters::describe(c, input),
        "ListClusters" => clusters::list(c, input),
        "DeleteCluster" => clusters::delete(c, input),
        "UpdateCluster" => clusters::update(c, input),
        "UpdateClusterSettings" => clusters::update_settings(c, input),
        "PutClusterCapacityProviders" => clusters::put_capacity_providers(c, input),
        "CreateCapacityProvider" => clusters::create_capacity_provider(c, input),
        "DescribeCapacityProviders" => clusters::describe_capacity_providers(c, input),
        "DeleteCapacityProvider" => clusters::delete_capacity_provider(c, input),
        "RegisterTaskDefinition" => taskdefs::register(c, input),
        "DescribeTaskDefinition" => taskdefs::describe(c, input),
        "DeregisterTaskDefinition" => taskdefs::deregister(c, input),
        "DeleteTaskDefinitions" => taskdefs::delete(c, input),
        "ListTaskDefinitions" => taskdefs::list(c, input),
        "ListTaskDefinitionFamilies" => taskdefs::list_families(c, input),
        "RunTask" => tasks::run(c, input),
        "StartTask" => tasks::start(c, input),
        "StopTask" => tasks::stop(c, input),
        "DescribeTasks" => tasks::describe(c, input),
        "ListTasks" => tasks::list(c, input),
        "SubmitTaskStateChange" => tasks::submit_state_change(c, input),
        "RegisterContainerInstance" => instances::register(c, input),
        "DeregisterContainerInstance" => instances::deregister(c, input),
        "DescribeContainerInstances" => instances::describe(c, input),
        "ListContainerInstances" => instances::list(c, input),
        "UpdateContainerInstancesState" => instances::update_state(c, input),
        "PutAttributes" => instances::put_attributes(c, input),
        "DeleteAttributes" => instances::delete_attributes(c, input),
        "ListAttributes" => instances::list_attributes(c, input),
        "CreateService" => services::create(c, input),
        "UpdateService" => services::update(c, input),
        "DeleteService" => services::delete(c, input),
        "DescribeServices" => services::describe(c, input),
        "ListServices" => services::list(c, input),
        "TagResource" => tags::tag(c, input),
        "UntagResource" => tags::untag(c, input),
        "ListTagsForResource" => tags::list(c, input),
        other => Err(AwsError::unknown_operation(format!(
            "operation {other} is not supported by Berth's ECS API"
        ))),
    }
}

// ---- shared helpers ------------------------------------------------------------------------

/// Parses a request into its typed shape (unknown members and wrong types are refused).
pub(crate) fn parse<T: DeserializeOwned>(input: Value) -> Result<T, AwsError> {
    serde_json::from_value(strip_nulls(input))
        .map_err(|e| invalid_param(format!("Invalid request: {e}")))
}

/// botocore never sends `null`; a hand-made request may: treat it as absent.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

pub(crate) fn invalid_param(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameterException", message)
}

pub(crate) fn client_error(message: impl Into<String>) -> AwsError {
    AwsError::client("ClientException", message)
}

pub(crate) fn cluster_not_found() -> AwsError {
    AwsError::client("ClusterNotFoundException", "Cluster not found.")
}

/// The last path segment of an ARN (`.../name`), or the string itself.
pub(crate) fn arn_or_name(s: &str) -> &str {
    if s.starts_with("arn:") {
        s.rsplit('/').next().unwrap_or(s)
    } else {
        s
    }
}

/// The cluster name of a `cluster` member (name or ARN; absent: `default`).
pub(crate) fn cluster_name(s: Option<&str>) -> String {
    match s {
        None | Some("") => "default".to_string(),
        Some(s) if s.starts_with("arn:") => s
            .split_once(":cluster/")
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| s.to_string()),
        Some(s) => s.to_string(),
    }
}

/// An ACTIVE cluster, or `ClusterNotFoundException`.
pub(crate) fn active_cluster(
    s: &crate::control::State,
    region: &str,
    name: &str,
) -> Result<crate::model::Cluster, AwsError> {
    s.region(region)
        .and_then(|r| r.clusters.get(name))
        .filter(|c| c.status == "ACTIVE")
        .cloned()
        .ok_or_else(cluster_not_found)
}

/// `maxResults` (1–`max`, default `max`) and the position after `nextToken`.
pub(crate) fn page_params(
    max_results: Option<i64>,
    next_token: Option<&str>,
    max: usize,
) -> Result<(usize, Option<String>), AwsError> {
    let n = match max_results {
        None => max,
        Some(n) if n >= 1 && n as usize <= max => n as usize,
        Some(n) => {
            return Err(invalid_param(format!(
                "maxResults must be between 1 and {max}, got {n}"
            )))
        }
    };
    let after = match next_token {
        None | Some("") => None,
        Some(t) => Some(
            URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| invalid_param("Invalid nextToken"))?,
        ),
    };
    Ok((n, after))
}

/// One page of `items` (sorted by key) after `after`, with the token of the next page.
pub(crate) fn paginate<T>(
    items: Vec<(String, T)>,
    n: usize,
    after: Option<&str>,
) -> (Vec<T>, Option<String>) {
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| after.map(|a| k.as_str() > a).unwrap_or(true))
        .collect();
    let more = rest.len() > n;
    rest.truncate(n);
    let token = if more {
        rest.last()
            .map(|(k, _)| URL_SAFE_NO_PAD.encode(k.as_bytes()))
    } else {
        None
    };
    (rest.into_iter().map(|(_, v)| v).collect(), token)
}

/// Adds `nextToken` to an output when there is one.
pub(crate) fn with_token(mut v: Value, token: Option<String>) -> Value {
    if let Some(t) = token {
        v["nextToken"] = t.into();
    }
    v
}

/// A 32-hex-digit id (ECS task and instance ids).
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Tags of a request, validated (ECS's limits).
pub(crate) fn parse_tags(
    tags: &[crate::taskdef::model::Tag],
) -> Result<Vec<crate::model::Tag>, AwsError> {
    if tags.len() > 50 {
        return Err(invalid_param("Too many tags: at most 50 per resource"));
    }
    let mut out: Vec<crate::model::Tag> = Vec::new();
    for t in tags {
        let key = t.key.clone().unwrap_or_default();
        let value = t.value.clone().unwrap_or_default();
        if key.is_empty() || key.chars().count() > 128 {
            return Err(invalid_param("Tag keys must be 1 to 128 characters"));
        }
        if value.chars().count() > 256 {
            return Err(invalid_param("Tag values must be at most 256 characters"));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid_param(
                "Tag keys may not start with 'aws:' (reserved for AWS use)",
            ));
        }
        match out.iter_mut().find(|x| x.key == key) {
            Some(x) => x.value = value,
            None => out.push(crate::model::Tag { key, value }),
        }
    }
    Ok(out)
}

/// Whether `include` asks for `what` (e.g. `TAGS`).
pub(crate) fn includes(include: &Option<Vec<String>>, what: &str) -> bool {
    include
        .as_ref()
        .map(|v| v.iter().any(|x| x == what))
        .unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod tests;
