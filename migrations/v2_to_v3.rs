//! Format 2 -> 3: record format 2, whose object metadata ends with
//! `finalizers` and `deletion_timestamp`.
//!
//! Every object record and every event-log record is rewritten in record
//! format 2 (`codec::upgrade_v1`, which reads a format-1 record's metadata
//! with its own frozen copy of format 1's `ObjectMeta` and appends the two
//! new fields, empty), so that a format-3 file holds only format-2 records.
//! Records already in format 2 are left as they are, so the step can run
//! twice. Revisions, keys and the history are unchanged.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::step::Step;
use crate::store::codec;
use crate::store::error::StoreError;

/// Frozen copies of the format-2 tables this step rewrites.
const OBJECTS: [TableDefinition<&[u8], &[u8]>; 5] = [
    TableDefinition::new("realms"),
    TableDefinition::new("spaces"),
    TableDefinition::new("stacks"),
    TableDefinition::new("cells"),
    TableDefinition::new("containers"),
];
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

fn apply(txn: &WriteTransaction) -> Result<(), StoreError> {
    for def in OBJECTS {
        let mut table = txn.open_table(def)?;
        let mut old = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            if v.value().first() == Some(&1) {
                old.push((k.value().to_vec(), v.value().to_vec()));
            }
        }
        for (key, record) in old {
            let new = codec::upgrade_v1(&record[1..])?;
            table.insert(key.as_slice(), new.as_slice())?;
        }
    }
    let mut events = txn.open_table(EVENTS)?;
    let mut old = Vec::new();
    for entry in events.iter()? {
        let (k, v) = entry?;
        if v.value().first() == Some(&1) {
            old.push((k.value(), v.value().to_vec()));
        }
    }
    for (revision, event) in old {
        // `[format, change, kind]`, then the record's body.
        let (Some(&change), Some(&kind), Some(body)) = (event.get(1), event.get(2), event.get(3..))
        else {
            return Err(
                codec::CodecError::Corrupt(format!("short event record {revision}")).into(),
            );
        };
        let upgraded = codec::upgrade_v1(body)?;
        let mut new = Vec::with_capacity(upgraded.len() + 2);
        new.extend_from_slice(&[codec::RECORD_FORMAT, change, kind]);
        new.extend_from_slice(&upgraded[1..]);
        events.insert(revision, new.as_slice())?;
    }
    Ok(())
}

/// The step.
pub const STEP: Step = Step {
    from: 2,
    describe: "rewrite every record in record format 2 (finalizers, deletion timestamp)",
    apply,
};
