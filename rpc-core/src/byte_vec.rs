//! `Vec<u8>` at the top of a call, decoded in one copy.
//!
//! Serde hands a `Vec<u8>` over one element at a time: a 64-byte argument
//! costs 64 trips through the depth- and budget-limited decoder (about a
//! third of a small call's instructions). In postcard a byte string and a
//! sequence of `u8` are the same bytes (a varint length, then the bytes), so
//! the generated code sends a `Vec<u8>` argument as a [`ByteVec`] and a
//! promise of a `Vec<u8>` result decodes it as one: same wire, one copy.
//! A `Vec<u8>` inside your own types still goes element by element; mark it
//! `#[serde(with = "serde_bytes")]` (or use `bytes::Bytes`) to get the same.

use std::any::{Any, TypeId};
use std::fmt;

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::payload::Payload;
use crate::RpcError;

/// A `Vec<u8>` that serializes as a byte string: on the wire (postcard) the
/// same bytes as the `Vec<u8>` it holds. Generated code wraps `Vec<u8>`
/// arguments in it; it is not meant to be named by hand.
///
/// # Examples
///
/// ```
/// use rpc_core::__private::ByteVec;
///
/// let wrapped = ByteVec(vec![1, 2, 3]);
/// assert_eq!(wrapped.0, [1, 2, 3]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByteVec(pub Vec<u8>);

impl Serialize for ByteVec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteVec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(ByteVecVisitor)
    }
}

struct ByteVecVisitor;

impl<'de> Visitor<'de> for ByteVecVisitor {
    type Value = ByteVec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<ByteVec, E> {
        Ok(ByteVec(bytes.to_vec()))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<ByteVec, E> {
        Ok(ByteVec(bytes))
    }

    // A format that hands bytes over as a sequence (not postcard) still works.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteVec, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(ByteVec(bytes))
    }
}

/// Decodes a call's result: a `Vec<u8>` as a [`ByteVec`], anything else as itself.
pub(crate) fn decode_result<T: DeserializeOwned + 'static>(payload: &Payload) -> Result<T, RpcError> {
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        let mut decoded = Some(payload.decode::<ByteVec>()?.0);
        // `T` is `Vec<u8>`: the downcast cannot fail.
        if let Some(value) = (&mut decoded as &mut dyn Any).downcast_mut::<Option<T>>().and_then(Option::take) {
            return Ok(value);
        }
    }
    payload.decode::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_vec_is_the_same_bytes_as_a_vec_of_u8() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let as_seq = postcard::to_stdvec(&data).expect("encode");
            let as_bytes = postcard::to_stdvec(&ByteVec(data.clone())).expect("encode");
            assert_eq!(as_seq, as_bytes, "length {len}");
            let back: ByteVec = postcard::from_bytes(&as_seq).expect("decode");
            assert_eq!(back.0, data);
            let back: Vec<u8> = postcard::from_bytes(&as_bytes).expect("decode");
            assert_eq!(back, data);
        }
    }

    #[test]
    fn a_result_of_vec_u8_decodes_through_the_byte_path_and_others_as_themselves() {
        let payload = Payload::encode(&vec![5u8, 6, 7]).expect("encode");
        assert_eq!(decode_result::<Vec<u8>>(&payload).expect("decode"), vec![5, 6, 7]);
        let payload = Payload::encode(&(1u32, "two".to_string())).expect("encode");
        assert_eq!(decode_result::<(u32, String)>(&payload).expect("decode"), (1, "two".to_string()));
        // A length past the end fails on the byte path as on the element path.
        let payload = Payload::encode(&300u32).expect("encode");
        assert!(payload.decode::<Vec<u8>>().is_err());
        assert!(decode_result::<Vec<u8>>(&payload).is_err());
    }
}
