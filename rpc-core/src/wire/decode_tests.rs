//! The decoder against the reference (postcard's deserializer wrapped in
//! `DepthLimited`): for every kind of value and for hostile bytes, the same
//! value, the same remainder, the same error and the same charge, under
//! several depth and size limits.

use super::*;
use crate::wire::depth::reference;
use crate::wire::depth::tests::seq_bytes;
use crate::wire::encode::tests::{wire_messages, Marker, Triple, Wrapped, Xorshift};
use crate::wire::{Hello, Limits, Message, MAGIC, PROTOCOL_VERSION};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::any::type_name;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::BuildHasherDefault;
use std::marker::PhantomData;
use std::result::Result;

type Outcome<'de, T> = Result<(T, &'de [u8]), DecodeError>;

/// Decodes `bytes` as a `T` both ways; asserts the outcomes (compared as
/// `Debug` text, so NaNs compare) and the charges are the same.
fn same_at<'de, T: Deserialize<'de> + Debug>(bytes: &'de [u8], max_depth: u32, limit: u64) -> (Outcome<'de, T>, u64) {
    let mut decoder = Decoder::new(bytes, max_depth, limit);
    let ours = decoder.decode::<T>();
    let (theirs, charged) = reference::from_postcard_bytes::<T>(bytes, max_depth, limit);
    let context = || format!("{} from {bytes:02x?} (depth {max_depth}, limit {limit})", type_name::<T>());
    assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{}", context());
    assert_eq!(decoder.used(), charged, "charge of {}", context());
    (ours, charged)
}

/// A budget beyond every value tested here, small enough that a hostile
/// declared length of zero-sized elements ends in a few thousand steps.
const ROOMY: u64 = 1 << 20;

/// [`same_at`] within [`ROOMY`], then at depths and budgets around what the
/// value needs; returns the first outcome.
fn same<'de, T: Deserialize<'de> + Debug>(bytes: &'de [u8]) -> Outcome<'de, T> {
    let (outcome, charged) = same_at::<T>(bytes, 64, ROOMY);
    for limit in [0, 1, 7, 8, charged / 2, charged.saturating_sub(1), charged, charged.saturating_add(1)] {
        let _ = same_at::<T>(bytes, 64, limit);
    }
    for depth in [0, 1, 2, 3, 5] {
        let _ = same_at::<T>(bytes, depth, ROOMY);
    }
    outcome
}

/// `bytes` (a valid encoding of `expected`) decode to it, with a trailer
/// left over, and every shorter prefix fails.
fn same_encoding<'de, T: Deserialize<'de> + Debug>(bytes: &'de [u8], expected: &str) {
    let (value, rest) = same::<T>(bytes).unwrap_or_else(|e| panic!("{expected}: {e:?}"));
    assert_eq!(format!("{value:?}"), expected);
    assert!(rest.is_empty(), "{expected}: {} bytes left", rest.len());
    // Every prefix of a short encoding; of a long one, the first and last
    // hundred and a sample between.
    let ends = (0..bytes.len()).filter(|&end| end < 100 || bytes.len() - end <= 100 || end % 97 == 0);
    for end in ends {
        let (outcome, _) = same_at::<T>(&bytes[..end], 64, ROOMY);
        assert!(outcome.is_err(), "{expected} cut to {end} bytes decoded");
    }
}

/// [`same_encoding`] of postcard's bytes for a value, and again with a
/// trailer that must come back as the remainder.
macro_rules! round_trip {
    ($ty:ty, $value:expr) => {{
        let value: $ty = $value;
        let mut bytes = postcard::to_stdvec(&value).expect("postcard encodes");
        let expected = format!("{value:?}");
        same_encoding::<$ty>(&bytes, &expected);
        bytes.extend_from_slice(&[0xAA, 0xBB]);
        let (_, rest) = same::<$ty>(&bytes).expect("decodes with a trailer");
        assert_eq!(rest, [0xAA, 0xBB]);
    }};
}

/// Decodes `bytes` as each type: only the agreement is checked.
macro_rules! same_as {
    ($bytes:expr; $($ty:ty),* $(,)?) => {{ $( let _ = same::<$ty>($bytes); )* }};
}

macro_rules! integer_boundaries {
    ($($ty:ty),*) => {$(
        for value in boundary_candidates().into_iter().filter_map(|c| <$ty>::try_from(c).ok()) {
            round_trip!($ty, value);
        }
    )*};
}

/// Powers of two, their neighbours and negatives: every varint length.
fn boundary_candidates() -> Vec<i128> {
    let mut values = vec![0, 1, -1, i128::MAX, i128::MIN];
    for bit in 0..127 {
        let power = 1i128 << bit;
        values.extend([power - 1, power, power + 1, -power, -power - 1]);
    }
    values
}

#[test]
fn integers_of_every_width_at_their_varint_boundaries() {
    integer_boundaries!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
    round_trip!(u128, u128::MAX);
}

/// Varints of every length up to 20 bytes, ending in bytes at and around
/// each width's largest last byte, and cut short.
fn crafted_varints() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for len in 0..=20 {
        for fill in [0x80u8, 0xff, 0x81] {
            for last in [0x00, 0x01, 0x02, 0x03, 0x04, 0x0f, 0x10, 0x1f, 0x7f] {
                let mut bytes = vec![fill; len];
                bytes.extend_from_slice(&[last, 0x42]);
                out.push(bytes);
            }
            out.push(vec![fill; len]);
        }
    }
    out
}

#[test]
fn over_long_overflowing_and_cut_varints_fail_alike() {
    for bytes in crafted_varints() {
        same_as!(&bytes; u16, u32, u64, u128, usize, i16, i32, i64, i128, isize, char, String, &[u8], Vec<u8>);
        same_as!(&bytes; Kinds, Option<Kinds>, BTreeMap<u8, u8>, Vec<()>);
    }
    // The known cases: over-long small values are fine, a 10th byte over 1 is not.
    assert_eq!(same::<u64>(&[0x80, 0x00]).unwrap().0, 0);
    assert_eq!(same::<u16>(&[0xff, 0xff, 0x03]).unwrap().0, u16::MAX);
    let bad = same::<u16>(&[0xff, 0xff, 0x04]).unwrap_err();
    assert_eq!(bad, DecodeError::Malformed(postcard::Error::DeserializeBadVarint));
    let mut ten = vec![0xff; 9];
    ten.push(0x02);
    assert_eq!(same::<u64>(&ten).unwrap_err(), DecodeError::Malformed(postcard::Error::DeserializeBadVarint));
    assert_eq!(same::<u64>(&[0x80]).unwrap_err(), DecodeError::Malformed(postcard::Error::DeserializeUnexpectedEnd));
}

#[test]
fn every_byte_as_bool_u8_i8_and_option() {
    for byte in 0..=255u8 {
        same_as!(&[byte, 7]; bool, u8, i8, Option<u8>, Option<()>, Option<Option<u32>>, Option<bool>);
    }
    same_as!(&[]; bool, u8, i8, Option<u8>, (), Marker);
    assert_eq!(same::<bool>(&[2]).unwrap_err(), DecodeError::Malformed(postcard::Error::DeserializeBadBool));
    assert_eq!(same::<Option<u8>>(&[2]).unwrap_err(), DecodeError::Malformed(postcard::Error::DeserializeBadOption));
}

#[test]
fn floats_of_every_kind_and_cut_short() {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let bits = rng.next();
        round_trip!(f64, f64::from_bits(bits));
        round_trip!(f32, f32::from_bits(bits as u32));
    }
    for value in [0.0f64, -0.0, f64::NAN, f64::INFINITY, f64::MIN_POSITIVE, 1.5] {
        round_trip!(f64, value);
        round_trip!(f32, value as f32);
    }
    same_as!(&[1, 2, 3]; f32, f64, (f32, f32));
}

#[test]
fn chars_valid_and_invalid() {
    for code in (0..0x11_0000).step_by(997).chain([0, 0x7f, 0x80, 0x7ff, 0x800, 0xffff, 0x1_0000, 0x10_ffff]) {
        if let Some(c) = char::from_u32(code) {
            round_trip!(char, c);
        }
    }
    let crafted: [&[u8]; 10] = [
        &[0],
        &[1, 0x80],
        &[2, b'a', b'b'],
        &[3, 0xed, 0xa0, 0x80],
        &[4, 0xf0, 0x9f, 0x98, 0x80],
        &[5, b'a', b'b', b'c', b'd', b'e'],
        &[4, 0xf4, 0x90, 0x80, 0x80],
        &[2, 0xc3],
        &[0x81, 0x00, b'a'],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    ];
    for bytes in crafted {
        same_as!(bytes; char, String, &str);
    }
    let mut rng = Xorshift(7);
    for _ in 0..500 {
        let len = (rng.next() % 6) as usize;
        let mut bytes = vec![len as u8];
        bytes.extend((0..len).map(|_| rng.next() as u8));
        same_as!(&bytes; char, String, &str, Box<str>);
    }
}

/// A byte string that goes through `deserialize_byte_buf` (`visit_bytes`).
#[derive(Debug)]
struct ByteBuf(#[allow(dead_code, reason = "compared through Debug")] Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Buf;
        impl Visitor<'_> for Buf {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
        }
        deserializer.deserialize_byte_buf(Buf)
    }
}

#[test]
fn strings_and_byte_strings_borrowed_owned_and_invalid() {
    for len in [0, 1, 127, 128, 300, 16384] {
        let text: String = (0..len).map(|i| ['a', 'é', '€', '😀'][i % 4]).collect();
        round_trip!(String, text.clone());
        round_trip!(&str, &text);
        round_trip!(Cow<'_, str>, Cow::Borrowed(&text));
        round_trip!(Box<str>, text.clone().into_boxed_str());
        round_trip!(&[u8], text.as_bytes());
        let bytes = postcard::to_stdvec(&text).unwrap();
        same_encoding::<ByteBuf>(&bytes, &format!("{:?}", ByteBuf(text.clone().into_bytes())));
        round_trip!(Vec<u8>, text.clone().into_bytes());
    }
    let crafted: [&[u8]; 5] = [&[3, b'a', 0xff, b'c'], &[2, 0xc3, 0x28], &[5, b'a'], &[0x80, 0x01, 0], &[1, 0xed]];
    for bytes in crafted {
        same_as!(bytes; String, &str, Box<str>, &[u8], ByteBuf, Vec<u8>, Cow<'_, str>);
    }
    let mut huge = vec![0xff; 9];
    huge.push(0x01);
    same_as!(&huge; String, &str, &[u8], ByteBuf, Vec<u8>, Vec<()>, BTreeMap<(), ()>);
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Kinds {
    Unit,
    Newtype(u32),
    Tuple(i16, String),
    Struct { a: u64, b: Option<bool> },
    Nested(Box<Kinds>),
    Wide(u128, i128),
    Empty {},
    EmptyTuple(),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Lenient {
    Known(u8),
    #[serde(other)]
    Other,
}

/// Contents decoded through a visitor whose value (a `String`) is larger than
/// what is stored (a `u8`): the charge depends on what the slot prepaid.
#[derive(Deserialize, Debug)]
#[allow(dead_code, reason = "compared through Debug")]
enum Shrunk {
    Newtype(#[serde(deserialize_with = "text_len")] u8),
    Struct {
        #[serde(deserialize_with = "text_len")]
        len: u8,
    },
    Unit,
}

fn text_len<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    Ok(String::deserialize(deserializer)?.len() as u8)
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Inner {
    id: u64,
    name: String,
    tags: Vec<i16>,
}

/// 4 KiB inline (serde derives arrays up to 32 elements, hence the nesting).
type Page = [[[u8; 32]; 32]; 4];

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Outer<'a> {
    inner: Inner,
    maybe: Option<Inner>,
    boxed: Box<Option<u32>>,
    page: Box<Option<Page>>,
    pair: (u8, i64),
    unit: (),
    marker: Marker,
    wrapped: Wrapped,
    text: &'a str,
    bytes: &'a [u8],
    phantom: PhantomData<u64>,
    empty: [u16; 0],
}

type Fixed<K, V> = HashMap<K, V, BuildHasherDefault<std::collections::hash_map::DefaultHasher>>;

fn inner(id: u64) -> Inner {
    Inner { id, name: format!("inner {id}"), tags: vec![-1, 0, 300, i16::MIN] }
}

fn outer(id: u64) -> Outer<'static> {
    Outer {
        inner: inner(id),
        maybe: id.is_multiple_of(2).then(|| inner(id + 1)),
        boxed: Box::new(Some(128)),
        page: Box::new(id.is_multiple_of(3).then_some([[[id as u8; 32]; 32]; 4])),
        pair: (255, i64::MIN),
        unit: (),
        marker: Marker,
        wrapped: Wrapped(16384),
        text: "borrowed",
        bytes: &[0, 1, 255],
        phantom: PhantomData,
        empty: [],
    }
}

fn kinds() -> Vec<Kinds> {
    vec![
        Kinds::Unit,
        Kinds::Newtype(128),
        Kinds::Tuple(-129, "t".into()),
        Kinds::Struct { a: 1 << 40, b: Some(true) },
        Kinds::Struct { a: 0, b: None },
        Kinds::Nested(Box::new(Kinds::Nested(Box::new(Kinds::Newtype(7))))),
        Kinds::Wide(u128::MAX, i128::MIN),
        Kinds::Empty {},
        Kinds::EmptyTuple(),
    ]
}

#[test]
fn options_structs_enums_and_units() {
    round_trip!(Option<u32>, None);
    round_trip!(Option<Option<i64>>, Some(Some(-5)));
    round_trip!(Option<Option<i64>>, Some(None));
    round_trip!((), ());
    round_trip!(Marker, Marker);
    round_trip!(Wrapped, Wrapped(u32::MAX));
    round_trip!(Triple, Triple(1, "two".into(), -3));
    round_trip!(Box<Inner>, Box::new(inner(9)));
    for id in 0..6 {
        round_trip!(Outer<'_>, outer(id));
    }
    for value in kinds() {
        round_trip!(Kinds, value);
    }
    round_trip!(Vec<Kinds>, kinds());
    round_trip!(Result<u32, String>, Ok(3));
    round_trip!(Result<u32, String>, Err("e".into()));
    round_trip!(Lenient, Lenient::Known(4));
    round_trip!(Lenient, Lenient::Other);
    round_trip!(std::time::Duration, std::time::Duration::new(5, 7));
    round_trip!(std::net::SocketAddr, "[::1]:80".parse().unwrap());
    round_trip!(std::net::IpAddr, "10.0.0.1".parse().unwrap());
    // Variant indexes past the last, over-long, and for `#[serde(other)]`.
    for bytes in [&[9u8, 0][..], &[0x80, 0x00], &[0x81, 0x00, 5], &[0xff, 0xff, 0xff, 0xff, 0x0f], &[7], &[8]] {
        same_as!(bytes; Kinds, Lenient, Result<u32, String>, Option<Kinds>);
    }
    // Contents whose visitor builds more than the slot holds.
    for bytes in [&[1u8, 0, 3, b'a', b'b', b'c'][..], &[1, 1, 2, b'x', b'y'], &[1, 2], &[0, 0]] {
        same_as!(bytes; Option<Shrunk>, Box<Shrunk>, (u8, Shrunk), Vec<Option<Shrunk>>);
        same_as!(bytes; (u8, Box<Shrunk>), Option<Box<Shrunk>>);
    }
}

#[test]
fn sequences_maps_tuples_and_boxes() {
    let nested: Vec<Vec<u32>> = vec![vec![], vec![1], vec![128, 16384, u32::MAX], (0..200).collect()];
    round_trip!(Vec<Vec<u32>>, nested);
    round_trip!(Vec<u64>, (0..300).map(|i| i * i * i).collect());
    round_trip!(
        BTreeMap<String, Vec<i8>>,
        (0..150).map(|i| (format!("key {i}"), vec![i as i8, (i as i8).wrapping_neg()])).collect()
    );
    round_trip!(Fixed<u32, Option<String>>, (0..40).map(|i| (i * 1000, (i % 3 == 0).then(|| i.to_string()))).collect());
    round_trip!(BTreeMap<u32, ()>, (0..1000).map(|k| (k, ())).collect());
    round_trip!((u8, i16, u32, String, Option<f64>, [u16; 3]), (1, -2, 3, "four".into(), Some(5.0), [6; 3]));
    round_trip!([[u8; 4]; 2], [[1; 4]; 2]);
    round_trip!(Vec<Box<Inner>>, (0..5).map(|i| Box::new(inner(i))).collect());
    round_trip!(Vec<Box<Option<Page>>>, vec![Box::new(None), Box::new(Some([[[3; 32]; 32]; 4]))]);
    round_trip!(Vec<(u32, String)>, (0..300).map(|i| (i, i.to_string())).collect());
}

#[test]
fn zero_sized_values_and_huge_declared_lengths() {
    round_trip!(Vec<()>, vec![(); 1000]);
    round_trip!(Vec<Marker>, (0..10).map(|_| Marker).collect());
    round_trip!(Vec<[u64; 0]>, vec![[]; 7]);
    round_trip!(BTreeMap<(), ()>, BTreeMap::from([((), ())]));
    round_trip!(BTreeMap<(), u32>, BTreeMap::from([((), 300)]));
    round_trip!(BTreeMap<(), Vec<()>>, BTreeMap::from([((), vec![(); 3])]));
    same_as!(&seq_bytes(3, &[7], 3); BTreeMap<(), u8>, BTreeMap<u8, ()>, Fixed<(), u8>);
    round_trip!(Vec<((), PhantomData<u8>)>, vec![((), PhantomData); 3]);
    // Declared u64::MAX long, no element on the wire: the budget ends it.
    let bytes = seq_bytes(u64::MAX, &[], 0);
    for limit in [0, 64, 100_000, 1 << 20] {
        let _ = same_at::<Vec<()>>(&bytes, 64, limit);
        let _ = same_at::<Vec<Marker>>(&bytes, 64, limit);
        let _ = same_at::<Vec<[u8; 0]>>(&bytes, 64, limit);
        let _ = same_at::<BTreeMap<(), ()>>(&bytes, 64, limit);
        let _ = same_at::<Vec<u8>>(&bytes, 64, limit);
    }
    let (err, _) = same_at::<Vec<()>>(&bytes, 64, 100_000);
    assert!(matches!(err, Err(DecodeError::TooLarge { limit: 100_000, .. })), "{err:?}");
}

#[test]
fn nones_that_decode_to_pages_are_charged_alike() {
    let bytes = seq_bytes(10_000, &[0], 10_000);
    for limit in [0, 24, 4096, 100_000, 1 << 20, 64 << 20, u64::MAX] {
        let _ = same_at::<Vec<Option<Page>>>(&bytes, 64, limit);
        let _ = same_at::<Vec<Box<Option<Page>>>>(&bytes, 64, limit);
    }
    let bytes = seq_bytes(3, &[1, 0], 3);
    same_as!(&bytes; Vec<Option<Vec<u8>>>, Vec<Option<Option<Page>>>);
}

/// The size hint a visitor is shown for a sequence, and how many `u8`
/// elements it then read before the end or an error (which it swallows, so
/// a decode can succeed past a failed charge).
#[derive(Debug)]
#[allow(dead_code, reason = "compared through Debug")]
struct Hints(Option<usize>, usize);

impl<'de> Deserialize<'de> for Hints {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Seen;
        impl<'de> Visitor<'de> for Seen {
            type Value = Hints;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a seq")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Hints, A::Error> {
                let hint = seq.size_hint();
                let mut count = 0;
                while let Ok(Some(_)) = seq.next_element::<u8>() {
                    count += 1;
                }
                Ok(Hints(hint, count))
            }
        }
        deserializer.deserialize_seq(Seen)
    }
}

#[derive(Debug)]
struct MapHints(#[allow(dead_code, reason = "compared through Debug")] Hints);

impl<'de> Deserialize<'de> for MapHints {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Probe;
        impl<'de> Visitor<'de> for Probe {
            type Value = Hints;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Hints, A::Error> {
                Ok(Hints(map.size_hint(), 0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Hints, A::Error> {
                Ok(Hints(seq.size_hint(), 1))
            }
        }
        let hints = deserializer.deserialize_map(Probe)?;
        Ok(MapHints(hints))
    }
}

#[test]
fn visitors_see_the_same_capped_size_hints() {
    for (len, count) in [(0, 0), (3, 3), (3, 2), (2000, 2000), (2000, 10), (100_000, 100_000)] {
        let bytes = seq_bytes(len, &[1], count);
        same_as!(&bytes; Hints, MapHints, (u8, u8, u8));
        let bytes = seq_bytes(len, &[1, 1], count);
        same_as!(&bytes; MapHints, BTreeMap<u8, u8>, Fixed<u8, u8>);
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
    Pair(Box<Tree>, u8),
    Named { child: Box<Tree> },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Nest(Vec<Nest>);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Chain(Option<Box<Chain>>);

#[test]
fn deep_nesting_meets_the_depth_limit_at_the_same_level() {
    for n in [0, 1, 2, 3, 5, 30, 31, 32, 33, 62, 63, 64, 65, 100, 10_000] {
        for variant in [1u8, 2, 3] {
            let mut bytes = vec![variant; n];
            bytes.push(0);
            if variant == 2 {
                bytes.extend(std::iter::repeat_n(9, n));
            }
            for depth in [0, 1, 2, 3, 63, 64, 65] {
                let _ = same_at::<Tree>(&bytes, depth, u64::MAX);
                let _ = same_at::<Nest>(&bytes, depth, u64::MAX);
                let _ = same_at::<Chain>(&bytes, depth, u64::MAX);
                let _ = same_at::<Option<Vec<Option<Vec<u8>>>>>(&bytes, depth, u64::MAX);
            }
            let _ = same_at::<Tree>(&bytes, 64, 400);
        }
    }
    let mut bytes = vec![1u8; 1_000_000];
    bytes.push(0);
    let (outcome, _) = same_at::<Tree>(&bytes, 64, u64::MAX);
    assert_eq!(outcome.unwrap_err(), DecodeError::TooDeep { limit: 64 });
}

#[test]
fn what_postcard_will_not_decode_is_refused_alike() {
    #[derive(Deserialize, Debug)]
    #[serde(untagged)]
    #[allow(dead_code, reason = "never decoded")]
    enum Untagged {
        _A(u8),
        _B(String),
    }
    same_as!(&[1, 2]; IgnoredAny, Untagged, Option<IgnoredAny>, Vec<IgnoredAny>);
}

#[test]
fn every_wire_message_and_the_hello() {
    for message in wire_messages() {
        round_trip!(Message, message);
    }
    let hello =
        Hello { magic: MAGIC, version: PROTOCOL_VERSION, limits: Limits::default(), offers_bootstrap: true, nonce: 1 };
    round_trip!(Hello, hello);
}

/// Decodes `bytes` as each of a set of types.
fn as_many_types(bytes: &[u8]) {
    same_as!(bytes; Message, Hello, Kinds, Vec<Kinds>, Outer<'_>, Tree, Option<(u16, String)>);
    same_as!(bytes; BTreeMap<u8, Vec<i64>>, (bool, f32, i128, char), Lenient, Hints, Result<Chain, Nest>);
    same_as!(bytes; Option<Box<Shrunk>>, (u8, Box<Shrunk>), Vec<Option<Shrunk>>, BTreeMap<(), u32>);
}

#[test]
fn pseudo_random_bytes_decode_alike() {
    let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
    for _ in 0..1500 {
        let len = (rng.next() % 48) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| match rng.next() % 4 {
                // Small bytes are valid tags, lengths and indexes more often.
                0 | 1 => (rng.next() % 4) as u8,
                _ => rng.next() as u8,
            })
            .collect();
        as_many_types(&bytes);
    }
}

#[test]
fn mutated_valid_encodings_decode_alike() {
    let mut rng = Xorshift(0xdead_beef);
    let mut valid: Vec<Vec<u8>> = wire_messages().iter().map(|m| postcard::to_stdvec(m).unwrap()).collect();
    valid.extend(kinds().iter().map(|k| postcard::to_stdvec(k).unwrap()));
    valid.extend((0..4).map(|id| postcard::to_stdvec(&outer(id)).unwrap()));
    for original in &valid {
        for _ in 0..40 {
            let mut bytes = original.clone();
            for _ in 0..=(rng.next() % 3) {
                let at = (rng.next() as usize) % bytes.len().max(1);
                match rng.next() % 4 {
                    0 if !bytes.is_empty() => bytes[at] = rng.next() as u8,
                    1 if !bytes.is_empty() => bytes[at] ^= 1 << (rng.next() % 8),
                    2 if !bytes.is_empty() => drop(bytes.remove(at)),
                    _ => bytes.insert(at.min(bytes.len()), rng.spread() as u8),
                }
            }
            as_many_types(&bytes);
        }
    }
}
