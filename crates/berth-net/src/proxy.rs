//! The userspace port proxy behind published ports: TCP (copy both ways, half-close passed on)
//! and UDP (one flow per client address, ended after an idle timeout).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tracing::debug;

use crate::ports::{PortMapping, Protocol};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A UDP flow with no packet either way for this long is closed.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_TCP_CONNS: usize = 4096;
const MAX_UDP_FLOWS: usize = 1024;

/// A bound, not yet serving, host socket.
#[derive(Debug)]
pub(crate) enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Bound {
    /// Binds the host side of `m` (`host_port` 0: ephemeral).
    pub(crate) async fn bind(m: &PortMapping) -> io::Result<Bound> {
        let addr = SocketAddrV4::new(m.host_ip, m.host_port);
        Ok(match m.protocol {
            Protocol::Tcp => Bound::Tcp(TcpListener::bind(addr).await?),
            Protocol::Udp => Bound::Udp(UdpSocket::bind(addr).await?),
        })
    }

    pub(crate) fn port(&self) -> io::Result<u16> {
        match self {
            Bound::Tcp(l) => l.local_addr().map(|a| a.port()),
            Bound::Udp(s) => s.local_addr().map(|a| a.port()),
        }
    }

    /// Starts proxying to `target`; stops when the handle is dropped.
    pub(crate) fn serve(self, target: SocketAddrV4) -> ProxyHandle {
        let task = match self {
            Bound::Tcp(l) => tokio::spawn(serve_tcp(l, target)),
            Bound::Udp(s) => tokio::spawn(serve_udp(Arc::new(s), target)),
        };
        ProxyHandle { task }
    }
}

/// A running proxy; aborted (its sockets closed) on drop.
#[derive(Debug)]
pub(crate) struct ProxyHandle {
    task: JoinHandle<()>,
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_tcp(l: TcpListener, target: SocketAddrV4) {
    let conns = Arc::new(Semaphore::new(MAX_TCP_CONNS));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (mut client, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "proxy accept");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // reap finished connection tasks
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            continue;
        };
        // tasks live in the JoinSet, so they end with the proxy
        tasks.spawn(async move {
            let _permit = permit;
            let mut upstream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, %target, error = %e, "proxy connect");
                    return;
                }
                Err(_) => {
                    debug!(%peer, %target, "proxy connect timed out");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            // copy_bidirectional shuts down the write side of one stream when the other reaches
            // EOF, so half-closes are passed on
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                debug!(%peer, error = %e, "proxy copy");
            }
        });
    }
}

struct Flow {
    sock: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

async fn serve_udp(listener: Arc<UdpSocket>, target: SocketAddrV4) {
    let start = Instant::now();
    let flows: Arc<Mutex<HashMap<SocketAddr, Flow>>> = Arc::new(Mutex::new(HashMap::new()));
    let _guard = FlowsGuard(flows.clone());
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = match listener.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "udp proxy recv");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let now_ms = start.elapsed().as_millis() as u64;
        let existing = flows
            .lock()
            .ok()
            .and_then(|f| f.get(&client).map(|f| (f.sock.clone(), f.last.clone())));
        let (sock, last) = match existing {
            Some(x) => x,
            None => {
                let full = flows
                    .lock()
                    .map(|f| f.len() >= MAX_UDP_FLOWS)
                    .unwrap_or(true);
                if full {
                    continue;
                }
                let sock = match UdpSocket::bind("0.0.0.0:0").await {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(error = %e, "udp proxy flow socket");
                        continue;
                    }
                };
                if let Err(e) = sock.connect(target).await {
                    debug!(error = %e, "udp proxy connect");
                    continue;
                }
                let sock = Arc::new(sock);
                let last = Arc::new(AtomicU64::new(now_ms));
                let task = tokio::spawn(flow_replies(
                    listener.clone(),
                    sock.clone(),
                    client,
                    last.clone(),
                    start,
                    flows.clone(),
                ));
                if let Ok(mut f) = flows.lock() {
                    f.insert(
                        client,
                        Flow {
                            sock: sock.clone(),
                            last: last.clone(),
                            task,
                        },
                    );
                }
                (sock, last)
            }
        };
        last.store(now_ms, Ordering::Relaxed);
        if let Err(e) = sock.send(&buf[..n]).await {
            debug!(%client, error = %e, "udp proxy send");
        }
    }
}

/// Aborts every flow task when the proxy task ends (the flow tasks hold the listener).
struct FlowsGuard(Arc<Mutex<HashMap<SocketAddr, Flow>>>);

impl Drop for FlowsGuard {
    fn drop(&mut self) {
        if let Ok(mut f) = self.0.lock() {
            for (_, flow) in f.drain() {
                flow.task.abort();
            }
        }
    }
}

async fn flow_replies(
    listener: Arc<UdpSocket>,
    sock: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    start: Instant,
    flows: Arc<Mutex<HashMap<SocketAddr, Flow>>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match timeout(UDP_IDLE_TIMEOUT, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                let _ = listener.send_to(&buf[..n], client).await;
            }
            // ICMP port unreachable from the container etc.: keep the flow until idle
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => {
                let idle_ms = (start.elapsed().as_millis() as u64)
                    .saturating_sub(last.load(Ordering::Relaxed));
                if idle_ms >= UDP_IDLE_TIMEOUT.as_millis() as u64 {
                    break;
                }
            }
        }
    }
    if let Ok(mut f) = flows.lock() {
        f.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_and_udp_round_trip() {
        // TCP echo server that reads to EOF, then answers (tests the half-close)
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut v = Vec::new();
            s.read_to_end(&mut v).await.unwrap();
            s.write_all(&v).await.unwrap();
        });
        let m = PortMapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 0,
            container_port: echo_port,
            protocol: Protocol::Tcp,
        };
        let b = Bound::bind(&m).await.unwrap();
        let port = b.port().unwrap();
        let _h = b.serve(SocketAddrV4::new(Ipv4Addr::LOCALHOST, echo_port));
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        c.shutdown().await.unwrap();
        let mut v = Vec::new();
        timeout(Duration::from_secs(5), c.read_to_end(&mut v))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, b"hello");

        let us = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let us_port = us.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut b = [0u8; 100];
            loop {
                let (n, p) = us.recv_from(&mut b).await.unwrap();
                us.send_to(&b[..n], p).await.unwrap();
            }
        });
        let m = PortMapping {
            protocol: Protocol::Udp,
            container_port: us_port,
            ..m
        };
        let b = Bound::bind(&m).await.unwrap();
        let port = b.port().unwrap();
        let h = b.serve(SocketAddrV4::new(Ipv4Addr::LOCALHOST, us_port));
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for msg in [&b"one"[..], b"two"] {
            c.send_to(msg, ("127.0.0.1", port)).await.unwrap();
            let mut r = [0u8; 100];
            let (n, _) = timeout(Duration::from_secs(5), c.recv_from(&mut r))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&r[..n], msg);
        }
        drop(h);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // the port is free again once the proxy is dropped
        UdpSocket::bind(("127.0.0.1", port)).await.unwrap();
    }
}
