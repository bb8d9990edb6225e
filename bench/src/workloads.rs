//! The workloads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Mutex;

use crate::util::{self, percentile};

/// Watch fan-out: `watchers` streams, `writes` cell creates from `writers`
/// clients; reports delivered events/s and write-ack -> receipt delay.
pub async fn watch(base: &str, watchers: usize, writes: usize, writers: usize) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(writers + watchers)
        .build()
        .expect("client");
    util::hierarchy(&http, base).await;
    let list: serde_json::Value = http
        .get(format!("{base}/api/v1beta1/realms?limit=1"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let from: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("revision");
    // Each watcher records when it saw each revision.
    let mut streams = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let resp = http
            .get(format!(
                "{base}/api/v1beta1/watch?kind=Cell&resourceVersion={from}"
            ))
            .send()
            .await
            .expect("watch");
        assert_eq!(resp.status(), 200);
        streams.push(resp);
    }
    eprintln!("{watchers} watchers connected from revision {from}");
    let mut tasks = Vec::with_capacity(watchers);
    for resp in streams {
        tasks.push(tokio::spawn(async move {
            let mut seen: Vec<Option<Instant>> = vec![None; writes];
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            let mut got = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while got < writes {
                let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
                    Ok(Some(Ok(c))) => c,
                    _ => break,
                };
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let now = Instant::now();
                    if let Some(rv) = util::resource_version(&buf[..pos])
                        && rv > from
                        && !buf.starts_with(b"{\"type\":\"BOOKMARK\"")
                    {
                        let i = (rv - from - 1) as usize;
                        if i < writes && seen[i].is_none() {
                            seen[i] = Some(now);
                            got += 1;
                        }
                    }
                    buf.drain(..=pos);
                }
            }
            seen
        }));
    }
    let acks: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::with_capacity(writes)));
    let started = Instant::now();
    let mut writer_tasks = Vec::new();
    for w in 0..writers {
        let (http, url, acks) = (http.clone(), util::cells_url(base), acks.clone());
        writer_tasks.push(tokio::spawn(async move {
            for i in (w..writes).step_by(writers) {
                let resp = http
                    .post(&url)
                    .json(&util::cell(&format!("w-{from}-{i}")))
                    .send()
                    .await
                    .expect("create");
                let ack = Instant::now();
                assert_eq!(resp.status(), 201);
                let v: serde_json::Value = resp.json().await.expect("json");
                let rv = v["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("rv");
                acks.lock().await.push((rv, ack));
            }
        }));
    }
    for t in writer_tasks {
        t.await.expect("writer");
    }
    let write_time = started.elapsed();
    let mut delays = Vec::with_capacity(watchers * writes);
    let mut missing = 0usize;
    let mut last_receipt = started;
    let acks = acks.lock().await.clone();
    let mut ack_of = vec![None; writes];
    for (rv, at) in acks {
        if rv > from && ((rv - from - 1) as usize) < writes {
            ack_of[(rv - from - 1) as usize] = Some(at);
        }
    }
    for t in tasks {
        let seen = t.await.expect("watcher");
        for (i, s) in seen.iter().enumerate() {
            match (s, ack_of[i]) {
                (Some(r), Some(a)) => {
                    delays.push(r.saturating_duration_since(a));
                    last_receipt = last_receipt.max(*r);
                }
                _ => missing += 1,
            }
        }
    }
    delays.sort();
    let delivered = delays.len();
    let span = last_receipt
        .duration_since(started)
        .max(Duration::from_millis(1));
    println!(
        "workload: watch fan-out, {watchers} watchers x {writes} cell creates ({writers} writers)"
    );
    println!(
        "writes: {:.0}/s ({writes} in {write_time:.2?})",
        writes as f64 / write_time.as_secs_f64()
    );
    println!(
        "delivered: {delivered} events in {span:.2?} = {:.0} events/s",
        delivered as f64 / span.as_secs_f64()
    );
    println!(
        "write-ack -> receipt: p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        percentile(&delays, 50.0),
        percentile(&delays, 99.0),
        delays.last().copied().unwrap_or_default()
    );
    println!("missing: {missing}");
}
