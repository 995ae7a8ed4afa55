//! The agent's state on disk, under its data directory:
//! - `agent.json`: the container instance ARN (re-registration after a restart keeps it);
//! - `tasks/<task id>.json`: one record per task whose containers are not cleaned up yet.
//!
//! Every write is atomic: temp file, fsync, rename, fsync of the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::task_id;

/// Errors of the state files.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid state file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let mut suffix = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut suffix);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|source| StateError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

fn to_json<T: Serialize>(path: &Path, v: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec_pretty(v).map_err(|source| StateError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// `agent.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    pub cluster: String,
    pub container_instance_arn: String,
}

impl AgentState {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("agent.json")
    }

    pub fn load(data_dir: &Path) -> Result<Option<AgentState>, StateError> {
        read_json(&Self::path(data_dir))
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), StateError> {
        let path = Self::path(data_dir);
        write_atomic(&path, &to_json(&path, self)?)
    }
}

/// A task's lifecycle status as ECS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskStatus {
    /// Known, nothing done yet.
    None,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::None => "NONE",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }
}

/// A container's status as ECS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ContainerStatus {
    Pending,
    Running,
    Stopped,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Pending => "PENDING",
            ContainerStatus::Running => "RUNNING",
            ContainerStatus::Stopped => "STOPPED",
        }
    }
}

/// ECS `NetworkBinding` (the wire shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    #[serde(rename = "bindIP")]
    pub bind_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
}

/// One container of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// The name in the task definition.
    pub name: String,
    /// The engine container name (chosen before it is created, so a container created just
    /// before a crash is still found).
    pub engine_name: String,
    /// The engine container id, once created.
    #[serde(default)]
    pub runtime_id: Option<String>,
    pub essential: bool,
    pub status: ContainerStatus,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub image_digest: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    pub stop_timeout_secs: u64,
    /// Start level (stop in reverse).
    pub level: usize,
    /// Its health (`None`: no health check).
    #[serde(default)]
    pub health_status: Option<crate::health::HealthStatus>,
}

/// `tasks/<task id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub task_arn: String,
    pub family: String,
    pub revision: i64,
    /// What the control plane last asked for.
    pub desired_status: String,
    /// Where the agent got to.
    pub status: TaskStatus,
    /// The last status the control plane accepted a report of.
    #[serde(default)]
    pub acked_status: Option<TaskStatus>,
    #[serde(default)]
    pub stopped_reason: Option<String>,
    pub containers: Vec<ContainerRecord>,
    #[serde(default)]
    pub pull_started_at: Option<f64>,
    #[serde(default)]
    pub pull_stopped_at: Option<f64>,
    #[serde(default)]
    pub execution_stopped_at: Option<f64>,
    /// Volumes removed with the task.
    #[serde(default)]
    pub task_volumes: Vec<String>,
    /// What the task was assigned with (to plan it again when a start is resumed).
    pub task_definition: Value,
    #[serde(default)]
    pub overrides: Option<Value>,
    #[serde(default)]
    pub network_configuration: Option<Value>,
    /// `EC2` or `FARGATE`, as assigned.
    #[serde(default)]
    pub launch_type: Option<String>,
    /// The control plane's stop timeout (replaces the containers' `stopTimeout`).
    #[serde(default)]
    pub stop_timeout_override: Option<u64>,
    /// The task's address once its sandbox exists on its network (awsvpc), sent as
    /// `taskNetwork` with every state change.
    #[serde(default)]
    pub task_network: Option<berth_control::proto::TaskNetwork>,
    /// The task's sandbox (name), once created; removed at cleanup.
    #[serde(default)]
    pub sandbox: Option<String>,
}

impl TaskRecord {
    pub fn container(&self, name: &str) -> Option<&ContainerRecord> {
        self.containers.iter().find(|c| c.name == name)
    }

    pub fn container_mut(&mut self, name: &str) -> Option<&mut ContainerRecord> {
        self.containers.iter_mut().find(|c| c.name == name)
    }
}

/// The `tasks/` directory.
#[derive(Debug, Clone)]
pub struct TaskStore {
    dir: PathBuf,
}

impl TaskStore {
    pub fn new(data_dir: &Path) -> TaskStore {
        TaskStore {
            dir: data_dir.join("tasks"),
        }
    }

    pub fn path(&self, task_arn: &str) -> PathBuf {
        self.dir.join(format!("{}.json", task_id(task_arn)))
    }

    pub fn save(&self, rec: &TaskRecord) -> Result<(), StateError> {
        let path = self.path(&rec.task_arn);
        write_atomic(&path, &to_json(&path, rec)?)
    }

    pub fn remove(&self, task_arn: &str) -> Result<(), StateError> {
        let path = self.path(task_arn);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Every task record; damaged ones are logged and skipped, leftover temp files removed.
    pub fn load_all(&self) -> Result<Vec<TaskRecord>, StateError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read", &self.dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write interrupted by a crash (not one in progress right now).
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(60));
                if stale {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            match read_json::<TaskRecord>(&path) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "skipping a task state file")
                }
            }
        }
        out.sort_by(|a, b| a.task_arn.cmp(&b.task_arn));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> TaskRecord {
        TaskRecord {
            task_arn: "arn:aws:ecs:us-east-1:0:task/c/abc123".into(),
            family: "web".into(),
            revision: 2,
            desired_status: "RUNNING".into(),
            status: TaskStatus::Running,
            acked_status: Some(TaskStatus::Activating),
            stopped_reason: None,
            containers: vec![ContainerRecord {
                name: "app".into(),
                engine_name: "ecs-web-2-app-00".into(),
                runtime_id: Some("f".repeat(64)),
                essential: true,
                status: ContainerStatus::Running,
                exit_code: None,
                reason: None,
                image_digest: Some("sha256:00".into()),
                network_bindings: vec![NetworkBinding {
                    bind_ip: "0.0.0.0".into(),
                    container_port: 80,
                    host_port: 32768,
                    protocol: "tcp".into(),
                }],
                stop_timeout_secs: 30,
                level: 0,
                health_status: Some(crate::health::HealthStatus::Healthy),
            }],
            pull_started_at: Some(1.5),
            pull_stopped_at: Some(2.25),
            execution_stopped_at: None,
            task_volumes: vec!["ecs-web-2-v-abc123".into()],
            task_definition: json!({"family": "web"}),
            overrides: None,
            network_configuration: None,
            launch_type: Some("FARGATE".into()),
            stop_timeout_override: Some(2),
            task_network: Some(berth_control::proto::TaskNetwork {
                network: "subnet-1".into(),
                private_ipv4_address: "10.0.0.2".into(),
                mac_address: Some("02:42:0a:00:00:02".into()),
            }),
            sandbox: Some("ecs-abc".into()),
        }
    }

    #[test]
    fn task_record_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TaskStore::new(dir.path());
        assert!(store.load_all().expect("load").is_empty());
        let r = record();
        store.save(&r).expect("save");
        assert_eq!(
            store.path(&r.task_arn),
            dir.path().join("tasks/abc123.json")
        );
        let text = fs::read_to_string(store.path(&r.task_arn)).expect("read");
        assert!(
            text.contains("\"bindIP\"") && text.contains("\"RUNNING\""),
            "{text}"
        );
        // A damaged file and a leftover temp file are skipped (the latter removed once stale).
        fs::write(dir.path().join("tasks/bad.json"), b"{").expect("write");
        let tmp = dir.path().join("tasks/.x.json.1.tmp");
        fs::write(&tmp, b"{").expect("write");
        assert_eq!(store.load_all().expect("load"), vec![r.clone()]);
        assert!(tmp.exists(), "a fresh temp file may be a write in progress");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        File::options()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.set_modified(old))
            .expect("age");
        assert_eq!(store.load_all().expect("load"), vec![r.clone()]);
        assert!(!tmp.exists());
        store.remove(&r.task_arn).expect("remove");
        store.remove(&r.task_arn).expect("remove twice");
        fs::remove_file(dir.path().join("tasks/bad.json")).expect("rm");
        assert!(store.load_all().expect("load").is_empty());
    }

    #[test]
    fn agent_state_round_trip_and_statuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(AgentState::load(dir.path()).expect("load"), None);
        let s = AgentState {
            cluster: "default".into(),
            container_instance_arn: "arn:aws:ecs:us-east-1:0:container-instance/default/x".into(),
        };
        s.save(dir.path()).expect("save");
        assert_eq!(AgentState::load(dir.path()).expect("load"), Some(s));
        assert!(TaskStatus::Pending < TaskStatus::Running);
        assert!(TaskStatus::Deprovisioning < TaskStatus::Stopped);
        assert_eq!(
            serde_json::to_value(TaskStatus::Deprovisioning).expect("json"),
            json!("DEPROVISIONING")
        );
    }
}
