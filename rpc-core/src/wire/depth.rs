//! Nesting-depth limit for decoding payloads from untrusted peers.
//!
//! Serde decodes recursive types by recursing, so hostile bytes describing a
//! million nested values would overflow the stack. [`DepthLimited`] wraps any
//! deserializer and counts compound values on the way down, failing with an
//! ordinary decode error once the limit is exceeded.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use std::fmt;

/// Compound levels still allowed below the current value, plus the configured
/// limit (kept only for the error message).
#[derive(Clone, Copy, Debug)]
struct Depth {
    remaining: u32,
    limit: u32,
}

impl Depth {
    /// Depth for the contents of a compound value at this level, or the
    /// depth-exceeded error once no level is left.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        match self.remaining.checked_sub(1) {
            Some(remaining) => Ok(Self { remaining, ..self }),
            None => Err(E::custom(format_args!("payload nests deeper than the limit of {}", self.limit))),
        }
    }
}

/// Deserializer adapter that fails instead of recursing past a nesting limit.
///
/// Each seq, tuple, tuple struct, map, struct, enum, newtype struct and `Some`
/// counts as one level; an enum together with its variant's fields counts once.
/// Decoding a value nested more than `max_depth` levels deep fails with
/// `D::Error` made by [`serde::de::Error::custom`]. Scalars never count.
pub(crate) struct DepthLimited<D> {
    inner: D,
    depth: Depth,
}

impl<D> DepthLimited<D> {
    /// Wraps `inner`, allowing at most `max_depth` nested compound values.
    pub(crate) fn new(inner: D, max_depth: u32) -> Self {
        let depth = Depth { remaining: max_depth, limit: max_depth };
        Self::at(inner, depth)
    }

    fn at(inner: D, depth: Depth) -> Self {
        Self { inner, depth }
    }
}

/// Decodes `T` from postcard bytes, failing (not overflowing) when nesting exceeds `max_depth`.
///
/// Returns the value and the unused remainder, like [`postcard::take_from_bytes`].
/// `postcard::Error` cannot carry a message, so exceeding the limit surfaces as
/// [`postcard::Error::SerdeDeCustom`].
pub(crate) fn from_postcard_bytes<'de, T: serde::Deserialize<'de>>(
    bytes: &'de [u8],
    max_depth: u32,
) -> Result<(T, &'de [u8]), postcard::Error> {
    let mut deserializer = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(DepthLimited::new(&mut deserializer, max_depth))?;
    Ok((value, deserializer.finalize()?))
}

// Every method wraps the visitor: a self-describing format may hand a seq or
// map to any visitor, so even scalar requests must be guarded.
macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* DepthVisitor { visitor, depth: self.depth })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for DepthLimited<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Forwards to `visitor`, entering one level for each compound value it is handed.
struct DepthVisitor<V> {
    visitor: V,
    depth: Depth,
}

// Scalars pass straight through; forwarding each method individually keeps the
// inner visitor's own defaults and zero-copy borrowing intact.
macro_rules! forward_visit {
    ($($method:ident($($arg:ident: $ty:ty)?);)*) => {$(
        fn $method<E: de::Error>(self $(, $arg: $ty)?) -> Result<V::Value, E> {
            self.visitor.$method($($arg)?)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for DepthVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(formatter)
    }

    forward_visit! {
        visit_bool(v: bool);
        visit_i8(v: i8);
        visit_i16(v: i16);
        visit_i32(v: i32);
        visit_i64(v: i64);
        visit_i128(v: i128);
        visit_u8(v: u8);
        visit_u16(v: u16);
        visit_u32(v: u32);
        visit_u64(v: u64);
        visit_u128(v: u128);
        visit_f32(v: f32);
        visit_f64(v: f64);
        visit_char(v: char);
        visit_str(v: &str);
        visit_borrowed_str(v: &'de str);
        visit_string(v: String);
        visit_bytes(v: &[u8]);
        visit_borrowed_bytes(v: &'de [u8]);
        visit_byte_buf(v: Vec<u8>);
        visit_none();
        visit_unit();
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let depth = self.depth.enter()?;
        self.visitor.visit_some(DepthLimited::at(deserializer, depth))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let depth = self.depth.enter()?;
        self.visitor.visit_newtype_struct(DepthLimited::at(deserializer, depth))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let depth = self.depth.enter()?;
        self.visitor.visit_seq(DepthAccess { access: seq, depth })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let depth = self.depth.enter()?;
        self.visitor.visit_map(DepthAccess { access: map, depth })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        // Fail before the variant's contents are read; the enum keeps its own
        // level so a tuple/struct variant's fields do not count a second time.
        self.depth.enter::<A::Error>()?;
        let level = self.depth;
        self.visitor.visit_enum(DepthEnum { access: data, level })
    }
}

/// Seq or map access whose elements, keys and values are decoded at `depth`.
struct DepthAccess<A> {
    access: A,
    depth: Depth,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for DepthAccess<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        let depth = self.depth;
        self.access.next_element_seed(DepthSeed { seed, depth })
    }

    fn size_hint(&self) -> Option<usize> {
        self.access.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for DepthAccess<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        let depth = self.depth;
        self.access.next_key_seed(DepthSeed { seed, depth })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let depth = self.depth;
        self.access.next_value_seed(DepthSeed { seed, depth })
    }

    fn next_entry_seed<K: DeserializeSeed<'de>, T: DeserializeSeed<'de>>(
        &mut self,
        key: K,
        value: T,
    ) -> Result<Option<(K::Value, T::Value)>, A::Error> {
        let depth = self.depth;
        let key = DepthSeed { seed: key, depth };
        let value = DepthSeed { seed: value, depth };
        self.access.next_entry_seed(key, value)
    }

    fn size_hint(&self) -> Option<usize> {
        self.access.size_hint()
    }
}

/// Enum or variant access; `level` is the enum's own (already checked) level.
struct DepthEnum<A> {
    access: A,
    level: Depth,
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for DepthEnum<A> {
    type Error = A::Error;
    type Variant = DepthEnum<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self::Variant), A::Error> {
        // The tag is inside the enum, so a self-describing format cannot nest
        // enums through tags without using up depth.
        let seed = DepthSeed { seed, depth: self.level.enter()? };
        let (value, variant) = self.access.variant_seed(seed)?;
        let level = self.level;
        Ok((value, DepthEnum { access: variant, level }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for DepthEnum<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.access.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let depth = self.level.enter()?;
        self.access.newtype_variant_seed(DepthSeed { seed, depth })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        // The visitor enters the enum's level itself when handed the fields.
        let depth = self.level;
        self.access.tuple_variant(len, DepthVisitor { visitor, depth })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let depth = self.level;
        self.access.struct_variant(fields, DepthVisitor { visitor, depth })
    }
}

/// Seed that decodes its value through [`DepthLimited`] at `depth`.
struct DepthSeed<S> {
    seed: S,
    depth: Depth,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for DepthSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(DepthLimited::at(deserializer, self.depth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error as ValueError, U32Deserializer};
    use serde::de::IntoDeserializer;
    use serde::{Deserialize, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    /// `n` nodes above a leaf: `n + 1` enum levels.
    fn tree(n: usize) -> Tree {
        (0..n).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)))
    }

    /// postcard bytes of `tree(n)`: variant index 1 per node, then 0.
    fn tree_bytes(n: usize) -> Vec<u8> {
        let mut bytes = vec![1u8; n];
        bytes.push(0);
        bytes
    }

    #[test]
    fn shallow_tree_decodes() {
        let bytes = postcard::to_stdvec(&tree(10)).unwrap();
        assert_eq!(bytes, tree_bytes(10));
        let (decoded, rest) = from_postcard_bytes::<Tree>(&bytes, 64).unwrap();
        assert_eq!(decoded, tree(10));
        assert!(rest.is_empty());
    }

    #[test]
    fn limit_is_inclusive() {
        // 63 nodes + leaf = 64 levels: exactly at the limit.
        assert!(from_postcard_bytes::<Tree>(&tree_bytes(63), 64).is_ok());
        assert!(from_postcard_bytes::<Tree>(&tree_bytes(64), 64).is_err());
    }

    #[test]
    fn deep_tree_fails_via_postcard() {
        let bytes = postcard::to_stdvec(&tree(100)).unwrap();
        let err = from_postcard_bytes::<Tree>(&bytes, 64).unwrap_err();
        // postcard::Error drops custom messages; see `TreeDe` for the text.
        assert_eq!(err, postcard::Error::SerdeDeCustom);
    }

    #[test]
    fn hostile_million_deep_fails_fast() {
        let bytes = tree_bytes(1_000_000);
        let err = from_postcard_bytes::<Tree>(&bytes, 64).unwrap_err();
        assert_eq!(err, postcard::Error::SerdeDeCustom);
    }

    /// Message-preserving deserializer that yields `nodes` nested `Tree::Node`s.
    struct TreeDe {
        nodes: usize,
    }

    impl<'de> Deserializer<'de> for TreeDe {
        type Error = ValueError;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            visitor.visit_enum(self)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct enum identifier ignored_any
        }
    }

    impl<'de> EnumAccess<'de> for TreeDe {
        type Error = ValueError;
        type Variant = Self;

        fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self), ValueError> {
            let index: U32Deserializer<ValueError> = u32::from(self.nodes > 0).into_deserializer();
            Ok((seed.deserialize(index)?, self))
        }
    }

    impl<'de> VariantAccess<'de> for TreeDe {
        type Error = ValueError;

        fn unit_variant(self) -> Result<(), ValueError> {
            Ok(())
        }

        fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, ValueError> {
            seed.deserialize(TreeDe { nodes: self.nodes - 1 })
        }

        fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, ValueError> {
            unreachable!("Tree has no tuple variant")
        }

        fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], _: V) -> Result<V::Value, ValueError> {
            unreachable!("Tree has no struct variant")
        }
    }

    #[test]
    fn error_message_names_the_limit() {
        let ok = Tree::deserialize(DepthLimited::new(TreeDe { nodes: 10 }, 64));
        assert_eq!(ok.unwrap(), tree(10));
        for nodes in [100, 1_000_000] {
            let err = Tree::deserialize(DepthLimited::new(TreeDe { nodes }, 64)).unwrap_err();
            assert_eq!(err.to_string(), "payload nests deeper than the limit of 64");
        }
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Meters(u32);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Pair(u8, String);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Marker;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(u8, i16),
        Struct { a: u8, b: String },
    }

    /// Byte buffer that goes through `serialize_bytes`/`deserialize_byte_buf`.
    #[derive(Debug, PartialEq)]
    struct ByteBuf(Vec<u8>);

    impl Serialize for ByteBuf {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct BufVisitor;
            impl Visitor<'_> for BufVisitor {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
            }
            deserializer.deserialize_byte_buf(BufVisitor)
        }
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Everything<'a> {
        unit: (),
        marker: Marker,
        flag: bool,
        small: i8,
        wide: u128,
        negative: i64,
        float: f64,
        letter: char,
        text: String,
        borrowed_text: &'a str,
        borrowed_bytes: &'a [u8],
        buf: ByteBuf,
        meters: Meters,
        pair: Pair,
        tuple: (u16, i32, bool),
        nothing: Option<u8>,
        nested_option: Option<Option<u8>>,
        vecs: Vec<Vec<u8>>,
        map: BTreeMap<String, Vec<u32>>,
        shapes: Vec<Shape>,
    }

    fn everything() -> Everything<'static> {
        Everything {
            unit: (),
            marker: Marker,
            flag: true,
            small: -7,
            wide: u128::MAX - 1,
            negative: i64::MIN,
            float: 1.5,
            letter: 'ß',
            text: "hello".into(),
            borrowed_text: "borrowed",
            borrowed_bytes: &[0, 1, 255],
            buf: ByteBuf(vec![9, 8, 7]),
            meters: Meters(42),
            pair: Pair(3, "three".into()),
            tuple: (1, -2, false),
            nothing: None,
            nested_option: Some(None),
            vecs: vec![vec![], vec![1, 2], vec![3]],
            map: BTreeMap::from([("a".into(), vec![1, 2]), ("b".into(), vec![])]),
            shapes: vec![Shape::Unit, Shape::Newtype(5), Shape::Tuple(6, -6), Shape::Struct { a: 1, b: "b".into() }],
        }
    }

    #[test]
    fn data_model_round_trips() {
        let value = everything();
        let bytes = postcard::to_stdvec(&value).unwrap();
        let (decoded, rest) = from_postcard_bytes::<Everything<'_>>(&bytes, 64).unwrap();
        assert_eq!(decoded, value);
        assert!(rest.is_empty());
    }

    #[test]
    fn shallow_limit_still_admits_flat_values() {
        // Everything is at most 3 levels deep (struct > vec > vec/enum).
        let bytes = postcard::to_stdvec(&everything()).unwrap();
        assert!(from_postcard_bytes::<Everything<'_>>(&bytes, 3).is_ok());
        assert!(from_postcard_bytes::<Everything<'_>>(&bytes, 2).is_err());
        assert_eq!(from_postcard_bytes::<u64>(&[5], 0).unwrap().0, 5);
    }

    #[test]
    fn remainder_is_returned() {
        let mut bytes = postcard::to_stdvec(&(Meters(300), "x")).unwrap();
        bytes.extend_from_slice(&[0xAA, 0xBB]);
        let ((meters, s), rest) = from_postcard_bytes::<(Meters, &str)>(&bytes, 8).unwrap();
        assert_eq!((meters, s), (Meters(300), "x"));
        assert_eq!(rest, &[0xAA, 0xBB]);
    }
}
