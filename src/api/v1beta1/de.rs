//! Lenient decoding helpers shared by the wire types.
//!
//! - `null` for a list, map, string or struct reads as its empty value
//!   (YAML `labels:` with nothing after it is `null`).
//! - Integers also arrive as integral JSON numbers such as `1.0`, which JSON
//!   Schema calls integers (below 2^52, see `MAX_EXACT_FLOAT_INT`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// Reads `null` as `T::default()`.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An integer type the wire accepts: from JSON integers or integral floats.
pub trait WireInt: Sized + Copy {
    /// Converts an `i128`, if in range.
    fn from_i128(v: i128) -> Option<Self>;
}

macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl WireInt for $t {
            fn from_i128(v: i128) -> Option<Self> { <$t>::try_from(v).ok() }
        }
    )*};
}
wire_int!(i64, u32, u64, i32);

/// The largest integral float taken as an integer: 2^52 - 1. From 2^53 on,
/// several integer literals round to one float; and serde_json (without
/// `float_roundtrip`) may parse a float one unit in the last place off,
/// which below 2^52 leaves a fraction (refused) instead of another integer.
const MAX_EXACT_FLOAT_INT: f64 = 4_503_599_627_370_495.0;

struct IntVisitor<T>(PhantomData<T>);

impl<'de, T: WireInt> Visitor<'de> for IntVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer in range of {}", std::any::type_name::<T>())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::from_i128(v.into()).ok_or_else(|| E::custom(format!("integer {v} out of range")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::from_i128(v.into()).ok_or_else(|| E::custom(format!("integer {v} out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // Beyond 2^53 a float no longer says which integer was written (an
        // integer literal past i64's range arrives as a float that rounds
        // into it), so only the exactly representable ones are taken.
        if v.fract() == 0.0 && v.is_finite() && v.abs() <= MAX_EXACT_FLOAT_INT {
            self.visit_i64(v as i64)
        } else {
            Err(E::custom(format!("{v} is not an integer")))
        }
    }
}

/// A wire integer (see the module docs).
pub fn int<'de, D: Deserializer<'de>, T: WireInt>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(IntVisitor(PhantomData))
}

/// A nullable wire integer.
pub fn opt_int<'de, D: Deserializer<'de>, T: WireInt>(d: D) -> Result<Option<T>, D::Error> {
    struct Wrap<T>(T);
    impl<'de, T: WireInt> Deserialize<'de> for Wrap<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            int(d).map(Wrap)
        }
    }
    Ok(Option::<Wrap<T>>::deserialize(d)?.map(|w| w.0))
}

/// A list of wire integers (`null` reads as empty).
pub fn int_list<'de, D: Deserializer<'de>, T: WireInt>(d: D) -> Result<Vec<T>, D::Error> {
    struct ListVisitor<T>(PhantomData<T>);
    impl<'de, T: WireInt> Visitor<'de> for ListVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of integers")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            struct Item<T>(T);
            impl<'de, T: WireInt> Deserialize<'de> for Item<T> {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    int(d).map(Item)
                }
            }
            let mut out = Vec::new();
            while let Some(Item(v)) = seq.next_element::<Item<T>>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_any(ListVisitor(PhantomData))
}

/// A file mode: an integer, or an octal string as YAML 1.1 (and kukeon's Go
/// YAML) reads `0755`; YAML 1.2 parsers hand `0755` over as a string.
pub fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct ModeVisitor;
    impl<'de> Visitor<'de> for ModeVisitor {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a file mode: an integer such as 493, or octal such as 0755 or 0o755")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            IntVisitor::<u32>(PhantomData).visit_i64(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            IntVisitor::<u32>(PhantomData).visit_u64(v)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u32, E> {
            IntVisitor::<u32>(PhantomData).visit_f64(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
            let digits = v
                .strip_prefix("0o")
                .or_else(|| v.strip_prefix('0'))
                .filter(|d| !d.is_empty() || v == "0");
            match digits {
                Some("") => Ok(0),
                Some(d) if d.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
                    u32::from_str_radix(d, 8)
                        .map_err(|_| E::custom(format!("mode {v:?} is out of range")))
                }
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }
    d.deserialize_any(ModeVisitor)
}

/// Whether a secret-valued field was given a non-empty value. The value
/// itself is dropped unread, so it can never be echoed or stored.
pub fn presence<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct PresenceVisitor;
    impl<'de> Visitor<'de> for PresenceVisitor {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any value")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            Ok(!v.is_empty())
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_none<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
            Ok(true)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
            Ok(true)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
            Ok(true)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
            Ok(true)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            while seq.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok(true)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            while map
                .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                .is_some()
            {}
            Ok(true)
        }
    }
    d.deserialize_any(PresenceVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "int")]
        a: i64,
        #[serde(default, deserialize_with = "opt_int")]
        b: Option<u32>,
        #[serde(default, deserialize_with = "int_list")]
        c: Vec<i64>,
        #[serde(default, deserialize_with = "null_default")]
        d: Vec<String>,
    }

    #[derive(Deserialize)]
    struct M {
        #[serde(deserialize_with = "mode")]
        m: u32,
    }

    #[test]
    fn modes_read_octal_strings() {
        for (input, want) in [
            ("493", 493),
            ("\"0755\"", 493),
            ("\"01777\"", 1023),
            ("\"0o755\"", 493),
            ("\"0\"", 0),
        ] {
            let m: M = serde_json::from_str(&format!("{{\"m\":{input}}}")).unwrap();
            assert_eq!(m.m, want, "{input}");
        }
        for bad in ["\"755\"", "\"0789\"", "\"abc\"", "\"\"", "-1"] {
            assert!(
                serde_json::from_str::<M>(&format!("{{\"m\":{bad}}}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn integral_floats_and_nulls() {
        let t: T = serde_json::from_str(r#"{"a":1.0,"b":7,"c":[1,2.0],"d":null}"#).unwrap();
        assert_eq!((t.a, t.b, t.c, t.d.len()), (1, Some(7), vec![1, 2], 0));
        let t: T = serde_json::from_str(r#"{"a":-3,"b":null,"c":null}"#).unwrap();
        assert_eq!((t.a, t.b, t.c.len()), (-3, None, 0));
        assert!(serde_json::from_str::<T>(r#"{"a":1.5}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a":1,"b":-1}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a":"1"}"#).is_err());
        // Integer literals past i64's range arrive as floats that round
        // into it; they are refused, as are floats past 2^53.
        for out_of_range in [
            "-9223372036854775809",
            "9223372036854775808.0",
            "1e300",
            "9007199254740994.0",
        ] {
            assert!(
                serde_json::from_str::<T>(&format!("{{\"a\":{out_of_range}}}")).is_err(),
                "{out_of_range}"
            );
        }
        let t: T = serde_json::from_str(r#"{"a":1000000000000000.0}"#).unwrap();
        assert_eq!(t.a, 1_000_000_000_000_000);
        // 2^53 + 1 rounds to 2^53, and serde_json reads 9007199254740991.0
        // as ...990: none of these is taken as a float.
        for ambiguous in [
            "9007199254740993.0",
            "9007199254740992.0",
            "9007199254740991.0",
            "4503599627370496.0",
        ] {
            assert!(serde_json::from_str::<T>(&format!("{{\"a\":{ambiguous}}}")).is_err());
        }
        let t: T = serde_json::from_str(r#"{"a":-9223372036854775808}"#).unwrap();
        assert_eq!(t.a, i64::MIN);
    }
}
