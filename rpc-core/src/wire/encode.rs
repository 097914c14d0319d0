//! A serde serializer writing the postcard format straight into a `BytesMut`.
//!
//! The output is byte for byte what postcard 1.1 produces (peers decode it
//! with postcard), but it is written with fewer steps: postcard encodes each
//! varint into a stack buffer and hands the slice to its output flavor, which
//! copies it again; here a varint is written in place into the buffer's spare
//! capacity (one capacity check, one length update), and a byte slice or
//! string is one `extend_from_slice`.
//!
//! The format, for reference: unsigned integers wider than a byte are LEB128
//! varints, signed ones zigzag-encoded first; `u8`, `i8` and `bool` are one
//! byte; floats are little-endian; strings, byte strings, sequences and maps
//! carry a varint length first (a sequence or map of unknown length is an
//! error); an `Option` is a 0 or 1 byte before the value; an enum variant is
//! its varint index before its fields; units write nothing; tuples and
//! structs are their fields in order.

use std::fmt;

use bytes::BytesMut;
use serde::{ser, Serialize};

/// Why a value could not be encoded, with a readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EncodeError(String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

/// The message postcard gives for a sequence or map without a known length.
const UNKNOWN_LENGTH: &str = "The length of a sequence must be known";

/// Appends the postcard encoding of `value` to `out`.
///
/// # Errors
///
/// What the value's `Serialize` impl reports, or a sequence or map whose
/// length is not known up front. `out` may then hold part of the value: the
/// caller truncates it back.
#[inline]
pub(crate) fn to_bytes_mut<T: Serialize + ?Sized>(value: &T, out: &mut BytesMut) -> Result<(), EncodeError> {
    value.serialize(&mut Encoder { out })
}

/// Bytes a LEB128 `u64` takes at most.
const MAX_VARINT_U64: usize = 10;
/// Spare room reserved whenever the buffer runs out, so that small writes
/// that follow find room without growing it again.
const MIN_GROWTH: usize = 64;

/// The serializer: `&mut Encoder` implements [`ser::Serializer`].
struct Encoder<'a> {
    out: &'a mut BytesMut,
}

impl Encoder<'_> {
    /// Makes sure at least `n` bytes of spare capacity are there.
    #[inline(always)]
    fn room(&mut self, n: usize) {
        if self.out.capacity() - self.out.len() < n {
            self.out.reserve(n.max(MIN_GROWTH));
        }
    }

    #[inline(always)]
    fn push_byte(&mut self, byte: u8) {
        self.room(1);
        let len = self.out.len();
        self.out.spare_capacity_mut()[0].write(byte);
        // SAFETY: the byte at `len` was just initialized, within capacity.
        unsafe { self.out.set_len(len + 1) };
    }

    #[inline(always)]
    fn push_slice(&mut self, bytes: &[u8]) {
        self.room(bytes.len());
        self.out.extend_from_slice(bytes);
    }

    /// A LEB128 varint, written in place: seven bits a byte, low bits first,
    /// the top bit set on every byte but the last.
    #[inline(always)]
    fn push_varint(&mut self, mut value: u64) {
        self.room(MAX_VARINT_U64);
        let len = self.out.len();
        let spare = &mut self.out.spare_capacity_mut()[..MAX_VARINT_U64];
        let mut used = 0;
        for slot in spare.iter_mut() {
            used += 1;
            if value < 0x80 {
                slot.write(value as u8);
                break;
            }
            slot.write(value as u8 | 0x80);
            value >>= 7;
        }
        // SAFETY: the `used` bytes from `len` were just initialized, within capacity.
        unsafe { self.out.set_len(len + used) };
    }

    /// [`Self::push_varint`] for 128-bit values (up to 19 bytes): seven
    /// bits at a time while the value does not fit a `u64`, then the rest
    /// as a `u64` varint (the same bytes).
    fn push_varint_u128(&mut self, mut value: u128) {
        while value > u128::from(u64::MAX) {
            self.push_byte(value as u8 | 0x80);
            value >>= 7;
        }
        self.push_varint(value as u64);
    }

    #[inline(always)]
    fn push_len(&mut self, len: usize) {
        self.push_varint(len as u64);
    }

    /// Formats `value` as a length-prefixed string, formatting it once: the
    /// text goes after a one-byte length slot, which grows (moving the text
    /// up) when the text turns out longer than 127 bytes.
    fn push_display<T: fmt::Display + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        let start = self.out.len();
        self.push_byte(0);
        let text_start = self.out.len();
        if fmt::write(&mut Text(self.out), format_args!("{value}")).is_err() {
            self.out.truncate(start);
            return Err(EncodeError("Error while processing `collect_str` during serialization".into()));
        }
        let text_len = self.out.len() - text_start;
        let prefix_len = varint_len(text_len as u64);
        if prefix_len > 1 {
            self.push_slice(&[0; MAX_VARINT_U64][..prefix_len - 1]);
            self.out.copy_within(text_start..text_start + text_len, start + prefix_len);
        }
        let mut rest = text_len;
        for slot in &mut self.out[start..start + prefix_len] {
            *slot = if rest < 0x80 { rest as u8 } else { rest as u8 | 0x80 };
            rest >>= 7;
        }
        Ok(())
    }
}

/// Bytes the LEB128 varint of `value` takes.
fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// `fmt::Write` onto the end of a buffer.
struct Text<'a>(&'a mut BytesMut);

impl fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn zigzag_i64(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn zigzag_i128(n: i128) -> u128 {
    ((n << 1) ^ (n >> 127)) as u128
}

type Done = Result<(), EncodeError>;

impl ser::Serializer for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Done {
        self.push_byte(u8::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_i8(self, v: i8) -> Done {
        self.push_byte(v as u8);
        Ok(())
    }

    // Zigzag of a narrower signed value equals zigzag of it widened, so one
    // 64-bit path serves i16, i32 and i64.
    #[inline]
    fn serialize_i16(self, v: i16) -> Done {
        self.push_varint(zigzag_i64(i64::from(v)));
        Ok(())
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Done {
        self.push_varint(zigzag_i64(i64::from(v)));
        Ok(())
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Done {
        self.push_varint(zigzag_i64(v));
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Done {
        self.push_varint_u128(zigzag_i128(v));
        Ok(())
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Done {
        self.push_byte(v);
        Ok(())
    }

    #[inline]
    fn serialize_u16(self, v: u16) -> Done {
        self.push_varint(u64::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_u32(self, v: u32) -> Done {
        self.push_varint(u64::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Done {
        self.push_varint(v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Done {
        self.push_varint_u128(v);
        Ok(())
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Done {
        self.push_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Done {
        self.push_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Done {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Done {
        self.serialize_bytes(v.as_bytes())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Done {
        self.room(MAX_VARINT_U64 + v.len());
        self.push_len(v.len());
        self.out.extend_from_slice(v);
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Done {
        self.push_byte(0);
        Ok(())
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Done {
        self.push_byte(1);
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Done {
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Done {
        Ok(())
    }

    #[inline]
    fn serialize_unit_variant(self, _name: &'static str, index: u32, _variant: &'static str) -> Done {
        self.push_varint(u64::from(index));
        Ok(())
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Done {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Done {
        self.push_varint(u64::from(index));
        value.serialize(self)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, EncodeError> {
        self.push_len(len.ok_or_else(|| EncodeError(UNKNOWN_LENGTH.into()))?);
        Ok(self)
    }

    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, EncodeError> {
        self.push_varint(u64::from(index));
        Ok(self)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self, EncodeError> {
        self.push_len(len.ok_or_else(|| EncodeError(UNKNOWN_LENGTH.into()))?);
        Ok(self)
    }

    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, EncodeError> {
        self.push_varint(u64::from(index));
        Ok(self)
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Done {
        self.push_display(value)
    }
}

/// The compound serializers: every element or field is just the next value.
macro_rules! compound {
    ($trait:ident, $method:ident $(, $key:ty)?) => {
        impl ser::$trait for &mut Encoder<'_> {
            type Ok = ();
            type Error = EncodeError;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, $(_key: $key,)? value: &T) -> Done {
                value.serialize(&mut **self)
            }

            #[inline]
            fn end(self) -> Done {
                Ok(())
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);
compound!(SerializeStruct, serialize_field, &'static str);
compound!(SerializeStructVariant, serialize_field, &'static str);

impl ser::SerializeMap for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Done {
        key.serialize(&mut **self)
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(&mut **self)
    }

    #[inline]
    fn end(self) -> Done {
        Ok(())
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
pub(super) mod tests;
