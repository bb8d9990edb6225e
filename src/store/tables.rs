//! Table definitions: one table per kind (key: the path, see [`super::keys`];
//! value: a record, see [`super::codec`]), the event log and a metadata
//! table.

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::StoreError;
use super::codec;
use super::wal::Journal;
use crate::model::{AnyObject, Kind};

/// Store-wide metadata: [`FORMAT_KEY`], [`REVISION_KEY`].
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Storage format version of the database file.
pub const FORMAT_KEY: &str = "format_version";
/// The last revision handed out.
pub const REVISION_KEY: &str = "revision";
/// Events up to and including this revision have been compacted away.
pub const COMPACTED_KEY: &str = "compacted_through";

/// The event log: revision -> event record (see [`super::codec::encode_event`]).
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

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

/// The object tables of one write transaction, opened once per batch, and
/// the journal of its changes for the write-ahead log.
pub struct WriteTables<'txn> {
    tables: Vec<Table<'txn, &'static [u8], &'static [u8]>>,
    events: Table<'txn, u64, &'static [u8]>,
    /// Every change logged in this transaction, in revision order.
    pub journal: Journal,
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
            journal: Journal::default(),
        })
    }

    /// The event log.
    pub fn events(&mut self) -> &mut Table<'txn, u64, &'static [u8]> {
        &mut self.events
    }

    /// The table of `kind`.
    pub fn of(&mut self, kind: Kind) -> &mut Table<'txn, &'static [u8], &'static [u8]> {
        &mut self.tables[kind as usize]
    }

    /// Reads and decodes the object at `key`.
    pub fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<AnyObject>, StoreError> {
        match self.of(kind).get(key)? {
            Some(v) => Ok(Some(codec::decode(kind, v.value())?)),
            None => Ok(None),
        }
    }
}
