//! Resource kinds and their hierarchical paths.

use std::fmt;

/// The five resource kinds, ordered by depth in the hierarchy.
///
/// The discriminants are stored: the event log and the write-ahead log
/// write a kind as `kind as u8` and read it back as `Kind::ALL[byte]`.
/// Never renumber or reorder them (pinned by the test
/// `kind_bytes_are_stored_and_never_change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Top level: `realm`.
    Realm = 0,
    /// `realm/space`.
    Space = 1,
    /// `realm/space/stack`.
    Stack = 2,
    /// `realm/space/stack/cell`.
    Cell = 3,
    /// `realm/space/stack/cell/container`.
    Container = 4,
}

impl Kind {
    /// Every kind, parents before children.
    pub const ALL: [Kind; 5] = [
        Kind::Realm,
        Kind::Space,
        Kind::Stack,
        Kind::Cell,
        Kind::Container,
    ];

    /// Number of path segments of an object of this kind.
    pub fn depth(self) -> usize {
        self as usize + 1
    }

    /// The kind's document name (`Cell`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Realm => "Realm",
            Kind::Space => "Space",
            Kind::Stack => "Stack",
            Kind::Cell => "Cell",
            Kind::Container => "Container",
        }
    }

    /// The plural used in URLs (`cells`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Realm => "realms",
            Kind::Space => "spaces",
            Kind::Stack => "stacks",
            Kind::Cell => "cells",
            Kind::Container => "containers",
        }
    }

    /// Parses a kind name, case-insensitively, singular or plural.
    pub fn parse(s: &str) -> Option<Kind> {
        let lower = s.to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| lower == k.as_str().to_ascii_lowercase() || lower == k.plural())
    }

    /// The kind of this kind's parent, if any.
    pub fn parent(self) -> Option<Kind> {
        match self {
            Kind::Realm => None,
            Kind::Space => Some(Kind::Realm),
            Kind::Stack => Some(Kind::Space),
            Kind::Cell => Some(Kind::Stack),
            Kind::Container => Some(Kind::Cell),
        }
    }

    /// The kind of this kind's children, if any.
    pub fn child(self) -> Option<Kind> {
        match self {
            Kind::Realm => Some(Kind::Space),
            Kind::Space => Some(Kind::Stack),
            Kind::Stack => Some(Kind::Cell),
            Kind::Cell => Some(Kind::Container),
            Kind::Container => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of an object: its kind and the names from realm down to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path {
    kind: Kind,
    names: Vec<String>,
}

impl Path {
    /// Builds a path; `names.len()` must equal `kind.depth()`.
    pub fn new(kind: Kind, names: Vec<String>) -> Path {
        assert_eq!(names.len(), kind.depth(), "path depth must match kind");
        Path { kind, names }
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Names from realm down to the object.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The object's own name (last segment).
    pub fn name(&self) -> &str {
        self.names.last().map(String::as_str).unwrap_or("")
    }

    /// The parent object's path, if any.
    pub fn parent(&self) -> Option<Path> {
        let kind = self.kind.parent()?;
        Some(Path {
            kind,
            names: self.names[..self.names.len() - 1].to_vec(),
        })
    }

    /// The path of a child of this object.
    pub fn child(&self, name: &str) -> Option<Path> {
        let kind = self.kind.child()?;
        let mut names = self.names.clone();
        names.push(name.to_string());
        Some(Path { kind, names })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.names.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_nest() {
        assert_eq!(Kind::parse("cells"), Some(Kind::Cell));
        assert_eq!(Kind::parse("Container"), Some(Kind::Container));
        assert_eq!(Kind::parse("pods"), None);
        for k in Kind::ALL {
            if let Some(c) = k.child() {
                assert_eq!(c.parent(), Some(k));
                assert_eq!(c.depth(), k.depth() + 1);
            }
        }
        let p = Path::new(Kind::Stack, vec!["r".into(), "s".into(), "t".into()]);
        assert_eq!(p.parent().unwrap().names(), ["r", "s"]);
        assert_eq!(p.child("c").unwrap().kind(), Kind::Cell);
        assert_eq!(p.to_string(), "Stack r/s/t");
    }

    /// The event log and the write-ahead log store a kind as its
    /// discriminant and read it back by indexing [`Kind::ALL`].
    #[test]
    fn kind_bytes_are_stored_and_never_change() {
        let stored = [
            (Kind::Realm, 0u8),
            (Kind::Space, 1),
            (Kind::Stack, 2),
            (Kind::Cell, 3),
            (Kind::Container, 4),
        ];
        assert_eq!(
            stored.len(),
            Kind::ALL.len(),
            "a new kind needs its byte here"
        );
        for (kind, byte) in stored {
            assert_eq!(kind as u8, byte, "{kind}");
            assert_eq!(Kind::ALL[usize::from(byte)], kind, "{kind}");
        }
    }
}
