//! The reference for [`super::super::decode`]: postcard's own deserializer
//! wrapped in [`DepthLimited`], visitor wrappers that count nesting depth and
//! charge a [`Budget`]. This is how payloads were decoded before the direct
//! decoder; the tests decode the same bytes both ways and compare the values,
//! the remainders, the errors and the charges.
//!
//! The charges are the ones the [depth module](super) describes.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use std::mem::size_of;

use super::{element_cost, DecodeError, MAX_HINT};

/// Bytes a decode may still produce, shared by every level of one decode.
#[derive(Debug)]
pub(crate) struct Budget {
    used: Cell<u64>,
    limit: u64,
    /// Set when a charge failed: what the decode would have used.
    exceeded: Cell<Option<u64>>,
    /// Set when the depth limit was hit.
    too_deep: Cell<Option<u32>>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        Budget { used: Cell::new(0), limit, exceeded: Cell::new(None), too_deep: Cell::new(None) }
    }

    /// Bytes charged so far.
    pub(crate) fn used(&self) -> u64 {
        self.used.get()
    }

    /// Charges `bytes`, or fails (charging nothing) if that would pass the limit.
    #[inline(always)]
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        if bytes == 0 {
            // A value whose slot its parent paid for (a struct's scalar field).
            return Ok(());
        }
        let wanted = self.used.get().saturating_add(bytes as u64);
        if wanted > self.limit {
            self.exceeded.set(Some(wanted));
            return Err(E::custom(format_args!(
                "payload decodes to more than the limit of {} bytes (max_decoded_size; at least {wanted} needed)",
                self.limit
            )));
        }
        self.used.set(wanted);
        Ok(())
    }
}

/// Compound levels still allowed below the current value, the configured
/// limit (kept for the error message) and the decode's size budget.
#[derive(Clone, Copy, Debug)]
struct Depth<'b> {
    remaining: u32,
    limit: u32,
    budget: &'b Budget,
}

impl Depth<'_> {
    /// Depth for the contents of a compound value at this level, or the
    /// depth-exceeded error once no level is left.
    #[inline(always)]
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        match self.remaining.checked_sub(1) {
            Some(remaining) => Ok(Self { remaining, ..self }),
            None => {
                self.budget.too_deep.set(Some(self.limit));
                Err(E::custom(format_args!("payload nests deeper than the limit of {}", self.limit)))
            }
        }
    }
}

/// Deserializer adapter that fails instead of recursing past a nesting limit
/// or decoding past a size budget.
///
/// Each seq, tuple, tuple struct, map, struct, enum, newtype struct and `Some`
/// counts as one level; an enum together with its variant's fields counts once.
/// Decoding a value nested more than `max_depth` levels deep, or charging more
/// than the budget (see the module docs), fails with `D::Error` made by
/// [`serde::de::Error::custom`]. Scalars never count as a level.
pub(crate) struct DepthLimited<'b, D> {
    inner: D,
    depth: Depth<'b>,
    /// Bytes of this value's slot its parent already paid for.
    prepaid: usize,
}

impl<'b, D> DepthLimited<'b, D> {
    /// Wraps `inner`, allowing at most `max_depth` nested compound values and
    /// charging `budget` for what is decoded.
    pub(crate) fn new(inner: D, max_depth: u32, budget: &'b Budget) -> Self {
        let depth = Depth { remaining: max_depth, limit: max_depth, budget };
        Self::at(inner, depth, 0)
    }

    #[inline(always)]
    fn at(inner: D, depth: Depth<'b>, prepaid: usize) -> Self {
        Self { inner, depth, prepaid }
    }

    /// The visitor wrapper for a value whose elements (if any) live on their own.
    #[inline(always)]
    fn visitor<V>(&self, visitor: V) -> DepthVisitor<'b, V> {
        DepthVisitor { visitor, depth: self.depth, prepaid: self.prepaid, fields: None }
    }
}

/// Decodes `T` from postcard bytes through [`DepthLimited`], as
/// [`super::from_postcard_bytes`] does directly; returns the bytes charged too.
pub(crate) fn from_postcard_bytes<'de, T: serde::Deserialize<'de>>(
    bytes: &'de [u8],
    max_depth: u32,
    max_size: u64,
) -> (Result<(T, &'de [u8]), DecodeError>, u64) {
    let budget = Budget::new(max_size);
    let mut deserializer = postcard::Deserializer::from_bytes(bytes);
    let decoded = T::deserialize(DepthLimited::new(&mut deserializer, max_depth, &budget));
    let value = match decoded {
        Ok(value) => value,
        Err(e) => {
            let error = if let Some(needed) = budget.exceeded.get() {
                DecodeError::TooLarge { limit: max_size, needed }
            } else if let Some(limit) = budget.too_deep.get() {
                DecodeError::TooDeep { limit }
            } else {
                DecodeError::Malformed(e)
            };
            return (Err(error), budget.used());
        }
    };
    let rest = deserializer.finalize().map_err(DecodeError::Malformed);
    (rest.map(|rest| (value, rest)), budget.used())
}

// Every method wraps the visitor: a self-describing format may hand a seq or
// map to any visitor, so even scalar requests must be guarded.
macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[inline(always)]
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let visitor = self.visitor(visitor);
            self.inner.$method($($arg,)* visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for DepthLimited<'_, D> {
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
        deserialize_map();
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    // Tuples and structs hold their fields inline: `len` fields are paid for
    // by the aggregate's own size.
    #[inline(always)]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = DepthVisitor { fields: Some(len), ..self.visitor(visitor) };
        self.inner.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = DepthVisitor { fields: Some(len), ..self.visitor(visitor) };
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    #[inline(always)]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = DepthVisitor { fields: Some(fields.len()), ..self.visitor(visitor) };
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Forwards to `visitor`, charging the value it builds and entering one
/// level for each compound value it is handed.
struct DepthVisitor<'b, V> {
    visitor: V,
    depth: Depth<'b>,
    /// Bytes of the value's slot already paid for.
    prepaid: usize,
    /// `Some(n)` for a tuple or struct: its first `n` elements are inline fields.
    fields: Option<usize>,
}

impl<'b, 'de, V: Visitor<'de>> DepthVisitor<'b, V> {
    /// Charges the value about to be built, plus `extra` bytes it carries.
    #[inline(always)]
    fn charge<E: de::Error>(&self, extra: usize) -> Result<(), E> {
        self.depth.budget.charge(size_of::<V::Value>().saturating_sub(self.prepaid).saturating_add(extra))
    }

    /// Access to the elements of the value, one level down.
    #[inline(always)]
    fn access<A>(&self, access: A, depth: Depth<'b>) -> DepthAccess<'b, A> {
        match self.fields {
            Some(fields) => DepthAccess { access, depth, inline: fields },
            None => DepthAccess { access, depth, inline: 0 },
        }
    }
}

// Scalars pass straight through after their charge; forwarding each method
// individually keeps the inner visitor's own defaults and zero-copy borrowing intact.
macro_rules! forward_visit {
    ($($method:ident($($arg:ident: $ty:ty)?) $(+ $len:ident)?;)*) => {$(
        #[inline(always)]
        fn $method<E: de::Error>(self $(, $arg: $ty)?) -> Result<V::Value, E> {
            self.charge::<E>(0 $(+ $len.len())?)?;
            self.visitor.$method($($arg)?)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for DepthVisitor<'_, V> {
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
        visit_str(v: &str) + v;
        visit_borrowed_str(v: &'de str) + v;
        visit_string(v: String) + v;
        visit_bytes(v: &[u8]) + v;
        visit_borrowed_bytes(v: &'de [u8]) + v;
        visit_byte_buf(v: Vec<u8>) + v;
        visit_none();
        visit_unit();
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.charge::<D::Error>(0)?;
        let depth = self.depth.enter()?;
        // The content lives inside the option, which is paid for.
        self.visitor.visit_some(DepthLimited::at(deserializer, depth, size_of::<V::Value>()))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.charge::<D::Error>(0)?;
        let depth = self.depth.enter()?;
        self.visitor.visit_newtype_struct(DepthLimited::at(deserializer, depth, size_of::<V::Value>()))
    }

    #[inline(always)]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.charge::<A::Error>(0)?;
        let depth = self.depth.enter()?;
        let access = self.access(seq, depth);
        self.visitor.visit_seq(access)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.charge::<A::Error>(0)?;
        let depth = self.depth.enter()?;
        let access = self.access(map, depth);
        self.visitor.visit_map(access)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.charge::<A::Error>(0)?;
        // Fail before the variant's contents are read; the enum keeps its own
        // level so a tuple/struct variant's fields do not count a second time.
        self.depth.enter::<A::Error>()?;
        let level = self.depth;
        // The variant's contents live inside the enum, which is paid for.
        let prepaid = self.prepaid.max(size_of::<V::Value>());
        self.visitor.visit_enum(DepthEnum { access: data, level, prepaid })
    }
}

/// Seq or map access whose elements, keys and values are decoded at `depth`.
/// The first `inline` elements are a tuple's or struct's fields, paid for by
/// the aggregate; every further element or entry is charged [`element_cost`]
/// first and its value in full.
struct DepthAccess<'b, A> {
    access: A,
    depth: Depth<'b>,
    inline: usize,
}

impl<'b, A> DepthAccess<'b, A> {
    fn hint(&self, hint: Option<usize>) -> Option<usize> {
        hint.map(|n| n.min(MAX_HINT))
    }

    /// Charges the next element (a value of type `T`); returns what its slot has prepaid.
    #[inline(always)]
    fn next<T, E: de::Error>(&mut self) -> Result<usize, E> {
        if self.inline > 0 {
            self.inline -= 1;
            return Ok(size_of::<T>());
        }
        self.depth.budget.charge::<E>(element_cost::<T>())?;
        Ok(0)
    }

    #[inline(always)]
    fn seed<S>(&self, seed: S, prepaid: usize) -> DepthSeed<'b, S> {
        DepthSeed { seed, depth: self.depth, prepaid }
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for DepthAccess<'_, A> {
    type Error = A::Error;

    #[inline(always)]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        let prepaid = self.next::<T::Value, A::Error>()?;
        let seed = self.seed(seed, prepaid);
        self.access.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint(self.access.size_hint())
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for DepthAccess<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        // A struct's field names are identifiers, not stored: their slot is free.
        let prepaid = if self.inline > 0 { size_of::<K::Value>() } else { 0 };
        self.depth.budget.charge::<A::Error>(element_cost::<K::Value>())?;
        let seed = self.seed(seed, prepaid);
        self.access.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let prepaid = if self.inline > 0 {
            self.inline -= 1;
            size_of::<T::Value>()
        } else {
            0
        };
        let seed = self.seed(seed, prepaid);
        self.access.next_value_seed(seed)
    }

    fn next_entry_seed<K: DeserializeSeed<'de>, T: DeserializeSeed<'de>>(
        &mut self,
        key: K,
        value: T,
    ) -> Result<Option<(K::Value, T::Value)>, A::Error> {
        let (key_paid, value_paid) = if self.inline > 0 {
            self.inline -= 1;
            (size_of::<K::Value>(), size_of::<T::Value>())
        } else {
            (0, 0)
        };
        self.depth.budget.charge::<A::Error>(element_cost::<(K::Value, T::Value)>())?;
        let key = self.seed(key, key_paid);
        let value = self.seed(value, value_paid);
        self.access.next_entry_seed(key, value)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint(self.access.size_hint())
    }
}

/// Enum or variant access; `level` is the enum's own (already checked) level
/// and `prepaid` what the enum paid for its variant's contents.
struct DepthEnum<'b, A> {
    access: A,
    level: Depth<'b>,
    prepaid: usize,
}

impl<'b, 'de, A: EnumAccess<'de>> EnumAccess<'de> for DepthEnum<'b, A> {
    type Error = A::Error;
    type Variant = DepthEnum<'b, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self::Variant), A::Error> {
        // The tag is inside the enum, so a self-describing format cannot nest
        // enums through tags without using up depth. It is not stored: free.
        let seed = DepthSeed { seed, depth: self.level.enter()?, prepaid: size_of::<T::Value>() };
        let (value, variant) = self.access.variant_seed(seed)?;
        let DepthEnum { level, prepaid, .. } = self;
        Ok((value, DepthEnum { access: variant, level, prepaid }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for DepthEnum<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.access.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let depth = self.level.enter()?;
        self.access.newtype_variant_seed(DepthSeed { seed, depth, prepaid: self.prepaid })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        // The visitor enters the enum's level itself when handed the fields.
        let visitor = DepthVisitor { visitor, depth: self.level, prepaid: self.prepaid, fields: Some(len) };
        self.access.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = DepthVisitor { visitor, depth: self.level, prepaid: self.prepaid, fields: Some(fields.len()) };
        self.access.struct_variant(fields, visitor)
    }
}

/// Seed that decodes its value through [`DepthLimited`] at `depth`, its slot
/// `prepaid` bytes paid for.
struct DepthSeed<'b, S> {
    seed: S,
    depth: Depth<'b>,
    prepaid: usize,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for DepthSeed<'_, S> {
    type Value = S::Value;

    #[inline(always)]
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(DepthLimited::at(deserializer, self.depth, self.prepaid))
    }
}
