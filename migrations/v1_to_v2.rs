//! Format 1 -> 2: adds the event log.
//!
//! Format 2 keeps every event (revision -> change) in an `events` table,
//! written in the same transaction as the change. A migrated database has no
//! history before the migration, so its compaction mark starts at the
//! current revision: a watch resuming from an older revision gets 410 and
//! re-lists, as it would after compaction. Object records are unchanged.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::step::Step;
use crate::store::error::StoreError;

/// Frozen copies of the format-2 definitions this step creates.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

fn apply(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(EVENTS)?;
    let mut meta = txn.open_table(META)?;
    let revision = meta.get("revision")?.map(|v| v.value()).unwrap_or(0);
    if meta.get("compacted_through")?.is_none() {
        meta.insert("compacted_through", revision)?;
    }
    Ok(())
}

/// The step.
pub const STEP: Step = Step {
    from: 1,
    describe: "add the event log (history starts at the current revision)",
    apply,
};
