//! `-p/--publish` values.
//!
//! Accepted forms (Docker's, IPv4 only): `CTR`, `HOST:CTR`, `IP:HOST:CTR`, `IP::CTR`, each port
//! possibly a range `A-B` (host and container ranges of equal length; a container range alone
//! gets ephemeral host ports), with an optional `/tcp` or `/udp` suffix (tcp by default).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One published port. `host_port == 0` asks for an ephemeral port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// `0.0.0.0` for all addresses.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip, self.host_port, self.container_port, self.protocol
        )
    }
}

/// Why a `-p` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    #[error("invalid publish spec {spec:?}: {reason}")]
    Invalid { spec: String, reason: String },
}

fn invalid(spec: &str, reason: impl Into<String>) -> PortSpecError {
    PortSpecError::Invalid {
        spec: spec.to_owned(),
        reason: reason.into(),
    }
}

/// `A` or `A-B` → inclusive range.
fn parse_range(
    spec: &str,
    s: &str,
    what: &str,
    allow_zero: bool,
) -> Result<(u16, u16), PortSpecError> {
    let port = |p: &str| -> Result<u16, PortSpecError> {
        let v: u16 = p
            .parse()
            .map_err(|_| invalid(spec, format!("invalid {what} port {p:?}")))?;
        if v == 0 && !allow_zero {
            return Err(invalid(spec, format!("{what} port must be 1-65535")));
        }
        Ok(v)
    };
    match s.split_once('-') {
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b || a == 0 {
                return Err(invalid(spec, format!("invalid {what} port range {s:?}")));
            }
            Ok((a, b))
        }
    }
}

/// Parses one `-p` value into its mappings (one per port of a range).
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, PortSpecError> {
    let s = spec.trim();
    if s.is_empty() {
        return Err(invalid(spec, "empty"));
    }
    let (rest, protocol) = match s.rsplit_once('/') {
        Some((r, "tcp")) => (r, Protocol::Tcp),
        Some((r, "udp")) => (r, Protocol::Udp),
        Some((_, p)) => {
            return Err(invalid(
                spec,
                format!("unsupported protocol {p:?} (tcp or udp)"),
            ))
        }
        None => (s, Protocol::Tcp),
    };
    if rest.starts_with('[') {
        return Err(invalid(spec, "IPv6 host addresses are not supported"));
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => (Some(*ip), if h.is_empty() { None } else { Some(*h) }, *c),
        _ => {
            return Err(invalid(
                spec,
                "expected [[IP:][HOSTPORT]:]CONTAINERPORT[/PROTO]",
            ))
        }
    };
    let host_ip = match ip {
        None | Some("") => Ipv4Addr::UNSPECIFIED,
        Some(ip) => ip
            .parse()
            .map_err(|_| invalid(spec, format!("invalid host IP {ip:?}")))?,
    };
    if ctr.is_empty() {
        return Err(invalid(spec, "no container port"));
    }
    let (c0, c1) = parse_range(spec, ctr, "container", false)?;
    let host = match host {
        None => None,
        Some("") => return Err(invalid(spec, "empty host port")),
        Some(h) => Some(parse_range(spec, h, "host", false)?),
    };
    let n = c1 - c0;
    let mut out = Vec::with_capacity(usize::from(n) + 1);
    match host {
        Some((h0, h1)) if h1 - h0 != n => {
            return Err(invalid(
                spec,
                "host and container port ranges must have the same length",
            ))
        }
        Some((h0, _)) => {
            for i in 0..=n {
                out.push(PortMapping {
                    host_ip,
                    host_port: h0 + i,
                    container_port: c0 + i,
                    protocol,
                });
            }
        }
        None => {
            for i in 0..=n {
                out.push(PortMapping {
                    host_ip,
                    host_port: 0,
                    container_port: c0 + i,
                    protocol,
                });
            }
        }
    }
    Ok(out)
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(format!("unsupported protocol {s:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ip: [u8; 4], h: u16, c: u16, p: Protocol) -> PortMapping {
        PortMapping {
            host_ip: Ipv4Addr::from(ip),
            host_port: h,
            container_port: c,
            protocol: p,
        }
    }

    #[test]
    fn forms() {
        use Protocol::*;
        assert_eq!(parse_publish("80").unwrap(), vec![m([0; 4], 0, 80, Tcp)]);
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            vec![m([0; 4], 8080, 80, Tcp)]
        );
        assert_eq!(
            parse_publish("127.0.0.1:8080:80/udp").unwrap(),
            vec![m([127, 0, 0, 1], 8080, 80, Udp)]
        );
        assert_eq!(
            parse_publish("127.0.0.1::80").unwrap(),
            vec![m([127, 0, 0, 1], 0, 80, Tcp)]
        );
        assert_eq!(
            parse_publish("53/udp").unwrap(),
            vec![m([0; 4], 0, 53, Udp)]
        );
        assert_eq!(
            parse_publish("8000-8001:80-81").unwrap(),
            vec![m([0; 4], 8000, 80, Tcp), m([0; 4], 8001, 81, Tcp)]
        );
        assert_eq!(
            parse_publish("80-81").unwrap(),
            vec![m([0; 4], 0, 80, Tcp), m([0; 4], 0, 81, Tcp)]
        );
        assert_eq!(
            parse_publish(":80").unwrap_err().to_string(),
            "invalid publish spec \":80\": empty host port"
        );
        for bad in [
            "",
            "x",
            "80/sctp",
            "0",
            "70000",
            "8000-8002:80-81",
            "1.2.3:80:80",
            "a:b:c:d",
            "[::1]:80:80",
            "81-80",
            "8080:",
            "8080:0",
        ] {
            let e = parse_publish(bad).unwrap_err();
            assert!(
                e.to_string().starts_with("invalid publish spec"),
                "{bad}: {e}"
            );
        }
    }
}
