//! Storage migration steps, one per format version step.
//!
//! Compiled into the redb backend as `crate::store::redb::migrate::steps` (see
//! `README.md` in this directory for the procedure). A step upgrades a
//! database from `from` to `from + 1` inside the caller's write transaction;
//! it must be idempotent and must not touch data it does not own.

mod step;
mod v1_to_v2;
mod v2_to_v3;
mod v3_to_v4;

pub use step::Step;

/// Every step, in order. Format 1 is the first format: nothing precedes it.
pub const STEPS: &[Step] = &[v1_to_v2::STEP, v2_to_v3::STEP, v3_to_v4::STEP];
