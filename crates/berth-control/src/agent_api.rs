//! The server side of the agent protocol's long poll (`BerthAgent_V1.Poll`, see [`crate::proto`]).

use std::sync::Arc;
use std::time::Duration;

use berth_aws::json::{JsonApi, RequestContext};
use berth_aws::AwsError;
use serde_json::Value;

use crate::control::Control;
use crate::ecs::SIGNING_NAME;
use crate::proto::{
    AssignedTask, PollRequest, PollResponse, AGENT_TARGET_PREFIX, MAX_POLL_WAIT_SECONDS,
};

/// The agent API of a control plane, for an `AwsEndpoint`.
pub fn agent_api(control: &Arc<Control>) -> Arc<dyn JsonApi> {
    Arc::new(AgentApi {
        control: control.clone(),
    })
}

struct AgentApi {
    control: Arc<Control>,
}

/// Ends a poll's "in flight" mark however the poll ends (also when the client goes away).
struct InFlight<'a> {
    control: &'a Control,
    arn: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.control.poll_seen(&self.arn, false);
    }
}

#[async_trait::async_trait]
impl JsonApi for AgentApi {
    fn target_prefix(&self) -> &'static str {
        AGENT_TARGET_PREFIX
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
        match operation {
            "Poll" => {
                let req: PollRequest = crate::ecs::parse(input)?;
                let out = poll(&self.control, &ctx.region, req).await?;
                serde_json::to_value(out)
                    .map_err(|e| AwsError::internal(format!("cannot encode: {e}")))
            }
            other => Err(AwsError::unknown_operation(format!(
                "operation {other} is not part of the agent protocol"
            ))),
        }
    }
}

async fn poll(control: &Control, region: &str, req: PollRequest) -> Result<PollResponse, AwsError> {
    let cluster = crate::ecs::cluster_name(Some(&req.cluster));
    let arn = control
        .read(|s| {
            crate::ecs::instances::find(s, region, &cluster, &req.container_instance_arn)
                .filter(|i| i.status != "INACTIVE")
                .map(|i| i.arn.clone())
        })
        .ok_or_else(|| {
            crate::ecs::invalid_param("The referenced container instance was not found.")
        })?;
    control.poll_seen(&arn, true);
    let _in_flight = InFlight {
        control,
        arn: arn.clone(),
    };
    let wait = Duration::from_secs(req.wait_seconds.min(MAX_POLL_WAIT_SECONDS));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (version, notify) = control.watch(&arn);
        // Registered before the state is read: a change after this point wakes us.
        let notified = notify.notified();
        if req.known_version != Some(version) || tokio::time::Instant::now() >= deadline {
            return Ok(assignment(control, region, &cluster, &arn, version, &req));
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn assignment(
    control: &Control,
    region: &str,
    cluster: &str,
    arn: &str,
    version: u64,
    req: &PollRequest,
) -> PollResponse {
    control.read(|s| {
        let r = s.region(region);
        let instance = crate::ecs::instances::find(s, region, cluster, arn);
        let platform = instance.is_some_and(crate::ecs::fargate::is_platform);
        let mut tasks = Vec::new();
        if let (Some(r), Some(instance)) = (r, instance) {
            for t in crate::ecs::fargate::hosted_tasks(r, instance) {
                if t.is_stopped() {
                    continue;
                }
                let td = r
                    .taskdefs
                    .get(&t.family)
                    .and_then(|m| m.get(&t.revision))
                    .map(|d| d.output())
                    .unwrap_or(Value::Null);
                tasks.push(AssignedTask {
                    task_arn: t.arn.clone(),
                    desired_status: t.desired_status.clone(),
                    last_status: t.last_status.clone(),
                    task_definition: td,
                    overrides: t.overrides.clone(),
                    network_configuration: t.network_configuration.clone(),
                    stopped_reason: t.stopped_reason.clone(),
                    launch_type: Some(t.launch_type.clone()),
                    stop_timeout_seconds: t.stop_timeout_seconds,
                });
            }
        }
        // A Fargate task's ARN names its own cluster, not the host's.
        let unknown_tasks = req
            .known_tasks
            .iter()
            .filter(|k| {
                let (cl, id) = crate::ecs::fargate::task_ref(cluster, k);
                !r.and_then(|r| r.tasks.get(cl))
                    .and_then(|m| m.get(id))
                    .map(|t| !t.is_stopped())
                    .unwrap_or(false)
            })
            .cloned()
            .collect();
        let prepull_images = match (platform, r) {
            (true, Some(r)) => crate::ecs::fargate::prepull_images(r),
            _ => Vec::new(),
        };
        PollResponse {
            version,
            tasks,
            unknown_tasks,
            heartbeat_seconds: control.cfg.heartbeat_grace.as_secs(),
            prepull_images,
        }
    })
}
