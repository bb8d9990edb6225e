//! Internal state enums.
//!
//! Their names are the contract with the wire: [`crate::api`] translates
//! states by name, never by position. Their positions are the storage
//! format, though: the store encodes records with postcard (see
//! [`crate::store::codec`]), which writes an enum value as its variant's
//! index. Reordering the variants, or inserting one anywhere but last,
//! silently changes what every stored record means. The test
//! `stored_bytes_of_every_enum_value` below pins the bytes of every value;
//! a new variant goes last, with its own line in that test's table.

use serde::{Deserialize, Serialize};

macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
        pub enum $name {
            #[default]
            $($variant),+
        }

        impl $name {
            /// Every value, in kukeon's declaration order.
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
    };
}

// The first variant of each enum is its default (`Pending`), as in Go.
state_enum!(
    /// Realm lifecycle state.
    RealmState { Pending, Creating, Ready, Deleting, Failed, Unknown }
);
state_enum!(
    /// Space lifecycle state (internal enum: has Creating and Deleting).
    SpaceState { Pending, Creating, Ready, Deleting, Failed, Unknown }
);
state_enum!(
    /// Stack lifecycle state.
    StackState { Pending, Ready, Failed, Unknown }
);
state_enum!(
    /// Cell lifecycle state.
    CellState { Pending, Ready, Stopped, Failed, Unknown }
);
state_enum!(
    /// Container lifecycle state.
    ContainerState { Pending, Ready, Stopped, Paused, Pausing, Failed, Unknown }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EgressDefault, VolumeKind};
    use serde::de::DeserializeOwned;
    use std::fmt::Debug;

    /// Checks that every value of a stored enum encodes to exactly its bytes
    /// in `table` and decodes back, and that `table` lists `all` the values
    /// in declaration order.
    #[track_caller]
    fn assert_stored_bytes<T>(all: &[T], table: &[(T, &[u8])])
    where
        T: Serialize + DeserializeOwned + Copy + PartialEq + Debug,
    {
        for (value, bytes) in table {
            assert_eq!(
                postcard::to_stdvec(value).unwrap(),
                *bytes,
                "{value:?}: stored records hold these bytes; reordering or inserting \
                 variants changes what they mean"
            );
            assert_eq!(postcard::from_bytes::<T>(bytes).unwrap(), *value);
        }
        let listed: Vec<T> = table.iter().map(|(v, _)| *v).collect();
        assert_eq!(listed, all, "the table lists every value, in order");
    }

    /// postcard stores a unit variant as its index (a one-byte varint here):
    /// these bytes are in every stored record and must never change.
    #[test]
    fn stored_bytes_of_every_enum_value() {
        use RealmState as R;
        assert_stored_bytes(
            R::ALL,
            &[
                (R::Pending, &[0]),
                (R::Creating, &[1]),
                (R::Ready, &[2]),
                (R::Deleting, &[3]),
                (R::Failed, &[4]),
                (R::Unknown, &[5]),
            ],
        );
        use SpaceState as Sp;
        assert_stored_bytes(
            Sp::ALL,
            &[
                (Sp::Pending, &[0]),
                (Sp::Creating, &[1]),
                (Sp::Ready, &[2]),
                (Sp::Deleting, &[3]),
                (Sp::Failed, &[4]),
                (Sp::Unknown, &[5]),
            ],
        );
        use StackState as St;
        assert_stored_bytes(
            St::ALL,
            &[
                (St::Pending, &[0]),
                (St::Ready, &[1]),
                (St::Failed, &[2]),
                (St::Unknown, &[3]),
            ],
        );
        use CellState as Ce;
        assert_stored_bytes(
            Ce::ALL,
            &[
                (Ce::Pending, &[0]),
                (Ce::Ready, &[1]),
                (Ce::Stopped, &[2]),
                (Ce::Failed, &[3]),
                (Ce::Unknown, &[4]),
            ],
        );
        use ContainerState as Co;
        assert_stored_bytes(
            Co::ALL,
            &[
                (Co::Pending, &[0]),
                (Co::Ready, &[1]),
                (Co::Stopped, &[2]),
                (Co::Paused, &[3]),
                (Co::Pausing, &[4]),
                (Co::Failed, &[5]),
                (Co::Unknown, &[6]),
            ],
        );

        // The model's other stored enums (in `types.rs`); the matches stop
        // the build when a variant is added without a line in the table.
        match VolumeKind::Bind {
            VolumeKind::Bind | VolumeKind::Tmpfs => {}
        }
        assert_stored_bytes(
            &[VolumeKind::Bind, VolumeKind::Tmpfs],
            &[(VolumeKind::Bind, &[0]), (VolumeKind::Tmpfs, &[1])],
        );
        match EgressDefault::Allow {
            EgressDefault::Allow | EgressDefault::Deny => {}
        }
        assert_stored_bytes(
            &[EgressDefault::Allow, EgressDefault::Deny],
            &[(EgressDefault::Allow, &[0]), (EgressDefault::Deny, &[1])],
        );
    }

    #[test]
    fn names_round_trip() {
        for s in SpaceState::ALL {
            assert_eq!(SpaceState::from_name(s.as_str()), Some(*s));
        }
        for s in ContainerState::ALL {
            assert_eq!(ContainerState::from_name(s.as_str()), Some(*s));
        }
        assert_eq!(CellState::default(), CellState::Pending);
        assert_eq!(RealmState::from_name("Bogus"), None);
    }
}
