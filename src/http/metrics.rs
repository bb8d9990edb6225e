//! `/metrics`: counters, gauges and latency histograms in the Prometheus
//! text format.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::histogram::{self, Histogram};
use crate::store::{Backend, RefusedCause};

/// Response counters by status class, and request durations by route
/// and status class.
#[derive(Debug)]
pub struct Metrics {
    by_class: [AtomicU64; 6],
    /// Per route of [`super::routes::table`] (and one last for requests
    /// outside it), a histogram per status class 1xx..5xx.
    durations: Vec<RouteTimes>,
    /// Route template to its methods' indexes in `durations`.
    index: HashMap<String, Vec<(Method, usize)>>,
}

#[derive(Debug)]
struct RouteTimes {
    method: String,
    route: String,
    by_class: [Histogram; 5],
}

impl Default for Metrics {
    fn default() -> Self {
        let mut durations = Vec::new();
        let mut index: HashMap<String, Vec<(Method, usize)>> = HashMap::new();
        for route in super::routes::table() {
            index
                .entry(route.path.clone())
                .or_default()
                .push((route.method.clone(), durations.len()));
            durations.push(RouteTimes {
                method: route.method.to_string(),
                route: route.path,
                by_class: Default::default(),
            });
        }
        durations.push(RouteTimes {
            method: "any".into(),
            route: "other".into(),
            by_class: Default::default(),
        });
        Metrics {
            by_class: Default::default(),
            durations,
            index,
        }
    }
}

impl Metrics {
    /// Where a request on `route` (the matched template, if any) with
    /// `method` is timed.
    pub fn route_slot(&self, method: &Method, route: Option<&str>) -> usize {
        // axum answers HEAD with the GET route.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        route
            .and_then(|r| self.index.get(r))
            .and_then(|methods| methods.iter().find(|(m, _)| m == method))
            .map_or(self.durations.len() - 1, |(_, i)| *i)
    }
}

/// Counts a response, and times it on its route (`slot` from
/// [`Metrics::route_slot`]): `took` is until the response's head, so a
/// watch stream counts its start only.
pub fn count(s: &AppState, resp: &Response, slot: usize, took: Duration) {
    let class = (resp.status().as_u16() / 100).min(5) as usize;
    s.metrics.by_class[class].fetch_add(1, Ordering::Relaxed);
    if let Some(times) = s.metrics.durations.get(slot) {
        times.by_class[class.clamp(1, 5) - 1].observe(took);
    }
}

/// Escapes a label value (`\`, `"` and newlines).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The request-duration histograms, only the series that have counts.
fn render_durations(m: &Metrics, out: &mut String) {
    histogram::header(
        out,
        "modelhub_http_request_duration_seconds",
        "Time from a request's arrival to its response's head, by method, route template \
         and status class (a watch stream counts until its head is sent).",
    );
    for times in &m.durations {
        for (i, h) in times.by_class.iter().enumerate() {
            let snap = h.snapshot();
            if snap.count() == 0 {
                continue;
            }
            let labels = format!(
                "method=\"{}\",route=\"{}\",class=\"{}xx\"",
                label(&times.method),
                label(&times.route),
                i + 1
            );
            snap.render(out, "modelhub_http_request_duration_seconds", &labels);
        }
    }
}

/// Renders the counters and the store revision.
pub async fn render(State(s): State<AppState>) -> Response {
    let mut out = String::from(
        "# HELP modelhub_http_responses_total HTTP responses by status class.\n\
         # TYPE modelhub_http_responses_total counter\n",
    );
    for (i, c) in s.metrics.by_class.iter().enumerate().skip(1) {
        out.push_str(&format!(
            "modelhub_http_responses_total{{class=\"{i}xx\"}} {}\n",
            c.load(Ordering::Relaxed)
        ));
    }
    render_durations(&s.metrics, &mut out);
    let stats = s.store.stats();
    let (requests, commits) = (stats.requests, stats.commits);
    out.push_str(&format!(
        "# HELP modelhub_write_requests_total Write requests handled by the writer.\n\
         # TYPE modelhub_write_requests_total counter\nmodelhub_write_requests_total {requests}\n\
         # HELP modelhub_commits_total Durable transactions committed (group commit: fewer than requests).\n\
         # TYPE modelhub_commits_total counter\nmodelhub_commits_total {commits}\n\
         # HELP modelhub_checkpoints_total Checkpoints of the write-ahead log into the database.\n\
         # TYPE modelhub_checkpoints_total counter\nmodelhub_checkpoints_total {}\n\
         # HELP modelhub_writer_reads_total Stored versions read by read-modify-writes, by source: kept decoded by the writer from its last write, or decoded from the record (redb).\n\
         # TYPE modelhub_writer_reads_total counter\n\
         modelhub_writer_reads_total{{source=\"kept\"}} {}\n\
         modelhub_writer_reads_total{{source=\"record\"}} {}\n\
         # HELP modelhub_watchers Open watch streams.\n# TYPE modelhub_watchers gauge\nmodelhub_watchers {}\n\
         # HELP modelhub_list_cache_hits_total Unpaged lists answered from the list cache.\n\
         # TYPE modelhub_list_cache_hits_total counter\nmodelhub_list_cache_hits_total {}\n\
         # HELP modelhub_list_cache_bytes Bytes of rendered lists cached.\n\
         # TYPE modelhub_list_cache_bytes gauge\nmodelhub_list_cache_bytes {}\n",
        stats.checkpoints,
        stats.decoded_kept,
        stats.decoded_records,
        s.hub.watchers(),
        s.lists.hits(),
        s.lists.bytes(),
    ));
    out.push_str(&format!(
        "# HELP modelhub_requests_in_flight Requests being handled (watch streams and probes aside).\n\
         # TYPE modelhub_requests_in_flight gauge\nmodelhub_requests_in_flight {}\n\
         # HELP modelhub_limit_refusals_total Requests refused with 429 by a cap, by cap.\n\
         # TYPE modelhub_limit_refusals_total counter\n",
        s.limits.requests_held("").0,
    ));
    for cap in super::limits::Cap::ALL {
        out.push_str(&format!(
            "modelhub_limit_refusals_total{{cap=\"{}\"}} {}\n",
            cap.name(),
            s.limits.refused(cap)
        ));
    }
    let refused = s.store.writes_refused().map(|r| r.cause);
    out.push_str(
        "# HELP modelhub_writes_refused Whether writes are refused, by cause (1: refused).\n\
         # TYPE modelhub_writes_refused gauge\n",
    );
    for cause in RefusedCause::ALL {
        out.push_str(&format!(
            "modelhub_writes_refused{{cause=\"{}\"}} {}\n",
            cause.name(),
            u8::from(refused == Some(cause))
        ));
    }
    out.push_str(&format!(
        "# HELP modelhub_storage_errors_total Storage errors, by kind.\n\
         # TYPE modelhub_storage_errors_total counter\n\
         modelhub_storage_errors_total{{kind=\"no_space\"}} {}\n\
         modelhub_storage_errors_total{{kind=\"other\"}} {}\n\
         # HELP modelhub_storage_recoveries_total Recoveries from a storage failure (store reopened from disk).\n\
         # TYPE modelhub_storage_recoveries_total counter\nmodelhub_storage_recoveries_total {}\n\
         # HELP modelhub_database_bytes Size of the database file.\n\
         # TYPE modelhub_database_bytes gauge\nmodelhub_database_bytes {}\n\
         # HELP modelhub_log_bytes Size of the write-ahead log file.\n\
         # TYPE modelhub_log_bytes gauge\nmodelhub_log_bytes {}\n\
         # HELP modelhub_free_bytes Free space on the data's filesystem.\n\
         # TYPE modelhub_free_bytes gauge\nmodelhub_free_bytes {}\n\
         # HELP modelhub_stored_bytes Bytes of stored records (what the quota counts), by part.\n\
         # TYPE modelhub_stored_bytes gauge\n\
         modelhub_stored_bytes{{part=\"objects\"}} {}\n\
         modelhub_stored_bytes{{part=\"history\"}} {}\n",
        stats.storage_errors_full,
        stats.storage_errors_other,
        stats.recoveries,
        stats.database_bytes,
        stats.log_bytes,
        stats.free_bytes,
        stats.object_bytes,
        stats.history_bytes,
    ));
    for (name, help, h) in [
        (
            "modelhub_write_commit_duration_seconds",
            "Write batches' time from their transaction's start to their commit, log sync \
             included (on etcd: write transactions' round trips, retries included).",
            stats.commit_time,
        ),
        (
            "modelhub_log_sync_duration_seconds",
            "Time to append a write batch to the write-ahead log and sync it.",
            stats.log_sync_time,
        ),
        (
            "modelhub_checkpoint_duration_seconds",
            "Checkpoints of the write-ahead log into the database (writes wait for them).",
            stats.checkpoint_time,
        ),
    ] {
        if let Some(h) = h {
            histogram::header(&mut out, name, help);
            h.render(&mut out, name, "");
        }
    }
    let watch = s.hub.stats();
    let _ = write!(
        out,
        "# HELP modelhub_write_queue_depth Write requests queued for the writer.\n\
         # TYPE modelhub_write_queue_depth gauge\nmodelhub_write_queue_depth {}\n\
         # HELP modelhub_log_pending_bytes Bytes of write-ahead log records since the last \
         checkpoint (what a restart after a crash replays).\n\
         # TYPE modelhub_log_pending_bytes gauge\nmodelhub_log_pending_bytes {}\n\
         # HELP modelhub_watch_events_sent_total Events (not bookmarks) queued to watch streams.\n\
         # TYPE modelhub_watch_events_sent_total counter\nmodelhub_watch_events_sent_total {}\n\
         # HELP modelhub_watch_catchups_total Times a watch stream read the event log: it \
         resumed from a past revision or fell behind the live buffer.\n\
         # TYPE modelhub_watch_catchups_total counter\nmodelhub_watch_catchups_total {}\n\
         # HELP modelhub_watch_gone_total Watches refused or ended with 410 Gone (the revision \
         asked for was compacted, or is not reached yet).\n\
         # TYPE modelhub_watch_gone_total counter\nmodelhub_watch_gone_total {}\n",
        stats.write_queue, stats.log_pending_bytes, watch.events_sent, watch.catch_ups, watch.gone,
    );
    if s.store.is_etcd() {
        out.push_str(&format!(
            "# HELP modelhub_etcd_db_size_bytes Size of the etcd member's database file.\n\
             # TYPE modelhub_etcd_db_size_bytes gauge\nmodelhub_etcd_db_size_bytes {}\n\
             # HELP modelhub_etcd_db_in_use_bytes Bytes of the etcd member's database in use \
             (the rest is freed by a defragmentation).\n\
             # TYPE modelhub_etcd_db_in_use_bytes gauge\nmodelhub_etcd_db_in_use_bytes {}\n\
             # HELP modelhub_etcd_feed_up Whether this replica follows the cluster's changes.\n\
             # TYPE modelhub_etcd_feed_up gauge\nmodelhub_etcd_feed_up {}\n\
             # HELP modelhub_etcd_cache_reads_total GETs, first pages of lists and snapshots, by \
             where they were served from: this replica's copy of the objects, or etcd (the copy \
             was loading or behind; none counted without a copy).\n\
             # TYPE modelhub_etcd_cache_reads_total counter\n\
             modelhub_etcd_cache_reads_total{{source=\"cache\"}} {}\n\
             modelhub_etcd_cache_reads_total{{source=\"etcd\"}} {}\n\
             # HELP modelhub_etcd_cache_objects Objects in this replica's copy.\n\
             # TYPE modelhub_etcd_cache_objects gauge\nmodelhub_etcd_cache_objects {}\n",
            stats.database_bytes,
            stats.database_in_use_bytes,
            u8::from(s.store.feed_error().is_none()),
            stats.cache_reads,
            stats.cache_misses,
            stats.cached_objects,
        ));
    }
    if let Ok(rev) = s.store.revision().await {
        out.push_str(&format!(
            "# HELP modelhub_revision The store-wide revision.\n# TYPE modelhub_revision gauge\nmodelhub_revision {rev}\n"
        ));
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
