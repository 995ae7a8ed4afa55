//! What the engine and the network daemon exchange: newline-delimited JSON over
//! `<root>/netd.sock`, one request and one response per line.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::ports::{PortMapping, Protocol};

/// A published port with its actual host port (ephemeral ports resolved).
pub type PublishedPort = PortMapping;

/// What the daemon serves for one container: DNS names on its network and published ports.
/// Persisted by the daemon as `<root>/endpoints/<container_id>.json` (with resolved ports).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// `[a-zA-Z0-9_.-]+`, not starting with `.` (it names a file).
    pub container_id: String,
    /// Resolvable as `name` and `name.<network>`.
    pub container_name: String,
    /// `--network-alias`es, resolvable the same way.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Network name.
    pub network: String,
    /// The network's gateway: the DNS server listens on `gateway:53`.
    pub gateway: Ipv4Addr,
    /// The container's address (proxy target, DNS answer).
    pub ip: Ipv4Addr,
    /// Ports to publish (`host_port` 0: ephemeral).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

/// A request line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Publish { endpoint: EndpointRecord },
    Remove { container_id: String },
    List,
}

/// A response line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    Pong { pid: u32 },
    Published { ports: Vec<PublishedPort> },
    Removed,
    Endpoints { endpoints: Vec<EndpointRecord> },
    Error { error: DaemonError },
}

/// An error as the daemon reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DaemonError {
    PortInUse {
        ip: Ipv4Addr,
        port: u16,
        protocol: Protocol,
        by: String,
    },
    Invalid {
        message: String,
    },
    Internal {
        message: String,
    },
}

impl From<DaemonError> for crate::Error {
    fn from(e: DaemonError) -> Self {
        match e {
            DaemonError::PortInUse {
                ip,
                port,
                protocol,
                by,
            } => crate::Error::PortInUse {
                ip,
                port,
                protocol,
                by,
            },
            DaemonError::Invalid { message } | DaemonError::Internal { message } => {
                crate::Error::Daemon(message)
            }
        }
    }
}

/// Whether `id` can name an endpoint file.
pub(crate) fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
