//! Translation between v1beta1 documents and the internal model.
//!
//! Wire -> model is fallible (secret values, timestamps, volume kinds) and
//! errors name the wire field. Model -> wire is total. Structs are
//! destructured without `..` so a new field fails to compile here until it
//! is translated. States map by name, never by number.

use std::fmt;

use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::strict::Strict;
use super::types as w;
use crate::model::{self as m, AnyObject, Invalid, Kind};

/// Body encodings the API reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `application/yaml`.
    Yaml,
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Malformed body, unknown field, wrong `apiVersion`/`kind` (400).
    BadRequest {
        /// Wire path of the offending field, when known.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Well-formed but invalid content (422).
    Invalid(Invalid),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadRequest { message, .. } => f.write_str(message),
            DecodeError::Invalid(i) => i.fmt(f),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<Invalid> for DecodeError {
    fn from(i: Invalid) -> Self {
        DecodeError::Invalid(i)
    }
}

/// A decoded document: the model object and the `metadata.resourceVersion`
/// precondition it carried, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The object (server-owned metadata left at defaults).
    pub object: AnyObject,
    /// `metadata.resourceVersion` from the body, if sent.
    pub resource_version: Option<u64>,
    /// Whether the body gave `metadata.finalizers` (even empty): a write
    /// that leaves them out keeps the stored ones.
    pub finalizers_given: bool,
}

fn serde_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> DecodeError {
    let path = err.path().to_string();
    let field = (path != "." && !path.is_empty()).then_some(path);
    let inner = err.into_inner().to_string();
    // serde reports unknown fields as "unknown field `x`, expected ...";
    // the path then points at the parent, so name the field itself.
    let field = match (inner.strip_prefix("unknown field `"), field) {
        (Some(rest), parent) => {
            let name = rest.split('`').next().unwrap_or_default();
            Some(match parent {
                Some(p) if p == name || p.ends_with(&format!(".{name}")) => p,
                Some(p) => format!("{p}.{name}"),
                None => name.to_string(),
            })
        }
        (None, f) => f,
    };
    DecodeError::BadRequest {
        message: inner,
        field,
    }
}

fn parse<T: DeserializeOwned>(format: Format, bytes: &[u8]) -> Result<T, DecodeError> {
    match format {
        Format::Json => {
            // Fast path: most bodies are valid, and tracking the path costs
            // as much as the parse itself. Only a failure is parsed again,
            // with the path, to name the field. The fast path parses the
            // body as `str`: one UTF-8 scan of the whole body (cheap; the
            // HTTP layer has refused bodies that are not UTF-8) instead of
            // the parser's check of each string. Bytes that are not UTF-8
            // get the slow path's error, which says where.
            if let Ok(text) = std::str::from_utf8(bytes) {
                let mut de = serde_json::Deserializer::from_str(text);
                if let Ok(v) = T::deserialize(Strict(&mut de))
                    && de.end().is_ok()
                {
                    return Ok(v);
                }
            }
            parse_json_with_path(bytes)
        }
        Format::Yaml => {
            let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::BadRequest {
                field: None,
                message: "YAML body is not UTF-8".into(),
            })?;
            check_yaml_nesting(text)?;
            let de = yaml_serde::Deserializer::from_str(text);
            serde_path_to_error::deserialize(Strict(de)).map_err(serde_error)
        }
    }
}

/// JSON's slow path: the parse again, tracking the path, so that its
/// error names the field (and places bytes that are not UTF-8).
fn parse_json_with_path<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(Strict(&mut de)).map_err(serde_error)?;
    de.end().map_err(|e| DecodeError::BadRequest {
        field: None,
        message: e.to_string(),
    })?;
    Ok(v)
}

/// Deepest flow nesting (`[`/`{`) a YAML body may have.
const MAX_YAML_FLOW_DEPTH: usize = 64;
/// Widest indentation a YAML body may have (block nesting).
const MAX_YAML_INDENT: usize = 256;

/// Refuses YAML nested deeper than any kukeon document needs, before the
/// parser (whose cost grows with the square of the depth) sees it.
pub fn check_yaml_nesting(text: &str) -> Result<(), DecodeError> {
    let too_deep = |what: &str| DecodeError::BadRequest {
        field: None,
        message: format!("YAML body is nested too deeply ({what})"),
    };
    if text
        .lines()
        .any(|l| l.len() - l.trim_start_matches([' ', '\t']).len() > MAX_YAML_INDENT)
    {
        return Err(too_deep(&format!(
            "indentation over {MAX_YAML_INDENT} columns"
        )));
    }
    let mut depth = 0usize;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_YAML_FLOW_DEPTH {
                    return Err(too_deep(&format!(
                        "more than {MAX_YAML_FLOW_DEPTH} nested flow collections"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, DecodeError> {
    // As in `parse`: the path is tracked only to explain a failure.
    if let Ok(v) = T::deserialize(Strict(&value)) {
        return Ok(v);
    }
    serde_path_to_error::deserialize(Strict(value)).map_err(serde_error)
}

/// Reads one document of `kind` from a JSON or YAML body.
pub fn decode(kind: Kind, format: Format, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    match kind {
        Kind::Realm => finish(kind, parse::<w::Realm>(format, bytes)?),
        Kind::Space => finish(kind, parse::<w::Space>(format, bytes)?),
        Kind::Stack => finish(kind, parse::<w::Stack>(format, bytes)?),
        Kind::Cell => finish(kind, parse::<w::Cell>(format, bytes)?),
        Kind::Container => finish(kind, parse::<w::Container>(format, bytes)?),
    }
}

/// Reads one document of `kind` from a JSON value (e.g. after a merge patch).
pub fn decode_value(kind: Kind, value: serde_json::Value) -> Result<Decoded, DecodeError> {
    match kind {
        Kind::Realm => finish(kind, from_value::<w::Realm>(value)?),
        Kind::Space => finish(kind, from_value::<w::Space>(value)?),
        Kind::Stack => finish(kind, from_value::<w::Stack>(value)?),
        Kind::Cell => finish(kind, from_value::<w::Cell>(value)?),
        Kind::Container => finish(kind, from_value::<w::Container>(value)?),
    }
}

/// Reads a document the server returned (any kind, named by its `kind`),
/// keeping the server-owned metadata: what clients of the API decode.
pub fn decode_document(value: serde_json::Value) -> Result<AnyObject, DecodeError> {
    let kind_name = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    let kind = Kind::parse(kind_name).ok_or_else(|| DecodeError::BadRequest {
        field: Some("kind".into()),
        message: format!("unknown kind {kind_name:?}"),
    })?;
    let meta: w::ObjectMeta = match value.get("metadata") {
        Some(m) => from_value(m.clone())?,
        None => w::ObjectMeta::default(),
    };
    let mut object = decode_value(kind, value)?.object;
    let bad = |field: &str, message: String| DecodeError::BadRequest {
        field: Some(format!("metadata.{field}")),
        message,
    };
    let m = object.meta_mut();
    m.uid = meta.uid.unwrap_or_default();
    if let Some(rv) = meta.resource_version {
        m.resource_version = rv
            .parse()
            .map_err(|_| bad("resourceVersion", format!("{rv:?}")))?;
    }
    m.generation = meta
        .generation
        .and_then(|g| u64::try_from(g).ok())
        .unwrap_or_default();
    if let Some(ts) = meta.creation_timestamp {
        m.creation_timestamp = parse_time("metadata.creationTimestamp", &ts)?.unwrap_or_default();
    }
    if let Some(ts) = meta.deletion_timestamp {
        m.deletion_timestamp = parse_time("metadata.deletionTimestamp", &ts)?;
    }
    Ok(object)
}

/// The envelope every wire document shares.
trait Envelope: Sized {
    fn envelope(&self) -> (&str, &str, &w::ObjectMeta);
    fn into_model(self) -> Result<AnyObject, Invalid>;
}

macro_rules! envelope {
    ($wire:ident, $variant:ident, $spec:ident, $status:ident) => {
        impl Envelope for w::$wire {
            fn envelope(&self) -> (&str, &str, &w::ObjectMeta) {
                (&self.api_version, &self.kind, &self.metadata)
            }
            fn into_model(self) -> Result<AnyObject, Invalid> {
                Ok(AnyObject::$variant(m::Object {
                    meta: meta_in(self.metadata),
                    spec: $spec(self.spec)?,
                    status: $status(self.status)?,
                }))
            }
        }
    };
}
envelope!(Realm, Realm, realm_spec_in, realm_status_in);
envelope!(Space, Space, space_spec_in, space_status_in);
envelope!(Stack, Stack, stack_spec_in, stack_status_in);
envelope!(Cell, Cell, cell_spec_in, cell_status_in);
envelope!(
    Container,
    Container,
    container_spec_in_top,
    container_status_in_top
);

fn finish<T: Envelope>(kind: Kind, doc: T) -> Result<Decoded, DecodeError> {
    let (api_version, doc_kind, meta) = doc.envelope();
    if !api_version.is_empty() && api_version != w::API_VERSION {
        return Err(DecodeError::BadRequest {
            field: Some("apiVersion".into()),
            message: format!(
                "unsupported apiVersion {api_version:?}: this server speaks {:?}",
                w::API_VERSION
            ),
        });
    }
    if !doc_kind.is_empty() && doc_kind != kind.as_str() {
        return Err(DecodeError::BadRequest {
            field: Some("kind".into()),
            message: format!(
                "kind {doc_kind:?} does not match {:?} for this path",
                kind.as_str()
            ),
        });
    }
    let resource_version = resource_version(meta.resource_version.as_deref())?;
    let finalizers_given = meta.finalizers.is_some();
    Ok(Decoded {
        object: doc.into_model()?,
        resource_version,
        finalizers_given,
    })
}

/// Reads a `metadata.resourceVersion` precondition: absent or empty is
/// none, otherwise a decimal revision.
pub fn resource_version(rv: Option<&str>) -> Result<Option<u64>, DecodeError> {
    match rv {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| DecodeError::BadRequest {
                field: Some("metadata.resourceVersion".into()),
                message: format!("{s:?} is not a resource version (a decimal revision)"),
            }),
    }
}

/// The v1beta1 document for a stored object.
pub fn encode(obj: &AnyObject) -> w::AnyDocument {
    let kind = obj.kind().as_str().to_string();
    let api_version = w::API_VERSION.to_string();
    let metadata = meta_out(obj.meta());
    match obj {
        AnyObject::Realm(o) => w::AnyDocument::Realm(w::Realm {
            api_version,
            kind,
            metadata,
            spec: realm_spec_out(&o.spec),
            status: realm_status_out(&o.status),
        }),
        AnyObject::Space(o) => w::AnyDocument::Space(w::Space {
            api_version,
            kind,
            metadata,
            spec: space_spec_out(&o.spec),
            status: space_status_out(&o.status),
        }),
        AnyObject::Stack(o) => w::AnyDocument::Stack(w::Stack {
            api_version,
            kind,
            metadata,
            spec: stack_spec_out(&o.spec),
            status: stack_status_out(&o.status),
        }),
        AnyObject::Cell(o) => w::AnyDocument::Cell(w::Cell {
            api_version,
            kind,
            metadata,
            spec: cell_spec_out(&o.spec),
            status: cell_status_out(&o.status),
        }),
        AnyObject::Container(o) => w::AnyDocument::Container(w::Container {
            api_version,
            kind,
            metadata,
            spec: container_spec_out(&o.spec),
            status: container_status_out(&o.status),
        }),
    }
}

/// The v1beta1 document for a stored object, as a JSON value.
pub fn to_value(obj: &AnyObject) -> serde_json::Value {
    serde_json::to_value(encode(obj)).expect("wire documents always serialize")
}

// ---- metadata and time ----

fn meta_in(meta: w::ObjectMeta) -> m::ObjectMeta {
    // Server-owned fields are ignored on input; resourceVersion was read
    // as a precondition, and whether finalizers were given, by `finish`.
    m::ObjectMeta {
        name: meta.name,
        labels: meta.labels,
        finalizers: meta.finalizers.unwrap_or_default(),
        ..m::ObjectMeta::default()
    }
}

fn meta_out(meta: &m::ObjectMeta) -> w::ObjectMeta {
    let m::ObjectMeta {
        name,
        labels,
        uid,
        resource_version,
        generation,
        creation_timestamp,
        finalizers,
        deletion_timestamp,
    } = meta;
    w::ObjectMeta {
        name: name.clone(),
        labels: labels.clone(),
        uid: Some(uid.clone()),
        resource_version: Some(resource_version.to_string()),
        generation: Some(i64::try_from(*generation).unwrap_or(i64::MAX)),
        creation_timestamp: Some(format_time(Some(*creation_timestamp))),
        finalizers: (!finalizers.is_empty()).then(|| finalizers.clone()),
        deletion_timestamp: deletion_timestamp.map(|t| format_time(Some(t))),
    }
}

/// Go's zero `time.Time`, written for unset timestamps.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Formats a timestamp as RFC 3339 UTC (`None`: Go's zero time).
pub fn format_time(t: Option<m::Timestamp>) -> String {
    t.and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ZERO_TIME.to_string())
}

fn parse_time(field: &str, s: &str) -> Result<Option<m::Timestamp>, Invalid> {
    if s.is_empty() || s == ZERO_TIME {
        return Ok(None);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|_| Invalid::new(field, format!("{s:?} is not an RFC 3339 timestamp")))?;
    let ns = t.unix_timestamp_nanos();
    let zero = OffsetDateTime::parse(ZERO_TIME, &Rfc3339)
        .expect("zero time parses")
        .unix_timestamp_nanos();
    Ok((ns != zero).then_some(ns))
}

// ---- Realm ----

fn realm_spec_in(s: w::RealmSpec) -> Result<m::RealmSpec, Invalid> {
    let w::RealmSpec {
        namespace,
        registry_credentials,
    } = s;
    let registry_credentials = registry_credentials
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let w::RegistryCredentials {
                username,
                password_given,
                password_ref,
                server_address,
            } = c;
            if password_given {
                return Err(Invalid::new(
                    format!("spec.registryCredentials[{i}].password"),
                    "registry passwords are never stored: leave password empty and set \
                     passwordRef: {fromFile: <path>} or {fromEnv: <variable>}",
                ));
            }
            Ok(m::RegistryCredentials {
                username,
                password_ref: password_ref.map(|r| m::SecretSource {
                    from_file: r.from_file,
                    from_env: r.from_env,
                }),
                server_address,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(m::RealmSpec {
        namespace,
        registry_credentials,
    })
}

fn realm_spec_out(s: &m::RealmSpec) -> w::RealmSpec {
    let m::RealmSpec {
        namespace,
        registry_credentials,
    } = s;
    w::RealmSpec {
        namespace: namespace.clone(),
        registry_credentials: registry_credentials
            .iter()
            .map(|c| {
                let m::RegistryCredentials {
                    username,
                    password_ref,
                    server_address,
                } = c;
                w::RegistryCredentials {
                    username: username.clone(),
                    password_given: false,
                    password_ref: password_ref.as_ref().map(|r| w::SecretSource {
                        from_file: r.from_file.clone(),
                        from_env: r.from_env.clone(),
                    }),
                    server_address: server_address.clone(),
                }
            })
            .collect(),
    }
}

/// Maps a state enum to another with the same variant names.
macro_rules! map_state {
    ($value:expr, $from:ty => $to:ty, $fallback:expr) => {
        <$to>::from_name(<$from>::as_str($value)).unwrap_or($fallback)
    };
}

fn realm_status_in(s: w::RealmStatus) -> Result<m::RealmStatus, Invalid> {
    let w::RealmStatus {
        state,
        cgroup_path,
        subtree_controllers,
    } = s;
    Ok(m::RealmStatus {
        state: map_state!(state, w::RealmState => m::RealmState, m::RealmState::Unknown),
        cgroup_path,
        subtree_controllers,
    })
}

fn realm_status_out(s: &m::RealmStatus) -> w::RealmStatus {
    let m::RealmStatus {
        state,
        cgroup_path,
        subtree_controllers,
    } = s;
    w::RealmStatus {
        state: map_state!(*state, m::RealmState => w::RealmState, w::RealmState::Unknown),
        cgroup_path: cgroup_path.clone(),
        subtree_controllers: subtree_controllers.clone(),
    }
}

// ---- Space ----

fn space_spec_in(s: w::SpaceSpec) -> Result<m::SpaceSpec, Invalid> {
    let w::SpaceSpec {
        realm_id,
        cni_config_path,
        network,
        defaults,
    } = s;
    Ok(m::SpaceSpec {
        realm_name: realm_id,
        cni_config_path,
        network: network.map(|n| m::SpaceNetwork {
            egress: n.egress.map(|e| m::EgressPolicy {
                default: match e.default {
                    w::EgressDefault::Allow => m::EgressDefault::Allow,
                    w::EgressDefault::Deny => m::EgressDefault::Deny,
                },
                allow: e
                    .allow
                    .into_iter()
                    .map(|r| m::EgressAllowRule {
                        host: r.host,
                        cidr: r.cidr,
                        ports: r.ports,
                    })
                    .collect(),
            }),
        }),
        defaults: defaults.map(|d| m::SpaceDefaults {
            container: d.container.map(|c| {
                let w::SpaceContainerDefaults {
                    user,
                    read_only_root_filesystem,
                    capabilities,
                    security_opts,
                    tmpfs,
                    resources,
                } = c;
                m::SpaceContainerDefaults {
                    user,
                    read_only_root_filesystem,
                    capabilities: capabilities.map(caps_in),
                    security_opts,
                    tmpfs: tmpfs.into_iter().map(tmpfs_in).collect(),
                    resources: resources.map(resources_in),
                }
            }),
        }),
    })
}

fn space_spec_out(s: &m::SpaceSpec) -> w::SpaceSpec {
    let m::SpaceSpec {
        realm_name,
        cni_config_path,
        network,
        defaults,
    } = s;
    w::SpaceSpec {
        realm_id: realm_name.clone(),
        cni_config_path: cni_config_path.clone(),
        network: network.as_ref().map(|n| w::SpaceNetwork {
            egress: n.egress.as_ref().map(|e| w::EgressPolicy {
                default: match e.default {
                    m::EgressDefault::Allow => w::EgressDefault::Allow,
                    m::EgressDefault::Deny => w::EgressDefault::Deny,
                },
                allow: e
                    .allow
                    .iter()
                    .map(|r| w::EgressAllowRule {
                        host: r.host.clone(),
                        cidr: r.cidr.clone(),
                        ports: r.ports.clone(),
                    })
                    .collect(),
            }),
        }),
        defaults: defaults.as_ref().map(|d| w::SpaceDefaults {
            container: d.container.as_ref().map(|c| {
                let m::SpaceContainerDefaults {
                    user,
                    read_only_root_filesystem,
                    capabilities,
                    security_opts,
                    tmpfs,
                    resources,
                } = c;
                w::SpaceContainerDefaults {
                    user: user.clone(),
                    read_only_root_filesystem: *read_only_root_filesystem,
                    capabilities: capabilities.as_ref().map(caps_out),
                    security_opts: security_opts.clone(),
                    tmpfs: tmpfs.iter().map(tmpfs_out).collect(),
                    resources: resources.as_ref().map(resources_out),
                }
            }),
        }),
    }
}

fn space_status_in(s: w::SpaceStatus) -> Result<m::SpaceStatus, Invalid> {
    let w::SpaceStatus {
        state,
        cgroup_path,
        subtree_controllers,
    } = s;
    Ok(m::SpaceStatus {
        state: map_state!(state, w::SpaceState => m::SpaceState, m::SpaceState::Unknown),
        cgroup_path,
        subtree_controllers,
    })
}

fn space_status_out(s: &m::SpaceStatus) -> w::SpaceStatus {
    let m::SpaceStatus {
        state,
        cgroup_path,
        subtree_controllers,
    } = s;
    // The external enum has no Creating/Deleting: those read as Unknown.
    w::SpaceStatus {
        state: map_state!(*state, m::SpaceState => w::SpaceState, w::SpaceState::Unknown),
        cgroup_path: cgroup_path.clone(),
        subtree_controllers: subtree_controllers.clone(),
    }
}

// ---- Stack ----

fn stack_spec_in(s: w::StackSpec) -> Result<m::StackSpec, Invalid> {
    let w::StackSpec {
        id,
        realm_id,
        space_id,
    } = s;
    Ok(m::StackSpec {
        id,
        realm_name: realm_id,
        space_name: space_id,
    })
}

fn stack_spec_out(s: &m::StackSpec) -> w::StackSpec {
    let m::StackSpec {
        id,
        realm_name,
        space_name,
    } = s;
    w::StackSpec {
        id: id.clone(),
        realm_id: realm_name.clone(),
        space_id: space_name.clone(),
    }
}

fn stack_status_in(s: w::StackStatus) -> Result<m::StackStatus, Invalid> {
    let w::StackStatus {
        state,
        cgroup_path,
        subtree_controllers,
    } = s;
    Ok(m::StackStatus {
        state: map_state!(state, w::StackState => m::StackState, m::StackState::Unknown),
        cgroup_path,
        subtree_controllers,
    })
}

fn stack_status_out(s: &m::StackStatus) -> w::StackStatus {
    let m::StackStatus {
        state,
        cgroup_path,
        subtree_controllers,
    } = s;
    w::StackStatus {
        state: map_state!(*state, m::StackState => w::StackState, w::StackState::Unknown),
        cgroup_path: cgroup_path.clone(),
        subtree_controllers: subtree_controllers.clone(),
    }
}

// ---- Cell ----

fn cell_spec_in(s: w::CellSpec) -> Result<m::CellSpec, Invalid> {
    let w::CellSpec {
        id,
        realm_id,
        space_id,
        stack_id,
        root_container_id,
        tty,
        containers,
        auto_delete,
        nested_cgroup_runtime,
    } = s;
    Ok(m::CellSpec {
        id,
        realm_name: realm_id,
        space_name: space_id,
        stack_name: stack_id,
        root_container_id,
        tty: tty.map(|t| m::CellTty { default: t.default }),
        containers: containers
            .into_iter()
            .enumerate()
            .map(|(i, c)| container_spec_in(&format!("spec.containers[{i}]"), c))
            .collect::<Result<_, _>>()?,
        auto_delete,
        nested_cgroup_runtime,
    })
}

fn cell_spec_out(s: &m::CellSpec) -> w::CellSpec {
    let m::CellSpec {
        id,
        realm_name,
        space_name,
        stack_name,
        root_container_id,
        tty,
        containers,
        auto_delete,
        nested_cgroup_runtime,
    } = s;
    w::CellSpec {
        id: id.clone(),
        realm_id: realm_name.clone(),
        space_id: space_name.clone(),
        stack_id: stack_name.clone(),
        root_container_id: root_container_id.clone(),
        tty: tty.as_ref().map(|t| w::CellTty {
            default: t.default.clone(),
        }),
        containers: containers.iter().map(container_spec_out).collect(),
        auto_delete: *auto_delete,
        nested_cgroup_runtime: *nested_cgroup_runtime,
    }
}

fn cell_status_in(s: w::CellStatus) -> Result<m::CellStatus, Invalid> {
    let w::CellStatus {
        state,
        cgroup_path,
        subtree_controllers,
        network,
        containers,
        ready_observed,
    } = s;
    Ok(m::CellStatus {
        state: map_state!(state, w::CellState => m::CellState, m::CellState::Unknown),
        cgroup_path,
        subtree_controllers,
        network: m::CellNetworkStatus {
            bridge_name: network.map(|n| n.bridge_name).unwrap_or_default(),
        },
        containers: containers
            .into_iter()
            .enumerate()
            .map(|(i, c)| container_status_in(&format!("status.containers[{i}]"), c))
            .collect::<Result<_, _>>()?,
        ready_observed,
    })
}

fn cell_status_out(s: &m::CellStatus) -> w::CellStatus {
    let m::CellStatus {
        state,
        cgroup_path,
        subtree_controllers,
        network,
        containers,
        ready_observed,
    } = s;
    w::CellStatus {
        state: map_state!(*state, m::CellState => w::CellState, w::CellState::Unknown),
        cgroup_path: cgroup_path.clone(),
        subtree_controllers: subtree_controllers.clone(),
        network: (!network.bridge_name.is_empty()).then(|| w::CellNetworkStatus {
            bridge_name: network.bridge_name.clone(),
        }),
        containers: containers.iter().map(container_status_out).collect(),
        ready_observed: *ready_observed,
    }
}

// ---- Container ----

fn container_spec_in_top(s: w::ContainerSpec) -> Result<m::ContainerSpec, Invalid> {
    container_spec_in("spec", s)
}

fn container_status_in_top(s: w::ContainerStatus) -> Result<m::ContainerStatus, Invalid> {
    container_status_in("status", s)
}

fn container_spec_in(field: &str, s: w::ContainerSpec) -> Result<m::ContainerSpec, Invalid> {
    let w::ContainerSpec {
        id,
        containerd_id,
        realm_id,
        space_id,
        stack_id,
        cell_id,
        root,
        image,
        command,
        args,
        working_dir,
        env,
        ports,
        volumes,
        networks,
        networks_aliases,
        privileged,
        host_network,
        host_pid,
        host_cgroup,
        user,
        read_only_root_filesystem,
        capabilities,
        security_opts,
        tmpfs,
        resources,
        secrets,
        cni_config_path,
        restart_policy,
        attachable,
        tty,
    } = s;
    let volumes = volumes
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let w::VolumeMount {
                kind,
                source,
                target,
                read_only,
                size_bytes,
                mode,
            } = v;
            let kind = match kind.as_str() {
                "" => None,
                "bind" => Some(m::VolumeKind::Bind),
                "tmpfs" => Some(m::VolumeKind::Tmpfs),
                other => {
                    return Err(Invalid::new(
                        format!("{field}.volumes[{i}].kind"),
                        format!("{other:?} is not a volume kind (bind, tmpfs)"),
                    ));
                }
            };
            // Checked here rather than in validation so that every write
            // path refuses it, status bodies included (the schema bounds it).
            if mode > 0o7777 {
                return Err(Invalid::new(
                    format!("{field}.volumes[{i}].mode"),
                    "must be a permission mode up to 07777",
                ));
            }
            Ok(m::VolumeMount {
                kind,
                source,
                target,
                read_only,
                size_bytes,
                mode,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(m::ContainerSpec {
        id,
        containerd_id,
        realm_name: realm_id,
        space_name: space_id,
        stack_name: stack_id,
        cell_name: cell_id,
        root,
        image,
        command,
        args,
        working_dir,
        env,
        ports,
        volumes,
        networks,
        networks_aliases,
        privileged,
        host_network,
        host_pid,
        host_cgroup,
        nested_cgroup_runtime: false,
        user,
        read_only_root_filesystem,
        capabilities: capabilities.map(caps_in),
        security_opts,
        tmpfs: tmpfs.into_iter().map(tmpfs_in).collect(),
        resources: resources.map(resources_in),
        secrets: secrets
            .into_iter()
            .map(|s| m::ContainerSecret {
                name: s.name,
                from_file: s.from_file,
                from_env: s.from_env,
                mount_path: s.mount_path,
            })
            .collect(),
        cni_config_path,
        restart_policy,
        attachable,
        tty: tty.map(|t| m::ContainerTty {
            prompt: t.prompt,
            on_init: t
                .on_init
                .into_iter()
                .map(|s| m::TtyStage { script: s.script })
                .collect(),
        }),
        cell_cgroup_path: String::new(),
        etc_hosts_path: String::new(),
        etc_hostname_path: String::new(),
        cell_profile_name: String::new(),
    })
}

/// The wire form of a container spec (also used for `?view=effective`).
pub fn container_spec_out(s: &m::ContainerSpec) -> w::ContainerSpec {
    // Runtime-only fields (filled by kukeon's runner, never part of a
    // document) are deliberately not translated.
    let m::ContainerSpec {
        id,
        containerd_id,
        realm_name,
        space_name,
        stack_name,
        cell_name,
        root,
        image,
        command,
        args,
        working_dir,
        env,
        ports,
        volumes,
        networks,
        networks_aliases,
        privileged,
        host_network,
        host_pid,
        host_cgroup,
        nested_cgroup_runtime: _,
        user,
        read_only_root_filesystem,
        capabilities,
        security_opts,
        tmpfs,
        resources,
        secrets,
        cni_config_path,
        restart_policy,
        attachable,
        tty,
        cell_cgroup_path: _,
        etc_hosts_path: _,
        etc_hostname_path: _,
        cell_profile_name: _,
    } = s;
    w::ContainerSpec {
        id: id.clone(),
        containerd_id: containerd_id.clone(),
        realm_id: realm_name.clone(),
        space_id: space_name.clone(),
        stack_id: stack_name.clone(),
        cell_id: cell_name.clone(),
        root: *root,
        image: image.clone(),
        command: command.clone(),
        args: args.clone(),
        working_dir: working_dir.clone(),
        env: env.clone(),
        ports: ports.clone(),
        volumes: volumes
            .iter()
            .map(|v| w::VolumeMount {
                kind: match v.kind {
                    None => String::new(),
                    Some(m::VolumeKind::Bind) => "bind".into(),
                    Some(m::VolumeKind::Tmpfs) => "tmpfs".into(),
                },
                source: v.source.clone(),
                target: v.target.clone(),
                read_only: v.read_only,
                size_bytes: v.size_bytes,
                mode: v.mode,
            })
            .collect(),
        networks: networks.clone(),
        networks_aliases: networks_aliases.clone(),
        privileged: *privileged,
        host_network: *host_network,
        host_pid: *host_pid,
        host_cgroup: *host_cgroup,
        user: user.clone(),
        read_only_root_filesystem: *read_only_root_filesystem,
        capabilities: capabilities.as_ref().map(caps_out),
        security_opts: security_opts.clone(),
        tmpfs: tmpfs.iter().map(tmpfs_out).collect(),
        resources: resources.as_ref().map(resources_out),
        secrets: secrets
            .iter()
            .map(|s| w::ContainerSecret {
                name: s.name.clone(),
                from_file: s.from_file.clone(),
                from_env: s.from_env.clone(),
                mount_path: s.mount_path.clone(),
            })
            .collect(),
        cni_config_path: cni_config_path.clone(),
        restart_policy: restart_policy.clone(),
        attachable: *attachable,
        tty: tty.as_ref().map(|t| w::ContainerTty {
            prompt: t.prompt.clone(),
            on_init: t
                .on_init
                .iter()
                .map(|s| w::TtyStage {
                    script: s.script.clone(),
                })
                .collect(),
        }),
    }
}

fn container_status_in(field: &str, s: w::ContainerStatus) -> Result<m::ContainerStatus, Invalid> {
    let w::ContainerStatus {
        name,
        id,
        state,
        restart_count,
        restart_time,
        start_time,
        finish_time,
        exit_code,
        exit_signal,
    } = s;
    Ok(m::ContainerStatus {
        name,
        id,
        state: map_state!(state, w::ContainerState => m::ContainerState, m::ContainerState::Unknown),
        restart_count,
        restart_time: parse_time(&format!("{field}.restartTime"), &restart_time)?,
        start_time: parse_time(&format!("{field}.startTime"), &start_time)?,
        finish_time: parse_time(&format!("{field}.finishTime"), &finish_time)?,
        exit_code,
        exit_signal,
    })
}

fn container_status_out(s: &m::ContainerStatus) -> w::ContainerStatus {
    let m::ContainerStatus {
        name,
        id,
        state,
        restart_count,
        restart_time,
        start_time,
        finish_time,
        exit_code,
        exit_signal,
    } = s;
    w::ContainerStatus {
        name: name.clone(),
        id: id.clone(),
        state: map_state!(*state, m::ContainerState => w::ContainerState, w::ContainerState::Unknown),
        restart_count: *restart_count,
        restart_time: format_time(*restart_time),
        start_time: format_time(*start_time),
        finish_time: format_time(*finish_time),
        exit_code: *exit_code,
        exit_signal: exit_signal.clone(),
    }
}

fn caps_in(c: w::ContainerCapabilities) -> m::ContainerCapabilities {
    m::ContainerCapabilities {
        drop: c.drop,
        add: c.add,
    }
}

fn caps_out(c: &m::ContainerCapabilities) -> w::ContainerCapabilities {
    w::ContainerCapabilities {
        drop: c.drop.clone(),
        add: c.add.clone(),
    }
}

fn tmpfs_in(t: w::ContainerTmpfsMount) -> m::ContainerTmpfsMount {
    m::ContainerTmpfsMount {
        path: t.path,
        size_bytes: t.size_bytes,
        options: t.options,
    }
}

fn tmpfs_out(t: &m::ContainerTmpfsMount) -> w::ContainerTmpfsMount {
    w::ContainerTmpfsMount {
        path: t.path.clone(),
        size_bytes: t.size_bytes,
        options: t.options.clone(),
    }
}

fn resources_in(r: w::ContainerResources) -> m::ContainerResources {
    m::ContainerResources {
        memory_limit_bytes: r.memory_limit_bytes,
        cpu_shares: r.cpu_shares,
        pids_limit: r.pids_limit,
    }
}

fn resources_out(r: &m::ContainerResources) -> w::ContainerResources {
    w::ContainerResources {
        memory_limit_bytes: r.memory_limit_bytes,
        cpu_shares: r.cpu_shares,
        pids_limit: r.pids_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_as_names_or_integers_and_map_by_name() {
        let by_int = decode(Kind::Space, Format::Json, br#"{"status":{"state":1}}"#).unwrap();
        let by_name = decode(
            Kind::Space,
            Format::Json,
            br#"{"status":{"state":"Ready"}}"#,
        )
        .unwrap();
        let AnyObject::Space(s) = &by_int.object else {
            panic!()
        };
        // External Space 1 is Ready; internal Ready is 2: mapped by name.
        assert_eq!(s.status.state, m::SpaceState::Ready);
        assert_eq!(by_int, by_name);
        let v = to_value(&by_int.object);
        assert_eq!(v["status"]["state"], "Ready");
        let err = decode(Kind::Cell, Format::Json, br#"{"status":{"state":"Bogus"}}"#).unwrap_err();
        assert!(
            matches!(err, DecodeError::BadRequest { field: Some(ref f), .. } if f == "status.state")
        );
        let err = decode(Kind::Cell, Format::Json, br#"{"status":{"state":9}}"#).unwrap_err();
        assert!(matches!(err, DecodeError::BadRequest { .. }));
    }

    /// What `parse` answered before it read bodies as `str`: the slice
    /// parser, then the slow path.
    fn parse_as_slices<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        match T::deserialize(Strict(&mut de)) {
            Ok(v) if de.end().is_ok() => Ok(v),
            _ => parse_json_with_path(bytes),
        }
    }

    proptest::proptest! {
        /// Bodies built from pieces of a cell document and of JSON's edge
        /// cases decode exactly as the slice parser decodes them: the same
        /// value, or the same error.
        #[test]
        fn str_and_slice_parsing_agree(pieces in proptest::collection::vec(0usize..PIECES.len(), 0..40)) {
            let body: Vec<u8> = pieces.iter().flat_map(|&i| PIECES[i].iter().copied()).collect();
            agree(&body)?;
        }

        /// The same for whole cell documents whose strings are drawn from
        /// plain text, escapes, surrogates (paired or lone) and bytes that
        /// are not UTF-8, with something before or after the document.
        #[test]
        fn str_and_slice_parsing_agree_on_documents(
            strings in proptest::collection::vec(0usize..STRINGS.len(), 5),
            before in 0usize..EDGES.len(),
            after in 0usize..EDGES.len(),
        ) {
            let [name, key, value, id, image] = [0, 1, 2, 3, 4].map(|i| STRINGS[strings[i]]);
            let mut body = EDGES[before].to_vec();
            for part in [
                &b"{\"metadata\":{\"name\":"[..], name, b",\"labels\":{", key, b":", value,
                b"}},\"spec\":{\"containers\":[{\"id\":", id, b",\"image\":", image, b"}]}}",
                EDGES[after],
            ] {
                body.extend_from_slice(part);
            }
            agree(&body)?;
        }
    }

    fn agree(body: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        let new = parse::<w::Cell>(Format::Json, body).map_err(|e| format!("{e:?}"));
        let old = parse_as_slices::<w::Cell>(body).map_err(|e| format!("{e:?}"));
        proptest::prop_assert_eq!(new, old);
        Ok(())
    }

    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b" ",
        b"\"metadata\"",
        b"\"name\"",
        b"\"labels\"",
        b"\"spec\"",
        b"\"containers\"",
        b"\"id\"",
        b"\"c-1\"",
        b"\"x\xff\"",
        b"\xc3\x28",
        b"\xef\xbb\xbf",
        b"\0",
        b"null",
        b"1",
        b"{\"metadata\":{\"name\":\"c\"}}",
        b"{\"metadata\":{\"name\":\"c\",\"bogus\":1}}",
    ];

    /// JSON strings, valid and not.
    const STRINGS: &[&[u8]] = &[
        b"\"c-1\"",
        b"\"caf\xc3\xa9 \xf0\x9f\xa6\x80\"",
        b"\"\\u00e9\\n\\\"\\\\\"",
        b"\"\\ud83e\\udd80\"",
        b"\"\\ud800\"",
        b"\"\\udc00x\"",
        b"\"x\xff\"",
        b"\"\xc3\x28\"",
        b"\"\xed\xa0\x80\"",
        b"\"\xf4\x90\x80\x80\"",
        b"\"tab\there\"",
        b"\"\"",
        b"1",
    ];

    /// What may come before or after a document.
    const EDGES: &[&[u8]] = &[b"", b" \n", b"\xef\xbb\xbf", b"\0", b"x", b"}", b"\xff"];

    #[test]
    fn bytes_that_are_not_utf8_are_placed() {
        let err = decode(
            Kind::Realm,
            Format::Json,
            b"{\"metadata\":{\"name\":\"r\",\"labels\":{\"k\":\"x\xff\"}}}",
        )
        .unwrap_err();
        let DecodeError::BadRequest { message, .. } = err else {
            panic!("{err:?}")
        };
        assert!(message.contains("column 41"), "{message}");
    }

    #[test]
    fn internal_only_space_states_read_as_unknown() {
        let mut o = decode(Kind::Space, Format::Json, b"{}").unwrap().object;
        if let AnyObject::Space(s) = &mut o {
            s.status.state = m::SpaceState::Creating;
        }
        assert_eq!(to_value(&o)["status"]["state"], "Unknown");
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = decode(
            Kind::Cell,
            Format::Json,
            br#"{"spec":{"containers":[{"id":"a"},{"id":"b","ttty":{}}]}}"#,
        )
        .unwrap_err();
        match err {
            DecodeError::BadRequest { field, message } => {
                assert_eq!(
                    field.as_deref(),
                    Some("spec.containers[1].ttty"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn passwords_are_rejected_without_echo() {
        let err = decode(
            Kind::Realm,
            Format::Json,
            br#"{"spec":{"registryCredentials":[{"username":"u","password":"hunter2"}]}}"#,
        )
        .unwrap_err();
        let DecodeError::Invalid(i) = err else {
            panic!()
        };
        assert_eq!(i.field, "spec.registryCredentials[0].password");
        assert!(!i.message.contains("hunter2"));
        assert!(i.message.contains("passwordRef"));
    }

    #[test]
    fn api_version_and_kind_are_checked() {
        let e = decode(Kind::Realm, Format::Json, br#"{"apiVersion":"v2"}"#).unwrap_err();
        assert!(
            matches!(e, DecodeError::BadRequest { field: Some(ref f), .. } if f == "apiVersion")
        );
        let e = decode(Kind::Realm, Format::Json, br#"{"kind":"Cell"}"#).unwrap_err();
        assert!(matches!(e, DecodeError::BadRequest { field: Some(ref f), .. } if f == "kind"));
        let ok = decode(
            Kind::Realm,
            Format::Yaml,
            b"apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: r\n  labels:\n",
        )
        .unwrap();
        assert_eq!(ok.object.meta().name, "r");
    }

    #[test]
    fn documents_keep_server_metadata() {
        for obj in crate::model::samples() {
            let mut want = obj.clone();
            if let AnyObject::Cell(c) = &mut want {
                for ctr in &mut c.spec.containers {
                    strip_runtime_only(ctr);
                }
            }
            if let AnyObject::Container(c) = &mut want {
                strip_runtime_only(&mut c.spec);
            }
            if let AnyObject::Space(s) = &mut want {
                // Internal-only states have no external name (see above).
                s.status.state = m::SpaceState::Unknown;
            }
            assert_eq!(decode_document(to_value(&obj)).unwrap(), want);
        }
    }

    /// Fields kukeon's runner fills at run time never travel on the wire.
    fn strip_runtime_only(c: &mut m::ContainerSpec) {
        c.nested_cgroup_runtime = false;
        c.cell_cgroup_path.clear();
        c.etc_hosts_path.clear();
        c.etc_hostname_path.clear();
        c.cell_profile_name.clear();
    }

    #[test]
    fn zero_time_round_trips() {
        let d = decode(
            Kind::Container,
            Format::Json,
            br#"{"status":{"startTime":"0001-01-01T00:00:00Z","finishTime":"2024-05-01T10:00:00.5Z"}}"#,
        )
        .unwrap();
        let v = to_value(&d.object);
        assert_eq!(v["status"]["startTime"], ZERO_TIME);
        assert_eq!(v["status"]["finishTime"], "2024-05-01T10:00:00.5Z");
        let e = decode(
            Kind::Container,
            Format::Json,
            br#"{"status":{"startTime":"yesterday"}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, DecodeError::Invalid(ref i) if i.field == "status.startTime"));
    }
}
