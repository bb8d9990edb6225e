//! The list document of any kind, in both forms the server writes: whole
//! ([`ListBody`], for pages and YAML) and streamed ([`list_head`], the
//! items, [`LIST_TAIL`]). The two are the same bytes.

use serde::{Deserialize, Serialize};

use super::types::{API_VERSION, AnyDocument, ListMeta};
use crate::model::Kind;

/// A list document (same field order as the streamed form), as the
/// server writes it (items: [`AnyDocument`]) and as the client reads it
/// (items of its choosing).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListBody<T = AnyDocument> {
    /// `v1beta1`.
    pub api_version: String,
    /// `<Kind>List` ([`list_kind_name`]).
    pub kind: String,
    /// Revision and continue token.
    pub metadata: ListMeta,
    /// The items, in path order.
    pub items: Vec<T>,
}

/// The `kind` of a list of `kind` (`CellList`).
pub fn list_kind_name(kind: Kind) -> String {
    format!("{}List", kind.as_str())
}

/// A streamed list's text before its items.
pub fn list_head(kind: Kind, revision: u64) -> String {
    format!(
        r#"{{"apiVersion":"{}","kind":"{}","metadata":{{"resourceVersion":"{}"}},"items":["#,
        API_VERSION,
        list_kind_name(kind),
        revision
    )
}

/// A streamed list's text after its items.
pub const LIST_TAIL: &[u8] = b"]}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AnyObject, Path};

    #[test]
    fn the_streamed_form_is_the_whole_form() {
        for n in [0, 1, 3] {
            let items: Vec<AnyDocument> = (0..n)
                .map(|i| {
                    let mut obj = AnyObject::Realm(Default::default());
                    obj.place(&Path::new(Kind::Realm, vec![format!("r{i}")]))
                        .unwrap();
                    super::super::encode(&obj)
                })
                .collect();
            let mut streamed = list_head(Kind::Realm, 12).into_bytes();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    streamed.push(b',');
                }
                streamed.extend(serde_json::to_vec(item).unwrap());
            }
            streamed.extend_from_slice(LIST_TAIL);
            let whole = ListBody {
                api_version: API_VERSION.into(),
                kind: list_kind_name(Kind::Realm),
                metadata: ListMeta {
                    resource_version: "12".into(),
                    continue_token: None,
                },
                items,
            };
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                serde_json::to_string(&whole).unwrap()
            );
        }
    }
}
