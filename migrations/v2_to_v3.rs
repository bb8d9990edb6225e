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

/// Records rewritten per batch (the transaction is one, its memory is not).
const BATCH: usize = 4096;

/// The record format this step writes, frozen.
const FORMAT_2: u8 = 2;

fn apply(txn: &WriteTransaction) -> Result<(), StoreError> {
    for def in OBJECTS {
        let mut table = txn.open_table(def)?;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch: Vec<(Vec<u8>, Vec<u8>)> = {
                let range = match &after {
                    Some(k) => table.range::<&[u8]>((
                        std::ops::Bound::Excluded(k.as_slice()),
                        std::ops::Bound::Unbounded,
                    ))?,
                    None => table.range::<&[u8]>(..)?,
                };
                let mut batch = Vec::new();
                for entry in range.take(BATCH) {
                    let (k, v) = entry?;
                    batch.push((k.value().to_vec(), v.value().to_vec()));
                }
                batch
            };
            let Some((last, _)) = batch.last() else { break };
            after = Some(last.clone());
            for (key, record) in batch {
                if record.first() == Some(&1) {
                    let new = upgraded(&record[1..])?;
                    table.insert(key.as_slice(), new.as_slice())?;
                }
            }
        }
    }
    let mut events = txn.open_table(EVENTS)?;
    let mut after: Option<u64> = None;
    loop {
        let batch: Vec<(u64, Vec<u8>)> = {
            let range = match after {
                Some(r) => {
                    events.range((std::ops::Bound::Excluded(r), std::ops::Bound::Unbounded))?
                }
                None => events.range::<u64>(..)?,
            };
            let mut batch = Vec::new();
            for entry in range.take(BATCH) {
                let (k, v) = entry?;
                batch.push((k.value(), v.value().to_vec()));
            }
            batch
        };
        let Some((last, _)) = batch.last() else { break };
        after = Some(*last);
        for (revision, event) in batch {
            if event.first() != Some(&1) {
                continue;
            }
            // `[format, change, kind]`, then the record's body.
            let (Some(&change), Some(&kind), Some(body)) =
                (event.get(1), event.get(2), event.get(3..))
            else {
                return Err(
                    codec::CodecError::Corrupt(format!("short event record {revision}")).into(),
                );
            };
            let record = upgraded(body)?;
            let mut new = Vec::with_capacity(record.len() + 2);
            new.extend_from_slice(&[FORMAT_2, change, kind]);
            new.extend_from_slice(&record[1..]);
            events.insert(revision, new.as_slice())?;
        }
    }
    Ok(())
}

/// The format-2 record of a format-1 record's body.
fn upgraded(body: &[u8]) -> Result<Vec<u8>, StoreError> {
    let record = codec::upgrade_v1(body)?;
    debug_assert_eq!(record.first(), Some(&FORMAT_2));
    Ok(record)
}

/// The step.
pub const STEP: Step = Step {
    from: 2,
    describe: "rewrite every record in record format 2 (finalizers, deletion timestamp)",
    apply,
};
