//! The crate's error type.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::ports::{PortSpecError, Protocol};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `berth-net`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A record on disk could not be parsed.
    #[error("corrupt record {path}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A lock could not be taken in time.
    #[error("timed out waiting for the lock {0}")]
    LockTimeout(PathBuf),
    /// No network has this name or id.
    #[error("network {0} not found")]
    NetworkNotFound(String),
    /// A network name is taken.
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    /// A network name is not valid.
    #[error("invalid network name {0:?}: names match [a-zA-Z0-9][a-zA-Z0-9_.-]* and are at most 64 characters")]
    InvalidName(String),
    /// A subnet, gateway or bridge name is not valid.
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    /// The requested subnet overlaps an existing network.
    #[error("subnet {subnet} overlaps with network {other}")]
    SubnetOverlap { subnet: String, other: String },
    /// Every default pool is in use.
    #[error("all predefined address pools have been fully subnetted")]
    NoFreeSubnet,
    /// The network still has endpoints.
    #[error("network {network} has active endpoints ({containers})")]
    NetworkInUse { network: String, containers: String },
    /// The network has no free address left.
    #[error("no available IPv4 addresses on network {0}")]
    PoolExhausted(String),
    /// A netlink request failed.
    #[error("netlink: {op}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// Creating, entering or deleting a network namespace failed.
    #[error("network namespace {path}: {op}")]
    Netns {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    /// An operation took longer than its bound.
    #[error("{0} timed out")]
    Timeout(String),
    /// A helper thread panicked.
    #[error("{0} thread panicked")]
    ThreadPanicked(&'static str),
    /// `nft` failed.
    #[error("nft: {0}")]
    Nft(String),
    /// A published host port is taken.
    #[error("port is already allocated: {ip}:{port}/{protocol} is in use by {by}")]
    PortInUse {
        ip: Ipv4Addr,
        port: u16,
        protocol: Protocol,
        /// The container id holding it, or `another program`.
        by: String,
    },
    /// A `-p` value could not be parsed.
    #[error(transparent)]
    PortSpec(#[from] PortSpecError),
    /// Binding a published port failed for another reason than "in use".
    #[error("cannot publish {ip}:{port}/{protocol}: {message}")]
    Bind {
        ip: Ipv4Addr,
        port: u16,
        protocol: Protocol,
        message: String,
    },
    /// Talking to the network daemon failed.
    #[error("network daemon: {0}")]
    Daemon(String),
    /// Talking to the network daemon failed with an I/O error.
    #[error("network daemon: {op}")]
    DaemonIo {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn netlink(op: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink {
            op: op.into(),
            source,
        }
    }
}
