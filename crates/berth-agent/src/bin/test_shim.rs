//! Test-only stand-in for the `berth` binary's hidden subcommands that the engine runs:
//! `shim ARGS` (one per container), `netd --root DIR` (published ports, DNS) and
//! `container-exited --root ROOT ID` (a networked container's on-exit hook) and
//! `exec --root ROOT [--timeout SECONDS] ID CMD...` (the agent's health checks).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("shim") => {
            let a = berth_runtime::shim::ShimArgs::parse_from(std::env::args_os().skip(1));
            init_tracing();
            code(berth_runtime::shim::shim_main(a))
        }
        Some("netd") => {
            let root = match args.as_slice() {
                [_, _, flag, root] if flag == "--root" => PathBuf::from(root),
                _ => return ExitCode::from(2),
            };
            init_tracing();
            berth_net::daemon::detach_session();
            let mut cfg = berth_net::daemon::DaemonConfig::new(root);
            if let Some(s) = std::env::var("BERTH_NETD_IDLE_EXIT_SECS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                cfg.idle_exit = (s > 0).then(|| std::time::Duration::from_secs(s));
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
        Some("container-exited") => {
            // container-exited --root ROOT ID
            let (root, id) = match args.as_slice() {
                [_, _, flag, root, id] if flag == "--root" => (PathBuf::from(root), id.clone()),
                _ => return ExitCode::from(2),
            };
            init_tracing();
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&args[0]));
            let result = berth_engine::Engine::open(&root, exe)
                .map_err(|e| e.to_string())
                .and_then(|engine| engine.container_exited(&id).map_err(|e| e.to_string()));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("container-exited: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("exec") => {
            // exec --root ROOT [--timeout SECONDS] ID CMD...
            let (root, rest) = match args.get(2..4) {
                Some([flag, root]) if flag == "--root" => (PathBuf::from(root), &args[4..]),
                _ => return ExitCode::from(2),
            };
            let (timeout, rest) = match rest {
                [flag, secs, rest @ ..] if flag == "--timeout" => {
                    match secs.parse::<f64>().ok().filter(|s| *s > 0.0) {
                        Some(s) => (Some(std::time::Duration::from_secs_f64(s)), rest),
                        None => return ExitCode::from(2),
                    }
                }
                _ => (None, rest),
            };
            let [id, cmd @ ..] = rest else {
                return ExitCode::from(2);
            };
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&args[0]));
            let spec = berth_engine::ExecSpec {
                cmd: cmd.to_vec(),
                timeout,
                ..Default::default()
            };
            let engine = match berth_engine::Engine::open(&root, exe) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("exec: {e}");
                    return ExitCode::from(126);
                }
            };
            match engine.exec_to_end(id, &spec) {
                Ok(c) => code(c),
                Err(e) => {
                    eprintln!("exec: {e}");
                    let timed_out = matches!(
                        e,
                        berth_engine::ExecRunError::Run(berth_runtime::exec::ExecError::TimedOut(
                            _
                        ))
                    );
                    ExitCode::from(if timed_out { 124 } else { 126 })
                }
            }
        }
        _ => {
            eprintln!("usage: berth-agent-test-shim shim|netd|container-exited|exec ...");
            ExitCode::from(2)
        }
    }
}
