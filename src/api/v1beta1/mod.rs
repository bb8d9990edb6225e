//! The v1beta1 API: wire documents ([`types`]), lenient decoding helpers
//! and the one translation layer to and from the internal model
//! ([`convert`]). Nothing here knows about HTTP or the store.

pub mod convert;
mod de;
mod strict;
pub mod types;

pub use convert::{
    DecodeError, Decoded, Format, decode, decode_document, decode_value, encode, to_value,
};
pub use types::API_VERSION;
