//! Versioned wire shapes and their translation to the internal model.
//!
//! Each API version is a submodule owning what goes over the wire in that
//! version: documents with their exact JSON names, lists, the apply
//! result, watch events, problem documents, URL paths and merge patch, and
//! one `convert` module translating documents to and from
//! [`crate::model`]. The server's [`crate::http`] layer and the
//! [`crate::client`] both take their wire types from here. Adding `v1`
//! means adding a sibling module; the store never sees wire types.

pub mod v1beta1;
