//! Shared pieces: a spawned server, documents, percentiles.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A modelhub started by the bench on a temporary database.
pub struct Spawned {
    /// Its base URL.
    pub base: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Spawned {
    /// Starts `bin serve` on a free port and a fresh database.
    pub async fn start(bin: &str) -> Spawned {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("bench.redb"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn modelhub");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = lines.next_line().await.expect("read").expect("a line");
        let base = line
            .strip_prefix("modelhub listening on ")
            .expect("listening line")
            .to_string();
        Spawned {
            base,
            _child: child,
            _dir: dir,
        }
    }
}

/// A realistic cell: three containers, ~1.5 KB of JSON.
pub fn cell(name: &str) -> Value {
    let container = |id: &str, root: bool| {
        json!({
            "id": id, "root": root,
            "image": "registry.example.com/platform/app-server:1.27.3",
            "command": "/usr/local/bin/app-server",
            "args": ["--listen", "0.0.0.0:8080", "--log-format", "json", "--config", "/etc/app/config.yaml"],
            "env": ["APP_MODE=production", "APP_REGION=eu-west-1", "APP_FEATURES=search,checkout,recommendations"],
            "ports": ["8080:8080"],
            "volumes": [{"source": "/var/lib/kukeon/app/config", "target": "/etc/app", "readOnly": true}],
            "networks": ["frontend"],
            "restartPolicy": "always"
        })
    };
    json!({
        "metadata": {"name": name, "labels": {"app": "shop", "tier": "front", "team": "platform"}},
        "spec": {"containers": [container("root", true), container("web", false), container("sidecar", false)]}
    })
}

/// Creates realm/space/stack `bench/s/t` (ignores "already exists").
pub async fn hierarchy(http: &reqwest::Client, base: &str) {
    for (url, name) in [
        ("/api/v1beta1/realms".to_string(), "bench"),
        ("/api/v1beta1/realms/bench/spaces".to_string(), "s"),
        ("/api/v1beta1/realms/bench/spaces/s/stacks".to_string(), "t"),
    ] {
        let resp = http
            .post(format!("{base}{url}"))
            .json(&json!({"metadata": {"name": name}}))
            .send()
            .await
            .expect("create parent");
        assert!(
            resp.status().is_success() || resp.status() == 409,
            "{}",
            resp.status()
        );
    }
}

/// The URL of the bench stack's cells.
pub fn cells_url(base: &str) -> String {
    format!("{base}/api/v1beta1/realms/bench/spaces/s/stacks/t/cells")
}

/// The `p`-th percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i]
}

/// Reads `"resourceVersion":"N"` of an event line without parsing it all.
pub fn resource_version(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"resourceVersion\":\"";
    let start = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let end = line[start..].iter().position(|b| *b == b'"')? + start;
    std::str::from_utf8(&line[start..end]).ok()?.parse().ok()
}
