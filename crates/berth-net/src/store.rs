//! Network records and IP address management, persisted under a directory.
//!
//! Layout of the store directory:
//! - `lock`: `flock` taken for create/remove (keeps names and subnets unique);
//! - `<network id>.json`: one [`NetworkInfo`] per network;
//! - `ipam/<network id>.json`: the network's allocations ([`Ipam`]), changed under
//!   `ipam/<network id>.lock`, which also serializes attach/detach/remove of that network.
//!
//! Lock order: the store `lock` before a network's lock, never the other way; the host-wide
//! claims lock ([`crate::claims`]) last.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::cidr::Ipv4Net;
use crate::claims::Claims;
use crate::error::{Error, Result};
use crate::fsutil::{self, LockGuard, LOCK_TIMEOUT};

/// Name of the default network.
pub const DEFAULT_NETWORK: &str = "bridge";
/// Bridge device of the default network.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// Preferred subnet of the default network.
pub const DEFAULT_SUBNET: &str = "172.17.0.0/16";

/// A network as recorded on disk (what `berth network inspect` shows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// 64 hex characters.
    pub id: String,
    pub name: String,
    /// Always `bridge` for now.
    pub driver: String,
    /// Linux bridge device name (`berth0`, `br-<12 hex of id>`).
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// No masquerade and no traffic in or out of the bridge.
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the epoch.
    pub created: u64,
}

impl NetworkInfo {
    /// The first 12 hex characters of the id (what `network ls` shows).
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// Options of [`NetworkStore::create`]; `Default` gives an automatic subnet.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// `--subnet`; picked from the default pools when `None`.
    pub subnet: Option<Ipv4Net>,
    /// `--gateway`; the subnet's first address (`.1`) when `None`.
    pub gateway: Option<Ipv4Addr>,
    /// `--internal`.
    pub internal: bool,
    /// `--label k=v`.
    pub labels: BTreeMap<String, String>,
    /// Docker's `-o com.docker.network.bridge.name=...`; `br-<12 hex>` when `None`.
    pub bridge_name: Option<String>,
}

/// One container's allocation (and, once attached, its endpoint) on a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    /// Host side veth, once attached.
    #[serde(default)]
    pub host_veth: Option<String>,
    /// The network namespace file it was attached to.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    #[serde(default)]
    pub mac: Option<String>,
}

/// A network's address allocations (`ipam/<id>.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    /// container id → allocation
    pub allocations: BTreeMap<String, Allocation>,
    /// The last address handed out; the next search starts after it, so addresses are not
    /// reused immediately (as Docker).
    #[serde(default)]
    pub last: Option<Ipv4Addr>,
}

/// Networks and their address allocations, under one directory.
#[derive(Clone, Debug)]
pub struct NetworkStore {
    dir: PathBuf,
    /// This host's bridge and subnet claims (root only; see [`crate::claims`]).
    pub(crate) claims: Option<Claims>,
}

/// Default address pools: 172.18.0.0/16 ..= 172.31.0.0/16, then 10.89.0.0/24 ..= 10.89.255.0/24.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let sixteens =
        (18u8..=31).filter_map(|b| Ipv4Net::new_truncate(Ipv4Addr::new(172, b, 0, 0), 16));
    let twenty_fours =
        (0u8..=255).filter_map(|c| Ipv4Net::new_truncate(Ipv4Addr::new(10, 89, c, 0), 24));
    sixteens.chain(twenty_fours)
}

/// The first candidate that overlaps none of `taken` (pure; unit-tested).
pub fn pick_subnet(
    candidates: impl IntoIterator<Item = Ipv4Net>,
    taken: &[Ipv4Net],
) -> Option<Ipv4Net> {
    candidates
        .into_iter()
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
}

/// The next free address of `subnet` after `last` (wrapping), never the network, broadcast or
/// gateway address, nor one in `used` (pure; unit-tested).
pub fn next_free_ip(
    subnet: &Ipv4Net,
    gateway: Ipv4Addr,
    used: &[Ipv4Addr],
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let size = subnet.size();
    if size < 4 {
        return None;
    }
    let base = u32::from(subnet.addr());
    let start = match last {
        Some(l) if subnet.contains(l) => u64::from(u32::from(l) - base) + 1,
        _ => 1,
    };
    // hosts are 1..size-1; walk at most size-2 of them
    (0..size - 2)
        .map(|i| {
            let off = (start - 1 + i) % (size - 2) + 1;
            Ipv4Addr::from(base + off as u32)
        })
        .find(|ip| *ip != gateway && !used.contains(ip))
}

/// A Docker-style MAC for an address: `02:42:` followed by the four address bytes.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Formats a MAC address as `aa:bb:...`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl NetworkStore {
    /// Opens (creating if needed) the store at `dir`, e.g. `<engine root>/networks`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fsutil::create_dir(&dir.join("ipam"))?;
        Ok(NetworkStore {
            dir,
            claims: Claims::host(),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// See `NetworkStore::ensure_network`.
    pub(crate) fn setup_marker(&self, id: &str) -> PathBuf {
        self.dir.join("ipam").join(format!("{id}.setup"))
    }

    fn ipam_path(&self, id: &str) -> PathBuf {
        self.dir.join("ipam").join(format!("{id}.json"))
    }

    pub(crate) fn lock_store(&self) -> Result<LockGuard> {
        fsutil::lock(&self.dir.join("lock"), LOCK_TIMEOUT)
    }

    pub(crate) fn lock_network(&self, id: &str) -> Result<LockGuard> {
        fsutil::lock(
            &self.dir.join("ipam").join(format!("{id}.lock")),
            LOCK_TIMEOUT,
        )
    }

    /// Every network, sorted by name.
    pub fn list(&self) -> Result<Vec<NetworkInfo>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(|e| Error::io("read directory", &self.dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            if let Some(n) = fsutil::read_json::<NetworkInfo>(&entry.path())? {
                out.push(n);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A network by name, full id or unique id prefix.
    pub fn get(&self, name_or_id: &str) -> Result<NetworkInfo> {
        let all = self.list()?;
        if let Some(n) = all
            .iter()
            .find(|n| n.name == name_or_id || n.id == name_or_id)
        {
            return Ok(n.clone());
        }
        let by_prefix: Vec<_> = if name_or_id.is_empty() {
            Vec::new()
        } else {
            all.iter()
                .filter(|n| n.id.starts_with(name_or_id))
                .collect()
        };
        match by_prefix.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(Error::NetworkNotFound(name_or_id.to_owned())),
        }
    }

    /// Creates a network. The subnet, when not given, is the first of [`default_pools`] that
    /// overlaps neither another Berth network nor a host route or address.
    pub fn create(&self, name: &str, opts: CreateOptions) -> Result<NetworkInfo> {
        if !valid_name(name) {
            return Err(Error::InvalidName(name.to_owned()));
        }
        let _g = self.lock_store()?;
        self.create_locked(name, opts, None, None)
    }

    fn create_locked(
        &self,
        name: &str,
        opts: CreateOptions,
        preferred: Option<Ipv4Net>,
        default_bridge: Option<&str>,
    ) -> Result<NetworkInfo> {
        let existing = self.list()?;
        if existing.iter().any(|n| n.name == name) {
            return Err(Error::NetworkExists(name.to_owned()));
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        let record = self.record_path(&id);
        // Other roots' networks on this host (see crate::claims), chosen around under their lock.
        let _host = self.claims.as_ref().map(Claims::lock).transpose()?;
        let others = match &self.claims {
            Some(c) => c.others(&record)?,
            None => Vec::new(),
        };
        let bridge = match opts.bridge_name {
            Some(b) => {
                if !valid_ifname(&b) {
                    return Err(Error::InvalidConfig(format!(
                        "invalid bridge name {b:?} (at most 15 characters of [a-zA-Z0-9_.-])"
                    )));
                }
                if let Some(o) = existing.iter().find(|n| n.bridge == b) {
                    return Err(Error::InvalidConfig(format!(
                        "bridge name {b} is used by network {}",
                        o.name
                    )));
                }
                if let Some(o) = others.iter().find(|o| o.bridge == b) {
                    return Err(Error::InvalidConfig(format!(
                        "bridge name {b} is used by network {} of another Berth root ({})",
                        o.name,
                        o.record.display()
                    )));
                }
                b
            }
            // The default network's own name unless another root has it.
            None => match default_bridge {
                Some(b)
                    if !existing.iter().any(|n| n.bridge == b)
                        && !others.iter().any(|o| o.bridge == b) =>
                {
                    b.to_owned()
                }
                _ => format!("br-{}", &id[..12]),
            },
        };
        let taken: Vec<Ipv4Net> = existing
            .iter()
            .map(|n| n.subnet)
            .chain(others.iter().map(|o| o.subnet))
            .collect();
        let subnet = match opts.subnet {
            Some(s) => {
                if s.prefix_len() > 30 || s.prefix_len() < 8 {
                    return Err(Error::InvalidConfig(format!(
                        "subnet {s}: prefix length must be between /8 and /30"
                    )));
                }
                if let Some(o) = existing.iter().find(|n| n.subnet.overlaps(&s)) {
                    return Err(Error::SubnetOverlap {
                        subnet: s.to_string(),
                        other: o.name.clone(),
                    });
                }
                if let Some(o) = others.iter().find(|o| o.subnet.overlaps(&s)) {
                    return Err(Error::SubnetOverlap {
                        subnet: s.to_string(),
                        other: format!("{} of another Berth root ({})", o.name, o.record.display()),
                    });
                }
                s
            }
            None => {
                let mut avoid = taken;
                match crate::link::host_ipv4_networks() {
                    Ok(h) => avoid.extend(h),
                    Err(e) => {
                        warn!(error = %e, "cannot list host routes; choosing a subnet without them")
                    }
                }
                let candidates = preferred.into_iter().chain(default_pools());
                pick_subnet(candidates, &avoid).ok_or(Error::NoFreeSubnet)?
            }
        };
        let gateway = match opts.gateway {
            Some(g) => {
                if !subnet.contains(g) || g == subnet.addr() || g == subnet.broadcast() {
                    return Err(Error::InvalidConfig(format!(
                        "gateway {g} is not a host address of subnet {subnet}"
                    )));
                }
                g
            }
            None => subnet
                .nth(1)
                .ok_or_else(|| Error::InvalidConfig(format!("subnet {subnet} is too small")))?,
        };
        let info = NetworkInfo {
            id,
            name: name.to_owned(),
            driver: "bridge".to_owned(),
            bridge,
            subnet,
            gateway,
            internal: opts.internal,
            labels: opts.labels,
            created: now(),
        };
        fsutil::write_json(&self.ipam_path(&info.id), &Ipam::default())?;
        fsutil::write_json(&record, &info)?;
        if let Some(c) = &self.claims {
            if let Err(e) = c.claim(&info, &record) {
                let _ = fsutil::remove_file(&record);
                let _ = fsutil::remove_file(&self.ipam_path(&info.id));
                return Err(e);
            }
        }
        debug!(network = %info.name, id = %info.short_id(), subnet = %info.subnet, bridge = %info.bridge, "network created");
        Ok(info)
    }

    /// The default network `bridge` (bridge `berth0` unless another Berth root on this host
    /// has it, then `br-<12 hex>`; 172.17.0.0/16 unless that collides, then the next free
    /// pool), created on first use. Only the record: the bridge device is made by
    /// the first [`NetworkStore::attach`].
    pub fn ensure_default(&self) -> Result<NetworkInfo> {
        if let Ok(n) = self.get(DEFAULT_NETWORK) {
            return Ok(n);
        }
        let _g = self.lock_store()?;
        if let Ok(n) = self.get(DEFAULT_NETWORK) {
            return Ok(n);
        }
        let preferred: Option<Ipv4Net> = DEFAULT_SUBNET.parse().ok();
        self.create_locked(
            DEFAULT_NETWORK,
            CreateOptions::default(),
            preferred,
            Some(DEFAULT_BRIDGE),
        )
    }

    /// Removes a network: refuses while containers hold addresses on it, then deletes its bridge
    /// and nft rules and its records. Removing a missing network is `NetworkNotFound`.
    pub fn remove(&self, name_or_id: &str) -> Result<()> {
        let _g = self.lock_store()?;
        let info = self.get(name_or_id)?;
        let _n = self.lock_network(&info.id)?;
        let ipam = self.read_ipam(&info.id)?;
        if !ipam.allocations.is_empty() {
            let containers: Vec<&str> = ipam
                .allocations
                .keys()
                .map(|k| k.get(..12).unwrap_or(k))
                .collect();
            return Err(Error::NetworkInUse {
                network: info.name.clone(),
                containers: containers.join(", "),
            });
        }
        let _ = fs::remove_file(self.setup_marker(&info.id));
        let record = self.record_path(&info.id);
        let _host = self.claims.as_ref().map(Claims::lock).transpose()?;
        // A bridge another root holds (records from before claims existed) is not ours to delete.
        let foreign = match &self.claims {
            Some(c) => c.others(&record)?.iter().any(|o| o.bridge == info.bridge),
            None => false,
        };
        if foreign {
            warn!(network = %info.name, bridge = %info.bridge, "bridge belongs to another Berth root; leaving it");
        } else {
            crate::attach::teardown_network(&info)?;
        }
        if let Some(c) = &self.claims {
            c.release(&info, &record);
        }
        drop(_host);
        fsutil::remove_file(&self.record_path(&info.id))?;
        fsutil::remove_file(&self.ipam_path(&info.id))?;
        let _ = fs::remove_file(self.dir.join("ipam").join(format!("{}.lock", info.id)));
        debug!(network = %info.name, "network removed");
        Ok(())
    }

    pub(crate) fn read_ipam(&self, id: &str) -> Result<Ipam> {
        Ok(fsutil::read_json(&self.ipam_path(id))?.unwrap_or_default())
    }

    pub(crate) fn write_ipam(&self, id: &str, ipam: &Ipam) -> Result<()> {
        fsutil::write_json(&self.ipam_path(id), ipam)
    }

    /// Re-reads the record of a network that must still exist (call with its lock held).
    pub(crate) fn reload(&self, network: &NetworkInfo) -> Result<NetworkInfo> {
        fsutil::read_json::<NetworkInfo>(&self.record_path(&network.id))?
            .ok_or_else(|| Error::NetworkNotFound(network.name.clone()))
    }

    /// Allocates an address for `container_id` (the same one again if it has one).
    pub fn allocate(&self, network: &NetworkInfo, container_id: &str) -> Result<Ipv4Addr> {
        let _n = self.lock_network(&network.id)?;
        let network = self.reload(network)?;
        self.allocate_locked(&network, container_id)
    }

    pub(crate) fn allocate_locked(
        &self,
        network: &NetworkInfo,
        container_id: &str,
    ) -> Result<Ipv4Addr> {
        let mut ipam = self.read_ipam(&network.id)?;
        if let Some(a) = ipam.allocations.get(container_id) {
            return Ok(a.ip);
        }
        let used: Vec<Ipv4Addr> = ipam.allocations.values().map(|a| a.ip).collect();
        let ip = next_free_ip(&network.subnet, network.gateway, &used, ipam.last)
            .ok_or_else(|| Error::PoolExhausted(network.name.clone()))?;
        ipam.allocations.insert(
            container_id.to_owned(),
            Allocation {
                ip,
                host_veth: None,
                netns: None,
                mac: None,
            },
        );
        ipam.last = Some(ip);
        self.write_ipam(&network.id, &ipam)?;
        debug!(network = %network.name, container = container_id, %ip, "address allocated");
        Ok(ip)
    }

    /// Releases `container_id`'s address (nothing if it has none).
    pub fn release(&self, network: &NetworkInfo, container_id: &str) -> Result<()> {
        let _n = self.lock_network(&network.id)?;
        self.release_locked(network, container_id)
    }

    pub(crate) fn release_locked(&self, network: &NetworkInfo, container_id: &str) -> Result<()> {
        let mut ipam = self.read_ipam(&network.id)?;
        if ipam.allocations.remove(container_id).is_some() {
            self.write_ipam(&network.id, &ipam)?;
            debug!(network = %network.name, container = container_id, "address released");
        }
        Ok(())
    }

    /// The allocations of a network (container id → allocation): lets the engine find and
    /// detach endpoints of containers that no longer exist.
    pub fn endpoints(&self, network: &NetworkInfo) -> Result<BTreeMap<String, Allocation>> {
        Ok(self.read_ipam(&network.id)?.allocations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_picking() {
        let taken = vec![net("172.18.0.0/16"), net("172.20.5.0/24")];
        assert_eq!(
            pick_subnet(default_pools(), &taken),
            Some(net("172.19.0.0/16"))
        );
        let taken: Vec<Ipv4Net> = default_pools().take(14).collect();
        assert_eq!(
            pick_subnet(default_pools(), &taken),
            Some(net("10.89.0.0/24"))
        );
        // a host route covering everything in 172.16/12 and 10.89/16 leaves nothing
        let taken = vec![net("172.16.0.0/12"), net("10.0.0.0/8")];
        assert_eq!(pick_subnet(default_pools(), &taken), None);
        assert_eq!(default_pools().count(), 14 + 256);
    }

    #[test]
    fn ip_picking() {
        let s = net("10.1.2.0/29"); // hosts .1-.6, gateway .1
        let gw = Ipv4Addr::new(10, 1, 2, 1);
        let ip = |d| Ipv4Addr::new(10, 1, 2, d);
        assert_eq!(next_free_ip(&s, gw, &[], None), Some(ip(2)));
        assert_eq!(next_free_ip(&s, gw, &[ip(2)], Some(ip(2))), Some(ip(3)));
        // wraps around, skips used, never network/broadcast/gateway
        assert_eq!(next_free_ip(&s, gw, &[ip(2)], Some(ip(6))), Some(ip(3)));
        let all = [ip(2), ip(3), ip(4), ip(5), ip(6)];
        assert_eq!(next_free_ip(&s, gw, &all, Some(ip(4))), None);
        assert_eq!(next_free_ip(&s, gw, &all[..4], Some(ip(6))), Some(ip(6)));
        assert_eq!(next_free_ip(&net("10.1.2.0/31"), gw, &[], None), None);
        assert_eq!(format_mac(&mac_for_ip(ip(5))), "02:42:0a:01:02:05");
    }

    #[test]
    fn store_records_and_ipam() {
        let d = tempfile::tempdir().unwrap();
        let st = NetworkStore::open(d.path()).unwrap();
        let opts = CreateOptions {
            subnet: Some(net("10.250.7.0/24")),
            ..Default::default()
        };
        let n = st.create("front", opts.clone()).unwrap();
        assert_eq!(n.gateway, Ipv4Addr::new(10, 250, 7, 1));
        assert_eq!(n.bridge, format!("br-{}", &n.id[..12]));
        assert!(matches!(
            st.create("front", CreateOptions::default()),
            Err(Error::NetworkExists(_))
        ));
        assert!(matches!(
            st.create("other", opts),
            Err(Error::SubnetOverlap { .. })
        ));
        assert!(matches!(
            st.create("-bad", CreateOptions::default()),
            Err(Error::InvalidName(_))
        ));
        assert!(matches!(
            st.create(
                "gw",
                CreateOptions {
                    subnet: Some(net("10.250.8.0/24")),
                    gateway: Some(Ipv4Addr::new(10, 250, 9, 1)),
                    ..Default::default()
                }
            ),
            Err(Error::InvalidConfig(_))
        ));
        assert_eq!(st.get(&n.id[..10]).unwrap(), n);
        assert_eq!(st.list().unwrap(), vec![n.clone()]);
        let a = st.allocate(&n, "c1").unwrap();
        let b = st.allocate(&n, "c2").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 250, 7, 2));
        assert_eq!(b, Ipv4Addr::new(10, 250, 7, 3));
        assert_eq!(st.allocate(&n, "c1").unwrap(), a);
        assert!(matches!(
            st.remove("front"),
            Err(Error::NetworkInUse { .. })
        ));
        st.release(&n, "c1").unwrap();
        st.release(&n, "c1").unwrap();
        // not reused immediately
        assert_eq!(st.allocate(&n, "c3").unwrap(), Ipv4Addr::new(10, 250, 7, 4));
        // survives reopening
        let st2 = NetworkStore::open(d.path()).unwrap();
        assert_eq!(st2.endpoints(&n).unwrap().len(), 2);
    }
}
