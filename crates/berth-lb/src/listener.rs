//! Listener sockets: the accept loop and per-connection serving.
//!
//! Each accepted connection (TCP_NODELAY) is served by hyper-util's `auto` builder, which
//! speaks HTTP/1.1 and h2c prior knowledge on the same socket, with upgrades enabled (for
//! WebSockets). The connection's requests read the listener's routing table at request time,
//! so an apply changes routing for new requests on existing connections too.
//!
//! A listener is one socket per worker thread (`SO_REUSEPORT`, the kernel spreads
//! connections over them; see [`crate::workers`]), each with its own accept loop on its
//! worker, so connections never leave the thread that accepted them. Without workers (0
//! threads) the accept loops run on the caller's runtime.
//!
//! Stopping a listener (removed by an apply, or shutdown): the accept loop drops the socket
//! at once (so the port is free when `apply` returns), then every connection is told to shut
//! down gracefully: in-flight requests finish, idle keep-alive connections close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::proxy::{handle, ConnCtx, ListenerShared, Upstream};
use crate::workers::{AliveGuard, Workers};

/// Pending connections per socket (tokio's `TcpListener::bind` default).
const BACKLOG: i32 = 1024;

/// A running listener: its accept loops.
#[derive(Debug)]
pub struct Running {
    pub stop: CancellationToken,
    /// One per socket; fires once it is closed.
    pub closed: Vec<oneshot::Receiver<()>>,
}

impl Running {
    /// Stops accepting and waits (at most 5 s) until every socket is closed; the open
    /// connections then finish their in-flight requests.
    pub async fn close(self) {
        self.stop.cancel();
        for c in self.closed {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
    }
}

/// Binds `n` listening sockets to `addr` (`SO_REUSEPORT` when more than one): the first one
/// resolves port 0, the others bind the port it got. Returns them and that address.
pub fn bind(
    addr: SocketAddr,
    n: usize,
) -> std::io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let reuse_port = n > 1;
    if reuse_port && addr.port() != 0 {
        // SO_REUSEPORT sockets of the same user share a port silently: make sure nobody
        // (another data plane, another process) holds this one first. (An automatic port
        // is never one that is already bound.)
        drop(bind_one(addr, false)?);
    }
    let first = bind_one(addr, reuse_port)?;
    let local = first.local_addr()?;
    let mut socks = Vec::with_capacity(n);
    socks.push(first);
    for _ in 1..n {
        socks.push(bind_one(local, reuse_port)?);
    }
    Ok((socks, local))
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio's `TcpListener::bind`: a restarted listener can take its port back at once.
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Starts one accept loop per socket: socket `i` on worker `i` (on the caller's runtime when
/// there are no workers), each with its worker's upstream clients `ups[i]`.
pub fn spawn(
    socks: Vec<std::net::TcpListener>,
    shared: &Arc<ListenerShared>,
    ups: &[Arc<Upstream>],
    workers: Option<&Workers>,
    stop: CancellationToken,
) -> Running {
    let mut closed = Vec::with_capacity(socks.len());
    for (i, sock) in socks.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        closed.push(rx);
        let Some(up) = ups.get(i).or_else(|| ups.first()).cloned() else {
            continue;
        };
        let (shared, stop) = (shared.clone(), stop.clone());
        match workers {
            Some(w) if i < w.len() => w.spawn(i, move |alive| {
                accept_loop(sock, shared, up, stop, tx, Some(alive))
            }),
            _ => {
                tokio::spawn(accept_loop(sock, shared, up, stop, tx, None));
            }
        }
    }
    Running { stop, closed }
}

async fn accept_loop(
    sock: std::net::TcpListener,
    shared: Arc<ListenerShared>,
    up: Arc<Upstream>,
    stop: CancellationToken,
    closed: oneshot::Sender<()>,
    _alive: Option<AliveGuard>,
) {
    // Registered with the reactor of the runtime this runs on.
    let listener = match TcpListener::from_std(sock) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register listener socket");
            return;
        }
    };
    let local = listener.local_addr().ok();
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Responses are copied into hyper's write buffer and sent with one plain write instead
    // of a writev of head and body slices: ~3% less CPU per request in bench/lb.
    builder.http1().writev(false);
    // A client may shut its write side down once its request is sent (haproxy and nginx
    // answer it): an end of stream after a request is not a reason to drop the answer.
    builder.http1().half_close(true);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                serve(&builder, &graceful, stream, peer, &shared, &up);
            }
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(listener = ?local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    drop(listener);
    let _ = closed.send(());
    tracing::info!(listener = ?local, "listener closed; finishing in-flight requests");
    graceful.shutdown().await;
    tracing::debug!(listener = ?local, "listener's connections closed");
}

fn serve(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: &Arc<ListenerShared>,
    up: &Arc<Upstream>,
) {
    let ctx = Arc::new(ConnCtx::new(up.clone(), shared.clone(), peer));
    let svc = service_fn(move |req| handle(ctx.clone(), req));
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}
