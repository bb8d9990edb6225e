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
//! change since the last one (a logged batch, or a compaction the log does
//! not hold), or once the log holds
//! `StoreOptions::checkpoint_bytes` (1 MiB by default: a checkpoint's
//! pause grows with what it persists, about 5 ms per MiB of log on an SSD,
//! so this bounds the pause whatever the write rate), or when a record
//! does not fit. On open, the writer replays the records
//! after the database's revision ([`Records::for_each_record`]) in one
//! durable transaction, and the log is cleared ([`Wal::clear`]).
//!
//! File: up to [`CAPACITY`] bytes, zero-filled ahead of the records in
//! steps of 4 MiB (so that appends almost never change its size and
//! `fdatasync` flushes data only). Its first [`ALIGN`] bytes are a file
//! header: `magic (8) | database id: u128 LE | crc32 of the 24 bytes
//! before`, which ties the log to its database. Records follow, each
//! starting on a fresh [`ALIGN`]-byte block (so that no append ever
//! rewrites a block holding an acknowledged record, and a torn write can
//! only damage the record being written): `len: u32 LE | crc32 of payload:
//! u32 LE | payload`; payload: `first revision: u64 LE | count: u32 LE |
//! entries`; entry: `change: u8 | kind: u8 | key len: u32 LE | key |
//! record len: u32 LE | record` (entry `i` is revision `first + i`; the
//! record is the object's stored record, for a deletion its last state).
//! Each append ends with an empty header on the next block, where replay
//! stops (what lies beyond is from before the last checkpoint).
//!
//! Replay tells a torn tail from corruption: a record that fails its
//! checksum is a torn write only if no valid record with a higher revision
//! follows it; a record whose checksum holds but that cannot be parsed is
//! never a torn write. Either way the start is refused, naming the file,
//! the offset and the revisions affected.
//!
//! After a failure to write the log, the writer refuses every further
//! write (the failed requests' outcome is unknown: they may be replayed)
//! until the store recovers from the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability};

use crate::model::Kind;
use crate::store::change::ChangeType;
use crate::store::codec;
use crate::store::disk::{Disk, DiskFile, parent_dir};
use crate::store::error::{EngineError, StoreError};
use crate::store::options::Sabotage;

/// Largest size of the log file.
pub const CAPACITY: u64 = 64 * 1024 * 1024;
/// The file is zero-filled this much at a time, as the log first grows.
const FILL_STEP: u64 = 4 * 1024 * 1024;
const _: () = assert!(crate::store::options::MAX_CHECKPOINT_BYTES <= CAPACITY / 2);
/// A record's header: length and checksum.
const HEADER: usize = 8;
/// Records start on a block of this size (a disk's largest sector).
pub const ALIGN: u64 = 4096;
/// Where the first record starts (after the file header).
pub(super) const START: u64 = ALIGN;
/// The file header's first bytes (`MHWAL`, then the log format).
pub(super) const MAGIC: [u8; 8] = *b"MHWAL\0\0\x02";
/// Magic, id and checksum.
pub(super) const FILE_HEADER: usize = 8 + 16 + 4;

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

    /// The whole record, as [`Wal::append`] writes it (without the padding
    /// and the empty header after it).
    #[cfg(test)]
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut sealed = self.clone();
        sealed.seal();
        sealed.buf
    }
}

/// `n` rounded up to a whole block.
fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// The open log, owned by the writer thread.
pub struct Wal {
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    /// Bytes of the file written (zeros or records) and synced.
    filled: u64,
    /// Where the next record goes (block-aligned).
    offset: u64,
    /// Where this log's records start: [`START`], or 0 for a log written
    /// before the file header existed (replayed, then rewritten).
    base: u64,
    last_checkpoint: Instant,
    interval: Duration,
    /// Log bytes that make a checkpoint due.
    due_bytes: u64,
    /// The database holds a commit made without durability that no record
    /// of this log holds (a compaction): a checkpoint is due by time.
    unlogged: bool,
    failed: Option<EngineError>,
    sabotage: Sabotage,
}

/// What [`Wal::append`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// The record is durable in the log.
    Logged,
    /// It does not fit: the caller must commit durably and [`Wal::reset`].
    Full,
}

/// Why appending failed.
#[derive(Debug)]
pub enum AppendError {
    /// Nothing of the record was written (the log could not grow, or
    /// failed earlier).
    Refused(StoreError),
    /// The record may or may not be durable.
    Unknown(EngineError),
}

impl Wal {
    /// Opens the log at `path` for the database whose id is `id`,
    /// creating it (zero-filled, with its header, the directory entry
    /// synced) if it is missing and `create` allows it. A log of another
    /// database, or a header that cannot be read, is refused. What it
    /// holds from a run that did not stop cleanly is read with
    /// [`Records::for_each_record`], then dropped with [`Wal::clear`].
    /// Checkpoints are due every `interval` while writes arrive, or once
    /// the log holds `due_bytes` of records.
    pub fn open(
        disk: &dyn Disk,
        path: &Path,
        id: u128,
        create: bool,
        (interval, due_bytes): (Duration, u64),
        sabotage: Sabotage,
    ) -> Result<Wal, StoreError> {
        let refuse = |what: String| StoreError::Engine(EngineError::msg(what));
        let exists = disk.exists(path)?;
        if !exists && !create {
            return Err(refuse(format!(
                "the write-ahead log {} is missing, and the database was not stopped cleanly: \
                 writes acknowledged since its last checkpoint would be lost. Put the log back, \
                 or accept the loss with `modelhub check --data <db> --accept-loss`",
                path.display()
            )));
        }
        let file = disk.open(path, true)?;
        let mut wal = Wal {
            file,
            path: path.to_owned(),
            filled: 0,
            offset: START,
            base: START,
            last_checkpoint: Instant::now(),
            unlogged: false,
            interval,
            due_bytes: due_bytes.clamp(ALIGN, crate::store::options::MAX_CHECKPOINT_BYTES),
            failed: None,
            sabotage,
        };
        wal.filled = wal.file.size()?;
        if !exists {
            wal.grow(FILL_STEP)?;
            wal.write_header(id)?;
            if !wal.sabotage.skip_dir_sync {
                disk.sync_dir(parent_dir(path))?;
            }
            return Ok(wal);
        }
        let mut head = [0u8; FILE_HEADER];
        match wal.file.read_exact_at(&mut head, 0) {
            Ok(()) => {}
            // A file shorter than a header holds nothing.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => head = [0; FILE_HEADER],
            Err(e) => {
                return Err(StoreError::Engine(EngineError::new(
                    format!(
                        "cannot read the write-ahead log's header ({})",
                        path.display()
                    ),
                    e,
                )));
            }
        }
        if head[..8] == MAGIC {
            let crc = u32::from_le_bytes(head[24..28].try_into().expect("4 bytes"));
            if crc32fast::hash(&head[..24]) != crc {
                return Err(refuse(format!(
                    "the write-ahead log {} has a damaged header; run `modelhub check`",
                    path.display()
                )));
            }
            let found = u128::from_le_bytes(head[8..24].try_into().expect("16 bytes"));
            // An empty log of another database (e.g. the database was
            // deleted after a clean stop) is taken over.
            if found != id && wal.holds_records()? {
                return Err(refuse(format!(
                    "the write-ahead log {} belongs to another database (id {found:032x}, \
                     the database's is {id:032x}); move it aside if that is expected",
                    path.display()
                )));
            }
        } else if head[..HEADER] != [0; HEADER] {
            // Written before the file header existed: records from 0.
            wal.base = 0;
        }
        if wal.filled < FILL_STEP {
            wal.grow(FILL_STEP)?;
        }
        let ours = head[..8] == MAGIC && head[8..24] == id.to_le_bytes();
        if wal.base == START && !ours {
            wal.write_header(id)?;
        }
        Ok(wal)
    }

    /// Writes the file header, durably.
    fn write_header(&mut self, id: u128) -> Result<(), StoreError> {
        let mut head = [0u8; FILE_HEADER];
        head[..8].copy_from_slice(&MAGIC);
        head[8..24].copy_from_slice(&id.to_le_bytes());
        let crc = crc32fast::hash(&head[..24]);
        head[24..].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all_at(&head, 0)?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Zero-fills the file up to `to` and syncs it, size included.
    fn grow(&mut self, to: u64) -> Result<(), std::io::Error> {
        let zeros = vec![0u8; 1024 * 1024];
        let mut at = self.filled;
        while at < to {
            let n = (to - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_all()?;
        self.filled = to;
        Ok(())
    }

    /// Whether the log may hold records: a clean stop leaves its first
    /// record header empty. A read error is an error, never "empty".
    pub fn holds_records(&self) -> Result<bool, StoreError> {
        let mut first = [0u8; HEADER];
        match self.file.read_exact_at(&mut first, self.base) {
            Ok(()) => Ok(first != [0; HEADER]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(StoreError::Engine(EngineError::new(
                format!("cannot read the write-ahead log {}", self.path.display()),
                e,
            ))),
        }
    }

    /// Empties the log, durably, once what it held is in the database (so
    /// that nothing is replayed again, even into another database file put
    /// in this one's place). A log from before the file header is given
    /// one (`id`).
    pub fn clear(&mut self, id: u128) -> Result<(), StoreError> {
        self.file.write_all_at(&[0; HEADER], self.base)?;
        if self.base != START {
            self.file.write_all_at(&[0; HEADER], START)?;
            self.base = START;
            self.write_header(id)?;
        }
        self.file.sync_data()?;
        self.offset = START;
        Ok(())
    }

    /// Appends `journal` and syncs it to disk, followed by an empty
    /// header on the next block that ends replay there. The journal is
    /// used up.
    pub fn append(&mut self, journal: &mut Journal) -> Result<Appended, AppendError> {
        self.check().map_err(AppendError::Refused)?;
        let len = journal.seal() as u64;
        let padded = align_up(len);
        if self.offset + padded > CAPACITY {
            return Ok(Appended::Full);
        }
        journal.buf.resize(padded as usize, 0);
        if self.offset + padded + HEADER as u64 <= CAPACITY {
            journal.buf.extend_from_slice(&[0; HEADER]);
        }
        let record = &journal.buf;
        let end = self.offset + record.len() as u64;
        if end > self.filled {
            let target = end.max(self.filled + FILL_STEP).min(CAPACITY);
            // Nothing of the record is written yet, and what the failed
            // fill wrote lies beyond every record: the batch is refused,
            // the log stays trusted. It stops all the same, as after any
            // storage failure, so that writes are refused as a state
            // (`/readyz/writes`, the metrics, one log line) and the store
            // recovers once there is room, rather than each batch trying
            // and failing on a full disk.
            if let Err(e) = self.grow(target) {
                let e = EngineError::new("the write-ahead log could not grow", e);
                self.fail(e.clone());
                return Err(AppendError::Refused(StoreError::Engine(e)));
            }
        }
        if self.offset == START {
            // The interval counts from the first change after a checkpoint.
            self.last_checkpoint = Instant::now();
        }
        let written = self.file.write_all_at(record, self.offset).and_then(|()| {
            if self.sabotage.skip_log_sync {
                Ok(())
            } else {
                self.file.sync_data()
            }
        });
        if let Err(e) = written {
            // The record may or may not be on disk: its requests fail with
            // an unknown outcome, and nothing more is written, so a
            // recovery replays (or not) exactly this record last.
            let e = EngineError::new("write-ahead log write failed", e);
            self.fail(e.clone());
            return Err(AppendError::Unknown(e));
        }
        self.offset += padded;
        Ok(Appended::Logged)
    }

    /// Stops all further writing after a storage failure (`why`), until
    /// the store recovers from the log: what was logged is replayed,
    /// nothing after it exists.
    pub fn fail(&mut self, why: EngineError) {
        if self.failed.is_none() {
            tracing::error!(error = %why, "storage failed; refusing writes until recovered from the log");
        }
        self.failed.get_or_insert(why);
    }

    /// Bytes of records since the last checkpoint (what a replay writes).
    pub fn logged_bytes(&self) -> u64 {
        self.offset - START
    }

    /// The failure that stopped the log, if any.
    pub fn failure(&self) -> Option<&EngineError> {
        self.failed.as_ref()
    }

    /// An error if storage failed earlier.
    pub fn check(&self) -> Result<(), StoreError> {
        match &self.failed {
            None => Ok(()),
            Some(why) => {
                Err(StoreError::Engine(why.reworded(|what| {
                    format!("storage failed earlier ({what}); recovering")
                })))
            }
        }
    }

    /// Whether a checkpoint is due.
    pub fn checkpoint_due(&self) -> bool {
        self.failed.is_none()
            && (self.offset > START || self.unlogged)
            && (self.logged_bytes() >= self.due_bytes
                || self.last_checkpoint.elapsed() >= self.interval)
    }

    /// Whether nothing is logged and the database holds no commit made
    /// without durability: everything committed is durable.
    pub fn is_clean(&self) -> bool {
        self.failed.is_none() && self.offset == START && !self.unlogged
    }

    /// The database took a commit without durability that this log does
    /// not hold: the next checkpoint makes it durable, and is due by time
    /// even if nothing is logged.
    pub fn unlogged_commit(&mut self) {
        self.unlogged = true;
    }

    /// How long until a checkpoint is due, if anything is to be made
    /// durable (never after a failure).
    pub fn until_checkpoint(&self) -> Option<Duration> {
        if self.failed.is_some() {
            return None;
        }
        (self.offset > START || self.unlogged)
            .then(|| self.interval.saturating_sub(self.last_checkpoint.elapsed()))
    }

    /// Starts the log over, after a durable commit made it redundant: the
    /// first record header is zeroed and synced, so that a log whose
    /// database was deleted on purpose holds nothing to replay. A failure
    /// stops the log (its records are stale, but nothing it says can be
    /// trusted any more).
    pub fn reset(&mut self) {
        if self.offset > START {
            let cleared = self
                .file
                .write_all_at(&[0; HEADER], START)
                .and_then(|()| self.file.sync_data());
            if let Err(e) = cleared {
                self.fail(EngineError::new("could not clear the write-ahead log", e));
            }
        }
        self.offset = START;
        self.unlogged = false;
        self.last_checkpoint = Instant::now();
    }

    /// The test-only faults this log was opened with.
    pub fn sabotage(&self) -> Sabotage {
        self.sabotage
    }
}

/// Makes everything committed so far durable (an empty durable commit
/// persists the non-durable ones before it), saving redb's allocator
/// state so that the next open after a crash needs no full repair.
pub fn checkpoint(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.set_quick_repair(true);
    txn.commit()?;
    Ok(())
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

/// Where reading records stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// At an empty header or the end of the file: the log's end.
    End {
        /// Where the empty header (or the end) is.
        at: u64,
    },
    /// At a record whose checksum holds but that cannot be parsed
    /// (written by a newer build, or damaged before it was checksummed):
    /// never a torn write.
    Unreadable {
        /// Its offset in the file.
        at: u64,
    },
    /// At a record that is torn or damaged, at this offset.
    Bad {
        /// Its offset in the file.
        at: u64,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Something that holds log records: the open log, or its bytes.
pub trait Records {
    /// Calls `f` with each valid record from the start (its first revision
    /// and its entries), until the first empty or bad one; a record whose
    /// checksum holds but that cannot be parsed is an error. After a bad
    /// record, answers the first and last revisions of the valid records
    /// found beyond it that follow `after` (a damaged record in the middle
    /// of the log, not a torn tail).
    fn for_each_record(&self, f: &mut OnRecord<'_>) -> Result<Stop, StoreError>;
    /// Valid records beyond `from` whose revisions are above `after`: the
    /// lowest first and the highest last revision, if any.
    fn beyond(&self, from: u64, after: u64) -> Result<Option<(u64, u64)>, StoreError>;
    /// Names the log in messages.
    fn name(&self) -> String;
}

impl Records for Wal {
    fn for_each_record(&self, f: &mut OnRecord<'_>) -> Result<Stop, StoreError> {
        for_each_record(&*self.file, self.base, self.base == START, f)
    }

    fn beyond(&self, from: u64, after: u64) -> Result<Option<(u64, u64)>, StoreError> {
        if self.base != START {
            // Unaligned records of an old log cannot be scanned for.
            return Ok(None);
        }
        beyond(&*self.file, from, after)
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// Where records are read from: the log file, or bytes.
pub trait Source {
    /// Fills `buf` from `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Source for dyn DiskFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        DiskFile::read_exact_at(self, buf, offset)
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

/// A record read at one offset.
enum Read {
    /// The record's first revision, entries, and length on disk.
    Record(u64, u64),
    /// An empty header.
    End,
    /// The end of the file.
    Eof,
    /// Torn or damaged.
    Bad(&'static str),
}

/// Reads the record at `at` into `payload`.
fn read_one(
    src: &(impl Source + ?Sized),
    at: u64,
    payload: &mut Vec<u8>,
) -> Result<Read, StoreError> {
    let eof = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Ok(Read::End),
        _ => Err(StoreError::Engine(EngineError::new(
            "cannot read the write-ahead log",
            e,
        ))),
    };
    let mut header = [0u8; HEADER];
    if let Err(e) = src.read_exact_at(&mut header, at) {
        return match eof(e)? {
            Read::End => Ok(Read::Eof),
            other => Ok(other),
        };
    }
    if header == [0; HEADER] {
        return Ok(Read::End);
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len < 12 || at + HEADER as u64 + u64::from(len) > CAPACITY {
        return Ok(Read::Bad("a bad length"));
    }
    payload.resize(len as usize, 0);
    if let Err(e) = src.read_exact_at(payload, at + HEADER as u64) {
        return match eof(e)? {
            Read::End => Ok(Read::Bad("cut short by the end of the file")),
            other => Ok(other),
        };
    }
    if crc32fast::hash(payload) != crc {
        return Ok(Read::Bad("a checksum mismatch"));
    }
    let first = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    Ok(Read::Record(first, HEADER as u64 + u64::from(len)))
}

/// Calls `f` with each valid record from `start`, one at a time, until
/// the first empty or bad one (or the end of the file). Records are
/// block-aligned if `aligned`. Read errors are errors.
pub(super) fn for_each_record(
    src: &(impl Source + ?Sized),
    start: u64,
    aligned: bool,
    f: &mut OnRecord<'_>,
) -> Result<Stop, StoreError> {
    let mut at = start;
    let mut payload = Vec::new();
    loop {
        let len = match read_one(src, at, &mut payload)? {
            Read::End | Read::Eof => return Ok(Stop::End { at }),
            Read::Bad(why) => return Ok(Stop::Bad { at, why }),
            Read::Record(_, len) => len,
        };
        let Some((first, entries)) = parse(&payload) else {
            return Ok(Stop::Unreadable { at });
        };
        f(first, entries)?;
        at += if aligned { align_up(len) } else { len };
    }
}

/// Scans every block from `from` on for valid records with revisions
/// above `after`; answers the lowest first and highest last revision.
pub(super) fn beyond(
    src: &(impl Source + ?Sized),
    from: u64,
    after: u64,
) -> Result<Option<(u64, u64)>, StoreError> {
    let mut found: Option<(u64, u64)> = None;
    let mut payload = Vec::new();
    let mut at = align_up(from + 1);
    while at + HEADER as u64 <= CAPACITY {
        let mut next = at + ALIGN;
        match read_one(src, at, &mut payload) {
            Ok(Read::Record(first, len)) => {
                // A valid record's blocks hold no record start: skipped.
                next = align_up(at + len);
                let count = u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes"));
                let last = first + u64::from(count.max(1)) - 1;
                if last > after {
                    found = Some(match found {
                        None => (first.max(after + 1), last),
                        Some((lo, hi)) => (lo.min(first.max(after + 1)), hi.max(last)),
                    });
                }
            }
            Ok(Read::End | Read::Bad(_)) => {}
            Ok(Read::Eof) => break,
            Err(e) => return Err(e),
        }
        at = next;
    }
    Ok(found)
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
    let mut entries = Vec::with_capacity(count.min(1 << 16) as usize);
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
    use crate::store::disk::OsDisk;
    use crate::store::disk::sim::{Op, SimDisk};

    /// A journal of `n` realm creations from revision `first`.
    pub(in crate::store::redb) fn journal(first: u64, n: u64) -> Journal {
        let mut j = Journal::default();
        for r in first..first + n {
            j.push(
                r,
                ChangeType::Added,
                Kind::Realm,
                format!("k{r}").as_bytes(),
                b"\x02rec",
            );
        }
        j
    }

    /// Log bytes laid out as in the file: records from [`START`], one per
    /// block run, then an empty header.
    pub(in crate::store::redb) struct Log {
        pub bytes: Vec<u8>,
        /// Where each record starts.
        pub offsets: Vec<u64>,
    }

    impl Log {
        pub fn of(journals: &[Journal]) -> Log {
            let mut log = Log {
                bytes: vec![0; START as usize],
                offsets: Vec::new(),
            };
            for j in journals {
                if j.last().is_some() {
                    let at = log.bytes.len() as u64;
                    log.put_record(at, &j.encode());
                }
            }
            log
        }

        /// Puts `record` at `at` (0: the first record's place), padded to
        /// a block, with an empty block after it.
        pub fn put_record(&mut self, at: u64, record: &[u8]) {
            let at = at.max(START) as usize;
            let end = at + align_up(record.len() as u64) as usize + ALIGN as usize;
            if self.bytes.len() < end {
                self.bytes.resize(end, 0);
            }
            self.bytes[at..at + record.len()].copy_from_slice(record);
            self.offsets.push(at as u64);
            self.bytes.truncate(end - ALIGN as usize);
        }
    }

    impl Records for Log {
        fn for_each_record(&self, f: &mut OnRecord<'_>) -> Result<Stop, StoreError> {
            for_each_record(&self.bytes[..], START, true, f)
        }

        fn beyond(&self, from: u64, after: u64) -> Result<Option<(u64, u64)>, StoreError> {
            beyond(&self.bytes[..], from, after)
        }

        fn name(&self) -> String {
            "t.redb.wal".into()
        }
    }

    const ID: u128 = 7;

    /// Opens the log at `path` of database `id`, with a long interval.
    fn open_at(disk: &dyn Disk, path: &Path, id: u128, create: bool) -> Result<Wal, StoreError> {
        Wal::open(
            disk,
            path,
            id,
            create,
            (
                Duration::from_secs(60),
                crate::store::options::MAX_CHECKPOINT_BYTES,
            ),
            Sabotage::default(),
        )
    }

    /// The log at `path`, created if missing, with checkpoints due after
    /// `due` (interval, bytes).
    fn open_due(path: &Path, due: (Duration, u64)) -> Wal {
        Wal::open(&OsDisk, path, ID, true, due, Sabotage::default()).unwrap()
    }

    /// The log in `dir`, opened with a long checkpoint interval.
    fn open_log(dir: &tempfile::TempDir) -> (PathBuf, Wal) {
        let path = dir.path().join("t.redb.wal");
        let wal = open_at(&OsDisk, &path, ID, true).unwrap();
        (path, wal)
    }

    /// The first revisions of the valid records of a log file.
    fn firsts(path: &Path) -> Vec<u64> {
        firsts_of(&std::fs::read(path).unwrap())
    }

    /// The first revisions of the valid records of log bytes.
    fn firsts_of(bytes: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        for_each_record(bytes, START, true, &mut |first, _| {
            out.push(first);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn appends_start_on_fresh_blocks_and_end_with_an_empty_header() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut wal) = open_log(&dir);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), FILL_STEP);
        assert_eq!(wal.append(&mut journal(1, 3)).unwrap(), Appended::Logged);
        assert_eq!(wal.offset, START + ALIGN);
        assert_eq!(wal.append(&mut journal(4, 3)).unwrap(), Appended::Logged);
        assert_eq!(firsts(&path), vec![1, 4]);
        wal.reset();
        assert!(firsts(&path).is_empty());
        assert_eq!(wal.append(&mut journal(7, 1)).unwrap(), Appended::Logged);
        assert_eq!(firsts(&path), vec![7]);
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
        assert_eq!(firsts(&path), vec![1]);
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
    fn a_log_that_cannot_grow_refuses_the_record_and_stops() {
        let disk = SimDisk::new();
        let path = PathBuf::from("/d/t.redb.wal");
        let mut wal = open_at(&disk, &path, ID, true).unwrap();
        assert_eq!(wal.append(&mut journal(1, 1)).unwrap(), Appended::Logged);
        // Room for less than the next fill step.
        disk.set_capacity(Some(FILL_STEP + 1024 * 1024));
        let mut big = Journal::default();
        big.push(2, ChangeType::Added, Kind::Realm, b"k", &vec![7u8; 5 << 20]);
        let Err(AppendError::Refused(StoreError::Engine(e))) = wal.append(&mut big) else {
            panic!("refused")
        };
        assert!(e.is_no_space(), "{e}");
        assert!(wal.failure().is_some_and(EngineError::is_no_space));
        // Nothing more is written until the store recovers from the log,
        // which holds the first record, whole.
        disk.set_capacity(None);
        assert!(matches!(
            wal.append(&mut journal(2, 1)),
            Err(AppendError::Refused(_))
        ));
        assert_eq!(firsts_of(&disk.contents(&path).unwrap()), vec![1]);
    }

    #[test]
    fn a_checkpoint_is_due_once_the_log_holds_its_bytes_whatever_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb.wal");
        let mut wal = open_due(&path, (Duration::from_secs(3600), 3 * ALIGN));
        assert!(!wal.checkpoint_due(), "nothing logged");
        for first in 1..=2 {
            assert_eq!(
                wal.append(&mut journal(first, 1)).unwrap(),
                Appended::Logged
            );
            assert!(!wal.checkpoint_due(), "{} bytes logged", wal.logged_bytes());
        }
        assert_eq!(wal.append(&mut journal(3, 1)).unwrap(), Appended::Logged);
        assert_eq!(wal.logged_bytes(), 3 * ALIGN, "a record a block");
        assert!(wal.checkpoint_due());
        wal.reset();
        assert!(!wal.checkpoint_due());
        assert_eq!(wal.logged_bytes(), 0);

        // Out-of-range settings are brought within [one block, the most].
        let wide = open_due(&path, (Duration::ZERO, u64::MAX));
        assert_eq!(wide.due_bytes, crate::store::options::MAX_CHECKPOINT_BYTES);
    }

    #[test]
    fn a_commit_the_log_lacks_makes_a_checkpoint_due_by_time_and_the_log_unclean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb.wal");
        let mut wal = open_due(&path, (Duration::ZERO, 3 * ALIGN));
        assert!(wal.is_clean());
        assert!(!wal.checkpoint_due(), "nothing to make durable");
        assert_eq!(wal.until_checkpoint(), None);
        wal.unlogged_commit();
        assert!(!wal.is_clean());
        assert!(wal.checkpoint_due(), "due by time with nothing logged");
        assert_eq!(wal.until_checkpoint(), Some(Duration::ZERO));
        wal.reset();
        assert!(wal.is_clean());
        assert!(!wal.checkpoint_due());
        assert_eq!(wal.append(&mut journal(1, 1)).unwrap(), Appended::Logged);
        assert!(!wal.is_clean(), "a record is logged");
    }

    #[test]
    fn a_failed_wal_refuses_writes_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb.wal");
        let mut wal = open_due(
            &path,
            (Duration::ZERO, crate::store::options::MAX_CHECKPOINT_BYTES),
        );
        assert_eq!(wal.append(&mut journal(1, 1)).unwrap(), Appended::Logged);
        assert!(wal.checkpoint_due());
        wal.fail(EngineError::msg("disk on fire"));
        assert!(!wal.checkpoint_due());
        assert_eq!(wal.until_checkpoint(), None);
        let Err(AppendError::Refused(err)) = wal.append(&mut journal(2, 1)) else {
            panic!("refused")
        };
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }

    #[test]
    fn records_stop_at_a_torn_tail() {
        let mut log = Log::of(&[journal(1, 3), journal(4, 2)]);
        let mut seen = Vec::new();
        let stop = log
            .for_each_record(&mut |first, entries| {
                seen.push((first, entries.len()));
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, vec![(1, 3), (4, 2)]);
        assert!(matches!(stop, Stop::End { .. }));
        // A flipped byte in the last record: a bad record, nothing after.
        let at = log.offsets[1];
        log.bytes[at as usize + 25] ^= 1;
        let mut n = 0;
        let stop = log
            .for_each_record(&mut |_, _| {
                n += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 1);
        assert!(matches!(stop, Stop::Bad { at: a, .. } if a == at));
        assert_eq!(log.beyond(at, 3).unwrap(), None);
    }

    #[test]
    fn a_header_that_cannot_be_read_fails_the_open() {
        let disk = SimDisk::new();
        let path = PathBuf::from("/d/t.redb.wal");
        drop(open_at(&disk, &path, ID, true).unwrap());
        disk.fail(Op::Read, disk.counts().reads + 1, std::io::ErrorKind::Other);
        let err = open_at(&disk, &path, ID, true)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("cannot read the write-ahead log's header"),
            "{err}"
        );
    }

    #[test]
    fn a_log_of_another_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut wal) = open_log(&dir);
        wal.append(&mut journal(1, 1)).unwrap();
        drop(wal);
        let err = open_at(&OsDisk, &path, ID + 1, true)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("belongs to another database"), "{err}");
        // Empty, it is taken over.
        let mut wal = open_at(&OsDisk, &path, ID, true).unwrap();
        wal.clear(ID).unwrap();
        drop(wal);
        open_at(&OsDisk, &path, ID + 1, true).unwrap();
    }

    #[test]
    fn a_missing_log_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb.wal");
        let err = open_at(&OsDisk, &path, ID, false)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("is missing"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn an_append_never_rewrites_a_block_of_an_earlier_record() {
        let disk = SimDisk::new();
        let path = PathBuf::from("/d/t.redb.wal");
        let mut wal = open_at(&disk, &path, ID, true).unwrap();
        wal.append(&mut journal(1, 1)).unwrap();
        let before = disk.contents(&path).unwrap();
        // The blocks of the first record are never written again (what
        // protects it from a torn write of a later one: the simulated disk
        // tears only the bytes a write carries, so this is the check).
        let first_end = START + ALIGN;
        disk.cut_power_at(Op::Sync, disk.counts().syncs + 1);
        assert!(matches!(
            wal.append(&mut journal(2, 1)),
            Err(AppendError::Unknown(_))
        ));
        let after = disk.contents(&path).unwrap();
        assert_eq!(before[..first_end as usize], after[..first_end as usize]);
        // The second append, cut before its sync, torn or lost or whole:
        // the first record survives every crash.
        for seed in 0..32 {
            let bytes = disk.crash(seed).contents(&path).unwrap();
            let mut firsts = Vec::new();
            for_each_record(&bytes[..], START, true, &mut |f, _| {
                firsts.push(f);
                Ok(())
            })
            .unwrap();
            assert_eq!(firsts.first(), Some(&1), "seed {seed}: {firsts:?}");
        }
    }
}
