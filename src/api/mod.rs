//! Versioned wire types and their translation to the internal model.
//!
//! Each API version is a submodule holding serde types with the exact JSON
//! names of that version (no logic beyond decoding) and one `convert`
//! module translating to and from [`crate::model`]. Adding `v1` means adding
//! a sibling module; the store never sees wire types.

pub mod v1beta1;
