//! modelhub: the metadata store behind kukeon.
//!
//! A request flows through the modules in this order:
//! [`http`] (the route table, axum handlers, problem+json responses) ->
//! [`api`] (versioned wire shapes and their translation) -> [`model`]
//! (internal records, validation, defaulting) -> [`store`] (one storage
//! contract, revisions, snapshots; the redb engine beneath it). Committed
//! changes flow back out through the store's change feed to [`watch`],
//! which fans them out to watch streams in the encoding [`api`] gives it.
//!
//! `ARCHITECTURE.md` maps the modules and their invariants.
//!
//! [`server`] wires these together and runs the service. [`client`] (a
//! typed client and a kube-style watcher) and [`cli`] (the command line)
//! talk to a server over HTTP; they build on [`api`] and [`model`], never
//! on [`http`].
//! [`restore`] builds a database offline from a backup, through [`api`]
//! (the backup format) and [`store`]. [`notify`] tells a service manager
//! (systemd's `Type=notify`) when the server is ready and when it stops.
//! [`logging`] writes the server's log, its audit records in batches.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod histogram;
pub mod http;
pub mod logging;
pub mod model;
pub mod notify;
pub mod restore;
pub mod server;
pub mod store;
pub mod watch;
