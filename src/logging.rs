//! The server's log output, written in batches by a thread of its own: a
//! server under load logs an audit record per write, and one `write` call
//! per record cost more than the record's formatting. Audit records
//! (`modelhub::audit`) are appended to a buffer that the thread writes out
//! [`PERIOD`] after the first record it holds came, or at once past
//! [`SOON`] bytes (an idle log costs no wake-ups). Any other record is
//! written out at once, after what was buffered before it, so the log
//! stays in order and a warning or a recovery step is in it when it
//! happens (it may wait for a batch being written). Past [`CAP`] bytes the
//! appending thread writes the buffer itself, so an output that cannot
//! keep up slows writers down rather than growing memory.
//!
//! [`Batched::flush`] writes out what is buffered: the server calls it when
//! it stops, and (best effort, [`Batched::try_flush`]) before a panic is
//! reported. A kill or an abort loses the audit records of the last
//! [`PERIOD`], more if the output had fallen behind; the `--audit-log`
//! file is written record by record.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long the first record of a batch waits before the batch is
/// written out.
pub const PERIOD: Duration = Duration::from_millis(10);
/// Past this many buffered bytes, the thread is woken at once.
pub const SOON: usize = 256 * 1024;
/// Past this many buffered bytes, the appending thread writes them out.
pub const CAP: usize = 4 * 1024 * 1024;

/// A batched output (cheap to clone: every clone appends to one buffer).
#[derive(Clone)]
pub struct Batched(Arc<Inner>);

struct Inner {
    buf: Mutex<Vec<u8>>,
    wake: Condvar,
    /// Held across taking and writing a batch, so batches keep their order.
    out: Mutex<Box<dyn Write + Send>>,
}

impl Batched {
    /// Batches records for `out`, written by a thread named `name`.
    pub fn new(name: &str, out: Box<dyn Write + Send>) -> std::io::Result<Batched> {
        let b = Batched(Arc::new(Inner {
            buf: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            out: Mutex::new(out),
        }));
        let inner = b.0.clone();
        std::thread::Builder::new()
            .name(name.into())
            // A batch goes out PERIOD after the thread saw its first record
            // (or earlier: past SOON, or woken spuriously).
            .spawn(move || {
                loop {
                    {
                        let mut buf = inner.buf.lock().unwrap_or_else(|e| e.into_inner());
                        while buf.is_empty() {
                            buf = inner.wake.wait(buf).unwrap_or_else(|e| e.into_inner());
                        }
                        if buf.len() < SOON {
                            drop(inner.wake.wait_timeout(buf, PERIOD));
                        }
                    }
                    Batched(inner.clone()).flush();
                }
            })?;
        Ok(b)
    }

    /// Whether a record of `meta` is written out at once: every record but
    /// the audit trail's (`modelhub::audit`, one per write).
    pub fn urgent(meta: &tracing::Metadata<'_>) -> bool {
        meta.target() != "modelhub::audit"
    }

    /// A writer of one record, batched or written out at once (`urgent`).
    pub fn record(&self, urgent: bool) -> Record<'_> {
        Record { to: self, urgent }
    }

    /// Writes out everything buffered so far.
    pub fn flush(&self) {
        let out = self.0.out.lock().unwrap_or_else(|e| e.into_inner());
        let buf = self.0.buf.lock().unwrap_or_else(|e| e.into_inner());
        Self::write_out(out, buf);
    }

    /// [`Batched::flush`] unless another thread is writing or appending (a
    /// panic report must not wait on a lock its own thread may hold).
    pub fn try_flush(&self) {
        if let Ok(out) = self.0.out.try_lock()
            && let Ok(buf) = self.0.buf.try_lock()
        {
            Self::write_out(out, buf);
        }
    }

    fn write_out(
        mut out: std::sync::MutexGuard<'_, Box<dyn Write + Send>>,
        mut buf: std::sync::MutexGuard<'_, Vec<u8>>,
    ) {
        let batch = std::mem::take(&mut *buf);
        drop(buf);
        if !batch.is_empty() {
            // Nowhere to report a failure to write the log.
            let _ = out.write_all(&batch);
            let _ = out.flush();
        }
    }
}

/// The server's stderr as the log's writer: through `batched` when given
/// (its audit records in batches), else plain.
pub fn stderr(batched: Option<&Batched>) -> tracing_subscriber::fmt::writer::BoxMakeWriter {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    match batched {
        Some(b) => BoxMakeWriter::new(b.clone()),
        None => BoxMakeWriter::new(std::io::stderr),
    }
}

/// One record's writer: appends it, and for an urgent record writes the
/// buffer out once it is appended.
pub struct Record<'a> {
    to: &'a Batched,
    urgent: bool,
}

impl Write for Record<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let len = {
            let mut buf = self.to.0.buf.lock().unwrap_or_else(|e| e.into_inner());
            buf.extend_from_slice(bytes);
            buf.len()
        };
        let before = len - bytes.len();
        if self.urgent || len >= CAP {
            self.to.flush();
        } else if before == 0 || (len >= SOON && before < SOON) {
            // The first record starts the period; a large batch goes now.
            self.to.0.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Record<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        self.record(true)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        self.record(Batched::urgent(meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read back, counting the calls that wrote it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>, Arc<std::sync::atomic::AtomicUsize>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn records_come_out_whole_in_order_by_the_period_or_a_flush() {
        let sink = Sink::default();
        let b = Batched::new("test-log", Box::new(sink.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        b.record(false)
                            .write_all(format!("{t} {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Written by the thread within a few periods, without a flush.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
            < 4000
        {
            assert!(std::time::Instant::now() < deadline, "records not written");
            std::thread::sleep(PERIOD);
        }
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s records out of order");
            next[t] += 1;
        }
        assert_eq!(next, [1000; 4]);

        // A flush writes at once, and so does an urgent record.
        b.record(false).write_all(b"waits\n").unwrap();
        b.flush();
        assert!(sink.0.lock().unwrap().ends_with(b"waits\n"));
        b.record(false).write_all(b"waits too\n").unwrap();
        b.record(true).write_all(b"urgent\n").unwrap();
        assert!(sink.0.lock().unwrap().ends_with(b"waits too\nurgent\n"));
    }

    /// The server's wiring (a fmt layer over [`stderr`]) hands audit
    /// records to the batch and writes other records at once: 20 audit
    /// records and a warning after them reach the output whole and in
    /// order, in fewer writes than records (one write per record if the
    /// audit records were written at once).
    #[test]
    fn the_servers_layer_batches_audit_records_only() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let sink = Sink::default();
        let b = Batched::new("test-log", Box::new(sink.clone())).unwrap();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(stderr(Some(&b))),
        );
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..20 {
                tracing::info!(target: "modelhub::audit", i, "write");
            }
            tracing::warn!("after them");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 21, "{text}");
        for (n, line) in lines[..20].iter().enumerate() {
            assert!(line.contains(&format!("i={n}")), "{text}");
        }
        assert!(lines[20].contains("after them"), "{text}");
        let writes = sink.1.load(std::sync::atomic::Ordering::Relaxed);
        assert!(writes < 21, "{writes} writes for 21 records");
    }

    #[test]
    fn past_the_cap_the_writer_writes_itself() {
        let sink = Sink::default();
        let b = Batched::new("test-log", Box::new(sink.clone())).unwrap();
        let big = vec![b'x'; CAP];
        b.record(false).write_all(&big).unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), CAP);
    }
}
