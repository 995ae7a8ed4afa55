//! HTTP/1.1 to targets: Berth's own client codec over a keep-alive pool per target.
//!
//! Why not hyper's HTTP/1.1 client: it drives each connection from a task of its own and
//! hands requests and responses to it over channels, so every proxied request cost two task
//! switches and the client's dispatch on top of the listener side's work. Here the request
//! task (the listener connection's task, which polls the handler and then the response body)
//! owns the upstream socket for the duration of one exchange: it writes the request head
//! (one `write`), streams the request body, reads and parses the response head (`httparse`)
//! and then the response body, straight from the socket, without another task.
//!
//! Framing follows RFC 9112:
//! - Request bodies: none when the client's body is empty (`content-length: 0` kept or added
//!   for POST/PUT/PATCH); `content-length` when its size is known (the client's length,
//!   whatever `Content-Length` headers say); chunked otherwise (trailers forwarded). The
//!   request body is written while the response is read, so a target that answers early
//!   (a 413 before reading the body) or streams its answer while reading is served.
//! - Responses: 1xx interim responses skipped (101 only ends an upgrade request, which then
//!   hands the socket to the tunnel); no body for HEAD, 204 and 304; chunked when the last
//!   transfer coding is chunked (chunk extensions ignored, trailers forwarded), read to the
//!   close for other transfer codings or without any length; `content-length` otherwise, all
//!   values equal or the response is refused (502). Heads over 64 KiB or over 128 headers
//!   are refused too.
//!
//! A connection goes back to its pool when its exchange ended cleanly: the response body read
//! to its end, the request body written, no byte left over, and keep-alive allowed (HTTP/1.1
//! without `Connection: close`, or HTTP/1.0 with `keep-alive`; never after a close-delimited
//! body or a message with both `Transfer-Encoding` and `Content-Length`). A pooled connection
//! the target closed meanwhile is noticed at checkout without a system call when the reactor
//! has seen it readable (any byte or end of stream: dropped). When a reused connection ends
//! with no response byte at all (the close raced the request), a request without body and
//! with an idempotent method goes out again on the next connection; others get a 502.
//!
//! The pool: one LIFO stack per worker thread (see [`crate::workers`]), so a connection is
//! only used by the thread whose runtime registered it. Idle connections are kept until the
//! target closes them or the target leaves (deregistration delay over).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::targets::TargetRuntime;

/// Most idle connections kept per target and worker.
const MAX_IDLE: usize = 512;
/// ALB's connect timeout to targets.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response head (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a response head.
const MAX_HEADERS: usize = 128;
/// Read buffer size (grown to this before a read when less is free).
const READ_BUF: usize = 16 * 1024;
/// Longest chunk-size line extension, and largest trailer section.
const MAX_CHUNK_EXT: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// One keep-alive connection to a target, with the bytes read but not consumed yet.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    rbuf: BytesMut,
}

impl Conn {
    fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            rbuf: BytesMut::with_capacity(READ_BUF),
        }
    }

    /// Whether an idle connection can take a request: nothing arrived on it since its last
    /// response (a byte or end of stream means the target closed or broke it). No system call
    /// unless the reactor saw the socket readable (tokio clears readiness on a short read, so
    /// the usual idle connection is not).
    fn idle_ok(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut b = [0u8; 1];
                matches!(self.io.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more into the buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_BUF / 4 {
            self.rbuf.reserve(READ_BUF);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }
}

/// Idle connections to one target: one stack per worker thread. Each stack's mutex is only
/// taken by its own worker (and by `clear`): never contended.
#[derive(Debug)]
pub struct Pool {
    idle: Box<[Mutex<Vec<Conn>>]>,
}

impl Pool {
    /// A pool for `workers` worker threads.
    pub fn new(workers: usize) -> Pool {
        Pool {
            idle: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    fn lock(&self, i: usize) -> Option<std::sync::MutexGuard<'_, Vec<Conn>>> {
        self.idle
            .get(i)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn mine(&self) -> Option<std::sync::MutexGuard<'_, Vec<Conn>>> {
        self.lock(crate::workers::slot(self.idle.len()))
    }

    /// The most recently used idle connection that is still usable.
    fn take(&self) -> Option<Conn> {
        let mut idle = self.mine()?;
        while let Some(c) = idle.pop() {
            if c.idle_ok() {
                return Some(c);
            }
        }
        None
    }

    /// Hands a connection back (its exchange ended cleanly) to this thread's stack.
    pub fn put(&self, c: Conn) {
        if let Some(mut idle) = self.mine() {
            if idle.len() < MAX_IDLE {
                idle.push(c);
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

/// Why a request got no (complete) response from a target.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed")]
    Connect(#[source] io::Error),
    #[error("connection to the target failed")]
    Io(#[source] io::Error),
    #[error("the target closed the connection before answering")]
    Closed,
    #[error("invalid response from the target: {0}")]
    Protocol(&'static str),
    #[error("the client's request body failed")]
    RequestBody(#[source] hyper::Error),
}

/// How the request body goes to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqFraming {
    None,
    Length(u64),
    Chunked,
}

/// Writes one request: its head, then its body as the client sends it.
struct ReqWriter {
    head: Bytes,
    /// Bytes of `head` written so far.
    head_done: usize,
    body: Option<Incoming>,
    framing: ReqFraming,
    /// Body bytes written so far (checked against a content length).
    sent: u64,
    /// Body pieces still to be written, in order.
    out: VecDeque<Bytes>,
}

enum WriteError {
    Io(io::Error),
    Body(hyper::Error),
}

impl ReqWriter {
    fn new(head: Bytes, body: Incoming, framing: ReqFraming) -> ReqWriter {
        ReqWriter {
            head,
            head_done: 0,
            body: (framing != ReqFraming::None).then_some(body),
            framing,
            sent: 0,
            out: VecDeque::new(),
        }
    }

    /// A writer with nothing to write.
    fn empty() -> ReqWriter {
        ReqWriter {
            head: Bytes::new(),
            head_done: 0,
            body: None,
            framing: ReqFraming::None,
            sent: 0,
            out: VecDeque::new(),
        }
    }

    /// Starts over on another connection (only for requests without body).
    fn rewind(&mut self) {
        self.head_done = 0;
    }

    fn untouched(&self) -> bool {
        self.body.is_none() && self.sent == 0 && self.out.is_empty()
    }

    /// Everything written.
    fn finished(&self) -> bool {
        self.head_done == self.head.len() && self.out.is_empty() && self.body.is_none()
    }

    /// Writes until everything is written (`Ready(Ok)`), or the socket or the client's body
    /// has to wait.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut TcpStream,
    ) -> Poll<Result<(), WriteError>> {
        while self.head_done < self.head.len() {
            let rest = self.head.get(self.head_done..).unwrap_or_default();
            match Pin::new(&mut *io).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(w)) => self.head_done += w,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(WriteError::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        loop {
            while !self.out.is_empty() {
                let mut slices = [IoSlice::new(&[]); 4];
                let mut n = 0;
                for (s, b) in slices.iter_mut().zip(self.out.iter()) {
                    *s = IoSlice::new(b);
                    n += 1;
                }
                let written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(w)) => w,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(WriteError::Io(e))),
                    Poll::Pending => return Poll::Pending,
                };
                let mut left = written;
                while left > 0 {
                    let Some(front) = self.out.front_mut() else {
                        break;
                    };
                    if front.len() <= left {
                        left -= front.len();
                        self.out.pop_front();
                    } else {
                        front.advance(left);
                        left = 0;
                    }
                }
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    self.body = None;
                    return Poll::Ready(Err(WriteError::Body(e)));
                }
                Poll::Ready(None) => {
                    self.body = None;
                    match self.framing {
                        ReqFraming::Chunked => self.out.push_back(Bytes::from_static(b"0\r\n\r\n")),
                        ReqFraming::Length(n) if self.sent != n => {
                            return Poll::Ready(Err(WriteError::Io(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "request body shorter than its length",
                            ))))
                        }
                        _ => {}
                    }
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        self.sent += data.len() as u64;
                        match self.framing {
                            ReqFraming::Chunked => {
                                self.out
                                    .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                                self.out.push_back(data);
                                self.out.push_back(Bytes::from_static(b"\r\n"));
                            }
                            ReqFraming::Length(n) if self.sent > n => {
                                self.body = None;
                                return Poll::Ready(Err(WriteError::Io(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    "request body longer than its length",
                                ))));
                            }
                            _ => self.out.push_back(data),
                        }
                    }
                    Err(frame) => {
                        if let (Ok(trailers), ReqFraming::Chunked) =
                            (frame.into_trailers(), self.framing)
                        {
                            let mut t = b"0\r\n".to_vec();
                            for (k, v) in &trailers {
                                put_field(&mut t, k.as_str().as_bytes(), v.as_bytes());
                            }
                            t.extend_from_slice(b"\r\n");
                            self.out.push_back(Bytes::from(t));
                            self.body = None;
                        }
                    }
                },
            }
        }
    }
}

/// Appends one header field line, `name: value` CRLF.
fn put_field(b: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    b.extend_from_slice(name);
    b.extend_from_slice(b": ");
    b.extend_from_slice(value);
    b.extend_from_slice(b"\r\n");
}

/// The headers the load balancer adds to a forwarded request.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The client's IP (appended to `X-Forwarded-For`).
    pub client_ip: &'a HeaderValue,
    /// The listener's port (`X-Forwarded-Port`).
    pub port: &'a HeaderValue,
}

/// The request line and headers: the client's end-to-end headers (hop-by-hop ones already
/// stripped), the forwarding headers (`X-Forwarded-For` appended to, `-Proto` and `-Port`
/// set, `X-Amzn-Trace-Id` added when absent), framing headers set for `framing`. Written
/// straight into the head instead of through the header map: no hashing, no allocation per
/// header.
fn encode_head(parts: &http::request::Parts, framing: ReqFraming, fwd: Forwarded<'_>) -> Bytes {
    let mut b = Vec::with_capacity(256 + parts.headers.len() * 40);
    b.extend_from_slice(parts.method.as_str().as_bytes());
    b.push(b' ');
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    b.extend_from_slice(target.as_bytes());
    b.extend_from_slice(b" HTTP/1.1\r\n");
    let mut had_length = false;
    let mut has_trace = false;
    let mut xff: Option<Vec<u8>> = None;
    for (k, v) in &parts.headers {
        if *k == header::CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        if *k == header::TRANSFER_ENCODING {
            continue;
        }
        let name = k.as_str();
        if name.starts_with("x-") {
            if *k == crate::proxy::X_FORWARDED_FOR {
                let prior = xff.get_or_insert_with(Vec::new);
                if !prior.is_empty() {
                    prior.extend_from_slice(b", ");
                }
                prior.extend_from_slice(v.as_bytes());
                continue;
            }
            if *k == crate::proxy::X_FORWARDED_PROTO || *k == crate::proxy::X_FORWARDED_PORT {
                continue;
            }
            if *k == crate::proxy::X_AMZN_TRACE_ID {
                has_trace = true;
            }
        }
        put_field(&mut b, name.as_bytes(), v.as_bytes());
    }
    b.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prior) = xff.filter(|p| !p.is_empty()) {
        b.extend_from_slice(&prior);
        b.extend_from_slice(b", ");
    }
    b.extend_from_slice(fwd.client_ip.as_bytes());
    b.extend_from_slice(b"\r\nx-forwarded-proto: http\r\nx-forwarded-port: ");
    b.extend_from_slice(fwd.port.as_bytes());
    b.extend_from_slice(b"\r\n");
    if !has_trace {
        put_field(&mut b, b"x-amzn-trace-id", &crate::proxy::trace_id());
    }
    match framing {
        ReqFraming::Length(n) => put_field(&mut b, b"content-length", n.to_string().as_bytes()),
        ReqFraming::Chunked => b.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ReqFraming::None => {
            if had_length
                || parts.method == Method::POST
                || parts.method == Method::PUT
                || parts.method == Method::PATCH
            {
                b.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
    b.extend_from_slice(b"\r\n");
    Bytes::from(b)
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

type Connecting = Pin<Box<dyn std::future::Future<Output = Result<Conn, UpstreamError>> + Send>>;

/// One request to a target, up to its response head: a hand-written future (polled with the
/// target it goes to) rather than an `async fn`, so that it stays small (it is moved with the
/// request's future) and holds the request only once.
pub struct Exchange {
    w: ReqWriter,
    conn: Option<Conn>,
    /// `conn` came from the pool.
    reused: bool,
    connecting: Option<Connecting>,
    /// Response bytes seen on `conn`.
    seen: bool,
    write_failed: bool,
    retriable: bool,
    head_request: bool,
    upgrade: bool,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("w", &self.w)
            .field("conn", &self.conn)
            .field("reused", &self.reused)
            .field("connecting", &self.connecting.is_some())
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// Prepares `req` (hop-by-hop headers already stripped); `upgrade`: it asks for a
    /// protocol upgrade (a 101 answer is expected).
    pub fn new(req: Request<Incoming>, fwd: Forwarded<'_>, upgrade: bool) -> Exchange {
        let (parts, body) = req.into_parts();
        let framing = if body.is_end_stream() {
            ReqFraming::None
        } else if let Some(n) = body.size_hint().exact() {
            ReqFraming::Length(n)
        } else {
            ReqFraming::Chunked
        };
        Exchange {
            w: ReqWriter::new(encode_head(&parts, framing, fwd), body, framing),
            conn: None,
            reused: false,
            connecting: None,
            seen: false,
            write_failed: false,
            retriable: framing == ReqFraming::None && idempotent(&parts.method),
            head_request: parts.method == Method::HEAD,
            upgrade,
        }
    }

    /// Sends the request to `t` over a pooled or new connection and reads the response head.
    pub fn poll_response(
        &mut self,
        cx: &mut Context<'_>,
        t: &TargetRuntime,
    ) -> Poll<Result<Response<UpBody>, UpstreamError>> {
        loop {
            let conn = match self.conn.as_mut() {
                Some(c) => c,
                None => {
                    if let Some(c) = self.connecting.as_mut() {
                        let c = match c.as_mut().poll(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(r) => r,
                        };
                        self.connecting = None;
                        self.reused = false;
                        self.conn.insert(c?)
                    } else if let Some(c) = t.pool.take() {
                        self.reused = true;
                        self.conn.insert(c)
                    } else {
                        // Boxed: large, and rarely needed.
                        self.connecting = Some(Box::pin(connect(t.target.addr)));
                        continue;
                    }
                }
            };
            let r = match poll_exchange(
                cx,
                conn,
                &mut self.w,
                &mut self.seen,
                &mut self.write_failed,
            ) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            let Some(conn) = self.conn.take() else {
                continue;
            };
            self.seen = false;
            match r {
                Ok(head) => {
                    // The rest of the request body, if any, is written as the response is read.
                    let writer = (!self.w.finished() && !self.write_failed)
                        .then(|| Box::new(std::mem::replace(&mut self.w, ReqWriter::empty())));
                    return Poll::Ready(finish(
                        head,
                        conn,
                        writer,
                        self.write_failed,
                        self.head_request,
                        self.upgrade,
                    ));
                }
                Err(UpstreamError::Closed)
                    if self.reused && self.retriable && self.w.untouched() =>
                {
                    tracing::debug!(target_addr = %t.target.addr, "pooled connection was closed; retrying");
                    self.w.rewind();
                    self.write_failed = false;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A parsed response head: end-to-end headers only, and what the hop-by-hop ones said.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    /// `Connection: close` / `keep-alive`.
    close: bool,
    keep_alive: bool,
    /// `Transfer-Encoding` present: whether its last coding is chunked.
    chunked: Option<bool>,
    /// `Content-Length`: all its values, which must agree.
    length: Option<Result<u64, &'static str>>,
}

/// Writes the request and reads until a final response head (or an upgrade's 101) is in.
fn poll_exchange(
    cx: &mut Context<'_>,
    conn: &mut Conn,
    w: &mut ReqWriter,
    seen: &mut bool,
    write_failed: &mut bool,
) -> Poll<Result<Head, UpstreamError>> {
    if !*write_failed {
        match w.poll_write(cx, &mut conn.io) {
            Poll::Ready(Ok(())) | Poll::Pending => {}
            // Keep reading: the target may have answered before it stopped reading.
            Poll::Ready(Err(WriteError::Io(e))) => {
                tracing::debug!(error = %e, "writing the request to the target failed");
                *write_failed = true;
            }
            Poll::Ready(Err(WriteError::Body(e))) => {
                return Poll::Ready(Err(UpstreamError::RequestBody(e)))
            }
        }
    }
    loop {
        if !conn.rbuf.is_empty() {
            *seen = true;
            if let Some(head) = parse_head(&mut conn.rbuf)? {
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            if conn.rbuf.len() >= MAX_HEAD {
                return Poll::Ready(Err(UpstreamError::Protocol("response head too large")));
            }
        }
        match conn.poll_fill(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(if *seen {
                    UpstreamError::Protocol("connection closed inside the response head")
                } else {
                    UpstreamError::Closed
                }))
            }
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => {
                return Poll::Ready(Err(
                    if !*seen && e.kind() == io::ErrorKind::ConnectionReset {
                        UpstreamError::Closed
                    } else {
                        UpstreamError::Io(e)
                    },
                ))
            }
        }
    }
}

fn tokens(v: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    v.split(|&c| c == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Parses one response head off the front of `buf`: `None` until it is complete. Hop-by-hop
/// headers are read (connection management, framing) but not kept; `Upgrade` is kept on a 101
/// (for the client's side of the tunnel).
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, UpstreamError> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut hs);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamError::Protocol("too many headers"))
        }
        Err(_) => return Err(UpstreamError::Protocol("malformed response head")),
    };
    let status = r
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(UpstreamError::Protocol("bad status code"))?;
    let version = if r.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Header positions, so that values can share the head's buffer once it is frozen.
    let base = buf.as_ptr() as usize;
    let count = r.headers.len();
    let mut pos = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    for (p, h) in pos.iter_mut().zip(r.headers.iter()) {
        *p = (
            (h.name.as_ptr() as usize - base) as u32,
            h.name.len() as u32,
            (h.value.as_ptr() as usize - base) as u32,
            h.value.len() as u32,
        );
    }
    let raw = buf.split_to(n).freeze();
    let mut head = Head {
        status,
        version,
        headers: HeaderMap::with_capacity(count),
        close: false,
        keep_alive: false,
        chunked: None,
        length: None,
    };
    // Other headers named by `Connection` (rare): removed at the end.
    let mut named: Vec<HeaderName> = Vec::new();
    for &(no, nl, vo, vl) in &pos[..count] {
        let (no, nl, vo, vl) = (no as usize, nl as usize, vo as usize, vl as usize);
        let name = HeaderName::from_bytes(&raw[no..no + nl])
            .map_err(|_| UpstreamError::Protocol("bad header name"))?;
        let value = &raw[vo..vo + vl];
        if name == header::CONNECTION {
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    head.keep_alive = true;
                } else if !t.eq_ignore_ascii_case(b"upgrade") {
                    if let Ok(n) = HeaderName::from_bytes(t) {
                        named.push(n);
                    }
                }
            }
            continue;
        }
        if name == header::TRANSFER_ENCODING {
            if let Some(last) = tokens(value).next_back() {
                head.chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
            continue;
        }
        if name == header::CONTENT_LENGTH {
            for t in value.split(|&c| c == b',').map(<[u8]>::trim_ascii) {
                let n = std::str::from_utf8(t)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok());
                head.length = Some(match (n, head.length) {
                    (None, _) => Err("bad content-length"),
                    (_, Some(Err(e))) => Err(e),
                    (Some(n), Some(Ok(l))) if n != l => Err("conflicting content-length"),
                    (Some(n), _) => Ok(n),
                });
            }
        }
        if crate::proxy::is_hop_by_hop(&name)
            && !(name == header::UPGRADE && status == StatusCode::SWITCHING_PROTOCOLS)
        {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(raw.slice(vo..vo + vl))
            .map_err(|_| UpstreamError::Protocol("bad header value"))?;
        head.headers.append(name, value);
    }
    for n in named {
        head.headers.remove(n);
    }
    Ok(Some(head))
}

/// How the response body is delimited, and whether the connection can be kept.
fn response_framing(
    head: &mut Head,
    head_request: bool,
    upgrade: bool,
) -> Result<(Framing, bool), UpstreamError> {
    let mut keep = match head.version {
        Version::HTTP_11 => !head.close,
        _ => head.keep_alive && !head.close,
    };
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        if !upgrade {
            return Err(UpstreamError::Protocol("101 to a request without upgrade"));
        }
        return Ok((Framing::Upgrade, false));
    }
    if head_request
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, keep));
    }
    if let Some(chunked) = head.chunked {
        if head.headers.remove(header::CONTENT_LENGTH).is_some() {
            // Both: the length is ignored and the connection closed after (RFC 9112 6.3).
            keep = false;
        }
        return Ok(if chunked && head.version == Version::HTTP_11 {
            (Framing::Chunked(Chunked::default()), keep)
        } else {
            (Framing::Close, false)
        });
    }
    match head.length {
        Some(Err(e)) => Err(UpstreamError::Protocol(e)),
        Some(Ok(0)) => Ok((Framing::Empty, keep)),
        Some(Ok(n)) => Ok((Framing::Length(n), keep)),
        None => Ok((Framing::Close, false)),
    }
}

fn finish(
    mut head: Head,
    conn: Conn,
    writer: Option<Box<ReqWriter>>,
    write_failed: bool,
    head_request: bool,
    upgrade: bool,
) -> Result<Response<UpBody>, UpstreamError> {
    let (framing, keep) = response_framing(&mut head, head_request, upgrade)?;
    let body = UpBody {
        conn: Some(conn),
        framing,
        writer,
        keep: keep && !write_failed,
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    Ok(resp)
}

#[derive(Debug)]
enum Framing {
    /// No (more) body; the exchange is over.
    Empty,
    Length(u64),
    Chunked(Chunked),
    /// Until the target closes.
    Close,
    /// A 101: the socket belongs to the tunnel.
    Upgrade,
}

/// A target's response body, read from the socket as it is polled (and, meanwhile, the rest
/// of the request body written).
#[derive(Debug)]
pub struct UpBody {
    conn: Option<Conn>,
    framing: Framing,
    writer: Option<Box<ReqWriter>>,
    /// The connection may be reused once the exchange is over.
    keep: bool,
}

impl std::fmt::Debug for ReqWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqWriter")
            .field("framing", &self.framing)
            .field("sent", &self.sent)
            .finish()
    }
}

impl UpBody {
    /// The connection, when the exchange is over and it can carry another one.
    pub fn take_idle(&mut self) -> Option<Conn> {
        let reusable = self.keep
            && self.writer.is_none()
            && matches!(self.framing, Framing::Empty)
            && self.conn.as_ref().is_some_and(|c| c.rbuf.is_empty());
        if reusable {
            self.conn.take()
        } else {
            None
        }
    }

    /// The socket and the bytes the target sent after its 101, for the tunnel.
    pub fn into_upgraded(mut self) -> Option<(TcpStream, Bytes)> {
        match self.framing {
            Framing::Upgrade => self.conn.take().map(|c| (c.io, c.rbuf.freeze())),
            _ => None,
        }
    }

    fn fail(&mut self, e: UpstreamError) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.framing = Framing::Empty;
        self.keep = false;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(w) = this.writer.as_mut() {
            match w.poll_write(cx, &mut conn.io) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => this.writer = None,
                Poll::Ready(Err(_)) => {
                    this.writer = None;
                    this.keep = false;
                }
            }
        }
        loop {
            let conn = match this.conn.as_mut() {
                Some(c) => c,
                None => return Poll::Ready(None),
            };
            match &mut this.framing {
                Framing::Empty | Framing::Upgrade => return Poll::Ready(None),
                Framing::Length(rem) => {
                    if !conn.rbuf.is_empty() {
                        let n = (*rem).min(conn.rbuf.len() as u64);
                        let data = conn.rbuf.split_to(n as usize).freeze();
                        *rem -= n;
                        if *rem == 0 {
                            this.framing = Framing::Empty;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(dec) => match dec.decode(&mut conn.rbuf) {
                    Err(e) => return this.fail(e),
                    Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                    Ok(Decoded::Trailers(t)) => {
                        this.framing = Framing::Empty;
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::End) => {
                        this.framing = Framing::Empty;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::More) => {}
                },
                Framing::Close => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(this.framing, Framing::Close) {
                        this.framing = Framing::Empty;
                        this.keep = false;
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    return this.fail(UpstreamError::Protocol(
                        "connection closed before the end of the body",
                    ));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(UpstreamError::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Empty | Framing::Upgrade)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty | Framing::Upgrade => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// Chunked transfer coding decoder state.
#[derive(Debug, Default)]
enum Chunked {
    /// Before the chunk-size digits.
    #[default]
    Start,
    Size {
        n: u64,
        digits: u8,
    },
    /// In a chunk extension (ignored), its length so far.
    Ext {
        n: u64,
        len: usize,
    },
    /// After the size line's CR.
    SizeLf {
        n: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer fields and the final CRLF.
    Trailers,
}

#[derive(Debug)]
enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// More input needed.
    More,
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, UpstreamError> {
        let bad = |m| Err(UpstreamError::Protocol(m));
        loop {
            if let Chunked::Data(rem) = self {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = (*rem).min(buf.len() as u64);
                *rem -= n;
                if *rem == 0 {
                    *self = Chunked::DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
            }
            if let Chunked::Trailers = self {
                let mut hs = [httparse::EMPTY_HEADER; 32];
                return match httparse::parse_headers(buf, &mut hs) {
                    Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                        bad("trailers too large")
                    }
                    Ok(httparse::Status::Partial) => Ok(Decoded::More),
                    Err(_) => bad("malformed trailers"),
                    Ok(httparse::Status::Complete((used, fields))) => {
                        let mut map = HeaderMap::with_capacity(fields.len());
                        for f in fields {
                            if let (Ok(k), Ok(v)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) {
                                map.append(k, v);
                            }
                        }
                        buf.advance(used);
                        Ok(if map.is_empty() {
                            Decoded::End
                        } else {
                            Decoded::Trailers(map)
                        })
                    }
                };
            }
            let Some(&b) = buf.first() else {
                return Ok(Decoded::More);
            };
            buf.advance(1);
            *self = match (&*self, b) {
                (Chunked::Start, _) => match hex(b) {
                    Some(v) => Chunked::Size { n: v, digits: 1 },
                    None => return bad("bad chunk size"),
                },
                (Chunked::Size { n, digits }, _) => match hex(b) {
                    Some(_) if *digits >= 16 => return bad("chunk size too large"),
                    Some(v) => Chunked::Size {
                        n: n << 4 | v,
                        digits: digits + 1,
                    },
                    None if b == b'\r' => Chunked::SizeLf { n: *n },
                    None if b == b';' || b == b' ' || b == b'\t' => Chunked::Ext { n: *n, len: 0 },
                    None => return bad("bad chunk size"),
                },
                (Chunked::Ext { n, .. }, b'\r') => Chunked::SizeLf { n: *n },
                (Chunked::Ext { len, .. }, _) if *len >= MAX_CHUNK_EXT || b == b'\n' => {
                    return bad("bad chunk extension")
                }
                (Chunked::Ext { n, len }, _) => Chunked::Ext {
                    n: *n,
                    len: len + 1,
                },
                (Chunked::SizeLf { n: 0 }, b'\n') => Chunked::Trailers,
                (Chunked::SizeLf { n }, b'\n') => Chunked::Data(*n),
                (Chunked::DataCr, b'\r') => Chunked::DataLf,
                (Chunked::DataLf, b'\n') => Chunked::Start,
                _ => return bad("bad chunk framing"),
            };
        }
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

async fn connect(addr: std::net::SocketAddr) -> Result<Conn, UpstreamError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => return Err(UpstreamError::ConnectTimeout),
        Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(Conn::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[&[u8]]) -> Result<(Vec<u8>, Option<HeaderMap>), UpstreamError> {
        let mut d = Chunked::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pieces = input.iter();
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::Trailers(t) => return Ok((out, Some(t))),
                Decoded::End => return Ok((out, None)),
                Decoded::More => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => return Err(UpstreamError::Protocol("incomplete")),
                },
            }
        }
    }

    #[test]
    fn chunked_decodes_across_any_split() {
        let wire: &[u8] = b"5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nx-sum: 42\r\n\r\n";
        for split in 1..wire.len() {
            let (a, b) = wire.split_at(split);
            let (body, trailers) = decode_all(&[a, b]).expect("decode");
            assert_eq!(body, b"hello, world!!!");
            let t = trailers.expect("trailers");
            assert_eq!(t["x-sum"], "42");
        }
        let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&bytewise).expect("decode").0, b"hello, world!!!");
        let (body, trailers) = decode_all(&[b"3\r\nabc\r\n0\r\n\r\n"]).expect("decode");
        assert_eq!(body, b"abc");
        assert!(trailers.is_none());
    }

    #[test]
    fn chunked_refuses_bad_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"3;a\nb\r\n",
        ] {
            assert!(
                decode_all(&[bad]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_EXT + 1));
        assert!(decode_all(&[long_ext.as_bytes()]).is_err());
    }

    fn head(wire: &str) -> Result<Option<Head>, UpstreamError> {
        parse_head(&mut BytesMut::from(wire.as_bytes()))
    }

    fn framing(wire: &str, head_request: bool) -> Result<(String, bool), UpstreamError> {
        let mut h = head(wire)?.expect("complete");
        response_framing(&mut h, head_request, false).map(|(f, k)| (format!("{f:?}"), k))
    }

    #[test]
    fn response_heads_keep_end_to_end_headers_only() {
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le")
            .expect("partial")
            .is_none());
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: s\r\nKeep-Alive: timeout=5\r\nProxy-Thing: p\r\nTrailer: x-sum\r\nUpgrade: h2c\r\ncontent-length: 4\r\n\r\nbody"[..],
        );
        let h = parse_head(&mut buf).expect("ok").expect("complete");
        assert_eq!(h.status, 200);
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        let mut names: Vec<&str> = h.headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["content-length", "x-a"]);
        assert!(h.keep_alive && !h.close);
        assert_eq!(&buf[..], b"body");
        // A 101 keeps its Upgrade header (for the client's side of the tunnel).
        let h = head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(h.headers["upgrade"], "websocket");
        assert!(h.headers.get("connection").is_none());
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let f = |w: &str| framing(w, false).expect(w);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n"),
            ("Length(7)".into(), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\nconnection: close\r\n\r\n"),
            ("Length(7)".into(), false)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n").0,
            "Chunked(Start)"
        );
        // Both: chunked wins, the length goes, the connection is not kept.
        let mut h =
            head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n")
                .expect("ok")
                .expect("complete");
        let (fr, keep) = response_framing(&mut h, false, false).expect("framing");
        assert_eq!((format!("{fr:?}"), keep), ("Chunked(Start)".into(), false));
        assert!(h.headers.get("content-length").is_none());
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
            ("Close".into(), false)
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n"), ("Close".into(), false));
        assert_eq!(
            f("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"),
            ("Empty".into(), true)
        );
        assert_eq!(
            f("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"),
            ("Empty".into(), true)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"),
            ("Length(1)".into(), false)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n"),
            ("Length(1)".into(), true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true).expect("head"),
            ("Empty".into(), true)
        );
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5,\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(framing(bad, false).is_err(), "{bad}");
        }
        for bad in [
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "garbage\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("x-{i}: v\r\n"))
            .collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).is_err());
    }

    #[test]
    fn request_heads_carry_forwarding_and_framing() {
        let req = |m: &str, uri: &str, hs: &[(&str, &str)]| {
            let mut b = Request::builder().method(m).uri(uri);
            for (k, v) in hs {
                b = b.header(*k, *v);
            }
            b.body(()).expect("request").into_parts().0
        };
        let ip = HeaderValue::from_static("10.0.0.9");
        let port = HeaderValue::from_static("8080");
        let fwd = Forwarded {
            client_ip: &ip,
            port: &port,
        };
        let s = |b: Bytes| String::from_utf8(b.to_vec()).expect("utf8");
        let h = s(encode_head(
            &req(
                "GET",
                "/a?b=1",
                &[
                    ("host", "x"),
                    ("content-length", "0"),
                    ("x-forwarded-for", "1.2.3.4"),
                    ("x-forwarded-for", "5.6.7.8"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-port", "1"),
                    ("x-amzn-trace-id", "Root=mine"),
                ],
            ),
            ReqFraming::None,
            fwd,
        ));
        assert_eq!(
            h,
            "GET /a?b=1 HTTP/1.1\r\nhost: x\r\nx-amzn-trace-id: Root=mine\r\n\
             x-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.9\r\nx-forwarded-proto: http\r\n\
             x-forwarded-port: 8080\r\ncontent-length: 0\r\n\r\n"
        );
        let h = s(encode_head(
            &req("POST", "http://h/p", &[]),
            ReqFraming::None,
            fwd,
        ));
        assert!(
            h.starts_with("POST /p HTTP/1.1\r\nx-forwarded-for: 10.0.0.9\r\n"),
            "{h}"
        );
        assert!(h.contains("\r\nx-amzn-trace-id: Root=1-"), "{h}");
        assert!(h.ends_with("\r\ncontent-length: 0\r\n\r\n"), "{h}");
        // The body's real length wins over whatever the headers said.
        let h = s(encode_head(
            &req(
                "PUT",
                "/",
                &[("content-length", "99"), ("transfer-encoding", "chunked")],
            ),
            ReqFraming::Length(3),
            fwd,
        ));
        assert!(h.ends_with("\r\ncontent-length: 3\r\n\r\n"), "{h}");
        assert_eq!(h.matches("content-length").count(), 1, "{h}");
        assert!(!h.contains("chunked"), "{h}");
        let h = s(encode_head(
            &req("POST", "/", &[("content-length", "5")]),
            ReqFraming::Chunked,
            fwd,
        ));
        assert!(h.ends_with("\r\ntransfer-encoding: chunked\r\n\r\n"), "{h}");
        assert!(!h.contains("content-length"), "{h}");
    }
}
