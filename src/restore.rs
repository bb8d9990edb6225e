//! `modelhub restore`: builds a database, offline, from a backup file (the
//! format of [`crate::api::v1beta1::backup`]).
//!
//! The whole file is verified before anything is created: its framing
//! (trailer, count, checksum), then every object (it decodes and
//! validates, in order, after its parent). Only then is the database built
//! through the store ([`crate::store::restore`]): every object as it was
//! (uid, generation, creation time, `resourceVersion`), at the backup's
//! revision plus a jump, with everything up to it counted as compacted, so
//! that a watch resumed from any revision of the old history answers 410
//! and its client relists (etcdutl's `snapshot restore --bump-revision
//! --mark-compacted`).

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::api::v1beta1::backup::{BackupError, Reader, verify};
use crate::store::{self, StoreError, StoreOptions};

/// The default jump of the revision: more than any history a restored
/// server's clients can have seen after the backup (etcdutl's advice).
pub const DEFAULT_BUMP: u64 = 1_000_000_000;

/// Why a restore did not happen. Whatever the cause, nothing is left at
/// the target path.
#[derive(Debug)]
pub enum RestoreError {
    /// A file of a store exists at the target.
    Exists(PathBuf),
    /// The backup file cannot be used.
    Backup {
        /// The backup file.
        file: PathBuf,
        /// Why.
        error: BackupError,
    },
    /// The backup's revision plus the jump does not fit in 64 bits.
    Overflow {
        /// The backup's revision.
        revision: u64,
        /// The jump asked for.
        bump: u64,
    },
    /// Building the database failed.
    Store(StoreError),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Exists(p) => write!(
                f,
                "{} exists: a restore builds a new database and never replaces one; move it \
                 aside or restore to another path",
                p.display()
            ),
            RestoreError::Backup { file, error } => write!(f, "{}: {error}", file.display()),
            RestoreError::Overflow { revision, bump } => write!(
                f,
                "the backup's revision {revision} plus --bump-revision {bump} does not fit in \
                 64 bits"
            ),
            RestoreError::Store(e) => write!(f, "cannot build the database: {e}"),
        }
    }
}

impl std::error::Error for RestoreError {}

impl From<StoreError> for RestoreError {
    fn from(e: StoreError) -> Self {
        RestoreError::Store(e)
    }
}

/// What a restore built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup's revision.
    pub backup_revision: u64,
    /// The new database's revision (the backup's plus the jump).
    pub revision: u64,
    /// How many objects it holds.
    pub objects: u64,
}

fn backup_error(file: &Path, error: BackupError) -> RestoreError {
    RestoreError::Backup {
        file: file.to_path_buf(),
        error,
    }
}

/// Verifies the backup at `file` whole; answers its revision, the
/// restored one (plus `bump`) and a reader of its objects.
fn open_verified(
    file: &Path,
    bump: u64,
) -> Result<(u64, u64, Reader<BufReader<File>>), RestoreError> {
    let open = || File::open(file).map(BufReader::new);
    let summary = verify(open).map_err(|e| backup_error(file, e))?;
    let backup_revision = summary.header.revision;
    let revision = backup_revision
        .checked_add(bump)
        .ok_or(RestoreError::Overflow {
            revision: backup_revision,
            bump,
        })?;
    tracing::info!(
        backup = %file.display(),
        objects = summary.objects,
        revision = backup_revision,
        created_at = %summary.header.created_at,
        "backup verified; restoring"
    );
    let reader = Reader::open(open().map_err(|e| backup_error(file, e.into()))?)
        .map_err(|e| backup_error(file, e))?;
    Ok((backup_revision, revision, reader))
}

/// Verifies the backup at `file`, then builds the database at `data` from
/// it, at the backup's revision plus `bump`. Refuses if any file of a store
/// at `data` exists.
pub fn restore(
    data: &Path,
    file: &Path,
    bump: u64,
    options: &StoreOptions,
) -> Result<Restored, RestoreError> {
    if let Some(existing) = store::files(data)
        .into_iter()
        .find(|f| f.symlink_metadata().is_ok())
    {
        return Err(RestoreError::Exists(existing));
    }
    let (backup_revision, revision, mut reader) = open_verified(file, bump)?;
    let objects = std::iter::from_fn(|| {
        reader
            .next_object()
            .map_err(|error| backup_error(file, error))
            .transpose()
    });
    let written = store::restore(data, options, revision, objects)?;
    tracing::info!(
        objects = written,
        revision,
        data = %data.display(),
        "restored"
    );
    Ok(Restored {
        backup_revision,
        revision,
        objects: written,
    })
}

/// resourceVersions per etcd revision: on etcd, `bump` counts etcd
/// revisions (the old store's write transactions, each at least this many
/// resourceVersions apart).
const ETCD_REVISION: u64 = 1_000_000;

/// Verifies the backup at `file`, then loads it into the empty etcd
/// prefix of `options` ([`crate::store::restore_etcd`]): every
/// resourceVersion handed out afterwards is above the backup's revision
/// plus `bump` etcd revisions, so a watch resumed from the old history
/// answers 410.
pub async fn restore_etcd(
    options: &crate::store::EtcdOptions,
    file: &Path,
    bump: u64,
) -> Result<Restored, RestoreError> {
    let jump = bump
        .checked_mul(ETCD_REVISION)
        .ok_or(RestoreError::Overflow { revision: 0, bump })?;
    let (backup_revision, revision, mut reader) = open_verified(file, jump)?;
    let mut objects = Vec::new();
    while let Some(obj) = reader.next_object().map_err(|e| backup_error(file, e))? {
        objects.push(obj);
    }
    let written = restore_into_etcd(options, revision, objects).await?;
    Ok(Restored {
        backup_revision,
        revision,
        objects: written,
    })
}

#[cfg(feature = "etcd")]
async fn restore_into_etcd(
    options: &crate::store::EtcdOptions,
    revision: u64,
    objects: Vec<crate::model::AnyObject>,
) -> Result<u64, RestoreError> {
    Ok(store::restore_etcd(options, revision, objects).await?)
}

#[cfg(not(feature = "etcd"))]
async fn restore_into_etcd(
    _options: &crate::store::EtcdOptions,
    _revision: u64,
    _objects: Vec<crate::model::AnyObject>,
) -> Result<u64, RestoreError> {
    Err(RestoreError::Store(StoreError::BadRequest(
        "this modelhub was built without etcd support: build it with --features etcd".into(),
    )))
}
