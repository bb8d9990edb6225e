//! Storage migration steps, one per format version step.
//!
//! Compiled into the redb backend as `crate::store::redb::migrate::steps` (see
//! `README.md` in this directory for the procedure). A step upgrades a
//! database from `from` to `from + 1` inside the caller's write transaction;
//! it must be idempotent and must not touch data it does not own.

mod v1_to_v2;

use redb::WriteTransaction;

use crate::store::error::StoreError;

/// One migration step.
pub struct Step {
    /// The format this step reads.
    pub from: u32,
    /// What it does, for the log.
    pub describe: &'static str,
    /// Applies the step inside the migration's write transaction.
    pub apply: fn(&WriteTransaction) -> Result<(), StoreError>,
}

/// Every step, in order. Format 1 is the first format: nothing precedes it.
pub const STEPS: &[Step] = &[v1_to_v2::STEP];
