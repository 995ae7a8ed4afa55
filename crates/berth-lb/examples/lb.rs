//! Berth's load-balancer data plane, standalone: one listener forwarding everything to one
//! round-robin target group (HTTP/1.1 to the targets, health checks `GET /` every 5 s).
//! Used by `bench/lb`.
//!
//! ```text
//! cargo run --release -p berth-lb --example lb -- --listen 127.0.0.1:8080 \
//!     --target 127.0.0.1:9001 --target 127.0.0.1:9002 [--h2] [--lor] [--threads N]
//! ```
//! Runs until killed. `--threads N`: the data plane's worker threads (default half the cores);
//! health checks run on a `current_thread` runtime of their own. `--threads 0`: no worker
//! threads, everything on tokio's multi-threaded runtime (one worker per core; the design
//! before thread per core, kept for comparison).

use std::net::SocketAddr;
use std::time::Duration;

use berth_lb::config::{
    Action, Algorithm, HealthCheck, Listener, ProtocolVersion, Rule, Target, TargetGroup,
    WeightedTargetGroup,
};
use berth_lb::{Config, DataPlane, Options};

fn usage() -> ! {
    eprintln!(
        "usage: lb --listen ADDR --target ADDR [--target ADDR ...] [--h2] [--lor] [--threads N]"
    );
    std::process::exit(2)
}

fn main() {
    let mut opts = Options::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(n) => opts.threads = n,
            None => usage(),
        }
    }
    let rt = if opts.threads == 0 {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match rt {
        Ok(rt) => rt.block_on(run(args, opts)),
        Err(e) => {
            eprintln!("lb: cannot start a runtime: {e}");
            std::process::exit(1)
        }
    }
}

async fn run(args: Vec<String>, opts: Options) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut listen: Option<SocketAddr> = None;
    let mut targets = Vec::new();
    let mut protocol = ProtocolVersion::Http1;
    let mut algorithm = Algorithm::RoundRobin;
    let mut args = args.into_iter();
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
            "--threads" => {
                args.next();
            }
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
    let dp = DataPlane::with_options(opts);
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
