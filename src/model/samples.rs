//! Sample objects for unit tests: one of every kind with every field set,
//! shared by the codec's and the v1beta1 translation's tests.

use std::collections::BTreeMap;

use super::*;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.into(),
        labels: BTreeMap::from([("app".into(), "web".into())]),
        uid: "0b7d5a4e-1111-4222-8333-944445555666".into(),
        resource_version: 42,
        generation: 3,
        creation_timestamp: 1_700_000_000_123_456_789,
        finalizers: vec!["kukeon.io/runtime".into(), "example.com/backup".into()],
        deletion_timestamp: Some(1_700_000_100_000_000_001),
    }
}

/// A container spec with every field set to a non-default value.
fn full_container_spec() -> ContainerSpec {
    ContainerSpec {
        id: "web".into(),
        containerd_id: "s_t_c_web".into(),
        realm_name: "r".into(),
        space_name: "s".into(),
        stack_name: "t".into(),
        cell_name: "c".into(),
        root: true,
        image: "busybox".into(),
        command: "sh".into(),
        args: vec!["-c".into(), "true".into()],
        working_dir: "/w".into(),
        env: vec!["A=1".into()],
        ports: vec!["80:80".into()],
        volumes: vec![VolumeMount {
            kind: Some(VolumeKind::Tmpfs),
            source: String::new(),
            target: "/t".into(),
            read_only: true,
            size_bytes: 1024,
            mode: 0o755,
        }],
        networks: vec!["n".into()],
        networks_aliases: vec!["alias".into()],
        privileged: true,
        host_network: true,
        host_pid: true,
        host_cgroup: true,
        nested_cgroup_runtime: true,
        user: "1000".into(),
        read_only_root_filesystem: true,
        capabilities: Some(ContainerCapabilities {
            drop: vec!["ALL".into()],
            add: vec!["NET_ADMIN".into()],
        }),
        security_opts: vec!["no-new-privileges".into()],
        tmpfs: vec![ContainerTmpfsMount {
            path: "/run".into(),
            size_bytes: 64,
            options: vec!["noexec".into()],
        }],
        resources: Some(ContainerResources {
            memory_limit_bytes: Some(0),
            cpu_shares: Some(512),
            pids_limit: Some(64),
        }),
        secrets: vec![ContainerSecret {
            name: "token".into(),
            from_file: "/etc/token".into(),
            from_env: String::new(),
            mount_path: "/run/secrets/token".into(),
        }],
        cni_config_path: "/etc/cni".into(),
        restart_policy: "always".into(),
        attachable: true,
        tty: Some(ContainerTty {
            prompt: "$ ".into(),
            on_init: vec![TtyStage {
                script: "echo hi".into(),
            }],
        }),
        cell_cgroup_path: "/kukeon/c".into(),
        etc_hosts_path: "/var/hosts".into(),
        etc_hostname_path: "/var/hostname".into(),
        cell_profile_name: "profile".into(),
    }
}

fn full_container_status() -> ContainerStatus {
    ContainerStatus {
        name: "web".into(),
        id: "web".into(),
        state: ContainerState::Paused,
        restart_count: 2,
        restart_time: Some(1),
        start_time: Some(2),
        finish_time: Some(3),
        exit_code: 137,
        exit_signal: "SIGKILL".into(),
    }
}

/// One object of every kind, every field set (but the unused one of each
/// exactly-one-of pair), every `Option` `Some`, no state the default one.
/// The golden-bytes test (`store::codec`'s `golden_tests`) pins their
/// records: a change here needs the golden files regenerated, and that
/// test says how.
pub(crate) fn samples() -> Vec<AnyObject> {
    vec![
        AnyObject::Realm(Realm {
            meta: meta("r"),
            spec: RealmSpec {
                namespace: "ns".into(),
                registry_credentials: vec![RegistryCredentials {
                    username: "u".into(),
                    password_ref: Some(SecretSource {
                        from_file: String::new(),
                        from_env: "REG_PW".into(),
                    }),
                    server_address: "registry.example".into(),
                }],
            },
            status: RealmStatus {
                state: RealmState::Deleting,
                cgroup_path: "/kukeon/r".into(),
                subtree_controllers: vec!["cpu".into()],
            },
        }),
        AnyObject::Space(Space {
            meta: meta("s"),
            spec: SpaceSpec {
                realm_name: "r".into(),
                cni_config_path: "/etc/cni/s".into(),
                network: Some(SpaceNetwork {
                    egress: Some(EgressPolicy {
                        default: EgressDefault::Deny,
                        allow: vec![EgressAllowRule {
                            host: String::new(),
                            cidr: "10.0.0.0/8".into(),
                            ports: vec![443],
                        }],
                    }),
                }),
                defaults: Some(SpaceDefaults {
                    container: Some(SpaceContainerDefaults {
                        user: "1000".into(),
                        read_only_root_filesystem: Some(false),
                        capabilities: Some(ContainerCapabilities {
                            drop: vec!["MKNOD".into()],
                            add: vec![],
                        }),
                        security_opts: vec!["x".into()],
                        tmpfs: vec![ContainerTmpfsMount {
                            path: "/tmp".into(),
                            size_bytes: 1 << 20,
                            options: vec!["nosuid".into()],
                        }],
                        resources: Some(ContainerResources {
                            memory_limit_bytes: Some(1 << 30),
                            cpu_shares: Some(256),
                            pids_limit: Some(100),
                        }),
                    }),
                }),
            },
            status: SpaceStatus {
                state: SpaceState::Creating,
                cgroup_path: "/kukeon/r/s".into(),
                subtree_controllers: vec!["memory".into()],
            },
        }),
        AnyObject::Stack(Stack {
            meta: meta("t"),
            spec: StackSpec {
                id: "t".into(),
                realm_name: "r".into(),
                space_name: "s".into(),
            },
            status: StackStatus {
                state: StackState::Failed,
                cgroup_path: "/kukeon/r/s/t".into(),
                subtree_controllers: vec!["pids".into()],
            },
        }),
        AnyObject::Cell(Cell {
            meta: meta("c"),
            spec: CellSpec {
                id: "c".into(),
                realm_name: "r".into(),
                space_name: "s".into(),
                stack_name: "t".into(),
                root_container_id: "web".into(),
                tty: Some(CellTty {
                    default: "web".into(),
                }),
                containers: vec![full_container_spec()],
                auto_delete: true,
                nested_cgroup_runtime: true,
            },
            status: CellStatus {
                state: CellState::Stopped,
                cgroup_path: "/kukeon/r/s/t/c".into(),
                subtree_controllers: vec!["io".into()],
                network: CellNetworkStatus {
                    bridge_name: "kk-br0".into(),
                },
                containers: vec![full_container_status()],
                ready_observed: true,
            },
        }),
        AnyObject::Container(Container {
            meta: meta("web"),
            spec: full_container_spec(),
            status: full_container_status(),
        }),
    ]
}
