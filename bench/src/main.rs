//! `modelhub-bench`: drives a modelhub server over HTTP with realistic
//! documents (Cells with 3 containers, ~1.5 KB of JSON) and reports
//! throughput and latency percentiles. Not part of the test command.
//!
//! ```sh
//! cargo build --release -p modelhub-bench -p modelhub
//! target/release/modelhub-bench --spawn target/release/modelhub watch
//! ```

mod util;
mod workloads;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// Load generator for modelhub.
#[derive(Parser)]
struct Cli {
    /// A running modelhub (e.g. http://127.0.0.1:8080).
    #[arg(long, conflicts_with = "spawn")]
    server: Option<String>,
    /// Start this modelhub binary on a temporary database instead.
    #[arg(long)]
    spawn: Option<String>,
    /// Also run each workload against this etcd endpoint (feature `etcd`).
    #[arg(long)]
    etcd: Option<String>,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Clone)]
enum Workload {
    /// Watch fan-out: write-ack to receipt delay with many watchers.
    Watch {
        /// Concurrent watchers.
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Writes (cell creates).
        #[arg(long, default_value_t = 2000)]
        writes: usize,
        /// Concurrent writers.
        #[arg(long, default_value_t = 4)]
        writers: usize,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let (base, _server) = match (&cli.server, &cli.spawn) {
        (Some(url), _) => (url.clone(), None),
        (None, Some(bin)) => {
            let s = util::Spawned::start(bin).await;
            (s.base.clone(), Some(s))
        }
        (None, None) => {
            eprintln!("give --server URL or --spawn PATH");
            std::process::exit(2);
        }
    };
    if cli.etcd.is_some() && !cfg!(feature = "etcd") {
        eprintln!("--etcd needs the bench built with --features etcd");
        std::process::exit(2);
    }
    let started = std::time::Instant::now();
    match cli.workload {
        Workload::Watch {
            watchers,
            writes,
            writers,
        } => workloads::watch(&base, watchers, writes, writers).await,
    }
    eprintln!("done in {:.1?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(10)).await;
}
