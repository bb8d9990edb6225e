//! The internal, version-free model of kukeon resources.
//!
//! These are the records the store persists (see [`crate::store::codec`]) and
//! the types validation and defaulting work on. They mirror kukeon's
//! `internal/modelhub` package (v0.4.0): internal names (`realm_name`, ...)
//! and internal state enums. Wire documents live in [`crate::api`] and are
//! translated to and from these types in exactly one place per API version.
//!
//! Invariants: every stored object has a valid [`Path`] derived from its
//! name and parent coordinates; server-owned metadata ([`ObjectMeta`]) is
//! only written by the store.

mod defaults;
mod path;
mod privilege;
#[cfg(test)]
pub(crate) mod samples;
mod selector;
mod state;
mod types;
mod validate;

pub use defaults::apply_space_defaults_to_container;
pub use path::{Kind, Path};
pub use privilege::{PrivilegedField, privileged_fields};
#[cfg(test)]
pub(crate) use samples::samples;
pub use selector::{Field, FieldRequirement, Requirement, SELECTABLE_FIELDS, Selector};
pub use state::{CellState, ContainerState, RealmState, SpaceState, StackState};
pub use types::*;
pub use validate::{
    Invalid, MAX_FINALIZERS, MAX_LABEL_VALUE, MAX_LABELS, MAX_LABELS_BYTES, validate_finalizers,
    validate_label_keys_present, validate_labels, validate_name, validate_object,
    validate_stored_object,
};
