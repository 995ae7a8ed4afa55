//! `berth`: parse the command line, set up logging, hand over to the library code.

mod cli;

use clap::Parser;

/// Logging of a shim forked by the zygote, as `berth shim` sets it up.
fn shim_tracing() {
    cli::init_tracing("text");
}

/// The subcommand word of the raw command line (before the parser runs): the first argument
/// that is neither an option nor the value of `--log-format` (the only global option).
/// Raw (`args_os`): a non-UTF-8 argument must reach the parser's error, not panic here.
fn subcommand_word() -> Option<std::ffi::OsString> {
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        if a == "--log-format" {
            args.next();
        } else if !a.as_encoded_bytes().starts_with(b"-") {
            return Some(a);
        }
    }
    None
}

fn main() -> std::process::ExitCode {
    // Commands that start containers fork the shim zygote first thing, while the process is
    // single-threaded and small (before the parser builds the whole command tree): shims are
    // then forked from it instead of re-executing this binary (~2 ms a container). The word
    // is only a hint; an unused zygote exits with this process.
    if matches!(
        subcommand_word().as_deref().and_then(|w| w.to_str()),
        Some("run" | "build" | "serve" | "agent")
    ) {
        if let Err(e) = berth_runtime::shim::zygote::start(shim_tracing) {
            eprintln!("berth: no shim zygote ({e}); shims are re-executed");
        }
    }
    let run_word = subcommand_word().is_some_and(|w| w == "run");
    let args = match run_word.then(cli::parse_run).flatten() {
        Some(args) => args,
        None => cli::Cli::parse(),
    };
    cli::init_tracing(&args.log_format);
    // One single-threaded process per container: never start the multi-threaded runtime here.
    if let cli::Command::Shim(shim) = args.cmd {
        let code = berth_runtime::shim::shim_main(shim);
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // libcontainer forks to enter the container: exec also runs single-threaded.
    if let cli::Command::Exec(exec) = args.cmd {
        let code = cli::container::exec_sync(exec);
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if let cli::Command::Netd(netd) = args.cmd {
        let code = cli::network::netd_main(netd);
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // `berth run` awaits one container: its blocking work runs on the blocking pool either
    // way, and a current-thread runtime spares starting (and stopping) the worker threads.
    let mut builder = match args.cmd {
        cli::Command::Run(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
