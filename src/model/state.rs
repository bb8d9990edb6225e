//! Internal state enums. Their names are the contract; their positions are
//! only kukeon v0.4's integer encoding and are never used for translation.

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
