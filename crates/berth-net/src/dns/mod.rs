//! The embedded DNS server containers use (it listens on their network's gateway, port 53):
//! container names and aliases, and `name.network`, resolve to their addresses; other names are
//! forwarded to the host's resolvers.

mod server;
pub mod wire;

pub use server::{host_upstreams, parse_resolv_conf, DnsServer, DnsTable, FORWARD_TIMEOUT};
