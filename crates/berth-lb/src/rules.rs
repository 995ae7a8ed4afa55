//! Rule conditions compiled from [`crate::config::Condition`] and evaluated against a
//! request: patterns split once per apply, CIDRs parsed once, header names normalised. Pure (no
//! I/O), so every condition is unit-tested here.
//!
//! Semantics (ELBv2): a rule matches when all its conditions match; a condition matches when
//! any of its values does. Path patterns are case-sensitive and see the path only; host
//! patterns, header values and query-string keys/values are case-insensitive; the host's port
//! is ignored; methods are exact. Query strings are matched percent-decoded.

use std::net::IpAddr;

use http::header::HeaderName;
use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

use crate::config::Condition;
use crate::pattern::Pattern;

/// What conditions look at, borrowed from the request.
#[derive(Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// The raw query string (without `?`), if any.
    pub query: Option<&'a str>,
    /// Host header (or `:authority`) without the port.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `v6addr/n` (a bare address is a /32 or /128).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Cond {
    Path(Vec<Pattern>),
    Host(Vec<Pattern>),
    Header {
        name: Option<HeaderName>,
        values: Vec<Pattern>,
    },
    Method(Vec<String>),
    Query(Vec<(Option<Pattern>, Pattern)>),
    /// Unparsable blocks are dropped (the API validated them; a block we cannot read never
    /// matches).
    SourceIp(Vec<Cidr>),
}

impl Cond {
    pub fn compile(c: &Condition) -> Cond {
        match c {
            Condition::PathPattern(v) => Cond::Path(v.iter().map(|p| Pattern::new(p)).collect()),
            Condition::HostHeader(v) => Cond::Host(
                v.iter()
                    .map(|p| Pattern::new_ignore_case(strip_port(p)))
                    .collect(),
            ),
            Condition::HttpHeader { name, values } => Cond::Header {
                name: HeaderName::from_bytes(name.trim().as_bytes()).ok(),
                values: values.iter().map(|p| Pattern::new_ignore_case(p)).collect(),
            },
            Condition::HttpRequestMethod(v) => Cond::Method(v.clone()),
            Condition::QueryString(v) => Cond::Query(
                v.iter()
                    .map(|(k, val)| {
                        (
                            k.as_deref().map(Pattern::new_ignore_case),
                            Pattern::new_ignore_case(val),
                        )
                    })
                    .collect(),
            ),
            Condition::SourceIp(v) => Cond::SourceIp(
                v.iter()
                    .filter_map(|s| {
                        let c = Cidr::parse(s);
                        if c.is_none() {
                            tracing::warn!(cidr = %s, "source-ip condition: not a CIDR block, ignored");
                        }
                        c
                    })
                    .collect(),
            ),
        }
    }

    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        match self {
            Cond::Path(ps) => ps.iter().any(|p| p.matches(r.path)),
            Cond::Host(ps) => ps.iter().any(|p| p.matches(r.host)),
            Cond::Header { name, values } => {
                let Some(name) = name else { return false };
                r.headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| values.iter().any(|p| p.matches(v)))
            }
            Cond::Method(ms) => ms.iter().any(|m| m == r.method.as_str()),
            Cond::Query(pairs) => {
                let Some(q) = r.query else { return false };
                query_pairs(q).any(|(k, v)| {
                    pairs.iter().any(|(pk, pv)| {
                        pk.as_ref().is_none_or(|pk| pk.matches(&k)) && pv.matches(&v)
                    })
                })
            }
            Cond::SourceIp(cs) => cs.iter().any(|c| c.contains(r.client_ip)),
        }
    }
}

/// `k=v` pairs of a query string, percent-decoded (a key without `=` has an empty value).
fn query_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|s| !s.is_empty()).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (decode(k), decode(v))
    })
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

/// `host:port` → `host` (`[v6]:port` → `[v6]`).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether every condition matches.
pub fn all_match(conds: &[Cond], r: &RequestView<'_>) -> bool {
    conds.iter().all(|c| c.matches(r))
}

/// Fills a redirect location's placeholders from the request, as ALB does: `#{protocol}`
/// (`http`), `#{host}` (without port), `#{port}` (the listener's), `#{path}` (the path without
/// its leading `/`, so ALB's default `/#{path}` gives the original path), `#{query}` (without
/// `?`). A location that ends in `?` after filling (empty query) loses the `?`.
pub fn fill_location(template: &str, host: &str, port: u16, path: &str, query: &str) -> String {
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut out = template
        .replace("#{protocol}", "http")
        .replace("#{host}", host)
        .replace("#{port}", &port.to_string())
        .replace("#{path}", path)
        .replace("#{query}", query);
    if out.ends_with('?') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        host: &'a str,
        headers: &'a HeaderMap,
        ip: &str,
    ) -> RequestView<'a> {
        RequestView {
            method,
            path,
            query,
            host,
            headers,
            client_ip: ip.parse().expect("ip"),
        }
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.1.2.3".parse().expect("ip")));
        assert!(c.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let all = Cidr::parse("0.0.0.0/0").expect("cidr");
        assert!(all.contains("1.2.3.4".parse().expect("ip")));
        assert!(!all.contains("::1".parse().expect("ip")));
        let one = Cidr::parse("::1/128").expect("cidr");
        assert!(one.contains("::1".parse().expect("ip")));
        assert!(!one.contains("::2".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope/8").is_none());
        assert_eq!(Cidr::parse("127.0.0.1"), Cidr::parse("127.0.0.1/32"));
    }

    #[test]
    fn conditions() {
        let get = Method::GET;
        let mut h = HeaderMap::new();
        h.insert("x-env", "Canary".parse().expect("hv"));
        let r = view(
            &get,
            "/api/users",
            Some("Version=v2&x=1+2"),
            "api.example.com",
            &h,
            "192.168.1.5",
        );
        let c = |c: Condition| Cond::compile(&c).matches(&r);
        assert!(c(Condition::PathPattern(vec![
            "/web".into(),
            "/api/*".into()
        ])));
        assert!(!c(Condition::PathPattern(vec!["/API/*".into()])));
        assert!(c(Condition::HostHeader(vec!["*.EXAMPLE.com".into()])));
        assert!(c(Condition::HostHeader(
            vec!["api.example.com:8080".into()]
        )));
        assert!(!c(Condition::HostHeader(vec!["www.example.com".into()])));
        assert!(c(Condition::HttpHeader {
            name: "X-Env".into(),
            values: vec!["canary".into()]
        }));
        assert!(!c(Condition::HttpHeader {
            name: "X-Other".into(),
            values: vec!["*".into()]
        }));
        assert!(c(Condition::HttpRequestMethod(vec![
            "POST".into(),
            "GET".into()
        ])));
        assert!(!c(Condition::HttpRequestMethod(vec!["get".into()])));
        assert!(c(Condition::QueryString(vec![(
            Some("version".into()),
            "V2".into()
        )])));
        assert!(c(Condition::QueryString(vec![(None, "1 2".into())])));
        assert!(!c(Condition::QueryString(vec![(
            Some("version".into()),
            "v3".into()
        )])));
        assert!(c(Condition::SourceIp(vec!["192.168.0.0/16".into()])));
        assert!(!c(Condition::SourceIp(vec![
            "10.0.0.0/8".into(),
            "garbage".into()
        ])));
        let no_q = view(&get, "/", None, "h", &h, "::1");
        assert!(!Cond::compile(&Condition::QueryString(vec![(None, "*".into())])).matches(&no_q));
    }

    #[test]
    fn ports_and_locations() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(
            fill_location(
                "#{protocol}://#{host}:#{port}/#{path}?#{query}",
                "a.com",
                80,
                "/x/y",
                "q=1"
            ),
            "http://a.com:80/x/y?q=1"
        );
        assert_eq!(
            fill_location("https://#{host}:443/#{path}?#{query}", "a.com", 80, "/", ""),
            "https://a.com:443/"
        );
    }
}
