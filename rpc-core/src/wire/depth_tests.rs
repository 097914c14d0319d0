use super::*;
use serde::de::value::{Error as ValueError, U32Deserializer};
use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;

/// No size limit, for the depth tests.
const NO_BUDGET: u64 = u64::MAX;

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
    let (decoded, rest) = from_postcard_bytes::<Tree>(&bytes, 64, NO_BUDGET).unwrap();
    assert_eq!(decoded, tree(10));
    assert!(rest.is_empty());
}

#[test]
fn limit_is_inclusive() {
    // 63 nodes + leaf = 64 levels: exactly at the limit.
    assert!(from_postcard_bytes::<Tree>(&tree_bytes(63), 64, NO_BUDGET).is_ok());
    assert!(from_postcard_bytes::<Tree>(&tree_bytes(64), 64, NO_BUDGET).is_err());
}

#[test]
fn deep_tree_fails_via_postcard() {
    let bytes = postcard::to_stdvec(&tree(100)).unwrap();
    let err = from_postcard_bytes::<Tree>(&bytes, 64, NO_BUDGET).unwrap_err();
    // postcard::Error drops custom messages; the budget records the cause.
    assert_eq!(err, DecodeError::TooDeep { limit: 64 });
    assert_eq!(err.to_string(), "payload nests deeper than the limit of 64");
}

#[test]
fn hostile_million_deep_fails_fast() {
    let bytes = tree_bytes(1_000_000);
    let err = from_postcard_bytes::<Tree>(&bytes, 64, NO_BUDGET).unwrap_err();
    assert_eq!(err, DecodeError::TooDeep { limit: 64 });
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
    let ok = Tree::deserialize(DepthLimited::new(TreeDe { nodes: 10 }, 64, &Budget::new(u64::MAX)));
    assert_eq!(ok.unwrap(), tree(10));
    for nodes in [100, 1_000_000] {
        let err = Tree::deserialize(DepthLimited::new(TreeDe { nodes }, 64, &Budget::new(u64::MAX))).unwrap_err();
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
    let (decoded, rest) = from_postcard_bytes::<Everything<'_>>(&bytes, 64, NO_BUDGET).unwrap();
    assert_eq!(decoded, value);
    assert!(rest.is_empty());
}

#[test]
fn shallow_limit_still_admits_flat_values() {
    // Everything is at most 3 levels deep (struct > vec > vec/enum).
    let bytes = postcard::to_stdvec(&everything()).unwrap();
    assert!(from_postcard_bytes::<Everything<'_>>(&bytes, 3, NO_BUDGET).is_ok());
    assert!(from_postcard_bytes::<Everything<'_>>(&bytes, 2, NO_BUDGET).is_err());
    assert_eq!(from_postcard_bytes::<u64>(&[5], 0, NO_BUDGET).unwrap().0, 5);
}

#[test]
fn remainder_is_returned() {
    let mut bytes = postcard::to_stdvec(&(Meters(300), "x")).unwrap();
    bytes.extend_from_slice(&[0xAA, 0xBB]);
    let ((meters, s), rest) = from_postcard_bytes::<(Meters, &str)>(&bytes, 8, NO_BUDGET).unwrap();
    assert_eq!((meters, s), (Meters(300), "x"));
    assert_eq!(rest, &[0xAA, 0xBB]);
}

// ----- the decoded-size budget ---------------------------------------------

/// 4 KiB inline (serde derives arrays up to 32 elements, hence the nesting).
type Page = [[[u8; 32]; 32]; 4];

/// postcard bytes of a sequence of `len` elements whose bytes are `element`.
pub(in crate::wire) fn seq_bytes(len: u64, element: &[u8], count: usize) -> Vec<u8> {
    let mut bytes = postcard::to_stdvec(&len).unwrap();
    for _ in 0..count {
        bytes.extend_from_slice(element);
    }
    bytes
}

#[test]
fn nones_that_decode_to_4_kib_each_exceed_the_budget_at_once() {
    // 100,000 `None`s: 100 KB on the wire, 400 MB decoded.
    let bytes = seq_bytes(100_000, &[0], 100_000);
    assert!(bytes.len() < 100_010);
    let limit = 1 << 20;
    let started = std::time::Instant::now();
    let err = from_postcard_bytes::<Vec<Option<Page>>>(&bytes, 64, limit).unwrap_err();
    let DecodeError::TooLarge { limit: reported, needed } = err else { panic!("{err:?}") };
    assert_eq!(reported, limit);
    assert!(needed > limit && needed < limit + 8192, "stopped at {needed}");
    // Failing took a few hundred elements, not 100,000 (generous for a debug build).
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    let rpc = err.to_rpc("cannot decode value");
    assert_eq!(rpc.kind(), crate::ErrorKind::LimitExceeded);
    assert!(rpc.message().contains("1048576"), "{rpc}");
}

#[test]
fn zero_sized_elements_are_charged_and_a_huge_declared_length_ends() {
    // `Vec<()>` declared u64::MAX long: no element has a byte on the wire.
    let bytes = seq_bytes(u64::MAX, &[], 0);
    let started = std::time::Instant::now();
    let err = from_postcard_bytes::<Vec<()>>(&bytes, 64, 100_000).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { limit: 100_000, .. }), "{err:?}");
    // The default limit (64 MiB) ends it after a million steps, well within a second.
    let err = from_postcard_bytes::<Vec<()>>(&bytes, 64, 64 << 20).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { .. }), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    // Within budget, a vector of units is fine.
    let bytes = seq_bytes(1000, &[], 0);
    let (units, rest) = from_postcard_bytes::<Vec<()>>(&bytes, 64, 100_000).unwrap();
    assert_eq!((units.len(), rest.len()), (1000, 0));
}

#[test]
fn a_boxed_value_is_charged_what_it_boxes() {
    let bytes = seq_bytes(1000, &[0], 1000);
    // 1000 boxes of 4097-byte options: about 4 MB, though each is one wire byte.
    let err = from_postcard_bytes::<Vec<Box<Option<Page>>>>(&bytes, 64, 1 << 20).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { .. }), "{err:?}");
    assert!(from_postcard_bytes::<Vec<Box<Option<Page>>>>(&bytes, 64, 8 << 20).is_ok());
}

#[test]
fn strings_and_maps_are_charged_their_contents() {
    let text = "x".repeat(10_000);
    let bytes = postcard::to_stdvec(&text).unwrap();
    assert!(from_postcard_bytes::<String>(&bytes, 64, 10_000).is_err());
    assert!(from_postcard_bytes::<String>(&bytes, 64, 10_000 + 24).is_ok());
    let map: BTreeMap<u32, ()> = (0..1000).map(|k| (k, ())).collect();
    let bytes = postcard::to_stdvec(&map).unwrap();
    assert!(from_postcard_bytes::<BTreeMap<u32, ()>>(&bytes, 64, 5000).is_err());
    assert_eq!(from_postcard_bytes::<BTreeMap<u32, ()>>(&bytes, 64, 1 << 20).unwrap().0, map);
}

#[test]
fn a_legitimate_value_within_budget_decodes_and_the_charge_bounds_its_size() {
    let value: Vec<(u32, String)> = (0..10_000).map(|i| (i, i.to_string())).collect();
    let bytes = postcard::to_stdvec(&value).unwrap();
    let budget = Budget::new(u64::MAX);
    let mut de = postcard::Deserializer::from_bytes(&bytes);
    let decoded = Vec::<(u32, String)>::deserialize(DepthLimited::new(&mut de, 64, &budget)).unwrap();
    assert_eq!(decoded, value);
    let real: usize = size_of::<Vec<(u32, String)>>()
        + value.iter().map(|(_, s)| size_of::<(u32, String)>() + s.len()).sum::<usize>();
    let used = budget.used();
    assert!(used >= real as u64 && used <= 3 * real as u64, "charged {used} for {real} bytes");
    // The same bytes fail under a budget below the real size, and pass at the charge.
    assert!(matches!(
        from_postcard_bytes::<Vec<(u32, String)>>(&bytes, 64, real as u64 - 1),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(from_postcard_bytes::<Vec<(u32, String)>>(&bytes, 64, used).is_ok());
}

#[test]
fn the_limit_is_inclusive() {
    // A top-level u64 costs its 8 bytes.
    assert_eq!(from_postcard_bytes::<u64>(&[5], 0, 8).unwrap().0, 5);
    assert_eq!(from_postcard_bytes::<u64>(&[5], 0, 7).unwrap_err(), DecodeError::TooLarge { limit: 7, needed: 8 });
}

#[test]
fn visitors_see_a_capped_size_hint() {
    struct Hint(Option<usize>);
    impl<'de> Deserialize<'de> for Hint {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Hint;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a seq")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Hint, A::Error> {
                    Ok(Hint(seq.size_hint()))
                }
            }
            d.deserialize_seq(V)
        }
    }
    let bytes = seq_bytes(100_000, &[0], 100_000);
    let budget = Budget::new(u64::MAX);
    let mut de = postcard::Deserializer::from_bytes(&bytes);
    let hint = Hint::deserialize(DepthLimited::new(&mut de, 64, &budget)).unwrap();
    assert_eq!(hint.0, Some(MAX_HINT));
}

#[test]
fn inline_fields_are_charged_once_and_boxed_contents_in_full() {
    #[derive(Serialize, Deserialize)]
    struct Holder {
        tag: u8,
        boxed: Box<Option<Page>>,
    }
    let charge_of = |bytes: &[u8]| {
        let budget = Budget::new(u64::MAX);
        let mut de = postcard::Deserializer::from_bytes(bytes);
        let _ = Vec::<Holder>::deserialize(DepthLimited::new(&mut de, 64, &budget)).unwrap();
        budget.used()
    };
    // 100 holders of boxed `Some` pages: each a 16-byte slot plus a 4097-byte
    // box (charged less the pointer its slot paid for).
    let full: Vec<Holder> = (0..100).map(|i| Holder { tag: i, boxed: Box::new(Some([[[i; 32]; 32]; 4])) }).collect();
    let real = 100 * (size_of::<Holder>() + size_of::<Option<Page>>() - size_of::<Box<()>>()) as u64;
    let used = charge_of(&postcard::to_stdvec(&full).unwrap());
    assert!(used >= real && used < real + real / 20, "charged {used} for {real}");
    // The boxes' contents are charged even when they are one wire byte (`None`).
    let empty: Vec<Holder> = (0..100).map(|i| Holder { tag: i, boxed: Box::new(None) }).collect();
    let used = charge_of(&postcard::to_stdvec(&empty).unwrap());
    assert!(used >= real && used < real + real / 20, "charged {used} for {real}");
}
