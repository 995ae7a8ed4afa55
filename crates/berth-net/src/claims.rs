//! Host-wide claims on bridge names and subnets.
//!
//! Network records live in each Berth root (`<root>/networks`), but bridges, addresses and
//! routes belong to the host: two roots on one machine (two `berth serve`s, a test suite's many
//! temporary roots, `berth` next to a `berth agent`) must never pick the same bridge device or
//! overlapping subnets, or their containers share one L2 segment with the same addresses and
//! MACs and one root's `network rm` deletes the other's bridge. A subnet whose bridge exists is
//! visible as a host route, but a network's bridge is only made at its first attach, so routes
//! alone cannot tell.
//!
//! So each network claims its bridge and subnet in `/run/berth/networks/<bridge>.json`, under
//! the flock `/run/berth/networks/lock`, which also serializes the choice of new bridges and
//! subnets between roots. A claim names the record it belongs to (`<root>/networks/<id>.json`);
//! a claim whose record no longer exists (a deleted root) is stale and is removed when seen.
//! `/run` is emptied at boot; networks claim again at their first attach after it.
//!
//! Only root keeps claims: other users cannot create bridges, so their stores (unit tests) have
//! nothing to collide on.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::cidr::Ipv4Net;
use crate::error::{Error, Result};
use crate::fsutil::{self, LockGuard, LOCK_TIMEOUT};
use crate::store::NetworkInfo;

/// Where root keeps the claims.
pub(crate) const HOST_DIR: &str = "/run/berth/networks";

/// One network's claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claim {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// The network's name (for error messages).
    pub name: String,
    /// The network's record file.
    pub record: PathBuf,
}

impl Claim {
    fn live(&self) -> bool {
        self.record.exists()
    }
}

/// The claims directory.
#[derive(Clone, Debug)]
pub(crate) struct Claims {
    dir: PathBuf,
}

impl Claims {
    /// The host's claims, for root; `None` for other users.
    pub fn host() -> Option<Claims> {
        nix::unistd::geteuid()
            .is_root()
            .then(|| Claims::at(PathBuf::from(HOST_DIR)))
    }

    pub fn at(dir: PathBuf) -> Claims {
        Claims { dir }
    }

    /// Takes the host-wide lock (creating the directory).
    pub fn lock(&self) -> Result<LockGuard> {
        fsutil::create_dir(&self.dir)?;
        fsutil::lock(&self.dir.join("lock"), LOCK_TIMEOUT)
    }

    fn path(&self, bridge: &str) -> PathBuf {
        self.dir.join(format!("{bridge}.json"))
    }

    /// The live claims of networks other than the one recorded at `own` (with the lock held);
    /// stale claims are removed.
    pub fn others(&self, own: &Path) -> Result<Vec<Claim>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("read directory", &self.dir, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let claim = match fsutil::read_json::<Claim>(&path) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "ignoring an unreadable network claim");
                    continue;
                }
            };
            if claim.record == own {
                continue;
            }
            if claim.live() {
                out.push(claim);
            } else {
                debug!(bridge = %claim.bridge, record = %claim.record.display(), "removing a stale network claim");
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(out)
    }

    /// Claims `network`'s bridge and subnet for the record at `record` (with the lock held).
    pub fn claim(&self, network: &NetworkInfo, record: &Path) -> Result<()> {
        let c = Claim {
            bridge: network.bridge.clone(),
            subnet: network.subnet,
            name: network.name.clone(),
            record: record.to_owned(),
        };
        fsutil::write_json(&self.path(&network.bridge), &c)
    }

    /// Whether `network`'s bridge is claimed by the record at `record` (no lock needed: claims
    /// are replaced atomically).
    pub fn is_claimed_by(&self, network: &NetworkInfo, record: &Path) -> bool {
        matches!(
            fsutil::read_json::<Claim>(&self.path(&network.bridge)),
            Ok(Some(c)) if c.record == record && c.subnet == network.subnet
        )
    }

    /// Makes sure `network` holds its claim: claims it when free, fails when another live
    /// network holds its bridge or an overlapping subnet (after a reboot another root may have
    /// taken them first).
    pub fn ensure(&self, network: &NetworkInfo, record: &Path) -> Result<()> {
        if self.is_claimed_by(network, record) {
            return Ok(());
        }
        let _g = self.lock()?;
        for o in self.others(record)? {
            if o.bridge == network.bridge {
                return Err(Error::InvalidConfig(format!(
                    "bridge {} of network {} is in use by network {} of another Berth root ({})",
                    network.bridge,
                    network.name,
                    o.name,
                    o.record.display()
                )));
            }
            if o.subnet.overlaps(&network.subnet) {
                return Err(Error::SubnetOverlap {
                    subnet: network.subnet.to_string(),
                    other: format!("{} of another Berth root ({})", o.name, o.record.display()),
                });
            }
        }
        self.claim(network, record)
    }

    /// Drops `network`'s claim if the record at `record` holds it (with the lock held).
    pub fn release(&self, network: &NetworkInfo, record: &Path) {
        let path = self.path(&network.bridge);
        if let Ok(Some(c)) = fsutil::read_json::<Claim>(&path) {
            if c.record == record {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn net(name: &str, bridge: &str, subnet: &str) -> NetworkInfo {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        NetworkInfo {
            id: "0".repeat(64),
            name: name.into(),
            driver: "bridge".into(),
            bridge: bridge.into(),
            subnet,
            gateway: subnet.nth(1).unwrap(),
            internal: false,
            labels: BTreeMap::new(),
            created: 0,
        }
    }

    #[test]
    fn claims_conflict_and_go_stale_with_their_record() {
        let d = tempfile::tempdir().unwrap();
        let claims = Claims::at(d.path().join("claims"));
        let (rec_a, rec_b) = (d.path().join("a.json"), d.path().join("b.json"));
        std::fs::write(&rec_a, "{}").unwrap();
        std::fs::write(&rec_b, "{}").unwrap();
        let a = net("bridge", "berth0", "172.17.0.0/16");
        claims.ensure(&a, &rec_a).unwrap();
        assert!(claims.is_claimed_by(&a, &rec_a));
        claims.ensure(&a, &rec_a).unwrap();
        // Another root's network on the same bridge, or on an overlapping subnet: refused.
        let err = claims.ensure(&a, &rec_b).unwrap_err().to_string();
        assert!(err.contains("another Berth root"), "{err}");
        let b = net("bridge", "br-000000000000", "172.17.5.0/24");
        assert!(matches!(
            claims.ensure(&b, &rec_b),
            Err(Error::SubnetOverlap { .. })
        ));
        let _g = claims.lock().unwrap();
        assert_eq!(claims.others(&rec_b).unwrap().len(), 1);
        assert!(claims.others(&rec_a).unwrap().is_empty());
        drop(_g);
        // Released only by its owner.
        claims.release(&a, &rec_b);
        assert!(claims.is_claimed_by(&a, &rec_a));
        // A deleted root's claim is stale: gone when seen, and the bridge is free again.
        std::fs::remove_file(&rec_a).unwrap();
        claims.ensure(&b, &rec_b).unwrap();
        assert!(!claims.path("berth0").exists());
        claims.release(&b, &rec_b);
        assert!(!claims.path(&b.bridge).exists());
    }
}
