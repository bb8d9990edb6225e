//! `POST /api/v1beta1/apply`: manifests (a YAML stream, one JSON document
//! or a JSON array) created or configured in one transaction.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::AppState;
use super::auth::{AuditNote, may_write_realm};
use super::body::{Body, BodyType, render, wants_yaml};
use super::error::ApiError;
use super::handlers::{flag, forbidden, inherited_space, space_of};
use crate::api::v1beta1::types::{ApplyItem, ApplyResult};
use crate::api::v1beta1::{self, Format};
use crate::auth::Identity;
use crate::model::{AnyObject, Kind, Path, SpaceSpec, validate_name, validate_object};
use crate::store::{Applied, Backend, Document, Part};

/// Query parameters of `/apply`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApplyParams {
    /// Validate and report without writing.
    pub dry_run: Option<String>,
}

fn in_document(index: usize, e: ApiError) -> ApiError {
    let prefix = format!("documents[{index}]");
    ApiError {
        field: Some(match &e.field {
            Some(f) => format!("{prefix}.{f}"),
            None => prefix.clone(),
        }),
        detail: format!("{prefix}: {}", e.detail),
        ..e
    }
}

/// The refusal of an apply holding more than `max` documents.
fn too_many_documents(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        super::error::Reason::PayloadTooLarge,
        format!(
            "the request holds more than {max} documents (--max-apply-documents): split it \
             into several applies"
        ),
    )
}

/// Splits a body into its documents (at most `max`).
fn documents(body: &Body, max: usize) -> Result<Vec<serde_json::Value>, ApiError> {
    match body.kind {
        BodyType::Document(Format::Json) => {
            let v: serde_json::Value = serde_json::from_slice(&body.bytes)
                .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
            let items = match v {
                serde_json::Value::Array(items) => items,
                other => vec![other],
            };
            if items.len() > max {
                return Err(too_many_documents(max));
            }
            Ok(items)
        }
        BodyType::Document(Format::Yaml) => {
            let text = std::str::from_utf8(&body.bytes)
                .map_err(|_| ApiError::bad_request("YAML body is not UTF-8"))?;
            v1beta1::convert::check_yaml_nesting(text)?;
            let mut docs = Vec::new();
            for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
                let v = serde_json::Value::deserialize(doc).map_err(|e| {
                    in_document(i, ApiError::bad_request(format!("not valid YAML: {e}")))
                })?;
                if !v.is_null() {
                    if docs.len() == max {
                        return Err(too_many_documents(max));
                    }
                    docs.push(v);
                }
            }
            Ok(docs)
        }
        BodyType::MergePatch => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            super::error::Reason::BadRequest,
            "apply takes application/yaml or application/json",
        )),
    }
}

/// Reads one manifest into a placed, validated object.
/// A document's object, and the part of an existing one it writes.
fn object_of(doc: serde_json::Value) -> Result<(AnyObject, Part), ApiError> {
    if !doc.is_object() {
        return Err(ApiError::bad_request("a document must be a mapping"));
    }
    let kind_name = doc
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind_name)
        .ok_or_else(|| {
            ApiError::bad_field(
                "kind",
                if kind_name.is_empty() {
                    "kind is required (Realm, Space, Stack, Cell or Container)".to_string()
                } else {
                    format!("unknown kind {kind_name:?} (Realm, Space, Stack, Cell or Container)")
                },
            )
        })?;
    let decoded = v1beta1::decode_value(kind, doc)?;
    let part = Part::main(decoded.finalizers_given);
    let mut object = decoded.object;
    object.default_id();
    let path = object.path();
    let coordinates = [
        "spec.realmId",
        "spec.spaceId",
        "spec.stackId",
        "spec.cellId",
    ];
    for (i, name) in path.names().iter().enumerate() {
        let field = if i + 1 == path.names().len() {
            "metadata.name"
        } else {
            coordinates[i]
        };
        validate_name(field, name)?;
    }
    validate_object(&mut object)?;
    Ok((object, part))
}

/// The privileged-field policy over the documents of an apply, each as
/// it would be stored: a cell or container inherits from its space as
/// the same apply writes it, or else as stored. The first document that
/// sets a privileged field the identity may not fails the whole apply.
async fn check_privileged(
    state: &AppState,
    identity: &Identity,
    documents: &[Document],
) -> Result<(), ApiError> {
    if identity.may_privileged() {
        return Ok(());
    }
    let objects = || documents.iter().map(|(o, _)| o);
    let mut spaces: HashMap<Path, Option<SpaceSpec>> = objects()
        .filter_map(|o| match o {
            AnyObject::Space(s) => Some((o.path(), Some(s.spec.clone()))),
            _ => None,
        })
        .collect();
    for (i, obj) in objects().enumerate() {
        let path = obj.path();
        let space = if matches!(obj.kind(), Kind::Cell | Kind::Container) {
            let sp = space_of(&path);
            if !spaces.contains_key(&sp) {
                let stored = inherited_space(state, &path).await?;
                spaces.insert(sp.clone(), stored);
            }
            spaces[&sp].as_ref()
        } else {
            None
        };
        if let Some(f) = identity.refused_field(obj, space) {
            return Err(in_document(i, forbidden(identity, &f)));
        }
    }
    Ok(())
}

/// `POST /api/v1beta1/apply`.
pub async fn apply(
    state: AppState,
    identity: Arc<Identity>,
    params: ApplyParams,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let dry_run = flag("dryRun", params.dry_run.as_deref())?;
    let docs = documents(&body, state.limits.limits.max_apply_documents)?;
    if docs.is_empty() {
        return Err(ApiError::bad_request("the request holds no documents"));
    }
    let documents = docs
        .into_iter()
        .enumerate()
        .map(|(i, d)| object_of(d).map_err(|e| in_document(i, e)))
        .collect::<Result<Vec<_>, _>>()?;
    // One document out of the identity's realms fails the whole apply.
    for (i, (o, _)) in documents.iter().enumerate() {
        if let Err(why) = may_write_realm(&identity, &o.path().names()[0]) {
            return Err(in_document(i, ApiError::forbidden(why)));
        }
    }
    check_privileged(&state, &identity, &documents).await?;
    let count = documents.len();
    let outcome = state.store.apply(documents, dry_run).await?;
    let items = outcome
        .items
        .iter()
        .enumerate()
        .map(|(index, (applied, obj))| ApplyItem {
            index,
            kind: obj.kind().as_str().to_string(),
            path: obj.path().names().join("/"),
            outcome: match applied {
                Applied::Created => "created",
                Applied::Configured => "configured",
                Applied::Unchanged => "unchanged",
            }
            .to_string(),
            resource_version: obj.meta().resource_version.to_string(),
            generation: obj.meta().generation,
        })
        .collect();
    let result = ApplyResult {
        api_version: v1beta1::API_VERSION.to_string(),
        kind: "ApplyResult".into(),
        dry_run,
        resource_version: outcome.revision.to_string(),
        items,
    };
    let mut resp = render(&result, wants_yaml(&headers), StatusCode::OK);
    resp.extensions_mut().insert(AuditNote {
        documents: count,
        revision: if dry_run { 0 } else { outcome.revision },
    });
    Ok(resp)
}
