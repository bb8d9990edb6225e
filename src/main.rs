//! The `modelhub` command.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// modelhub: the metadata store behind kukeon.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve {
        /// Address to listen on (port 0: any free port).
        #[arg(long, env = "MODELHUB_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Database file (created if missing).
        #[arg(long, env = "MODELHUB_DATA", default_value = "./modelhub.redb")]
        data: PathBuf,
    },
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve { listen, data } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("modelhub: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let config = modelhub::server::Config { listen, data };
            match runtime.block_on(modelhub::server::serve(
                config,
                modelhub::server::shutdown_signal(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "modelhub failed");
                    eprintln!("modelhub: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
