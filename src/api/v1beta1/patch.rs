//! JSON merge patch (RFC 7396), and the v1beta1 rule that a patch may not
//! delete a field the document does not have.

use super::{DecodeError, decode_value};
use crate::model::Kind;

/// Applies a JSON merge patch (RFC 7396) to `target`.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A merge patch's `null` deletes a field. One aimed at a field the
/// document does not have would delete nothing and hide a typo, so it is
/// refused as an unknown field in a body is (400 naming it). Each deletion
/// is checked alone, as a document holding just that `null`.
pub fn refuse_unknown_deletions(kind: Kind, patch: &serde_json::Value) -> Result<(), DecodeError> {
    fn deletions(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if let serde_json::Value::Object(m) = v {
            for (k, v) in m {
                at.push(k.clone());
                if v.is_null() {
                    out.push(at.clone());
                } else {
                    deletions(v, at, out);
                }
                at.pop();
            }
        }
    }
    let mut found = Vec::new();
    deletions(patch, &mut Vec::new(), &mut found);
    for path in found {
        let probe = path
            .iter()
            .rev()
            .fold(serde_json::Value::Null, |inner, key| {
                serde_json::Value::Object([(key.clone(), inner)].into_iter().collect())
            });
        if let Err(e @ DecodeError::BadRequest { .. }) = decode_value(kind, probe)
            && e.to_string().starts_with("unknown field")
        {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7396() {
        // The examples of RFC 7396, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }

    #[test]
    fn deleting_an_unknown_field_is_refused_naming_it() {
        let known = json!({"metadata": {"labels": null}, "spec": {"registryCredentials": null}});
        assert!(refuse_unknown_deletions(Kind::Realm, &known).is_ok());
        let typo = json!({"spec": {"registryCredential": null}});
        let e = refuse_unknown_deletions(Kind::Realm, &typo).unwrap_err();
        assert!(e.to_string().contains("registryCredential"), "{e}");
    }
}
