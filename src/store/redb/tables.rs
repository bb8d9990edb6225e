//! Table definitions: one table per kind (key: the path, see [`super::keys`];
//! value: a record, see [`super::codec`]), the event log and a metadata
//! table.

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::decoded::Decoded;
use crate::model::{AnyObject, Kind};
use crate::store::change::{Before, ChangeType};
use crate::store::error::StoreError;
use crate::store::plan::{ReadView, Scanned};
use crate::store::{codec, keys};

/// Store-wide metadata: [`FORMAT_KEY`], [`REVISION_KEY`].
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Storage format version of the database file.
pub const FORMAT_KEY: &str = "format_version";
/// The last revision handed out.
pub const REVISION_KEY: &str = "revision";
/// Events up to and including this revision have been compacted away.
pub const COMPACTED_KEY: &str = "compacted_through";
/// The database's identity (high and low 64 bits), also in its log's
/// header.
pub const ID_HI_KEY: &str = "id_hi";
/// See [`ID_HI_KEY`].
pub const ID_LO_KEY: &str = "id_lo";
/// 1 after a clean stop (the log is empty, and may be missing), 0 while
/// open (the log must exist).
pub const CLEAN_KEY: &str = "clean_stop";
/// Bytes of the stored object records (keys excluded).
pub const OBJECT_BYTES_KEY: &str = "object_bytes";
/// Bytes of the event records kept as history.
pub const EVENT_BYTES_KEY: &str = "event_bytes";

/// The event log: revision -> event record (see [`super::codec::encode_event`]).
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// Tokens: name -> token record (see [`super::codec::encode_token`]);
/// created by the first token written.
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

const REALMS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("realms");
const SPACES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("spaces");
const STACKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("stacks");
const CELLS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cells");
const CONTAINERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("containers");

/// The table holding objects of `kind`.
pub fn objects(kind: Kind) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    match kind {
        Kind::Realm => REALMS,
        Kind::Space => SPACES,
        Kind::Stack => STACKS,
        Kind::Cell => CELLS,
        Kind::Container => CONTAINERS,
    }
}

/// Creates every table (so readers never meet `TableDoesNotExist`).
pub fn create_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?;
    txn.open_table(EVENTS)?;
    for kind in Kind::ALL {
        txn.open_table(objects(kind))?;
    }
    Ok(())
}

/// Reads a u64 from the metadata table (absent: `None`).
pub fn read_meta(txn: &ReadTransaction, key: &str) -> Result<Option<u64>, StoreError> {
    match txn.open_table(META) {
        Ok(t) => Ok(t.get(key)?.map(|v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The store's revision in the metadata table of a write transaction.
pub fn revision(meta: &Table<'_, &str, u64>) -> Result<u64, StoreError> {
    Ok(meta.get(REVISION_KEY)?.map(|v| v.value()).unwrap_or(0))
}

/// The object tables and the event log of one write transaction, opened
/// once per batch.
pub struct WriteTables<'txn> {
    tables: Vec<Table<'txn, &'static [u8], &'static [u8]>>,
    events: Table<'txn, u64, &'static [u8]>,
    /// How the stored bytes changed through [`WriteTables::store_change`].
    pub delta: Sizes,
    /// The writer's decoded objects, which [`WriteTables::get`] takes
    /// from (the writer's batches; not dry runs, replay or restore).
    pub decoded: Option<&'txn mut Decoded>,
}

/// Bytes of records stored: objects and history (the quota and the
/// history's byte budget count these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Object records.
    pub objects: i64,
    /// Event records.
    pub events: i64,
}

impl Sizes {
    /// The totals kept in `meta` (absent: `None`, until [`count_sizes`]).
    pub fn read(meta: &Table<'_, &str, u64>) -> Result<Option<Sizes>, StoreError> {
        let get =
            |k| -> Result<Option<i64>, StoreError> { Ok(meta.get(k)?.map(|v| v.value() as i64)) };
        Ok(get(OBJECT_BYTES_KEY)?
            .zip(get(EVENT_BYTES_KEY)?)
            .map(|(objects, events)| Sizes { objects, events }))
    }

    /// Writes `total` plus `delta` as the totals in `meta` (the writer
    /// knows the totals: no read); answers them.
    pub fn put(
        meta: &mut Table<'_, &str, u64>,
        total: Sizes,
        delta: Sizes,
    ) -> Result<Sizes, StoreError> {
        let total = Sizes {
            objects: (total.objects + delta.objects).max(0),
            events: (total.events + delta.events).max(0),
        };
        if delta != Sizes::default() {
            meta.insert(OBJECT_BYTES_KEY, total.objects as u64)?;
            meta.insert(EVENT_BYTES_KEY, total.events as u64)?;
        }
        Ok(total)
    }

    /// Adds `delta` to the totals in `meta` (if they are kept); answers
    /// the new totals.
    pub fn add(meta: &mut Table<'_, &str, u64>, delta: Sizes) -> Result<Option<Sizes>, StoreError> {
        let Some(mut total) = Sizes::read(meta)? else {
            return Ok(None);
        };
        if delta != Sizes::default() {
            total.objects = (total.objects + delta.objects).max(0);
            total.events = (total.events + delta.events).max(0);
            meta.insert(OBJECT_BYTES_KEY, total.objects as u64)?;
            meta.insert(EVENT_BYTES_KEY, total.events as u64)?;
        }
        Ok(Some(total))
    }
}

/// Counts the stored bytes by reading every record (for a database that
/// does not keep the totals yet), and records them in `meta`.
pub fn count_sizes(txn: &WriteTransaction) -> Result<Sizes, StoreError> {
    let mut sizes = Sizes::default();
    for kind in Kind::ALL {
        for entry in txn.open_table(objects(kind))?.iter()? {
            sizes.objects += entry?.1.value().len() as i64;
        }
    }
    for entry in txn.open_table(EVENTS)?.iter()? {
        sizes.events += entry?.1.value().len() as i64;
    }
    let mut meta = txn.open_table(META)?;
    meta.insert(OBJECT_BYTES_KEY, sizes.objects as u64)?;
    meta.insert(EVENT_BYTES_KEY, sizes.events as u64)?;
    Ok(sizes)
}

impl<'txn> WriteTables<'txn> {
    /// Opens every object table of `txn`.
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let tables = Kind::ALL
            .iter()
            .map(|k| txn.open_table(objects(*k)))
            .collect::<Result<_, _>>()?;
        Ok(WriteTables {
            tables,
            events: txn.open_table(EVENTS)?,
            delta: Sizes::default(),
            decoded: None,
        })
    }

    /// The table of `kind`.
    pub fn of(&mut self, kind: Kind) -> &mut Table<'txn, &'static [u8], &'static [u8]> {
        &mut self.tables[kind as usize]
    }

    /// Stores one change (object and event) at `revision`: the one place
    /// that turns a change into table entries, for the writer and for the
    /// log's replay alike.
    /// A modification's event keeps `before`, the previous version's
    /// [`Before`]; without it (a replay of the write-ahead log) it is read
    /// from the record replaced.
    pub fn store_change(
        &mut self,
        revision: u64,
        change: ChangeType,
        kind: Kind,
        key: &[u8],
        record: &[u8],
        before: Option<&Before>,
    ) -> Result<Vec<u8>, StoreError> {
        let mut found = None;
        let old = match change {
            ChangeType::Deleted => self.of(kind).remove(key)?.map(|v| v.value().len()),
            ChangeType::Added | ChangeType::Modified => {
                self.delta.objects += record.len() as i64;
                let old = self.of(kind).insert(key, record)?;
                if change == ChangeType::Modified && before.is_none() {
                    // An unreadable old record only costs the event its
                    // previous version.
                    found = old
                        .as_ref()
                        .and_then(|v| codec::decode(kind, v.value()).ok())
                        .map(|o| Before::of(&o));
                }
                old.map(|v| v.value().len())
            }
        };
        self.delta.objects -= old.unwrap_or(0) as i64;
        let before = before.or(found.as_deref());
        let event = codec::encode_event(change, kind, record, before);
        self.delta.events += event.len() as i64;
        self.events.insert(revision, event.as_slice())?;
        Ok(event)
    }

    /// Reads the object at `key`: taken from the writer's decoded objects
    /// when they keep this very record, else decoded.
    pub fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<AnyObject>, StoreError> {
        let Some(v) = self.tables[kind as usize].get(key)? else {
            return Ok(None);
        };
        if let Some(object) = self
            .decoded
            .as_deref_mut()
            .and_then(|d| d.take(kind, key, v.value()))
        {
            debug_assert_eq!(
                Ok(&object),
                codec::decode(kind, v.value()).as_ref(),
                "a decoded object differs from its record"
            );
            return Ok(Some(object));
        }
        Ok(Some(codec::decode(kind, v.value())?))
    }
}

/// Planners read the transaction's own state: what earlier requests of the
/// same batch wrote included.
impl ReadView for WriteTables<'_> {
    fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<AnyObject>, StoreError> {
        WriteTables::get(self, kind, key)
    }

    fn exists(&mut self, kind: Kind, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.of(kind).get(key)?.is_some())
    }

    fn terminating(&mut self, kind: Kind, key: &[u8]) -> Result<Option<bool>, StoreError> {
        match self.of(kind).get(key)? {
            Some(v) => Ok(Some(codec::peek_terminating(v.value())?)),
            None => Ok(None),
        }
    }

    fn scan(&mut self, kind: Kind, prefix: &[u8], limit: Option<usize>) -> Scanned {
        let (start, end) = keys::prefix_range(prefix);
        let table = self.of(kind);
        let range = match &end {
            Some(end) => table.range(start.as_slice()..end.as_slice())?,
            None => table.range(start.as_slice()..)?,
        };
        let mut out = Vec::new();
        for entry in range.take(limit.unwrap_or(usize::MAX)) {
            let (k, v) = entry?;
            out.push((k.value().to_vec(), codec::decode(kind, v.value())?));
        }
        Ok(out)
    }
}
