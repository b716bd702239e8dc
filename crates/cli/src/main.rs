//! The `rustio` binary: argument parsing and wiring only. Each area lives in its own
//! module (and the real work in the library crates).

use clap::Parser;

mod import;
mod lio;
mod runner;
mod serve;

/// rustio — iSCSI target, LIO management and TCMU runner in one tool.
#[derive(Debug, Parser)]
#[command(name = "rustio", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `rustio_iscsi=debug`.
    #[arg(long, global = true, env = "RUSTIO_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the userspace iSCSI target.
    Serve(serve::ServeArgs),
    /// Run the TCMU runner: serve LIO `user` backstores from userspace.
    Runner(runner::RunnerArgs),
    /// Convert another target's configuration (SCST) into rustio/targetcli JSON.
    #[command(subcommand)]
    Import(import::ImportCommand),
    #[command(flatten)]
    Lio(lio::LioCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, &cli.log),
        Command::Runner(args) => runner::run(args, &cli.log),
        Command::Import(cmd) => import::run(cmd, &cli.log),
        Command::Lio(cmd) => lio::run(cmd, &cli.log),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rustio: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
