//! An in-process fake of the control plane for tests: records every call, answers reports
//! with scripted failures, serves an ECR token when given one.

use std::collections::VecDeque;
use std::sync::Mutex;

use berth_aws::client::ClientError;
use berth_control::proto::{PollRequest, PollResponse};
use serde_json::{json, Value};

use crate::control::{ControlClient, EcrToken};

#[derive(Default)]
struct Inner {
    attempts: Vec<Value>,
    accepted: Vec<Value>,
    report_failures: VecDeque<Option<ClientError>>,
    registrations: Vec<Value>,
    polls: Vec<PollRequest>,
    ecr: Option<EcrToken>,
}

/// A [`ControlClient`] that records what it is sent.
#[derive(Default)]
pub struct FakeControl {
    inner: Mutex<Inner>,
}

impl FakeControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next reports get these answers in turn (`None`: accepted).
    pub fn fail_next_reports(&self, answers: Vec<Option<ClientError>>) {
        self.lock().report_failures.extend(answers);
    }

    /// Every `SubmitTaskStateChange` input received, accepted or not.
    pub fn attempts(&self) -> Vec<Value> {
        self.lock().attempts.clone()
    }

    /// The accepted `SubmitTaskStateChange` inputs, in order.
    pub fn reports(&self) -> Vec<Value> {
        self.lock().accepted.clone()
    }

    /// The accepted reports of one task.
    pub fn reports_of(&self, task_arn: &str) -> Vec<Value> {
        self.reports()
            .into_iter()
            .filter(|r| r["task"] == task_arn)
            .collect()
    }

    /// The statuses reported for one task, in order.
    pub fn statuses(&self, task_arn: &str) -> Vec<String> {
        self.reports_of(task_arn)
            .iter()
            .map(|r| r["status"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn registrations(&self) -> Vec<Value> {
        self.lock().registrations.clone()
    }

    pub fn polls(&self) -> Vec<PollRequest> {
        self.lock().polls.clone()
    }

    pub fn set_ecr_token(&self, token: EcrToken) {
        self.lock().ecr = Some(token);
    }
}

#[async_trait::async_trait]
impl ControlClient for FakeControl {
    async fn register_container_instance(&self, input: &Value) -> Result<Value, ClientError> {
        let mut inner = self.lock();
        inner.registrations.push(input.clone());
        let arn = input
            .get("containerInstanceArn")
            .and_then(Value::as_str)
            .unwrap_or("arn:aws:ecs:us-east-1:000000000000:container-instance/default/fake")
            .to_string();
        Ok(json!({"containerInstance": {"containerInstanceArn": arn, "status": "ACTIVE"}}))
    }

    async fn poll(&self, req: &PollRequest) -> Result<PollResponse, ClientError> {
        self.lock().polls.push(req.clone());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        Ok(PollResponse {
            version: 1,
            tasks: Vec::new(),
            unknown_tasks: Vec::new(),
            heartbeat_seconds: 30,
        })
    }

    async fn submit_task_state_change(&self, input: &Value) -> Result<(), ClientError> {
        let mut inner = self.lock();
        inner.attempts.push(input.clone());
        match inner.report_failures.pop_front().flatten() {
            Some(e) => Err(e),
            None => {
                inner.accepted.push(input.clone());
                Ok(())
            }
        }
    }

    async fn get_authorization_token(&self) -> Result<EcrToken, ClientError> {
        self.lock().ecr.clone().ok_or_else(|| ClientError::Aws {
            status: 400,
            code: "UnknownOperationException".into(),
            message: "no ECR here".into(),
            request_id: None,
        })
    }
}
