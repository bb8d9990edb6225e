//! The file seam: every byte the store reads or writes, and every directory
//! operation it makes, goes through a [`Disk`], so that a test can stand a
//! simulated disk ([`sim::SimDisk`]) in for the real one ([`OsDisk`]) and
//! cut its power or fail its I/O at a chosen point.
//!
//! Contract (what the store relies on, and what the simulation models):
//! - A write is durable only once a later `sync_data`/`sync_all` of the
//!   same file returned `Ok`; until then a power cut may keep any subset
//!   of it, torn at sector granularity.
//! - A new, renamed or removed directory entry is durable only once
//!   [`Disk::sync_dir`] of its directory returned `Ok`.
//! - After a failed sync, nothing about the unsynced writes is known (a
//!   later sync succeeding proves nothing about them: never retry a sync
//!   and trust it), though reads still return them until
//!   [`DiskFile::drop_cache`].

pub mod sim;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Where the store's files live.
pub trait Disk: Send + Sync + fmt::Debug + 'static {
    /// Opens the file at `path` for reading and writing, creating it if
    /// `create` (its directory entry is then not durable until
    /// [`Disk::sync_dir`]).
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    /// Whether a file exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file at `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// The size of the file at `path`.
    fn size(&self, path: &Path) -> io::Result<u64>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Bytes an unprivileged writer may still use on the filesystem
    /// holding `path`.
    fn free_bytes(&self, path: &Path) -> io::Result<u64>;
}

/// An open file.
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// The file's size.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset` (`UnexpectedEof` past the end).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the size (new bytes read as zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the data written so far (and the size) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Like [`DiskFile::sync_data`], all metadata included.
    fn sync_all(&self) -> io::Result<()>;
    /// Drops the file's clean pages from the cache, so that later reads
    /// come from the disk: after a failed sync, the pages whose write
    /// failed are marked clean yet hold data the disk may not have.
    fn drop_cache(&self) -> io::Result<()>;
    /// Takes an exclusive lock on the file for this process, without
    /// waiting: `false` if another holder has it.
    fn try_lock(&self) -> io::Result<bool>;
    /// Releases [`DiskFile::try_lock`]'s lock.
    fn unlock(&self) -> io::Result<()>;
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Copies `from` to a new file `to`, durably (the copy's data and its
/// directory entry are synced before this returns).
pub fn copy_durably(disk: &dyn Disk, from: &Path, to: &Path) -> io::Result<u64> {
    let src = disk.open(from, false)?;
    let len = src.size()?;
    let tmp = {
        let mut p = to.as_os_str().to_owned();
        p.push(".tmp");
        std::path::PathBuf::from(p)
    };
    let dst = disk.open(&tmp, true)?;
    dst.set_len(0)?;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], at)?;
        dst.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    dst.sync_all()?;
    disk.rename(&tmp, to)?;
    disk.sync_dir(parent_dir(to))?;
    Ok(len)
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsDisk;

impl Disk for OsDisk {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn size(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn free_bytes(&self, path: &Path) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(parent_dir(path))?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
}

/// A file of the real filesystem.
#[derive(Debug)]
struct OsFile(File);

impl DiskFile for OsFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn drop_cache(&self) -> io::Result<()> {
        rustix::fs::fadvise(&self.0, 0, None, rustix::fs::Advice::DontNeed)?;
        Ok(())
    }

    fn try_lock(&self) -> io::Result<bool> {
        match self.0.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn unlock(&self) -> io::Result<()> {
        self.0.unlock()
    }
}

/// splitmix64: small and seedable (crash outcomes in the simulated
/// disk, the spare file's bytes).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Shuffles `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
