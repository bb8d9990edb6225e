//! v1beta1 wire documents, field for field as in kukeon's
//! `pkg/api/model/v1beta1` (the contract: `API.md` and `openapi/v1beta1.json`).
//!
//! Decoding rejects unknown fields (a typo must not drop configuration),
//! reads `null` as empty and integral floats as integers. Fields marked
//! "omit" in the reference are skipped when empty on output.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self as sde, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

use super::de;

/// The only API version this module speaks.
pub const API_VERSION: &str = "v1beta1";

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Name, labels and server-owned metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Object name (last path segment): no `_`, `/` or control characters,
    /// not `.` or `..`, at most 253 bytes. Required on create; on other
    /// writes it defaults from the URL.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    #[schema(
        pattern = r"^([^_/\s\x00-\x1f\x7f-\x9f]([^_/\x00-\x1f\x7f-\x9f]*[^_/\s\x00-\x1f\x7f-\x9f])?)?$",
        max_length = 253
    )]
    pub name: String,
    /// Labels, checked on every write but of the status: at most 64, of
    /// at most 16 KiB in all (keys and values); keys as Kubernetes defines
    /// them (an optional DNS-subdomain prefix of at most 253 bytes and
    /// `/`, then a name of 1 to 63 letters, digits, `-`, `_` and `.`,
    /// starting and ending with a letter or digit); values of at most 253
    /// bytes without control characters.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub labels: BTreeMap<String, String>,
    /// Server-owned: stable object id (ignored on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Revision of the last write; on input a precondition (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(\+?[0-9]+)?$")]
    pub resource_version: Option<String>,
    /// Server-owned: spec generation (ignored on input).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_int"
    )]
    pub generation: Option<i64>,
    /// Server-owned: RFC 3339 creation time (ignored on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Controllers that must finish their work before the object goes,
    /// each named like a label key (e.g. `kukeon.io/runtime`), at most 32,
    /// none repeated. On a PUT or an apply, leaving it out keeps the
    /// stored ones; a given list (even empty) replaces them. Omitted in
    /// output when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub finalizers: Option<Vec<String>>,
    /// Server-owned: RFC 3339 time a deletion was asked for while
    /// finalizers or children remained; the object is terminating and
    /// goes once it has neither (ignored on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
}

macro_rules! wire_state {
    ($(#[$doc:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name {
            #[default]
            $($variant),+
        }

        impl $name {
            /// Every value in declaration order (the integer encoding).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The state's name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }

            /// Looks a state up by its name.
            pub fn from_name(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(StateVisitor::<$name>(Self::ALL, stringify!($name)))
            }
        }

        impl StateName for $name {
            fn as_str(self) -> &'static str { $name::as_str(self) }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                state_schema(stringify!($name), Self::ALL.iter().map(|s| s.as_str()).collect())
            }
        }

        impl ToSchema for $name {}
    };
}

/// A state: written as its name, read as its name or kukeon v0.4's index.
fn state_schema(name: &str, names: Vec<&'static str>) -> RefOr<Schema> {
    let last = names.len() - 1;
    let null_reads_as = format!("`null`, read as {} (on input).", names[0]);
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some(names))
                .description(Some("The state's name (what the server writes).")),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Integer))
                .minimum(Some(0))
                .maximum(Some(last))
                .description(Some("kukeon v0.4's integer encoding (accepted on input).")),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Null))
                .description(Some(null_reads_as)),
        )
        .description(Some(format!(
            "{name}: read by name or by index, written by name."
        )))
        .into()
}

/// A tmpfs mode: an integer, or an octal string such as `"0755"`.
fn mode_schema() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Integer))
                .minimum(Some(0))
                .maximum(Some(0o7777)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .pattern(Some("^0(o?[0-7]{1,4})?$")),
        )
        .description(Some(
            "tmpfs mode, e.g. 493 or \"0755\" (octal); tmpfs only.",
        ))
        .into()
}

/// Implemented by wire state enums for the shared visitor.
trait StateName: Copy + 'static {
    fn as_str(self) -> &'static str;
}

/// Reads a state by name or by its kukeon v0.4 integer.
struct StateVisitor<T: 'static>(&'static [T], &'static str);

impl<'de, T: StateName> Visitor<'de> for StateVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<_> = self.0.iter().map(|v| v.as_str()).collect();
        let (kind, last) = (self.1, self.0.len() - 1);
        write!(
            f,
            "a {kind}: one of {} (or its index 0..={last})",
            names.join(", ")
        )
    }

    fn visit_str<E: sde::Error>(self, v: &str) -> Result<T, E> {
        self.0
            .iter()
            .copied()
            .find(|s| s.as_str() == v)
            .ok_or_else(|| E::invalid_value(sde::Unexpected::Str(v), &self))
    }

    fn visit_u64<E: sde::Error>(self, v: u64) -> Result<T, E> {
        usize::try_from(v)
            .ok()
            .and_then(|i| self.0.get(i).copied())
            .ok_or_else(|| E::invalid_value(sde::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: sde::Error>(self, v: i64) -> Result<T, E> {
        u64::try_from(v)
            .map_err(|_| E::invalid_value(sde::Unexpected::Signed(v), &self))
            .and_then(|u| self.visit_u64(u))
    }

    fn visit_f64<E: sde::Error>(self, v: f64) -> Result<T, E> {
        if v.fract() == 0.0 && (0.0..1e6).contains(&v) {
            self.visit_u64(v as u64)
        } else {
            Err(E::invalid_value(sde::Unexpected::Float(v), &self))
        }
    }

    fn visit_unit<E: sde::Error>(self) -> Result<T, E> {
        Ok(self.0[0])
    }
}

wire_state!(
    /// Realm state.
    RealmState { Pending, Creating, Ready, Deleting, Failed, Unknown }
);
wire_state!(
    /// Space state (external enum: no Creating/Deleting).
    SpaceState { Pending, Ready, Failed, Unknown }
);
wire_state!(
    /// Stack state.
    StackState { Pending, Ready, Failed, Unknown }
);
wire_state!(
    /// Cell state.
    CellState { Pending, Ready, Stopped, Failed, Unknown }
);
wire_state!(
    /// Container state.
    ContainerState { Pending, Ready, Stopped, Paused, Pausing, Failed, Unknown }
);

macro_rules! document {
    ($(#[$doc:meta])* $name:ident, $spec:ty, $status:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// `v1beta1`; empty is read as `v1beta1`.
            #[serde(default, deserialize_with = "de::null_default")]
            #[schema(nullable)]
            pub api_version: String,
            /// The document kind; if present it must match.
            #[serde(default, deserialize_with = "de::null_default")]
            #[schema(nullable)]
            pub kind: String,
            /// Name, labels and server-owned metadata.
            #[serde(default, deserialize_with = "de::null_default")]
            #[schema(nullable)]
            pub metadata: ObjectMeta,
            /// Desired state.
            #[serde(default, deserialize_with = "de::null_default")]
            #[schema(nullable)]
            pub spec: $spec,
            /// Observed state (written through the status subresource).
            #[serde(default, deserialize_with = "de::null_default")]
            #[schema(nullable)]
            pub status: $status,
        }
    };
}

document!(
    /// A Realm document.
    Realm, RealmSpec, RealmStatus
);
document!(
    /// A Space document.
    Space, SpaceSpec, SpaceStatus
);
document!(
    /// A Stack document.
    Stack, StackSpec, StackStatus
);
document!(
    /// A Cell document.
    Cell, CellSpec, CellStatus
);
document!(
    /// A Container document.
    Container, ContainerSpec, ContainerStatus
);

/// Realm spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RealmSpec {
    /// containerd namespace.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub namespace: String,
    /// Registry credentials; passwords only by reference.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub registry_credentials: Vec<RegistryCredentials>,
}

/// Registry credentials. `password` must be empty: use `passwordRef`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryCredentials {
    /// User name.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub username: String,
    /// Must be empty or absent (use `passwordRef`). Only whether a value was
    /// given is kept, never the value; never returned.
    #[serde(
        default,
        rename = "password",
        skip_serializing,
        deserialize_with = "de::presence"
    )]
    #[schema(value_type = Option<String>, write_only, max_length = 0)]
    pub password_given: bool,
    /// Where the daemon reads the password from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_ref: Option<SecretSource>,
    /// Registry address; empty: taken from the image reference.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub server_address: String,
}

/// A secret's location: exactly one of `fromFile`, `fromEnv`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSource {
    /// File on the daemon's host.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub from_file: String,
    /// Environment variable of the daemon.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub from_env: String,
}

/// Realm status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RealmStatus {
    /// State, by name (integers accepted on input).
    #[serde(default)]
    pub state: RealmState,
    /// cgroup path.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub cgroup_path: String,
    /// Delegated cgroup-v2 controllers.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub subtree_controllers: Vec<String>,
}

/// Space spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpaceSpec {
    /// Parent realm.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub realm_id: String,
    /// CNI configuration path.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub cni_config_path: String,
    /// Network policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<SpaceNetwork>,
    /// Defaults for resources inside the space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<SpaceDefaults>,
}

/// Space network policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpaceNetwork {
    /// Egress policy; absent: unconstrained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressPolicy>,
}

/// Egress fallthrough action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EgressDefault {
    /// Allow unmatched traffic.
    #[default]
    Allow,
    /// Deny unmatched traffic.
    Deny,
}

/// Egress policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressPolicy {
    /// `allow` or `deny`.
    #[serde(default)]
    pub default: EgressDefault,
    /// Allowed destinations.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub allow: Vec<EgressAllowRule>,
}

/// One allowed destination: exactly one of `host`, `cidr`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressAllowRule {
    /// Host name.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub host: String,
    /// CIDR block.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub cidr: String,
    /// Ports 1..65535; empty: any.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::int_list"
    )]
    #[schema(nullable)]
    pub ports: Vec<i64>,
}

/// Space defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpaceDefaults {
    /// Container isolation defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<SpaceContainerDefaults>,
}

/// Container isolation defaults of a space.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpaceContainerDefaults {
    /// User.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub user: String,
    /// Read-only root filesystem; null: no default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    /// Capability deltas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<ContainerCapabilities>,
    /// Security options.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub security_opts: Vec<String>,
    /// tmpfs mounts.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub tmpfs: Vec<ContainerTmpfsMount>,
    /// cgroup limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
}

/// Space status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpaceStatus {
    /// State, by name (integers accepted on input).
    #[serde(default)]
    pub state: SpaceState,
    /// cgroup path.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub cgroup_path: String,
    /// Delegated cgroup-v2 controllers.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub subtree_controllers: Vec<String>,
}

/// Stack spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackSpec {
    /// Stack id (defaults to, and must equal, `metadata.name`).
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub id: String,
    /// Parent realm.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub realm_id: String,
    /// Parent space.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub space_id: String,
}

/// Stack status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackStatus {
    /// State, by name (integers accepted on input).
    #[serde(default)]
    pub state: StackState,
    /// cgroup path.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub cgroup_path: String,
    /// Delegated cgroup-v2 controllers.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub subtree_controllers: Vec<String>,
}

/// Cell spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CellSpec {
    /// Cell id (defaults to, and must equal, `metadata.name`).
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub id: String,
    /// Parent realm.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub realm_id: String,
    /// Parent space.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub space_id: String,
    /// Parent stack.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub stack_id: String,
    /// Id of the root container.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub root_container_id: String,
    /// Terminal settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<CellTty>,
    /// The cell's containers.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub containers: Vec<ContainerSpec>,
    /// Delete the cell once it stops after having been ready.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub auto_delete: bool,
    /// Delegate all cgroup controllers to an inner runtime.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub nested_cgroup_runtime: bool,
}

/// Cell terminal settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CellTty {
    /// Attachable container picked by default.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub default: String,
}

/// Cell status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CellStatus {
    /// State, by name (integers accepted on input).
    #[serde(default)]
    pub state: CellState,
    /// cgroup path.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub cgroup_path: String,
    /// Delegated cgroup-v2 controllers.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub subtree_controllers: Vec<String>,
    /// Network attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<CellNetworkStatus>,
    /// Per-container status.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub containers: Vec<ContainerStatus>,
    /// Latch: observed Ready at least once.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub ready_observed: bool,
}

/// Cell network status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CellNetworkStatus {
    /// Host-side bridge name.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub bridge_name: String,
}

/// Container spec (standalone or embedded in a cell).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSpec {
    /// Container id (defaults to, and must equal, `metadata.name`).
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub id: String,
    /// containerd id.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub containerd_id: String,
    /// Parent realm.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub realm_id: String,
    /// Parent space.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub space_id: String,
    /// Parent stack.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub stack_id: String,
    /// Parent cell.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub cell_id: String,
    /// Root container of its cell.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub root: bool,
    /// Image reference.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub image: String,
    /// Command.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub command: String,
    /// Arguments.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub args: Vec<String>,
    /// Working directory.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub working_dir: String,
    /// Environment, `KEY=value`.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub env: Vec<String>,
    /// Port mappings.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub ports: Vec<String>,
    /// Mounts.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub volumes: Vec<VolumeMount>,
    /// Networks.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub networks: Vec<String>,
    /// Network aliases.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub networks_aliases: Vec<String>,
    /// Privileged mode.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub privileged: bool,
    /// Host network namespace.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub host_network: bool,
    /// Host PID namespace.
    #[serde(
        default,
        rename = "hostPID",
        skip_serializing_if = "is_false",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub host_pid: bool,
    /// Host cgroup namespace.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub host_cgroup: bool,
    /// User.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub user: String,
    /// Read-only root filesystem.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub read_only_root_filesystem: bool,
    /// Capability deltas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<ContainerCapabilities>,
    /// Security options.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub security_opts: Vec<String>,
    /// tmpfs mounts.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub tmpfs: Vec<ContainerTmpfsMount>,
    /// cgroup limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
    /// Secret references (never values).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub secrets: Vec<ContainerSecret>,
    /// CNI configuration path.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub cni_config_path: String,
    /// Restart policy.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub restart_policy: String,
    /// Whether a terminal can attach.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub attachable: bool,
    /// Terminal settings (requires `attachable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<ContainerTty>,
}

/// A mount: `bind` (source and target) or `tmpfs` (target only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    /// `bind` or `tmpfs`; empty means bind.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub kind: String,
    /// Host path (bind only).
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub source: String,
    /// Absolute path in the container.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub target: String,
    /// Read-only.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub read_only: bool,
    /// tmpfs size in bytes.
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "de::int")]
    pub size_bytes: i64,
    /// tmpfs mode: a number (493) or an octal string (`"0755"`, `"0o755"`).
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "de::mode"
    )]
    #[schema(schema_with = mode_schema)]
    pub mode: u32,
}

/// Capability deltas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerCapabilities {
    /// Capabilities to drop.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub drop: Vec<String>,
    /// Capabilities to add.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub add: Vec<String>,
}

/// A tmpfs mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerTmpfsMount {
    /// Absolute mount point.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub path: String,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "de::int")]
    pub size_bytes: i64,
    /// Mount options.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub options: Vec<String>,
}

/// cgroup v2 limits; absent and 0 differ.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerResources {
    /// memory.max in bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_int"
    )]
    pub memory_limit_bytes: Option<i64>,
    /// CPU shares.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_int"
    )]
    pub cpu_shares: Option<i64>,
    /// pids.max.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_int"
    )]
    pub pids_limit: Option<i64>,
}

/// A secret reference: `name` and exactly one of `fromFile`, `fromEnv`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSecret {
    /// Secret name.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub name: String,
    /// File holding the value.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub from_file: String,
    /// Environment variable holding the value.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub from_env: String,
    /// Absolute mount path, for mount mode.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub mount_path: String,
}

/// Container terminal settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerTty {
    /// Prompt.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub prompt: String,
    /// Scripts run on attach.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    #[schema(nullable)]
    pub on_init: Vec<TtyStage>,
}

/// One tty init stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TtyStage {
    /// Script.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub script: String,
}

/// Observed container state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStatus {
    /// Container name.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub name: String,
    /// Container id.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub id: String,
    /// State, by name (integers accepted on input).
    #[serde(default)]
    pub state: ContainerState,
    /// Restarts so far.
    #[serde(default, deserialize_with = "de::int")]
    pub restart_count: i64,
    /// RFC 3339; `0001-01-01T00:00:00Z` when unset.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub restart_time: String,
    /// RFC 3339; `0001-01-01T00:00:00Z` when unset.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub start_time: String,
    /// RFC 3339; `0001-01-01T00:00:00Z` when unset.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub finish_time: String,
    /// Exit code.
    #[serde(default, deserialize_with = "de::int")]
    pub exit_code: i64,
    /// Exit signal.
    #[serde(default, deserialize_with = "de::null_default")]
    #[schema(nullable)]
    pub exit_signal: String,
}

/// List metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// Revision of the snapshot the items come from.
    pub resource_version: String,
    /// Token for the next page, when more items remain.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

macro_rules! list {
    ($(#[$doc:meta])* $name:ident, $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// `v1beta1`.
            pub api_version: String,
            /// The list kind.
            pub kind: String,
            /// Snapshot revision and continue token.
            pub metadata: ListMeta,
            /// The items, ordered by path.
            pub items: Vec<$item>,
        }
    };
}

list!(
    /// A list of Realms from one snapshot.
    RealmList, Realm
);
list!(
    /// A list of Spaces from one snapshot.
    SpaceList, Space
);
list!(
    /// A list of Stacks from one snapshot.
    StackList, Stack
);
list!(
    /// A list of Cells from one snapshot.
    CellList, Cell
);
list!(
    /// A list of Containers from one snapshot.
    ContainerList, Container
);

/// Any v1beta1 document, serialized as itself.
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived, serialized right away"
)]
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AnyDocument {
    /// A Realm.
    Realm(Realm),
    /// A Space.
    Space(Space),
    /// A Stack.
    Stack(Stack),
    /// A Cell.
    Cell(Cell),
    /// A Container.
    Container(Container),
}

/// One document's result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyItem {
    /// Position in the request.
    pub index: usize,
    /// Document kind.
    pub kind: String,
    /// `realm/space/...` path of the object.
    pub path: String,
    /// `created`, `configured` or `unchanged`.
    pub outcome: String,
    /// The object's `resourceVersion` after the request.
    pub resource_version: String,
    /// The object's generation after the request.
    pub generation: u64,
}

/// The response of `/apply`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    /// `v1beta1`.
    pub api_version: String,
    /// `ApplyResult`.
    pub kind: String,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// The store revision after the request.
    pub resource_version: String,
    /// Per document, in request order.
    pub items: Vec<ApplyItem>,
}
