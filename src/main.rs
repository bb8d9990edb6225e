//! The `modelhub` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand};
use modelhub::http::listen::{Limits, Listen, TlsFiles};
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
    #[command(flatten)]
    remote: Remote,
}

/// Limits against hostile, broken or greedy clients (`serve`).
#[derive(clap::Args)]
struct LimitArgs {
    /// Largest request body (e.g. 16MiB): larger ones get 413.
    #[arg(long, env = "MODELHUB_MAX_BODY_BYTES", default_value = "16MiB", value_parser = parse_body_size)]
    max_body_bytes: u64,
    /// Longest path and query of a request, in bytes: longer ones get 414.
    #[arg(long, env = "MODELHUB_MAX_URI_BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(256..))]
    max_uri_bytes: u32,
    /// Deepest nesting of arrays and objects in a JSON body: deeper gets 400.
    #[arg(long, env = "MODELHUB_MAX_JSON_DEPTH", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_json_depth: u32,
    /// Most documents in one apply: more gets 413.
    #[arg(long, env = "MODELHUB_MAX_APPLY_DOCUMENTS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_apply_documents: u32,
    /// Requests in flight at once (watch streams and probes aside); a
    /// quarter is kept for admin and controller identities. Over it: 429.
    #[arg(long, env = "MODELHUB_MAX_REQUESTS_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_requests_in_flight: u32,
    /// Requests in flight at once from one identity: over it, 429.
    #[arg(
        long,
        env = "MODELHUB_MAX_REQUESTS_IN_FLIGHT_PER_IDENTITY",
        default_value_t = 256
    , value_parser = clap::value_parser!(u32).range(1..))]
    max_requests_in_flight_per_identity: u32,
    /// Watch streams open at once: over it, 429.
    #[arg(long, env = "MODELHUB_MAX_WATCHES", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_watches: u32,
    /// Watch streams open at once for one identity: over it, 429.
    #[arg(
        long,
        env = "MODELHUB_MAX_WATCHES_PER_IDENTITY",
        default_value_t = 1000
    , value_parser = clap::value_parser!(u32).range(1..))]
    max_watches_per_identity: u32,
    /// Writes that may wait for the database's single writer: once that
    /// many are queued, more get 429.
    #[arg(long, env = "MODELHUB_WRITE_QUEUE", default_value_t = modelhub::store::options::DEFAULT_WRITE_QUEUE as u32, value_parser = clap::value_parser!(u32).range(1..))]
    write_queue: u32,
}

impl LimitArgs {
    fn limits(&self) -> modelhub::http::limits::Limits {
        modelhub::http::limits::Limits {
            max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
            max_uri_bytes: self.max_uri_bytes as usize,
            max_json_depth: self.max_json_depth as usize,
            max_apply_documents: self.max_apply_documents as usize,
            max_in_flight: self.max_requests_in_flight as usize,
            max_in_flight_per_identity: self.max_requests_in_flight_per_identity as usize,
            max_watches: self.max_watches as usize,
            max_watches_per_identity: self.max_watches_per_identity as usize,
        }
    }
}

/// Which storage engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// One embedded database file (--data).
    Redb,
    /// An etcd cluster (--etcd-endpoints); several replicas may share it.
    Etcd,
}

/// The storage engine and, for etcd, how to reach the cluster.
#[derive(clap::Args)]
struct EtcdArgs {
    /// Storage engine: redb (one embedded file, --data) or etcd (a
    /// cluster that several replicas share; needs the `etcd` feature).
    #[arg(long, env = "MODELHUB_STORE", value_enum, default_value_t = StoreKind::Redb)]
    store: StoreKind,
    /// Client URLs of the etcd members (comma-separated).
    #[arg(long, env = "MODELHUB_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Key prefix of this store in etcd (one hierarchy per prefix).
    #[arg(long, env = "MODELHUB_ETCD_PREFIX", default_value = "/modelhub")]
    etcd_prefix: String,
    /// CA certificate (PEM) to check the etcd members' certificates.
    #[arg(long, env = "MODELHUB_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd; needs --etcd-key.
    #[arg(long, env = "MODELHUB_ETCD_CERT", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// Client key (PEM) for etcd; needs --etcd-cert.
    #[arg(long, env = "MODELHUB_ETCD_KEY", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// etcd user; needs --etcd-password-file.
    #[arg(long, env = "MODELHUB_ETCD_USER", requires = "etcd_password_file")]
    etcd_user: Option<String>,
    /// File holding the etcd user's password (never the password itself).
    #[arg(long, env = "MODELHUB_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
    /// Deadline of each etcd request.
    #[arg(long, env = "MODELHUB_ETCD_TIMEOUT", default_value = "5s", value_parser = parse_interval)]
    etcd_timeout: Duration,
    /// The cluster's --max-txn-ops: a request needing more in its one
    /// transaction is refused (413).
    #[arg(long, env = "MODELHUB_ETCD_MAX_TXN_OPS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    etcd_max_txn_ops: u32,
    /// The cluster's --max-request-bytes: a larger transaction is refused
    /// (413).
    #[arg(long, env = "MODELHUB_ETCD_MAX_REQUEST_BYTES", default_value = "1536KiB", value_parser = parse_size)]
    etcd_max_request_bytes: u64,
    /// Most objects one cascade delete may remove on etcd (413 beyond).
    #[arg(long, env = "MODELHUB_MAX_CASCADE_OBJECTS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_cascade_objects: u64,
    /// Keep a copy of the objects in memory (about the size of the stored
    /// records), kept current by the change feed, and serve reads and
    /// write plans from it after a linearizable check (one small read,
    /// shared by concurrent requests); false: every read goes to etcd.
    #[arg(long, env = "MODELHUB_ETCD_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    etcd_cache: bool,
}

impl EtcdArgs {
    /// The etcd options when --store etcd (`heartbeat`: the bookmark
    /// interval).
    fn options(&self, heartbeat: Duration) -> Result<Option<modelhub::store::EtcdOptions>, String> {
        if self.store == StoreKind::Redb {
            return Ok(None);
        }
        if self.etcd_endpoints.is_empty() {
            return Err("--store etcd needs --etcd-endpoints".into());
        }
        Ok(Some(modelhub::store::EtcdOptions {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            user: self.etcd_user.clone(),
            password_file: self.etcd_password_file.clone(),
            timeout: self.etcd_timeout,
            max_txn_ops: self.etcd_max_txn_ops as usize,
            max_request_bytes: usize::try_from(self.etcd_max_request_bytes).unwrap_or(usize::MAX),
            max_cascade_objects: self.max_cascade_objects,
            heartbeat,
            cache: self.etcd_cache,
            feed_delay: std::time::Duration::ZERO,
        }))
    }
}

#[derive(Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once; boxing the serve flags would only obscure them"
)]
enum Command {
    /// Run the HTTP service.
    Serve {
        /// Where to listen: HOST:PORT (port 0: any free port) or
        /// unix:/PATH; repeat the flag (or separate with commas in the
        /// environment variable) for several.
        #[arg(
            long,
            env = "MODELHUB_LISTEN",
            default_value = "127.0.0.1:8080",
            value_delimiter = ','
        )]
        listen: Vec<Listen>,
        /// Group of the unix sockets (name or gid; default: the server's
        /// primary group). The server's user must belong to it.
        #[arg(long, env = "MODELHUB_SOCKET_GROUP")]
        socket_group: Option<String>,
        /// TLS certificate chain (PEM) for every TCP listener; reloaded
        /// when the file changes. Needs --tls-key.
        #[arg(long, env = "MODELHUB_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM). Needs --tls-cert.
        #[arg(long, env = "MODELHUB_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// CA certificates (PEM) of client certificates: a client may then
        /// present one (optional at the TLS layer). Needs --tls-cert.
        #[arg(long, env = "MODELHUB_TLS_CLIENT_CA", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// A connection must send a whole request head within this after
        /// it opens and (HTTP/1.1) after the first byte of each later head.
        #[arg(long, env = "MODELHUB_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_interval)]
        header_timeout: Duration,
        /// A connection with no request in flight (an open watch counts as
        /// one) is closed after this.
        #[arg(long, env = "MODELHUB_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_interval)]
        idle_timeout: Duration,
        /// A request body that sends nothing for this long fails (408).
        #[arg(long, env = "MODELHUB_BODY_TIMEOUT", default_value = "30s", value_parser = parse_interval)]
        body_timeout: Duration,
        /// A TLS handshake must finish within this.
        #[arg(long, env = "MODELHUB_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_interval)]
        tls_handshake_timeout: Duration,
        /// Largest request head (e.g. 64KiB; HTTP/1.1 at least 8KiB):
        /// larger is answered 431 or the connection closed.
        #[arg(long, env = "MODELHUB_MAX_HEADER_BYTES", default_value = "64KiB", value_parser = parse_head_size)]
        max_header_bytes: u64,
        /// Most headers in a request (HTTP/1.1): more is answered 431.
        #[arg(long, env = "MODELHUB_MAX_HEADERS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        max_headers: u32,
        /// Open connections at most; past it a new TCP connection is closed
        /// at once (unix sockets keep a reserve of 64 more).
        #[arg(long, env = "MODELHUB_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
        /// Concurrent streams of one HTTP/2 connection.
        #[arg(long, env = "MODELHUB_MAX_STREAMS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
        max_streams: u32,
        /// Database file (created if missing).
        #[arg(long, env = "MODELHUB_DATA", default_value = "./modelhub.redb")]
        data: PathBuf,
        /// Keep at least this many revisions of watch history.
        #[arg(long, env = "MODELHUB_HISTORY_REVISIONS", default_value_t = 100_000)]
        history_revisions: u64,
        /// BOOKMARK idle watch streams this often (e.g. 10s, 500ms).
        #[arg(long, env = "MODELHUB_BOOKMARK_INTERVAL", default_value = "10s", value_parser = parse_interval)]
        bookmark_interval: Duration,
        /// How often the event log is checked for compaction (default 5s;
        /// with --store etcd, 5m: each compaction of etcd is a write and
        /// compacts the whole cluster).
        #[arg(long, env = "MODELHUB_COMPACTION_INTERVAL", value_parser = parse_interval)]
        compaction_interval: Option<Duration>,
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
        /// Checkpoint once the write-ahead log holds this much (e.g. 1MiB;
        /// at most 32MiB): a checkpoint holds writes back for about 5 ms
        /// per MiB on an SSD, so a smaller value means shorter, more
        /// frequent pauses.
        #[arg(long, env = "MODELHUB_CHECKPOINT_BYTES", default_value = "1MiB", value_parser = parse_checkpoint_bytes)]
        checkpoint_bytes: u64,
        /// Threads serving HTTP (default: one per CPU but one, at least
        /// one: redb's single writer has a thread of its own and needs a
        /// core under write load; with --store etcd, one per CPU).
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
        /// While no token exists, let anonymous requests in as admins even
        /// on a listener that is not loopback (only on a trusted network).
        #[arg(long, env = "MODELHUB_INSECURE_ALLOW_ANONYMOUS")]
        insecure_allow_anonymous: bool,
        /// Serve /metrics without a token (for a scraper on a trusted
        /// network).
        #[arg(long, env = "MODELHUB_METRICS_ANONYMOUS")]
        metrics_anonymous: bool,
        /// Also append the audit records (target modelhub::audit: every
        /// write and every refused request), as JSON lines, to this file
        /// (created with mode 0600).
        #[arg(long, env = "MODELHUB_AUDIT_LOG")]
        audit_log: Option<PathBuf>,
        #[command(flatten)]
        request_limits: LimitArgs,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Print the OpenAPI document (what `openapi/v1beta1.json` holds).
    Openapi,
    /// Save a consistent backup of a running server to FILE (written as
    /// FILE.tmp, verified, then renamed).
    Backup {
        /// Where to write the backup.
        file: PathBuf,
    },
    /// Build a new database, offline, from a backup file. The restored
    /// revision jumps ahead of the backup's, and all history before it
    /// counts as compacted: a watch resumed from an older revision answers
    /// 410 and its client relists.
    Restore {
        /// Database file to create (refused if it or its write-ahead log
        /// PATH.wal exists); with --store etcd, unused.
        #[arg(long, required_unless_present = "store")]
        data: Option<PathBuf>,
        /// The backup file (written by `modelhub backup`).
        file: PathBuf,
        /// Added to the backup's revision: more than the revisions the old
        /// server handed out after the backup (with --store etcd: etcd
        /// revisions, i.e. write transactions, 1,000,000 resourceVersions
        /// each).
        #[arg(long, default_value_t = modelhub::restore::DEFAULT_BUMP)]
        bump_revision: u64,
        #[command(flatten)]
        etcd: EtcdArgs,
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
    /// Manage bearer tokens (admin only; root over the unix socket is an
    /// admin without one).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Create or update the resources of a manifest, all in one transaction.
    Apply {
        /// Manifest file (a YAML stream, a JSON document or a JSON array); `-` reads stdin.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: String,
        /// Validate and report what would happen, writing nothing.
        #[arg(long)]
        dry_run: bool,
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
        /// When it is marked for deletion (it has finalizers, or children
        /// still being deleted), wait until it is gone.
        #[arg(long)]
        wait: bool,
    },
    /// Print the shell completion script for SHELL to stdout (e.g.
    /// `modelhub completions bash > /usr/share/bash-completion/completions/modelhub`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages to DIR: modelhub.1 and one
    /// modelhub-COMMAND.1 per subcommand.
    Man {
        /// Directory to write the pages in (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
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
    },
}

/// Where the client commands send their requests, and how they
/// authenticate; accepted before or after the subcommand.
#[derive(clap::Args)]
struct Remote {
    /// The modelhub server: a URL, HOST:PORT or unix:/PATH.
    #[arg(long, global = true, env = "MODELHUB_SERVER", default_value = modelhub::cli::DEFAULT_SERVER)]
    server: String,
    /// Bearer token sent with every request.
    #[arg(long, global = true, env = "MODELHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the bearer token (first line); wins over --token.
    #[arg(long, global = true, env = "MODELHUB_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for an https server.
    #[arg(long, global = true, env = "MODELHUB_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to present to an https server (with
    /// --client-key).
    #[arg(long, global = true, env = "MODELHUB_CLIENT_CERT")]
    client_cert: Option<PathBuf>,
    /// Key (PEM) of --client-cert.
    #[arg(long, global = true, env = "MODELHUB_CLIENT_KEY")]
    client_key: Option<PathBuf>,
}

/// `modelhub token ...`.
#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once: only its digest is kept).
    Create {
        /// Its name (1-63 letters, digits, '-', '.'; also the CN of a
        /// client certificate that authenticates as it).
        #[arg(long)]
        name: String,
        /// admin, writer, controller or reader.
        #[arg(long)]
        role: String,
        /// Limit it to this realm (repeatable; default: every realm).
        #[arg(long = "realm", value_name = "REALM")]
        realms: Vec<String>,
        /// Let it set privileged fields (privileged, host namespaces,
        /// added capabilities, bind mounts, ...).
        #[arg(long)]
        privileged: bool,
    },
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token: refused from the next request on.
    Revoke {
        /// The token's name.
        name: String,
    },
}

impl Remote {
    /// The server and options, or why the token cannot be read.
    fn target(&self) -> Result<modelhub::cli::Remote, modelhub::cli::CliError> {
        let token = match (&self.token_file, &self.token) {
            (Some(file), _) => Some(
                modelhub::client::Token::from_file(file)
                    .map_err(|e| modelhub::cli::CliError::Input(e.to_string()))?,
            ),
            (None, Some(t)) => Some(modelhub::client::Token::new(t)),
            (None, None) => None,
        };
        Ok(modelhub::cli::Remote {
            server: self.server.clone(),
            options: modelhub::client::ClientOptions {
                token,
                ca_cert: self.ca_cert.clone(),
                client_cert: self.client_cert.clone(),
                client_key: self.client_key.clone(),
            },
        })
    }
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
/// (redb's writer's; on etcd, which has no writer thread, one per CPU), at
/// least one.
fn default_workers(etcd: bool) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(usize::from(!etcd)))
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

/// A checkpoint size: from 64 KiB to half the write-ahead log.
fn parse_checkpoint_bytes(s: &str) -> Result<u64, String> {
    let max = modelhub::store::MAX_CHECKPOINT_BYTES;
    match parse_size(s)? {
        n if n < 64 * 1024 => Err(format!("{s:?}: at least 64KiB")),
        n if n > max => Err(format!("{s:?}: at most {}MiB", max >> 20)),
        n => Ok(n),
    }
}

/// A body-size limit: at least 1 KiB.
fn parse_body_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        n if n < 1024 => Err(format!("{s:?}: at least 1KiB")),
        n => Ok(n),
    }
}

/// A request-head limit: at least 8 KiB (HTTP/1.1 needs that much).
fn parse_head_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        n if n < 8192 => Err(format!("{s:?}: at least 8KiB")),
        n => Ok(n),
    }
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

/// Logs to stderr (filtered by `RUST_LOG`, default `info`) and, with
/// `audit`, the audit records as JSON lines to that file as well. A
/// server's stderr (`batched`) takes its audit records in batches
/// ([`modelhub::logging`]): the answer is what to flush before the
/// process ends.
fn init_logging(
    audit: Option<&std::path::Path>,
    batched: bool,
) -> Result<Option<modelhub::logging::Batched>, String> {
    use modelhub::logging::Batched;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let flush = if batched {
        let b = Batched::new("modelhub-log", Box::new(std::io::stderr()))
            .map_err(|e| format!("cannot start the log's thread: {e}"))?;
        Some(b)
    } else {
        None
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(modelhub::logging::stderr(flush.as_ref()))
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let audit = match audit {
        None => None,
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot open the audit log {}: {e}", path.display()))?;
            // An existing file keeps no wider mode than a new one gets.
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot restrict the audit log {}: {e}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(
                        tracing_subscriber::filter::Targets::new()
                            .with_target("modelhub::audit", tracing::Level::INFO),
                    ),
            )
        }
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(audit)
        .init();
    Ok(flush)
}

/// Writes `modelhub.1` and one `modelhub-COMMAND.1` per subcommand (and
/// nested subcommand: `modelhub-token-create.1`) into `dir`.
fn write_man_pages(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .map_err(|e| format!("cannot write the manual pages to {}: {e}", dir.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let audit = match &cli.command {
        Command::Serve { audit_log, .. } => audit_log.clone(),
        _ => None,
    };
    let serve = matches!(cli.command, Command::Serve { .. });
    let logs = match init_logging(audit.as_deref(), serve) {
        Ok(logs) => logs,
        Err(e) => {
            eprintln!("modelhub: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(log) = logs.clone() {
        // What was logged before a panic comes before its report.
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            log.try_flush();
            report(info);
        }));
    }
    let code = run(cli);
    if let Some(log) = logs {
        log.flush();
    }
    code
}

/// Runs the command.
fn run(cli: Cli) -> ExitCode {
    let remote = cli.remote;
    match cli.command {
        Command::Openapi => {
            print!("{}", modelhub::http::openapi::to_json());
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "modelhub",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man { dir } => match write_man_pages(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve {
            listen,
            socket_group,
            tls_cert,
            tls_key,
            tls_client_ca,
            header_timeout,
            idle_timeout,
            body_timeout,
            tls_handshake_timeout,
            max_header_bytes,
            max_headers,
            max_connections,
            max_streams,
            data,
            history_revisions,
            bookmark_interval,
            compaction_interval,
            watch_buffer,
            cache_mb,
            continue_ttl,
            checkpoint_interval,
            checkpoint_bytes,
            workers,
            min_free_space,
            quota_bytes,
            history_bytes,
            spare_space,
            insecure_allow_anonymous,
            metrics_anonymous,
            audit_log: _,
            request_limits,
            etcd,
        } => {
            let etcd = match etcd.options(bookmark_interval) {
                Ok(e) => e,
                Err(msg) => {
                    eprintln!("modelhub: {msg}");
                    return ExitCode::FAILURE;
                }
            };
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(
                workers.map_or_else(|| default_workers(etcd.is_some()), usize::from),
            );
            let runtime = match runtime(builder) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let compaction_interval = compaction_interval.unwrap_or(if etcd.is_some() {
                Duration::from_secs(300)
            } else {
                Duration::from_secs(5)
            });
            let config = modelhub::server::Config {
                history_revisions,
                bookmark_interval,
                compaction_interval,
                watch_buffer,
                cache_bytes: cache_mb * 1024 * 1024,
                continue_ttl,
                checkpoint_interval,
                checkpoint_bytes,
                min_free_bytes: min_free_space,
                quota_bytes,
                history_bytes,
                spare_bytes: spare_space,
                insecure_allow_anonymous,
                metrics_anonymous,
                tls: tls_cert.zip(tls_key).map(|(cert, key)| TlsFiles {
                    cert,
                    key,
                    client_ca: tls_client_ca,
                }),
                socket_group,
                limits: Limits {
                    header_timeout,
                    idle_timeout,
                    body_timeout,
                    tls_handshake_timeout,
                    max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
                    max_headers: max_headers as usize,
                    max_connections: max_connections as usize,
                    max_streams,
                },
                write_queue: request_limits.write_queue as usize,
                request_limits: request_limits.limits(),
                etcd,
                notify: modelhub::notify::NotifySocket::from_env(),
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
        Command::Backup { file } => run_client(async {
            modelhub::cli::backup(&remote.target()?, &file, &mut std::io::stdout()).await
        }),
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
            etcd,
        } => {
            let etcd = match etcd.options(Duration::from_secs(10)) {
                Ok(e) => e,
                Err(msg) => {
                    eprintln!("error: {msg}");
                    return ExitCode::FAILURE;
                }
            };
            let restored = match (&etcd, &data) {
                (Some(options), _) => {
                    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
                        Ok(r) => r,
                        Err(code) => return code,
                    };
                    runtime
                        .block_on(modelhub::restore::restore_etcd(
                            options,
                            &file,
                            bump_revision,
                        ))
                        .map(|r| (r, format!("etcd prefix {}", options.prefix)))
                }
                (None, Some(data)) => modelhub::restore::restore(
                    data,
                    &file,
                    bump_revision,
                    &modelhub::store::StoreOptions::default(),
                )
                .map(|r| (r, data.display().to_string())),
                (None, None) => {
                    eprintln!("error: --data is required with --store redb");
                    return ExitCode::FAILURE;
                }
            };
            match restored {
                Ok((r, target)) => {
                    println!(
                        "restored {} objects into {target} at revision {} (the backup's {} + \
                         {bump_revision})",
                        r.objects, r.revision, r.backup_revision
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Apply { file, dry_run } => run_client(async {
            modelhub::cli::apply(&remote.target()?, &file, dry_run, &mut std::io::stdout()).await
        }),
        Command::Get { kind, path, output } => run_client(async {
            modelhub::cli::get(
                &remote.target()?,
                &kind,
                path.as_deref(),
                output,
                &mut std::io::stdout(),
            )
            .await
        }),
        Command::Delete {
            kind,
            path,
            cascade,
            wait,
        } => run_client(async {
            modelhub::cli::delete(
                &remote.target()?,
                &kind,
                &path,
                modelhub::cli::DeleteOptions { cascade, wait },
                &mut std::io::stdout(),
            )
            .await
        }),
        Command::Token { command } => run_client(async {
            let target = remote.target()?;
            let out = &mut std::io::stdout();
            match command {
                TokenCommand::Create {
                    name,
                    role,
                    realms,
                    privileged,
                } => {
                    modelhub::cli::tokens::create(&target, &name, &role, &realms, privileged, out)
                        .await
                }
                TokenCommand::List => modelhub::cli::tokens::list(&target, out).await,
                TokenCommand::Revoke { name } => {
                    modelhub::cli::tokens::revoke(&target, &name, out).await
                }
            }
        }),
        Command::Watch {
            kind,
            realm,
            space,
            stack,
            cell,
        } => run_client(async {
            modelhub::cli::watch(
                &remote.target()?,
                kind.as_deref(),
                &modelhub::cli::Scope {
                    realm,
                    space,
                    stack,
                    cell,
                },
                &mut std::io::stdout(),
            )
            .await
        }),
    }
}
