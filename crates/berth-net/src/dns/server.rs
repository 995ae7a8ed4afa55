//! The DNS server: UDP and TCP on one address, local answers from a [`DnsTable`], forwarding.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tracing::{debug, warn};

use super::wire::{self, Answer};

/// How long upstream resolvers get before the client is answered SERVFAIL.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// TTL of local answers (Docker's).
const TTL: u32 = 600;
const TCP_IDLE: Duration = Duration::from_secs(10);
const MAX_INFLIGHT: usize = 256;
const MAX_TCP_CONNS: usize = 128;

/// Names of one network: lowercase names (without trailing dot) → addresses, and the reverse.
#[derive(Debug, Default, Clone)]
pub struct DnsTable {
    a: HashMap<String, Vec<Ipv4Addr>>,
    ptr: HashMap<Ipv4Addr, String>,
}

impl DnsTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` → `ip`. The first name added for an address is its PTR answer.
    pub fn insert(&mut self, name: &str, ip: Ipv4Addr) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return;
        }
        let ips = self.a.entry(name.clone()).or_default();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
        self.ptr.entry(ip).or_insert(name);
    }

    /// Addresses of `name` (lowercase, no trailing dot).
    pub fn lookup(&self, name: &str) -> Option<&[Ipv4Addr]> {
        self.a.get(name).map(|v| v.as_slice())
    }

    fn reverse(&self, name: &str) -> Option<&str> {
        let rest = name.strip_suffix(".in-addr.arpa")?;
        let o: Vec<u8> = rest.split('.').filter_map(|p| p.parse().ok()).collect();
        if o.len() != 4 || rest.split('.').count() != 4 {
            return None;
        }
        self.ptr
            .get(&Ipv4Addr::new(o[3], o[2], o[1], o[0]))
            .map(|s| s.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }
}

/// Parses `nameserver` lines of a resolv.conf (port 53).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next()) {
                (Some("nameserver"), Some(a)) => {
                    a.split('%').next().and_then(|a| a.parse::<IpAddr>().ok())
                }
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The host's resolvers from `/etc/resolv.conf`, loopback ones skipped. When only loopback ones
/// are listed (systemd-resolved's stub), the real upstreams from
/// `/run/systemd/resolve/resolv.conf` are used; failing that, the loopback ones (the daemon runs
/// in the host namespace, so it can reach them, unlike a container).
pub fn host_upstreams() -> Vec<SocketAddr> {
    let read = |p: &str| {
        std::fs::read_to_string(Path::new(p))
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default()
    };
    let all = read("/etc/resolv.conf");
    let remote: Vec<SocketAddr> = all
        .iter()
        .copied()
        .filter(|a| !a.ip().is_loopback())
        .collect();
    if !remote.is_empty() {
        return remote;
    }
    let systemd: Vec<SocketAddr> = read("/run/systemd/resolve/resolv.conf")
        .into_iter()
        .filter(|a| !a.ip().is_loopback())
        .collect();
    if !systemd.is_empty() {
        return systemd;
    }
    all
}

/// A running DNS server (UDP + TCP on one address); stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Ctx {
    table: Arc<RwLock<DnsTable>>,
    upstreams: Vec<SocketAddr>,
    inflight: Semaphore,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: an ephemeral port, the same for both) and serves.
    pub async fn start(
        addr: SocketAddr,
        table: Arc<RwLock<DnsTable>>,
        upstreams: Vec<SocketAddr>,
    ) -> io::Result<DnsServer> {
        let udp = Arc::new(UdpSocket::bind(addr).await?);
        let addr = udp.local_addr()?;
        let tcp = TcpListener::bind(addr).await?;
        let ctx = Arc::new(Ctx {
            table,
            upstreams,
            inflight: Semaphore::new(MAX_INFLIGHT),
        });
        let udp_task = tokio::spawn(serve_udp(udp, ctx.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, ctx));
        debug!(%addr, "dns server started");
        Ok(DnsServer {
            addr,
            tasks: vec![udp_task, tcp_task],
        })
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, ctx: Arc<Ctx>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "dns udp recv");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let packet = buf[..n].to_vec();
        match local_answer(&ctx, &packet) {
            Local::Reply(r) => {
                let _ = sock.send_to(&r, peer).await;
            }
            Local::Drop => {}
            Local::Forward => {
                let Ok(permit) = ctx.inflight.try_acquire() else {
                    continue;
                };
                permit.forget();
                let (sock, ctx) = (sock.clone(), ctx.clone());
                tokio::spawn(async move {
                    let r = forward_udp(&ctx.upstreams, &packet).await;
                    ctx.inflight.add_permits(1);
                    if let Some(r) =
                        r.or_else(|| wire::error_from_header(&packet, wire::RCODE_SERVFAIL))
                    {
                        let _ = sock.send_to(&r, peer).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(l: TcpListener, ctx: Arc<Ctx>) {
    let conns = Arc::new(Semaphore::new(MAX_TCP_CONNS));
    loop {
        let (s, _) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "dns tcp accept");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = serve_tcp_conn(s, &ctx).await;
            drop(permit);
        });
    }
}

async fn read_framed(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = s.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_framed(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::other("message too long"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await
}

async fn serve_tcp_conn(mut s: TcpStream, ctx: &Ctx) -> io::Result<()> {
    // bounded: at most 64 queries per connection, each read within TCP_IDLE
    for _ in 0..64 {
        let q = match timeout(TCP_IDLE, read_framed(&mut s)).await {
            Ok(Ok(q)) => q,
            _ => return Ok(()),
        };
        let r = match local_answer(ctx, &q) {
            Local::Reply(r) => Some(r),
            Local::Drop => None,
            Local::Forward => forward_tcp(&ctx.upstreams, &q)
                .await
                .or_else(|| wire::error_from_header(&q, wire::RCODE_SERVFAIL)),
        };
        match r {
            Some(r) => write_framed(&mut s, &r).await?,
            None => return Ok(()),
        }
    }
    Ok(())
}

enum Local {
    Reply(Vec<u8>),
    Forward,
    Drop,
}

fn local_answer(ctx: &Ctx, packet: &[u8]) -> Local {
    let q = match wire::parse_query(packet) {
        Ok(q) => q,
        Err(wire::WireError::NoHeader) | Err(wire::WireError::NotQuery) => return Local::Drop,
        Err(_) => {
            return wire::error_from_header(packet, wire::RCODE_FORMERR)
                .map_or(Local::Drop, Local::Reply)
        }
    };
    if q.opcode() != 0 {
        return Local::Reply(wire::response(&q, wire::RCODE_NOTIMP, &[], 0));
    }
    if q.qclass != wire::CLASS_IN {
        return Local::Forward;
    }
    let name = q.name();
    let Ok(table) = ctx.table.read() else {
        return Local::Reply(wire::response(&q, wire::RCODE_SERVFAIL, &[], 0));
    };
    if let Some(ips) = table.lookup(&name) {
        // known name: A records for A, an empty NOERROR for every other type (so AAAA lookups
        // end quickly instead of going upstream)
        let answers: Vec<Answer> = if q.qtype == wire::TYPE_A {
            ips.iter().map(|ip| Answer::A(*ip)).collect()
        } else {
            Vec::new()
        };
        return Local::Reply(wire::response(&q, wire::RCODE_NOERROR, &answers, TTL));
    }
    if q.qtype == wire::TYPE_PTR {
        if let Some(n) = table.reverse(&name) {
            return Local::Reply(wire::response(
                &q,
                wire::RCODE_NOERROR,
                &[Answer::Ptr(n.to_owned())],
                TTL,
            ));
        }
    }
    Local::Forward
}

/// Sends the query to every upstream at once, from a fresh random port; the first response with
/// the query's id from an upstream wins. `None` after [`FORWARD_TIMEOUT`].
async fn forward_udp(upstreams: &[SocketAddr], packet: &[u8]) -> Option<Vec<u8>> {
    if upstreams.is_empty() {
        return None;
    }
    let id = wire::peek_id(packet)?;
    let deadline = Instant::now() + FORWARD_TIMEOUT;
    let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok();
    let v6 = if upstreams.iter().any(|u| u.is_ipv6()) {
        UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0))
            .await
            .ok()
    } else {
        None
    };
    for u in upstreams {
        let s = if u.is_ipv4() {
            v4.as_ref()
        } else {
            v6.as_ref()
        };
        if let Some(s) = s {
            if let Err(e) = s.send_to(packet, u).await {
                debug!(upstream = %u, error = %e, "dns forward send");
            }
        }
    }
    let mut b4 = vec![0u8; 4096];
    let mut b6 = vec![0u8; 4096];
    loop {
        let recv = async {
            match (&v4, &v6) {
                (Some(a), Some(b)) => tokio::select! {
                    r = a.recv_from(&mut b4) => r.map(|(n, p)| (b4[..n].to_vec(), p)),
                    r = b.recv_from(&mut b6) => r.map(|(n, p)| (b6[..n].to_vec(), p)),
                },
                (Some(a), None) => a
                    .recv_from(&mut b4)
                    .await
                    .map(|(n, p)| (b4[..n].to_vec(), p)),
                (None, Some(b)) => b
                    .recv_from(&mut b6)
                    .await
                    .map(|(n, p)| (b6[..n].to_vec(), p)),
                (None, None) => Err(io::Error::other("no socket")),
            }
        };
        match tokio::time::timeout_at(deadline, recv).await {
            Ok(Ok((r, from))) => {
                if upstreams.contains(&from) && wire::peek_id(&r) == Some(id) && r.len() >= 12 {
                    return Some(r);
                }
            }
            Ok(Err(e)) => {
                // e.g. ECONNREFUSED from an ICMP error: wait for the others
                debug!(error = %e, "dns forward recv");
                if v4.is_none() && v6.is_none() {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                if Instant::now() >= deadline {
                    return None;
                }
            }
            Err(_) => {
                warn!(upstreams = ?upstreams, "no upstream DNS answer within {FORWARD_TIMEOUT:?}");
                return None;
            }
        }
    }
}

/// Forwards over TCP, upstreams in turn, all within [`FORWARD_TIMEOUT`].
async fn forward_tcp(upstreams: &[SocketAddr], packet: &[u8]) -> Option<Vec<u8>> {
    let deadline = Instant::now() + FORWARD_TIMEOUT;
    for u in upstreams {
        let attempt = async {
            let mut s = TcpStream::connect(u).await?;
            write_framed(&mut s, packet).await?;
            read_framed(&mut s).await
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(r)) if wire::peek_id(&r) == wire::peek_id(packet) => return Some(r),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{build_query, parse_a_answers, rcode, TYPE_A};

    fn table() -> Arc<RwLock<DnsTable>> {
        let mut t = DnsTable::new();
        t.insert("web", Ipv4Addr::new(10, 7, 0, 2));
        t.insert("web.front", Ipv4Addr::new(10, 7, 0, 2));
        t.insert("Alias", Ipv4Addr::new(10, 7, 0, 2));
        Arc::new(RwLock::new(t))
    }

    async fn udp_query(server: SocketAddr, q: &[u8]) -> Vec<u8> {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(q, server).await.unwrap();
        let mut b = vec![0u8; 4096];
        let (n, _) = timeout(Duration::from_secs(5), s.recv_from(&mut b))
            .await
            .unwrap()
            .unwrap();
        b[..n].to_vec()
    }

    #[tokio::test]
    async fn local_names_forwarding_and_servfail() {
        // a fake upstream answering NXDOMAIN to everything
        let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = vec![0u8; 4096];
            while let Ok((n, p)) = up.recv_from(&mut b).await {
                let q = wire::parse_query(&b[..n]).unwrap();
                let _ = up
                    .send_to(&wire::response(&q, wire::RCODE_NXDOMAIN, &[], 0), p)
                    .await;
            }
        });
        let srv = DnsServer::start("127.0.0.1:0".parse().unwrap(), table(), vec![up_addr])
            .await
            .unwrap();
        let a = srv.local_addr();
        let r = udp_query(a, &build_query(1, "WEB.", TYPE_A)).await;
        assert_eq!(
            parse_a_answers(&r).unwrap(),
            (0, vec![Ipv4Addr::new(10, 7, 0, 2)])
        );
        let r = udp_query(a, &build_query(2, "web.front", TYPE_A)).await;
        assert_eq!(parse_a_answers(&r).unwrap().1.len(), 1);
        let r = udp_query(a, &build_query(3, "alias", 28)).await; // AAAA: NODATA
        assert_eq!(parse_a_answers(&r).unwrap(), (0, vec![]));
        let r = udp_query(a, &build_query(4, "2.0.7.10.in-addr.arpa", wire::TYPE_PTR)).await;
        assert_eq!(rcode(&r), Some(0));
        let r = udp_query(a, &build_query(5, "nope.example", TYPE_A)).await;
        assert_eq!(
            (wire::peek_id(&r), rcode(&r)),
            (Some(5), Some(wire::RCODE_NXDOMAIN))
        );
        // garbage with a header: FORMERR; without: no answer (and the server survives)
        let mut bad = build_query(6, "x", TYPE_A);
        bad.truncate(14);
        assert_eq!(rcode(&udp_query(a, &bad).await), Some(wire::RCODE_FORMERR));
        // TCP
        let mut s = TcpStream::connect(a).await.unwrap();
        write_framed(&mut s, &build_query(7, "web", TYPE_A))
            .await
            .unwrap();
        let r = read_framed(&mut s).await.unwrap();
        assert_eq!(
            parse_a_answers(&r).unwrap(),
            (0, vec![Ipv4Addr::new(10, 7, 0, 2)])
        );

        // a silent upstream: SERVFAIL after the forward timeout
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let srv2 = DnsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            table(),
            vec![silent.local_addr().unwrap()],
        )
        .await
        .unwrap();
        let t0 = std::time::Instant::now();
        let r = udp_query(srv2.local_addr(), &build_query(8, "nope.example", TYPE_A)).await;
        assert_eq!(rcode(&r), Some(wire::RCODE_SERVFAIL));
        assert!(t0.elapsed() >= Duration::from_millis(1900));
        // no upstreams at all: SERVFAIL at once
        let srv3 = DnsServer::start("127.0.0.1:0".parse().unwrap(), table(), vec![])
            .await
            .unwrap();
        let r = udp_query(srv3.local_addr(), &build_query(9, "nope.example", TYPE_A)).await;
        assert_eq!(rcode(&r), Some(wire::RCODE_SERVFAIL));
    }

    #[test]
    fn resolv_conf() {
        let t =
            "# x\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch a\nnameserver fe80::1%eth0\n";
        let v = parse_resolv_conf(t);
        assert_eq!(v.len(), 3);
        assert_eq!(v[1], "10.0.0.2:53".parse().unwrap());
    }
}
