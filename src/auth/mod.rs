//! Who is asking and what they may do: identities, roles, the access a
//! route needs, and the rules between them. Independent of HTTP: the
//! HTTP layer builds an [`Identity`] for each request (from a bearer
//! token, a client certificate or the peer of a unix socket, see
//! `http::auth`) and asks [`Identity::may`] and [`Identity::may_realm`].
//! Tokens ([`token`]) are kept by the store, as digests.

pub mod token;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use crate::model::{AnyObject, PrivilegedField, SpaceSpec, privileged_fields};

/// The access a route needs: what an authorization rule is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// None: the liveness and readiness probes.
    Public,
    /// Reading objects, lists and watch streams.
    Read,
    /// Writing objects (create, replace, patch, delete, apply), all but
    /// their status.
    WriteSpec,
    /// Writing the status subresource.
    WriteStatus,
    /// Writing the finalizers subresource (what a controller does when it
    /// takes on or finishes an object's teardown).
    WriteFinalizers,
    /// Reading the server's metrics.
    Metrics,
    /// Operating the server (tokens, backups).
    Admin,
}

/// What an identity may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, including tokens and backups.
    Admin,
    /// Create, update and delete objects, apply, read, watch.
    Writer,
    /// Read, watch, and write the status subresource.
    Controller,
    /// Get, list, watch.
    Reader,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Writer, Role::Controller, Role::Reader];

    /// The name used on the wire and the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Controller => "controller",
            Role::Reader => "reader",
        }
    }

    /// Parses [`Role::name`].
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// Whether this role may use a route needing `access` (realms and the
    /// privileged grant are checked apart).
    pub fn may(self, access: Access) -> bool {
        match access {
            Access::Public | Access::Read | Access::Metrics => true,
            Access::WriteSpec => matches!(self, Role::Admin | Role::Writer),
            Access::WriteStatus | Access::WriteFinalizers => {
                matches!(self, Role::Admin | Role::Writer | Role::Controller)
            }
            Access::Admin => self == Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an identity was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No credentials, allowed while no token exists on a loopback-only
    /// server (or with `--insecure-allow-anonymous`).
    Anonymous,
    /// A bearer token.
    Token,
    /// A TLS client certificate whose CN names a token.
    Certificate,
    /// The peer of the unix socket, by its credentials.
    Peer {
        /// The peer's uid.
        uid: u32,
    },
}

/// Who is making a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name, `uid:N` for a unix-socket peer, `anonymous`.
    pub name: String,
    /// How it was established.
    pub source: Source,
    /// What it may do.
    pub role: Role,
    /// The realms it is limited to (`None`: all).
    pub realms: Option<BTreeSet<String>>,
    /// Whether it may set privileged fields (admins always may).
    pub privileged: bool,
}

impl Identity {
    /// The identity of an anonymous request while anonymous access is
    /// allowed: an admin.
    pub fn anonymous() -> Identity {
        Identity {
            name: "anonymous".into(),
            source: Source::Anonymous,
            role: Role::Admin,
            realms: None,
            privileged: true,
        }
    }

    /// The identity of a unix-socket peer that is root or the server's
    /// own user: an admin.
    pub fn peer_admin(uid: u32) -> Identity {
        Identity {
            name: format!("uid:{uid}"),
            source: Source::Peer { uid },
            role: Role::Admin,
            realms: None,
            privileged: true,
        }
    }

    /// Whether the role allows `access`.
    pub fn may(&self, access: Access) -> bool {
        self.role.may(access)
    }

    /// Whether objects of `realm` are within reach.
    pub fn may_realm(&self, realm: &str) -> bool {
        self.realms.as_ref().is_none_or(|r| r.contains(realm))
    }

    /// Whether the identity reaches every realm (lists across realms and
    /// unscoped watches need it).
    pub fn all_realms(&self) -> bool {
        self.realms.is_none()
    }

    /// "NAME is limited to realms (a, b)", for refusals.
    pub fn limited_to(&self) -> String {
        let realms: Vec<&str> = self.realms.iter().flatten().map(String::as_str).collect();
        format!("{} is limited to realms ({})", self.name, realms.join(", "))
    }

    /// Whether it may set privileged fields.
    pub fn may_privileged(&self) -> bool {
        self.role == Role::Admin || self.privileged
    }

    /// The privileged-field policy: the first privileged field `obj`, as
    /// it would be stored, sets (its own, or inherited from the defaults
    /// of `space`, the spec of the space a cell or container lives in)
    /// that this identity may not set; `None`: the write may go ahead.
    /// See [`crate::model::privileged_fields`] for what counts.
    pub fn refused_field(
        &self,
        obj: &AnyObject,
        space: Option<&SpaceSpec>,
    ) -> Option<PrivilegedField> {
        if self.may_privileged() {
            return None;
        }
        privileged_fields(obj, space).into_iter().next()
    }
}

/// Where a connection comes from, attached by the listener to every
/// request it carries (as a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP connection.
    Tcp {
        /// The client's address.
        remote: SocketAddr,
        /// The listener's address.
        local: SocketAddr,
        /// The CN of the client certificate, if TLS verified one.
        client_cn: Option<String>,
    },
    /// A unix-socket connection, with the peer's credentials
    /// (`SO_PEERCRED`).
    Unix {
        /// The peer's uid.
        uid: u32,
        /// The peer's gid.
        gid: u32,
        /// The peer's pid, if known.
        pid: Option<i32>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_table_says() {
        use Access::*;
        let table = [
            (Role::Admin, [true, true, true, true, true, true, true]),
            (Role::Writer, [true, true, true, true, true, true, false]),
            (
                Role::Controller,
                [true, true, false, true, true, true, false],
            ),
            (Role::Reader, [true, true, false, false, false, true, false]),
        ];
        for (role, allowed) in table {
            for (access, want) in [
                Public,
                Read,
                WriteSpec,
                WriteStatus,
                WriteFinalizers,
                Metrics,
                Admin,
            ]
            .into_iter()
            .zip(allowed)
            {
                assert_eq!(role.may(access), want, "{role} {access:?}");
            }
            assert_eq!(Role::parse(role.name()), Some(role));
        }
    }

    #[test]
    fn realms_limit_reach() {
        let mut id = Identity::anonymous();
        assert!(id.may_realm("a") && id.all_realms());
        id.realms = Some(["a".to_string()].into());
        assert!(id.may_realm("a") && !id.may_realm("b") && !id.all_realms());
        id.role = Role::Writer;
        id.privileged = false;
        assert!(!id.may_privileged());
    }

    #[test]
    fn privileged_fields_need_the_grant_or_admin() {
        use crate::model::{Container, ContainerSpec};
        let obj = AnyObject::Container(Container {
            spec: ContainerSpec {
                host_pid: true,
                ..ContainerSpec::default()
            },
            ..Container::default()
        });
        let mut id = Identity::anonymous();
        assert_eq!(id.refused_field(&obj, None), None, "admin");
        id.role = Role::Writer;
        assert_eq!(id.refused_field(&obj, None), None, "writer with the grant");
        id.privileged = false;
        let f = id.refused_field(&obj, None).expect("refused");
        assert_eq!(f.field, "spec.hostPID");
        let plain = AnyObject::Container(Container::default());
        assert_eq!(id.refused_field(&plain, None), None, "nothing privileged");
    }
}
