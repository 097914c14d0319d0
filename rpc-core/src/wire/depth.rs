//! Nesting-depth and decoded-size limits for decoding payloads from untrusted peers.
//!
//! Serde decodes recursive types by recursing, so hostile bytes describing a
//! million nested values would overflow the stack. The decoder
//! ([`super::decode`]) counts compound values on the way down and fails with
//! [`DecodeError::TooDeep`] once the limit is exceeded: each seq, tuple,
//! tuple struct, map, struct, enum, newtype struct and `Some` is one level
//! (an enum together with its variant's fields counts once), scalars none.
//!
//! It also charges a budget of decoded bytes while it decodes, so a small
//! frame cannot decode into a huge value: `Vec<Option<[u8; 4096]>>` holding
//! `None`s costs one wire byte but 4 KiB of memory per element, and a
//! `Vec<()>` costs no byte at all but time per element. The charges:
//!
//! - every value, when its bytes are read and before its visitor builds it:
//!   the `size_of` of the type being built (`V::Value`), less what its slot
//!   was already charged (a struct's field, an array's element or the content
//!   of a `Some` lives inside its parent, which paid for it; a `Box<T>` field
//!   paid for the pointer, so the `T` it boxes pays the rest), plus the length
//!   of any string or byte buffer it carries;
//! - every element of a sequence and every entry of a map (beyond the fields
//!   of a struct or tuple) before it is decoded: [`ELEMENT_COST`] byte, or
//!   [`ZST_ELEMENT_COST`] for a zero-sized type, so zero-sized elements are
//!   paid for too and a declared length of `u64::MAX` ends after at most
//!   `limit / ZST_ELEMENT_COST` steps;
//! - the `size_hint` a visitor sees is capped at [`MAX_HINT`] elements, so a
//!   visitor's preallocation stays small (serde's own caps it at 1 MiB per
//!   collection) and collections grow as elements arrive and are charged.
//!
//! So the charge is about the value's real size (collections' spare capacity
//! aside: a vector that doubled holds up to twice its charge, and three times
//! while it reallocates), and a decode fails as soon as the charge passes the
//! limit, before the rest is built.
//!
//! In tests, `reference` keeps the first implementation of these rules
//! (postcard's deserializer wrapped in visitor adapters) as the oracle the
//! decoder is compared with.

use std::fmt;
use std::mem::size_of;

#[cfg(test)]
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, SeqAccess, VariantAccess, Visitor};

/// What each element of a sequence and each entry of a map costs at least,
/// whatever its type.
pub(crate) const ELEMENT_COST: usize = 1;

/// What an element of a zero-sized type costs instead: it takes no memory and
/// no wire byte, only decoding time, so a hostile declared length is ended
/// after `limit / ZST_ELEMENT_COST` steps (about a million for the default
/// limit: ~0.1 s in a debug build) instead of `limit` steps (~8 s).
pub(crate) const ZST_ELEMENT_COST: usize = 64;

/// The charge for one element or entry whose decoded value is a `T`.
#[inline(always)]
pub(crate) fn element_cost<T>() -> usize {
    if size_of::<T>() == 0 {
        ZST_ELEMENT_COST
    } else {
        ELEMENT_COST
    }
}

/// Largest `size_hint` passed on to a visitor, in elements.
pub(crate) const MAX_HINT: usize = 1024;

/// Why a decode failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The bytes are not a value of the type.
    Malformed(postcard::Error),
    /// The value nests deeper than `limit`.
    TooDeep { limit: u32 },
    /// The value decodes to more than `limit` bytes; `needed` is how far the
    /// charge had got when it failed (a lower bound of the value's size).
    TooLarge { limit: u64, needed: u64 },
}

impl DecodeError {
    /// As an [`RpcError`](crate::RpcError): `LimitExceeded` for the size
    /// budget, `Serialization` otherwise; `what` starts the message.
    pub(crate) fn to_rpc(&self, what: &str) -> crate::RpcError {
        match self {
            DecodeError::TooLarge { .. } => crate::RpcError::limit(format!("{what}: {self}")),
            _ => crate::RpcError::serialization(format!("{what}: {self}")),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(e) => write!(f, "{e}"),
            DecodeError::TooDeep { limit } => write!(f, "payload nests deeper than the limit of {limit}"),
            DecodeError::TooLarge { limit, needed } => write!(
                f,
                "payload decodes to more than the limit of {limit} bytes (max_decoded_size; at least {needed} needed)"
            ),
        }
    }
}

/// Decodes `T` from postcard bytes, failing (not overflowing, not allocating
/// without bound) when nesting exceeds `max_depth` or the decoded value would
/// take more than `max_size` bytes.
///
/// Returns the value and the unused remainder, like [`postcard::take_from_bytes`].
#[inline]
pub(crate) fn from_postcard_bytes<'de, T: serde::Deserialize<'de>>(
    bytes: &'de [u8],
    max_depth: u32,
    max_size: u64,
) -> Result<(T, &'de [u8]), DecodeError> {
    super::decode::from_bytes(bytes, max_depth, max_size)
}

#[cfg(test)]
#[path = "depth_reference.rs"]
pub(crate) mod reference;
#[cfg(test)]
pub(crate) use reference::{Budget, DepthLimited};

#[cfg(test)]
#[path = "depth_tests.rs"]
pub(super) mod tests;
