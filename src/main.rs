//! The `modelhub` command.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
        /// Keep at least this many revisions of watch history.
        #[arg(long, env = "MODELHUB_HISTORY_REVISIONS", default_value_t = 100_000)]
        history_revisions: u64,
        /// BOOKMARK idle watch streams this often (e.g. 10s, 500ms).
        #[arg(long, env = "MODELHUB_BOOKMARK_INTERVAL", default_value = "10s", value_parser = parse_duration)]
        bookmark_interval: Duration,
        /// How often the event log is checked for compaction.
        #[arg(long, env = "MODELHUB_COMPACTION_INTERVAL", default_value = "5s", value_parser = parse_duration)]
        compaction_interval: Duration,
        /// Watch events buffered in memory; slower watchers read the log.
        #[arg(long, env = "MODELHUB_WATCH_BUFFER", default_value_t = modelhub::watch::HUB_CAPACITY)]
        watch_buffer: usize,
    },
}

/// Parses `10s`, `500ms`, `2m` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 10s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m)")),
    }
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
        Command::Serve {
            listen,
            data,
            history_revisions,
            bookmark_interval,
            compaction_interval,
            watch_buffer,
        } => {
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
            let config = modelhub::server::Config {
                history_revisions,
                bookmark_interval,
                compaction_interval,
                watch_buffer,
                ..modelhub::server::Config::new(listen, data)
            };
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
