//! The write-ahead log: what makes a write durable before it is
//! acknowledged, with one sequential write and one `fdatasync` of a
//! zero-filled file (etcd's WAL idea), instead of a durable redb commit
//! per batch, which writes and syncs a dozen pages scattered over the
//! database file.
//!
//! The writer appends each batch's changes here and syncs, then commits the
//! batch to redb without durability (readers see it at once). A checkpoint
//! (a durable redb commit) persists everything before it and the log starts
//! again from its beginning: one checkpoint interval
//! (`StoreOptions::checkpoint_interval`, 1 s by default) after the first
//! change since the last one, or once the log holds half its capacity, or
//! when a record does not fit. On open, the writer replays the records after the database's
//! revision ([`Records::for_each_record`]) in one durable transaction, and the
//! log is cleared ([`Wal::clear`]).
//!
//! File: up to [`CAPACITY`] bytes, zero-filled ahead of the records in
//! steps of 4 MiB (so that appends almost never change its size and
//! `fdatasync` flushes data only). Record:
//! `len: u32 LE | crc32 of payload: u32 LE | payload`; payload:
//! `first revision: u64 LE | count: u32 LE | entries`; entry:
//! `change: u8 | kind: u8 | key len: u32 LE | key | record len: u32 LE |
//! record` (entry `i` is revision `first + i`; the record is the object's
//! stored record, for a deletion its last state). Replay stops at the first
//! record that is torn (bad length or checksum) or at the empty header
//! written after the last record; records at or below the database's
//! revision (left from before a checkpoint) are skipped, and a record that
//! would leave a gap in the revisions (the database file was replaced)
//! stops the start with an error rather than lose writes silently.
//!
//! After a failure to write the log or commit to redb, the writer refuses
//! every further write (the failed requests' outcome is unknown: they may
//! be replayed) until a restart recovers from the log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, Durability};

use crate::model::Kind;
use crate::store::change::ChangeType;
use crate::store::codec;
use crate::store::error::{EngineError, StoreError};

/// Largest size of the log file.
pub const CAPACITY: u64 = 64 * 1024 * 1024;
/// The file is zero-filled this much at a time, as the log first grows.
const FILL_STEP: u64 = 4 * 1024 * 1024;
/// Checkpoint once the log holds this much, whatever the time.
const CHECKPOINT_BYTES: u64 = CAPACITY / 2;
const HEADER: usize = 8;

/// The log path beside the database file: `<db>.wal`.
pub fn path_for(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

/// One transaction's changes, in revision order, built in place as a log
/// record (the header and the payload's first fields are filled in by
/// [`Journal::seal`]), so that appending it copies nothing.
#[derive(Debug, Default, Clone)]
pub struct Journal {
    first: u64,
    count: u32,
    buf: Vec<u8>,
}

/// Header plus the payload's first revision and count.
const PREFIX: usize = HEADER + 12;

impl Journal {
    /// Records the change at `revision` (the next one after the last).
    pub fn push(
        &mut self,
        revision: u64,
        change: ChangeType,
        kind: Kind,
        key: &[u8],
        record: &[u8],
    ) {
        if self.count == 0 {
            self.first = revision;
            self.buf.clear();
            self.buf.resize(PREFIX, 0);
        }
        debug_assert_eq!(revision, self.first + u64::from(self.count));
        self.count += 1;
        self.buf.push(codec::change_byte(change));
        self.buf.push(kind as u8);
        for part in [key, record] {
            self.buf
                .extend_from_slice(&(part.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(part);
        }
    }

    /// The revision of the last change recorded, if any.
    pub fn last(&self) -> Option<u64> {
        (self.count > 0).then(|| self.first + u64::from(self.count) - 1)
    }

    /// Fills in the header; answers the record's length.
    fn seal(&mut self) -> usize {
        if self.buf.len() < PREFIX {
            self.buf.resize(PREFIX, 0);
        }
        let len = (self.buf.len() - HEADER) as u32;
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[HEADER..HEADER + 8].copy_from_slice(&self.first.to_le_bytes());
        self.buf[HEADER + 8..PREFIX].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[HEADER..]);
        self.buf[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        self.buf.len()
    }

    /// The whole record, as [`Wal::append`] writes it (without the empty
    /// header after it).
    #[cfg(test)]
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut sealed = self.clone();
        sealed.seal();
        sealed.buf
    }
}

/// The open log, owned by the writer thread.
pub struct Wal {
    file: File,
    /// Bytes of the file written (zeros or records) and synced.
    filled: u64,
    offset: u64,
    last_checkpoint: Instant,
    interval: Duration,
    failed: Option<EngineError>,
}

/// What [`Wal::append`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// The record is durable in the log.
    Logged,
    /// It does not fit: the caller must commit durably and [`Wal::reset`].
    Full,
}

impl Wal {
    /// Opens (creating and zero-filling if needed) the log at `path`. What
    /// it holds from a run that did not stop cleanly is read with
    /// [`Records::for_each_record`], then dropped with [`Wal::clear`].
    /// Checkpoints are due every `interval` while writes arrive.
    pub fn open(path: &Path, interval: Duration) -> Result<Wal, StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut filled = file.metadata()?.len();
        if filled < FILL_STEP {
            filled = fill(&mut file, filled, FILL_STEP)?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            File::open(dir)?.sync_all()?;
        }
        Ok(Wal {
            file,
            filled,
            offset: 0,
            last_checkpoint: Instant::now(),
            interval,
            failed: None,
        })
    }

    /// Whether the log may hold records: a clean stop leaves an empty
    /// first header.
    pub fn holds_records(&self) -> bool {
        let mut first = [0u8; HEADER];
        FileExt::read_exact_at(&self.file, &mut first, 0).is_ok() && first != [0; HEADER]
    }

    /// Empties the log, durably, once what it held is in the database (so
    /// that nothing is replayed again, even into another database file put
    /// in this one's place).
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.file.write_all_at(&[0; HEADER], 0)?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Appends `journal` and syncs it to disk, followed by an empty
    /// header that ends replay there (what lies beyond is from before the
    /// last checkpoint). The journal is used up.
    pub fn append(&mut self, journal: &mut Journal) -> Result<Appended, StoreError> {
        self.check()?;
        let len = journal.seal() as u64;
        if self.offset + len > CAPACITY {
            return Ok(Appended::Full);
        }
        if self.offset + len + HEADER as u64 <= CAPACITY {
            journal.buf.extend_from_slice(&[0; HEADER]);
        }
        let record = &journal.buf;
        let end = self.offset + record.len() as u64;
        if end > self.filled {
            let target = end.max(self.filled + FILL_STEP).min(CAPACITY);
            match fill(&mut self.file, self.filled, target) {
                Ok(filled) => self.filled = filled,
                Err(e) => {
                    let e = EngineError::new("write-ahead log could not grow", e);
                    self.fail(e.clone());
                    return Err(e.into());
                }
            }
        }
        if self.offset == 0 {
            // The interval counts from the first change after a checkpoint.
            self.last_checkpoint = Instant::now();
        }
        let written = self
            .file
            .write_all_at(record, self.offset)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // The record may or may not be on disk: its requests fail with
            // an unknown outcome, and nothing more is written, so a restart
            // replays (or not) exactly this record last.
            let e = EngineError::new("write-ahead log write failed", e);
            self.fail(e.clone());
            return Err(e.into());
        }
        self.offset += len;
        Ok(Appended::Logged)
    }

    /// Stops all further writing after a storage failure (`why`), until a
    /// restart recovers from the log: what was logged is replayed, nothing
    /// after it exists.
    pub fn fail(&mut self, why: EngineError) {
        tracing::error!(error = %why, "storage failed; refusing writes until restarted");
        self.failed.get_or_insert(why);
    }

    /// An error if storage failed earlier.
    pub fn check(&self) -> Result<(), StoreError> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(StoreError::Engine(why.reworded(|what| {
                format!("storage failed earlier ({what}); restart the server to recover")
            }))),
        }
    }

    /// Whether a checkpoint is due.
    pub fn checkpoint_due(&self) -> bool {
        self.failed.is_none()
            && self.offset > 0
            && (self.offset >= CHECKPOINT_BYTES || self.last_checkpoint.elapsed() >= self.interval)
    }

    /// How long until a checkpoint is due, if anything is logged (never
    /// after a failure).
    pub fn until_checkpoint(&self) -> Option<Duration> {
        if self.failed.is_some() {
            return None;
        }
        (self.offset > 0).then(|| self.interval.saturating_sub(self.last_checkpoint.elapsed()))
    }

    /// Starts the log over, after a durable commit made it redundant. The
    /// first header is zeroed (not synced: until it reaches the disk the
    /// records there are merely stale), so that a log whose database was
    /// deleted on purpose after a clean stop holds nothing to replay.
    pub fn reset(&mut self) {
        if self.offset > 0
            && let Err(e) = self.file.write_all_at(&[0; HEADER], 0)
        {
            tracing::warn!(error = %e, "could not clear the write-ahead log's first header");
        }
        self.offset = 0;
        self.last_checkpoint = Instant::now();
    }
}

/// Makes everything committed so far durable (an empty durable commit
/// persists the non-durable ones before it).
pub fn checkpoint(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}

/// Zero-fills the file from `from` to `to` and syncs it, size included;
/// answers `to`.
fn fill(file: &mut File, from: u64, to: u64) -> Result<u64, StoreError> {
    let zeros = vec![0u8; 1024 * 1024];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.flush()?;
    file.sync_all()?;
    Ok(to)
}

/// One decoded change of a record (entry `i` of a record is revision
/// `first + i`).
pub struct Entry<'a> {
    /// What happened.
    pub change: ChangeType,
    /// The object's kind.
    pub kind: Kind,
    /// The object's key.
    pub key: &'a [u8],
    /// The object's stored record (for a deletion, its last state).
    pub record: &'a [u8],
}

/// Told about each record in turn: its first revision and its entries.
pub type OnRecord<'f> = dyn FnMut(u64, Vec<Entry<'_>>) -> Result<(), StoreError> + 'f;

/// Something that holds log records: the open log, or its bytes.
pub trait Records {
    /// Calls `f` with each valid record from the start (its first revision
    /// and its entries), until the first empty, torn or unparsable one.
    fn for_each_record(&self, f: &mut OnRecord<'_>) -> Result<(), StoreError>;
}

impl Records for Wal {
    fn for_each_record(&self, f: &mut OnRecord<'_>) -> Result<(), StoreError> {
        for_each_record(&self.file, f)
    }
}

impl Records for [u8] {
    fn for_each_record(&self, f: &mut OnRecord<'_>) -> Result<(), StoreError> {
        for_each_record(self, f)
    }
}

/// Where records are read from: the log file, or bytes.
trait Source {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Source for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl Source for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let part = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(part);
        Ok(())
    }
}

/// Calls `f` with each valid record from the start of the log, one at a
/// time, until the first empty, torn or unparsable one (or the end of the
/// file). Other read errors are errors.
fn for_each_record(src: &(impl Source + ?Sized), f: &mut OnRecord<'_>) -> Result<(), StoreError> {
    let stop = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Ok(()),
        _ => Err(StoreError::from(e)),
    };
    let mut at = 0u64;
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; HEADER];
        if let Err(e) = src.read_exact_at(&mut header, at) {
            return stop(e);
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len < 12 || at + HEADER as u64 + u64::from(len) > CAPACITY {
            return Ok(());
        }
        payload.resize(len as usize, 0);
        if let Err(e) = src.read_exact_at(&mut payload, at + HEADER as u64) {
            return stop(e);
        }
        if crc32fast::hash(&payload) != crc {
            return Ok(());
        }
        let Some((first, entries)) = parse(&payload) else {
            return Ok(());
        };
        f(first, entries)?;
        at += HEADER as u64 + u64::from(len);
    }
}

fn parse(payload: &[u8]) -> Option<(u64, Vec<Entry<'_>>)> {
    let first = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?);
    let mut rest = &payload[12..];
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let tag = take(2)?;
        let change = codec::change_from_byte(tag[0])?;
        let kind = *Kind::ALL.get(usize::from(tag[1]))?;
        let key_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let key = take(key_len)?;
        let rec_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let record = take(rec_len)?;
        entries.push(Entry {
            change,
            kind,
            key,
            record,
        });
    }
    rest.is_empty().then_some((first, entries))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A journal of `n` realm creations from revision `first`.
    pub(in crate::store::redb) fn journal(first: u64, n: u64) -> Journal {
        let mut j = Journal::default();
        for r in first..first + n {
            j.push(
                r,
                ChangeType::Added,
                Kind::Realm,
                format!("k{r}").as_bytes(),
                b"\x01rec",
            );
        }
        j
    }

    /// The log in `dir`, opened with a long checkpoint interval.
    fn open_log(dir: &tempfile::TempDir) -> (PathBuf, Wal) {
        let path = dir.path().join("t.redb.wal");
        let wal = Wal::open(&path, Duration::from_secs(60)).unwrap();
        (path, wal)
    }

    /// A record's entry, owned.
    struct Owned {
        key: Vec<u8>,
        record: Vec<u8>,
    }

    /// The valid records at the start of `bytes`.
    fn records(bytes: &[u8]) -> Vec<(u64, Vec<Owned>)> {
        let mut out = Vec::new();
        for_each_record(bytes, &mut |first, entries| {
            let entries = entries
                .into_iter()
                .map(|e| Owned {
                    key: e.key.to_vec(),
                    record: e.record.to_vec(),
                })
                .collect();
            out.push((first, entries));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn appends_end_with_an_empty_header_so_older_records_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut wal) = open_log(&dir);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), FILL_STEP);
        assert_eq!(wal.append(&mut journal(1, 3)).unwrap(), Appended::Logged);
        assert_eq!(wal.append(&mut journal(4, 3)).unwrap(), Appended::Logged);
        assert_eq!(records(&std::fs::read(&path).unwrap()).len(), 2);
        wal.reset();
        assert!(records(&std::fs::read(&path).unwrap()).is_empty());
        assert_eq!(wal.append(&mut journal(7, 1)).unwrap(), Appended::Logged);
        let bytes = std::fs::read(&path).unwrap();
        let after = records(&bytes);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].0, 7);
    }

    #[test]
    fn the_file_grows_in_zero_filled_steps_up_to_its_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut wal) = open_log(&dir);
        let big = vec![7u8; 5 * 1024 * 1024];
        let mut j = Journal::default();
        j.push(1, ChangeType::Added, Kind::Realm, b"k", &big);
        assert_eq!(wal.append(&mut j).unwrap(), Appended::Logged);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * FILL_STEP);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(records(&bytes)[0].1[0].record, big.as_slice());
        // A record that can never fit asks for a durable commit instead.
        let mut huge = Journal::default();
        huge.push(
            2,
            ChangeType::Added,
            Kind::Realm,
            b"k",
            &vec![0u8; CAPACITY as usize],
        );
        assert_eq!(wal.append(&mut huge).unwrap(), Appended::Full);
    }

    #[test]
    fn a_failed_wal_refuses_writes_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(&dir.path().join("t.redb.wal"), Duration::ZERO).unwrap();
        assert_eq!(wal.append(&mut journal(1, 1)).unwrap(), Appended::Logged);
        assert!(wal.checkpoint_due());
        wal.fail(EngineError::msg("disk on fire"));
        assert!(!wal.checkpoint_due());
        assert_eq!(wal.until_checkpoint(), None);
        let err = wal.append(&mut journal(2, 1)).unwrap_err().to_string();
        assert!(
            err.contains("disk on fire") && err.contains("restart"),
            "{err}"
        );
    }

    #[test]
    fn records_round_trip_and_stop_at_a_torn_tail() {
        let mut bytes = journal(1, 3).encode();
        bytes.extend(journal(4, 2).encode());
        let whole = bytes.len();
        let parsed = records(&bytes);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0, 1);
        assert_eq!(parsed[0].1.len(), 3);
        assert_eq!(parsed[1].1[1].key, b"k5");
        assert_eq!(parsed[1].1[1].record, b"\x01rec");
        // A torn last record (cut short, or a flipped byte) is dropped.
        assert_eq!(records(&bytes[..whole - 1]).len(), 1);
        let mut flipped = bytes.clone();
        flipped[whole - 1] ^= 1;
        assert_eq!(records(&flipped).len(), 1);
        // Zeros after the records end the log.
        bytes.extend([0u8; 64]);
        assert_eq!(records(&bytes).len(), 2);
    }
}
