//! HTTP/1.1 connections to targets: a small keep-alive pool per target.
//!
//! Why not hyper-util's legacy client for HTTP/1.1: its generic pool (a map keyed by
//! scheme+authority, checkout futures, boxed connectors) cost about a third of our throughput
//! in `bench/lb`. A target already is the pool key, so each [`TargetRuntime`] holds its idle
//! connections (`SendRequest` handles; each connection is driven by its own task) in a
//! LIFO stack. A connection is handed back when the response body has been read to the end
//! (so a streaming response never blocks another request), dropped otherwise. A pooled
//! connection the target closed meanwhile is noticed at checkout (`ready` fails) or at send
//! (hyper hands the request back when it was not written): the request then goes out on the
//! next connection, so keep-alive races never reach the client. Idle connections are kept
//! until the target closes them or the target leaves (deregistration delay over).

use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::targets::TargetRuntime;

/// Most idle connections kept per target.
const MAX_IDLE: usize = 512;
/// ALB's connect timeout to targets.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections to one target: one stack per worker thread (see [`crate::workers`]),
/// so a connection is only used by the thread whose runtime drives it. Each stack's mutex is
/// only taken by its own worker (and by `clear`): never contended.
#[derive(Debug)]
pub struct Pool {
    idle: Box<[Mutex<Vec<SendRequest<Incoming>>>]>,
}

impl Pool {
    /// A pool for `workers` worker threads.
    pub fn new(workers: usize) -> Pool {
        Pool {
            idle: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    fn lock(&self, i: usize) -> Option<std::sync::MutexGuard<'_, Vec<SendRequest<Incoming>>>> {
        self.idle
            .get(i)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn mine(&self) -> Option<std::sync::MutexGuard<'_, Vec<SendRequest<Incoming>>>> {
        self.lock(crate::workers::slot(self.idle.len()))
    }

    fn take(&self) -> Option<SendRequest<Incoming>> {
        self.mine().and_then(|mut v| v.pop())
    }

    /// Hands a connection back (its response is complete) to this thread's stack.
    pub fn put(&self, s: SendRequest<Incoming>) {
        if s.is_closed() {
            return;
        }
        if let Some(mut idle) = self.mine() {
            if idle.len() < MAX_IDLE {
                idle.push(s);
            }
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        for i in 0..self.idle.len() {
            if let Some(mut v) = self.lock(i) {
                v.clear();
            }
        }
    }
}

/// Why a request got no response from a target.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    #[error("http/1.1 handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error("request failed")]
    Request(#[source] hyper::Error),
}

/// Sends `req` to `t` over a pooled or new HTTP/1.1 connection; returns the response and the
/// connection to hand back once the body is read.
pub async fn send(
    t: &TargetRuntime,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, SendRequest<Incoming>), UpstreamError> {
    // Pooled connections first; any that turns out dead is dropped.
    while let Some(mut s) = t.pool.take() {
        if s.is_closed() || s.ready().await.is_err() {
            continue;
        }
        match s.try_send_request(req).await {
            Ok(resp) => return Ok((resp, s)),
            Err(mut e) => match e.take_message() {
                // Not written (the connection was closing): try the next one.
                Some(r) => req = r,
                None => return Err(UpstreamError::Request(e.into_error())),
            },
        }
    }
    let mut s = connect(t).await?;
    match s.send_request(req).await {
        Ok(resp) => Ok((resp, s)),
        Err(e) => Err(UpstreamError::Request(e)),
    }
}

async fn connect(t: &TargetRuntime) -> Result<SendRequest<Incoming>, UpstreamError> {
    let stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(t.target.addr)).await {
            Err(_) => return Err(UpstreamError::ConnectTimeout),
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Ok(Ok(s)) => s,
        };
    let _ = stream.set_nodelay(true);
    // Flattened writes, as on the listener side (`listener::accept_loop`): one copy of the
    // request into hyper's buffer is cheaper than a writev of its slices on loopback.
    let (s, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Handshake)?;
    let addr = t.target.addr;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(target_addr = %addr, error = %e, "target connection ended with an error");
        }
    });
    Ok(s)
}
