//! Test helper: `berth-net-test-netd netd --root DIR` runs the network daemon like `berth netd`.
//! `BERTH_NETD_IDLE_EXIT_SECS` overrides the idle exit (0: never).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let root = match args.as_slice() {
        [_, cmd, flag, root] if cmd == "netd" && flag == "--root" => PathBuf::from(root),
        _ => {
            eprintln!("usage: berth-net-test-netd netd --root DIR");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    berth_net::daemon::detach_session();
    let mut cfg = berth_net::daemon::DaemonConfig::new(root);
    if let Some(s) = std::env::var("BERTH_NETD_IDLE_EXIT_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        cfg.idle_exit = (s > 0).then(|| Duration::from_secs(s));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netd: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(berth_net::daemon::run_with(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netd: {e}");
            ExitCode::FAILURE
        }
    }
}
