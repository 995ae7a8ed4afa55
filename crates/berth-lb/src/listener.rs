//! Listener sockets: the accept loop and per-connection serving.
//!
//! Each accepted connection (TCP_NODELAY) is served by hyper-util's `auto` builder, which
//! speaks HTTP/1.1 and h2c prior knowledge on the same socket, with upgrades enabled (for
//! WebSockets). The connection's requests read the listener's routing table at request time,
//! so an apply changes routing for new requests on existing connections too.
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
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::proxy::{handle, ListenerShared, Peer, Upstream};

/// A running accept loop.
#[derive(Debug)]
pub struct Running {
    pub stop: CancellationToken,
    /// Fires once the socket is closed.
    pub closed: oneshot::Receiver<()>,
}

/// Spawns the accept loop of `listener`.
pub fn spawn(
    listener: TcpListener,
    shared: Arc<ListenerShared>,
    up: Arc<Upstream>,
    stop: CancellationToken,
) -> Running {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(accept_loop(listener, shared, up, stop.clone(), tx));
    Running { stop, closed: rx }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<ListenerShared>,
    up: Arc<Upstream>,
    stop: CancellationToken,
    closed: oneshot::Sender<()>,
) {
    let local = listener.local_addr().ok();
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
    let shared = shared.clone();
    let up = up.clone();
    let who = Arc::new(Peer::new(peer));
    let svc = service_fn(move |req| handle(up.clone(), shared.clone(), who.clone(), req));
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
