//! Validation and normalisation of objects before they are stored.
//!
//! [`validate_object`] first fills what the model defaults (the coordinates
//! of a cell's embedded containers), then checks every rule of the API
//! contract. Errors name the offending field by its wire path
//! (`spec.containers[1].tty`), since that is what clients see.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use super::types::*;

/// A validation failure: the field's wire path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Wire path of the field, e.g. `spec.containers[1].tty`.
    pub field: String,
    /// What is wrong, without echoing secret values.
    pub message: String,
}

impl Invalid {
    /// A failure at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for Invalid {}

type Result<T = ()> = std::result::Result<T, Invalid>;

/// The wire path of a list's item, `list[index]`, formatted only when an
/// error names it: validating a valid object (the common case) formats no
/// field path.
#[derive(Clone, Copy)]
struct Item<'a>(&'a dyn fmt::Display, usize);

impl fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.0, self.1)
    }
}

/// Checks a resource name: non-empty after trimming, no `_`, `/` or control
/// characters, not `.` or `..`, at most 253 bytes.
pub fn validate_name(field: impl fmt::Display, name: &str) -> Result {
    let fail = |m: &str| Err(Invalid::new(field.to_string(), m));
    if name.trim().is_empty() {
        return fail("must not be empty");
    }
    if name.len() > 253 {
        return fail("must be at most 253 bytes");
    }
    if name.contains('_') {
        return fail("must not contain '_' (the containerd id separator)");
    }
    if name.contains('/') {
        return fail("must not contain '/'");
    }
    if name.chars().any(char::is_control) {
        return fail("must not contain control characters");
    }
    if name == "." || name == ".." {
        return fail("must not be '.' or '..'");
    }
    if name.trim() != name {
        return fail("must not start or end with whitespace");
    }
    Ok(())
}

/// Normalises and validates an object (any kind) before it is written:
/// every rule, the label rules of [`validate_labels`] included.
pub fn validate_object(obj: &mut AnyObject) -> Result {
    validate_labels(&obj.meta().labels)?;
    validate_stored_object(obj)
}

/// [`validate_object`] without the label rules of [`validate_labels`]
/// (only [`validate_label_keys_present`]): what every object the store
/// has ever accepted satisfies, so objects written before the label rules
/// existed (restored from a backup, say) are still accepted.
pub fn validate_stored_object(obj: &mut AnyObject) -> Result {
    validate_name("metadata.name", &obj.meta().name)?;
    validate_label_keys_present(&obj.meta().labels)?;
    validate_finalizers(&obj.meta().finalizers)?;
    match obj {
        AnyObject::Realm(r) => validate_realm(&r.spec),
        AnyObject::Space(s) => validate_space(&s.spec),
        AnyObject::Stack(_) => Ok(()),
        AnyObject::Cell(c) => validate_cell(&mut c.spec),
        AnyObject::Container(c) => validate_container(&"spec", &c.spec),
    }
}

/// The most labels an object may have.
pub const MAX_LABELS: usize = 64;
/// The most bytes a label value may have (a kukeon name fits: kukeon
/// keeps a CellProfile's name in a label).
pub const MAX_LABEL_VALUE: usize = 253;
/// The most bytes an object's labels may hold, keys and values together.
pub const MAX_LABELS_BYTES: usize = 16 * 1024;
/// The most bytes of a label key's prefix (a DNS subdomain).
const MAX_KEY_PREFIX: usize = 253;
/// The most bytes of a label key's name (after the prefix).
const MAX_KEY_NAME: usize = 63;

/// The only rule labels had before [`validate_labels`]: keys are not
/// empty. Status writes check no more, so that objects stored with labels
/// that today's rules refuse can still have their status written.
pub fn validate_label_keys_present(labels: &std::collections::BTreeMap<String, String>) -> Result {
    if labels.keys().any(String::is_empty) {
        return Err(Invalid::new(
            "metadata.labels",
            "label keys must not be empty",
        ));
    }
    Ok(())
}

/// The label rules of a write (Kubernetes' for keys, more permissive for
/// values): at most [`MAX_LABELS`] labels holding at most
/// [`MAX_LABELS_BYTES`] bytes; each key an optional prefix (a DNS
/// subdomain of at most 253 bytes: lowercase alphanumerics, `-` and `.`,
/// alphanumeric at both ends of each dot-separated part) and `/`, then a
/// name of 1 to 63 bytes of alphanumerics, `-`, `_` and `.`, alphanumeric
/// at both ends; each value at most [`MAX_LABEL_VALUE`] bytes of any
/// characters but control characters (empty allowed). A key is named in
/// the error as `metadata.labels["key"]` (a key over 317 bytes by its
/// first 32 characters and `...`); values are never echoed.
pub fn validate_labels(labels: &std::collections::BTreeMap<String, String>) -> Result {
    if labels.len() > MAX_LABELS {
        return Err(Invalid::new(
            "metadata.labels",
            format!(
                "at most {MAX_LABELS} labels are allowed, not {}",
                labels.len()
            ),
        ));
    }
    let mut bytes = 0;
    for (key, value) in labels {
        validate_label_key(key).map_err(|m| Invalid::new(label_field(key), format!("key {m}")))?;
        if value.len() > MAX_LABEL_VALUE {
            return Err(Invalid::new(
                label_field(key),
                format!(
                    "the value must be at most {MAX_LABEL_VALUE} bytes, not {}",
                    value.len()
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(Invalid::new(
                label_field(key),
                "the value must not contain control characters",
            ));
        }
        bytes += key.len() + value.len();
    }
    if bytes > MAX_LABELS_BYTES {
        return Err(Invalid::new(
            "metadata.labels",
            format!(
                "labels must hold at most {MAX_LABELS_BYTES} bytes (keys and values), not {bytes}"
            ),
        ));
    }
    Ok(())
}

/// The most finalizers an object may have.
pub const MAX_FINALIZERS: usize = 32;

/// The finalizer rules: at most [`MAX_FINALIZERS`] names, each a
/// Kubernetes label key (e.g. `kukeon.io/runtime`), none repeated. A
/// name is named in the error as `metadata.finalizers[i]`.
pub fn validate_finalizers(finalizers: &[String]) -> Result {
    if finalizers.len() > MAX_FINALIZERS {
        return Err(Invalid::new(
            "metadata.finalizers",
            format!(
                "at most {MAX_FINALIZERS} finalizers are allowed, not {}",
                finalizers.len()
            ),
        ));
    }
    for (i, name) in finalizers.iter().enumerate() {
        let field = Item(&"metadata.finalizers", i);
        validate_label_key(name)
            .map_err(|m| Invalid::new(field.to_string(), format!("finalizer {m}")))?;
        if let Some(j) = finalizers[..i].iter().position(|f| f == name) {
            return Err(Invalid::new(
                field.to_string(),
                format!("repeats metadata.finalizers[{j}]"),
            ));
        }
    }
    Ok(())
}

/// `metadata.labels["key"]`, the key quoted as a JSON string (a long key
/// cut to its first 32 characters and `...`).
fn label_field(key: &str) -> String {
    let quote = |k: &str| serde_json::to_string(k).expect("strings serialize");
    if key.len() > MAX_KEY_PREFIX + 1 + MAX_KEY_NAME {
        let head: String = key.chars().take(32).collect();
        format!("metadata.labels[{}...]", quote(&head))
    } else {
        format!("metadata.labels[{}]", quote(key))
    }
}

/// Kubernetes' label key rule; the error says what is wrong.
fn validate_label_key(key: &str) -> std::result::Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix before '/' must not be empty".into());
        }
        if prefix.len() > MAX_KEY_PREFIX {
            return Err(format!(
                "prefix must be at most {MAX_KEY_PREFIX} bytes, not {}",
                prefix.len()
            ));
        }
        let part_ok = |p: &str| {
            let b = p.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        };
        if !prefix.split('.').all(part_ok) {
            return Err(
                "prefix must be a DNS subdomain: lowercase letters, digits, '-' and '.', \
                 each dot-separated part starting and ending with a letter or digit"
                    .into(),
            );
        }
    }
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.len() > MAX_KEY_NAME {
        return Err(format!(
            "name must be at most {MAX_KEY_NAME} bytes, not {}",
            name.len()
        ));
    }
    let b = name.as_bytes();
    let inner_ok = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    if !b.iter().all(inner_ok)
        || !b[0].is_ascii_alphanumeric()
        || !b[b.len() - 1].is_ascii_alphanumeric()
    {
        return Err(
            "name must be letters, digits, '-', '_' and '.', starting and ending with a \
             letter or digit (a '/' separates an optional DNS-subdomain prefix)"
                .into(),
        );
    }
    Ok(())
}

fn validate_realm(spec: &RealmSpec) -> Result {
    for (i, cred) in spec.registry_credentials.iter().enumerate() {
        if let Some(r) = &cred.password_ref {
            exactly_one_source(
                format_args!("spec.registryCredentials[{i}].passwordRef"),
                &r.from_file,
                &r.from_env,
            )?;
        }
    }
    Ok(())
}

fn exactly_one_source(field: impl fmt::Display, from_file: &str, from_env: &str) -> Result {
    match (from_file.is_empty(), from_env.is_empty()) {
        (false, true) | (true, false) => Ok(()),
        _ => Err(Invalid::new(
            field.to_string(),
            "exactly one of fromFile or fromEnv must be set",
        )),
    }
}

fn validate_space(spec: &SpaceSpec) -> Result {
    let egress = spec.network.as_ref().and_then(|n| n.egress.as_ref());
    for (i, rule) in egress
        .map(|e| e.allow.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let field = Item(&"spec.network.egress.allow", i);
        match (rule.host.is_empty(), rule.cidr.is_empty()) {
            (false, true) => {}
            (true, false) => validate_cidr(format_args!("{field}.cidr"), &rule.cidr)?,
            _ => {
                return Err(Invalid::new(
                    field.to_string(),
                    "exactly one of host or cidr must be set",
                ));
            }
        }
        for (j, port) in rule.ports.iter().enumerate() {
            if !(1..=65535).contains(port) {
                return Err(Invalid::new(
                    format!("{field}.ports[{j}]"),
                    format!("port {port} is outside 1..65535"),
                ));
            }
        }
    }
    Ok(())
}

fn validate_cidr(field: impl fmt::Display, cidr: &str) -> Result {
    let bad = || {
        Invalid::new(
            field.to_string(),
            format!("{cidr:?} is not a valid CIDR (address/prefix)"),
        )
    };
    let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(())
}

fn validate_cell(spec: &mut CellSpec) -> Result {
    let mut ids = HashSet::new();
    let mut root: Option<usize> = None;
    for (i, c) in spec.containers.iter_mut().enumerate() {
        let field = Item(&"spec.containers", i);
        for (coord, parent, own) in [
            ("realmId", &spec.realm_name, &mut c.realm_name),
            ("spaceId", &spec.space_name, &mut c.space_name),
            ("stackId", &spec.stack_name, &mut c.stack_name),
            ("cellId", &spec.id, &mut c.cell_name),
        ] {
            if own.is_empty() {
                own.clone_from(parent);
            } else if own != parent {
                return Err(Invalid::new(
                    format!("{field}.{coord}"),
                    format!("{own:?} differs from the cell's {parent:?}"),
                ));
            }
        }
        validate_container(&field, c)?;
        if !ids.insert(c.id.clone()) {
            return Err(Invalid::new(
                format!("{field}.id"),
                format!("duplicate container id {:?} in this cell", c.id),
            ));
        }
        if c.root {
            if let Some(first) = root {
                return Err(Invalid::new(
                    format!("{field}.root"),
                    format!("spec.containers[{first}] is already the root container"),
                ));
            }
            root = Some(i);
        }
    }
    if !spec.root_container_id.is_empty() && !ids.contains(&spec.root_container_id) {
        return Err(Invalid::new(
            "spec.rootContainerId",
            format!(
                "{:?} names no container of this cell",
                spec.root_container_id
            ),
        ));
    }
    if let Some(tty) = &spec.tty
        && !tty.default.is_empty()
    {
        match spec.containers.iter().find(|c| c.id == tty.default) {
            None => {
                return Err(Invalid::new(
                    "spec.tty.default",
                    format!("{:?} names no container of this cell", tty.default),
                ));
            }
            Some(c) if !c.attachable => {
                return Err(Invalid::new(
                    "spec.tty.default",
                    format!("container {:?} is not attachable", tty.default),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn validate_container(field: &dyn fmt::Display, c: &ContainerSpec) -> Result {
    validate_name(format_args!("{field}.id"), &c.id)?;
    for (i, v) in c.volumes.iter().enumerate() {
        let vf = Item(&format_args!("{field}.volumes"), i);
        absolute(format_args!("{vf}.target"), &v.target)?;
        match v.kind.unwrap_or_default() {
            VolumeKind::Bind => {
                if v.source.is_empty() {
                    return Err(Invalid::new(
                        format!("{vf}.source"),
                        "a bind mount needs a source",
                    ));
                }
                if v.size_bytes != 0 || v.mode != 0 {
                    let f = if v.size_bytes != 0 {
                        "sizeBytes"
                    } else {
                        "mode"
                    };
                    return Err(Invalid::new(
                        format!("{vf}.{f}"),
                        "only tmpfs mounts take this option",
                    ));
                }
            }
            VolumeKind::Tmpfs => {
                if !v.source.is_empty() {
                    return Err(Invalid::new(
                        format!("{vf}.source"),
                        "a tmpfs mount takes no source",
                    ));
                }
                if v.size_bytes < 0 {
                    return Err(Invalid::new(
                        format!("{vf}.sizeBytes"),
                        "must not be negative",
                    ));
                }
            }
        }
    }
    for (i, t) in c.tmpfs.iter().enumerate() {
        absolute(format_args!("{field}.tmpfs[{i}].path"), &t.path)?;
    }
    for (i, s) in c.secrets.iter().enumerate() {
        let sf = Item(&format_args!("{field}.secrets"), i);
        if s.name.trim().is_empty() {
            return Err(Invalid::new(
                format!("{sf}.name"),
                "a secret reference needs a name",
            ));
        }
        exactly_one_source(sf, &s.from_file, &s.from_env)?;
        if !s.mount_path.is_empty() {
            absolute(format_args!("{sf}.mountPath"), &s.mount_path)?;
        }
    }
    if c.tty.is_some() && !c.attachable {
        return Err(Invalid::new(
            format!("{field}.tty"),
            "tty is set but the container is not attachable (set attachable: true)",
        ));
    }
    Ok(())
}

fn absolute(field: impl fmt::Display, path: &str) -> Result {
    if path.starts_with('/') {
        Ok(())
    } else if path.is_empty() {
        Err(Invalid::new(field.to_string(), "required"))
    } else {
        Err(Invalid::new(
            field.to_string(),
            format!("{path:?} must be an absolute path"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "web-1", "x.y", "Ω"] {
            assert!(validate_name("n", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "  ",
            "a_b",
            "a/b",
            ".",
            "..",
            "a\nb",
            " a",
            &"x".repeat(254),
        ] {
            assert!(validate_name("n", bad).is_err(), "{bad:?}");
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_keys() {
        let long_prefix = format!("{}.io", "a".repeat(250));
        let ok_keys = [
            "app",
            "a",
            "A.b-c_d",
            "kukeon.io/cell-profile",
            "a.b-c.d/x",
            "0/x",
            &format!("{long_prefix}/{}", "n".repeat(63)),
        ];
        for k in ok_keys {
            assert!(validate_labels(&labels(&[(k, "v")])).is_ok(), "{k}");
        }
        let bad_keys = [
            "",
            "/x",
            "x/",
            "-a",
            "a-",
            "a b",
            "a/b/c",
            "Example.com/x",
            "ex_ample.com/x",
            "-ex.com/x",
            "ex..com/x",
            "ex.com-/x",
            "Ω",
            &"n".repeat(64),
            &format!("a{long_prefix}/x"),
        ];
        for k in bad_keys {
            let e = validate_labels(&labels(&[(k, "v")])).unwrap_err();
            assert_eq!(e.field, label_field(k), "{k:?}");
        }
        assert_eq!(label_field("app"), r#"metadata.labels["app"]"#);
        assert_eq!(label_field("a\u{7}"), r#"metadata.labels["a\u0007"]"#);
        assert_eq!(
            label_field(&"k".repeat(1000)),
            format!("metadata.labels[{:?}...]", "k".repeat(32))
        );
    }

    #[test]
    fn label_values_and_caps() {
        for ok in ["", "web", "Ω and spaces = fine", &"v".repeat(253)] {
            assert!(validate_labels(&labels(&[("k", ok)])).is_ok(), "{ok:?}");
        }
        for bad in [&"v".repeat(254), "a\nb", "\u{7f}", "tab\there"] {
            let e = validate_labels(&labels(&[("k", bad)])).unwrap_err();
            assert_eq!(e.field, r#"metadata.labels["k"]"#);
            assert!(!e.message.contains(bad), "the value is not echoed");
        }
        let many: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        let mut m: std::collections::BTreeMap<_, _> = many.into_iter().collect();
        assert_eq!(validate_labels(&m).unwrap_err().field, "metadata.labels");
        m.pop_first();
        assert!(validate_labels(&m).is_ok(), "64 labels are fine");
        // 64 labels of a 63-byte key and a 253-byte value: over the total.
        let big: std::collections::BTreeMap<_, _> = (0..64)
            .map(|i| (format!("{i:0>63}"), "v".repeat(253)))
            .collect();
        let e = validate_labels(&big).unwrap_err();
        assert_eq!(e.field, "metadata.labels");
        assert!(e.message.contains("bytes"), "{e}");
    }

    #[test]
    fn stored_objects_keep_the_old_label_rule() {
        let mut r = AnyObject::Realm(Realm {
            meta: ObjectMeta {
                name: "r".into(),
                labels: (0..100)
                    .map(|i| (format!("k{i}"), "v".repeat(1000)))
                    .collect(),
                ..ObjectMeta::default()
            },
            ..Realm::default()
        });
        assert!(validate_stored_object(&mut r).is_ok());
        assert_eq!(
            validate_object(&mut r).unwrap_err().field,
            "metadata.labels"
        );
        r.meta_mut().labels.insert(String::new(), "x".into());
        assert!(validate_stored_object(&mut r).is_err());
    }

    /// Every path built lazily (only on failure) names the item at its
    /// index, nested lists included, on every kind that has one (a
    /// token's `realms[i]`: tests/auth.rs).
    #[test]
    fn nested_list_items_are_named_by_index() {
        let meta = |name: &str| ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        };
        let vol = |target: &str| VolumeMount {
            target: target.into(),
            source: "/h".into(),
            ..VolumeMount::default()
        };
        let secret = |from_file: &str, mount_path: &str| ContainerSecret {
            name: "s".into(),
            from_file: from_file.into(),
            mount_path: mount_path.into(),
            ..ContainerSecret::default()
        };
        let in_cell = |c: ContainerSpec| {
            let mut obj = cell(vec![ctr("a"), c]);
            validate_object(&mut obj).unwrap_err().field
        };
        let cases = [
            (
                ContainerSpec {
                    volumes: vec![vol("/a"), vol("a")],
                    ..ctr("b")
                },
                "spec.containers[1].volumes[1].target",
            ),
            (
                ContainerSpec {
                    volumes: vec![VolumeMount {
                        kind: Some(VolumeKind::Tmpfs),
                        ..vol("/a")
                    }],
                    ..ctr("b")
                },
                "spec.containers[1].volumes[0].source",
            ),
            (
                ContainerSpec {
                    tmpfs: vec![ContainerTmpfsMount::default()],
                    ..ctr("b")
                },
                "spec.containers[1].tmpfs[0].path",
            ),
            (
                ContainerSpec {
                    secrets: vec![secret("/f", "/m"), secret("", "")],
                    ..ctr("b")
                },
                "spec.containers[1].secrets[1]",
            ),
            (
                ContainerSpec {
                    secrets: vec![secret("/f", "m")],
                    ..ctr("b")
                },
                "spec.containers[1].secrets[0].mountPath",
            ),
            (
                ContainerSpec {
                    secrets: vec![ContainerSecret {
                        name: " ".into(),
                        ..secret("/f", "")
                    }],
                    ..ctr("b")
                },
                "spec.containers[1].secrets[0].name",
            ),
            (
                ContainerSpec {
                    volumes: vec![
                        vol("/a"),
                        VolumeMount {
                            mode: 0o644,
                            ..vol("/b")
                        },
                    ],
                    ..ctr("b")
                },
                "spec.containers[1].volumes[1].mode",
            ),
            (
                ContainerSpec {
                    volumes: vec![VolumeMount {
                        kind: Some(VolumeKind::Tmpfs),
                        source: String::new(),
                        size_bytes: -1,
                        ..vol("/a")
                    }],
                    ..ctr("b")
                },
                "spec.containers[1].volumes[0].sizeBytes",
            ),
            (ctr("b_"), "spec.containers[1].id"),
        ];
        for (c, field) in cases {
            assert_eq!(in_cell(c), field);
        }

        let mut container = AnyObject::Container(Container {
            meta: meta("k"),
            spec: ContainerSpec {
                volumes: vec![vol("rel")],
                ..ctr("k")
            },
            ..Container::default()
        });
        assert_eq!(
            validate_object(&mut container).unwrap_err().field,
            "spec.volumes[0].target"
        );

        let mut realm = AnyObject::Realm(Realm {
            meta: meta("r"),
            spec: RealmSpec {
                registry_credentials: vec![
                    RegistryCredentials::default(),
                    RegistryCredentials {
                        password_ref: Some(SecretSource::default()),
                        ..RegistryCredentials::default()
                    },
                ],
                ..RealmSpec::default()
            },
            ..Realm::default()
        });
        assert_eq!(
            validate_object(&mut realm).unwrap_err().field,
            "spec.registryCredentials[1].passwordRef"
        );

        let rule = |cidr: &str, ports: Vec<i64>| EgressAllowRule {
            cidr: cidr.into(),
            ports,
            ..EgressAllowRule::default()
        };
        let space = |second: EgressAllowRule| {
            AnyObject::Space(Space {
                meta: meta("s"),
                spec: SpaceSpec {
                    network: Some(SpaceNetwork {
                        egress: Some(EgressPolicy {
                            allow: vec![rule("10.0.0.0/8", vec![]), second],
                            ..EgressPolicy::default()
                        }),
                    }),
                    ..SpaceSpec::default()
                },
                ..Space::default()
            })
        };
        for (second, field) in [
            (
                rule("10.0.0.0/99", vec![]),
                "spec.network.egress.allow[1].cidr",
            ),
            (rule("", vec![]), "spec.network.egress.allow[1]"),
            (
                rule("10.0.0.0/8", vec![80, 0]),
                "spec.network.egress.allow[1].ports[1]",
            ),
        ] {
            assert_eq!(
                validate_object(&mut space(second)).unwrap_err().field,
                field
            );
        }

        let mut finalized = cell(vec![ctr("a")]);
        finalized.meta_mut().finalizers = vec!["a.io/x".into(), "a.io/y".into(), "a.io/x".into()];
        assert_eq!(
            validate_object(&mut finalized).unwrap_err().field,
            "metadata.finalizers[2]"
        );
    }

    #[test]
    fn cidrs() {
        assert!(validate_cidr("f", "10.0.0.0/8").is_ok());
        assert!(validate_cidr("f", "fd00::/64").is_ok());
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/-1"] {
            assert!(validate_cidr("f", bad).is_err(), "{bad}");
        }
    }

    fn cell(containers: Vec<ContainerSpec>) -> AnyObject {
        AnyObject::Cell(Cell {
            meta: ObjectMeta {
                name: "c".into(),
                ..ObjectMeta::default()
            },
            spec: CellSpec {
                id: "c".into(),
                realm_name: "r".into(),
                space_name: "s".into(),
                stack_name: "t".into(),
                containers,
                ..CellSpec::default()
            },
            status: CellStatus::default(),
        })
    }

    fn ctr(id: &str) -> ContainerSpec {
        ContainerSpec {
            id: id.into(),
            ..ContainerSpec::default()
        }
    }

    #[test]
    fn cell_rules_name_the_field() {
        let mut dup = cell(vec![ctr("a"), ctr("a")]);
        assert_eq!(
            validate_object(&mut dup).unwrap_err().field,
            "spec.containers[1].id"
        );

        let mut tty = cell(vec![
            ctr("a"),
            ContainerSpec {
                tty: Some(ContainerTty::default()),
                ..ctr("b")
            },
        ]);
        assert_eq!(
            validate_object(&mut tty).unwrap_err().field,
            "spec.containers[1].tty"
        );

        let mut roots = cell(vec![
            ContainerSpec {
                root: true,
                ..ctr("a")
            },
            ContainerSpec {
                root: true,
                ..ctr("b")
            },
        ]);
        assert_eq!(
            validate_object(&mut roots).unwrap_err().field,
            "spec.containers[1].root"
        );

        let mut coord = cell(vec![ContainerSpec {
            stack_name: "other".into(),
            ..ctr("a")
        }]);
        assert_eq!(
            validate_object(&mut coord).unwrap_err().field,
            "spec.containers[0].stackId"
        );

        let mut filled = cell(vec![ctr("a")]);
        validate_object(&mut filled).unwrap();
        let AnyObject::Cell(c) = filled else {
            unreachable!()
        };
        assert_eq!(c.spec.containers[0].cell_name, "c");
        assert_eq!(c.spec.containers[0].realm_name, "r");
    }
}
