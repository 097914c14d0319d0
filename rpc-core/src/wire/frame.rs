//! Length-prefixed framing as pure functions over byte buffers.
//!
//! The length is checked against the limit before anything else, and nothing
//! is ever reserved on a frame's announced length: the reader grows its buffer
//! as bytes arrive (`conn/driver.rs`), so a hostile length prefix cannot make
//! us allocate.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::RpcError;

/// Bytes of the length prefix.
pub(crate) const PREFIX: usize = 4;

/// Appends one frame of `header`'s bytes (encoded already) and `trailer`.
pub(crate) fn encode_raw(out: &mut BytesMut, header: &[u8], trailer: &[u8]) {
    out.reserve(PREFIX + header.len() + trailer.len());
    out.put_u32_le((header.len() + trailer.len()) as u32);
    out.extend_from_slice(header);
    out.extend_from_slice(trailer);
}

/// Appends one frame holding `header` followed by `trailer`.
pub(crate) fn encode<H: Serialize>(out: &mut BytesMut, header: &H, trailer: &[u8]) -> Result<(), RpcError> {
    encode_with(out, header, trailer.len(), |out| out.extend_from_slice(trailer))
}

/// Appends one frame holding `header` followed by `trailer_len` bytes that
/// `fill` appends (so a trailer gathered from several chunks is copied once).
pub(crate) fn encode_with<H: Serialize>(
    out: &mut BytesMut,
    header: &H,
    trailer_len: usize,
    fill: impl FnOnce(&mut BytesMut),
) -> Result<(), RpcError> {
    let start = out.len();
    out.put_u32_le(0);
    if let Err(e) = super::encode::to_bytes_mut(header, out) {
        out.truncate(start);
        return Err(RpcError::serialization(format!("cannot encode frame header: {e}")));
    }
    out.reserve(trailer_len);
    fill(out);
    let len = (out.len() - start - PREFIX) as u32;
    out[start..start + PREFIX].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Appends the length prefix and `header` of a frame whose `trailer_len`
/// trailer bytes the caller supplies next (in `out`, or beside it for a
/// vectored write: large stream chunks are not copied into `out`).
pub(crate) fn encode_header<H: Serialize>(out: &mut BytesMut, header: &H, trailer_len: usize) -> Result<(), RpcError> {
    let start = out.len();
    out.put_u32_le(0);
    if let Err(e) = super::encode::to_bytes_mut(header, out) {
        out.truncate(start);
        return Err(RpcError::serialization(format!("cannot encode frame header: {e}")));
    }
    let len = (out.len() - start - PREFIX + trailer_len) as u32;
    out[start..start + PREFIX].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Takes one complete frame off the front of `buf`, if there is one.
///
/// # Errors
///
/// A protocol error when the announced length exceeds `max_frame`. Nothing
/// is reserved for an incomplete frame; see [`missing`].
pub(crate) fn decode(buf: &mut BytesMut, max_frame: u32) -> Result<Option<Bytes>, RpcError> {
    if buf.len() < PREFIX {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len > max_frame {
        return Err(RpcError::protocol(format!("frame of {len} bytes exceeds the limit of {max_frame} bytes")));
    }
    let total = PREFIX + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    buf.advance(PREFIX);
    Ok(Some(buf.split_to(len as usize).freeze()))
}

/// Bytes still to arrive of the incomplete frame at the front of `buf`, once
/// its length prefix is there (call after [`decode`] returned `None`, so the
/// length is known to be within the limit).
pub(crate) fn missing(buf: &BytesMut) -> Option<usize> {
    if buf.len() < PREFIX {
        return None;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    (PREFIX + len).checked_sub(buf.len()).filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_header_and_trailer() {
        let mut out = BytesMut::new();
        encode(&mut out, &(7u32, "hi"), b"tail").unwrap();
        encode(&mut out, &1u8, b"").unwrap();
        let first = decode(&mut out, 1024).unwrap().unwrap();
        let (header, rest): ((u32, String), _) = postcard::take_from_bytes(&first).unwrap();
        assert_eq!(header, (7, "hi".to_string()));
        assert_eq!(rest, b"tail");
        assert_eq!(&decode(&mut out, 1024).unwrap().unwrap()[..], &[1]);
        assert!(decode(&mut out, 1024).unwrap().is_none());
    }

    #[test]
    fn waits_for_a_partial_frame() {
        let mut whole = BytesMut::new();
        encode(&mut whole, &"hello", b"").unwrap();
        let mut buf = BytesMut::from(&whole[..whole.len() - 1]);
        assert!(decode(&mut buf, 1024).unwrap().is_none());
        assert_eq!(missing(&buf), Some(1));
        buf.extend_from_slice(&whole[whole.len() - 1..]);
        assert!(decode(&mut buf, 1024).unwrap().is_some());
    }

    #[test]
    fn rejects_oversized_length_before_reserving() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let err = decode(&mut buf, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        assert!(buf.capacity() < 1024, "reserved {} bytes for a hostile length", buf.capacity());
        let mut buf = BytesMut::new();
        buf.put_u32_le(1025);
        assert!(decode(&mut buf, 1024).is_err());
    }

    #[test]
    fn an_announced_frame_reserves_nothing() {
        let mut buf = BytesMut::with_capacity(16);
        buf.put_u32_le(16 << 20);
        buf.put_u8(1);
        assert!(decode(&mut buf, 16 << 20).unwrap().is_none());
        assert!(buf.capacity() < 1024, "reserved {} bytes on an announcement", buf.capacity());
        assert_eq!(missing(&buf), Some((16 << 20) - 1));
        assert_eq!(missing(&BytesMut::from(&[1u8, 0][..])), None, "no prefix yet");
    }
}
