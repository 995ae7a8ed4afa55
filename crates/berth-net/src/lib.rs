//! Container networking for Berth: bridge networks with IPAM, persistent network namespaces,
//! veth attachment (rtnetlink), masquerade (nft), published ports (a userspace proxy) and an
//! embedded DNS server, the latter two hosted by a per-root network daemon.
//!
//! Synchronous API for the engine (every function that touches the kernel runs its async
//! netlink work on its own short-lived thread, so it may be called from inside or outside a
//! tokio runtime — from async code prefer `spawn_blocking`):
//!
//! ```text
//! network create:  NetworkStore::open(root/networks)?.create(name, CreateOptions{..})
//! network rm:      store.remove(name)            (refuses while endpoints exist)
//! run --network N: store.ensure_default() / store.get(N)
//!                  create_netns(path)            (before the container starts)
//!                  store.attach(&net, path, container_id, "eth0") -> Endpoint
//!                  NetdClient::connect_or_spawn(root, exe)?.publish_endpoint(&record)
//! stop / exit:     client.remove_endpoint(id); store.detach(&net, id); delete_netns(path)
//! ```

mod attach;
mod cidr;
mod claims;
mod client;
pub mod daemon;
pub mod dns;
mod error;
mod fsutil;
mod link;
mod netns;
mod nft;
pub mod ports;
mod proto;
mod proxy;
mod store;

pub use attach::{host_veth_name, setup_network, teardown_network, Endpoint};
pub use cidr::{CidrError, Ipv4Net};
pub use client::NetdClient;
pub use error::{Error, Result};
pub use link::{host_ipv4_networks, link_exists, list_links};
pub use netns::{create_netns, delete_netns, is_netns_mount, run_in_netns};
pub use nft::list_ruleset;
pub use ports::{parse_publish, PortMapping, PortSpecError, Protocol};
pub use proto::{DaemonError, EndpointRecord, PublishedPort, Request, Response};
pub use store::{
    default_pools, format_mac, mac_for_ip, next_free_ip, pick_subnet, Allocation, CreateOptions,
    Ipam, NetworkInfo, NetworkStore, DEFAULT_BRIDGE, DEFAULT_NETWORK, DEFAULT_SUBNET,
};
