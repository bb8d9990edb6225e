//! A simulated disk for crash and fault tests: files and directory entries
//! in memory, with what was synced kept apart from what was merely written.
//!
//! - [`SimDisk::cut_power_at`] cuts the power just before the n-th write or
//!   sync: that operation and every later one fail with EIO, and
//!   [`SimDisk::crash`] then builds the disk a restart would find: the
//!   synced state plus a seeded subset of the unsynced writes, applied in a
//!   seeded order, some torn at sector granularity, and a seeded prefix of
//!   the unsynced directory operations.
//! - [`SimDisk::fail`] makes the n-th write, sync or read fail once with a
//!   chosen error (ENOSPC, EIO); [`SimDisk::set_capacity`] bounds the bytes
//!   all files may hold (growing past it fails with ENOSPC).
//! - [`SimDisk::trace`] digests every operation in order, so that a test
//!   can check that a rerun made the same I/O.
//!
//! Everything is deterministic given the sequence of operations and the
//! seed: the same workload, cut point and seed give the same disk.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use super::Rng;
use super::{Disk, DiskFile, parent_dir};

/// Sector size: the unit a torn write keeps or loses.
pub const SECTOR: u64 = 512;

/// A class of disk operation, for fault injection and cut points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A write or a size change of a file.
    Write,
    /// A file's or a directory's sync.
    Sync,
    /// A read.
    Read,
}

/// How many operations of each class the disk has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Writes and size changes.
    pub writes: u64,
    /// File and directory syncs.
    pub syncs: u64,
    /// Reads.
    pub reads: u64,
}

impl Counts {
    fn of(&mut self, op: Op) -> &mut u64 {
        match op {
            Op::Write => &mut self.writes,
            Op::Sync => &mut self.syncs,
            Op::Read => &mut self.reads,
        }
    }
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    /// What reads see.
    current: Vec<u8>,
    /// What survives a power cut for sure.
    durable: Vec<u8>,
    /// Writes since the last sync, in order.
    pending: Vec<Pending>,
    /// Writes a failed sync was to make durable: reads still see them
    /// (until [`DiskFile::drop_cache`]), later syncs do not persist them
    /// (Linux marks such pages clean). Whether each reached the disk was
    /// settled when the sync failed.
    limbo: Vec<Pending>,
    /// The handle holding the lock.
    locked_by: Option<u64>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(PathBuf, u64),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl DirOp {
    fn dir(&self) -> &Path {
        match self {
            DirOp::Link(p, _) | DirOp::Unlink(p) | DirOp::Rename(_, p) => parent_dir(p),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            DirOp::Link(p, ino) => {
                names.insert(p.clone(), *ino);
            }
            DirOp::Unlink(p) => {
                names.remove(p);
            }
            DirOp::Rename(from, to) => {
                if let Some(ino) = names.remove(from) {
                    names.insert(to.clone(), ino);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dir_pending: Vec<DirOp>,
    next_id: u64,
    capacity: Option<u64>,
    counts: Counts,
    faults: Vec<(Op, u64, io::ErrorKind)>,
    cut: Option<(Op, u64)>,
    powered_off: bool,
    trace: Vec<u64>,
}

impl State {
    /// Counts an operation of class `op` on `what` (a digest of its file,
    /// offset and length) and traces it; answers the error it must fail
    /// with, if any (a power cut, or an injected fault).
    fn enter(&mut self, op: Op, what: u64) -> io::Result<()> {
        if self.powered_off {
            return Err(io::Error::other("simulated power cut"));
        }
        let n = {
            let c = self.counts.of(op);
            *c += 1;
            *c
        };
        self.trace.push(digest(&[op as u64, what]));
        if self.cut == Some((op, n)) {
            self.powered_off = true;
            return Err(io::Error::other("simulated power cut"));
        }
        if let Some(i) = self
            .faults
            .iter()
            .position(|&(o, at, _)| o == op && at == n)
        {
            let (_, _, kind) = self.faults.remove(i);
            return Err(io::Error::new(
                kind,
                format!("simulated {kind} on {op:?} {n}"),
            ));
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.inodes.values().map(|i| i.current.len() as u64).sum()
    }

    /// Refuses growing a file by `grow` bytes past the capacity.
    fn room_for(&self, grow: u64) -> io::Result<()> {
        match self.capacity {
            Some(cap) if grow > 0 && self.used() + grow > cap => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated disk full",
            )),
            _ => Ok(()),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// A simulated disk; clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimDisk(Arc<Mutex<State>>);

impl SimDisk {
    /// An empty, powered disk of unbounded capacity.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bounds the bytes all files may hold together (`None`: unbounded).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state().capacity = bytes;
    }

    /// Makes the `nth` (from 1, counting from the disk's creation)
    /// operation of class `op` fail once with `kind`.
    pub fn fail(&self, op: Op, nth: u64, kind: io::ErrorKind) {
        self.state().faults.push((op, nth, kind));
    }

    /// Cuts the power just before the `nth` operation of class `op` (from
    /// 1): it and everything after fail.
    pub fn cut_power_at(&self, op: Op, nth: u64) {
        self.state().cut = Some((op, nth));
    }

    /// Cuts the power now.
    pub fn cut_power(&self) {
        self.state().powered_off = true;
    }

    /// Whether the power was cut.
    pub fn powered_off(&self) -> bool {
        self.state().powered_off
    }

    /// The operations seen so far.
    pub fn counts(&self) -> Counts {
        self.state().counts
    }

    /// A digest of every operation so far (its class, file, offset and
    /// length), in order: two runs that made the same I/O have equal
    /// traces, so a test can check that a rerun cut at the same count
    /// was cut at the same operation.
    pub fn trace(&self) -> Vec<u64> {
        self.state().trace.clone()
    }

    /// The file names on the disk, as the running process sees them.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state().names.keys().cloned().collect()
    }

    /// What a file holds now, as reads see it.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state();
        let ino = s.names.get(path)?;
        Some(s.inodes[ino].current.clone())
    }

    /// Replaces a file's bytes, durably (to plant damage in a test).
    pub fn put(&self, path: &Path, bytes: Vec<u8>) {
        let mut s = self.state();
        let ino = match s.names.get(path) {
            Some(&ino) => ino,
            None => {
                let ino = s.id();
                s.names.insert(path.to_owned(), ino);
                s.durable_names.insert(path.to_owned(), ino);
                ino
            }
        };
        let inode = s.inodes.entry(ino).or_default();
        inode.current = bytes.clone();
        inode.durable = bytes;
        inode.pending.clear();
    }

    /// The disk a restart finds after the power cut (or after one now, if
    /// the power is still on): powered, unbounded, with no faults. `seed`
    /// chooses which unsynced writes survive, in what order, which are
    /// torn, and how many unsynced directory operations survive.
    pub fn crash(&self, seed: u64) -> SimDisk {
        let s = self.state();
        let mut rng = Rng(seed);
        let mut names = s.durable_names.clone();
        let kept_dir_ops = rng.below(s.dir_pending.len() as u64 + 1) as usize;
        for op in &s.dir_pending[..kept_dir_ops] {
            op.apply(&mut names);
        }
        let mut inodes = HashMap::new();
        let mut live: Vec<u64> = names.values().copied().collect();
        live.sort_unstable();
        live.dedup();
        for ino in live {
            let old = &s.inodes[&ino];
            let mut bytes = old.durable.clone();
            let mut kept: Vec<&Pending> =
                old.pending.iter().filter(|_| rng.below(2) == 0).collect();
            rng.shuffle(&mut kept);
            for p in kept {
                match p {
                    Pending::SetLen(len) => bytes.resize(*len as usize, 0),
                    Pending::Write { offset, data } => {
                        if rng.below(4) == 0 {
                            write_sectors(&mut bytes, *offset, data, |_| rng.below(2) == 0);
                        } else {
                            write_whole(&mut bytes, *offset, data);
                        }
                    }
                }
            }
            inodes.insert(
                ino,
                Inode {
                    current: bytes.clone(),
                    durable: bytes,
                    pending: Vec::new(),
                    limbo: Vec::new(),
                    locked_by: None,
                },
            );
        }
        let next_id = s.next_id;
        SimDisk(Arc::new(Mutex::new(State {
            inodes,
            durable_names: names.clone(),
            names,
            next_id,
            ..State::default()
        })))
    }
}

/// Writes `data` at `offset` into `bytes`, growing them if needed (one
/// copy: cheap even for a large file in a debug build).
fn write_whole(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    if bytes.len() < start {
        bytes.resize(start, 0);
    }
    let overlap = (start + data.len()).min(bytes.len());
    bytes[start..overlap].copy_from_slice(&data[..overlap - start]);
    bytes.extend_from_slice(&data[overlap - start..]);
}

/// Applies one write or size change to `bytes`.
fn apply(bytes: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::SetLen(len) => bytes.resize(*len as usize, 0),
        Pending::Write { offset, data } => write_whole(bytes, *offset, data),
    }
}

/// Writes `data` at `offset` into `bytes`, one sector-aligned piece at a
/// time, keeping the pieces `keep` accepts (a torn write).
fn write_sectors(bytes: &mut Vec<u8>, offset: u64, data: &[u8], mut keep: impl FnMut(u64) -> bool) {
    let end = offset + data.len() as u64;
    let mut at = offset;
    while at < end {
        let next = ((at / SECTOR) + 1) * SECTOR;
        let piece_end = next.min(end);
        if keep(at) {
            if bytes.len() < piece_end as usize {
                bytes.resize(piece_end as usize, 0);
            }
            let from = (at - offset) as usize;
            let to = (piece_end - offset) as usize;
            bytes[at as usize..piece_end as usize].copy_from_slice(&data[from..to]);
        }
        at = piece_end;
    }
}

impl Disk for SimDisk {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut s = self.state();
        if s.powered_off {
            return Err(io::Error::other("simulated power cut"));
        }
        let ino = match s.names.get(path) {
            Some(&ino) => ino,
            None if create => {
                s.enter(Op::Write, path_digest(path))?;
                let ino = s.id();
                s.inodes.insert(ino, Inode::default());
                s.names.insert(path.to_owned(), ino);
                s.dir_pending.push(DirOp::Link(path.to_owned(), ino));
                ino
            }
            None => return Err(io::ErrorKind::NotFound.into()),
        };
        let handle = s.id();
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            ino,
            handle,
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.state().names.contains_key(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.enter(Op::Write, digest(&[path_digest(from), path_digest(to)]))?;
        let ino = s.names.remove(from).ok_or(io::ErrorKind::NotFound)?;
        s.names.insert(to.to_owned(), ino);
        s.dir_pending
            .push(DirOp::Rename(from.to_owned(), to.to_owned()));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.enter(Op::Write, path_digest(path))?;
        s.names.remove(path).ok_or(io::ErrorKind::NotFound)?;
        s.dir_pending.push(DirOp::Unlink(path.to_owned()));
        Ok(())
    }

    fn size(&self, path: &Path) -> io::Result<u64> {
        let s = self.state();
        let ino = s.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(s.inodes[ino].current.len() as u64)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.enter(Op::Sync, path_digest(dir))?;
        let pending = std::mem::take(&mut s.dir_pending);
        let (mine, others): (Vec<DirOp>, Vec<DirOp>) =
            pending.into_iter().partition(|op| op.dir() == dir);
        for op in &mine {
            op.apply(&mut s.durable_names);
        }
        s.dir_pending = others;
        Ok(())
    }

    fn free_bytes(&self, _path: &Path) -> io::Result<u64> {
        let s = self.state();
        Ok(s.capacity
            .map_or(u64::MAX, |cap| cap.saturating_sub(s.used())))
    }
}

/// An open file of a [`SimDisk`].
#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    ino: u64,
    handle: u64,
}

impl SimFile {
    /// Runs an operation of class `op` at `offset` for `len` bytes.
    fn with<T>(
        &self,
        op: Op,
        offset: u64,
        len: u64,
        f: impl FnOnce(&mut State, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut s = self.disk.state();
        s.enter(op, digest(&[self.ino, offset, len]))?;
        f(&mut s, self.ino)
    }
}

impl DiskFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        let s = self.disk.state();
        if s.powered_off {
            return Err(io::Error::other("simulated power cut"));
        }
        Ok(s.inodes[&self.ino].current.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(Op::Read, offset, buf.len() as u64, |s, ino| {
            let bytes = &s.inodes[&ino].current;
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let part = start
                .checked_add(buf.len())
                .and_then(|end| bytes.get(start..end))
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(part);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(Op::Write, offset, buf.len() as u64, |s, ino| {
            let end = offset + buf.len() as u64;
            let len = s.inodes[&ino].current.len() as u64;
            s.room_for(end.saturating_sub(len))?;
            let inode = s.inodes.get_mut(&ino).expect("open inode");
            write_whole(&mut inode.current, offset, buf);
            inode.pending.push(Pending::Write {
                offset,
                data: buf.to_vec(),
            });
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(Op::Write, len, 0, |s, ino| {
            let old = s.inodes[&ino].current.len() as u64;
            s.room_for(len.saturating_sub(old))?;
            let inode = s.inodes.get_mut(&ino).expect("open inode");
            inode.current.resize(len as usize, 0);
            inode.pending.push(Pending::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.disk.state();
        let entered = s.enter(Op::Sync, digest(&[self.ino, 0, 0]));
        let (powered_off, n) = (s.powered_off, s.counts.syncs);
        let Inode {
            durable,
            pending,
            limbo,
            ..
        } = s.inodes.get_mut(&self.ino).expect("open inode");
        match entered {
            // Replays the writes since the last sync onto the durable
            // bytes (cheaper than a copy of a large file for a small
            // write).
            Ok(()) => {
                for p in pending.drain(..) {
                    apply(durable, &p);
                }
                Ok(())
            }
            Err(e) => {
                if !powered_off {
                    // Each write reached the disk or not, as the failed
                    // sync left it (seeded by the sync's number); no later
                    // sync changes that.
                    let mut rng = Rng(n.wrapping_mul(0x9e37_79b9));
                    for p in pending.iter() {
                        if rng.below(2) == 0 {
                            apply(durable, p);
                        }
                    }
                    limbo.append(pending);
                }
                Err(e)
            }
        }
    }

    fn drop_cache(&self) -> io::Result<()> {
        let mut s = self.disk.state();
        if s.powered_off {
            return Err(io::Error::other("simulated power cut"));
        }
        let inode = s.inodes.get_mut(&self.ino).expect("open inode");
        // What a failed sync left is read from the disk again.
        inode.limbo.clear();
        let mut current = inode.durable.clone();
        for p in &inode.pending {
            apply(&mut current, p);
        }
        inode.current = current;
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn try_lock(&self) -> io::Result<bool> {
        let mut s = self.disk.state();
        let inode = s.inodes.get_mut(&self.ino).expect("open inode");
        match inode.locked_by {
            Some(h) if h != self.handle => Ok(false),
            _ => {
                inode.locked_by = Some(self.handle);
                Ok(true)
            }
        }
    }

    fn unlock(&self) -> io::Result<()> {
        let mut s = self.disk.state();
        let inode = s.inodes.get_mut(&self.ino).expect("open inode");
        if inode.locked_by == Some(self.handle) {
            inode.locked_by = None;
        }
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let _ = self.unlock();
    }
}

/// Mixes `parts` into one 64-bit digest.
fn digest(parts: &[u64]) -> u64 {
    parts.iter().fold(0, |h, &p| Rng(h ^ p).next_u64())
}

/// A digest of a path's bytes (FNV-1a).
fn path_digest(path: &Path) -> u64 {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn synced_data_survives_every_crash_and_unsynced_data_may_not() {
        let disk = SimDisk::new();
        let f = disk.open(&p("/d/a"), true).unwrap();
        disk.sync_dir(&p("/d")).unwrap();
        f.write_all_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(&[b'x'; 2048], 7).unwrap();
        let mut seen_lost = false;
        let mut seen_kept = false;
        for seed in 0..64 {
            let after = disk.crash(seed);
            let bytes = after.contents(&p("/d/a")).unwrap();
            assert_eq!(&bytes[..7], b"durable");
            match bytes.len() {
                7 => seen_lost = true,
                _ => seen_kept = true,
            }
        }
        assert!(seen_lost && seen_kept);
    }

    #[test]
    fn an_unsynced_directory_entry_may_vanish() {
        let disk = SimDisk::new();
        let f = disk.open(&p("/d/a"), true).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        f.sync_data().unwrap();
        let vanished = (0..32).any(|seed| disk.crash(seed).contents(&p("/d/a")).is_none());
        assert!(vanished);
        disk.sync_dir(&p("/d")).unwrap();
        assert!((0..32).all(|seed| disk.crash(seed).contents(&p("/d/a")).is_some()));
    }

    #[test]
    fn a_torn_write_keeps_whole_sectors_only() {
        let disk = SimDisk::new();
        let f = disk.open(&p("/a"), true).unwrap();
        disk.sync_dir(&p("/")).unwrap();
        f.write_all_at(&[0u8; 2048], 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(&[1u8; 2048], 0).unwrap();
        let mut torn = false;
        for seed in 0..200 {
            let bytes = disk.crash(seed).contents(&p("/a")).unwrap();
            for sector in bytes.chunks(SECTOR as usize) {
                assert!(sector.iter().all(|&b| b == sector[0]), "seed {seed}");
            }
            let ones = bytes.chunks(512).filter(|s| s[0] == 1).count();
            torn |= ones != 0 && ones != 4;
        }
        assert!(torn);
    }

    #[test]
    fn faults_and_cuts_hit_the_chosen_operation() {
        let disk = SimDisk::new();
        let f = disk.open(&p("/a"), true).unwrap();
        disk.fail(Op::Sync, 1, io::ErrorKind::StorageFull);
        assert_eq!(
            f.sync_data().unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        f.sync_data().unwrap();
        disk.set_capacity(Some(10));
        assert_eq!(
            f.write_all_at(&[0; 11], 0).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        f.write_all_at(&[0; 10], 0).unwrap();
        disk.cut_power_at(Op::Write, disk.counts().writes + 1);
        assert!(f.write_all_at(b"x", 0).is_err());
        assert!(disk.powered_off());
        assert!(f.sync_data().is_err());
    }

    #[test]
    fn the_trace_tells_operations_apart() {
        let run = |offset: u64| {
            let disk = SimDisk::new();
            let f = disk.open(&p("/a"), true).unwrap();
            f.write_all_at(b"x", offset).unwrap();
            f.sync_data().unwrap();
            disk.trace()
        };
        assert_eq!(run(0), run(0));
        assert_eq!(run(0).len(), 3);
        assert_ne!(run(0)[1], run(1)[1]);
        assert_eq!(run(0)[2], run(1)[2]);
    }

    #[test]
    fn a_failed_sync_is_not_made_good_by_a_later_one() {
        let disk = SimDisk::new();
        let f = disk.open(&p("/a"), true).unwrap();
        disk.sync_dir(&p("/")).unwrap();
        f.write_all_at(b"old", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b"new", 0).unwrap();
        disk.fail(Op::Sync, disk.counts().syncs + 1, io::ErrorKind::Other);
        assert!(f.sync_data().is_err());
        // Reads still see the write, a later sync succeeds, and yet the
        // write is not durable: a crash may lose it.
        let mut buf = [0u8; 3];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"new");
        f.sync_data().unwrap();
        assert!((0..32).any(|seed| disk.crash(seed).contents(&p("/a")).unwrap() == b"old"));
        // Dropping the cache shows what the disk holds.
        f.drop_cache().unwrap();
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"old");
    }

    #[test]
    fn same_seed_same_disk() {
        let disk = SimDisk::new();
        let f = disk.open(&p("/a"), true).unwrap();
        for i in 0..20u8 {
            f.write_all_at(&[i; 700], u64::from(i) * 300).unwrap();
        }
        for seed in 0..10 {
            assert_eq!(
                disk.crash(seed).contents(&p("/a")),
                disk.crash(seed).contents(&p("/a"))
            );
        }
    }
}
