//! Active health checks: one task per (target group, target), started on registration, stopped
//! when the target starts draining.
//!
//! Each round opens a new connection to the target's IP on the health-check port (the target's
//! own port for `traffic-port`), sends `GET <path>` (HTTP/1.1, or h2c for HTTP/2 target
//! groups, as ALB does with protocol version HTTP2), reads the status and closes the
//! connection. The first round runs at once (a new task gets traffic as soon as it answers);
//! then one round every `interval`, measured from the start of the previous one. A change of
//! settings wakes the task for an immediate round.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ProtocolVersion;
use crate::targets::{CheckParams, Probe, TargetRuntime};

/// Starts the checker of `t` (replacing a previous one) under `parent`.
pub fn start(t: &Arc<TargetRuntime>, parent: &CancellationToken) {
    let token = parent.child_token();
    {
        let mut slot = t.checker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.replace(token.clone()) {
            old.cancel();
        }
    }
    tokio::spawn(run(t.clone(), token));
}

/// Stops the checker of `t`, if any.
pub fn stop(t: &TargetRuntime) {
    let mut slot = t.checker.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = slot.take() {
        old.cancel();
    }
}

async fn run(t: Arc<TargetRuntime>, cancel: CancellationToken) {
    loop {
        let params = t.params.load_full();
        if !params.check.enabled {
            t.set_disabled();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = t.wake.notified() => continue,
            }
        }
        t.set_enabled();
        let started = Instant::now();
        let addr = SocketAddr::new(
            t.target.addr.ip(),
            params.check.port.unwrap_or(t.target.addr.port()),
        );
        let probe = tokio::select! {
            _ = cancel.cancelled() => return,
            p = probe(addr, &params) => p,
        };
        tracing::debug!(%addr, ?probe, "health check");
        t.record(&probe, &params);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(started + params.check.interval) => {}
            _ = t.wake.notified() => {}
        }
    }
}

/// One health check of `addr`.
pub async fn probe(addr: SocketAddr, p: &CheckParams) -> Probe {
    match tokio::time::timeout(p.check.timeout, status(addr, p)).await {
        Err(_) => Probe::Timeout,
        Ok(None) => Probe::Failed,
        Ok(Some(code)) => {
            if p.check
                .success_codes
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&code))
            {
                Probe::Ok
            } else {
                Probe::Mismatch(code)
            }
        }
    }
}

/// The status code `GET path` gets, or `None` on a connection or protocol error.
async fn status(addr: SocketAddr, p: &CheckParams) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let path = if p.check.path.starts_with('/') {
        p.check.path.clone()
    } else {
        format!("/{}", p.check.path)
    };
    match p.protocol {
        ProtocolVersion::Http1 => {
            let req = Request::get(path.as_str())
                .header(header::HOST, addr.to_string())
                .header(header::USER_AGENT, "ELB-HealthChecker/2.0")
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .ok()?;
            let (mut send, mut conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
            let resp = send.send_request(req);
            tokio::pin!(resp);
            // The connection may end (Connection: close) before the response is read.
            let r = tokio::select! {
                biased;
                r = &mut resp => r,
                _ = &mut conn => resp.await,
            };
            r.ok().map(|r| r.status().as_u16())
        }
        ProtocolVersion::Http2 => {
            let uri = format!("http://{addr}{path}");
            let req = Request::get(uri)
                .header(header::USER_AGENT, "ELB-HealthChecker/2.0")
                .body(Empty::<Bytes>::new())
                .ok()?;
            let (mut send, mut conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .ok()?;
            let resp = send.send_request(req);
            tokio::pin!(resp);
            // The connection may end (Connection: close) before the response is read.
            let r = tokio::select! {
                biased;
                r = &mut resp => r,
                _ = &mut conn => resp.await,
            };
            r.ok().map(|r| r.status().as_u16())
        }
    }
}
