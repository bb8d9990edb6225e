//! Request handlers, written once for every kind: the kind is a parameter
//! fixed when the route table is built (see [`super::routes`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::AppState;
use super::body::{
    Body, BodyType, if_match, json_document, render, render_json, render_object, wants_yaml,
};
use super::cache::ListKey;
use super::error::ApiError;
use crate::api::v1beta1::list::{LIST_TAIL, ListBody, list_head, list_kind_name};
use crate::api::v1beta1::patch::{merge_patch, refuse_unknown_deletions};
use crate::api::v1beta1::paths::object_path;
use crate::api::v1beta1::{self, Decoded, Format, types::ListMeta};
use crate::auth::Identity;
use crate::model::{
    AnyObject, Container, Kind, Path, PrivilegedField, SpaceSpec,
    apply_space_defaults_to_container, validate_object,
};
pub use crate::store::Part;
use crate::store::{Backend, ListQuery, Snapshot, StoreError, WriteOp};

/// Query parameters of collection GETs.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ListParams {
    /// Label selector.
    pub label_selector: Option<String>,
    /// Field selector (`status.state`).
    pub field_selector: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// Continue token.
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    /// Stream events instead of listing.
    pub watch: Option<String>,
    /// Watch: start after this revision.
    pub resource_version: Option<String>,
    /// `effective` applies space defaults to containers (a cell's too).
    pub view: Option<String>,
    /// Watch: end the stream after this many seconds.
    pub timeout_seconds: Option<String>,
    /// Cross-scope lists: realm.
    pub realm: Option<String>,
    /// Cross-scope lists: space.
    pub space: Option<String>,
    /// Cross-scope lists: stack.
    pub stack: Option<String>,
    /// Cross-scope lists: cell.
    pub cell: Option<String>,
}

/// Query parameters of single-object requests.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ItemParams {
    /// `effective` applies space defaults to a container or a cell's
    /// containers (GET).
    pub view: Option<String>,
    /// Delete the subtree too (DELETE).
    pub cascade: Option<String>,
}

/// Parses a boolean query parameter.
pub fn flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None => Ok(false),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(v) => Err(ApiError::bad_field(
            name,
            format!("{name}={v:?}: expected true or false"),
        )),
    }
}

fn effective_view(kind: Kind, view: Option<&str>) -> Result<bool, ApiError> {
    match view {
        None => Ok(false),
        Some("effective") if matches!(kind, Kind::Container | Kind::Cell) => Ok(true),
        Some("effective") => Err(ApiError::bad_field(
            "view",
            "view=effective applies to containers and cells only",
        )),
        Some(v) => Err(ApiError::bad_field(
            "view",
            format!("unknown view {v:?} (effective)"),
        )),
    }
}

/// Applies the space defaults to a container, or to each container of a
/// cell's spec (the stored object is not changed). An object whose space
/// has no defaults is returned as is.
fn apply_effective(space: Option<&AnyObject>, obj: &mut AnyObject) {
    let Some(AnyObject::Space(space)) = space else {
        return;
    };
    match obj {
        AnyObject::Container(Container { spec, .. }) => {
            apply_space_defaults_to_container(&space.spec, spec);
        }
        AnyObject::Cell(cell) => {
            for c in &mut cell.spec.containers {
                apply_space_defaults_to_container(&space.spec, c);
            }
        }
        _ => {}
    }
}

pub(super) fn space_of(path: &Path) -> Path {
    Path::new(Kind::Space, path.names()[..2].to_vec())
}

/// The spaces of the objects of a list, each read once (on the calling,
/// blocking thread), for the effective view.
#[derive(Default)]
struct Spaces(HashMap<Path, Option<AnyObject>>);

impl Spaces {
    /// Applies the defaults of `obj`'s space, if it exists, to `obj`.
    fn apply(&mut self, snapshot: &Snapshot, obj: &mut AnyObject) -> Result<(), StoreError> {
        let sp = space_of(&obj.path());
        if !self.0.contains_key(&sp) {
            let found = match snapshot.get(&sp) {
                Ok(space) => Some(space),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            self.0.insert(sp.clone(), found);
        }
        apply_effective(self.0[&sp].as_ref(), obj);
        Ok(())
    }
}

async fn with_effective(state: &AppState, mut obj: AnyObject) -> Result<AnyObject, ApiError> {
    let space = match state.store.get(&space_of(&obj.path())).await {
        Ok(s) => Some(s),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    apply_effective(space.as_ref(), &mut obj);
    Ok(obj)
}

/// The privileged-field policy (see [`crate::model::privileged_fields`]):
/// the 403 answered when `identity` sets `field` without the grant.
pub(super) fn forbidden(identity: &Identity, field: &PrivilegedField) -> ApiError {
    ApiError::forbidden_field(
        field.field.clone(),
        format!(
            "{field}: needs the privileged grant, which {} ({}) does not have",
            identity.name, identity.role
        ),
    )
}

/// The stored spec of the space whose defaults the containers of the
/// cell or container at `path` inherit (`None`: other kinds, or no such
/// space).
pub(super) async fn inherited_space(
    state: &AppState,
    path: &Path,
) -> Result<Option<SpaceSpec>, ApiError> {
    if !matches!(path.kind(), Kind::Cell | Kind::Container) {
        return Ok(None);
    }
    match state.store.get(&space_of(path)).await {
        Ok(AnyObject::Space(s)) => Ok(Some(s.spec)),
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Refuses `obj`, as it would be stored, if it sets a privileged field
/// (its own, or inherited from its stored space) and `identity` may not.
async fn check_privileged(
    state: &AppState,
    identity: &Identity,
    obj: &AnyObject,
) -> Result<(), ApiError> {
    if identity.may_privileged() {
        return Ok(());
    }
    let space = inherited_space(state, &obj.path()).await?;
    match identity.refused_field(obj, space.as_ref()) {
        Some(f) => Err(forbidden(identity, &f)),
        None => Ok(()),
    }
}

/// GET one object (also `.../status`).
pub async fn get_object(
    state: AppState,
    kind: Kind,
    names: Vec<String>,
    params: ItemParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let effective = effective_view(kind, params.view.as_deref())?;
    let path = Path::new(kind, names);
    if effective || wants_yaml(&headers) {
        let mut obj = state.store.get(&path).await?;
        if effective {
            obj = with_effective(&state, obj).await?;
        }
        return Ok(render_object(&obj, &headers, StatusCode::OK));
    }
    // The stored object's JSON is rendered once per revision, shared with
    // the lists' renderings (a key at a revision is one content).
    let entry = state.store.get_entry(&path).await?;
    let revision = entry.resource_version;
    let json = match state.docs.get(kind, &entry.key, revision) {
        Some(json) => json,
        None => {
            let mut json = render_json(&v1beta1::encode(&entry.object()?));
            json.shrink_to_fit();
            let json = Bytes::from(json);
            state.docs.insert(kind, entry.key, revision, json.clone());
            json
        }
    };
    Ok(json_document(json, revision, StatusCode::OK))
}

fn decode_body(kind: Kind, body: &Body) -> Result<Decoded, ApiError> {
    match body.kind {
        BodyType::Document(format) => Ok(v1beta1::decode(kind, format, &body.bytes)?),
        BodyType::MergePatch => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            super::error::Reason::BadRequest,
            "merge patches are accepted by PATCH only",
        )),
    }
}

/// Combines the body's and the header's `resourceVersion` preconditions.
fn precondition(body: Option<u64>, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match (body, if_match(headers)?) {
        (Some(a), Some(b)) if a != b => Err(ApiError::bad_field(
            "If-Match",
            format!("If-Match {b} contradicts metadata.resourceVersion {a}"),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// POST to a collection: create.
pub async fn create_object(
    state: AppState,
    identity: Arc<Identity>,
    kind: Kind,
    parent: Vec<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Decoded { mut object, .. } = decode_body(kind, &body)?;
    let name = object.meta().name.clone();
    if name.is_empty() {
        return Err(crate::model::Invalid::new("metadata.name", "required").into());
    }
    crate::model::validate_name("metadata.name", &name)?;
    let mut names = parent;
    names.push(name);
    object
        .place(&Path::new(kind, names))
        .map_err(to_bad_request)?;
    validate_object(&mut object)?;
    check_privileged(&state, &identity, &object).await?;
    let outcome = state.store.write(WriteOp::Create(object)).await?;
    let mut resp = render_object(&outcome.object, &headers, StatusCode::CREATED);
    if let Ok(loc) = HeaderValue::from_str(&object_path(&outcome.object.path())) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

fn to_bad_request(i: crate::model::Invalid) -> ApiError {
    ApiError::bad_field(i.field.clone(), i.to_string())
}

fn write_op(part: Part, object: AnyObject, precondition: Option<u64>) -> WriteOp {
    WriteOp::Replace {
        object,
        part,
        precondition,
    }
}

/// Prepares a decoded document for a write at `path`.
fn prepare(part: Part, path: &Path, decoded: AnyObject) -> Result<AnyObject, ApiError> {
    match part {
        Part::Main | Part::MainAndFinalizers => {
            let mut object = decoded;
            object.place(path).map_err(to_bad_request)?;
            validate_object(&mut object)?;
            Ok(object)
        }
        Part::Status => {
            // Only the status is written, but the body is still a document
            // about this object (as Kubernetes checks on a status update): a
            // name or coordinates naming another one are 400, invalid labels
            // 422.
            let mut decoded = decoded;
            decoded.place(path).map_err(to_bad_request)?;
            // Only the rule every stored object meets: an object stored
            // before today's label rules can still have its status written.
            crate::model::validate_label_keys_present(&decoded.meta().labels)?;
            // Start from an empty object at the path.
            let mut object = empty(path.kind()).with_status_of(&decoded);
            object.place(path).map_err(to_bad_request)?;
            Ok(object)
        }
        Part::Finalizers => {
            // Only the finalizers are written; the body is a document about
            // this object, as for the status.
            let mut decoded = decoded;
            decoded.place(path).map_err(to_bad_request)?;
            crate::model::validate_finalizers(&decoded.meta().finalizers)?;
            let mut object = empty(path.kind());
            object.place(path).map_err(to_bad_request)?;
            object.meta_mut().finalizers = std::mem::take(&mut decoded.meta_mut().finalizers);
            Ok(object)
        }
    }
}

fn empty(kind: Kind) -> AnyObject {
    match kind {
        Kind::Realm => AnyObject::Realm(Default::default()),
        Kind::Space => AnyObject::Space(Default::default()),
        Kind::Stack => AnyObject::Stack(Default::default()),
        Kind::Cell => AnyObject::Cell(Default::default()),
        Kind::Container => AnyObject::Container(Default::default()),
    }
}

/// Whether a write of `part` writes labels and spec.
fn writes_main(part: Part) -> bool {
    matches!(part, Part::Main | Part::MainAndFinalizers)
}

/// PUT an object, its status or its finalizers.
pub async fn replace_object(
    state: AppState,
    identity: Arc<Identity>,
    kind: Kind,
    part: Part,
    names: Vec<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let path = Path::new(kind, names);
    let decoded = decode_body(kind, &body)?;
    let pre = precondition(decoded.resource_version, &headers)?;
    // A document that leaves its finalizers out keeps the stored ones.
    let part = match part {
        Part::Main => Part::main(decoded.finalizers_given),
        other => other,
    };
    let object = prepare(part, &path, decoded.object)?;
    if writes_main(part) {
        check_privileged(&state, &identity, &object).await?;
    }
    let outcome = state.store.write(write_op(part, object, pre)).await?;
    Ok(render_object(&outcome.object, &headers, StatusCode::OK))
}

/// PATCH an object, its status or its finalizers with a JSON merge patch.
pub async fn patch_object(
    state: AppState,
    identity: Arc<Identity>,
    kind: Kind,
    part: Part,
    names: Vec<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let patch: serde_json::Value = match body.kind {
        BodyType::MergePatch | BodyType::Document(Format::Json) => {
            serde_json::from_slice(&body.bytes)
                .map_err(|e| ApiError::bad_request(format!("merge patch is not valid JSON: {e}")))?
        }
        BodyType::Document(Format::Yaml) => {
            let text = std::str::from_utf8(&body.bytes)
                .map_err(|_| ApiError::bad_request("YAML body is not UTF-8"))?;
            v1beta1::convert::check_yaml_nesting(text)?;
            yaml_serde::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("merge patch is not valid YAML: {e}")))?
        }
    };
    if !patch.is_object() {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    }
    refuse_unknown_deletions(kind, &patch)?;
    let patch_rv = match patch.pointer("/metadata/resourceVersion") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => v1beta1::convert::resource_version(Some(s))?,
        Some(_) => {
            return Err(ApiError::bad_field(
                "metadata.resourceVersion",
                "resourceVersion must be a string",
            ));
        }
    };
    let client_pre = precondition(patch_rv, &headers)?;
    let path = Path::new(kind, names);
    // The privileged-field policy looks at the merged object, inside the
    // transaction; the space whose defaults it inherits is read before.
    // The merged document holds the stored finalizers unless the patch
    // changed them.
    let part = match part {
        Part::Main => Part::MainAndFinalizers,
        other => other,
    };
    let policy = if writes_main(part) && !identity.may_privileged() {
        Some((identity.clone(), inherited_space(&state, &path).await?))
    } else {
        None
    };
    // The merge runs inside the write transaction, on the stored object:
    // concurrent patches serialize instead of conflicting.
    let target = path.clone();
    let update: crate::store::UpdateFn = std::sync::Arc::new(move |current: &AnyObject| {
        let mut doc = v1beta1::to_value(current);
        merge_patch(&mut doc, &patch);
        let merged = v1beta1::decode_value(kind, doc)
            .map_err(ApiError::from)
            .and_then(|d| prepare(part, &target, d.object));
        let merged = merged.map_err(|e| StoreError::Rejected {
            invalid: e.status == StatusCode::UNPROCESSABLE_ENTITY,
            field: e.field,
            message: e.detail,
        })?;
        if let Some((identity, space)) = &policy
            && let Some(f) = identity.refused_field(&merged, space.as_ref())
        {
            let e = forbidden(identity, &f);
            return Err(StoreError::Forbidden {
                field: f.field.clone(),
                message: e.detail,
            });
        }
        Ok(merged)
    });
    let outcome = state
        .store
        .write(WriteOp::Update {
            path,
            part,
            precondition: client_pre,
            update,
        })
        .await?;
    Ok(render_object(&outcome.object, &headers, StatusCode::OK))
}

/// DELETE an object (`?cascade=true`: with its subtree).
pub async fn delete_object(
    state: AppState,
    kind: Kind,
    names: Vec<String>,
    params: ItemParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cascade = flag("cascade", params.cascade.as_deref())?;
    let pre = precondition(None, &headers)?;
    let outcome = state
        .store
        .write(WriteOp::Delete {
            path: Path::new(kind, names),
            cascade,
            precondition: pre,
        })
        .await?;
    // An object that stays (terminating, until its finalizers and children
    // are gone) is answered with 202.
    let status = if outcome.object.meta().is_terminating() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(render_object(&outcome.object, &headers, status))
}

/// Builds the list query from the path scope and the parameters.
fn list_query(
    kind: Kind,
    path_scope: Vec<String>,
    params: &ListParams,
) -> Result<ListQuery, ApiError> {
    let query_scope = [&params.realm, &params.space, &params.stack, &params.cell];
    let depth = kind.depth() - 1;
    let mut scope: Vec<Option<String>> = path_scope.into_iter().map(Some).collect();
    let scoped_by_path = !scope.is_empty();
    for (i, (name, value)) in ["realm", "space", "stack", "cell"]
        .iter()
        .zip(query_scope)
        .enumerate()
    {
        let Some(v) = value else { continue };
        if scoped_by_path {
            return Err(ApiError::bad_field(
                *name,
                format!(
                    "?{name}= narrows cross-scope lists only; this collection is scoped by its path"
                ),
            ));
        }
        if i >= depth {
            return Err(ApiError::bad_field(
                *name,
                format!("{} are not scoped by {name}", kind.plural()),
            ));
        }
        crate::model::validate_name(name, v)
            .map_err(|e| ApiError::bad_field(*name, e.to_string()))?;
        scope.resize(i + 1, None);
        scope[i] = Some(v.clone());
    }
    let selector = super::watch::selector_of(
        params.label_selector.as_deref(),
        params.field_selector.as_deref(),
    )?;
    let limit = match params.limit.as_deref() {
        None => None,
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::bad_field(
                "limit",
                format!("limit={l:?}: expected a non-negative integer"),
            )
        })?),
    };
    Ok(ListQuery {
        kind,
        scope,
        selector,
        limit: limit.filter(|l| *l > 0),
        continue_token: params.continue_token.clone().filter(|t| !t.is_empty()),
    })
}

/// GET a collection (scoped by `parent`, or cross-scope with `?realm=`...).
pub async fn list_objects(
    state: AppState,
    kind: Kind,
    parent: Vec<String>,
    params: ListParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = list_query(kind, parent, &params)?;
    if flag("watch", params.watch.as_deref())? {
        if query.limit.is_some() || query.continue_token.is_some() || params.view.is_some() {
            return Err(ApiError::bad_request(
                "watch takes no limit, continue or view",
            ));
        }
        let filter = crate::watch::Filter {
            kinds: vec![kind],
            scope: query.scope,
            selector: query.selector,
        };
        let start = super::watch::start_of(params.resource_version.as_deref(), &headers)?;
        let timeout = super::watch::timeout_of(params.timeout_seconds.as_deref())?;
        return super::watch::respond(&state, filter, start, timeout, &headers).await;
    }
    let effective = effective_view(kind, params.view.as_deref())?;
    if query.limit.is_some() || query.continue_token.is_some() || wants_yaml(&headers) {
        let page = state.store.list_page(query).await?;
        let mut items = page.items;
        if effective {
            // One read per distinct space, off the async workers: a page
            // may span many spaces.
            let store = state.store.clone();
            items = tokio::task::spawn_blocking(move || {
                let snapshot = store.snapshot()?;
                let mut spaces = Spaces::default();
                for item in &mut items {
                    spaces.apply(&snapshot, item)?;
                }
                Ok::<_, StoreError>(items)
            })
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))??;
        }
        let list = ListBody {
            api_version: v1beta1::API_VERSION.into(),
            kind: list_kind_name(kind),
            metadata: ListMeta {
                resource_version: page.revision.to_string(),
                continue_token: page.continue_token,
            },
            items: items.iter().map(v1beta1::encode).collect(),
        };
        return Ok(render(&list, wants_yaml(&headers), StatusCode::OK));
    }
    let committing = state.store.committing_revision();
    // `u64::MAX`: the engine's feed can never prove a cache current (etcd).
    let cache_key = (!effective && committing != u64::MAX).then(|| {
        ListKey::new(
            kind,
            &query.scope,
            params.label_selector.as_deref(),
            params.field_selector.as_deref(),
        )
    });
    if let Some((revision, items)) = cache_key
        .as_ref()
        .and_then(|k| state.lists.get(k, committing))
    {
        let mut chunks = Vec::with_capacity(items.len() + 2);
        chunks.push(Bytes::from(list_head(kind, revision)));
        chunks.extend(items.iter().cloned());
        chunks.push(Bytes::from_static(LIST_TAIL));
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
        return Ok(json_stream(axum::body::Body::from_stream(stream)));
    }
    stream_list(state, kind, query, effective, cache_key).await
}

fn json_stream(body: axum::body::Body) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Streams a whole list as JSON from one snapshot, a chunk at a time, so
/// memory does not grow with the list; with `cache_key`, the rendered items
/// are also kept in the list cache, if small enough.
async fn stream_list(
    state: AppState,
    kind: Kind,
    query: ListQuery,
    effective: bool,
    cache_key: Option<ListKey>,
) -> Result<Response, ApiError> {
    const CHUNK: usize = 256 * 1024;
    // Room for the document that crosses the mark; what is spare is held
    // (and counted) by a cached list.
    const CAPACITY: usize = CHUNK + CHUNK / 8;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let (opened_tx, opened_rx) = oneshot::channel::<Result<(), StoreError>>();
    let store = state.store.clone();
    let docs = state.docs.clone();
    let lists = state.lists.clone();
    tokio::task::spawn_blocking(move || {
        let opened = store.snapshot().and_then(|s| Ok((s.list(&query)?, s)));
        let (iter, snapshot) = match opened {
            Ok(opened) => {
                let _ = opened_tx.send(Ok(()));
                opened
            }
            Err(e) => {
                let _ = opened_tx.send(Err(e));
                return;
            }
        };
        let revision = iter.revision();
        let mut buf = Vec::with_capacity(CAPACITY);
        buf.extend_from_slice(list_head(kind, revision).as_bytes());
        // Where this chunk's items start (after the head in the first one).
        let mut items_from = buf.len();
        // The items' chunks for the cache, while they fit in it.
        let mut kept = cache_key.map(|key| (key, Vec::new(), 0usize));
        let mut spaces = Spaces::default();
        let mut first = true;
        let mut iter = iter;
        while let Some(entry) = iter.next_raw() {
            let fail = |e: StoreError| {
                tracing::error!(error = %e, "list stream failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            };
            let entry = match entry {
                Ok(e) => e,
                Err(e) => return fail(e),
            };
            if !first {
                buf.push(b',');
            }
            first = false;
            let rev = entry.resource_version;
            match (effective, docs.get(kind, &entry.key, rev)) {
                (false, Some(json)) => buf.extend_from_slice(&json),
                _ => {
                    let mut obj = match entry.object() {
                        Ok(o) => o,
                        Err(e) => return fail(e),
                    };
                    if effective && let Err(e) = spaces.apply(&snapshot, &mut obj) {
                        return fail(e);
                    }
                    let json =
                        serde_json::to_vec(&v1beta1::encode(&obj)).expect("documents serialize");
                    buf.extend_from_slice(&json);
                    if !effective {
                        docs.insert(kind, entry.key, rev, Bytes::from(json));
                    }
                }
            }
            if buf.len() >= CHUNK {
                let held = buf.capacity();
                let chunk = Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(CAPACITY)));
                keep(
                    &mut kept,
                    chunk.slice(items_from..),
                    held,
                    lists.max_entry(),
                );
                items_from = 0;
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
        }
        buf.extend_from_slice(LIST_TAIL);
        if kept.is_some() {
            // The last chunk is mostly spare room: do not cache that.
            buf.shrink_to_fit();
        }
        let held = buf.capacity();
        let last = Bytes::from(buf);
        keep(
            &mut kept,
            last.slice(items_from..last.len() - LIST_TAIL.len()),
            held,
            lists.max_entry(),
        );
        if let Some((key, items, held)) = kept {
            lists.insert(key, revision, items, held);
        }
        let _ = tx.blocking_send(Ok(last));
    });
    opened_rx
        .await
        .map_err(|_| ApiError::from(StoreError::Internal("list task ended early".into())))??;
    Ok(json_stream(axum::body::Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

/// Adds a chunk of items (in a buffer of `held` bytes) to those kept for
/// the list cache, or gives up keeping them once they hold over `max`.
fn keep(kept: &mut Option<(ListKey, Vec<Bytes>, usize)>, items: Bytes, held: usize, max: usize) {
    if let Some((_, chunks, bytes)) = kept {
        *bytes += held;
        if *bytes > max {
            *kept = None;
        } else if !items.is_empty() {
            chunks.push(items);
        }
    }
}
