//! Attaching a network namespace to a network (bridge + veth) and detaching it.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::link;
use crate::nft;
use crate::store::{format_mac, mac_for_ip, NetworkInfo, NetworkStore};

/// A container's interface on a network, as [`NetworkStore::attach`] made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// `02:42:<ip bytes>`.
    pub mac: String,
    /// Host side of the veth pair (`veth<8 hex>`), a port of the network's bridge.
    pub host_veth: String,
    /// Interface name inside the namespace.
    pub ifname: String,
}

/// The host-side veth name of a container on a network: `veth` + 8 hex of
/// sha256(network id, container id) — derived, so detach finds it even without records.
pub fn host_veth_name(network_id: &str, container_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(network_id.as_bytes());
    h.update(b"/");
    h.update(container_id.as_bytes());
    format!("veth{}", &hex::encode(h.finalize())[..8])
}

fn peer_name(host_veth: &str) -> String {
    // "vp" + the same 8 hex: unique while the pair exists, renamed to `ifname` in the namespace
    format!("vp{}", host_veth.trim_start_matches("veth"))
}

/// Creates the bridge (with the gateway address, up), enables forwarding and installs the nft
/// rules of a network. Idempotent; [`NetworkStore::attach`] calls it.
pub fn setup_network(network: &NetworkInfo) -> Result<()> {
    let (bridge, gw, prefix) = (
        network.bridge.clone(),
        network.gateway,
        network.subnet.prefix_len(),
    );
    link::with_netlink(None, "create bridge", |h| async move {
        link::ensure_bridge(&h, &bridge, gw, prefix)
            .await
            .map(|_| ())
    })?;
    if !network.internal {
        nft::enable_ip_forward()?;
    }
    nft::install_rules(&network.bridge, &network.subnet, network.internal)
}

/// Deletes the bridge and the nft rules of a network. Idempotent.
pub fn teardown_network(network: &NetworkInfo) -> Result<()> {
    let bridge = network.bridge.clone();
    link::with_netlink(None, "delete bridge", |h| async move {
        link::delete_link(&h, &bridge).await
    })?;
    if !nft::remove_rules(&network.bridge)? {
        warn!(bridge = %network.bridge, "nft not found: cannot remove the network's rules");
    }
    Ok(())
}

impl NetworkStore {
    /// [`setup_network`], but the nft rules and forwarding only when this boot has not set them
    /// up for this bridge yet (spawning `nft` twice cost ~50 ms per container start): a marker
    /// `ipam/<id>.setup` holds the boot id and the bridge's ifindex (a recreated bridge gets the
    /// rules again). Rules flushed by hand come back with `berth network rm` + create, or a
    /// reboot.
    fn ensure_network(&self, network: &NetworkInfo) -> Result<()> {
        // The bridge and subnet are this network's on this host (claimed at create; after a
        // reboot, claimed again here unless another root took them first).
        if let Some(c) = &self.claims {
            c.ensure(network, &self.record_path(&network.id))?;
        }
        let (bridge, gw, prefix) = (
            network.bridge.clone(),
            network.gateway,
            network.subnet.prefix_len(),
        );
        let index = link::with_netlink(None, "create bridge", |h| async move {
            link::ensure_bridge(&h, &bridge, gw, prefix).await
        })?;
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let marker = format!("{} {index}\n", boot.trim());
        let path = self.setup_marker(&network.id);
        if !boot.trim().is_empty()
            && std::fs::read_to_string(&path).ok().as_deref() == Some(marker.as_str())
        {
            return Ok(());
        }
        if !network.internal {
            nft::enable_ip_forward()?;
        }
        nft::install_rules(&network.bridge, &network.subnet, network.internal)?;
        if let Err(e) = crate::fsutil::write_atomic(&path, marker.as_bytes()) {
            warn!(error = %e, path = %path.display(), "cannot record the network's setup");
        }
        Ok(())
    }

    /// Connects the network namespace at `netns` to `network` as `container_id`: allocates an
    /// address (the same again on a repeated call), makes sure the bridge, forwarding and nft
    /// rules exist, creates a veth pair (host side on the bridge, the other side moved into the
    /// namespace and renamed `ifname`, with MAC `02:42:<ip>`, the address, up), brings `lo` up
    /// and adds the default route via the gateway. Calling it again for an attached container
    /// recreates the veth pair. On failure nothing is left behind.
    pub fn attach(
        &self,
        network: &NetworkInfo,
        netns: &Path,
        container_id: &str,
        ifname: &str,
    ) -> Result<Endpoint> {
        if ifname.is_empty() || ifname.len() > 15 || ifname.contains('/') {
            return Err(Error::InvalidConfig(format!(
                "invalid interface name {ifname:?}"
            )));
        }
        let _lock = self.lock_network(&network.id)?;
        let network = self.reload(network)?;
        let had = self
            .read_ipam(&network.id)?
            .allocations
            .contains_key(container_id);
        let ip = self.allocate_locked(&network, container_id)?;
        let host_veth = host_veth_name(&network.id, container_id);
        let res = self.attach_locked(&network, netns, container_id, ifname, ip, &host_veth);
        if res.is_err() {
            let hv = host_veth.clone();
            let _ = link::with_netlink(None, "cleanup veth", |h| async move {
                link::delete_link(&h, &hv).await
            });
            if !had {
                let _ = self.release_locked(&network, container_id);
            }
        }
        res
    }

    fn attach_locked(
        &self,
        network: &NetworkInfo,
        netns: &Path,
        container_id: &str,
        ifname: &str,
        ip: Ipv4Addr,
        host_veth: &str,
    ) -> Result<Endpoint> {
        self.ensure_network(network)?;
        let ns_file = File::open(netns).map_err(|e| Error::io("open netns", netns, e))?;
        let peer = peer_name(host_veth);
        let (bridge, hv, pv) = (network.bridge.clone(), host_veth.to_owned(), peer.clone());
        link::with_netlink(None, "create veth", |h| async move {
            // a leftover pair from a crashed attach would make the add fail
            link::delete_link(&h, &hv).await?;
            link::delete_link(&h, &pv).await?;
            let bi = link::link_index(&h, &bridge)
                .await?
                .ok_or_else(|| Error::InvalidConfig(format!("bridge {bridge} vanished")))?;
            link::create_veth(&h, &hv, &pv, bi, &ns_file).await
        })?;
        let mac = mac_for_ip(ip);
        let (prefix, gw, ifn) = (
            network.subnet.prefix_len(),
            network.gateway,
            ifname.to_owned(),
        );
        link::with_netlink(
            Some(netns),
            "configure container interface",
            |h| async move {
                link::configure_container_side(&h, &peer, &ifn, mac, ip, prefix, gw).await
            },
        )?;
        let mut ipam = self.read_ipam(&network.id)?;
        if let Some(a) = ipam.allocations.get_mut(container_id) {
            a.host_veth = Some(host_veth.to_owned());
            a.netns = Some(netns.to_owned());
            a.mac = Some(format_mac(&mac));
        }
        self.write_ipam(&network.id, &ipam)?;
        debug!(network = %network.name, container = container_id, %ip, veth = host_veth, "attached");
        Ok(Endpoint {
            network_id: network.id.clone(),
            container_id: container_id.to_owned(),
            ip,
            prefix_len: network.subnet.prefix_len(),
            gateway: network.gateway,
            mac: format_mac(&mac),
            host_veth: host_veth.to_owned(),
            ifname: ifname.to_owned(),
        })
    }

    /// Disconnects `container_id` from `network`: deletes the host veth (its peer goes with it)
    /// and releases the address. Idempotent; works after crashes and when the namespace is gone.
    pub fn detach(&self, network: &NetworkInfo, container_id: &str) -> Result<()> {
        let _lock = self.lock_network(&network.id)?;
        let host_veth = host_veth_name(&network.id, container_id);
        let hv = host_veth.clone();
        link::with_netlink(None, "delete veth", |h| async move {
            link::delete_link(&h, &hv).await
        })?;
        self.release_locked(network, container_id)?;
        debug!(network = %network.name, container = container_id, veth = %host_veth, "detached");
        Ok(())
    }
}
