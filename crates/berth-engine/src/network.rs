//! Container networks (berth-net): a namespace per container on a bridge network, published
//! ports and DNS served by the network daemon (`berth netd`), and the container's `/etc/hosts`,
//! `/etc/hostname` and `/etc/resolv.conf`.
//!
//! `run --network NET` (default: the `bridge` network): `containers/<id>/netns` is created and
//! bind-mounted, attached to the network's bridge (veth, address, default route), the endpoint
//! (name, address, `-p` ports) is handed to the network daemon, which binds the ports and answers
//! DNS on the gateway; the runtime spec joins the namespace by path. The network is released
//! (daemon endpoint, veth and address, namespace) by `stop`, `rm`, and lazily when another
//! container asks for a port a stopped container still holds.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use berth_net::{EndpointRecord, NetdClient, NetworkInfo, NetworkStore, PortMapping};
use serde::{Deserialize, Serialize};

use crate::container::ContainerError;
use crate::{fsutil, Engine};

/// A container's place on a network (kept in its record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network: String,
    pub network_id: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    /// The bind-mounted namespace.
    pub netns: PathBuf,
    /// Published ports with their actual host ports.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

fn net_err(e: berth_net::Error) -> ContainerError {
    ContainerError::Network(e.to_string())
}

/// Host files of a container, mounted over the image's.
pub(crate) struct EtcPaths {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

/// What a container's `resolv.conf` is made of.
pub struct DnsConfig<'a> {
    /// The network's DNS server (the gateway of a bridge network).
    pub gateway: Option<Ipv4Addr>,
    /// `--dns`: replaces every `nameserver` line (as on Docker's default bridge).
    pub servers: &'a [String],
    /// `--dns-search`: replaces the `search` line.
    pub search: &'a [String],
}

impl DnsConfig<'_> {
    pub fn gateway(gateway: Option<Ipv4Addr>) -> DnsConfig<'static> {
        DnsConfig {
            gateway,
            servers: &[],
            search: &[],
        }
    }
}

/// `resolv.conf` for a container: `--dns` servers, else the network's DNS server, else the
/// host's servers; `--dns-search` else the host's `search`; the host's `options`.
fn resolv_conf(dns: &DnsConfig<'_>) -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    let host_lines = |prefix: &str| -> Vec<String> {
        host.lines()
            .map(str::trim)
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    if !dns.servers.is_empty() {
        for s in dns.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
    } else if let Some(server) = dns.gateway {
        out.push_str(&format!("nameserver {server}\n"));
    } else {
        for l in host_lines("nameserver ") {
            out.push_str(&l);
            out.push('\n');
        }
    }
    if !dns.search.is_empty() {
        out.push_str(&format!("search {}\n", dns.search.join(" ")));
    } else {
        for l in host_lines("search ") {
            out.push_str(&l);
            out.push('\n');
        }
    }
    for l in host_lines("options ") {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

impl Engine {
    /// The networks of this engine (`berth network ...`).
    pub fn network_store(&self) -> Result<NetworkStore, ContainerError> {
        NetworkStore::open(self.root.join("networks")).map_err(net_err)
    }

    fn netd_root(&self) -> PathBuf {
        self.root.join("netd")
    }

    fn netd(&self) -> Result<NetdClient, ContainerError> {
        NetdClient::connect_or_spawn(&self.netd_root(), &self.shim_exe).map_err(net_err)
    }

    /// The network a `--network` value names (`bridge` is created on first use).
    pub(crate) fn resolve_network(&self, name: &str) -> Result<NetworkInfo, ContainerError> {
        let store = self.network_store()?;
        if name == berth_net::DEFAULT_NETWORK {
            store.ensure_default().map_err(net_err)
        } else {
            store.get(name).map_err(|e| match e {
                berth_net::Error::NetworkNotFound(_) => {
                    ContainerError::Network(format!("network {name} not found"))
                }
                e => net_err(e),
            })
        }
    }

    /// Writes the container's `/etc` files ([`Engine::etc_dir`]).
    pub(crate) fn write_etc_files(
        &self,
        id: &str,
        hostname: &str,
        ip: Option<Ipv4Addr>,
        dns: &DnsConfig<'_>,
        extra_hosts: &[berth_runtime::spec::ExtraHost],
    ) -> Result<EtcPaths, ContainerError> {
        let dir = self.etc_dir(id);
        fs::create_dir_all(&dir).map_err(|source| ContainerError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let paths = EtcPaths {
            hosts: dir.join("hosts"),
            hostname: dir.join("hostname"),
            resolv_conf: dir.join("resolv.conf"),
        };
        let own: Vec<IpAddr> = ip.map(IpAddr::V4).into_iter().collect();
        let files = [
            (
                &paths.hosts,
                berth_runtime::spec::hosts_file(hostname, &own, extra_hosts),
            ),
            (
                &paths.hostname,
                berth_runtime::spec::hostname_file(hostname),
            ),
            (&paths.resolv_conf, resolv_conf(dns)),
        ];
        for (path, content) in files {
            fsutil::write_replace(path, content.as_bytes()).map_err(|source| {
                ContainerError::Io {
                    what: "write",
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Ok(paths)
    }

    /// Creates the container's namespace, attaches it to `net` and publishes its endpoint.
    /// On failure nothing is left (namespace, veth, address, daemon endpoint).
    pub(crate) fn attach_network(
        &self,
        id: &str,
        name: &str,
        net: &NetworkInfo,
        ports: &[PortMapping],
    ) -> Result<NetworkAttachment, ContainerError> {
        let netns = self.container_dir(id).join("netns");
        berth_net::create_netns(&netns).map_err(net_err)?;
        let store = self.network_store()?;
        let undo = |store: &NetworkStore| {
            let _ = store.detach(net, id);
            let _ = berth_net::delete_netns(&netns);
        };
        let ep = match store.attach(net, &netns, id, "eth0") {
            Ok(ep) => ep,
            Err(e) => {
                undo(&store);
                return Err(net_err(e));
            }
        };
        let record = EndpointRecord {
            container_id: id.to_string(),
            container_name: name.to_string(),
            aliases: Vec::new(),
            network: net.name.clone(),
            gateway: net.gateway,
            ip: ep.ip,
            ports: ports.to_vec(),
        };
        let published = match self.publish(&record) {
            Ok(p) => p,
            Err(e) => {
                undo(&store);
                return Err(e);
            }
        };
        Ok(NetworkAttachment {
            network: net.name.clone(),
            network_id: net.id.clone(),
            ip: ep.ip,
            prefix_len: ep.prefix_len,
            gateway: ep.gateway,
            mac: ep.mac,
            netns,
            ports: published,
        })
    }

    /// Hands the endpoint to the daemon; a port still held by a container that no longer runs
    /// is taken back from it (its network is released) and the publish retried once.
    fn publish(&self, record: &EndpointRecord) -> Result<Vec<PortMapping>, ContainerError> {
        let netd = self.netd()?;
        match netd.publish_endpoint(record) {
            Ok(p) => Ok(p),
            Err(berth_net::Error::PortInUse { by, .. }) if self.is_stale_holder(&by) => {
                tracing::debug!(holder = %by, "taking a port back from a stopped container");
                self.release_network_of(&by);
                netd.publish_endpoint(record).map_err(net_err)
            }
            Err(e) => Err(net_err(e)),
        }
    }

    /// Whether container `id` holds network resources but does not run (or no longer exists).
    fn is_stale_holder(&self, id: &str) -> bool {
        if id.is_empty() || id.contains(' ') {
            return false;
        }
        match self.container(id) {
            Ok(info) => !info.state.is_running(),
            Err(ContainerError::NotFound(_)) => true,
            Err(_) => false,
        }
    }

    /// Releases the network of container `id` (stopped or gone); never fails.
    pub(crate) fn release_network_of(&self, id: &str) {
        let attachment = self
            .container(id)
            .ok()
            .and_then(|info| info.record.network_attachment);
        match attachment {
            Some(att) => self.release_network(id, &att),
            None => {
                if let Ok(netd) = NetdClient::connect(&self.netd_root()) {
                    let _ = netd.remove_endpoint(id);
                }
            }
        }
    }

    /// Makes sure the network daemon runs when running containers need it (it restores their
    /// ports and DNS from its files after a crash or a reboot of the daemon).
    pub fn ensure_network_daemon(&self) -> Result<(), ContainerError> {
        let needed = self
            .containers(false)?
            .iter()
            .any(|c| c.record.network_attachment.is_some())
            || self.sandboxes()?.iter().any(|s| s.network.is_some());
        if needed {
            self.netd()?;
        }
        Ok(())
    }

    /// The shim's on-exit hook for a networked container: once it exited for good, releases
    /// its address, veth, namespace and published ports (as `stop` does). Nothing happens
    /// while it runs (a `berth rm` may have removed it already: not found).
    pub fn container_exited(&self, query: &str) -> Result<(), ContainerError> {
        let info = self.container(query)?;
        if info.state.is_running() {
            return Ok(());
        }
        if let Some(att) = &info.record.network_attachment {
            self.release_network(&info.record.id, att);
        }
        Ok(())
    }

    /// Undoes [`Engine::attach_network`]; idempotent, logs what fails.
    pub(crate) fn release_network(&self, id: &str, att: &NetworkAttachment) {
        if let Ok(netd) = NetdClient::connect(&self.netd_root()) {
            if let Err(e) = netd.remove_endpoint(id) {
                tracing::warn!(%id, error = %e, "cannot remove the endpoint from the network daemon");
            }
        }
        match self.network_store() {
            Ok(store) => match store.get(&att.network_id) {
                Ok(net) => {
                    if let Err(e) = store.detach(&net, id) {
                        tracing::warn!(%id, error = %e, "cannot detach from the network");
                    }
                }
                Err(e) => tracing::debug!(%id, error = %e, "network already gone"),
            },
            Err(e) => tracing::warn!(%id, error = %e, "cannot open the network store"),
        }
        if let Err(e) = berth_net::delete_netns(&att.netns) {
            tracing::warn!(%id, error = %e, "cannot delete the network namespace");
        }
    }
}

/// Whether a namespace file is still mounted (for tests and the leak sweep).
pub fn netns_mounted(path: &Path) -> bool {
    berth_net::is_netns_mount(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_points_at_the_gateway() {
        let r = resolv_conf(&DnsConfig::gateway(Some(Ipv4Addr::new(172, 18, 0, 1))));
        assert!(r.starts_with("nameserver 172.18.0.1\n"), "{r}");
        assert_eq!(r.matches("nameserver").count(), 1, "{r}");
    }

    #[test]
    fn resolv_conf_takes_dns_options() {
        let servers = ["10.0.0.2".to_string(), "10.0.0.3".to_string()];
        let search = ["corp.example".to_string(), "example".to_string()];
        let r = resolv_conf(&DnsConfig {
            gateway: Some(Ipv4Addr::new(172, 18, 0, 1)),
            servers: &servers,
            search: &search,
        });
        assert!(
            r.starts_with(
                "nameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch corp.example example\n"
            ),
            "{r}"
        );
        assert_eq!(r.matches("nameserver").count(), 2, "{r}");
        assert_eq!(r.matches("search").count(), 1, "{r}");
    }
}
