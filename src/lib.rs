//! modelhub: the metadata store behind kukeon.
//!
//! Data flows through the modules in this order:
//! [`http`] (axum routes, problem+json) -> [`api`] (versioned wire types and
//! their translation) -> [`model`] (internal records, validation,
//! defaulting) -> [`store`] (redb tables, revisions, snapshots).

pub mod api;
pub mod cli;
pub mod client;
pub mod http;
pub mod model;
pub mod server;
pub mod store;
pub mod watch;
