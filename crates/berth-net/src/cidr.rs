//! IPv4 CIDR prefixes.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 network: a network address with its host bits zero, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("invalid CIDR {0:?}: expected a.b.c.d/len")]
    Syntax(String),
    #[error("invalid CIDR {0:?}: prefix length must be 0..=32")]
    Prefix(String),
    #[error("invalid subnet {given}: it should be {expected}")]
    HostBits { given: String, expected: String },
}

impl Ipv4Net {
    /// A network from an address and a prefix length; host bits are cleared.
    pub fn new_truncate(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        if prefix > 32 {
            return None;
        }
        Some(Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// The netmask as a `u32`.
    pub fn mask(&self) -> u32 {
        mask(self.prefix)
    }

    /// The broadcast address (last address of the network).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let m = mask(self.prefix.min(other.prefix));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// The `n`th address of the network (0 is the network address), if inside it.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = self.size();
        if u64::from(n) >= size {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.addr).wrapping_add(n)))
    }

    /// How many addresses the network spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = CidrError;

    /// Parses `a.b.c.d/len`; host bits must be zero (Docker's rule, with its message).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.to_owned()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| CidrError::Syntax(s.to_owned()))?;
        let prefix: u8 = p.parse().map_err(|_| CidrError::Prefix(s.to_owned()))?;
        let net =
            Ipv4Net::new_truncate(addr, prefix).ok_or_else(|| CidrError::Prefix(s.to_owned()))?;
        if net.addr != addr {
            return Err(CidrError::HostBits {
                given: s.to_owned(),
                expected: net.to_string(),
            });
        }
        Ok(net)
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = CidrError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_relations() {
        let n: Ipv4Net = "172.18.0.0/16".parse().unwrap();
        assert_eq!(n.broadcast(), Ipv4Addr::new(172, 18, 255, 255));
        assert!(n.contains(Ipv4Addr::new(172, 18, 3, 4)));
        assert!(!n.contains(Ipv4Addr::new(172, 19, 0, 1)));
        let m: Ipv4Net = "172.18.5.0/24".parse().unwrap();
        assert!(n.overlaps(&m) && m.overlaps(&n));
        assert!(!m.overlaps(&"172.18.6.0/24".parse().unwrap()));
        assert_eq!(n.nth(1), Some(Ipv4Addr::new(172, 18, 0, 1)));
        assert_eq!(m.nth(256), None);
        assert!(matches!(
            "172.18.0.1/16".parse::<Ipv4Net>(),
            Err(CidrError::HostBits { .. })
        ));
        assert!("172.18.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("172.18.0.0".parse::<Ipv4Net>().is_err());
        assert!("0.0.0.0/0"
            .parse::<Ipv4Net>()
            .unwrap()
            .contains(Ipv4Addr::new(1, 2, 3, 4)));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"172.18.5.0/24\"");
        assert_eq!(serde_json::from_str::<Ipv4Net>(&json).unwrap(), m);
    }
}
