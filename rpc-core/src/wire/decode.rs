//! A serde deserializer reading the postcard format straight from a byte
//! slice, with the nesting-depth limit and the decoded-size budget built in.
//!
//! It accepts exactly what postcard 1.1 accepts and fails where postcard
//! fails, with the same [`postcard::Error`]; on top of that it charges and
//! counts exactly as the [depth module](super::depth) describes, at the same
//! points (a value is charged after its bytes are read, before its visitor
//! sees it; a compound value enters its level after its charge). Doing both
//! in one deserializer saves the layers a wrapping adapter needs: no visitor
//! wrapper per value, no shared `Cell` per charge, and a struct's scalar
//! fields (prepaid by the struct) cost nothing beyond reading them.
//!
//! The format, for reference: unsigned integers wider than a byte are LEB128
//! varints (at most as many bytes as the width needs, the last one within the
//! width; longer-than-needed encodings of small values are accepted), signed
//! ones zigzag-encoded first; `u8`, `i8` and `bool` are one byte (a `bool`
//! byte is 0 or 1); floats are little-endian; a `char` is a string of at most
//! 4 bytes whose first character is taken; strings and byte strings carry a
//! varint length; an `Option` is a 0 or 1 byte before the value; an enum is
//! its variant's varint `u32` index before its fields; sequences and maps
//! carry a varint length; tuples and structs are their fields in order;
//! units are nothing. `deserialize_any`, `deserialize_identifier` and
//! `deserialize_ignored_any` are refused (`WontImplement`): the format is
//! not self-describing.

use std::mem::size_of;

use postcard::Error;
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

use super::depth::{element_cost, DecodeError, MAX_HINT};

type Result<T> = std::result::Result<T, Error>;

/// Decodes a `T` from the front of `bytes` within `max_depth` levels and
/// `max_size` decoded bytes; returns it and the bytes after it.
#[inline]
pub(crate) fn from_bytes<'de, T: de::Deserialize<'de>>(
    bytes: &'de [u8],
    max_depth: u32,
    max_size: u64,
) -> std::result::Result<(T, &'de [u8]), DecodeError> {
    Decoder::new(bytes, max_depth, max_size).decode()
}

/// The decoder's state: the bytes not read yet and the budget.
pub(crate) struct Decoder<'de> {
    input: &'de [u8],
    /// Bytes the budget has left: one comparison a charge, no overflow.
    left: u64,
    limit: u64,
    max_depth: u32,
    /// Levels left below the value being decoded: lowered on entering a
    /// compound value's contents, raised again on leaving them.
    depth: u32,
    /// Set when a charge failed: what the decode would have used.
    exceeded: Option<u64>,
    /// Set when the depth limit was hit.
    too_deep: bool,
}

impl<'de> Decoder<'de> {
    pub(crate) fn new(input: &'de [u8], max_depth: u32, limit: u64) -> Self {
        Decoder { input, left: limit, limit, max_depth, depth: max_depth, exceeded: None, too_deep: false }
    }

    /// Decodes one `T`; returns it and the bytes after it.
    #[inline]
    pub(crate) fn decode<T: de::Deserialize<'de>>(&mut self) -> std::result::Result<(T, &'de [u8]), DecodeError> {
        match T::deserialize(Value { de: self, prepaid: 0 }) {
            Ok(value) => Ok((value, self.input)),
            Err(e) => Err(self.failure(e)),
        }
    }

    /// Bytes charged so far.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.limit - self.left
    }

    /// Why the decode failed: a limit if one was hit, else the bytes.
    #[cold]
    fn failure(&self, error: Error) -> DecodeError {
        if let Some(needed) = self.exceeded {
            DecodeError::TooLarge { limit: self.limit, needed }
        } else if self.too_deep {
            DecodeError::TooDeep { limit: self.max_depth }
        } else {
            DecodeError::Malformed(error)
        }
    }

    /// Charges `bytes`, or fails (charging nothing) if that would pass the limit.
    #[inline(always)]
    fn charge(&mut self, bytes: usize) -> Result<()> {
        if bytes == 0 {
            // A value whose slot its parent paid for (a struct's scalar field).
            return Ok(());
        }
        if bytes as u64 > self.left {
            return Err(self.over_budget(bytes));
        }
        self.left -= bytes as u64;
        Ok(())
    }

    #[cold]
    fn over_budget(&mut self, bytes: usize) -> Error {
        // What the decode would have used: a lower bound of the value's size.
        self.exceeded = Some((self.limit - self.left).saturating_add(bytes as u64));
        de::Error::custom("payload decodes to more than the limit (max_decoded_size)")
    }

    /// Runs `f` one level down: the contents of a compound value, whose
    /// level was checked.
    #[inline(always)]
    fn inside<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let outer = self.depth;
        self.depth = outer.saturating_sub(1);
        let result = f(self);
        self.depth = outer;
        result
    }

    #[cold]
    fn nested_too_deep(&mut self) -> Error {
        self.too_deep = true;
        de::Error::custom("payload nests deeper than the limit")
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8> {
        match self.input.split_first() {
            Some((&byte, rest)) => {
                self.input = rest;
                Ok(byte)
            }
            None => Err(Error::DeserializeUnexpectedEnd),
        }
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.input.len() {
            return Err(Error::DeserializeUnexpectedEnd);
        }
        let (taken, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(taken)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let taken = self.take(N)?;
        let mut array = [0; N];
        array.copy_from_slice(taken);
        Ok(array)
    }

    /// A varint of at most `MAX` bytes whose last byte is at most `LAST`.
    /// Inline: the loop's trip count is a constant, so it unrolls into
    /// straight-line code, a few instructions a byte, no call.
    #[inline(always)]
    fn varint<const MAX: usize, const LAST: u8>(&mut self) -> Result<u64> {
        let input = self.input;
        let mut value = 0u64;
        for i in 0..MAX {
            let Some(&byte) = input.get(i) else {
                return Err(Error::DeserializeUnexpectedEnd);
            };
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == MAX - 1 && byte > LAST {
                    return Err(Error::DeserializeBadVarint);
                }
                self.input = &input[i + 1..];
                return Ok(value);
            }
        }
        // `MAX` bytes and still no last one.
        Err(Error::DeserializeBadVarint)
    }

    // The narrower varints come back as a `u64` that fits the width; the
    // caller narrows it.

    /// A `u16` varint: at most 3 bytes, 2 bits in the last.
    #[inline(always)]
    fn varint16(&mut self) -> Result<u64> {
        self.varint::<3, 0b11>()
    }

    /// A `u32` varint: at most 5 bytes, 4 bits in the last.
    #[inline(always)]
    fn varint32(&mut self) -> Result<u64> {
        self.varint::<5, 0b1111>()
    }

    /// A `u64` varint: at most 10 bytes, 1 bit in the last.
    #[inline(always)]
    fn varint64(&mut self) -> Result<u64> {
        self.varint::<10, 0b1>()
    }

    #[inline(always)]
    fn varint_usize(&mut self) -> Result<usize> {
        #[cfg(target_pointer_width = "64")]
        return self.varint64().map(|v| v as usize);
        #[cfg(not(target_pointer_width = "64"))]
        return self.varint32().map(|v| v as usize);
    }

    /// A 128-bit varint: at most 19 bytes, 2 bits in the last.
    fn varint_u128(&mut self) -> Result<u128> {
        const MAX: usize = 19;
        let mut value = 0u128;
        for i in 0..MAX {
            let byte = self.byte()?;
            value |= u128::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == MAX - 1 && byte > 0b11 {
                    return Err(Error::DeserializeBadVarint);
                }
                return Ok(value);
            }
        }
        Err(Error::DeserializeBadVarint)
    }

    /// A length-prefixed byte string.
    #[inline(always)]
    fn prefixed(&mut self) -> Result<&'de [u8]> {
        let len = self.varint_usize()?;
        self.take(len)
    }

    /// A length-prefixed UTF-8 string.
    #[inline(always)]
    fn str(&mut self) -> Result<&'de str> {
        let bytes = self.prefixed()?;
        std::str::from_utf8(bytes).map_err(|_| Error::DeserializeBadUtf8)
    }

    /// A `char`: a string of at most 4 bytes, its first character.
    fn char(&mut self) -> Result<char> {
        let len = self.varint_usize()?;
        if len > 4 {
            return Err(Error::DeserializeBadChar);
        }
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| Error::DeserializeBadChar)?;
        text.chars().next().ok_or(Error::DeserializeBadChar)
    }
}

fn zigzag_u64(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn zigzag_u128(n: u128) -> i128 {
    ((n >> 1) as i128) ^ -((n & 1) as i128)
}

/// The deserializer of one value, whose parent already paid `prepaid` bytes
/// of it. Two words: passed in registers.
struct Value<'a, 'de> {
    de: &'a mut Decoder<'de>,
    prepaid: usize,
}

impl<'a, 'de> Value<'a, 'de> {
    /// Charges the value the visitor `V` builds, plus `extra` bytes it carries.
    #[inline(always)]
    fn charge<V: Visitor<'de>>(&mut self, extra: usize) -> Result<()> {
        self.de.charge(size_of::<V::Value>().saturating_sub(self.prepaid).saturating_add(extra))
    }

    /// Fails if no level is left for this compound value's contents.
    #[inline(always)]
    fn check_depth(&mut self) -> Result<()> {
        if self.de.depth == 0 {
            return Err(self.de.nested_too_deep());
        }
        Ok(())
    }

    /// Charges the visitor's value and checks there is a level for its contents.
    #[inline(always)]
    fn compound<V: Visitor<'de>>(&mut self) -> Result<()> {
        self.charge::<V>(0)?;
        self.check_depth()
    }

    /// The elements of a tuple or struct: `len` inline fields.
    #[inline(always)]
    fn fields<V: Visitor<'de>>(mut self, len: usize, visitor: V) -> Result<V::Value> {
        self.compound::<V>()?;
        self.de.inside(|de| visitor.visit_seq(Seq::<true> { de, len }))
    }
}

macro_rules! scalar {
    ($($method:ident => $visit:ident($read:ident $(, $convert:path)?);)*) => {$(
        #[inline(always)]
        fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
            let value = self.de.$read()?;
            self.charge::<V>(0)?;
            visitor.$visit($($convert)?(value))
        }
    )*};
}

impl<'de> Deserializer<'de> for Value<'_, 'de> {
    type Error = Error;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Error::WontImplement)
    }

    scalar! {
        deserialize_i8 => visit_i8(byte, i8_from);
        deserialize_u8 => visit_u8(byte);
        deserialize_i16 => visit_i16(varint16, i16_from);
        deserialize_i32 => visit_i32(varint32, i32_from);
        deserialize_i64 => visit_i64(varint64, zigzag_u64);
        deserialize_i128 => visit_i128(varint_u128, zigzag_u128);
        deserialize_u16 => visit_u16(varint16, u16_from);
        deserialize_u32 => visit_u32(varint32, u32_from);
        deserialize_u64 => visit_u64(varint64);
        deserialize_u128 => visit_u128(varint_u128);
        deserialize_f32 => visit_f32(array, f32::from_le_bytes);
        deserialize_f64 => visit_f64(array, f64::from_le_bytes);
        deserialize_char => visit_char(char);
    }

    #[inline(always)]
    fn deserialize_bool<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let value = match self.de.byte()? {
            0 => false,
            1 => true,
            _ => return Err(Error::DeserializeBadBool),
        };
        self.charge::<V>(0)?;
        visitor.visit_bool(value)
    }

    #[inline(always)]
    fn deserialize_str<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let text = self.de.str()?;
        self.charge::<V>(text.len())?;
        visitor.visit_borrowed_str(text)
    }

    #[inline(always)]
    fn deserialize_string<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let text = self.de.str()?;
        self.charge::<V>(text.len())?;
        visitor.visit_str(text)
    }

    #[inline(always)]
    fn deserialize_bytes<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let bytes = self.de.prefixed()?;
        self.charge::<V>(bytes.len())?;
        visitor.visit_borrowed_bytes(bytes)
    }

    #[inline(always)]
    fn deserialize_byte_buf<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let bytes = self.de.prefixed()?;
        self.charge::<V>(bytes.len())?;
        visitor.visit_bytes(bytes)
    }

    #[inline(always)]
    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.de.byte()? {
            0 => {
                self.charge::<V>(0)?;
                visitor.visit_none()
            }
            1 => {
                self.compound::<V>()?;
                // The content lives inside the option, which is paid for.
                let prepaid = size_of::<V::Value>();
                self.de.inside(|de| visitor.visit_some(Value { de, prepaid }))
            }
            _ => Err(Error::DeserializeBadOption),
        }
    }

    #[inline(always)]
    fn deserialize_unit<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        self.charge::<V>(0)?;
        visitor.visit_unit()
    }

    #[inline(always)]
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    #[inline(always)]
    fn deserialize_newtype_struct<V: Visitor<'de>>(mut self, _name: &'static str, visitor: V) -> Result<V::Value> {
        self.compound::<V>()?;
        let prepaid = size_of::<V::Value>();
        self.de.inside(|de| visitor.visit_newtype_struct(Value { de, prepaid }))
    }

    #[inline(always)]
    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let len = self.de.varint_usize()?;
        self.compound::<V>()?;
        self.de.inside(|de| visitor.visit_seq(Seq::<false> { de, len }))
    }

    #[inline(always)]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.fields(len, visitor)
    }

    #[inline(always)]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.fields(len, visitor)
    }

    #[inline(always)]
    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let len = self.de.varint_usize()?;
        self.compound::<V>()?;
        self.de.inside(|de| visitor.visit_map(Map { de, len }))
    }

    #[inline(always)]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.fields(fields.len(), visitor)
    }

    #[inline(always)]
    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        // Fail before the variant is read; the enum keeps its own level for
        // its variant's fields, which do not count a second time.
        self.compound::<V>()?;
        // The variant's contents live inside the enum, which is paid for.
        let prepaid = self.prepaid.max(size_of::<V::Value>());
        visitor.visit_enum(Enum { de: self.de, prepaid })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Error::WontImplement)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Error::WontImplement)
    }
}

fn i8_from(byte: u8) -> i8 {
    byte as i8
}

// The narrowing conversions of varints read as `u64`s that fit.

fn u16_from(n: u64) -> u16 {
    n as u16
}

fn u32_from(n: u64) -> u32 {
    n as u32
}

fn i16_from(n: u64) -> i16 {
    zigzag_u64(n) as i16
}

fn i32_from(n: u64) -> i32 {
    zigzag_u64(n) as i32
}

/// The elements of a sequence (`FIELDS` false: each is charged
/// [`element_cost`] first, the probe past the last one too) or of a tuple or
/// struct (`FIELDS` true: its `len` fields are paid for by the aggregate).
struct Seq<'a, 'de, const FIELDS: bool> {
    de: &'a mut Decoder<'de>,
    len: usize,
}

impl<'de, const FIELDS: bool> SeqAccess<'de> for Seq<'_, 'de, FIELDS> {
    type Error = Error;

    #[inline(always)]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let prepaid = if FIELDS && self.len > 0 {
            size_of::<T::Value>()
        } else {
            self.de.charge(element_cost::<T::Value>())?;
            0
        };
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed.deserialize(Value { de: &mut *self.de, prepaid }).map(Some)
    }

    // serde's default goes through `next_element_seed` too, but whether it
    // is inlined into a derived visitor (a struct's fields) was left to the
    // optimizer, which changed its mind with unrelated code: 13 more
    // instructions per small stream item in one build of the benchmark.
    #[inline(always)]
    fn next_element<T: de::Deserialize<'de>>(&mut self) -> Result<Option<T>> {
        self.next_element_seed(std::marker::PhantomData)
    }

    fn size_hint(&self) -> Option<usize> {
        // What postcard says (no hint when fewer bytes than elements are
        // left), capped.
        if self.de.input.len() < self.len {
            None
        } else {
            Some(self.len.min(MAX_HINT))
        }
    }
}

/// The entries of a map, each charged [`element_cost`] before it is read.
struct Map<'a, 'de> {
    de: &'a mut Decoder<'de>,
    len: usize,
}

impl<'de> Map<'_, 'de> {
    #[inline(always)]
    fn next<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        seed.deserialize(Value { de: &mut *self.de, prepaid: 0 })
    }
}

impl<'de> MapAccess<'de> for Map<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        self.de.charge(element_cost::<K::Value>())?;
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        self.next(seed).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        self.next(seed)
    }

    #[inline]
    fn next_entry_seed<K: DeserializeSeed<'de>, T: DeserializeSeed<'de>>(
        &mut self,
        key: K,
        value: T,
    ) -> Result<Option<(K::Value, T::Value)>> {
        self.de.charge(element_cost::<(K::Value, T::Value)>())?;
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        let key = self.next(key)?;
        let value = self.next(value)?;
        Ok(Some((key, value)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len.min(MAX_HINT))
    }
}

/// An enum, whose level for its contents was checked (not entered: a tuple
/// or struct variant enters it with its fields); `prepaid` is what it paid
/// for its variant's contents.
struct Enum<'a, 'de> {
    de: &'a mut Decoder<'de>,
    prepaid: usize,
}

impl<'a, 'de> EnumAccess<'de> for Enum<'a, 'de> {
    type Error = Error;
    type Variant = Self;

    #[inline(always)]
    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self)> {
        let index = self.de.varint32()? as u32;
        // The index is not stored: its slot is free.
        let variant = seed.deserialize(VariantIndex { de: &mut *self.de, index, prepaid: size_of::<T::Value>() })?;
        Ok((variant, self))
    }
}

impl<'de> VariantAccess<'de> for Enum<'_, 'de> {
    type Error = Error;

    #[inline(always)]
    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    #[inline(always)]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        let prepaid = self.prepaid;
        self.de.inside(|de| seed.deserialize(Value { de, prepaid }))
    }

    #[inline(always)]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        // The fields take the enum's level, not one more.
        Value { de: self.de, prepaid: self.prepaid }.fields(len, visitor)
    }

    #[inline(always)]
    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value> {
        Value { de: self.de, prepaid: self.prepaid }.fields(fields.len(), visitor)
    }
}

/// The deserializer of a variant index, whatever its visitor asks for: a
/// `u32`, like postcard's `U32Deserializer`.
struct VariantIndex<'a, 'de> {
    de: &'a mut Decoder<'de>,
    index: u32,
    prepaid: usize,
}

impl<'de> Deserializer<'de> for VariantIndex<'_, 'de> {
    type Error = Error;

    #[inline(always)]
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.de.charge(size_of::<V::Value>().saturating_sub(self.prepaid))?;
        visitor.visit_u32(self.index)
    }

    #[inline(always)]
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum ignored_any
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
