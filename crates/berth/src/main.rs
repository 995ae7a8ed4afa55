//! `berth`: parse the command line, set up logging, hand over to the library code.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
