//! Test-only entry point: `berth-runtime-test-shim shim ARGS` runs the shim as `berth shim ARGS`
//! does, so berth-runtime's integration tests can spawn real shims.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // argv[1] is the `shim` subcommand word that `shim::spawn` puts first.
    let args = berth_runtime::shim::ShimArgs::parse_from(std::env::args_os().skip(1));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let code = berth_runtime::shim::shim_main(args);
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
