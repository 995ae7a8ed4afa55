//! The HTTP/1.1 codec to targets, against scripted raw-TCP targets: every framing a target
//! may answer with, request bodies both ways of framing, early answers, keep-alive races,
//! and malformed answers (502, nothing passed on).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_lb::config::Target;
use berth_lb::{DataPlane, TargetState};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the scripted target read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Lower-cased header lines, `name: value`.
    headers: Vec<String>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.headers.iter().find_map(|h| h.strip_prefix(&prefix))
    }
}

/// What the script does with a request.
enum Reply {
    /// Write these pieces (flushed one by one), keep the connection.
    Send(Vec<Vec<u8>>),
    /// Write this, then close.
    SendClose(Vec<u8>),
}

type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A raw TCP target: reads requests (Content-Length and chunked bodies), answers as the script
/// says. `GET /health` always gets a 200. Counts the connections that carried other requests.
struct RawTarget {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawTarget {
    async fn start(script: Script) -> RawTarget {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve_raw(s, script.clone(), c.clone()));
            }
        });
        RawTarget { addr, conns, task }
    }

    fn target(&self) -> Target {
        Target {
            id: "raw".into(),
            port: self.addr.port(),
            addr: self.addr,
        }
    }
}

async fn serve_raw(mut s: TcpStream, script: Script, conns: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut counted = false;
    loop {
        let Some(seen) = read_request(&mut s, &mut buf).await else {
            return;
        };
        if seen.path == "/health" {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            continue;
        }
        if !counted {
            conns.fetch_add(1, Ordering::SeqCst);
            counted = true;
        }
        match script(&seen) {
            Reply::Send(pieces) => {
                for p in pieces {
                    if s.write_all(&p).await.is_err() {
                        return;
                    }
                    s.flush().await.ok();
                    tokio::task::yield_now().await;
                }
            }
            Reply::SendClose(b) => {
                let _ = s.write_all(&b).await;
                return;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 65536];
    match s.read(&mut tmp).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

/// Header lines as `name: value`, names lower-cased, values trimmed.
fn header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    lines
        .map(|l| match l.split_once(':') {
            Some((k, v)) => format!("{}: {}", k.to_ascii_lowercase(), v.trim()),
            None => l.to_string(),
        })
        .collect()
}

/// Reads one request (head and body) off `s`; `None` at end of stream.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if !fill(s, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers = header_lines(lines);
    let mut seen = Seen {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if seen.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                if !fill(s, buf).await {
                    return None;
                }
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&buf[..line_end])
                    .ok()?
                    .split(';')
                    .next()?,
                16,
            )
            .ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                // Trailer fields, then an empty line.
                let end = loop {
                    if buf.starts_with(b"\r\n") {
                        break 0;
                    }
                    if let Some(i) = find(buf, b"\r\n\r\n") {
                        break i + 2;
                    }
                    if !fill(s, buf).await {
                        return None;
                    }
                };
                let trailers = String::from_utf8_lossy(&buf[..end]).into_owned();
                seen.headers.extend(
                    trailers
                        .split("\r\n")
                        .filter(|l| !l.is_empty())
                        .map(|l| format!("trailer {}", l.to_ascii_lowercase())),
                );
                buf.drain(..end + 2);
                break;
            }
            while buf.len() < size + 2 {
                if !fill(s, buf).await {
                    return None;
                }
            }
            seen.body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    } else if let Some(n) = seen.header("content-length").and_then(|v| v.parse().ok()) {
        while buf.len() < n {
            if !fill(s, buf).await {
                return None;
            }
        }
        seen.body = buf.drain(..n).collect();
    }
    Some(seen)
}

/// A raw client exchange with the listener: sends `req` as is, reads until the listener
/// closes (requests carry `Connection: close`). Returns status, lower-cased header lines, the
/// body (de-chunked) and whether it is complete; status 0 when not even a head came.
async fn raw_request(addr: SocketAddr, req: &[u8]) -> (u16, Vec<String>, Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req).await.expect("write");
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("answer within 10 s");
    let Some(end) = find(&all, b"\r\n\r\n") else {
        return (0, Vec::new(), all, false);
    };
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = header_lines(lines);
    let mut rest = all[end + 4..].to_vec();
    let chunked = headers.iter().any(|h| h == "transfer-encoding: chunked");
    let mut complete = true;
    if chunked {
        let mut body = Vec::new();
        complete = false;
        while let Some(i) = find(&rest, b"\r\n") {
            let Ok(size) = usize::from_str_radix(
                std::str::from_utf8(&rest[..i])
                    .unwrap_or("x")
                    .split(';')
                    .next()
                    .unwrap_or("x"),
                16,
            ) else {
                break;
            };
            if size == 0 {
                complete = true;
                break;
            }
            if rest.len() < i + 2 + size + 2 {
                break;
            }
            body.extend_from_slice(&rest[i + 2..i + 2 + size]);
            rest.drain(..i + 2 + size + 2);
        }
        rest = body;
    } else if let Some(n) = headers
        .iter()
        .find_map(|h| h.strip_prefix("content-length: "))
        .and_then(|v| v.parse::<usize>().ok())
    {
        complete = rest.len() >= n;
    }
    (status, headers, rest, complete)
}

/// A data plane forwarding everything to `target`, once it is healthy; and its listener.
async fn plane_for(target: Target) -> (DataPlane, SocketAddr) {
    let dp = DataPlane::new();
    dp.apply(simple(group("tg", vec![target])))
        .await
        .expect("apply");
    wait_state(&dp, "tg", 1, TargetState::Healthy).await;
    let l = dp.listener_addr("l1").expect("listener");
    (dp, l)
}

fn pieces(p: &[&[u8]]) -> Reply {
    Reply::Send(p.iter().map(|b| b.to_vec()).collect())
}

#[tokio::test]
async fn every_response_framing_passes_through_and_keeps_the_connection() {
    let t = RawTarget::start(Arc::new(|r: &Seen| match r.path.as_str() {
        "/chunked" => pieces(&[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n5;ext=1\r\nhel",
            b"lo\r\n6\r\n world\r\n0\r\n",
            b"x-sum: 11\r\n\r\n",
        ]),
        "/head" if r.method == "HEAD" => pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"]),
        "/204" => pieces(&[b"HTTP/1.1 204 No Content\r\n\r\n"]),
        "/304" => pieces(&[b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"]),
        "/continue" => pieces(&[
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated",
        ]),
        "/split" => pieces(&[b"HTTP/1.1 200 OK\r\nCont", b"ent-Length: 6\r\n\r\nab", b"cdef"]),
        _ => pieces(&[b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]),
    }))
    .await;
    let (dp, l) = plane_for(t.target()).await;
    let c = client();
    for _ in 0..3 {
        let a = get(&c, l, "/chunked", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "hello world"));
        // Hop-by-hop headers of the target's answer stay on its side.
        assert!(a.headers.get("keep-alive").is_none(), "{:?}", a.headers);
        let a = request(&c, "HEAD", l, "/head", &[]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["content-length"], "5");
        assert_eq!(a.body, "");
        assert_eq!(get(&c, l, "/204", &[]).await.status, 204);
        let a = get(&c, l, "/304", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (304, ""));
        let a = get(&c, l, "/continue", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (201, "created"));
        let a = get(&c, l, "/split", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "abcdef"));
    }
    // 18 sequential exchanges, all on one kept-alive connection to the target.
    assert_eq!(t.conns.load(Ordering::SeqCst), 1);

    // Trailers reach a client that asked for them.
    let (status, headers, body, complete) = raw_request(
        l,
        b"GET /chunked HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (status, body.as_slice(), complete),
        (200, &b"hello world"[..], true)
    );
    assert!(
        headers.iter().any(|h| h == "transfer-encoding: chunked"),
        "{headers:?}"
    );
    dp.shutdown().await;
}

#[tokio::test]
async fn a_body_read_to_the_close_is_whole_and_the_connection_not_reused() {
    let t = RawTarget::start(Arc::new(|_: &Seen| {
        Reply::SendClose(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close".to_vec(),
        )
    }))
    .await;
    let (dp, l) = plane_for(t.target()).await;
    let c = client();
    for _ in 0..3 {
        let a = get(&c, l, "/", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "until the close"));
    }
    assert_eq!(t.conns.load(Ordering::SeqCst), 3);
    dp.shutdown().await;
}

#[tokio::test]
async fn malformed_answers_are_502_and_a_short_body_is_cut() {
    let t = RawTarget::start(Arc::new(|r: &Seen| match r.path.as_str() {
        "/badlen" => Reply::SendClose(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nxx".to_vec()),
        "/twolens" => Reply::SendClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nxxx".to_vec(),
        ),
        "/garbage" => Reply::SendClose(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
        "/badchunk" => Reply::SendClose(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n".to_vec(),
        ),
        "/unasked101" => Reply::SendClose(b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec()),
        "/hugehead" => {
            let mut b = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..2000 {
                b.extend_from_slice(format!("x-h{i}: {}\r\n", "v".repeat(40)).as_bytes());
            }
            Reply::SendClose(b)
        }
        "/short" => Reply::SendClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()),
        "/silent" => Reply::SendClose(Vec::new()),
        _ => pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
    }))
    .await;
    let (dp, l) = plane_for(t.target()).await;
    let c = client();
    for path in [
        "/badlen",
        "/twolens",
        "/garbage",
        "/unasked101",
        "/hugehead",
        "/silent",
    ] {
        let a = get(&c, l, path, &[]).await;
        assert_eq!(a.status, 502, "{path}: {}", a.body);
        assert!(a.body.contains("502 Bad Gateway"), "{path}: {}", a.body);
    }
    // The head was fine, the body is not: the client's answer breaks off (the connection is
    // closed, before or after the head), it never looks complete.
    for path in ["/short", "/badchunk"] {
        let (status, _, body, complete) = raw_request(
            l,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(status == 0 || status == 200, "{path}: {status}");
        assert!(
            !complete,
            "{path}: a cut body must not look complete: {body:?}"
        );
    }
    // The listener still serves.
    assert_eq!(get(&c, l, "/", &[]).await.body, "ok");
    dp.shutdown().await;
}

#[tokio::test]
async fn request_bodies_reach_the_target_whole() {
    let t = RawTarget::start(Arc::new(|r: &Seen| {
        let sum: u64 = r.body.iter().map(|b| u64::from(*b)).sum();
        let framing = if r.header("transfer-encoding") == Some("chunked") {
            "chunked".to_string()
        } else {
            format!("length {}", r.header("content-length").unwrap_or("-"))
        };
        let trailer = r.header("trailer x-sum").unwrap_or("-");
        let body = format!("{} {} {} {sum} {trailer}", r.method, framing, r.body.len());
        Reply::Send(vec![format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()])
    }))
    .await;
    let (dp, l) = plane_for(t.target()).await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = big.iter().map(|b| u64::from(*b)).sum();

    // Content-Length from the client: the same length to the target.
    let mut req = format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    let (status, _, body, _) = raw_request(l, &req).await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("POST length {} {} {sum} -", big.len(), big.len())
    );

    // Chunked from the client (with a trailer and an extension): chunked to the target.
    let mut req =
        b"PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for part in big.chunks(700_000) {
        req.extend_from_slice(format!("{:x};e=1\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\nx-sum: 1\r\n\r\n");
    let (status, _, body, _) = raw_request(l, &req).await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("PUT chunked {} {sum} 1", big.len())
    );

    // A POST without a body still says so.
    let (status, _, body, _) = raw_request(
        l,
        b"POST /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "POST length 0 0 0 -");
    dp.shutdown().await;
}

#[tokio::test]
async fn a_target_answering_before_it_reads_the_body_is_heard() {
    // Reads the head only, refuses, closes: the 8 MiB body behind it is never read.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    if let Some(i) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                        let reply: &[u8] = if head.starts_with("GET /health") {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!"
                        };
                        let _ = s.write_all(reply).await;
                        if head.starts_with("GET /health") {
                            buf.drain(..i + 4);
                            continue;
                        }
                        // Drain what comes (so the close is a FIN, not a reset), then close.
                        let mut sink = [0u8; 65536];
                        let _ = tokio::time::timeout(Duration::from_millis(200), async {
                            while let Ok(n) = s.read(&mut sink).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        })
                        .await;
                        return;
                    }
                    if !fill(&mut s, &mut buf).await {
                        return;
                    }
                }
            });
        }
    });
    let target = Target {
        id: "refuser".into(),
        port: addr.port(),
        addr,
    };
    let (dp, lst) = plane_for(target).await;
    let big = vec![7u8; 8 << 20];
    let mut s = TcpStream::connect(lst).await.expect("connect");
    s.write_all(
        format!(
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    )
    .await
    .expect("head");
    // Send the body while reading the answer: the answer comes first.
    let (mut rd, mut wr) = s.into_split();
    // Once the body is sent, the client shuts its write side down (half-close) and waits.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&big).await;
        drop(wr);
    });
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while find(&got, b"too big!").is_none() {
        let n = tokio::time::timeout_at(deadline, rd.read(&mut tmp))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&tmp[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    writer.abort();
    dp.shutdown().await;
    task.abort();
}

#[tokio::test]
async fn keep_alive_connections_the_target_closed_are_not_used() {
    // Each connection answers one request (keep-alive framing, no `Connection: close`), then
    // the target closes it: the next request must not fail on the pooled, dead connection.
    let t = RawTarget::start(Arc::new(|_: &Seen| {
        Reply::SendClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
    }))
    .await;
    let (dp, l) = plane_for(t.target()).await;
    let c = client();
    for i in 0..30 {
        let a = get(&c, l, "/", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "ok"), "request {i}");
        if i % 2 == 0 {
            // Sometimes the close is seen before the next request, sometimes not.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(t.conns.load(Ordering::SeqCst), 30);
    dp.shutdown().await;
}

#[tokio::test]
async fn a_client_that_half_closes_still_gets_its_answer() {
    // The client sends its request and shuts its write side down at once; the target takes
    // a second to answer: the end of stream must not cost the answer.
    let b = Backend::start("a").await;
    let (dp, l) = plane_for(b.target()).await;
    let mut s = TcpStream::connect(l).await.expect("connect");
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    s.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("answer within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\na"), "{text}");
    dp.shutdown().await;
}
