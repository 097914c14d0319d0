//! `to_bytes_mut` against postcard itself: the same bytes for every kind of
//! value, and the same failures.

use super::*;
use crate::wire::{frame, CapDescriptor, Hello, Limits, Message, Target, Window, MAGIC, PROTOCOL_VERSION};
use crate::RpcError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serializer};
use std::collections::BTreeMap;
use std::fmt::Debug;

/// Bytes already in the buffer before the value: encoding appends.
const PREFIX: &[u8] = b"head";

/// Our bytes for `value`, appended after [`PREFIX`] to a buffer that starts
/// with `capacity` bytes of room (so every growth path is taken somewhere).
fn ours_with_capacity<T: Serialize + ?Sized>(value: &T, capacity: usize) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(capacity);
    out.extend_from_slice(PREFIX);
    to_bytes_mut(value, &mut out).expect("our encoder encodes");
    assert_eq!(&out[..PREFIX.len()], PREFIX, "the bytes already there are kept");
    out[PREFIX.len()..].to_vec()
}

/// Asserts our bytes equal postcard's at several starting capacities; returns them.
fn assert_same_bytes<T: Serialize + Debug + ?Sized>(value: &T) -> Vec<u8> {
    let expected = postcard::to_stdvec(value).expect("postcard encodes");
    for capacity in [0, PREFIX.len(), PREFIX.len() + 1, PREFIX.len() + 3, 64, 4096] {
        let ours = ours_with_capacity(value, capacity);
        assert_eq!(ours, expected, "{value:?} (starting capacity {capacity})");
    }
    expected
}

/// Same bytes as postcard, and postcard decodes them back to `value`.
fn assert_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let bytes = assert_same_bytes(value);
    let back: T = postcard::from_bytes(&bytes).expect("postcard decodes our bytes");
    assert_eq!(&back, value);
}

/// Powers of two and their neighbours, positive and negative: every varint
/// length boundary and every zigzag boundary of every width.
fn boundary_candidates() -> Vec<i128> {
    let mut values = vec![0, 1, -1, 63, 64, -64, -65, 127, 128, 255, 256, 16383, 16384, -8192, -8193];
    for bit in 0..127 {
        let power = 1i128 << bit;
        values.extend([power - 1, power, power + 1, -power, -power - 1, -power + 1]);
    }
    values.extend([i128::MAX, i128::MIN]);
    values
}

macro_rules! sweep_integers {
    ($($ty:ty),*) => {$(
        let mut count = 0;
        for value in boundary_candidates().into_iter().filter_map(|c| <$ty>::try_from(c).ok()) {
            assert_round_trip(&value);
            count += 1;
        }
        assert_round_trip(&<$ty>::MIN);
        assert_round_trip(&<$ty>::MAX);
        assert!(count > 8, "{} values of {}", count, stringify!($ty));
    )*};
}

#[test]
fn integers_of_every_width_at_their_boundaries() {
    sweep_integers!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
    assert_round_trip(&u128::MAX);
    assert_round_trip(&(u128::MAX - 1));
    // A few known encodings, in case postcard and we agreed on something wrong.
    assert_eq!(assert_same_bytes(&300u32), [0xac, 0x02]);
    assert_eq!(assert_same_bytes(&-1i32), [0x01]);
    assert_eq!(assert_same_bytes(&u64::MAX), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(assert_same_bytes(&-2i8), [0xfe]);
}

#[test]
fn bools_floats_and_chars() {
    assert_round_trip(&true);
    assert_round_trip(&false);
    for value in [0.0f32, -0.0, 1.5, -3.25e-7, f32::MIN_POSITIVE, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY]
    {
        assert_round_trip(&value);
    }
    for value in [0.0f64, -0.0, 1.5, -3.25e-300, f64::MIN_POSITIVE, f64::MAX, f64::INFINITY, f64::NEG_INFINITY] {
        assert_round_trip(&value);
    }
    // NaN and the sign of zero: compared as bits, NaN != NaN.
    for bits in [f32::NAN.to_bits(), 0x7fc0_0001, 0xffff_ffff, (-0.0f32).to_bits()] {
        let bytes = assert_same_bytes(&f32::from_bits(bits));
        assert_eq!(postcard::from_bytes::<f32>(&bytes).unwrap().to_bits(), bits);
    }
    for bits in [f64::NAN.to_bits(), 0x7ff8_0000_0000_0001, (-0.0f64).to_bits()] {
        let bytes = assert_same_bytes(&f64::from_bits(bits));
        assert_eq!(postcard::from_bytes::<f64>(&bytes).unwrap().to_bits(), bits);
    }
    for value in ['a', '\0', '\u{7f}', 'é', '€', '😀', char::MAX] {
        assert_round_trip(&value);
    }
}

/// A byte string serialized with `serialize_bytes` (what `serde_bytes` does).
#[derive(Debug, PartialEq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // postcard writes a byte string exactly like a `Vec<u8>`.
        Vec::<u8>::deserialize(deserializer).map(Blob)
    }
}

#[test]
fn strings_and_byte_strings_of_every_length_class() {
    for len in [0, 1, 127, 128, 200, 16383, 16384, 70_000] {
        let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        assert_round_trip(&text);
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        assert_round_trip(&Blob(bytes.clone()));
        assert_round_trip(&bytes);
    }
    assert_round_trip(&"ünïcödé 😀 text".to_string());
    assert_eq!(assert_same_bytes(&Blob(vec![9, 8, 7])), [3, 9, 8, 7]);
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Inner {
    id: u64,
    name: String,
    tags: Vec<i16>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Outer {
    inner: Inner,
    maybe: Option<Inner>,
    boxed: Box<Option<u32>>,
    pair: (u8, i64),
    unit: (),
    marker: Marker,
    wrapped: Wrapped,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct Marker;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct Wrapped(pub(crate) u32);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct Triple(pub(crate) u8, pub(crate) String, pub(crate) i32);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Kinds {
    Unit,
    Newtype(u32),
    Tuple(i16, String),
    Struct { a: u64, b: Option<bool> },
    Nested(Box<Kinds>),
    Wide(u128, i128),
}

fn inner(id: u64) -> Inner {
    Inner { id, name: format!("inner {id}"), tags: vec![-1, 0, 300, i16::MIN] }
}

#[test]
fn options_structs_enums_and_units() {
    assert_round_trip(&None::<u32>);
    assert_round_trip(&Some(0u32));
    assert_round_trip(&Some(Some(-5i64)));
    assert_round_trip(&());
    assert_round_trip(&Marker);
    assert_round_trip(&Wrapped(u32::MAX));
    assert_round_trip(&Triple(1, "two".into(), -3));
    assert_round_trip(&Box::new(inner(9)));
    let outer = Outer {
        inner: inner(1),
        maybe: Some(inner(u64::MAX)),
        boxed: Box::new(Some(128)),
        pair: (255, i64::MIN),
        unit: (),
        marker: Marker,
        wrapped: Wrapped(16384),
    };
    assert_round_trip(&outer);
    assert_round_trip(&Outer { maybe: None, boxed: Box::new(None), ..outer });
    for value in [
        Kinds::Unit,
        Kinds::Newtype(128),
        Kinds::Tuple(-129, "t".into()),
        Kinds::Struct { a: 1 << 40, b: Some(true) },
        Kinds::Struct { a: 0, b: None },
        Kinds::Nested(Box::new(Kinds::Nested(Box::new(Kinds::Newtype(7))))),
        Kinds::Wide(u128::MAX, i128::MIN),
    ] {
        assert_round_trip(&value);
    }
    assert_eq!(assert_same_bytes(&Kinds::Newtype(128)), [1, 0x80, 0x01]);
}

/// A variant index past one varint byte (derive cannot make one this big).
struct FarVariant(u32);

impl Serialize for FarVariant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit_variant("FarVariant", self.0, "far")
    }
}

impl Debug for FarVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FarVariant({})", self.0)
    }
}

#[test]
fn large_variant_indexes() {
    for index in [127, 128, 300, 16384, u32::MAX] {
        assert_same_bytes(&FarVariant(index));
    }
}

#[test]
fn sequences_maps_and_tuples() {
    let nested: Vec<Vec<u32>> = vec![vec![], vec![1], vec![128, 16384, u32::MAX], (0..200).collect()];
    assert_round_trip(&nested);
    assert_round_trip(&Vec::<Vec<u32>>::new());
    let long: Vec<u64> = (0..300).map(|i| i * i * i).collect();
    assert_round_trip(&long);
    let map: BTreeMap<String, Vec<i8>> =
        (0..150).map(|i| (format!("key {i}"), vec![i as i8, (i as i8).wrapping_neg()])).collect();
    assert_round_trip(&map);
    assert_round_trip(&BTreeMap::<u32, ()>::new());
    assert_round_trip(&(1u8, -2i16, 3u32, "four".to_string(), Some(5.0f64), [6u16; 3]));
    assert_round_trip(&[[1u8; 4]; 2]);
    assert_round_trip(&vec![Kinds::Unit, Kinds::Newtype(1), Kinds::Tuple(2, "3".into())]);
}

/// A value shown through `collect_str`, as types without a `Serialize` of
/// their own often are.
struct Shown(String);

impl Serialize for Shown {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("<{}>", self.0))
    }
}

impl Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shown({} bytes)", self.0.len())
    }
}

#[test]
fn collect_str_writes_a_string_at_every_length_class() {
    for len in [0, 1, 125, 126, 127, 128, 500, 16381, 16382, 16383, 70_000] {
        let text = "x".repeat(len);
        let bytes = assert_same_bytes(&Shown(text.clone()));
        assert_eq!(postcard::from_bytes::<String>(&bytes).unwrap(), format!("<{text}>"));
    }
}

/// A `Display` that fails.
struct Broken;

impl fmt::Display for Broken {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Err(fmt::Error)
    }
}

#[test]
fn a_failing_display_in_collect_str_is_an_error_and_writes_nothing() {
    struct ShowsBroken;
    impl Serialize for ShowsBroken {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&Broken)
        }
    }
    let mut out = BytesMut::from(PREFIX);
    let err = to_bytes_mut(&ShowsBroken, &mut out).unwrap_err();
    assert!(err.to_string().contains("collect_str"), "{err}");
    assert_eq!(&out[..], PREFIX);
    assert!(postcard::to_stdvec(&ShowsBroken).is_err());
}

/// Serializes some fields, then fails with a message of its own.
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let mut fields = serializer.serialize_struct("Refuses", 2)?;
        fields.serialize_field("ok", &7u32)?;
        Err(S::Error::custom(format!("refused field number {}", 2)))
    }
}

#[test]
fn a_custom_error_keeps_its_message() {
    let err = to_bytes_mut(&Refuses, &mut BytesMut::new()).unwrap_err();
    assert_eq!(err.to_string(), "refused field number 2");
    assert!(postcard::to_stdvec(&Refuses).is_err(), "postcard refuses it too");
    // Inside a larger value, the error comes out unchanged.
    let err = to_bytes_mut(&(1u8, vec![Some(Refuses)]), &mut BytesMut::new()).unwrap_err();
    assert_eq!(err.to_string(), "refused field number 2");
}

/// A sequence or map built from an iterator whose length is not known.
struct Unsized {
    map: bool,
}

impl Serialize for Unsized {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let evens = (0u32..10).filter(|n| n % 2 == 0);
        if self.map {
            serializer.collect_map(evens.map(|n| (n, n)))
        } else {
            serializer.collect_seq(evens)
        }
    }
}

#[test]
fn a_sequence_or_map_of_unknown_length_is_refused_like_postcard_does() {
    for map in [false, true] {
        let err = to_bytes_mut(&Unsized { map }, &mut BytesMut::new()).unwrap_err();
        let theirs = postcard::to_stdvec(&Unsized { map }).unwrap_err();
        assert_eq!(theirs, postcard::Error::SerializeSeqLengthUnknown);
        assert_eq!(err.to_string(), theirs.to_string());
    }
    // With a known length the same items encode.
    assert_same_bytes(&(0u32..10).filter(|n| n % 2 == 0).collect::<Vec<_>>());
}

#[test]
fn a_frame_whose_header_fails_leaves_the_buffer_as_it_was() {
    let mut out = BytesMut::from(PREFIX);
    let err = frame::encode(&mut out, &Refuses, b"trailer").unwrap_err();
    assert!(err.to_string().contains("refused field number 2"), "{err}");
    assert_eq!(&out[..], PREFIX);
}

fn window(capacity: u32, batch: u32) -> Window {
    Window { capacity, batch }
}

pub(crate) fn wire_messages() -> Vec<Message> {
    let caps = vec![
        CapDescriptor::SenderHosted(0),
        CapDescriptor::ReceiverHosted(200),
        CapDescriptor::ReceiverAnswer { question: 1 << 20, cap: 3 },
        CapDescriptor::SequenceReader { stream: 5, window: window(64, 16) },
        CapDescriptor::SequenceWriter { stream: 6, window: window(1, 1) },
        CapDescriptor::BytesReader { stream: 7, window: window(1 << 20, 65536) },
        CapDescriptor::BytesWriter { stream: u32::MAX, window: window(0, 0) },
    ];
    vec![
        Message::Call {
            question: 7,
            target: Target::Export(0),
            interface: 0xdead_beef_cafe_f00d,
            method: 3,
            caps: vec![],
        },
        Message::Call {
            question: 128,
            target: Target::Answer { question: 3, cap: 130 },
            interface: 1,
            method: 300,
            caps: caps.clone(),
        },
        Message::Return { question: 9, result: Ok(caps.clone()) },
        Message::Return { question: 10, result: Err(RpcError::protocol("window exceeded")) },
        Message::Return { question: 11, result: Err(RpcError::application_encoded("E".into(), vec![1, 2, 3])) },
        Message::Finish { question: u32::MAX },
        Message::Release { export: 4, count: 1000 },
        Message::Disembargo { target: Target::Answer { question: 2, cap: 0 }, id: 17 },
        Message::DisembargoReply { id: 17 },
        Message::Ping(u64::MAX),
        Message::Pong(0),
        Message::Abort(RpcError::limit("too many calls in flight (max 4)")),
        Message::StreamData { stream: 3, count: 0, item_caps: vec![], caps: vec![], item_lens: vec![] },
        Message::StreamData {
            stream: 3,
            count: 5,
            item_caps: vec![0, 2, 0, 0, 1],
            caps: caps[3..6].to_vec(),
            item_lens: vec![14, 0, 127, 128, 70_000],
        },
        Message::StreamData {
            stream: 8,
            count: 200,
            item_caps: vec![],
            caps: vec![],
            item_lens: (0..200).map(|i| 10 + i * 3).collect(),
        },
        Message::StreamWindow { stream: 3, read: 1 << 40, window: window(256, 32) },
        Message::StreamEnd { stream: 3, error: None },
        Message::StreamEnd { stream: 3, error: Some(RpcError::aborted("the producer went away")) },
        Message::StreamAbort { stream: 12 },
        Message::StreamCancel { stream: 12, reason: None },
        Message::StreamCancel { stream: 12, reason: Some("enough".into()) },
        Message::StreamPart { stream: 99 },
    ]
}

#[test]
fn wire_messages_and_the_hello_match_postcard() {
    for message in wire_messages() {
        assert_round_trip(&message);
        // Through the framing too: a frame's body is postcard's header bytes
        // followed by the trailer.
        let mut out = BytesMut::new();
        frame::encode(&mut out, &message, b"payload").unwrap();
        let mut expected = postcard::to_stdvec(&message).unwrap();
        expected.extend_from_slice(b"payload");
        let body = frame::decode(&mut out, u32::MAX).unwrap().expect("a whole frame");
        assert_eq!(&body[..], &expected[..], "{message:?}");
    }
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        limits: Limits::default(),
        offers_bootstrap: true,
        nonce: 1 << 63,
    };
    assert_round_trip(&hello);
}

/// Xorshift64: a fixed-seed, dependency-free source of varied values.
pub(crate) struct Xorshift(pub(crate) u64);

impl Xorshift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value of any magnitude: random bits shifted down by a random amount,
    /// so every varint length turns up.
    pub(crate) fn spread(&mut self) -> u64 {
        let shift = self.next() % 64;
        self.next() >> shift
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Mixed {
    a: u8,
    b: i8,
    c: u16,
    d: i16,
    e: u32,
    f: i32,
    g: u64,
    h: i64,
    i: u128,
    j: i128,
    k: bool,
    l: char,
    m: String,
    n: Option<u32>,
    o: Vec<u16>,
    p: Kinds,
    q: f64,
}

fn mixed(rng: &mut Xorshift) -> Mixed {
    let wide = (u128::from(rng.spread()) << (rng.next() % 65)) | u128::from(rng.next());
    Mixed {
        a: rng.spread() as u8,
        b: rng.spread() as i8,
        c: rng.spread() as u16,
        d: rng.spread() as i16,
        e: rng.spread() as u32,
        f: rng.spread() as i32,
        g: rng.spread(),
        h: rng.spread() as i64,
        i: wide,
        j: wide as i128,
        k: rng.next().is_multiple_of(2),
        l: char::from_u32((rng.spread() % 0x11_0000) as u32).unwrap_or('?'),
        m: (0..rng.next() % 40).map(|_| char::from(b' ' + (rng.next() % 95) as u8)).collect(),
        n: (rng.next().is_multiple_of(2)).then(|| rng.spread() as u32),
        o: (0..rng.next() % 10).map(|_| rng.spread() as u16).collect(),
        p: match rng.next() % 4 {
            0 => Kinds::Unit,
            1 => Kinds::Newtype(rng.spread() as u32),
            2 => Kinds::Tuple(rng.spread() as i16, "x".repeat((rng.next() % 200) as usize)),
            _ => Kinds::Struct { a: rng.spread(), b: (rng.next().is_multiple_of(2)).then_some(true) },
        },
        q: f64::from_bits(rng.next()),
    }
}

#[test]
fn pseudo_random_values_match_postcard() {
    let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
    for _ in 0..400 {
        let mut value = mixed(&mut rng);
        let bytes = assert_same_bytes(&value);
        let mut back: Mixed = postcard::from_bytes(&bytes).expect("decodes");
        // `q` may be NaN, which equals nothing: compared as bits.
        assert_eq!(back.q.to_bits(), value.q.to_bits());
        (back.q, value.q) = (0.0, 0.0);
        assert_eq!(back, value);
        for _ in 0..2 {
            let raw = rng.spread();
            assert_round_trip(&(raw, raw as i64, raw as u32, raw as i32, raw as u16, raw as i16));
        }
    }
}
