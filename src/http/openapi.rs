//! The OpenAPI 3.1 document: its `paths` come from the route table the
//! router is built from ([`super::routes`]), one operation per route (the
//! `*_operation` builders here), and its schemas are derived from the
//! v1beta1 wire types.

use std::sync::OnceLock;

use axum::http::Method;
use serde_json::Value;
use utoipa::OpenApi as _;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, ObjectBuilder, SchemaType, Type,
};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, InfoBuilder, OpenApi, PathsBuilder, Ref, RefOr, Required,
    ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

use crate::api::v1beta1::tokens::{TokenCreated, TokenInfo, TokenList, TokenRequest};
use crate::api::v1beta1::types::*;
use crate::api::v1beta1::{Problem, Reason, WatchEvent};
use crate::model::Kind;

#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    Realm,
    Space,
    Stack,
    Cell,
    Container,
    RealmList,
    SpaceList,
    StackList,
    CellList,
    ContainerList,
    ObjectMeta,
    ListMeta,
    Problem,
    Reason,
    ApplyResult,
    ApplyItem,
    TokenRequest,
    TokenInfo,
    TokenCreated,
    TokenList
)))]
struct Schemas;

/// A label key as Kubernetes defines it: an optional DNS-subdomain
/// prefix of at most 253 characters and `/`, then a name of 1 to 63.
const LABEL_KEY_PATTERN: &str = r"^((?=[^/]{1,253}/)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// The document (built once).
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(build)
}

/// The document as pretty JSON with a trailing newline (what
/// `modelhub openapi` prints and `openapi/v1beta1.json` holds).
pub fn to_json() -> String {
    let mut s = serde_json::to_string_pretty(document()).expect("the document serializes");
    s.push('\n');
    s
}

const JSON: &str = "application/json";
const YAML: &str = "application/yaml";
const PROBLEM: &str = "application/problem+json";
const NDJSON: &str = "application/x-ndjson";
const SSE: &str = "text/event-stream";
const MERGE_PATCH: &str = "application/merge-patch+json";

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// A reference to the watch event's schema.
fn watch_event_ref() -> RefOr<Schema> {
    schema_ref(&WatchEvent::<AnyDocument>::name())
}

fn string_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .into()
}

fn example(kind: Kind) -> Option<Value> {
    let yaml = match kind {
        Kind::Realm => include_str!("../../tests/fixtures/examples/realm.yaml"),
        Kind::Space => include_str!("../../tests/fixtures/examples/space.yaml"),
        Kind::Stack => include_str!("../../tests/fixtures/examples/stack.yaml"),
        Kind::Cell => include_str!("../../tests/fixtures/examples/cell.yaml"),
        Kind::Container => include_str!("../../examples/manifests/container.yaml"),
    };
    yaml_serde::from_str(yaml).ok()
}

fn problem(status: u16, when: &str) -> (String, ResponseBuilder) {
    (
        status.to_string(),
        ResponseBuilder::new().description(when).content(
            PROBLEM,
            ContentBuilder::new()
                .schema(Some(schema_ref("Problem")))
                .build(),
        ),
    )
}

fn errors(op: OperationBuilder, list: &[(u16, &str)]) -> OperationBuilder {
    let mut op = op;
    for (status, when) in list.iter().chain(&[
        (500, "a server fault (details in the server log)"),
        (
            503,
            "the server is shutting down or recovering from a storage failure: nothing was \
             written; retry (Retry-After)",
        ),
    ]) {
        let (code, resp) = problem(*status, when);
        op = op.response(code, resp.build());
    }
    op
}

/// [`errors`], and the answers of a write that storage refuses or cannot
/// finish.
fn write_errors(op: OperationBuilder, list: &[(u16, &str)]) -> OperationBuilder {
    let mut op = errors(op, list);
    for (status, when) in [
        (
            504,
            "OutcomeUnknown: storage failed while the write was being made durable; it may or \
             may not have been applied: read back before retrying",
        ),
        (
            507,
            "InsufficientStorage: free space is below the reserve, the quota is used up, or the \
             disk is full; nothing was written (deletes are still accepted)",
        ),
    ] {
        let (code, resp) = problem(status, when);
        op = op.response(code, resp.build());
    }
    op
}

fn document_response(description: &str, schema: &str, etag: bool) -> ResponseBuilder {
    let mut r = ResponseBuilder::new()
        .description(description)
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(schema_ref(schema)))
                .build(),
        )
        .content(
            YAML,
            ContentBuilder::new()
                .schema(Some(schema_ref(schema)))
                .build(),
        );
    if etag {
        r = r.header(
            "ETag",
            HeaderBuilder::new()
                .schema(Some(string_schema()))
                .description(Some("The object's resourceVersion, quoted."))
                .build(),
        );
    }
    r
}

/// The spec field of a document that holds the name of its ancestor `kind`.
fn ancestor_field(kind: Kind) -> String {
    format!("{}Id", kind.as_str().to_ascii_lowercase())
}

/// OpenAPI links from a response carrying a `kind` document to the
/// operations on that object and to creating its children, so that
/// clients (and Schemathesis' stateful tests) can follow a create down the
/// hierarchy. Path parameters come from the body: the object's
/// `metadata.name` and its ancestors' names in `spec.<kind>Id`. Listing the
/// children is not linked: a list under a missing parent is an empty list
/// (as Kubernetes answers for a missing namespace), not the object's 404.
fn links(kind: Kind, mut r: ResponseBuilder) -> ResponseBuilder {
    let singular = kind.as_str().to_ascii_lowercase();
    let own: Vec<(String, String)> = Kind::ALL
        .iter()
        .filter(|k| **k < kind)
        .map(|k| {
            (
                k.as_str().to_ascii_lowercase(),
                format!("$response.body#/spec/{}", ancestor_field(*k)),
            )
        })
        .chain([(singular.clone(), "$response.body#/metadata/name".into())])
        .collect();
    let link = |op: String| {
        let mut l = LinkBuilder::new().operation_id(op);
        for (name, expr) in &own {
            l = l.parameter(name.clone(), expr.clone());
        }
        l.build()
    };
    let ops = ["get", "replace", "patch", "delete"]
        .iter()
        .map(|verb| format!("{verb}_{singular}"))
        .chain(
            ["get", "replace", "patch"]
                .iter()
                .map(|verb| format!("{verb}_{singular}_status")),
        );
    for op in ops {
        r = r.link(op.clone(), link(op));
    }
    if let Some(child) = kind.child() {
        let lower = child.as_str().to_ascii_lowercase();
        r = r.link(format!("create_{lower}"), link(format!("create_{lower}")));
    }
    r
}

/// The schema of a create's body: the document, with `metadata.name`
/// required (other writes take the name from the URL).
fn create_schema(kind: Kind) -> RefOr<Schema> {
    let name = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .min_length(Some(1));
    let metadata = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .property("name", name)
        .required("name");
    AllOfBuilder::new()
        .item(schema_ref(kind.as_str()))
        .item(
            ObjectBuilder::new()
                .property("metadata", metadata)
                .required("metadata"),
        )
        .into()
}

/// The schema of a merge patch: the document's top-level fields, each
/// `null` (delete) or a partial value. Below the top level the schema
/// leaves the patch free: a `null` anywhere deletes (RFC 7396), which the
/// document's own schema cannot say. The server still refuses unknown
/// fields and invalid results, naming the field.
fn patch_schema(kind: Kind) -> RefOr<Schema> {
    let partial = |what: &str| {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
            .description(Some(format!(
                "Partial {what} (see the {} schema); `null` deletes.",
                kind.as_str()
            )))
    };
    let exactly = |value: &str| {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .pattern(Some(format!("^({value})?$")))
    };
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .description(Some(format!(
            "A JSON merge patch of a {} document.",
            kind.as_str()
        )))
        .property("apiVersion", exactly(crate::api::v1beta1::API_VERSION))
        .property("kind", exactly(kind.as_str()))
        .property(
            "metadata",
            partial("metadata; `resourceVersion` in it is a precondition"),
        )
        .property("spec", partial("spec"))
        .property("status", partial("status"))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

fn request_body(kind: Kind, patch: bool, sub: Sub, create: bool) -> RequestBodyBuilder {
    let example = example(kind);
    let content = |ex: Option<Value>| {
        let schema = if create {
            create_schema(kind)
        } else if patch {
            patch_schema(kind)
        } else {
            schema_ref(kind.as_str())
        };
        ContentBuilder::new()
            .schema(Some(schema))
            .example(if sub == Sub::Main { ex } else { None })
            .build()
    };
    let mut b = RequestBodyBuilder::new().required(Some(Required::True));
    if patch {
        b = b
            .description(Some(
                "A JSON merge patch (RFC 7396) of the document; `metadata.resourceVersion` in it is a precondition.",
            ))
            .content(MERGE_PATCH, content(None))
            .content(JSON, content(None));
    } else {
        b = b
            .description(Some(match sub {
                Sub::Status => {
                    "A document of which only `status` (and `metadata.resourceVersion` as a precondition) is read."
                }
                Sub::Finalizers => {
                    "A document of which only `metadata.finalizers` (and `metadata.resourceVersion` as a precondition) is read; leaving them out removes them all."
                }
                Sub::Main if create => {
                    "The whole document; unknown fields are rejected, `status` is ignored."
                }
                Sub::Main => {
                    "The whole document; unknown fields are rejected, `status` is ignored on replace; `metadata.finalizers` left out keeps the stored ones."
                }
            }))
            .content(JSON, content(example.clone()))
            .content(YAML, content(example));
    }
    b
}

fn path_param(name: &str, description: String) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(string_schema()))
        .build()
}

/// A resource name: no `_`, `/` or control characters, not `.` or `..`,
/// no surrounding whitespace, at most 253 bytes.
pub const NAME_PATTERN: &str =
    r"^(?!\.\.?$)[^_/\s\x00-\x1f\x7f-\x9f]([^_/\x00-\x1f\x7f-\x9f]*[^_/\s\x00-\x1f\x7f-\x9f])?$";

fn name_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(NAME_PATTERN))
        .max_length(Some(253))
        .into()
}

fn name_query_param(name: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(format!("Only objects under this {name}.")))
        .schema(Some(name_schema()))
        .build()
}

fn query_param(name: &str, ty: Type, description: &str) -> utoipa::openapi::path::Parameter {
    let schema = match ty {
        Type::Integer => ObjectBuilder::new()
            .schema_type(SchemaType::Type(ty))
            .minimum(Some(0)),
        // Flags read `true`/`false` and also `1`/`0`, as Go's clients send.
        Type::Boolean => ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Boolean, Type::Integer]))
            .minimum(Some(0))
            .maximum(Some(1)),
        _ => ObjectBuilder::new().schema_type(SchemaType::Type(ty)),
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn path_params(kind: Kind, with_self: bool) -> Vec<utoipa::openapi::path::Parameter> {
    Kind::ALL
        .iter()
        .filter(|k| **k < kind || (with_self && **k == kind))
        .map(|k| {
            let lower = k.as_str().to_ascii_lowercase();
            path_param(&lower, format!("{} name", k.as_str()))
        })
        .collect()
}

fn list_params(kind: Kind, cross_scope: bool) -> Vec<utoipa::openapi::path::Parameter> {
    let mut p = vec![
        query_param(
            "labelSelector",
            Type::String,
            "Label selector: `k=v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated (AND).",
        ),
        query_param(
            "fieldSelector",
            Type::String,
            "Field selector: `status.state=X`, `status.state!=X`, `metadata.terminating=true|false` \
             (`==` and `!=` too), comma-separated (AND), combined with the label selector (AND); \
             any other field is 400 naming it. A watch follows objects in and out of the \
             selection (ADDED, DELETED).",
        ),
        query_param(
            "limit",
            Type::Integer,
            "Page size; a `continue` token is returned when more items remain.",
        ),
        optional_string(
            "continue",
            ParameterIn::Query,
            "Token of the previous page (same snapshot; expires: 410).",
            "^([0-9a-f]{1,16}\\.([0-9a-f]{2})+)?$",
        ),
        query_param(
            "watch",
            Type::Boolean,
            "Stream events (NDJSON, or SSE with `Accept: text/event-stream`) instead of listing.",
        ),
        query_param(
            "resourceVersion",
            Type::String,
            "Watch: every event after this revision (410 if compacted or newer than the current revision). Without it: a snapshot of ADDED events, then a BOOKMARK.",
        ),
        query_param(
            "timeoutSeconds",
            Type::Integer,
            "Watch: end the stream after this many seconds.",
        ),
    ];
    if matches!(kind, Kind::Container | Kind::Cell) {
        p.push(view_param());
    }
    if cross_scope {
        for k in Kind::ALL.iter().filter(|k| **k < kind) {
            p.push(name_query_param(&k.as_str().to_ascii_lowercase()));
        }
    }
    p
}

fn view_param() -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name("view")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some("`effective`: the container spec (a cell's: each of its containers) with its space's defaults applied (the stored object is unchanged)."))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some(["effective"])),
        ))
        .build()
}

fn list_response(kind: Kind) -> ResponseBuilder {
    let list = format!("{}List", kind.as_str());
    document_response(
        "The list, from one snapshot, ordered by path; or, with `watch=true`, an event stream.",
        &list,
        false,
    )
    .content(
        NDJSON,
        ContentBuilder::new()
            .schema(Some(watch_event_ref()))
            .build(),
    )
    .content(
        SSE,
        ContentBuilder::new()
            .schema(Some(watch_event_ref()))
            .build(),
    )
}

fn tag(kind: Kind) -> String {
    format!("{}s", kind.as_str())
}

/// An operation on `kind`'s objects, tagged with the kind.
fn kind_operation(kind: Kind, id: String, summary: String) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .summary(Some(summary))
        .tag(tag(kind))
}

/// An operation on one object: id `{verb}_{kind}{suffix}` (`get_cell_status`).
fn object_operation(kind: Kind, verb: &str, suffix: &str, summary: String) -> OperationBuilder {
    let singular = kind.as_str().to_ascii_lowercase();
    kind_operation(kind, format!("{verb}_{singular}{suffix}"), summary)
}

/// The errors of a list or watch.
const LIST_ERRORS: &[(u16, &str)] = &[
    (400, "a malformed parameter"),
    (
        410,
        "the continue token expired, or the watch revision is gone",
    ),
];

/// The errors of a replace or patch.
const WRITE_ERRORS: &[(u16, &str)] = &[
    (
        400,
        "malformed body, unknown field, or coordinates that contradict the URL",
    ),
    (404, "no such object"),
    (
        409,
        "the resourceVersion precondition failed (Conflict), or the object is being deleted and \
         refuses spec, label and added-finalizer changes (Terminating); nothing was written",
    ),
    (413, "the body is too large"),
    (415, "unsupported Content-Type"),
    (422, "a validation rule failed (`field` names it)"),
];

/// The `If-Match` precondition header.
fn if_match_param() -> utoipa::openapi::path::Parameter {
    optional_string(
        "If-Match",
        ParameterIn::Header,
        "Precondition: the quoted resourceVersion the client last read (`*`: any).",
        r#"^(\*|(W/)?"?[0-9]+"?)?$"#,
    )
}

/// An optional string parameter that must match `pattern`.
fn optional_string(
    name: &str,
    at: ParameterIn,
    description: &str,
    pattern: &str,
) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(at)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .pattern(Some(pattern)),
        ))
        .build()
}

/// `GET` a collection: list or watch the objects of one parent.
pub(super) fn list_operation(kind: Kind) -> Operation {
    let plural = kind.plural();
    let parent_desc = kind.parent().map(|p| p.as_str()).unwrap_or("");
    let list = errors(
        kind_operation(
            kind,
            format!("list_{plural}"),
            format!("List or watch the {plural} of one {parent_desc}"),
        )
        .parameters(Some(
            path_params(kind, false)
                .into_iter()
                .chain(list_params(kind, false)),
        ))
        .response("200", list_response(kind).build()),
        LIST_ERRORS,
    );
    let list = if kind == Kind::Realm {
        list.summary(Some("List or watch every realm"))
    } else {
        list
    };
    list.build()
}

/// `POST` to a collection: create.
pub(super) fn create_operation(kind: Kind) -> Operation {
    let name = kind.as_str();
    write_errors(
        object_operation(kind, "create", "", format!("Create a {name}"))
            .parameters(Some(path_params(kind, false)))
            .request_body(Some(request_body(kind, false, Sub::Main, true).build()))
            .response(
                "201",
                links(
                    kind,
                    document_response(&format!("The created {name}."), name, true),
                )
                .build(),
            ),
        &[
            (
                400,
                "malformed body, unknown field, or coordinates that contradict the URL",
            ),
            (404, "the parent does not exist"),
            (
                409,
                "an object with that name exists (AlreadyExists), or an ancestor is being deleted (Terminating)",
            ),
            (413, "the body is too large"),
            (415, "unsupported Content-Type"),
            (422, "a validation rule failed (`field` names it)"),
        ],
    )
    .build()
}

/// `GET` one object.
pub(super) fn get_operation(kind: Kind) -> Operation {
    let name = kind.as_str();
    let mut params = path_params(kind, true);
    if matches!(kind, Kind::Container | Kind::Cell) {
        params.push(view_param());
    }
    errors(
        object_operation(kind, "get", "", format!("Read a {name}"))
            .parameters(Some(params))
            .response(
                "200",
                document_response(&format!("The {name}."), name, true).build(),
            ),
        &[(400, "a malformed parameter"), (404, "no such object")],
    )
    .build()
}

/// What part of an object a write route writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sub {
    /// Labels and spec (and finalizers, when given).
    Main,
    /// The status subresource.
    Status,
    /// The finalizers subresource.
    Finalizers,
}

/// `PUT` (`patch` false) or `PATCH` an object, its status or its
/// finalizers.
fn write_operation(kind: Kind, sub: Sub, patch: bool) -> Operation {
    let name = kind.as_str();
    let verb = if patch { "patch" } else { "replace" };
    let (suffix, what) = match sub {
        Sub::Main => ("", format!("a {name}")),
        Sub::Status => ("_status", format!("the status of a {name}")),
        Sub::Finalizers => ("_finalizers", format!("the finalizers of a {name}")),
    };
    let summary = if patch {
        format!("Merge-patch {what}")
    } else {
        format!("Replace {what}")
    };
    write_errors(
        object_operation(kind, verb, suffix, summary)
            .parameters(Some(
                path_params(kind, true)
                    .into_iter()
                    .chain([if_match_param()]),
            ))
            .request_body(Some(request_body(kind, patch, sub, false).build()))
            .response(
                "200",
                document_response(
                    &match sub {
                        Sub::Finalizers => format!(
                            "The {name} after the write (its last state, with \
                             `deletionTimestamp`, if removing its last finalizer removed it)."
                        ),
                        _ => format!("The {name} after the write."),
                    },
                    name,
                    true,
                )
                .build(),
            ),
        WRITE_ERRORS,
    )
    .build()
}

/// `PUT` an object, its status or its finalizers.
pub(super) fn replace_operation(kind: Kind, sub: Sub) -> Operation {
    write_operation(kind, sub, false)
}

/// `PATCH` an object, its status or its finalizers.
pub(super) fn patch_operation(kind: Kind, sub: Sub) -> Operation {
    write_operation(kind, sub, true)
}

/// `DELETE` an object.
pub(super) fn delete_operation(kind: Kind) -> Operation {
    let name = kind.as_str();
    write_errors(
        object_operation(kind, "delete", "", format!("Delete a {name}"))
            .parameters(Some(path_params(kind, true).into_iter().chain([
                query_param(
                    "cascade",
                    Type::Boolean,
                    "Also delete every object below it (children first). A subtree without finalizers goes in one transaction; otherwise the object is marked (202) and the rest follows as finalizers are removed.",
                ),
                if_match_param(),
            ])))
            .response(
                "200",
                document_response(
                    "The last state of the object, at the deletion's revision: it is gone.",
                    name,
                    true,
                )
                .build(),
            )
            .response(
                "202",
                document_response(
                    "The object, marked for deletion (`metadata.deletionTimestamp`): it stays, \
                     terminating, until its finalizers and its children are gone. A second \
                     DELETE answers the same and changes nothing.",
                    name,
                    true,
                )
                .build(),
            ),
        &[
            (400, "a malformed parameter"),
            (404, "no such object"),
            (
                409,
                "it still has children that are not terminating (HasChildren: use cascade=true), or the precondition failed",
            ),
        ],
    )
    .build()
}

/// `GET` an object's status subresource.
pub(super) fn get_status_operation(kind: Kind) -> Operation {
    let name = kind.as_str();
    errors(
        object_operation(
            kind,
            "get",
            "_status",
            format!("Read a {name} (status subresource)"),
        )
        .parameters(Some(path_params(kind, true)))
        .response(
            "200",
            document_response(&format!("The {name}."), name, true).build(),
        ),
        &[(404, "no such object")],
    )
    .build()
}

/// `GET` the objects of `kind` across scopes.
pub(super) fn list_all_operation(kind: Kind) -> Operation {
    let plural = kind.plural();
    errors(
        kind_operation(
            kind,
            format!("list_all_{plural}"),
            format!("List or watch {plural} across scopes"),
        )
        .parameters(Some(list_params(kind, true)))
        .response("200", list_response(kind).build()),
        LIST_ERRORS,
    )
    .build()
}

/// `GET` the watch over every kind.
pub(super) fn watch_operation() -> Operation {
    let mut watch_params = vec![query_param(
        "kind",
        Type::String,
        "Kinds, comma-separated (Realm, Space, Stack, Cell, Container; plural and lower case accepted).",
    )];
    for k in ["realm", "space", "stack", "cell"] {
        watch_params.push(name_query_param(k));
    }
    watch_params.extend(list_params(Kind::Realm, false).into_iter().filter(|p| {
        [
            "labelSelector",
            "fieldSelector",
            "resourceVersion",
            "timeoutSeconds",
        ]
        .contains(&p.name.as_str())
    }));
    errors(
        OperationBuilder::new()
            .operation_id(Some("watch"))
            .summary(Some("Watch every kind"))
            .description(Some(
                "One stream of events for all kinds, narrowed by kind and scope. The status and headers are sent \
                 at once. Without resourceVersion: an ADDED per object in scope (one snapshot), a BOOKMARK, then \
                 live events; BOOKMARKs at least every 10 s on idle streams.",
            ))
            .tag("Watch")
            .parameters(Some(watch_params))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The event stream.")
                    .content(NDJSON, ContentBuilder::new().schema(Some(watch_event_ref())).build())
                    .content(SSE, ContentBuilder::new().schema(Some(watch_event_ref())).build())
                    .build(),
            ),
        &[(400, "a malformed parameter"), (410, "the revision was compacted, or is newer than the current one")],
    )
    .build()
}

/// `POST` manifests to apply.
pub(super) fn apply_operation() -> Operation {
    let apply_example: Value =
        yaml_serde::from_str::<Value>(include_str!("../../tests/fixtures/examples/realm.yaml"))
            .unwrap_or(Value::Null);
    write_errors(
        OperationBuilder::new()
            .operation_id(Some("apply"))
            .summary(Some("Apply manifests"))
            .description(Some(
                "A YAML stream of `---`-separated documents, one JSON document or a JSON array. Each document is \
                 placed by its name and spec coordinates, created if missing or configured (labels and spec \
                 replaced); all commit in one transaction or none does.",
            ))
            .tag("Apply")
            .parameter(query_param("dryRun", Type::Boolean, "Validate and report without writing."))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(YAML, ContentBuilder::new().schema(Some(string_schema())).build())
                    .content(
                        JSON,
                        ContentBuilder::new()
                            .schema(Some(
                                utoipa::openapi::schema::OneOfBuilder::new()
                                    .item(ObjectBuilder::new().schema_type(SchemaType::Type(Type::Object)))
                                    .item(utoipa::openapi::schema::ArrayBuilder::new().items(
                                        ObjectBuilder::new().schema_type(SchemaType::Type(Type::Object)),
                                    )),
                            ))
                            .example(Some(apply_example))
                            .build(),
                    )
                    .build(),
            ))
            .response("200", document_response("What happened to each document, in order.", "ApplyResult", false).build()),
        &[
            (400, "malformed body, unknown kind, apiVersion or field (`documents[i]...`)"),
            (404, "a parent is neither stored nor earlier in the request"),
            (409, "a conflict"),
            (413, "the body is too large"),
            (415, "unsupported Content-Type"),
            (422, "a validation rule failed (`documents[i]...`)"),
        ],
    )
    .build()
}

/// A plain-text operational endpoint.
fn text_operation(id: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .summary(Some(summary))
        .tag("Operations")
        .response(
            "200",
            ResponseBuilder::new()
                .description("OK")
                .content(
                    "text/plain",
                    ContentBuilder::new().schema(Some(string_schema())).build(),
                )
                .build(),
        )
}

/// `GET /healthz`.
pub(super) fn healthz_operation() -> Operation {
    text_operation("healthz", "Liveness").build()
}

/// `GET /readyz`.
pub(super) fn readyz_operation() -> Operation {
    errors(
        text_operation(
            "readyz",
            "Readiness: each check by name (`[+]reads ok`, `[-]writes refused: ...`); 200 \
             while reads work, even when writes are refused",
        ),
        &[],
    )
    .build()
}

/// `GET /readyz/<check>`.
pub(super) fn readyz_check_operation(check: &str, summary: &str) -> Operation {
    errors(text_operation(&format!("readyz_{check}"), summary), &[]).build()
}

/// `GET /metrics`.
pub(super) fn metrics_operation() -> Operation {
    text_operation("metrics", "Prometheus metrics").build()
}

/// `GET /api/v1beta1/backup`.
pub(super) fn backup_operation() -> Operation {
    let line = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .description(Some(
            "One line: the header, an object's v1beta1 document, or the trailer.",
        ))
        .build();
    errors(
        OperationBuilder::new()
            .operation_id(Some("backup"))
            .summary(Some("Back up the whole store"))
            .description(Some(
                "Every object at one revision, from one consistent snapshot, streamed as NDJSON while writes \
                 go on: a header line (format, version, revision, createdAt), one line per object (its \
                 document as GET returns it, parents first), then a trailer with the object count and the \
                 CRC-32 of everything before it. A stream that fails midway ends abnormally, without a \
                 trailer. Restore it offline with `modelhub restore`. The format is in API.md, \"Backup \
                 format\".",
            ))
            .tag("Operations")
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The backup, streamed.")
                    .content(NDJSON, ContentBuilder::new().schema(Some(line)).build())
                    .build(),
            ),
        &[],
    )
    .build()
}

fn json_response(description: &str, schema: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(schema_ref(schema)))
                .build(),
        )
        .build()
}

/// A token's name in the path.
fn token_name_param() -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name("name")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The token's name"))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .pattern(Some("^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$"))
                .build(),
        ))
        .build()
}

/// `POST /api/v1beta1/tokens`.
pub(super) fn token_create_operation() -> Operation {
    write_errors(
        OperationBuilder::new()
            .operation_id(Some("createToken"))
            .summary(Some("Create a token (admin)"))
            .description(Some(
                "Generates a 256-bit bearer token with a role (admin, writer, controller, reader), \
                 optionally limited to realms and granted privileged fields. The token is in this \
                 answer only: the server keeps its SHA-256 digest.",
            ))
            .tag("Tokens")
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        JSON,
                        ContentBuilder::new()
                            .schema(Some(schema_ref("TokenRequest")))
                            .build(),
                    )
                    .build(),
            ))
            .response(
                "201",
                json_response("The token, shown once.", "TokenCreated"),
            ),
        &[
            (400, "a malformed request"),
            (409, "a token of that name exists"),
            (422, "an invalid name, role or realm"),
        ],
    )
    .build()
}

/// `GET /api/v1beta1/tokens`.
pub(super) fn token_list_operation() -> Operation {
    errors(
        OperationBuilder::new()
            .operation_id(Some("listTokens"))
            .summary(Some("List tokens (admin), without their secrets"))
            .tag("Tokens")
            .response("200", json_response("Every token.", "TokenList")),
        &[],
    )
    .build()
}

/// `DELETE /api/v1beta1/tokens/{name}`.
pub(super) fn token_revoke_operation() -> Operation {
    write_errors(
        OperationBuilder::new()
            .operation_id(Some("revokeToken"))
            .summary(Some("Revoke a token (admin)"))
            .description(Some(
                "Refused from the next request on, on every replica within the token refresh \
                 interval.",
            ))
            .tag("Tokens")
            .parameter(token_name_param())
            .response("200", json_response("The revoked token.", "TokenInfo")),
        &[
            (404, "no token of that name"),
            (
                422,
                "not a token name (a token pasted by mistake is refused here)",
            ),
        ],
    )
    .build()
}

/// Adds the answers of authentication and authorization, and the
/// operation's security requirement (none on the open routes).
fn secure(op: &mut Operation, access: super::routes::Access) {
    use super::routes::Access;
    use utoipa::openapi::security::SecurityRequirement;
    if access == Access::Public {
        op.security = Some(vec![SecurityRequirement::default()]);
        return;
    }
    op.security = Some(vec![SecurityRequirement::new::<_, _, &str>("bearer", [])]);
    for (status, when) in [
        (
            401,
            "Unauthorized: no credentials, or an unknown or revoked token (WWW-Authenticate: Bearer)",
        ),
        (
            403,
            "Forbidden: the identity's role or realms do not reach this, or a privileged field \
             without the grant (`field` names it)",
        ),
        (
            429,
            "TooManyRequests: a cap was reached; nothing was done; retry after Retry-After",
        ),
    ] {
        let (code, resp) = problem(status, when);
        op.responses
            .responses
            .entry(code)
            .or_insert(RefOr::T(resp.build()));
    }
}

/// The method as the document spells it.
fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        Method::TRACE => HttpMethod::Trace,
        ref other => panic!("{other} has no OpenAPI operation"),
    }
}

fn build() -> OpenApi {
    let mut doc = Schemas::openapi();
    // The watch event's schema is written by hand, not derived.
    if let Some(components) = doc.components.as_mut() {
        components.schemas.insert(
            WatchEvent::<AnyDocument>::name().into_owned(),
            WatchEvent::<AnyDocument>::schema(),
        );
    }
    doc.info = InfoBuilder::new()
        .title("modelhub")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The metadata store behind kukeon: Realms, Spaces, Stacks, Cells and Containers as v1beta1 \
             documents, with a store-wide resourceVersion, preconditions, a status subresource and durable, \
             resumable watch streams. Every error is application/problem+json.",
        ))
        .build();
    let mut paths = PathsBuilder::new();
    for route in super::routes::table() {
        let mut op = route.operation;
        secure(&mut op, route.access);
        // Every route: the path and query over --max-uri-bytes.
        let (code, resp) = problem(414, "the path and query are longer than --max-uri-bytes");
        op.responses
            .responses
            .entry(code)
            .or_insert(RefOr::T(resp.build()));
        paths = paths.path(route.path, PathItem::new(http_method(&route.method), op));
    }
    doc.paths = paths.build();
    if let Some(components) = doc.components.as_mut() {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `modelhub token create` (or POST /api/v1beta1/tokens)",
                    ))
                    .build(),
            ),
        );
    }
    // An example per document schema, from kukeon's example manifests;
    // and the envelope's rules: `apiVersion` and `kind` empty or the one
    // value the path takes.
    if let Some(components) = doc.components.as_mut() {
        // The label rules (422 otherwise; see `model::validate_labels`).
        // JSON Schema counts characters where the server counts bytes, and
        // cannot bound the keys' and values' bytes together (16 KiB).
        if let Some(RefOr::T(Schema::Object(meta))) = components.schemas.get_mut("ObjectMeta")
            && let Some(RefOr::T(Schema::Object(labels))) = meta.properties.get_mut("labels")
        {
            labels.property_names = Some(Box::new(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::String))
                    .min_length(Some(1))
                    .max_length(Some(253 + 1 + 63))
                    .pattern(Some(LABEL_KEY_PATTERN))
                    .into(),
            ));
            let value: Schema = ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .max_length(Some(crate::model::MAX_LABEL_VALUE))
                .pattern(Some(r"^[^\x00-\x1f\x7f-\x9f]*$"))
                .into();
            labels.additional_properties = Some(Box::new(value.into()));
            labels.max_properties = Some(crate::model::MAX_LABELS);
        }
        // `password` is read (only whether it was given) but never written,
        // so the derive leaves it out; it may be sent empty or null.
        if let Some(RefOr::T(Schema::Object(creds))) =
            components.schemas.get_mut("RegistryCredentials")
        {
            creds.properties.insert(
                "password".into(),
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .max_length(Some(0))
                    .write_only(true)
                    .description(Some(
                        "Must be empty or absent: use `passwordRef`. Never stored or returned.",
                    ))
                    .into(),
            );
        }
        for kind in Kind::ALL {
            let Some(RefOr::T(Schema::Object(obj))) = components.schemas.get_mut(kind.as_str())
            else {
                continue;
            };
            if let Some(ex) = example(kind) {
                obj.examples = vec![ex];
            }
            for (field, value) in [
                ("apiVersion", crate::api::v1beta1::API_VERSION),
                ("kind", kind.as_str()),
            ] {
                if let Some(RefOr::T(Schema::Object(prop))) = obj.properties.get_mut(field) {
                    prop.pattern = Some(format!("^({value})?$"));
                }
            }
        }
    }
    let mut tags: Vec<_> = Kind::ALL
        .iter()
        .map(|k| {
            TagBuilder::new()
                .name(tag(*k))
                .description(Some(format!(
                    "{} documents: CRUD, status subresource, lists and watches.",
                    k.as_str()
                )))
                .build()
        })
        .collect();
    for (name, d) in [
        ("Watch", "Event streams over every kind."),
        ("Apply", "Manifests in, created or configured atomically."),
        ("Operations", "Health and metrics."),
        (
            "Tokens",
            "Bearer tokens: create, list, revoke (admin only).",
        ),
    ] {
        tags.push(TagBuilder::new().name(name).description(Some(d)).build());
    }
    doc.tags = Some(tags);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operation_ids_are_unique_and_named_by_verb_and_kind() {
        let v = serde_json::to_value(document()).unwrap();
        let mut ids = Vec::new();
        for (_, item) in v["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                ids.push(op["operationId"].as_str().unwrap().to_string());
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate operation ids");
        for id in [
            "list_cells",
            "replace_cell_status",
            "list_all_containers",
            "delete_realm",
            "watch",
            "apply",
        ] {
            assert!(ids.contains(&id.to_string()), "{id}");
        }
        assert_eq!(v["openapi"].as_str().map(|s| &s[..3]), Some("3.1"));
    }

    /// Every link names an operation that exists and supplies exactly its
    /// path parameters, each from a field the response document has.
    #[test]
    fn create_links_reach_real_operations_with_their_path_parameters() {
        let v = serde_json::to_value(document()).unwrap();
        let mut ops = std::collections::HashMap::new();
        for (_, item) in v["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                let path_params: Vec<String> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                ops.insert(
                    op["operationId"].as_str().unwrap().to_string(),
                    (op.clone(), path_params),
                );
            }
        }
        let mut seen = 0;
        for kind in Kind::ALL {
            let create = &ops[&format!("create_{}", kind.as_str().to_ascii_lowercase())].0;
            let links = create["responses"]["201"]["links"].as_object().unwrap();
            let expected = 7 + usize::from(kind.child().is_some());
            assert_eq!(links.len(), expected, "{kind:?}");
            let example = example(kind).unwrap();
            for (name, link) in links {
                let target = link["operationId"].as_str().unwrap();
                let (_, wanted) = ops
                    .get(target)
                    .unwrap_or_else(|| panic!("{name}: no {target}"));
                let mut given: Vec<String> = link["parameters"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
                let mut wanted = wanted.clone();
                given.sort();
                wanted.sort();
                assert_eq!(given, wanted, "{name}");
                for expr in link["parameters"].as_object().unwrap().values() {
                    let pointer = expr
                        .as_str()
                        .unwrap()
                        .strip_prefix("$response.body#")
                        .unwrap();
                    assert!(
                        example.pointer(pointer).is_some_and(Value::is_string),
                        "{kind:?} example has no {pointer}"
                    );
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 5 * 7 + 4);
    }

    /// Follows `$ref`s and nullable `oneOf` wrappers to the schema that
    /// describes a non-null value.
    fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
        loop {
            if let Some(r) = schema["$ref"].as_str() {
                let name = r.rsplit('/').next().unwrap();
                schema = &doc["components"]["schemas"][name];
            } else if let Some(items) = schema["oneOf"].as_array()
                && let Some(inner) = items.iter().find(|i| i["$ref"].is_string())
            {
                schema = inner;
            } else {
                return schema;
            }
        }
    }

    fn allows_null(doc: &Value, schema: &Value) -> bool {
        let schema = match schema["$ref"].as_str() {
            Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
            None => schema,
        };
        schema["type"] == "null"
            || schema["type"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "null"))
            || schema["oneOf"]
                .as_array()
                .is_some_and(|o| o.iter().any(|s| allows_null(doc, s)))
    }

    /// Every field of the example documents and of the maximal ones in
    /// `tests/fixtures/maximal.json` that the server reads as `null` is
    /// nullable in the schema, and every field it refuses `null` for is not
    /// (Schemathesis sends `null` where the schema forbids it and expects a
    /// 4xx).
    #[test]
    fn schema_says_null_exactly_where_the_server_reads_it() {
        /// One document's walk: nulls each field in turn and compares.
        struct Walk<'a> {
            doc: &'a Value,
            kind: Kind,
            root: &'a Value,
            checked: usize,
            wrong: Vec<String>,
        }
        impl Walk<'_> {
            fn walk(&mut self, at: &Value, schema: &Value, pointer: &str) {
                let (doc, kind) = (self.doc, self.kind);
                let schema_here = resolve(doc, schema);
                let children: Vec<(String, &Value, &Value)> = match at {
                    Value::Object(m) => m
                        .iter()
                        .map(|(k, v)| {
                            let prop = match &schema_here["properties"][k] {
                                Value::Null => &schema_here["additionalProperties"],
                                p => p,
                            };
                            (k.clone(), v, prop)
                        })
                        .collect(),
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i.to_string(), v, &schema_here["items"]))
                        .collect(),
                    _ => return,
                };
                for (key, value, prop) in children {
                    let path = format!("{pointer}/{key}");
                    assert!(!prop.is_null(), "{kind:?}{path}: not in the schema");
                    if !at.is_array() {
                        let mut nulled = self.root.clone();
                        *nulled.pointer_mut(&path).unwrap() = Value::Null;
                        let accepted = crate::api::v1beta1::decode_value(kind, nulled).is_ok();
                        if allows_null(doc, prop) != accepted {
                            self.wrong
                                .push(format!("{kind:?}{path} (server accepts null: {accepted})"));
                        }
                        self.checked += 1;
                    }
                    self.walk(value, prop, &path);
                }
            }
        }
        let doc = serde_json::to_value(document()).unwrap();
        let maximal: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/maximal.json")).unwrap();
        let mut checked = 0;
        let mut wrong = Vec::new();
        for kind in Kind::ALL {
            let schema = json!({"$ref": format!("#/components/schemas/{}", kind.as_str())});
            let full = maximal[kind.as_str()].clone();
            assert!(
                crate::api::v1beta1::decode_value(kind, full.clone()).is_ok(),
                "{kind:?}: the maximal document itself must decode"
            );
            for root in [example(kind).unwrap(), full] {
                let mut w = Walk {
                    doc: &doc,
                    kind,
                    root: &root,
                    checked: 0,
                    wrong: Vec::new(),
                };
                w.walk(&root, &schema, "");
                checked += w.checked;
                wrong.extend(w.wrong);
            }
        }
        assert!(
            wrong.is_empty(),
            "nullability differs:\n{}",
            wrong.join("\n")
        );
        assert!(checked > 250, "only {checked} fields checked");
    }

    /// A merge patch may `null` any field (RFC 7396: delete), so its body
    /// schema constrains only the top level; the server's own checks do
    /// the rest (tests/validation.rs).
    #[test]
    fn patch_bodies_allow_null_below_the_top_level() {
        let v = serde_json::to_value(document()).unwrap();
        let patch = &v["paths"]["/api/v1beta1/realms/{realm}"]["patch"]["requestBody"]["content"]
            [MERGE_PATCH]["schema"];
        assert_eq!(patch["additionalProperties"], false);
        for field in ["metadata", "spec", "status"] {
            assert_eq!(
                patch["properties"][field]["type"],
                json!(["object", "null"])
            );
            assert!(patch["properties"][field].get("properties").is_none());
        }
        assert_eq!(patch["properties"]["kind"]["pattern"], "^(Realm)?$");
        let put = &v["paths"]["/api/v1beta1/realms/{realm}"]["put"]["requestBody"]["content"][JSON]
            ["schema"];
        assert_eq!(put["$ref"], "#/components/schemas/Realm");
    }
}
