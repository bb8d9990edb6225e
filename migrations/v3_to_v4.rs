//! Format 3 -> 4: event-log records of event format 3, which keep a
//! modification's previous labels, state and terminating flag (so that a
//! watch catching up from the log follows objects in and out of its
//! selection).
//!
//! Nothing is rewritten: the records already in the log (event formats 1
//! and 2) stay readable, without a previous version. The new format number
//! only keeps builds that cannot read event format 3 from opening the
//! file. The step can run twice.

use redb::WriteTransaction;

use super::step::Step;
use crate::store::error::StoreError;

fn apply(_: &WriteTransaction) -> Result<(), StoreError> {
    Ok(())
}

/// The step.
pub const STEP: Step = Step {
    from: 3,
    describe: "allow event records that keep a modification's previous version (nothing rewritten)",
    apply,
};
