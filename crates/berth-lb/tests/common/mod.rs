//! Test helpers: real backends (small hyper servers on 127.0.0.1:0 that answer with their own
//! name), a client, configuration builders and a polling helper.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_lb::config::{
    Action, Algorithm, Condition, HealthCheck, Listener, ProtocolVersion, Rule, Target,
    TargetGroup, WeightedTargetGroup,
};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A backend: `GET /health` answers `health_status`, `/slow` answers after 1 s, `/headers`
/// echoes the forwarding headers, a WebSocket upgrade echoes messages, anything else answers
/// the backend's name (header `x-backend`, and `x-version` the request's HTTP version).
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub health_status: Arc<AtomicU16>,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = l.local_addr().expect("addr");
        let health_status = Arc::new(AtomicU16::new(200));
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, hs, h) = (name.to_string(), health_status.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let (n, hs, h) = (n.clone(), hs.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(n.clone(), hs.clone(), h.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            health_status,
            hits,
            task,
        }
    }

    pub fn target(&self) -> Target {
        Target {
            id: self.name.clone(),
            port: self.addr.port(),
            addr: self.addr,
        }
    }

    pub fn set_health(&self, status: u16) {
        self.health_status.store(status, Ordering::SeqCst);
    }
}

async fn answer(
    name: String,
    health: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let s = health.load(Ordering::SeqCst);
        let mut r = Response::new(Full::new(Bytes::from("health")));
        *r.status_mut() = StatusCode::from_u16(s).unwrap_or(StatusCode::OK);
        return Ok(r);
    }
    hits.fetch_add(1, Ordering::SeqCst);
    if req.headers().get("upgrade").is_some() {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| k.as_bytes().to_vec())
            .unwrap_or_default();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(up),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() || m.is_binary() {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                } else if m.is_close() {
                    break;
                }
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let r = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .expect("response");
        return Ok(r);
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let body = if path == "/headers" {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        format!(
            "uri={}\nhost={}\nxff={}\nproto={}\nport={}\ntrace={}\nconnection={}\n",
            req.uri(),
            h("host"),
            h("x-forwarded-for"),
            h("x-forwarded-proto"),
            h("x-forwarded-port"),
            h("x-amzn-trace-id"),
            h("x-custom-hop"),
        )
    } else {
        name.clone()
    };
    let r = Response::builder()
        .header("x-backend", name.as_str())
        .header("x-version", format!("{:?}", req.version()))
        .body(Full::new(Bytes::from(body)))
        .expect("response");
    Ok(r)
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// `GET http://addr<path>` with extra headers.
pub async fn get(c: &TestClient, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    request(c, "GET", addr, path, headers).await
}

pub async fn request(
    c: &TestClient,
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = c
        .request(b.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Counts answers by body over `n` sequential GETs of `/`.
pub async fn spread(c: &TestClient, addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for _ in 0..n {
        let a = get(c, addr, "/", &[]).await;
        assert_eq!(a.status, 200, "{}", a.body);
        *m.entry(a.body).or_insert(0) += 1;
    }
    m
}

/// Polls `f` every 20 ms until it returns true; panics after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fast health checks on `/health`.
pub fn fast_check() -> HealthCheck {
    HealthCheck {
        enabled: true,
        path: "/health".into(),
        port: None,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        success_codes: vec![(200, 299)],
    }
}

pub fn group(id: &str, targets: Vec<Target>) -> TargetGroup {
    TargetGroup {
        id: id.into(),
        protocol_version: ProtocolVersion::Http1,
        algorithm: Algorithm::RoundRobin,
        health_check: fast_check(),
        deregistration_delay: Duration::from_secs(2),
        slow_start: Duration::ZERO,
        targets,
    }
}

pub fn forward(tg: &str) -> Action {
    Action::Forward(vec![WeightedTargetGroup {
        target_group: tg.into(),
        weight: 1,
    }])
}

pub fn rule(id: &str, conditions: Vec<Condition>, action: Action) -> Rule {
    Rule {
        id: id.into(),
        conditions,
        action,
    }
}

pub fn listener(id: &str, rules: Vec<Rule>) -> Listener {
    Listener {
        id: id.into(),
        bind: "127.0.0.1:0".parse().expect("addr"),
        rules,
    }
}

/// One listener `l1` forwarding everything to `tg`.
pub fn simple(tg: TargetGroup) -> berth_lb::Config {
    berth_lb::Config {
        listeners: vec![listener(
            "l1",
            vec![rule("default", vec![], forward(&tg.id))],
        )],
        target_groups: vec![tg],
    }
}

/// Waits until every target of `tg` is in `state`.
pub async fn wait_state(
    dp: &berth_lb::DataPlane,
    tg: &str,
    n: usize,
    state: berth_lb::TargetState,
) {
    eventually(10, &format!("{n} targets of {tg} {state:?}"), || async {
        let h = dp.target_health(tg);
        h.len() == n && h.iter().all(|t| t.state == state)
    })
    .await;
}
