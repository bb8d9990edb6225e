//! The `modelhub` command.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

// The request path allocates many small strings; glibc's allocator spent
// about a quarter of the server's CPU in malloc/free under load (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// modelhub: the metadata store behind kukeon.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Limits against hostile, broken or greedy clients (`serve`).
#[derive(clap::Args)]
struct LimitArgs {
    /// Largest request body (e.g. 16MiB): larger ones get 413.
    #[arg(long, env = "MODELHUB_MAX_BODY_BYTES", default_value = "16MiB", value_parser = parse_size)]
    max_body_bytes: u64,
    /// Longest path and query of a request, in bytes: longer ones get 414.
    #[arg(long, env = "MODELHUB_MAX_URI_BYTES", default_value_t = 8192)]
    max_uri_bytes: usize,
    /// Deepest nesting of arrays and objects in a JSON body: deeper gets 400.
    #[arg(long, env = "MODELHUB_MAX_JSON_DEPTH", default_value_t = 64)]
    max_json_depth: usize,
    /// Most documents in one apply: more gets 413.
    #[arg(long, env = "MODELHUB_MAX_APPLY_DOCUMENTS", default_value_t = 1000)]
    max_apply_documents: usize,
    /// Requests in flight at once (watch streams and probes aside); a
    /// quarter is kept for admin and controller identities. Over it: 429.
    #[arg(long, env = "MODELHUB_MAX_REQUESTS_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_requests_in_flight: u32,
    /// Requests in flight at once from one identity: over it, 429.
    #[arg(
        long,
        env = "MODELHUB_MAX_REQUESTS_IN_FLIGHT_PER_IDENTITY",
        default_value_t = 256
    )]
    max_requests_in_flight_per_identity: usize,
    /// Watch streams open at once: over it, 429.
    #[arg(long, env = "MODELHUB_MAX_WATCHES", default_value_t = 10_000)]
    max_watches: usize,
    /// Watch streams open at once for one identity: over it, 429.
    #[arg(
        long,
        env = "MODELHUB_MAX_WATCHES_PER_IDENTITY",
        default_value_t = 1000
    )]
    max_watches_per_identity: usize,
    /// Writes that may wait for the database's single writer: once that
    /// many are queued, more get 429.
    #[arg(long, env = "MODELHUB_WRITE_QUEUE", default_value_t = modelhub::store::options::DEFAULT_WRITE_QUEUE as u32, value_parser = clap::value_parser!(u32).range(1..))]
    write_queue: u32,
}

impl LimitArgs {
    fn limits(&self) -> modelhub::http::limits::Limits {
        modelhub::http::limits::Limits {
            max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
            max_uri_bytes: self.max_uri_bytes,
            max_json_depth: self.max_json_depth,
            max_apply_documents: self.max_apply_documents,
            max_in_flight: self.max_requests_in_flight as usize,
            max_in_flight_per_identity: self.max_requests_in_flight_per_identity,
            max_watches: self.max_watches,
            max_watches_per_identity: self.max_watches_per_identity,
        }
    }
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
        #[arg(long, env = "MODELHUB_BOOKMARK_INTERVAL", default_value = "10s", value_parser = parse_interval)]
        bookmark_interval: Duration,
        /// How often the event log is checked for compaction.
        #[arg(long, env = "MODELHUB_COMPACTION_INTERVAL", default_value = "5s", value_parser = parse_interval)]
        compaction_interval: Duration,
        /// Watch events buffered in memory; slower watchers read the log.
        #[arg(long, env = "MODELHUB_WATCH_BUFFER", default_value_t = modelhub::watch::HUB_CAPACITY)]
        watch_buffer: usize,
        /// Database page cache in MiB (bounds resident memory).
        #[arg(long, env = "MODELHUB_CACHE_MB", default_value_t = 128)]
        cache_mb: usize,
        /// How long a paged list's continue token (and its snapshot) lives.
        #[arg(long, env = "MODELHUB_CONTINUE_TTL", default_value = "5m", value_parser = parse_duration)]
        continue_ttl: Duration,
        /// Longest time between checkpoints of the write-ahead log into the
        /// database (writes are durable either way; a longer interval means
        /// more to replay after a crash).
        #[arg(long, env = "MODELHUB_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
        checkpoint_interval: Duration,
        /// Threads serving HTTP (default: one per CPU but one, at least
        /// one: the single writer has a thread of its own and needs a core
        /// under write load).
        #[arg(long, env = "MODELHUB_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
        workers: Option<u16>,
        /// Free space to keep on the data's filesystem (e.g. 128MiB, 1GiB,
        /// 0 to disable): below it, every write but a delete is refused
        /// with 507, so that space can still be freed through the API.
        #[arg(long, env = "MODELHUB_MIN_FREE_SPACE", default_value = "128MiB", value_parser = parse_size)]
        min_free_space: u64,
        /// Storage quota: once stored objects and history take this much
        /// (e.g. 8GiB; 0: none), every write but a delete is refused with
        /// 507, like etcd's --quota-backend-bytes.
        #[arg(long, env = "MODELHUB_QUOTA_BYTES", default_value = "8GiB", value_parser = parse_size)]
        quota_bytes: u64,
        /// Byte budget of the watch history: compaction also drops the
        /// oldest events while the history takes more (0: none).
        #[arg(long, env = "MODELHUB_HISTORY_BYTES", default_value = "1GiB", value_parser = parse_size)]
        history_bytes: u64,
        /// A file of this size is kept beside the database (PATH.spare)
        /// and deleted when the disk fills up under a write, so that the
        /// store can recover and keep serving reads and deletes (0: none).
        #[arg(long, env = "MODELHUB_SPARE_SPACE", default_value = "32MiB", value_parser = parse_size)]
        spare_space: u64,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Print the OpenAPI document (what `openapi/v1beta1.json` holds).
    Openapi,
    /// Save a consistent backup of a running server to FILE (written as
    /// FILE.tmp, verified, then renamed).
    Backup {
        /// Where to write the backup.
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Build a new database, offline, from a backup file. The restored
    /// revision jumps ahead of the backup's, and all history before it
    /// counts as compacted: a watch resumed from an older revision answers
    /// 410 and its client relists.
    Restore {
        /// Database file to create (refused if it or its write-ahead log
        /// PATH.wal exists).
        #[arg(long)]
        data: PathBuf,
        /// The backup file (written by `modelhub backup`).
        file: PathBuf,
        /// Added to the backup's revision: more than the revisions the old
        /// server handed out after the backup.
        #[arg(long, default_value_t = modelhub::restore::DEFAULT_BUMP)]
        bump_revision: u64,
    },
    /// Check a database and its write-ahead log offline (stop the server
    /// first): what they hold, and whether a start would accept them.
    Check {
        /// Database file.
        #[arg(long, env = "MODELHUB_DATA", default_value = "./modelhub.redb")]
        data: PathBuf,
        /// Repair what would stop a start, accepting the loss of what is
        /// damaged (the log is truncated at its damage; a missing log is
        /// accepted). Deliberate: acknowledged writes after the damage
        /// are lost.
        #[arg(long)]
        accept_loss: bool,
    },
    /// Create or update the resources of a manifest, all in one transaction.
    Apply {
        /// Manifest file (a YAML stream, a JSON document or a JSON array); `-` reads stdin.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: String,
        /// Validate and report what would happen, writing nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one resource, or the resources of a kind under a path.
    Get {
        /// realm, space, stack, cell or container (singular or plural).
        kind: String,
        /// Slash-separated names from the realm down (e.g. demo/web/frontend);
        /// a shorter path lists the resources of KIND under it.
        path: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = modelhub::cli::Output::Table)]
        output: modelhub::cli::Output,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a resource.
    Delete {
        /// realm, space, stack, cell or container (singular or plural).
        kind: String,
        /// The resource's full path (e.g. demo/web/frontend/shop).
        path: String,
        /// Also delete everything under it (otherwise a resource with children is refused).
        #[arg(long)]
        cascade: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print changes as they happen (first the resources that exist), until Ctrl-C.
    Watch {
        /// Only this kind (default: all kinds).
        kind: Option<String>,
        /// Only under this realm.
        #[arg(long)]
        realm: Option<String>,
        /// Only under this space (needs --realm).
        #[arg(long)]
        space: Option<String>,
        /// Only under this stack (needs --space).
        #[arg(long)]
        stack: Option<String>,
        /// Only under this cell (needs --stack).
        #[arg(long)]
        cell: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Where the client commands send their requests.
#[derive(clap::Args)]
struct Remote {
    /// The modelhub server (URL, or HOST:PORT).
    #[arg(long, env = "MODELHUB_SERVER", default_value = modelhub::cli::DEFAULT_SERVER)]
    server: String,
}

/// Runs one client command on a single-threaded runtime.
fn run_client<F>(command: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), modelhub::cli::CliError>>,
{
    match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => modelhub::cli::report(runtime.block_on(command)),
        Err(code) => code,
    }
}

/// HTTP worker threads when `--workers` is not given: one per CPU but one
/// (the writer's), at least one.
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// Builds a tokio runtime, or says why not.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("modelhub: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Parses `10s`, `500ms`, `2m` or plain seconds.
/// A size: a number of bytes, with an optional unit (KiB, MiB, GiB, TiB,
/// or K, M, G, T for the same powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 128MiB, 1GiB, 0)"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use KiB, MiB, GiB or TiB)"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

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

/// Parses a duration that must be more than zero (a period of something
/// repeated).
fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: must be more than zero")),
        d => Ok(d),
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
        Command::Openapi => {
            print!("{}", modelhub::http::openapi::to_json());
            ExitCode::SUCCESS
        }
        Command::Serve {
            listen,
            data,
            history_revisions,
            bookmark_interval,
            compaction_interval,
            watch_buffer,
            cache_mb,
            continue_ttl,
            checkpoint_interval,
            workers,
            min_free_space,
            quota_bytes,
            history_bytes,
            spare_space,
            limits,
        } => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers.map_or_else(default_workers, usize::from));
            let runtime = match runtime(builder) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let config = modelhub::server::Config {
                history_revisions,
                bookmark_interval,
                compaction_interval,
                watch_buffer,
                cache_bytes: cache_mb * 1024 * 1024,
                continue_ttl,
                checkpoint_interval,
                min_free_bytes: min_free_space,
                quota_bytes,
                history_bytes,
                spare_bytes: spare_space,
                write_queue: limits.write_queue as usize,
                limits: limits.limits(),
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
        Command::Backup { file, remote } => run_client(modelhub::cli::backup(
            &remote.server,
            &file,
            &mut std::io::stdout(),
        )),
        Command::Check { data, accept_loss } => {
            match modelhub::store::check(
                &data,
                &modelhub::store::StoreOptions::default(),
                accept_loss,
            ) {
                Ok((lines, ok)) => {
                    for line in lines {
                        println!("{line}");
                    }
                    if ok || accept_loss {
                        ExitCode::SUCCESS
                    } else {
                        println!("a start would refuse these files (see above)");
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Restore {
            data,
            file,
            bump_revision,
        } => match modelhub::restore::restore(
            &data,
            &file,
            bump_revision,
            &modelhub::store::StoreOptions::default(),
        ) {
            Ok(r) => {
                println!(
                    "restored {} objects into {} at revision {} (the backup's {} + {bump_revision})",
                    r.objects,
                    data.display(),
                    r.revision,
                    r.backup_revision
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Apply {
            file,
            dry_run,
            remote,
        } => run_client(modelhub::cli::apply(
            &remote.server,
            &file,
            dry_run,
            &mut std::io::stdout(),
        )),
        Command::Get {
            kind,
            path,
            output,
            remote,
        } => run_client(modelhub::cli::get(
            &remote.server,
            &kind,
            path.as_deref(),
            output,
            &mut std::io::stdout(),
        )),
        Command::Delete {
            kind,
            path,
            cascade,
            remote,
        } => run_client(modelhub::cli::delete(
            &remote.server,
            &kind,
            &path,
            cascade,
            &mut std::io::stdout(),
        )),
        Command::Watch {
            kind,
            realm,
            space,
            stack,
            cell,
            remote,
        } => run_client(modelhub::cli::watch(
            &remote.server,
            kind.as_deref(),
            &modelhub::cli::Scope {
                realm,
                space,
                stack,
                cell,
            },
            &mut std::io::stdout(),
        )),
    }
}
