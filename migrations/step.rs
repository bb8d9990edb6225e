//! What a migration step is (a leaf: the steps import it, and the list of
//! steps in `mod.rs` imports them).

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
