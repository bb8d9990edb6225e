//! The v1beta1 API: the shapes that go over the wire, and the one
//! translation layer to and from the internal model. (Query parameters are
//! parsed where they are read, in [`crate::http`].)
//!
//! - [`types`]: the documents, their lists and the apply result;
//! - [`backup`]: the backup format (the documents of a whole store at one
//!   revision, framed by a header and a checksummed trailer);
//! - [`list`]: the list document of any kind, whole and streamed;
//! - [`convert`]: decoding (with lenient helpers) and translation;
//! - [`patch`]: JSON merge patch;
//! - [`paths`]: the URL layout, route templates and object paths;
//! - [`problem`]: the problem document and which failure gets which status;
//! - [`tokens`]: token management's requests and answers;
//! - [`watch`]: the watch event and the hub's encoder for it.
//!
//! The server's HTTP layer and the client take their wire types and URLs
//! from here. Nothing here knows axum. Two pieces reach into the server's
//! other layers: [`watch::V1beta1Events`] implements the watch hub's
//! [`crate::watch::Encode`], and [`problem`] maps
//! [`crate::store::StoreError`] to problems.

pub mod backup;
pub mod convert;
mod de;
pub mod list;
pub mod patch;
pub mod paths;
pub mod problem;
mod strict;
pub mod tokens;
pub mod types;
pub mod watch;

pub use convert::{
    DecodeError, Decoded, Format, decode, decode_document, decode_value, encode, to_value,
};
pub use problem::{ApiError, Problem, Reason};
pub use types::API_VERSION;
pub use watch::{Bookmark, BookmarkMeta, V1beta1Events, WatchEvent};
