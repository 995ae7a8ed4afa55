//! Berth's load-balancer data plane, standalone: one listener forwarding everything to one
//! round-robin target group (HTTP/1.1 to the targets, health checks `GET /` every 5 s).
//! Used by `bench/lb`.
//!
//! ```text
//! cargo run --release -p berth-lb --example lb -- --listen 127.0.0.1:8080 \
//!     --target 127.0.0.1:9001 --target 127.0.0.1:9002 [--h2] [--lor]
//! ```
//! Runs until killed. Tokio's default multi-threaded runtime (one worker per core).

use std::net::SocketAddr;
use std::time::Duration;

use berth_lb::config::{
    Action, Algorithm, HealthCheck, Listener, ProtocolVersion, Rule, Target, TargetGroup,
    WeightedTargetGroup,
};
use berth_lb::{Config, DataPlane};

fn usage() -> ! {
    eprintln!("usage: lb --listen ADDR --target ADDR [--target ADDR ...] [--h2] [--lor]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut listen: Option<SocketAddr> = None;
    let mut targets = Vec::new();
    let mut protocol = ProtocolVersion::Http1;
    let mut algorithm = Algorithm::RoundRobin;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()),
            "--target" => match args.next().and_then(|v| v.parse::<SocketAddr>().ok()) {
                Some(t) => targets.push(Target {
                    id: t.ip().to_string(),
                    port: t.port(),
                    addr: t,
                }),
                None => usage(),
            },
            "--h2" => protocol = ProtocolVersion::Http2,
            "--lor" => algorithm = Algorithm::LeastOutstandingRequests,
            _ => usage(),
        }
    }
    let Some(listen) = listen else { usage() };
    if targets.is_empty() {
        usage()
    }
    let cfg = Config {
        listeners: vec![Listener {
            id: "listener".into(),
            bind: listen,
            rules: vec![Rule {
                id: "default".into(),
                conditions: vec![],
                action: Action::Forward(vec![WeightedTargetGroup {
                    target_group: "tg".into(),
                    weight: 1,
                }]),
            }],
        }],
        target_groups: vec![TargetGroup {
            id: "tg".into(),
            protocol_version: protocol,
            algorithm,
            health_check: HealthCheck {
                interval: Duration::from_secs(5),
                success_codes: vec![(200, 399)],
                ..HealthCheck::default()
            },
            deregistration_delay: Duration::from_secs(0),
            slow_start: Duration::ZERO,
            targets,
        }],
    };
    let dp = DataPlane::new();
    if let Err(e) = dp.apply(cfg).await {
        eprintln!("lb: {e}: {:?}", std::error::Error::source(&e));
        std::process::exit(1);
    }
    eprintln!(
        "lb: listening on {}",
        dp.listener_addr("listener").unwrap_or(listen)
    );
    let _ = tokio::signal::ctrl_c().await;
    dp.shutdown().await;
}
