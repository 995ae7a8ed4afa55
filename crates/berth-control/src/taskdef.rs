//! Task definitions: validation of RegisterTaskDefinition input and the stored model.
//! (Interim stub: replaced by the validated model.)

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TaskDefError {
    pub code: &'static str,
    pub message: String,
}

impl TaskDefError {
    pub fn code(&self) -> &'static str {
        self.code
    }
    pub fn message(&self) -> String {
        self.message.clone()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinitionSpec(pub Value);

impl TaskDefinitionSpec {
    pub fn family(&self) -> &str {
        self.0["family"].as_str().unwrap_or_default()
    }
    pub fn reserved_cpu(&self) -> i64 {
        0
    }
    pub fn reserved_memory(&self) -> i64 {
        0
    }
    pub fn host_ports(&self) -> (Vec<u16>, Vec<u16>) {
        (Vec::new(), Vec::new())
    }
    pub fn tags(&self) -> Vec<Value> {
        Vec::new()
    }
}

pub fn validate_register(input: &Value) -> Result<TaskDefinitionSpec, TaskDefError> {
    Ok(TaskDefinitionSpec(input.clone()))
}

pub fn to_output(
    spec: &TaskDefinitionSpec,
    arn: &str,
    revision: u32,
    status: &str,
    registered_at: f64,
    deregistered_at: Option<f64>,
    registered_by: Option<String>,
) -> Value {
    let mut v = spec.0.clone();
    v["taskDefinitionArn"] = arn.into();
    v["revision"] = revision.into();
    v["status"] = status.into();
    v["registeredAt"] = registered_at.into();
    if let Some(d) = deregistered_at {
        v["deregisteredAt"] = d.into();
    }
    if let Some(b) = registered_by {
        v["registeredBy"] = b.into();
    }
    v
}
