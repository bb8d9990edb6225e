//! The watch wire format: one [`WatchEvent`] per line of an
//! `application/x-ndjson` stream (or per `data` field of a
//! `text/event-stream`), `{"type":"ADDED","object":{..}}`. The server writes
//! it ([`V1beta1Events`]), the OpenAPI document describes it and the client
//! reads it, all through this one type.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use super::problem::{ApiError, Problem};
use crate::model::AnyObject;
use crate::store::StoreError;
use crate::watch::{Encode, EventType};

/// A watch event. `T` is the object: a wire document on the server
/// ([`super::types::AnyDocument`]), a model object in the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "object", rename_all = "UPPERCASE")]
pub enum WatchEvent<T> {
    /// Created, or present in the initial snapshot.
    Added(T),
    /// Changed.
    Modified(T),
    /// Removed: its last state, at the deletion's revision.
    Deleted(T),
    /// The stream is at this revision.
    Bookmark(Bookmark),
    /// The server ended the stream with this problem (410: re-list).
    Error(Problem),
}

impl<T> WatchEvent<T> {
    /// The same event with its object mapped by `f` (bookmarks and errors
    /// carry no object and pass through).
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<WatchEvent<U>, E> {
        Ok(match self {
            WatchEvent::Added(o) => WatchEvent::Added(f(o)?),
            WatchEvent::Modified(o) => WatchEvent::Modified(f(o)?),
            WatchEvent::Deleted(o) => WatchEvent::Deleted(f(o)?),
            WatchEvent::Bookmark(b) => WatchEvent::Bookmark(b),
            WatchEvent::Error(p) => WatchEvent::Error(p),
        })
    }
}

/// The object of a BOOKMARK event: only `kind` and the revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bookmark {
    /// The watched kind, or `Bookmark` when the stream has several.
    pub kind: String,
    /// The revision.
    pub metadata: BookmarkMeta,
}

/// The metadata of a [`Bookmark`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookmarkMeta {
    /// The revision the stream is at (a decimal string on the wire).
    #[serde(rename = "resourceVersion", with = "decimal")]
    pub resource_version: u64,
}

/// A `u64` written as a decimal string, as every `resourceVersion` is.
mod decimal {
    use super::*;

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a revision")))
    }
}

/// What the `type` of an event may be.
const TYPES: &str = "^(ADDED|MODIFIED|DELETED|BOOKMARK|ERROR)$";

/// The schema is written by hand: the object is a document, a bookmark or
/// a problem depending on `type`. It is published under the name the
/// document has always used for it, `WatchEventDoc`.
impl<T> PartialSchema for WatchEvent<T> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .description(Some(
                "One watch event (a line of `application/x-ndjson`, or the `data` of a\n\
                 `text/event-stream` event).",
            ))
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::String))
                    .description(Some(
                        "`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.",
                    ))
                    .pattern(Some(TYPES)),
            )
            .required("type")
            .property(
                "object",
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::Object))
                    .description(Some(
                        "The object (DELETED: its last state, at the deletion's revision);\n\
                         for BOOKMARK only `kind` and `metadata.resourceVersion`; for ERROR a\n\
                         problem document.",
                    )),
            )
            .required("object")
            .into()
    }
}

impl<T> ToSchema for WatchEvent<T> {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WatchEventDoc")
    }
}

/// The v1beta1 event encoder for the watch hub.
pub struct V1beta1Events;

impl Encode for V1beta1Events {
    /// Called for changes only: `event` is ADDED, MODIFIED or DELETED.
    fn event(&self, event: EventType, object: &AnyObject) -> Vec<u8> {
        let object = super::encode(object);
        let event = match event {
            EventType::Added => WatchEvent::Added(object),
            EventType::Modified => WatchEvent::Modified(object),
            EventType::Deleted => WatchEvent::Deleted(object),
            EventType::Bookmark | EventType::Error => {
                unreachable!("{event:?} is not a change: it has its own method")
            }
        };
        serde_json::to_vec(&event).expect("documents serialize")
    }

    fn error(&self, error: &StoreError) -> Vec<u8> {
        let problem = ApiError::from(error.clone()).problem();
        serde_json::to_vec(&WatchEvent::<()>::Error(problem)).expect("problems serialize")
    }

    fn bookmark(&self, kind: &str, revision: u64) -> Vec<u8> {
        let bookmark = Bookmark {
            kind: kind.to_string(),
            metadata: BookmarkMeta {
                resource_version: revision,
            },
        };
        serde_json::to_vec(&WatchEvent::<()>::Bookmark(bookmark)).expect("bookmarks serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Path};

    fn realm() -> AnyObject {
        let mut obj = AnyObject::Realm(Default::default());
        obj.place(&Path::new(Kind::Realm, vec!["r".into()]))
            .unwrap();
        obj.meta_mut().resource_version = 7;
        obj
    }

    /// The bytes the server wrote before this type existed: `type` first,
    /// then `object`.
    #[test]
    fn events_keep_their_bytes() {
        let obj = realm();
        let doc = serde_json::to_string(&super::super::encode(&obj)).unwrap();
        for (event, name) in [
            (EventType::Added, "ADDED"),
            (EventType::Modified, "MODIFIED"),
            (EventType::Deleted, "DELETED"),
        ] {
            assert_eq!(
                String::from_utf8(V1beta1Events.event(event, &obj)).unwrap(),
                format!(r#"{{"type":"{name}","object":{doc}}}"#)
            );
        }
        assert_eq!(
            String::from_utf8(V1beta1Events.bookmark("Cell", 42)).unwrap(),
            r#"{"type":"BOOKMARK","object":{"kind":"Cell","metadata":{"resourceVersion":"42"}}}"#
        );
        let error = V1beta1Events.error(&StoreError::Gone("compacted".into()));
        let problem =
            serde_json::to_string(&ApiError::from(StoreError::Gone("compacted".into())).problem())
                .unwrap();
        assert_eq!(
            String::from_utf8(error).unwrap(),
            format!(r#"{{"type":"ERROR","object":{problem}}}"#)
        );
    }

    /// What the server writes, the client reads back, and every `type` it
    /// writes is one the schema allows.
    #[test]
    fn events_read_back_and_match_the_schema() {
        let obj = realm();
        let doc = serde_json::to_value(super::super::encode(&obj)).unwrap();
        let lines = [
            V1beta1Events.event(EventType::Added, &obj),
            V1beta1Events.event(EventType::Modified, &obj),
            V1beta1Events.event(EventType::Deleted, &obj),
            V1beta1Events.bookmark("Bookmark", 9),
            V1beta1Events.error(&StoreError::Gone("compacted".into())),
        ];
        let types = TYPES
            .trim_start_matches("^(")
            .trim_end_matches(")$")
            .split('|')
            .collect::<Vec<_>>();
        let mut read = Vec::new();
        for line in &lines {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert!(types.contains(&v["type"].as_str().unwrap()), "{v}");
            read.push(serde_json::from_slice::<WatchEvent<serde_json::Value>>(line).unwrap());
        }
        assert_eq!(read[0], WatchEvent::Added(doc.clone()));
        assert_eq!(read[1], WatchEvent::Modified(doc.clone()));
        assert_eq!(read[2], WatchEvent::Deleted(doc));
        assert_eq!(
            read[3],
            WatchEvent::Bookmark(Bookmark {
                kind: "Bookmark".into(),
                metadata: BookmarkMeta {
                    resource_version: 9
                },
            })
        );
        let WatchEvent::Error(problem) = &read[4] else {
            panic!("{:?}", read[4]);
        };
        assert_eq!(problem.status, 410);
        assert_eq!(types.len(), 5);
    }

    #[test]
    fn a_bookmark_without_a_revision_is_refused() {
        let line =
            br#"{"type":"BOOKMARK","object":{"kind":"Cell","metadata":{"resourceVersion":"x"}}}"#;
        assert!(serde_json::from_slice::<WatchEvent<serde_json::Value>>(line).is_err());
        let line = br#"{"type":"SOMETHING","object":{}}"#;
        assert!(serde_json::from_slice::<WatchEvent<serde_json::Value>>(line).is_err());
    }
}
