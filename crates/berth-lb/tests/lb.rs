//! The data plane end to end on loopback: real listeners, real backends, real clients.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_lb::config::{Action, Algorithm, Condition, ProtocolVersion, WeightedTargetGroup};
use berth_lb::{Config, DataPlane, LbError, Options, TargetState};
use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn addr(dp: &DataPlane) -> std::net::SocketAddr {
    dp.listener_addr("l1").expect("listener l1")
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let dp = DataPlane::new();
    dp.apply(simple(group("tg", bs.iter().map(|b| b.target()).collect())))
        .await
        .expect("apply");
    wait_state(&dp, "tg", 3, TargetState::Healthy).await;
    let m = spread(&client(), addr(&dp), 300).await;
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(m.values().all(|n| *n == 100), "{m:?}");
    dp.shutdown().await;
}

#[tokio::test]
async fn first_health_check_runs_at_once_and_state_survives_apply() {
    let b = Backend::start("a").await;
    let mut tg = group("tg", vec![b.target()]);
    // ALB's defaults: 30 s interval, 5 to turn healthy; a new target still needs only its
    // first check, which runs immediately.
    tg.health_check.interval = Duration::from_secs(30);
    tg.health_check.healthy_threshold = 5;
    let dp = DataPlane::new();
    dp.apply(simple(tg.clone())).await.expect("apply");
    let h = dp.target_health("tg");
    assert_eq!(h.len(), 1);
    assert!(
        matches!(h[0].state, TargetState::Initial | TargetState::Healthy),
        "{h:?}"
    );
    wait_state(&dp, "tg", 1, TargetState::Healthy).await;
    // Re-applying (another rule) keeps the target's health.
    let mut cfg = simple(tg);
    cfg.listeners[0].rules.insert(
        0,
        rule(
            "fixed",
            vec![Condition::PathPattern(vec!["/fixed".into()])],
            Action::FixedResponse {
                status: 200,
                content_type: None,
                body: Some("f".into()),
            },
        ),
    );
    dp.apply(cfg).await.expect("apply");
    assert_eq!(dp.target_health("tg")[0].state, TargetState::Healthy);
    assert_eq!(get(&client(), addr(&dp), "/fixed", &[]).await.body, "f");
}

#[tokio::test]
async fn weights_split_traffic_and_weight_zero_gets_none() {
    let (a, b, z) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("z").await,
    );
    let dp = DataPlane::new();
    let w = |tg: &str, weight| WeightedTargetGroup {
        target_group: tg.into(),
        weight,
    };
    let cfg = Config {
        listeners: vec![listener(
            "l1",
            vec![rule(
                "default",
                vec![],
                Action::Forward(vec![w("ta", 1), w("tb", 3), w("tz", 0)]),
            )],
        )],
        target_groups: vec![
            group("ta", vec![a.target()]),
            group("tb", vec![b.target()]),
            group("tz", vec![z.target()]),
        ],
    };
    dp.apply(cfg).await.expect("apply");
    let m = spread(&client(), addr(&dp), 400).await;
    let (na, nb) = (
        m.get("a").copied().unwrap_or(0),
        m.get("b").copied().unwrap_or(0),
    );
    assert!((80..=120).contains(&na), "{m:?}");
    assert!((280..=320).contains(&nb), "{m:?}");
    assert_eq!(m.get("z"), None, "{m:?}");
}

#[tokio::test]
async fn rules_match_in_order() {
    let b = Backend::start("backend").await;
    let fixed = |s: &str| Action::FixedResponse {
        status: 200,
        content_type: Some("text/plain".into()),
        body: Some(s.into()),
    };
    let cfg = Config {
        listeners: vec![
            listener(
                "l1",
                vec![
                    rule(
                        "path",
                        vec![Condition::PathPattern(vec!["/api/*".into()])],
                        fixed("path"),
                    ),
                    rule(
                        "host",
                        vec![Condition::HostHeader(vec!["*.example.com".into()])],
                        fixed("host"),
                    ),
                    rule(
                        "header",
                        vec![Condition::HttpHeader {
                            name: "X-Canary".into(),
                            values: vec!["y?s".into()],
                        }],
                        fixed("header"),
                    ),
                    rule(
                        "method",
                        vec![Condition::HttpRequestMethod(vec!["DELETE".into()])],
                        fixed("method"),
                    ),
                    rule(
                        "query",
                        vec![Condition::QueryString(vec![(
                            Some("version".into()),
                            "v2*".into(),
                        )])],
                        fixed("query"),
                    ),
                    rule(
                        "nowhere",
                        vec![Condition::SourceIp(vec!["10.0.0.0/8".into()])],
                        fixed("10/8"),
                    ),
                    rule(
                        "both",
                        vec![
                            Condition::SourceIp(vec!["127.0.0.0/8".into()]),
                            Condition::PathPattern(vec!["/local".into()]),
                        ],
                        fixed("source-ip"),
                    ),
                    rule(
                        "redirect",
                        vec![Condition::PathPattern(vec!["/old*".into()])],
                        Action::Redirect {
                            location: "#{protocol}://#{host}:#{port}/new/#{path}?#{query}".into(),
                            status: 301,
                        },
                    ),
                    rule(
                        "teapot",
                        vec![Condition::PathPattern(vec!["/tea".into()])],
                        Action::FixedResponse {
                            status: 418,
                            content_type: None,
                            body: None,
                        },
                    ),
                    rule("default", vec![], forward("tg")),
                ],
            ),
            listener(
                "l2",
                vec![rule(
                    "only",
                    vec![Condition::PathPattern(vec!["/only".into()])],
                    fixed("only"),
                )],
            ),
        ],
        target_groups: vec![group("tg", vec![b.target()])],
    };
    let dp = DataPlane::new();
    dp.apply(cfg).await.expect("apply");
    let c = client();
    let l = addr(&dp);
    let body = |a: Answer| a.body;
    assert_eq!(body(get(&c, l, "/api/users", &[]).await), "path");
    assert_eq!(body(get(&c, l, "/API/users", &[]).await), "backend");
    assert_eq!(
        body(get(&c, l, "/", &[("host", "WWW.Example.com:8080")]).await),
        "host"
    );
    assert_eq!(
        body(get(&c, l, "/", &[("x-canary", "YES")]).await),
        "header"
    );
    assert_eq!(body(request(&c, "DELETE", l, "/", &[]).await), "method");
    assert_eq!(body(get(&c, l, "/?a=1&Version=V2.1", &[]).await), "query");
    assert_eq!(body(get(&c, l, "/?version=v1", &[]).await), "backend");
    assert_eq!(body(get(&c, l, "/local", &[]).await), "source-ip");
    let r = get(&c, l, "/old/x?q=1", &[("host", "a.test")]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers["location"],
        format!("http://a.test:{}/new/old/x?q=1", l.port())
    );
    let r = get(&c, l, "/tea", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (418, ""));
    let r = get(&c, l, "/api/x", &[]).await;
    assert_eq!(r.headers["content-type"], "text/plain");
    // No rule matches: 404 from the load balancer.
    let l2 = dp.listener_addr("l2").expect("l2");
    assert_eq!(get(&c, l2, "/only", &[]).await.body, "only");
    assert_eq!(get(&c, l2, "/other", &[]).await.status, 404);
}

#[tokio::test]
async fn unhealthy_target_gets_no_traffic_until_it_recovers_and_fail_open() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dp = DataPlane::new();
    dp.apply(simple(group("tg", vec![a.target(), b.target()])))
        .await
        .expect("apply");
    wait_state(&dp, "tg", 2, TargetState::Healthy).await;
    let c = client();
    b.set_health(500);
    eventually(10, "b unhealthy", || async {
        dp.target_health("tg")
            .iter()
            .any(|t| t.id == "b" && t.state == TargetState::Unhealthy)
    })
    .await;
    let h = dp.target_health("tg");
    let hb = h.iter().find(|t| t.id == "b").expect("b");
    assert_eq!(hb.reason.as_deref(), Some("Target.ResponseCodeMismatch"));
    assert_eq!(
        hb.description.as_deref(),
        Some("Health checks failed with these codes: [500]")
    );
    let m = spread(&c, addr(&dp), 20).await;
    assert_eq!(m.get("a"), Some(&20), "{m:?}");
    // All unhealthy: fail open to every target.
    a.set_health(503);
    wait_state(&dp, "tg", 2, TargetState::Unhealthy).await;
    let m = spread(&c, addr(&dp), 20).await;
    assert_eq!((m.get("a"), m.get("b")), (Some(&10), Some(&10)), "{m:?}");
    // Fixed: back in rotation.
    a.set_health(200);
    b.set_health(200);
    wait_state(&dp, "tg", 2, TargetState::Healthy).await;
    let m = spread(&c, addr(&dp), 20).await;
    assert_eq!((m.get("a"), m.get("b")), (Some(&10), Some(&10)), "{m:?}");
}

#[tokio::test]
async fn health_check_timeout_and_refused_reasons() {
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut tg = group(
        "tg",
        vec![berth_lb::config::Target {
            id: "dead".into(),
            port: dead.port(),
            addr: dead,
        }],
    );
    tg.health_check.timeout = Duration::from_millis(300);
    let dp = DataPlane::new();
    dp.apply(simple(tg)).await.expect("apply");
    wait_state(&dp, "tg", 1, TargetState::Unhealthy).await;
    assert_eq!(
        dp.target_health("tg")[0].reason.as_deref(),
        Some("Target.FailedHealthChecks")
    );
    // Requests to it: fail open, connection refused → 502.
    assert_eq!(get(&client(), addr(&dp), "/", &[]).await.status, 502);
}

#[tokio::test]
async fn health_checks_disabled_report_unavailable() {
    let b = Backend::start("a").await;
    b.set_health(500);
    let mut tg = group("tg", vec![b.target()]);
    tg.health_check.enabled = false;
    let dp = DataPlane::new();
    dp.apply(simple(tg)).await.expect("apply");
    let h = dp.target_health("tg");
    assert_eq!(h[0].state, TargetState::Unavailable);
    assert_eq!(h[0].reason.as_deref(), Some("Target.HealthCheckDisabled"));
    assert_eq!(get(&client(), addr(&dp), "/", &[]).await.body, "a");
}

#[tokio::test]
async fn deregistered_target_drains_then_disappears() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dp = DataPlane::new();
    let mut tg = group("tg", vec![b.target()]);
    tg.deregistration_delay = Duration::from_secs(2);
    dp.apply(simple(tg.clone())).await.expect("apply");
    wait_state(&dp, "tg", 1, TargetState::Healthy).await;
    let l = addr(&dp);
    let slow = tokio::spawn(async move { get(&client(), l, "/slow", &[]).await });
    eventually(5, "slow request in flight", || async {
        dp.target_health("tg").first().map(|t| t.in_flight) == Some(1)
    })
    .await;
    // b leaves, a joins.
    tg.targets = vec![a.target()];
    dp.apply(simple(tg.clone())).await.expect("apply");
    let h = dp.target_health("tg");
    let hb = h.iter().find(|t| t.id == "b").expect("b still listed");
    assert_eq!(hb.state, TargetState::Draining);
    assert_eq!(
        hb.reason.as_deref(),
        Some("Target.DeregistrationInProgress")
    );
    assert_eq!(hb.in_flight, 1);
    // New requests go to a only.
    let m = spread(&client(), l, 10).await;
    assert_eq!(m.get("a"), Some(&10), "{m:?}");
    // The in-flight request finishes on b.
    let r = slow.await.expect("join");
    assert_eq!((r.status, r.body.as_str()), (200, "b"));
    // Still draining for the whole delay, with nothing in flight.
    let hb = dp
        .target_health("tg")
        .into_iter()
        .find(|t| t.id == "b")
        .expect("b draining");
    assert_eq!((hb.state, hb.in_flight), (TargetState::Draining, 0));
    eventually(10, "b gone", || async {
        dp.target_health("tg").iter().all(|t| t.id != "b")
    })
    .await;
    // Re-registering brings it back.
    tg.targets = vec![a.target(), b.target()];
    dp.apply(simple(tg)).await.expect("apply");
    wait_state(&dp, "tg", 2, TargetState::Healthy).await;
}

#[tokio::test]
async fn reregistering_a_draining_target_brings_it_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dp = DataPlane::new();
    let mut tg = group("tg", vec![a.target(), b.target()]);
    tg.deregistration_delay = Duration::from_secs(300);
    dp.apply(simple(tg.clone())).await.expect("apply");
    wait_state(&dp, "tg", 2, TargetState::Healthy).await;
    let mut only_a = tg.clone();
    only_a.targets = vec![a.target()];
    dp.apply(simple(only_a)).await.expect("apply");
    assert_eq!(dp.target_health("tg")[1].state, TargetState::Draining);
    dp.apply(simple(tg)).await.expect("apply");
    let h = dp.target_health("tg");
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].state, TargetState::Healthy, "{h:?}");
    let m = spread(&client(), addr(&dp), 10).await;
    assert_eq!((m.get("a"), m.get("b")), (Some(&5), Some(&5)), "{m:?}");
}

#[tokio::test]
async fn no_targets_is_503_and_timeout_is_504() {
    let dp = DataPlane::with_upstream_timeout(Duration::from_millis(300));
    let b = Backend::start("a").await;
    let cfg = Config {
        listeners: vec![listener(
            "l1",
            vec![
                rule(
                    "empty",
                    vec![Condition::PathPattern(vec!["/empty".into()])],
                    forward("empty"),
                ),
                rule("default", vec![], forward("tg")),
            ],
        )],
        target_groups: vec![group("empty", vec![]), group("tg", vec![b.target()])],
    };
    dp.apply(cfg).await.expect("apply");
    let c = client();
    assert_eq!(get(&c, addr(&dp), "/empty", &[]).await.status, 503);
    assert_eq!(get(&c, addr(&dp), "/slow", &[]).await.status, 504);
    assert_eq!(get(&c, addr(&dp), "/", &[]).await.status, 200);
}

#[tokio::test]
async fn least_outstanding_requests_prefers_the_idle_target() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let mut tg = group("tg", vec![a.target(), b.target()]);
    tg.algorithm = Algorithm::LeastOutstandingRequests;
    let dp = DataPlane::new();
    dp.apply(simple(tg)).await.expect("apply");
    wait_state(&dp, "tg", 2, TargetState::Healthy).await;
    let l = addr(&dp);
    let slow = tokio::spawn(async move { get(&client(), l, "/slow", &[]).await });
    eventually(5, "one request in flight", || async {
        dp.target_health("tg").iter().any(|t| t.in_flight == 1)
    })
    .await;
    let busy = dp
        .target_health("tg")
        .into_iter()
        .find(|t| t.in_flight == 1)
        .expect("busy")
        .id;
    let m = spread(&client(), l, 10).await;
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(!m.contains_key(&busy), "{m:?} busy {busy}");
    assert_eq!(slow.await.expect("join").body, busy);
}

#[tokio::test]
async fn forwarding_headers_reach_the_target() {
    let b = Backend::start("a").await;
    let dp = DataPlane::new();
    dp.apply(simple(group("tg", vec![b.target()])))
        .await
        .expect("apply");
    let l = addr(&dp);
    let r = get(
        &client(),
        l,
        "/headers",
        &[
            ("host", "app.example.com"),
            ("x-forwarded-for", "203.0.113.7"),
            ("connection", "x-custom-hop"),
            ("x-custom-hop", "secret"),
        ],
    )
    .await;
    let body = r.body;
    // Origin form to HTTP/1.1 targets, as a browser would send it.
    assert!(body.contains("uri=/headers\n"), "{body}");
    assert!(body.contains("host=app.example.com\n"), "{body}");
    assert!(body.contains("xff=203.0.113.7, 127.0.0.1\n"), "{body}");
    assert!(body.contains("proto=http\n"), "{body}");
    assert!(body.contains(&format!("port={}\n", l.port())), "{body}");
    assert!(body.contains("trace=Root=1-"), "{body}");
    // A header named by Connection is hop-by-hop.
    assert!(body.contains("connection=-\n"), "{body}");
}

#[tokio::test]
async fn websocket_echo_through_the_listener() {
    let b = Backend::start("a").await;
    let dp = DataPlane::new();
    dp.apply(simple(group("tg", vec![b.target()])))
        .await
        .expect("apply");
    let l = addr(&dp);
    let tcp = tokio::net::TcpStream::connect(l).await.expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{l}/ws"), tcp)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        let msg = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .expect("send");
        let echo = ws.next().await.expect("a message").expect("ok");
        assert_eq!(echo.into_text().expect("text").as_str(), msg);
    }
    eventually(5, "tunnel counted in flight", || async {
        dp.target_health("tg")[0].in_flight == 1
    })
    .await;
    ws.close(None).await.expect("close");
    drop(ws);
    eventually(5, "tunnel closed", || async {
        dp.target_health("tg")[0].in_flight == 0
    })
    .await;
}

async fn h2_get(l: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let tcp = tokio::net::TcpStream::connect(l).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{l}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = send.send_request(req).await.expect("response");
    let status = r.status().as_u16();
    let version = r
        .headers()
        .get("x-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let body = r.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), version)
}

#[tokio::test]
async fn h2c_clients_and_http2_target_groups() {
    let b = Backend::start("a").await;
    let h2b = Backend::start("h2").await;
    let mut tg2 = group("tg2", vec![h2b.target()]);
    tg2.protocol_version = ProtocolVersion::Http2;
    let cfg = Config {
        listeners: vec![listener(
            "l1",
            vec![
                rule(
                    "h2",
                    vec![Condition::PathPattern(vec!["/h2".into()])],
                    forward("tg2"),
                ),
                rule("default", vec![], forward("tg")),
            ],
        )],
        target_groups: vec![group("tg", vec![b.target()]), tg2],
    };
    let dp = DataPlane::new();
    dp.apply(cfg).await.expect("apply");
    wait_state(&dp, "tg2", 1, TargetState::Healthy).await;
    let l = addr(&dp);
    // h2c prior knowledge to the listener, HTTP/1.1 to the target.
    assert_eq!(h2_get(l, "/").await, (200, "a".into(), "HTTP/1.1".into()));
    // HTTP/1.1 to the listener, h2c to an Http2 target group.
    let r = get(&client(), l, "/h2", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "h2"));
    assert_eq!(r.headers["x-version"], "HTTP/2.0");
    // h2c both ways.
    assert_eq!(
        h2_get(l, "/h2").await,
        (200, "h2".into(), "HTTP/2.0".into())
    );
}

#[tokio::test]
async fn bind_failure_keeps_the_old_configuration() {
    let b = Backend::start("a").await;
    let dp = DataPlane::new();
    let cfg = simple(group("tg", vec![b.target()]));
    dp.apply(cfg.clone()).await.expect("apply");
    let l = addr(&dp);
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let busy_addr = busy.local_addr().expect("addr");
    let mut bad = cfg.clone();
    bad.listeners[0].rules = vec![rule(
        "x",
        vec![],
        Action::FixedResponse {
            status: 200,
            content_type: None,
            body: Some("new".into()),
        },
    )];
    let mut l2 = listener("l2", vec![]);
    l2.bind = busy_addr;
    bad.listeners.push(l2);
    match dp.apply(bad).await {
        Err(LbError::Bind { addr, .. }) => assert_eq!(addr, busy_addr),
        other => panic!("expected a bind error, got {other:?}"),
    }
    assert_eq!(dp.listener_addr("l2"), None);
    assert_eq!(dp.listener_addr("l1"), Some(l));
    // Old rules still in effect.
    assert_eq!(get(&client(), l, "/", &[]).await.body, "a");
}

#[tokio::test]
async fn kept_listener_keeps_its_connections_and_removed_one_closes() {
    let b = Backend::start("a").await;
    let dp = DataPlane::new();
    let mut cfg = simple(group("tg", vec![b.target()]));
    cfg.listeners.push(listener("gone", vec![]));
    dp.apply(cfg.clone()).await.expect("apply");
    let l = addr(&dp);
    let gone = dp.listener_addr("gone").expect("gone");
    let tcp = tokio::net::TcpStream::connect(l).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = |body: &str| {
        let _ = body;
        http::Request::get("/")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let r = send.send_request(req("")).await.expect("response");
    assert_eq!(r.into_body().collect().await.expect("body").to_bytes(), "a");
    // New rules, same listener: the open connection sees them at its next request.
    cfg.listeners = vec![listener(
        "l1",
        vec![rule(
            "x",
            vec![],
            Action::FixedResponse {
                status: 200,
                content_type: None,
                body: Some("v2".into()),
            },
        )],
    )];
    dp.apply(cfg).await.expect("apply");
    assert_eq!(dp.listener_addr("l1"), Some(l));
    send.ready().await.expect("connection still open");
    let r = send.send_request(req("")).await.expect("response");
    assert_eq!(
        r.into_body().collect().await.expect("body").to_bytes(),
        "v2"
    );
    // The removed listener's port is closed.
    assert_eq!(dp.listener_addr("gone"), None);
    assert!(tokio::net::TcpStream::connect(gone).await.is_err());
    assert!(b.hits.load(Ordering::SeqCst) >= 1);
}

/// Raw HTTP/1.1 on a new connection (so each lands on whichever worker's socket the kernel
/// picks): the body.
async fn get_on_new_connection(a: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(a).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.rsplit("\r\n\r\n").next().unwrap_or("").to_string()
}

/// Applies one listener forwarding to `b` alone and waits until `b` is healthy.
async fn route_to(dp: &DataPlane, b: &Backend) {
    dp.apply(simple(group("tg", vec![b.target()])))
        .await
        .expect("apply");
    wait_state(dp, "tg", 1, TargetState::Healthy).await;
}

#[tokio::test]
async fn workers_share_one_port_and_shutdown_closes_every_socket() {
    let b = Backend::start("a").await;
    let dp = DataPlane::with_options(Options {
        threads: 4,
        ..Options::default()
    });
    route_to(&dp, &b).await;
    let l = addr(&dp);
    assert_ne!(l.port(), 0);
    for _ in 0..40 {
        assert_eq!(get_on_new_connection(l).await, "a");
    }
    // Keep-alive connections (pooled upstream connections on each worker) too.
    assert_eq!(spread(&client(), l, 40).await.get("a"), Some(&40));
    // The port is ours: a socket without SO_REUSEPORT cannot take it.
    assert!(tokio::net::TcpListener::bind(l).await.is_err());
    dp.shutdown().await;
    assert!(tokio::net::TcpStream::connect(l).await.is_err());
    // Every worker's socket is closed: the port is free again.
    tokio::net::TcpListener::bind(l)
        .await
        .expect("port free after shutdown");
    // And the data plane starts its workers again for the next configuration.
    route_to(&dp, &b).await;
    assert_eq!(get_on_new_connection(addr(&dp)).await, "a");
    dp.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn without_worker_threads_the_callers_runtime_serves() {
    let b = Backend::start("a").await;
    let dp = DataPlane::with_options(Options {
        threads: 0,
        ..Options::default()
    });
    route_to(&dp, &b).await;
    for _ in 0..5 {
        assert_eq!(get_on_new_connection(addr(&dp)).await, "a");
    }
    dp.shutdown().await;
}

#[tokio::test]
async fn a_port_held_by_another_data_plane_is_a_bind_error() {
    let b = Backend::start("a").await;
    let opts = Options {
        threads: 2,
        ..Options::default()
    };
    let first = DataPlane::with_options(opts.clone());
    first
        .apply(simple(group("tg", vec![b.target()])))
        .await
        .expect("apply");
    let taken = addr(&first);
    let second = DataPlane::with_options(opts);
    let mut cfg = simple(group("tg", vec![b.target()]));
    cfg.listeners[0].bind = taken;
    match second.apply(cfg).await {
        Err(LbError::Bind { addr, .. }) => assert_eq!(addr, taken),
        other => panic!("expected a bind error, got {other:?}"),
    }
    first.shutdown().await;
    second.shutdown().await;
}
