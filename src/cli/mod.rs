//! The `modelhub` command line for people: `apply`, `get`, `delete` and
//! `watch` against a running server, in the manner of kubectl, and
//! `backup` of one ([`backup`]).
//!
//! Each command is one async function that writes its normal output to
//! `out` and returns a [`CliError`] on failure; [`report`] turns the result
//! into the process exit code (printing `error: ...` to stderr). Objects are
//! named by their path, slash-separated names from the realm down
//! (`demo/web/frontend/shop`).

mod backup;
pub mod tokens;

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::Value;

use crate::api::v1beta1;
use crate::client::watcher::{Event as WatcherEvent, Watcher};
use crate::client::{Client, ClientError, ClientOptions, WatchScope, object_url};
use crate::model::{AnyObject, Kind, Path};

pub use backup::backup;

/// The server used when neither `--server` nor `MODELHUB_SERVER` is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// How `get` prints what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns: NAME, STATE, GENERATION, AGE.
    #[default]
    Table,
    /// The documents as JSON (a list document for several).
    Json,
    /// The documents as YAML, as the server renders them.
    Yaml,
}

/// The scope flags of `watch`: names from the realm down.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// `--realm`.
    pub realm: Option<String>,
    /// `--space` (needs `--realm`).
    pub space: Option<String>,
    /// `--stack` (needs `--space`).
    pub stack: Option<String>,
    /// `--cell` (needs `--stack`).
    pub cell: Option<String>,
}

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The command line names something impossible (unknown kind, bad path).
    Usage(String),
    /// A local file or stdin could not be read.
    Input(String),
    /// Writing our own output failed.
    Output(std::io::Error),
    /// The server could not be reached, or answered with a problem.
    Client {
        /// The server URL, for the message.
        server: String,
        /// What happened.
        error: ClientError,
    },
    /// The server ended a watch with an error event.
    WatchEnded(String),
    /// A backup could not be downloaded whole and placed.
    Backup(String),
    /// Another error, with a suggestion printed after it.
    Hinted(Box<CliError>, String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m)
            | CliError::Input(m)
            | CliError::WatchEnded(m)
            | CliError::Backup(m) => f.write_str(m),
            CliError::Output(e) => write!(f, "cannot write output: {e}"),
            CliError::Hinted(e, hint) => write!(f, "{e}\nhint: {hint}"),
            CliError::Client { server, error } => match error {
                ClientError::Transport(e) if e.is_connect() => write!(
                    f,
                    "cannot connect to the server at {server}: {} \
                     (is `modelhub serve` running there? set --server or MODELHUB_SERVER)",
                    root_cause(e)
                ),
                ClientError::Transport(e) if e.is_builder() => {
                    write!(f, "bad server URL {server:?}: {}", root_cause(e))
                }
                ClientError::Transport(e) => {
                    write!(f, "request to {server} failed: {}", root_cause(e))
                }
                ClientError::Api { .. } => write!(f, "{error}"),
                ClientError::Decode(e) => write!(f, "unreadable answer from {server}: {e}"),
                ClientError::Config(e) => f.write_str(e),
            },
        }
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Output(e)
    }
}

/// The innermost error of a chain (`Connection refused (os error 111)`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Prints a failure as `error: ...` on stderr; the process exit code.
pub fn report(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `modelhub get realms | head -1`: the reader left; not a failure.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where the commands send their requests, and how they authenticate.
#[derive(Debug, Clone)]
pub struct Remote {
    /// A URL, `HOST:PORT` or `unix:/path/modelhub.sock`.
    pub server: String,
    /// Token and certificates.
    pub options: ClientOptions,
}

impl Remote {
    /// `server` without a token or certificates.
    pub fn new(server: impl Into<String>) -> Remote {
        Remote {
            server: server.into(),
            options: ClientOptions::default(),
        }
    }
}

/// Accepts `host:port` and `unix:/path` as well as a URL.
fn server_url(server: &str) -> String {
    if server.contains("://") || server.starts_with("unix:") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

/// A client for `remote` and a function wrapping its errors.
fn connect(
    remote: &Remote,
) -> Result<(Client, impl Fn(ClientError) -> CliError + use<>), CliError> {
    let url = server_url(&remote.server);
    let client = Client::connect(&url, &remote.options).map_err(|error| CliError::Client {
        server: url.clone(),
        error,
    })?;
    let server = client.server().to_string();
    Ok((client, move |error| CliError::Client {
        server: server.clone(),
        error,
    }))
}

/// Reads a kind argument: singular or plural, any case.
pub fn parse_kind(s: &str) -> Result<Kind, CliError> {
    Kind::parse(s).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown kind {s:?} (realm, space, stack, cell or container; singular or plural)"
        ))
    })
}

/// Reads a `realm/space/...` path into its names (a trailing `/` is
/// allowed; empty names are not).
pub fn parse_path(s: &str) -> Result<Vec<String>, CliError> {
    let trimmed = s.strip_suffix('/').unwrap_or(s);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = trimmed.split('/').map(str::to_string).collect();
    if names.iter().any(String::is_empty) {
        return Err(CliError::Usage(format!(
            "bad path {s:?}: expected names separated by single slashes, e.g. demo/web/frontend"
        )));
    }
    Ok(names)
}

/// `REALM/SPACE/...` down to `kind`, for messages.
fn path_shape(kind: Kind) -> String {
    Kind::ALL[..kind.depth()]
        .iter()
        .map(|k| k.as_str().to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("/")
}

fn lower(kind: Kind) -> String {
    kind.as_str().to_ascii_lowercase()
}

/// `cell/demo/web/frontend/shop`.
fn kubectl_name(kind: Kind, path: &str) -> String {
    format!("{}/{path}", lower(kind))
}

/// The media type of a manifest: JSON if it starts with `{` or `[`.
pub fn manifest_type(body: &[u8]) -> &'static str {
    let first = body
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(body)
        .iter()
        .find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{' | b'[') => "application/json",
        _ => "application/yaml",
    }
}

/// `modelhub apply -f FILE|-`: sends every document of the manifest to
/// `/apply` in one request and prints one line per document.
pub async fn apply(
    remote: &Remote,
    file: &str,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let body = if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::Input(format!("cannot read stdin: {e}")))?;
        buf
    } else {
        std::fs::read(file).map_err(|e| CliError::Input(format!("cannot read {file}: {e}")))?
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        let from = if file == "-" { "stdin" } else { file };
        return Err(CliError::Input(format!("{from} holds no documents")));
    }
    let (client, fail) = connect(remote)?;
    let content_type = manifest_type(&body);
    let result = client
        .apply(body, content_type, dry_run)
        .await
        .map_err(fail)?;
    let suffix = if result.dry_run { " (dry run)" } else { "" };
    for item in &result.items {
        let kind = Kind::parse(&item.kind).map_or_else(|| item.kind.to_ascii_lowercase(), lower);
        writeln!(out, "{kind}/{} {}{suffix}", item.path, item.outcome)?;
    }
    out.flush()?;
    Ok(())
}

/// `modelhub get KIND [PATH] [-o ...]`: one object (full path), the
/// objects of that kind under a shorter path, or all of that kind.
pub async fn get(
    remote: &Remote,
    kind: &str,
    path: Option<&str>,
    output: Output,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let kind = parse_kind(kind)?;
    let names = parse_path(path.unwrap_or_default())?;
    if names.len() > kind.depth() {
        return Err(CliError::Usage(format!(
            "a {} path has at most {} names ({})",
            lower(kind),
            kind.depth(),
            path_shape(kind)
        )));
    }
    let single = names.len() == kind.depth();
    let url = if single {
        object_url(&Path::new(kind, names.clone()))
    } else {
        let mut url = v1beta1::paths::cross_scope_route(kind);
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (param, name) in ["realm", "space", "stack", "cell"].iter().zip(&names) {
            query.append_pair(param, name);
        }
        let query = query.finish();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        url
    };
    let accept = match output {
        Output::Yaml => "application/yaml",
        Output::Table | Output::Json => "application/json",
    };
    let (client, fail) = connect(remote)?;
    let text = client.get_raw(&url, accept).await.map_err(fail)?;
    if output == Output::Yaml {
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            writeln!(out)?;
        }
        out.flush()?;
        return Ok(());
    }
    let doc: Value = serde_json::from_str(&text).map_err(|e| CliError::Client {
        server: client.server().to_string(),
        error: ClientError::Decode(e.to_string()),
    })?;
    if output == Output::Json {
        let pretty = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
        writeln!(out, "{pretty}")?;
        out.flush()?;
        return Ok(());
    }
    let items = if single {
        vec![doc]
    } else {
        doc["items"].as_array().cloned().unwrap_or_default()
    };
    if items.is_empty() {
        eprintln!("No {} found.", kind.plural());
        return Ok(());
    }
    let prefix = if single {
        kind.depth() - 1
    } else {
        names.len()
    };
    let rows = items
        .iter()
        .map(|item| Row::of(item, prefix))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Client {
            server: client.server().to_string(),
            error: ClientError::Decode(e),
        })?;
    out.write_all(table(&rows, now_nanos()).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// How `modelhub delete` deletes.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeleteOptions {
    /// With everything under it.
    pub cascade: bool,
    /// Until it is gone, when it is only marked.
    pub wait: bool,
}

/// What a terminating object waits for, for the user.
fn waiting_for(obj: &AnyObject) -> String {
    let finalizers = &obj.meta().finalizers;
    if finalizers.is_empty() {
        "its children to be deleted".to_string()
    } else {
        finalizers.join(", ")
    }
}

/// `modelhub delete KIND PATH [--cascade] [--wait]`.
pub async fn delete(
    remote: &Remote,
    kind: &str,
    path: &str,
    options: DeleteOptions,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let kind = parse_kind(kind)?;
    let names = parse_path(path)?;
    if names.len() != kind.depth() {
        return Err(CliError::Usage(format!(
            "delete needs the full path of the {}: {}",
            lower(kind),
            path_shape(kind)
        )));
    }
    let (client, fail) = connect(remote)?;
    let target = Path::new(kind, names);
    let deleted = client
        .delete(&target, options.cascade)
        .await
        .map_err(|e| match &e {
            ClientError::Api { reason, .. } if reason == "HasChildren" => CliError::Hinted(
                Box::new(fail(e)),
                format!(
                    "add --cascade to delete the {} and everything under it",
                    lower(kind)
                ),
            ),
            _ => fail(e),
        })?;
    let name = kubectl_name(kind, &deleted.path().names().join("/"));
    if !deleted.meta().is_terminating() {
        writeln!(out, "{name} deleted")?;
        out.flush()?;
        return Ok(());
    }
    let mut waiting = waiting_for(&deleted);
    writeln!(out, "{name} marked for deletion, waiting for: {waiting}")?;
    out.flush()?;
    if !options.wait {
        return Ok(());
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        match client.get(&target).await {
            // Another object of that name: the one deleted is gone.
            Ok(obj) if obj.meta().uid != deleted.meta().uid => break,
            // Without finalizers it waits for its children (said when it
            // was marked), or is about to go (etcd removes it moments after
            // its last finalizer).
            Ok(obj) if obj.meta().finalizers.is_empty() => {}
            Ok(obj) => {
                let now = waiting_for(&obj);
                if now != waiting {
                    writeln!(out, "{name} waiting for: {now}")?;
                    out.flush()?;
                    waiting = now;
                }
            }
            Err(ClientError::Api { status: 404, .. }) => break,
            Err(e) => return Err(fail(e)),
        }
    }
    writeln!(out, "{name} deleted")?;
    out.flush()?;
    Ok(())
}

/// `modelhub watch [KIND] [--realm ...]`: one line per event
/// (`ADDED cell demo/web/frontend/shop rv=12`), starting with the objects
/// that exist now, until Ctrl-C.
pub async fn watch(
    remote: &Remote,
    kind: Option<&str>,
    scope: &Scope,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let kinds = match kind {
        Some(k) => vec![parse_kind(k)?],
        None => Vec::new(),
    };
    let flags = [
        ("--realm", &scope.realm),
        ("--space", &scope.space),
        ("--stack", &scope.stack),
        ("--cell", &scope.cell),
    ];
    let mut names = Vec::new();
    for (i, (flag, value)) in flags.iter().enumerate() {
        match value {
            Some(v) if names.len() == i => names.push(v.clone()),
            Some(_) => {
                return Err(CliError::Usage(format!(
                    "{flag} needs {} too",
                    flags[names.len()].0
                )));
            }
            None => {}
        }
    }
    let (client, fail) = connect(remote)?;
    let what = WatchScope {
        kinds,
        scope: names,
        label_selector: None,
        field_selector: None,
    };
    // One watch first, so that a refusal (scope, token, no server) ends
    // the command with its reason; then a reconnecting watcher, which
    // resumes from its last revision across restarts of the server and
    // lists again after a 410.
    let first = client.watch(&what, None).await.map_err(&fail)?;
    drop(first);
    let mut events = Box::pin(Watcher::new(client.clone(), what).run());
    // What this command has shown, so that a re-sync prints only changes.
    let mut shown: HashMap<Path, AnyObject> = HashMap::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            event = events.next() => event,
        };
        let Some(event) = event else {
            return Err(CliError::WatchEnded(format!(
                "the watch of {} ended",
                client.server()
            )));
        };
        let mut lines = Vec::new();
        match event {
            WatcherEvent::Restarted(objects) => {
                let now: HashMap<Path, AnyObject> =
                    objects.into_iter().map(|o| (o.path(), o)).collect();
                let mut paths: Vec<&Path> = now.keys().chain(shown.keys()).collect();
                paths.sort();
                paths.dedup();
                for path in paths {
                    match (shown.get(path), now.get(path)) {
                        (None, Some(o)) => lines.push(event_line("ADDED", o)),
                        (Some(was), Some(o))
                            if was.meta().resource_version != o.meta().resource_version =>
                        {
                            lines.push(event_line("MODIFIED", o));
                        }
                        (Some(was), None) => lines.push(event_line("DELETED", was)),
                        _ => {}
                    }
                }
                shown = now;
            }
            WatcherEvent::Applied(o) => {
                let verb = if shown.contains_key(&o.path()) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                lines.push(event_line(verb, &o));
                shown.insert(o.path(), o);
            }
            WatcherEvent::Deleted(o) => {
                lines.push(event_line("DELETED", &o));
                shown.remove(&o.path());
            }
        }
        for line in lines {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
}

/// `ADDED cell demo/web/frontend/shop rv=12`.
pub fn event_line(verb: &str, obj: &AnyObject) -> String {
    format!(
        "{verb} {} {} rv={}",
        lower(obj.kind()),
        obj.path().names().join("/"),
        obj.meta().resource_version
    )
}

/// One line of the `get` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The path below the scope that was asked for.
    pub name: String,
    /// `status.state` (`-` when absent).
    pub state: String,
    /// `metadata.generation`.
    pub generation: u64,
    /// Creation time, nanoseconds since the epoch.
    pub created: i128,
}

impl Row {
    /// The row of one wire document; `prefix` leading names are dropped
    /// from its path (they are the scope the user gave).
    pub fn of(doc: &Value, prefix: usize) -> Result<Row, String> {
        let state = match &doc["status"]["state"] {
            _ if doc["metadata"]["deletionTimestamp"].is_string() => "Terminating".to_string(),
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => "-".to_string(),
        };
        let obj = v1beta1::decode_document(doc.clone()).map_err(|e| e.to_string())?;
        let names = obj.path().names().to_vec();
        Ok(Row {
            name: names[prefix.min(names.len() - 1)..].join("/"),
            state,
            generation: obj.meta().generation,
            created: obj.meta().creation_timestamp,
        })
    }
}

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The table of `rows` (header first), columns aligned, ages as of `now`.
pub fn table(rows: &[Row], now: i128) -> String {
    let cells: Vec<[String; 4]> =
        std::iter::once(["NAME", "STATE", "GENERATION", "AGE"].map(str::to_string))
            .chain(rows.iter().map(|r| {
                [
                    r.name.clone(),
                    r.state.clone(),
                    r.generation.to_string(),
                    age(now - r.created),
                ]
            }))
            .collect();
    let mut widths = [0usize; 4];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(w - c.chars().count() + 3));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A kubectl-style age: `45s`, `5m30s`, `42m`, `3h15m`, `20h`, `2d4h`, `30d`.
pub fn age(nanos: i128) -> String {
    let s = (nanos.max(0) / 1_000_000_000) as u64;
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if d < 2 {
        format!("{h}h")
    } else if d < 8 {
        match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        }
    } else {
        format!("{d}d")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let s = |n: i128| n * 1_000_000_000;
        assert_eq!(age(s(0)), "0s");
        assert_eq!(age(-s(3)), "0s");
        assert_eq!(age(s(119)), "119s");
        assert_eq!(age(s(330)), "5m30s");
        assert_eq!(age(s(600)), "10m");
        assert_eq!(age(s(3 * 3600 + 15 * 60)), "3h15m");
        assert_eq!(age(s(20 * 3600)), "20h");
        assert_eq!(age(s(2 * 86_400 + 4 * 3600)), "2d4h");
        assert_eq!(age(s(30 * 86_400)), "30d");
    }

    #[test]
    fn tables_are_aligned() {
        let rows = [
            Row {
                name: "shop".into(),
                state: "Ready".into(),
                generation: 3,
                created: 0,
            },
            Row {
                name: "a-much-longer-name".into(),
                state: "Pending".into(),
                generation: 12,
                created: 10_000_000_000,
            },
        ];
        let t = table(&rows, 70_000_000_000);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME                 STATE     GENERATION   AGE",
                "shop                 Ready     3            70s",
                "a-much-longer-name   Pending   12           60s",
            ]
        );
    }

    #[test]
    fn paths_kinds_and_media_types() {
        assert_eq!(parse_path("demo/web/").unwrap(), ["demo", "web"]);
        assert!(parse_path("").unwrap().is_empty());
        assert!(parse_path("demo//web").is_err());
        assert_eq!(parse_kind("CELLS").unwrap(), Kind::Cell);
        assert!(parse_kind("pods").is_err());
        assert_eq!(path_shape(Kind::Stack), "REALM/SPACE/STACK");
        assert_eq!(manifest_type(b"  [ {}]"), "application/json");
        assert_eq!(manifest_type(b"\xEF\xBB\xBF{}"), "application/json");
        assert_eq!(manifest_type(b"kind: Realm"), "application/yaml");
        assert_eq!(manifest_type(b"---\nkind: Realm"), "application/yaml");
        assert_eq!(server_url("127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(server_url("https://hub"), "https://hub");
    }
}
