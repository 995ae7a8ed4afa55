//! The request path: rule evaluation against the listener's current routing table, the
//! action (forward, fixed response, redirect), and the reverse proxy itself.
//!
//! Forwarding: target choice ([`GroupView::pick`]), an in-flight guard held until the response
//! body ends (or the WebSocket tunnel closes), hop-by-hop headers stripped both ways, `Host`
//! kept, `X-Forwarded-For` appended, `X-Forwarded-Proto`/`-Port` set, `X-Amzn-Trace-Id` added
//! when absent. Bodies stream both ways, never buffered. HTTP/1.1 targets are spoken to by
//! [`upstream`]'s codec from this task (pooled keep-alive connections; the forwarding headers
//! are written straight into the request head there), h2c targets through hyper-util's
//! client. Errors: no target → 503, connect error or malformed answer → 502, no response
//! headers within the upstream timeout (60 s, ALB's idle timeout) or a connect timeout → 504.
//! WebSockets: an HTTP/1.1 `Upgrade: websocket` request keeps its upgrade headers; on `101`
//! the client side is upgraded and joined to the target's socket with `copy_bidirectional`.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::ProtocolVersion;
use crate::rules::{all_match, fill_location, strip_port, Cond, RequestView};
use crate::targets::{GroupView, InFlight};
use crate::upstream::{self, UpstreamError};

/// One listener's compiled rules, swapped whole on apply.
#[derive(Debug, Default)]
pub struct Routes {
    pub rules: Vec<RouteRule>,
}

#[derive(Debug)]
pub struct RouteRule {
    pub id: String,
    pub conds: Vec<Cond>,
    pub action: RouteAction,
}

#[derive(Debug)]
pub enum RouteAction {
    Forward {
        /// Groups with weight > 0 and their weights.
        groups: Vec<(Arc<GroupView>, u64)>,
        total: u64,
        counter: AtomicU64,
    },
    Fixed {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    Redirect {
        location: String,
        status: StatusCode,
    },
}

impl RouteAction {
    /// The weighted group for the next request: a counter spread by a multiplicative hash
    /// over `[0, total)`, so every block of `total` requests gives each group exactly its
    /// weight, interleaved.
    fn choose(&self) -> Option<&Arc<GroupView>> {
        let RouteAction::Forward {
            groups,
            total,
            counter,
        } = self
        else {
            return None;
        };
        if groups.len() == 1 {
            return groups.first().map(|(g, _)| g);
        }
        if *total == 0 {
            return None;
        }
        let c = counter.fetch_add(1, Ordering::Relaxed);
        let mut slot = c.wrapping_mul(2_654_435_761) % total;
        for (g, w) in groups {
            if slot < *w {
                return Some(g);
            }
            slot -= w;
        }
        None
    }
}

/// What a listener's connections share.
#[derive(Debug)]
pub struct ListenerShared {
    pub routes: ArcSwap<Routes>,
    /// The listener's actual port (for `X-Forwarded-Port` and redirects).
    pub port: u16,
}

/// The h2c client to HTTP/2 targets (HTTP/1.1 ones use the per-target pools of
/// [`crate::upstream`]).
#[derive(Debug)]
pub struct Upstream {
    pub h2: Client<HttpConnector, Incoming>,
    /// How long to wait for a target's response headers.
    pub timeout: Duration,
}

impl Upstream {
    pub fn new(timeout: Duration) -> Upstream {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(10)));
        conn.enforce_http(true);
        let exec = hyper_util::rt::TokioExecutor::new();
        let h2 = Client::builder(exec)
            .timer(hyper_util::rt::TokioTimer::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .build(conn);
        Upstream { h2, timeout }
    }
}

/// The client end of one connection.
#[derive(Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client's IP as an `X-Forwarded-For` value (made once per connection).
    pub ip_header: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        let ip = addr.ip().to_canonical().to_string();
        Peer {
            addr,
            ip_header: HeaderValue::from_str(&ip)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        }
    }
}

/// What one client connection's requests share (one `Arc` clone per request).
#[derive(Debug)]
pub struct ConnCtx {
    pub up: Arc<Upstream>,
    pub listener: Arc<ListenerShared>,
    pub peer: Peer,
    /// `X-Forwarded-Port` (the listener's port), made once per connection.
    pub port_header: HeaderValue,
}

impl ConnCtx {
    pub fn new(up: Arc<Upstream>, listener: Arc<ListenerShared>, peer: SocketAddr) -> ConnCtx {
        let port_header = HeaderValue::from(listener.port);
        ConnCtx {
            up,
            listener,
            peer: Peer::new(peer),
            port_header,
        }
    }
}

/// Handles one request on a listener: routing is synchronous; only forwarding waits.
pub fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Handled {
    let listener = &ctx.listener;
    let client = ctx.peer.addr;
    // A guard, not a clone (no reference count touched); dropped before returning.
    let routes = listener.routes.load();
    let group = {
        let host_raw = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(Authority::as_str))
            .unwrap_or("");
        let host = strip_port(host_raw);
        let view = RequestView {
            method: req.method(),
            path: req.uri().path(),
            query: req.uri().query(),
            host,
            headers: req.headers(),
            client_ip: client.ip(),
        };
        let Some(rule) = routes.rules.iter().find(|r| all_match(&r.conds, &view)) else {
            return Handled::ready(lb_error(StatusCode::NOT_FOUND));
        };
        tracing::trace!(rule = %rule.id, path = view.path, "rule matched");
        match &rule.action {
            RouteAction::Fixed {
                status,
                content_type,
                body,
            } => {
                let mut resp = Response::new(ProxyBody::full(body.clone()));
                *resp.status_mut() = *status;
                if let Some(ct) = content_type {
                    resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                }
                return Handled::ready(resp);
            }
            RouteAction::Redirect { location, status } => {
                let loc = fill_location(
                    location,
                    host,
                    listener.port,
                    view.path,
                    view.query.unwrap_or(""),
                );
                let mut resp = Response::new(ProxyBody::empty());
                *resp.status_mut() = *status;
                match HeaderValue::from_str(&loc) {
                    Ok(v) => {
                        resp.headers_mut().insert(header::LOCATION, v);
                    }
                    Err(_) => return Handled::ready(lb_error(StatusCode::INTERNAL_SERVER_ERROR)),
                }
                return Handled::ready(resp);
            }
            RouteAction::Forward { .. } => match rule.action.choose() {
                Some(g) => g.clone(),
                None => return Handled::ready(lb_error(StatusCode::SERVICE_UNAVAILABLE)),
            },
        }
    };
    drop(routes);
    forward(&ctx, group, req)
}

pin_project_lite::pin_project! {
    /// The future of one request's response. Hand-written states instead of an `async fn`:
    /// hyper moves this future into its dispatcher for every request, and an `async fn`
    /// chain (handle, forward, send) kept each level's copy of the request: 2.4 KiB, against
    /// about 400 bytes here.
    #[project = HandledProj]
    pub enum Handled {
        Ready { resp: Option<Response<ProxyBody>> },
        H1 { #[pin] fwd: H1Forward },
        H2 { fut: Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> },
    }
}

impl Handled {
    fn ready(resp: Response<ProxyBody>) -> Handled {
        Handled::Ready { resp: Some(resp) }
    }
}

impl Future for Handled {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HandledProj::Ready { resp } => Poll::Ready(Ok(resp
                .take()
                .unwrap_or_else(|| lb_error(StatusCode::INTERNAL_SERVER_ERROR)))),
            HandledProj::H1 { fwd } => fwd.poll(cx).map(Ok),
            HandledProj::H2 { fut } => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request on its way to an HTTP/1.1 target, until its response head is in (or the
    /// upstream timeout, 504).
    pub struct H1Forward {
        exchange: upstream::Exchange,
        #[pin]
        timeout: tokio::time::Sleep,
        guard: Option<InFlight>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    }
}

impl Future for H1Forward {
    type Output = Response<ProxyBody>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<ProxyBody>> {
        let this = self.project();
        let resp = {
            // Borrowed, not cloned: this runs at every wakeup of the request.
            let Some(target) = this.guard.as_ref().map(|g| &g.0) else {
                return Poll::Ready(lb_error(StatusCode::INTERNAL_SERVER_ERROR));
            };
            match this.exchange.poll_response(cx, target) {
                Poll::Ready(Ok(resp)) => resp,
                Poll::Ready(Err(e)) => {
                    tracing::info!(target_addr = %target.target.addr, error = %e,
                        source = ?e.source(), "upstream error");
                    return Poll::Ready(lb_error(match e {
                        UpstreamError::ConnectTimeout => StatusCode::GATEWAY_TIMEOUT,
                        _ => StatusCode::BAD_GATEWAY,
                    }));
                }
                Poll::Pending => {
                    if this.timeout.poll(cx).is_ready() {
                        tracing::info!(target_addr = %target.target.addr, "upstream timeout");
                        return Poll::Ready(lb_error(StatusCode::GATEWAY_TIMEOUT));
                    }
                    return Poll::Pending;
                }
            }
        };
        let Some(guard) = this.guard.take() else {
            return Poll::Ready(lb_error(StatusCode::INTERNAL_SERVER_ERROR));
        };
        let closed = guard.0.closed.clone();
        if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
            (this.client_upgrade.take(), resp.status())
        {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            let Some((sock, early)) = body.into_upgraded() else {
                return Poll::Ready(lb_error(StatusCode::BAD_GATEWAY));
            };
            tokio::spawn(tunnel(client_upgrade, sock, early, guard, closed));
            return Poll::Ready(Response::from_parts(parts, ProxyBody::empty()));
        }
        // Hop-by-hop headers were left out by the codec.
        let (parts, mut body) = resp.into_parts();
        if let Some(c) = body.take_idle() {
            guard.0.pool.put(c);
        }
        Poll::Ready(Response::from_parts(
            parts,
            ProxyBody::Upstream {
                body: Source::H1(body),
                guard,
                closed,
                wait: None,
            },
        ))
    }
}

fn forward(ctx: &ConnCtx, group: Arc<GroupView>, mut req: Request<Incoming>) -> Handled {
    let Some(target) = group.pick() else {
        return Handled::ready(lb_error(StatusCode::SERVICE_UNAVAILABLE));
    };
    let ws = group.protocol == ProtocolVersion::Http1
        && req.version() == Version::HTTP_11
        && is_websocket(req.headers());
    let client_upgrade = ws.then(|| hyper::upgrade::on(&mut req));
    if !req.headers().contains_key(header::HOST) {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    strip_hop_by_hop(req.headers_mut(), ws);
    let timeout = ctx.up.timeout;
    if group.protocol == ProtocolVersion::Http1 {
        // The forwarding headers are written by the codec, straight into the request head;
        // the request line from the URI's path and query (origin form: many servers, busybox
        // httpd among them, refuse the absolute form meant for proxies).
        let fwd = upstream::Forwarded {
            client_ip: &ctx.peer.ip_header,
            port: &ctx.port_header,
        };
        return Handled::H1 {
            fwd: H1Forward {
                exchange: upstream::Exchange::new(req, fwd, ws),
                timeout: tokio::time::sleep(timeout),
                guard: Some(InFlight::new(target)),
                client_upgrade,
            },
        };
    }
    let guard = InFlight::new(target.clone());
    let (mut parts, body) = req.into_parts();
    add_forwarded(&mut parts.headers, &ctx.peer, &ctx.port_header);
    // HTTP/2 to the target: scheme and authority in the request.
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(target.authority.clone());
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = match Uri::from_parts(uri) {
        Ok(u) => u,
        Err(_) => return Handled::ready(lb_error(StatusCode::BAD_REQUEST)),
    };
    parts.version = Version::HTTP_2;
    let req = Request::from_parts(parts, body);
    let h2 = ctx.up.h2.clone();
    Handled::H2 {
        fut: Box::pin(async move {
            let mut resp = match tokio::time::timeout(timeout, h2.request(req)).await {
                Err(_) => {
                    tracing::info!(target_addr = %target.target.addr, "upstream timeout");
                    return lb_error(StatusCode::GATEWAY_TIMEOUT);
                }
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    tracing::info!(target_addr = %target.target.addr, error = %e,
                        source = ?e.source(), "upstream error");
                    return lb_error(if is_timeout(&e) {
                        StatusCode::GATEWAY_TIMEOUT
                    } else {
                        StatusCode::BAD_GATEWAY
                    });
                }
            };
            strip_hop_by_hop(resp.headers_mut(), false);
            let closed = target.closed.clone();
            resp.map(|body| ProxyBody::Upstream {
                body: Source::H2(body),
                guard,
                closed,
                wait: None,
            })
        }),
    }
}

async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    mut upstream: tokio::net::TcpStream,
    early: Bytes,
    guard: InFlight,
    closed: CancellationToken,
) {
    let c = match client.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut c = TokioIo::new(c);
    tokio::select! {
        r = async {
            // What the target sent right after its 101 goes first.
            if !early.is_empty() {
                tokio::io::AsyncWriteExt::write_all(&mut c, &early).await?;
            }
            tokio::io::copy_bidirectional(&mut c, &mut upstream).await
        } => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "tunnel closed with an error");
            }
        }
        _ = closed.cancelled() => {}
    }
    drop(guard);
}

fn is_timeout(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

fn is_websocket(h: &HeaderMap) -> bool {
    let upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    upgrade && connection_has(h, "upgrade")
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers: `Connection` and the headers it names, `Keep-Alive`, `TE`,
/// `Trailer`, `Transfer-Encoding`, `Upgrade` and `Proxy-*`. With `upgrade` (a WebSocket
/// handshake) `Connection: upgrade` and `Upgrade` stay.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of them, or only `Connection: keep-alive`: one pass over the
    // few names present instead of a hashed lookup per hop-by-hop name.
    if !upgrade && !h.keys().any(is_hop_by_hop) {
        return;
    }
    let mut remove: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    remove.extend(h.keys().filter(|k| is_hop_by_hop(k)).cloned());
    for n in remove {
        if !(upgrade && n == header::UPGRADE) {
            h.remove(n);
        }
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A header [`strip_hop_by_hop`] may remove (the names `Connection` lists aside: they only
/// matter when `Connection` is present, which this catches).
pub(crate) fn is_hop_by_hop(k: &HeaderName) -> bool {
    *k == header::CONNECTION
        || *k == header::TE
        || *k == header::TRAILER
        || *k == header::TRANSFER_ENCODING
        || *k == header::UPGRADE
        || k.as_str() == "keep-alive"
        || k.as_str().starts_with("proxy-")
}

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(crate) static X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

fn add_forwarded(h: &mut HeaderMap, peer: &Peer, port: &HeaderValue) {
    if h.contains_key(&X_FORWARDED_FOR) {
        let prior: Vec<&str> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let ip = peer.ip_header.to_str().unwrap_or("");
        let xff = format!("{}, {ip}", prior.join(", "));
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
    } else {
        h.insert(X_FORWARDED_FOR.clone(), peer.ip_header.clone());
    }
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    h.insert(X_FORWARDED_PORT.clone(), port.clone());
    if let header::Entry::Vacant(e) = h.entry(&X_AMZN_TRACE_ID) {
        if let Ok(v) = HeaderValue::from_bytes(&trace_id()) {
            e.insert(v);
        }
    }
}

/// `Root=1-<8 hex digits of epoch seconds>-<24 random hex digits>`, on the stack (no
/// formatting machinery, no allocation).
pub(crate) fn trace_id() -> [u8; 40] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as u32;
    let r: u128 = rand::random::<u128>();
    let mut out = *b"Root=1-00000000-000000000000000000000000";
    for (i, b) in out[7..15].iter_mut().enumerate() {
        *b = HEX[((secs >> (28 - 4 * i)) & 0xf) as usize];
    }
    for (i, b) in out[16..40].iter_mut().enumerate() {
        *b = HEX[((r >> (92 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// A response made by the load balancer itself (ALB's HTML error page shape).
pub fn lb_error(status: StatusCode) -> Response<ProxyBody> {
    let line = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let body = format!(
        "<html>\r\n<head><title>{line}</title></head>\r\n<body>\r\n<center><h1>{line}</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

/// Response bodies: the load balancer's own, or a target's streamed through with its
/// in-flight guard. A target's body is cut when the target's deregistration delay ends.
pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream {
        body: Source,
        guard: InFlight,
        closed: CancellationToken,
        /// Created the first time the body has to wait.
        wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    },
}

/// A target's response body.
pub enum Source {
    /// Read by [`upstream`]'s codec; its connection goes back to the pool at the end.
    H1(upstream::UpBody),
    H2(Incoming),
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyBody::Full(b) => f.debug_tuple("Full").field(b).finish(),
            ProxyBody::Upstream { .. } => f.write_str("Upstream"),
        }
    }
}

impl ProxyBody {
    pub fn full(b: Bytes) -> ProxyBody {
        if b.is_empty() {
            ProxyBody::Full(None)
        } else {
            ProxyBody::Full(Some(b))
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl Source {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Source::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Source::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Source::H1(b) => b.is_end_stream(),
            Source::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Source::H1(b) => b.size_hint(),
            Source::H2(b) => b.size_hint(),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream {
                body,
                guard,
                closed,
                wait,
            } => match body.poll_frame(cx) {
                Poll::Ready(r) => {
                    if let Source::H1(b) = body {
                        if let Some(c) = b.take_idle() {
                            guard.0.pool.put(c);
                        }
                    }
                    Poll::Ready(r)
                }
                Poll::Pending => {
                    let w = wait.get_or_insert_with(|| Box::pin(closed.clone().cancelled_owned()));
                    match w.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            Poll::Ready(Some(Err("target deregistration delay over".into())))
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, X-Secret".parse().expect("hv"));
        h.insert("x-secret", "1".parse().expect("hv"));
        h.insert("keep-alive", "timeout=5".parse().expect("hv"));
        h.insert(header::TE, "trailers".parse().expect("hv"));
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().expect("hv"));
        h.insert(header::UPGRADE, "h2c".parse().expect("hv"));
        h.insert("proxy-authorization", "x".parse().expect("hv"));
        h.insert("proxy-connection", "x".parse().expect("hv"));
        h.insert(header::HOST, "a".parse().expect("hv"));
        h.insert("x-keep", "1".parse().expect("hv"));
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["host", "x-keep"]);

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().expect("hv"));
        h.insert(header::UPGRADE, "websocket".parse().expect("hv"));
        assert!(is_websocket(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );

        // The usual response: `Connection: keep-alive` goes, the rest stays; a message
        // without hop-by-hop headers is left as it is.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive".parse().expect("hv"));
        h.insert(header::TRAILER, "x-sum".parse().expect("hv"));
        h.insert(header::CONTENT_LENGTH, "2".parse().expect("hv"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["content-length"]);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "a".parse().expect("hv"));
        h.append("x-many", "1".parse().expect("hv"));
        h.append("x-many", "2".parse().expect("hv"));
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }

    #[test]
    fn forwarded_headers_and_trace() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().expect("hv"));
        add_forwarded(
            &mut h,
            &Peer::new("[::ffff:10.0.0.9]:5555".parse().expect("addr")),
            &HeaderValue::from(8080u16),
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "8080");
        let t = h["x-amzn-trace-id"].to_str().expect("ascii").to_string();
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(parts[0], "Root=1");
        assert_eq!(parts[1].len(), 8);
        assert_eq!(parts[2].len(), 24);
        assert!(parts[2].bytes().all(|b| b.is_ascii_hexdigit()));
        // An existing trace id is kept.
        add_forwarded(
            &mut h,
            &Peer::new("127.0.0.1:1".parse().expect("addr")),
            &HeaderValue::from(80u16),
        );
        assert_eq!(h["x-amzn-trace-id"].to_str().expect("ascii"), t);
    }

    /// hyper moves a request's future into its dispatcher, and every byte of it is copied
    /// per request: it must stay small (an `async fn` chain here was 2.4 KiB and cost ~10%
    /// of bench/lb's throughput).
    #[test]
    fn request_future_stays_small() {
        let size = std::mem::size_of::<Handled>();
        assert!(size <= 512, "Handled is {size} bytes");
    }

    #[test]
    fn weighted_choice_is_exact_per_block() {
        use crate::config::Algorithm;
        use std::sync::atomic::AtomicUsize;
        let g = |id: &str| {
            Arc::new(GroupView {
                id: id.into(),
                protocol: ProtocolVersion::Http1,
                algorithm: Algorithm::RoundRobin,
                slow_start: Duration::ZERO,
                targets: vec![],
                counter: Arc::new(AtomicUsize::new(0)),
                base: tokio::time::Instant::now(),
            })
        };
        let a = RouteAction::Forward {
            groups: vec![(g("a"), 1), (g("b"), 3)],
            total: 4,
            counter: AtomicU64::new(0),
        };
        let mut n = 0;
        for _ in 0..400 {
            if a.choose().map(|g| g.id.as_str()) == Some("a") {
                n += 1;
            }
        }
        assert_eq!(n, 100);
    }
}
