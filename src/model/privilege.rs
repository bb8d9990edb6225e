//! Privileged fields: the parts of a spec that weaken a container's
//! isolation or point at the daemon's host, which only an identity with
//! the privileged grant may set (as Pod Security admission refuses
//! privileged pods in Kubernetes).
//!
//! [`privileged_fields`] looks at an object *as it would be stored* and
//! answers every privileged field it sets, by wire path. For a container,
//! and for each container a cell embeds, the fields it inherits from its
//! space's `defaults.container` count too: the space's defaults are
//! applied exactly as the daemon applies them
//! ([`apply_space_defaults_to_container`]), and a field the container
//! does not set itself but gets from them is reported at the container's
//! path with [`PrivilegedField::inherited_from`] set.
//!
//! What counts (a field at its zero value never does):
//! - a container (`spec.` for a Container, `spec.containers[i].` for a
//!   Cell): `privileged`, `hostPID`, `hostNetwork`, `hostCgroup` when
//!   true; `capabilities.add` and `securityOpts` when non-empty (own or
//!   inherited); each bind-mount volume, `volumes[j]` (a volume whose
//!   `kind` is `bind` or empty: its source is a host path); each secret
//!   read from a host file, `secrets[j].fromFile`; a non-empty
//!   `cniConfigPath`;
//! - a space: a non-empty `spec.cniConfigPath`; non-empty
//!   `spec.defaults.container.capabilities.add` or
//!   `spec.defaults.container.securityOpts` (what its containers inherit);
//! - a realm: a registry credential whose password is read from a host
//!   file, `spec.registryCredentials[j].passwordRef.fromFile`.
//!
//! Dropping capabilities, tmpfs mounts, secrets from the daemon's
//! environment and every other field are unprivileged. Stacks have no
//! privileged field.
//!
//! This module only finds the fields; who may set them is
//! [`crate::auth::Identity::refused_field`] (admins, and identities with
//! the privileged grant). The write paths ask it about the object as it
//! would be stored after the write, as Pod Security admission looks at
//! the whole pod: a create, a replace, a merge patch (the merged object,
//! inside the write transaction) and each document of an apply, dry runs
//! included; the space whose defaults count is the stored one, or, in an
//! apply, the one the same request writes. Status writes and deletes are
//! never checked, so a reconciler and a cleanup never need the grant.

use std::fmt;

use super::defaults::apply_space_defaults_to_container;
use super::types::{AnyObject, ContainerSpec, SpaceSpec, VolumeKind};

/// One privileged field an object sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegedField {
    /// Wire path of the field, as [`super::Invalid`] names fields
    /// (`spec.containers[0].capabilities.add`).
    pub field: String,
    /// What it does, for the message.
    pub what: &'static str,
    /// Set when the object does not set the field itself but inherits it
    /// from this space's defaults (`realm/space`).
    pub inherited_from: Option<String>,
}

impl fmt::Display for PrivilegedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.field, self.what)?;
        if let Some(space) = &self.inherited_from {
            write!(f, ", inherited from space {space}'s defaults")?;
        }
        Ok(())
    }
}

/// Every privileged field `obj` sets, own or inherited, in document order.
/// `space` is the spec of the space a container or cell lives in (`None`:
/// no such space, so nothing is inherited); it is ignored for other kinds.
pub fn privileged_fields(obj: &AnyObject, space: Option<&SpaceSpec>) -> Vec<PrivilegedField> {
    let mut out = Vec::new();
    match obj {
        AnyObject::Realm(r) => {
            for (i, cred) in r.spec.registry_credentials.iter().enumerate() {
                if cred
                    .password_ref
                    .as_ref()
                    .is_some_and(|p| !p.from_file.is_empty())
                {
                    out.push(own(
                        format!("spec.registryCredentials[{i}].passwordRef.fromFile"),
                        "a registry password read from a file on the host",
                    ));
                }
            }
        }
        AnyObject::Space(s) => {
            if !s.spec.cni_config_path.is_empty() {
                out.push(own(
                    "spec.cniConfigPath".into(),
                    "a CNI configuration file on the host",
                ));
            }
            if let Some(d) = s.spec.defaults.as_ref().and_then(|d| d.container.as_ref()) {
                if d.capabilities.as_ref().is_some_and(|c| !c.add.is_empty()) {
                    out.push(own(
                        "spec.defaults.container.capabilities.add".into(),
                        "capabilities added to the space's containers",
                    ));
                }
                if !d.security_opts.is_empty() {
                    out.push(own(
                        "spec.defaults.container.securityOpts".into(),
                        "security options for the space's containers",
                    ));
                }
            }
        }
        AnyObject::Stack(_) => {}
        AnyObject::Cell(c) => {
            let from = format!("{}/{}", c.spec.realm_name, c.spec.space_name);
            for (i, ctr) in c.spec.containers.iter().enumerate() {
                container(
                    &format!("spec.containers[{i}]"),
                    ctr,
                    space,
                    &from,
                    &mut out,
                );
            }
        }
        AnyObject::Container(c) => {
            let from = format!("{}/{}", c.spec.realm_name, c.spec.space_name);
            container("spec", &c.spec, space, &from, &mut out);
        }
    }
    out
}

fn own(field: String, what: &'static str) -> PrivilegedField {
    PrivilegedField {
        field,
        what,
        inherited_from: None,
    }
}

/// The privileged fields of one container spec at `prefix`, with those
/// inherited from `space` (named `space_name`) marked.
fn container(
    prefix: &str,
    spec: &ContainerSpec,
    space: Option<&SpaceSpec>,
    space_name: &str,
    out: &mut Vec<PrivilegedField>,
) {
    let mut effective = spec.clone();
    if let Some(space) = space {
        apply_space_defaults_to_container(space, &mut effective);
    }
    let field = |name: &str| format!("{prefix}.{name}");
    let mut push = |name: String, what: &'static str, inherited: bool| {
        out.push(PrivilegedField {
            field: name,
            what,
            inherited_from: inherited.then(|| space_name.to_string()),
        });
    };
    // Only the capability and security-option defaults can be privileged;
    // the other defaults (user, tmpfs, ...) never are.
    for (set, name, what) in [
        (spec.privileged, "privileged", "privileged mode"),
        (spec.host_pid, "hostPID", "the host's PID namespace"),
        (
            spec.host_network,
            "hostNetwork",
            "the host's network namespace",
        ),
        (
            spec.host_cgroup,
            "hostCgroup",
            "the host's cgroup namespace",
        ),
    ] {
        if set {
            push(field(name), what, false);
        }
    }
    let adds = |c: &ContainerSpec| c.capabilities.as_ref().is_some_and(|c| !c.add.is_empty());
    if adds(&effective) {
        push(field("capabilities.add"), "added capabilities", !adds(spec));
    }
    if !effective.security_opts.is_empty() {
        push(
            field("securityOpts"),
            "security options",
            spec.security_opts.is_empty(),
        );
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        if v.kind.unwrap_or_default() == VolumeKind::Bind {
            push(
                field(&format!("volumes[{i}]")),
                "a bind mount from the host",
                false,
            );
        }
    }
    for (i, s) in spec.secrets.iter().enumerate() {
        if !s.from_file.is_empty() {
            push(
                field(&format!("secrets[{i}].fromFile")),
                "a secret read from a file on the host",
                false,
            );
        }
    }
    if !spec.cni_config_path.is_empty() {
        push(
            field("cniConfigPath"),
            "a CNI configuration file on the host",
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Cell, Container, ContainerCapabilities, ContainerSecret, Realm, RegistryCredentials,
        SecretSource, Space, SpaceContainerDefaults, SpaceDefaults, Stack, VolumeMount,
    };

    fn ctr(spec: ContainerSpec) -> AnyObject {
        AnyObject::Container(Container {
            spec: ContainerSpec {
                realm_name: "r".into(),
                space_name: "s".into(),
                ..spec
            },
            ..Container::default()
        })
    }

    fn cell(containers: Vec<ContainerSpec>) -> AnyObject {
        let mut c = Cell::default();
        c.spec.realm_name = "r".into();
        c.spec.space_name = "s".into();
        c.spec.containers = containers;
        AnyObject::Cell(c)
    }

    fn caps(add: &[&str], drop: &[&str]) -> Option<ContainerCapabilities> {
        Some(ContainerCapabilities {
            add: add.iter().map(|s| s.to_string()).collect(),
            drop: drop.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn space_spec(d: SpaceContainerDefaults) -> SpaceSpec {
        SpaceSpec {
            realm_name: "r".into(),
            defaults: Some(SpaceDefaults { container: Some(d) }),
            ..SpaceSpec::default()
        }
    }

    fn fields(obj: &AnyObject, space: Option<&SpaceSpec>) -> Vec<(String, bool)> {
        privileged_fields(obj, space)
            .into_iter()
            .map(|f| (f.field, f.inherited_from.is_some()))
            .collect()
    }

    fn own(f: &str) -> (String, bool) {
        (f.to_string(), false)
    }

    fn inherited(f: &str) -> (String, bool) {
        (f.to_string(), true)
    }

    fn bind(source: &str) -> VolumeMount {
        VolumeMount {
            source: source.into(),
            target: "/t".into(),
            ..VolumeMount::default()
        }
    }

    /// Every container field, set alone, is found at its wire path, in a
    /// container and in a cell's container.
    #[test]
    fn every_container_field_directly() {
        let cases: Vec<(ContainerSpec, &str)> = vec![
            (
                ContainerSpec {
                    privileged: true,
                    ..ContainerSpec::default()
                },
                "privileged",
            ),
            (
                ContainerSpec {
                    host_pid: true,
                    ..ContainerSpec::default()
                },
                "hostPID",
            ),
            (
                ContainerSpec {
                    host_network: true,
                    ..ContainerSpec::default()
                },
                "hostNetwork",
            ),
            (
                ContainerSpec {
                    host_cgroup: true,
                    ..ContainerSpec::default()
                },
                "hostCgroup",
            ),
            (
                ContainerSpec {
                    capabilities: caps(&["NET_ADMIN"], &[]),
                    ..ContainerSpec::default()
                },
                "capabilities.add",
            ),
            (
                ContainerSpec {
                    security_opts: vec!["seccomp=unconfined".into()],
                    ..ContainerSpec::default()
                },
                "securityOpts",
            ),
            (
                ContainerSpec {
                    volumes: vec![
                        VolumeMount {
                            kind: Some(VolumeKind::Tmpfs),
                            target: "/tmp".into(),
                            ..VolumeMount::default()
                        },
                        VolumeMount {
                            kind: Some(VolumeKind::Bind),
                            ..bind("/etc")
                        },
                    ],
                    ..ContainerSpec::default()
                },
                "volumes[1]",
            ),
            (
                ContainerSpec {
                    volumes: vec![bind("/")],
                    ..ContainerSpec::default()
                },
                "volumes[0]",
            ),
            (
                ContainerSpec {
                    secrets: vec![
                        ContainerSecret {
                            name: "env".into(),
                            from_env: "TOKEN".into(),
                            ..ContainerSecret::default()
                        },
                        ContainerSecret {
                            name: "file".into(),
                            from_file: "/etc/shadow".into(),
                            ..ContainerSecret::default()
                        },
                    ],
                    ..ContainerSpec::default()
                },
                "secrets[1].fromFile",
            ),
            (
                ContainerSpec {
                    cni_config_path: "/etc/cni/net.d/x.conflist".into(),
                    ..ContainerSpec::default()
                },
                "cniConfigPath",
            ),
        ];
        for (spec, name) in cases {
            assert_eq!(
                fields(&ctr(spec.clone()), None),
                [own(&format!("spec.{name}"))],
                "{name}"
            );
            let plain = ContainerSpec {
                id: "a".into(),
                ..ContainerSpec::default()
            };
            assert_eq!(
                fields(&cell(vec![plain, spec]), None),
                [own(&format!("spec.containers[1].{name}"))],
                "cell {name}"
            );
        }
    }

    /// Zero values and unprivileged fields are not privileged.
    #[test]
    fn unprivileged_containers() {
        let spec = ContainerSpec {
            image: "busybox".into(),
            user: "1000".into(),
            read_only_root_filesystem: true,
            capabilities: caps(&[], &["ALL"]),
            volumes: vec![VolumeMount {
                kind: Some(VolumeKind::Tmpfs),
                target: "/tmp".into(),
                ..VolumeMount::default()
            }],
            secrets: vec![ContainerSecret {
                name: "t".into(),
                from_env: "TOKEN".into(),
                mount_path: "/run/t".into(),
                ..ContainerSecret::default()
            }],
            ..ContainerSpec::default()
        };
        assert_eq!(fields(&ctr(spec.clone()), None), []);
        assert_eq!(fields(&cell(vec![spec]), None), []);
        assert_eq!(fields(&AnyObject::Stack(Stack::default()), None), []);
        assert_eq!(fields(&AnyObject::Realm(Realm::default()), None), []);
        assert_eq!(fields(&AnyObject::Space(Space::default()), None), []);
    }

    /// All the fields of one container are answered, in document order.
    #[test]
    fn all_fields_in_order() {
        let spec = ContainerSpec {
            privileged: true,
            host_network: true,
            volumes: vec![bind("/a"), bind("/b")],
            cni_config_path: "/c".into(),
            ..ContainerSpec::default()
        };
        assert_eq!(
            fields(&ctr(spec), None),
            [
                own("spec.privileged"),
                own("spec.hostNetwork"),
                own("spec.volumes[0]"),
                own("spec.volumes[1]"),
                own("spec.cniConfigPath"),
            ]
        );
    }

    /// Capabilities and security options come from the space's defaults
    /// when the container does not set its own, exactly as the defaults
    /// rule fills them.
    #[test]
    fn inherited_from_the_space() {
        let space = space_spec(SpaceContainerDefaults {
            capabilities: caps(&["SYS_ADMIN"], &[]),
            security_opts: vec!["apparmor=unconfined".into()],
            user: "0".into(),
            ..SpaceContainerDefaults::default()
        });
        let want = [
            inherited("spec.capabilities.add"),
            inherited("spec.securityOpts"),
        ];
        assert_eq!(fields(&ctr(ContainerSpec::default()), Some(&space)), want);
        let found = privileged_fields(&ctr(ContainerSpec::default()), Some(&space));
        assert_eq!(found[0].inherited_from.as_deref(), Some("r/s"));
        assert_eq!(
            found[0].to_string(),
            "spec.capabilities.add (added capabilities), inherited from space r/s's defaults"
        );
        // In a cell, each container inherits.
        let a = ContainerSpec {
            id: "a".into(),
            ..ContainerSpec::default()
        };
        assert_eq!(
            fields(&cell(vec![a]), Some(&space)),
            [
                inherited("spec.containers[0].capabilities.add"),
                inherited("spec.containers[0].securityOpts"),
            ]
        );
        // Without the space (absent): nothing inherited.
        assert_eq!(fields(&ctr(ContainerSpec::default()), None), []);
    }

    /// A container's own capabilities (even with nothing added) and its
    /// own security options replace the defaults outright, so nothing is
    /// inherited; its own added capabilities are its own.
    #[test]
    fn own_values_shadow_the_defaults() {
        let space = space_spec(SpaceContainerDefaults {
            capabilities: caps(&["SYS_ADMIN"], &[]),
            security_opts: vec!["apparmor=unconfined".into()],
            ..SpaceContainerDefaults::default()
        });
        let drops_only = ContainerSpec {
            capabilities: caps(&[], &["NET_RAW"]),
            security_opts: vec![],
            ..ContainerSpec::default()
        };
        assert_eq!(
            fields(&ctr(drops_only), Some(&space)),
            [inherited("spec.securityOpts")]
        );
        let adds = ContainerSpec {
            capabilities: caps(&["NET_ADMIN"], &[]),
            security_opts: vec!["no-new-privileges".into()],
            ..ContainerSpec::default()
        };
        assert_eq!(
            fields(&ctr(adds), Some(&space)),
            [own("spec.capabilities.add"), own("spec.securityOpts")]
        );
        // Unprivileged defaults are inherited harmlessly.
        let harmless = space_spec(SpaceContainerDefaults {
            capabilities: caps(&[], &["ALL"]),
            user: "0".into(),
            ..SpaceContainerDefaults::default()
        });
        assert_eq!(fields(&ctr(ContainerSpec::default()), Some(&harmless)), []);
    }

    #[test]
    fn space_fields() {
        let mut s = Space {
            spec: space_spec(SpaceContainerDefaults {
                capabilities: caps(&["NET_ADMIN"], &["ALL"]),
                security_opts: vec!["label=disable".into()],
                ..SpaceContainerDefaults::default()
            }),
            ..Space::default()
        };
        s.spec.cni_config_path = "/etc/cni/net.d/k.conflist".into();
        assert_eq!(
            fields(&AnyObject::Space(s), None),
            [
                own("spec.cniConfigPath"),
                own("spec.defaults.container.capabilities.add"),
                own("spec.defaults.container.securityOpts"),
            ]
        );
    }

    #[test]
    fn realm_password_from_a_host_file() {
        let mut r = Realm::default();
        r.spec.registry_credentials = vec![
            RegistryCredentials {
                username: "u".into(),
                password_ref: Some(SecretSource {
                    from_env: "REG_PASSWORD".into(),
                    ..SecretSource::default()
                }),
                ..RegistryCredentials::default()
            },
            RegistryCredentials {
                username: "u".into(),
                password_ref: Some(SecretSource {
                    from_file: "/root/.docker/pw".into(),
                    ..SecretSource::default()
                }),
                ..RegistryCredentials::default()
            },
        ];
        assert_eq!(
            fields(&AnyObject::Realm(r), None),
            [own("spec.registryCredentials[1].passwordRef.fromFile")]
        );
    }
}
