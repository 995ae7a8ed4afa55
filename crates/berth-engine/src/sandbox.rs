//! Task sandboxes: what the containers of one task (an ECS awsvpc/Fargate task, a pod) share.
//!
//! A sandbox is `sandboxes/<name>/`: `sandbox.json` (its record, temp + fsync + rename), and,
//! when it has a network, `netns` (a bind-mounted network namespace attached to a bridge
//! network as the endpoint `sandbox-<name>`: one address, veth, and a DNS entry in the network
//! daemon). Its parent cgroup `/berth/sandbox-<name>` carries the task-level limits (CFS quota,
//! memory hard limit); a container run with [`RunSpec::sandbox`](crate::RunSpec) joins the
//! namespace (no network of its own, no published ports) and gets the cgroup
//! `/berth/sandbox-<name>/<id>`, so the limits bind all the containers of the task together.
//! Like the rest of the engine nothing is kept in memory: a restarted agent finds its sandboxes
//! again through [`Engine::sandboxes`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use berth_net::{EndpointRecord, NetdClient};
use berth_runtime::cgroup::{self, ParentLimits};
use serde::{Deserialize, Serialize};

use crate::container::{valid_name, ContainerError};
use crate::network::NetworkAttachment;
use crate::{fsutil, Engine};

const RECORD: &str = "sandbox.json";

/// What [`Engine::create_sandbox`] creates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (a task id).
    pub name: String,
    /// The bridge network the sandbox's namespace is attached to; `None`: no namespace (the
    /// sandbox is only the parent cgroup, its containers choose their own network).
    pub network: Option<String>,
    /// CPU limit in ECS CPU units (1024 = one CPU), as a CFS quota.
    pub cpu_units: Option<u64>,
    /// Hard memory limit of all its containers together, in bytes.
    pub memory_bytes: Option<i64>,
    /// Size limit of everything its containers write (their overlay upper directories), in
    /// bytes: a loop-mounted ext4 image (Fargate's ephemeral storage). `None`: no limit.
    #[serde(default)]
    pub storage_bytes: Option<u64>,
}

/// A sandbox as recorded (`sandboxes/<name>/sandbox.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub name: String,
    /// The parent cgroup of its containers (`/berth/sandbox-<name>`).
    pub cgroups_path: String,
    /// The namespace and its place on the network (netns path, address, gateway, MAC).
    pub network: Option<NetworkAttachment>,
    /// The CFS quota written, in microseconds per 100 ms.
    pub cpu_quota_us: Option<u64>,
    pub memory_bytes: Option<i64>,
    /// The mounted size-limited file system that holds its containers' upper directories.
    #[serde(default)]
    pub scratch: Option<PathBuf>,
    #[serde(default)]
    pub storage_bytes: Option<u64>,
    pub created: String,
}

impl SandboxInfo {
    /// The bind-mounted network namespace its containers join.
    pub fn netns(&self) -> Option<&Path> {
        self.network.as_ref().map(|n| n.netns.as_path())
    }
}

/// The endpoint id of a sandbox on its network (IPAM allocation, veth name, DNS entry).
fn endpoint_id(name: &str) -> String {
    format!("sandbox-{name}")
}

/// The parent cgroup of a sandbox's containers.
pub fn sandbox_cgroups_path(name: &str) -> String {
    format!("/berth/sandbox-{name}")
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn cgroup_err(e: cgroup::CgroupError) -> ContainerError {
    ContainerError::Sandbox(format!("cgroup: {}", error_chain(&e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

impl Engine {
    fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    fn sandbox_dir(&self, name: &str) -> PathBuf {
        self.sandboxes_dir().join(name)
    }

    fn sandbox_lock(&self) -> Result<nix::fcntl::Flock<fs::File>, ContainerError> {
        let dir = self.sandboxes_dir();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let path = dir.join(".lock");
        fsutil::lock(&path).map_err(io_err("lock", &path))
    }

    fn read_sandbox(&self, name: &str) -> Result<Option<SandboxInfo>, ContainerError> {
        let path = self.sandbox_dir(name).join(RECORD);
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|source| ContainerError::Record { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Creates a sandbox: its parent cgroup with the limits, and with a network its namespace
    /// attached to it (created networks only: `bridge` is created on first use). Idempotent:
    /// an existing sandbox of that name is returned as it is. On failure nothing is left.
    pub fn create_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, ContainerError> {
        if !valid_name(&spec.name) {
            return Err(ContainerError::InvalidName(spec.name.clone()));
        }
        let _lock = self.sandbox_lock()?;
        if let Some(info) = self.read_sandbox(&spec.name)? {
            let scratch_ok = info
                .scratch
                .as_deref()
                .is_none_or(crate::scratch::is_mount_point);
            if info.netns().is_none_or(crate::network::netns_mounted) && scratch_ok {
                return Ok(info);
            }
            // The namespace is gone (a reboot): start again.
            self.remove_sandbox_locked(&spec.name, Some(&info))?;
        }
        let net = spec
            .network
            .as_deref()
            .map(|n| self.resolve_network(n))
            .transpose()?;
        let dir = self.sandbox_dir(&spec.name);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let mut info = SandboxInfo {
            name: spec.name.clone(),
            cgroups_path: sandbox_cgroups_path(&spec.name),
            network: None,
            cpu_quota_us: spec.cpu_units.map(ParentLimits::quota_for_cpu_units),
            memory_bytes: spec.memory_bytes,
            scratch: None,
            storage_bytes: spec.storage_bytes,
            created: fsutil::now(),
        };
        let res = (|| {
            let mounts = cgroup::mounts().map_err(cgroup_err)?;
            cgroup::create_parent(
                &mounts,
                Path::new(&info.cgroups_path),
                &ParentLimits {
                    cpu_quota_us: info.cpu_quota_us,
                    memory_bytes: info.memory_bytes,
                },
            )
            .map_err(cgroup_err)?;
            if let Some(bytes) = spec.storage_bytes {
                info.scratch = Some(self.mount_scratch(&dir, bytes)?);
            }
            if let Some(net) = &net {
                info.network = Some(self.attach_sandbox(&spec.name, &dir, net)?);
            }
            let data =
                serde_json::to_vec_pretty(&info).map_err(|source| ContainerError::Record {
                    path: dir.join(RECORD),
                    source,
                })?;
            let path = dir.join(RECORD);
            fsutil::write_atomic(&path, &data).map_err(io_err("write", &path))
        })();
        match res {
            Ok(()) => {
                tracing::debug!(sandbox = %spec.name, ip = ?info.network.as_ref().map(|n| n.ip), "sandbox created");
                Ok(info)
            }
            Err(e) => {
                if let Err(undo) = self.remove_sandbox_locked(&spec.name, Some(&info)) {
                    tracing::warn!(sandbox = %spec.name, error = %undo, "cleanup after a failed sandbox");
                }
                Err(e)
            }
        }
    }

    fn attach_sandbox(
        &self,
        name: &str,
        dir: &Path,
        net: &berth_net::NetworkInfo,
    ) -> Result<NetworkAttachment, ContainerError> {
        let netns = dir.join("netns");
        let id = endpoint_id(name);
        berth_net::create_netns(&netns).map_err(|e| ContainerError::Network(e.to_string()))?;
        let store = self.network_store()?;
        let ep = store
            .attach(net, &netns, &id, "eth0")
            .map_err(|e| ContainerError::Network(e.to_string()))?;
        let att = NetworkAttachment {
            network: net.name.clone(),
            network_id: net.id.clone(),
            ip: ep.ip,
            prefix_len: ep.prefix_len,
            gateway: ep.gateway,
            mac: ep.mac,
            netns,
            ports: Vec::new(),
        };
        // DNS: the sandbox's name resolves to its address on the network.
        let record = EndpointRecord {
            container_id: id.clone(),
            container_name: name.to_string(),
            aliases: Vec::new(),
            network: net.name.clone(),
            gateway: net.gateway,
            ip: ep.ip,
            ports: Vec::new(),
        };
        let netd = NetdClient::connect_or_spawn(&self.root.join("netd"), &self.shim_exe)
            .map_err(|e| ContainerError::Network(e.to_string()))?;
        if let Err(e) = netd.publish_endpoint(&record) {
            self.release_network(&id, &att);
            return Err(ContainerError::Network(e.to_string()));
        }
        Ok(att)
    }

    /// A sandbox by name.
    pub fn sandbox(&self, name: &str) -> Result<SandboxInfo, ContainerError> {
        if !valid_name(name) {
            return Err(ContainerError::InvalidName(name.to_string()));
        }
        self.read_sandbox(name)?
            .ok_or_else(|| ContainerError::NoSuchSandbox(name.to_string()))
    }

    /// Every sandbox, by name.
    pub fn sandboxes(&self) -> Result<Vec<SandboxInfo>, ContainerError> {
        let dir = self.sandboxes_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !valid_name(&name) {
                continue;
            }
            match self.read_sandbox(&name) {
                Ok(Some(info)) => out.push(info),
                Ok(None) => {}
                Err(e @ ContainerError::Record { .. }) => {
                    tracing::warn!(error = %e, "skipping a damaged sandbox record");
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a sandbox: detaches its namespace from the network (address, veth, DNS entry),
    /// unmounts and deletes the namespace, removes its cgroups (and anything left in them) and
    /// its directory. Refused while a container of it runs. Idempotent: a missing sandbox is
    /// not an error, and leftovers of a half-created or half-removed one are cleaned up too.
    pub fn remove_sandbox(&self, name: &str) -> Result<(), ContainerError> {
        if !valid_name(name) {
            return Err(ContainerError::InvalidName(name.to_string()));
        }
        let running: Vec<String> = self
            .containers(false)?
            .into_iter()
            .filter(|c| c.record.options.sandbox.as_deref() == Some(name))
            .map(|c| c.record.name)
            .collect();
        if !running.is_empty() {
            return Err(ContainerError::Conflict(format!(
                "sandbox {name} still has running containers: {}",
                running.join(", ")
            )));
        }
        let _lock = self.sandbox_lock()?;
        let info = match self.read_sandbox(name) {
            Ok(i) => i,
            Err(ContainerError::Record { .. }) => None,
            Err(e) => return Err(e),
        };
        self.remove_sandbox_locked(name, info.as_ref())
    }

    fn remove_sandbox_locked(
        &self,
        name: &str,
        info: Option<&SandboxInfo>,
    ) -> Result<(), ContainerError> {
        let dir = self.sandbox_dir(name);
        if let Some(att) = info.and_then(|i| i.network.as_ref()) {
            self.release_network(&endpoint_id(name), att);
        }
        let netns = dir.join("netns");
        if netns.exists() {
            berth_net::delete_netns(&netns).map_err(|e| ContainerError::Network(e.to_string()))?;
        }
        let scratch = dir.join("scratch");
        self.unmount_scratch(&scratch)?;
        if crate::scratch::is_mount_point(&scratch) {
            return Err(ContainerError::Sandbox(format!(
                "{} is still mounted",
                scratch.display()
            )));
        }
        let mounts = cgroup::mounts().map_err(cgroup_err)?;
        let cg = info
            .map(|i| i.cgroups_path.clone())
            .unwrap_or_else(|| sandbox_cgroups_path(name));
        cgroup::remove_all(&mounts, Path::new(&cg)).map_err(cgroup_err)?;
        fsutil::remove_dir_if_present(&dir).map_err(io_err("remove", &dir))?;
        tracing::debug!(sandbox = %name, "sandbox removed");
        Ok(())
    }
}
