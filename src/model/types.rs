//! Internal resource records (kukeon `internal/modelhub` v0.4.0 shapes).
//!
//! Field names follow the internal model (`realm_name`, not `realmId`).
//! These structs are persisted with postcard: any change to them is a new
//! storage format version with a migration (see `migrations/`). postcard
//! writes fields in declaration order and enum values as variant indexes,
//! so reordering fields or variants is such a change too. The golden tests
//! pin the bytes: `store::codec`'s (every kind's record) and `model::state`'s
//! (every enum value, [`VolumeKind`] and [`EgressDefault`] included).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::path::{Kind, Path};
use super::state::{CellState, ContainerState, RealmState, SpaceState, StackState};

/// A point in time, as nanoseconds since the Unix epoch (UTC).
pub type Timestamp = i128;

/// Name, labels and the metadata the server owns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The object's name (last path segment).
    pub name: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Stable identifier for the object's life.
    pub uid: String,
    /// Store-wide revision of the object's last write.
    pub resource_version: u64,
    /// Starts at 1; +1 on every spec change.
    pub generation: u64,
    /// Creation time.
    pub creation_timestamp: Timestamp,
    /// Controllers that must finish their work before the object goes.
    /// Record format 2.
    pub finalizers: Vec<String>,
    /// When a deletion was asked for while finalizers remained (set by the
    /// server only). Record format 2.
    pub deletion_timestamp: Option<Timestamp>,
}

impl ObjectMeta {
    /// Whether a deletion is pending (the object has `deletion_timestamp`).
    pub fn is_terminating(&self) -> bool {
        self.deletion_timestamp.is_some()
    }
}

/// Realm spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RealmSpec {
    /// containerd namespace.
    pub namespace: String,
    /// Registry credentials (passwords only by reference).
    pub registry_credentials: Vec<RegistryCredentials>,
}

/// Credentials for a container registry. The v0.4 model's `Password` is,
/// by the hub's contract, never stored: only `password_ref` is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegistryCredentials {
    /// Registry user name.
    pub username: String,
    /// Where the daemon finds the password.
    pub password_ref: Option<SecretSource>,
    /// Registry host; empty means "from the image reference".
    pub server_address: String,
}

/// Where a secret value lives: exactly one of the two is set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SecretSource {
    /// A file on the daemon's host.
    pub from_file: String,
    /// An environment variable of the daemon.
    pub from_env: String,
}

/// Realm status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RealmStatus {
    /// Lifecycle state.
    pub state: RealmState,
    /// cgroup path.
    pub cgroup_path: String,
    /// Delegated cgroup-v2 controllers.
    pub subtree_controllers: Vec<String>,
}

/// Space spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpaceSpec {
    /// Parent realm.
    pub realm_name: String,
    /// CNI configuration path.
    pub cni_config_path: String,
    /// Network policy.
    pub network: Option<SpaceNetwork>,
    /// Defaults inherited by containers of the space.
    pub defaults: Option<SpaceDefaults>,
}

/// Network policy of a space.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpaceNetwork {
    /// Egress policy; `None` means unconstrained.
    pub egress: Option<EgressPolicy>,
}

/// Fallthrough action of an egress policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EgressDefault {
    /// Allow unmatched traffic.
    #[default]
    Allow,
    /// Deny unmatched traffic.
    Deny,
}

/// Outbound traffic policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EgressPolicy {
    /// Action when no rule matches.
    pub default: EgressDefault,
    /// Allowed destinations.
    pub allow: Vec<EgressAllowRule>,
}

/// One allowed destination: exactly one of host or CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EgressAllowRule {
    /// Host name.
    pub host: String,
    /// CIDR block.
    pub cidr: String,
    /// Ports; empty means any port.
    pub ports: Vec<i64>,
}

/// Defaults declared on a space.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpaceDefaults {
    /// Container isolation defaults.
    pub container: Option<SpaceContainerDefaults>,
}

/// Isolation defaults for containers of a space.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpaceContainerDefaults {
    /// User to run as.
    pub user: String,
    /// Read-only root filesystem; `None` means no default.
    pub read_only_root_filesystem: Option<bool>,
    /// Capability deltas.
    pub capabilities: Option<ContainerCapabilities>,
    /// Security options.
    pub security_opts: Vec<String>,
    /// tmpfs mounts.
    pub tmpfs: Vec<ContainerTmpfsMount>,
    /// cgroup limits.
    pub resources: Option<ContainerResources>,
}

/// Space status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpaceStatus {
    /// Lifecycle state (internal enum).
    pub state: SpaceState,
    /// cgroup path.
    pub cgroup_path: String,
    /// Delegated cgroup-v2 controllers.
    pub subtree_controllers: Vec<String>,
}

/// Stack spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StackSpec {
    /// Stack id (equals its name).
    pub id: String,
    /// Parent realm.
    pub realm_name: String,
    /// Parent space.
    pub space_name: String,
}

/// Stack status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StackStatus {
    /// Lifecycle state.
    pub state: StackState,
    /// cgroup path.
    pub cgroup_path: String,
    /// Delegated cgroup-v2 controllers.
    pub subtree_controllers: Vec<String>,
}

/// Cell spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CellSpec {
    /// Cell id (equals its name).
    pub id: String,
    /// Parent realm.
    pub realm_name: String,
    /// Parent space.
    pub space_name: String,
    /// Parent stack.
    pub stack_name: String,
    /// Id of the root container, if any.
    pub root_container_id: String,
    /// Terminal settings.
    pub tty: Option<CellTty>,
    /// The cell's containers.
    pub containers: Vec<ContainerSpec>,
    /// Delete the cell once it has stopped after being ready.
    pub auto_delete: bool,
    /// Delegate the full cgroup controller set to an inner runtime.
    pub nested_cgroup_runtime: bool,
}

/// Cell terminal settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CellTty {
    /// The attachable container `kuke attach` picks by default.
    pub default: String,
}

/// Cell status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CellStatus {
    /// Lifecycle state.
    pub state: CellState,
    /// cgroup path.
    pub cgroup_path: String,
    /// Delegated cgroup-v2 controllers.
    pub subtree_controllers: Vec<String>,
    /// Network attachment.
    pub network: CellNetworkStatus,
    /// Per-container status.
    pub containers: Vec<ContainerStatus>,
    /// One-way latch: the cell has been observed Ready.
    pub ready_observed: bool,
}

/// Network endpoints of a cell.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CellNetworkStatus {
    /// Host-side bridge name.
    pub bridge_name: String,
}

/// A container's desired configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container id within its cell.
    pub id: String,
    /// containerd id.
    pub containerd_id: String,
    /// Parent realm.
    pub realm_name: String,
    /// Parent space.
    pub space_name: String,
    /// Parent stack.
    pub stack_name: String,
    /// Parent cell.
    pub cell_name: String,
    /// Whether this is the cell's root container.
    pub root: bool,
    /// Image reference.
    pub image: String,
    /// Command.
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Working directory.
    pub working_dir: String,
    /// Environment, `KEY=value`.
    pub env: Vec<String>,
    /// Port mappings.
    pub ports: Vec<String>,
    /// Mounts.
    pub volumes: Vec<VolumeMount>,
    /// Networks to join.
    pub networks: Vec<String>,
    /// Network aliases.
    pub networks_aliases: Vec<String>,
    /// Privileged mode.
    pub privileged: bool,
    /// Share the host network namespace.
    pub host_network: bool,
    /// Share the host PID namespace.
    pub host_pid: bool,
    /// Share the host cgroup namespace.
    pub host_cgroup: bool,
    /// Runtime-only mirror of the cell's flag; never part of a document.
    pub nested_cgroup_runtime: bool,
    /// User to run as.
    pub user: String,
    /// Read-only root filesystem.
    pub read_only_root_filesystem: bool,
    /// Capability deltas.
    pub capabilities: Option<ContainerCapabilities>,
    /// Security options.
    pub security_opts: Vec<String>,
    /// tmpfs mounts.
    pub tmpfs: Vec<ContainerTmpfsMount>,
    /// cgroup limits.
    pub resources: Option<ContainerResources>,
    /// Secret references.
    pub secrets: Vec<ContainerSecret>,
    /// CNI configuration path.
    pub cni_config_path: String,
    /// Restart policy.
    pub restart_policy: String,
    /// Whether a terminal can attach.
    pub attachable: bool,
    /// Terminal settings.
    pub tty: Option<ContainerTty>,
    /// Runtime-only: the parent cell's cgroup path.
    pub cell_cgroup_path: String,
    /// Runtime-only: host path bind-mounted at /etc/hosts.
    pub etc_hosts_path: String,
    /// Runtime-only: host path bind-mounted at /etc/hostname.
    pub etc_hostname_path: String,
    /// Runtime-only: the CellProfile the cell came from.
    pub cell_profile_name: String,
}

/// Kind of a volume mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VolumeKind {
    /// Host bind mount (the default).
    #[default]
    Bind,
    /// In-memory tmpfs.
    Tmpfs,
}

/// A mount attached to a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Mount kind; `None` (empty on the wire) means bind.
    pub kind: Option<VolumeKind>,
    /// Host path (bind only).
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Read-only mount.
    pub read_only: bool,
    /// tmpfs size in bytes (0: kernel default).
    pub size_bytes: i64,
    /// tmpfs mode (0: kernel default).
    pub mode: u32,
}

/// Capability deltas relative to the image default set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerCapabilities {
    /// Capabilities to drop.
    pub drop: Vec<String>,
    /// Capabilities to add.
    pub add: Vec<String>,
}

/// A tmpfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerTmpfsMount {
    /// Mount point.
    pub path: String,
    /// Size in bytes (0: default).
    pub size_bytes: i64,
    /// Mount options.
    pub options: Vec<String>,
}

/// cgroup v2 limits; `None` and `Some(0)` differ.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerResources {
    /// memory.max in bytes.
    pub memory_limit_bytes: Option<i64>,
    /// CPU shares.
    pub cpu_shares: Option<i64>,
    /// pids.max.
    pub pids_limit: Option<i64>,
}

/// A reference to a secret the daemon resolves; never the value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerSecret {
    /// Secret name.
    pub name: String,
    /// File holding the value.
    pub from_file: String,
    /// Environment variable holding the value.
    pub from_env: String,
    /// Where to mount it in the container (absolute), if mounted.
    pub mount_path: String,
}

/// Container terminal settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerTty {
    /// Prompt.
    pub prompt: String,
    /// Scripts run when a terminal attaches.
    pub on_init: Vec<TtyStage>,
}

impl ContainerTty {
    /// Whether the block carries no user-supplied configuration.
    pub fn is_empty(&self) -> bool {
        self.prompt.is_empty() && self.on_init.is_empty()
    }
}

/// One tty init stage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TtyStage {
    /// Script to run.
    pub script: String,
}

/// Observed state of a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// Container id.
    pub id: String,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Restarts so far.
    pub restart_count: i64,
    /// Last restart (`None`: Go's zero time).
    pub restart_time: Option<Timestamp>,
    /// Start time.
    pub start_time: Option<Timestamp>,
    /// Finish time.
    pub finish_time: Option<Timestamp>,
    /// Exit code.
    pub exit_code: i64,
    /// Exit signal.
    pub exit_signal: String,
}

/// A stored object of one kind: metadata, spec and status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Object<S, T> {
    /// Name, labels and server-owned metadata.
    pub meta: ObjectMeta,
    /// Desired state.
    pub spec: S,
    /// Observed state.
    pub status: T,
}

/// A realm.
pub type Realm = Object<RealmSpec, RealmStatus>;
/// A space.
pub type Space = Object<SpaceSpec, SpaceStatus>;
/// A stack.
pub type Stack = Object<StackSpec, StackStatus>;
/// A cell.
pub type Cell = Object<CellSpec, CellStatus>;
/// A standalone container resource.
pub type Container = Object<ContainerSpec, ContainerStatus>;

/// Any object, tagged by kind: what the store and watch move around.
#[expect(
    clippy::large_enum_variant,
    reason = "objects are decoded once and moved a few times per request"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnyObject {
    /// A realm.
    Realm(Realm),
    /// A space.
    Space(Space),
    /// A stack.
    Stack(Stack),
    /// A cell.
    Cell(Cell),
    /// A container.
    Container(Container),
}

/// Applies the same expression to whichever object an [`AnyObject`] holds.
macro_rules! each {
    ($value:expr, $o:ident => $body:expr) => {
        match $value {
            AnyObject::Realm($o) => $body,
            AnyObject::Space($o) => $body,
            AnyObject::Stack($o) => $body,
            AnyObject::Cell($o) => $body,
            AnyObject::Container($o) => $body,
        }
    };
}

impl AnyObject {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            AnyObject::Realm(_) => Kind::Realm,
            AnyObject::Space(_) => Kind::Space,
            AnyObject::Stack(_) => Kind::Stack,
            AnyObject::Cell(_) => Kind::Cell,
            AnyObject::Container(_) => Kind::Container,
        }
    }

    /// Metadata.
    pub fn meta(&self) -> &ObjectMeta {
        each!(self, o => &o.meta)
    }

    /// The name of `status.state`.
    pub fn state_name(&self) -> &'static str {
        each!(self, o => o.status.state.as_str())
    }

    /// Mutable metadata.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each!(self, o => &mut o.meta)
    }

    /// The object's path, from its name and the parent coordinates in its spec.
    pub fn path(&self) -> Path {
        let name = self.meta().name.clone();
        let names = match self {
            AnyObject::Realm(_) => vec![name],
            AnyObject::Space(o) => vec![o.spec.realm_name.clone(), name],
            AnyObject::Stack(o) => vec![o.spec.realm_name.clone(), o.spec.space_name.clone(), name],
            AnyObject::Cell(o) => vec![
                o.spec.realm_name.clone(),
                o.spec.space_name.clone(),
                o.spec.stack_name.clone(),
                name,
            ],
            AnyObject::Container(o) => vec![
                o.spec.realm_name.clone(),
                o.spec.space_name.clone(),
                o.spec.stack_name.clone(),
                o.spec.cell_name.clone(),
                name,
            ],
        };
        Path::new(self.kind(), names)
    }

    /// Whether the specs of two objects of the same kind are equal.
    pub fn same_spec(&self, other: &AnyObject) -> bool {
        match (self, other) {
            (AnyObject::Realm(a), AnyObject::Realm(b)) => a.spec == b.spec,
            (AnyObject::Space(a), AnyObject::Space(b)) => a.spec == b.spec,
            (AnyObject::Stack(a), AnyObject::Stack(b)) => a.spec == b.spec,
            (AnyObject::Cell(a), AnyObject::Cell(b)) => a.spec == b.spec,
            (AnyObject::Container(a), AnyObject::Container(b)) => a.spec == b.spec,
            _ => false,
        }
    }

    /// Whether the statuses of two objects of the same kind are equal.
    pub fn same_status(&self, other: &AnyObject) -> bool {
        match (self, other) {
            (AnyObject::Realm(a), AnyObject::Realm(b)) => a.status == b.status,
            (AnyObject::Space(a), AnyObject::Space(b)) => a.status == b.status,
            (AnyObject::Stack(a), AnyObject::Stack(b)) => a.status == b.status,
            (AnyObject::Cell(a), AnyObject::Cell(b)) => a.status == b.status,
            (AnyObject::Container(a), AnyObject::Container(b)) => a.status == b.status,
            _ => false,
        }
    }

    /// This object with `other`'s spec (same kind; otherwise unchanged).
    pub fn with_spec_of(mut self, other: &AnyObject) -> AnyObject {
        match (&mut self, other) {
            (AnyObject::Realm(a), AnyObject::Realm(b)) => a.spec = b.spec.clone(),
            (AnyObject::Space(a), AnyObject::Space(b)) => a.spec = b.spec.clone(),
            (AnyObject::Stack(a), AnyObject::Stack(b)) => a.spec = b.spec.clone(),
            (AnyObject::Cell(a), AnyObject::Cell(b)) => a.spec = b.spec.clone(),
            (AnyObject::Container(a), AnyObject::Container(b)) => a.spec = b.spec.clone(),
            _ => {}
        }
        self
    }

    /// This object with `other`'s status (same kind; otherwise unchanged).
    pub fn with_status_of(mut self, other: &AnyObject) -> AnyObject {
        match (&mut self, other) {
            (AnyObject::Realm(a), AnyObject::Realm(b)) => a.status = b.status.clone(),
            (AnyObject::Space(a), AnyObject::Space(b)) => a.status = b.status.clone(),
            (AnyObject::Stack(a), AnyObject::Stack(b)) => a.status = b.status.clone(),
            (AnyObject::Cell(a), AnyObject::Cell(b)) => a.status = b.status.clone(),
            (AnyObject::Container(a), AnyObject::Container(b)) => a.status = b.status.clone(),
            _ => {}
        }
        self
    }
}

impl AnyObject {
    /// Places the object at `path`: empty name, id and parent coordinates
    /// are filled from it; a given value that differs is an error naming
    /// the field (callers answer 400: the document contradicts the URL).
    pub fn place(&mut self, path: &Path) -> Result<(), super::Invalid> {
        assert_eq!(
            path.kind(),
            self.kind(),
            "placing an object at another kind's path"
        );
        let n = path.names();
        let mut fields: Vec<(&str, &mut String, &String)> = Vec::with_capacity(6);
        match self {
            AnyObject::Realm(o) => fields.push(("metadata.name", &mut o.meta.name, &n[0])),
            AnyObject::Space(o) => {
                fields.push(("spec.realmId", &mut o.spec.realm_name, &n[0]));
                fields.push(("metadata.name", &mut o.meta.name, &n[1]));
            }
            AnyObject::Stack(o) => {
                fields.push(("spec.realmId", &mut o.spec.realm_name, &n[0]));
                fields.push(("spec.spaceId", &mut o.spec.space_name, &n[1]));
                fields.push(("metadata.name", &mut o.meta.name, &n[2]));
                fields.push(("spec.id", &mut o.spec.id, &n[2]));
            }
            AnyObject::Cell(o) => {
                fields.push(("spec.realmId", &mut o.spec.realm_name, &n[0]));
                fields.push(("spec.spaceId", &mut o.spec.space_name, &n[1]));
                fields.push(("spec.stackId", &mut o.spec.stack_name, &n[2]));
                fields.push(("metadata.name", &mut o.meta.name, &n[3]));
                fields.push(("spec.id", &mut o.spec.id, &n[3]));
            }
            AnyObject::Container(o) => {
                fields.push(("spec.realmId", &mut o.spec.realm_name, &n[0]));
                fields.push(("spec.spaceId", &mut o.spec.space_name, &n[1]));
                fields.push(("spec.stackId", &mut o.spec.stack_name, &n[2]));
                fields.push(("spec.cellId", &mut o.spec.cell_name, &n[3]));
                fields.push(("metadata.name", &mut o.meta.name, &n[4]));
                fields.push(("spec.id", &mut o.spec.id, &n[4]));
            }
        }
        for (field, value, want) in fields {
            if value.is_empty() {
                value.clone_from(want);
            } else if value != want {
                return Err(super::Invalid::new(
                    field,
                    format!("{value:?} does not match {want:?} from the request path"),
                ));
            }
        }
        Ok(())
    }

    /// Fills a stack's, cell's or container's empty `spec.id` from its name.
    pub fn default_id(&mut self) {
        let (name, id) = match self {
            AnyObject::Stack(o) => (&o.meta.name, &mut o.spec.id),
            AnyObject::Cell(o) => (&o.meta.name, &mut o.spec.id),
            AnyObject::Container(o) => (&o.meta.name, &mut o.spec.id),
            AnyObject::Realm(_) | AnyObject::Space(_) => return,
        };
        if id.is_empty() {
            id.clone_from(name);
        }
    }
}
