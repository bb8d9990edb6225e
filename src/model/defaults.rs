//! `ApplySpaceDefaultsToContainer`: the one behaviour of kukeon's model.
//!
//! Precedence is container spec > space defaults > built-in defaults. The
//! merge is shallow (a set field replaces the default outright; lists are
//! never unioned) and idempotent.

use super::types::{ContainerSpec, SpaceSpec};

/// Fills the container's unset isolation fields from the space's
/// `defaults.container`. No defaults: the container is left unchanged.
pub fn apply_space_defaults_to_container(space: &SpaceSpec, container: &mut ContainerSpec) {
    let Some(d) = space.defaults.as_ref().and_then(|d| d.container.as_ref()) else {
        return;
    };
    if container.user.is_empty() {
        container.user = d.user.clone();
    }
    if !container.read_only_root_filesystem
        && let Some(ro) = d.read_only_root_filesystem
    {
        container.read_only_root_filesystem = ro;
    }
    if container.capabilities.is_none() {
        container.capabilities = d.capabilities.clone();
    }
    if container.security_opts.is_empty() {
        container.security_opts = d.security_opts.clone();
    }
    if container.tmpfs.is_empty() {
        container.tmpfs = d.tmpfs.clone();
    }
    if container.resources.is_none() {
        container.resources = d.resources.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ContainerCapabilities, ContainerResources, ContainerTmpfsMount, SpaceContainerDefaults,
        SpaceDefaults,
    };
    use proptest::prelude::*;

    fn space(d: SpaceContainerDefaults) -> SpaceSpec {
        SpaceSpec {
            defaults: Some(SpaceDefaults { container: Some(d) }),
            ..SpaceSpec::default()
        }
    }

    fn strings() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec("[a-z]{0,3}", 0..3)
    }

    fn caps() -> impl Strategy<Value = Option<ContainerCapabilities>> {
        proptest::option::of(
            (strings(), strings()).prop_map(|(drop, add)| ContainerCapabilities { drop, add }),
        )
    }

    fn res() -> impl Strategy<Value = Option<ContainerResources>> {
        proptest::option::of(
            (
                proptest::option::of(0i64..4),
                proptest::option::of(0i64..4),
                proptest::option::of(0i64..4),
            )
                .prop_map(|(m, c, p)| ContainerResources {
                    memory_limit_bytes: m,
                    cpu_shares: c,
                    pids_limit: p,
                }),
        )
    }

    fn tmpfs() -> impl Strategy<Value = Vec<ContainerTmpfsMount>> {
        proptest::collection::vec(
            ("/[a-z]{1,3}", 0i64..3).prop_map(|(path, size_bytes)| ContainerTmpfsMount {
                path,
                size_bytes,
                options: vec![],
            }),
            0..2,
        )
    }

    prop_compose! {
        fn defaults()(user in "[a-z]{0,2}", ro in proptest::option::of(any::<bool>()), c in caps(),
                      so in strings(), t in tmpfs(), r in res()) -> SpaceContainerDefaults {
            SpaceContainerDefaults { user, read_only_root_filesystem: ro, capabilities: c,
                security_opts: so, tmpfs: t, resources: r }
        }
    }

    prop_compose! {
        fn container()(user in "[a-z]{0,2}", ro in any::<bool>(), c in caps(),
                       so in strings(), t in tmpfs(), r in res()) -> ContainerSpec {
            ContainerSpec { user, read_only_root_filesystem: ro, capabilities: c,
                security_opts: so, tmpfs: t, resources: r, ..ContainerSpec::default() }
        }
    }

    proptest! {
        #[test]
        fn idempotent(d in defaults(), c in container()) {
            let s = space(d);
            let mut once = c.clone();
            apply_space_defaults_to_container(&s, &mut once);
            let mut twice = once.clone();
            apply_space_defaults_to_container(&s, &mut twice);
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn container_values_win(d in defaults(), c in container()) {
            let mut out = c.clone();
            apply_space_defaults_to_container(&space(d), &mut out);
            if !c.user.is_empty() { prop_assert_eq!(&out.user, &c.user); }
            if c.read_only_root_filesystem { prop_assert!(out.read_only_root_filesystem); }
            if c.capabilities.is_some() { prop_assert_eq!(&out.capabilities, &c.capabilities); }
            if !c.security_opts.is_empty() { prop_assert_eq!(&out.security_opts, &c.security_opts); }
            if !c.tmpfs.is_empty() { prop_assert_eq!(&out.tmpfs, &c.tmpfs); }
            if c.resources.is_some() { prop_assert_eq!(&out.resources, &c.resources); }
        }

        #[test]
        fn no_defaults_changes_nothing(c in container()) {
            let mut out = c.clone();
            apply_space_defaults_to_container(&SpaceSpec::default(), &mut out);
            prop_assert_eq!(&out, &c);
            apply_space_defaults_to_container(&SpaceSpec { defaults: Some(SpaceDefaults { container: None }), ..SpaceSpec::default() }, &mut out);
            prop_assert_eq!(out, c);
        }
    }

    #[test]
    fn shallow_override() {
        let s = space(SpaceContainerDefaults {
            user: "1000".into(),
            read_only_root_filesystem: Some(true),
            capabilities: Some(ContainerCapabilities {
                drop: vec!["ALL".into()],
                add: vec!["NET_BIND_SERVICE".into()],
            }),
            ..SpaceContainerDefaults::default()
        });
        let mut c = ContainerSpec {
            capabilities: Some(ContainerCapabilities {
                drop: vec!["CAP_NET_RAW".into()],
                add: vec![],
            }),
            ..ContainerSpec::default()
        };
        apply_space_defaults_to_container(&s, &mut c);
        assert_eq!(c.user, "1000");
        assert!(c.read_only_root_filesystem);
        assert_eq!(
            c.capabilities,
            Some(ContainerCapabilities {
                drop: vec!["CAP_NET_RAW".into()],
                add: vec![]
            })
        );
    }
}
