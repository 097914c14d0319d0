//! The headers nearly every call and pipelined hop sends, written and read
//! by hand: a `Call` and an `Ok` `Return` whose capability lists hold at
//! most [`MAX_CAPS`] plain descriptors (an export, an import or a promised
//! answer: no stream end), a `Finish` and a `Release`. The same bytes serde
//! and postcard make (varint variant indexes and integers, a varint list
//! length), at a fraction of the cost: going through serde's derived code
//! took about 500 instructions a call on each side, and a returned
//! capability, a `Finish` or a `Release` about as much again. Anything else
//! (and anything unusual in these) takes the serde path, which stays the
//! definition: the tests here check that both agree.

use super::{CapDescriptor, Message, Target};

/// Capability descriptors in a header written or read here, at most.
pub(crate) const MAX_CAPS: usize = 4;

/// Room for the longest header written here: a variant index, a question,
/// a target (index and two ids), an interface, a method and a list of
/// [`MAX_CAPS`] descriptors (index and two ids each).
const MAX_HEADER: usize = 1 + 5 + 1 + 5 + 5 + 10 + 3 + 1 + MAX_CAPS * (1 + 5 + 5);

/// A header written here, on the stack.
pub(crate) struct Header {
    bytes: [u8; MAX_HEADER],
    len: usize,
}

impl Header {
    pub(crate) fn new() -> Header {
        Header { bytes: [0; MAX_HEADER], len: 0 }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes[self.len] = value as u8 | 0x80;
            self.len += 1;
            value >>= 7;
        }
        self.bytes[self.len] = value as u8;
        self.len += 1;
    }

    /// A list of plain descriptors; `None` if one is not plain or the list
    /// is longer than [`MAX_CAPS`]. (The empty list, the common case, stays
    /// inline; the rest is out of line so that it does not weigh on it.)
    #[inline(always)]
    fn caps(&mut self, caps: &[CapDescriptor]) -> Option<()> {
        if caps.is_empty() {
            self.varint(0);
            return Some(());
        }
        self.some_caps(caps)
    }

    #[inline(never)]
    fn some_caps(&mut self, caps: &[CapDescriptor]) -> Option<()> {
        if caps.len() > MAX_CAPS {
            return None;
        }
        self.varint(caps.len() as u64);
        for cap in caps {
            match *cap {
                CapDescriptor::SenderHosted(id) => {
                    self.varint(SENDER_HOSTED);
                    self.varint(u64::from(id));
                }
                CapDescriptor::ReceiverHosted(id) => {
                    self.varint(RECEIVER_HOSTED);
                    self.varint(u64::from(id));
                }
                CapDescriptor::ReceiverAnswer { question, cap } => {
                    self.varint(RECEIVER_ANSWER);
                    self.varint(u64::from(question));
                    self.varint(u64::from(cap));
                }
                _ => return None,
            }
        }
        Some(())
    }
}

/// Writes `message`'s header into `header` (empty), if it is one of those
/// written here. (Filled in place: the header is large enough that moving
/// it out of a return value showed in a call's cost.)
#[inline]
pub(crate) fn encode(message: &Message, header: &mut Header) -> Option<()> {
    match message {
        Message::Call { question, target, interface, method, caps } => {
            header.varint(CALL);
            header.varint(u64::from(*question));
            match *target {
                Target::Export(id) => {
                    header.varint(EXPORT);
                    header.varint(u64::from(id));
                }
                Target::Answer { question, cap } => {
                    header.varint(ANSWER);
                    header.varint(u64::from(question));
                    header.varint(u64::from(cap));
                }
            }
            header.varint(*interface);
            header.varint(u64::from(*method));
            header.caps(caps)?;
        }
        Message::Return { question, result: Ok(caps) } => {
            header.varint(RETURN);
            header.varint(u64::from(*question));
            header.varint(OK);
            header.caps(caps)?;
        }
        Message::Finish { question } => {
            header.varint(FINISH);
            header.varint(u64::from(*question));
        }
        Message::Release { export, count } => {
            header.varint(RELEASE);
            header.varint(u64::from(*export));
            header.varint(u64::from(*count));
        }
        _ => return None,
    }
    Some(())
}

/// The message at the front of `frame` and the header's length, if it is
/// one of those read here, written the plain way; `None` for anything
/// else, well-formed or not (the serde path then decides).
#[inline]
pub(crate) fn decode(frame: &[u8]) -> Option<(Message, usize)> {
    let mut reader = Reader { bytes: frame, at: 0 };
    let message = match reader.small()? {
        CALL => {
            let question = reader.u32()?;
            let target = match reader.small()? {
                EXPORT => Target::Export(reader.u32()?),
                ANSWER => Target::Answer { question: reader.u32()?, cap: reader.u32()? },
                _ => return None,
            };
            let interface = reader.u64()?;
            let method = reader.u16()?;
            let caps = reader.caps()?;
            Message::Call { question, target, interface, method, caps }
        }
        RETURN => {
            let question = reader.u32()?;
            (reader.small()? == OK).then_some(())?;
            Message::Return { question, result: Ok(reader.caps()?) }
        }
        FINISH => Message::Finish { question: reader.u32()? },
        RELEASE => Message::Release { export: reader.u32()?, count: reader.u32()? },
        _ => return None,
    };
    Some((message, reader.at))
}

/// Variant indexes, in declaration order (`Message`, `Target`, `Result`,
/// `CapDescriptor`).
const CALL: u64 = 0;
const RETURN: u64 = 1;
const FINISH: u64 = 2;
const RELEASE: u64 = 3;
const EXPORT: u64 = 0;
const ANSWER: u64 = 1;
const OK: u64 = 0;
const SENDER_HOSTED: u64 = 0;
const RECEIVER_HOSTED: u64 = 1;
const RECEIVER_ANSWER: u64 = 2;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    /// A varint of at most `max_bytes` bytes whose last byte is at most
    /// `last_max` if it takes them all (postcard's overflow rule); `None`
    /// past the end or over the bound.
    #[inline]
    fn varint(&mut self, max_bytes: usize, last_max: u8) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            if i + 1 == max_bytes && byte > last_max {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn u32(&mut self) -> Option<u32> {
        self.varint(5, 0x0f).map(|v| v as u32)
    }

    fn u16(&mut self) -> Option<u16> {
        self.varint(3, 0x03).map(|v| v as u16)
    }

    fn u64(&mut self) -> Option<u64> {
        self.varint(10, 0x01)
    }

    /// A variant index or a list length expected to be small.
    fn small(&mut self) -> Option<u64> {
        self.varint(1, 0x7f)
    }

    /// A list of at most [`MAX_CAPS`] plain descriptors (`None` otherwise:
    /// serde reads the rest). The empty list stays inline.
    #[inline(always)]
    fn caps(&mut self) -> Option<Vec<CapDescriptor>> {
        match self.small()? {
            0 => Some(Vec::new()),
            count => self.some_caps(count as usize),
        }
    }

    #[inline(never)]
    fn some_caps(&mut self, count: usize) -> Option<Vec<CapDescriptor>> {
        if count > MAX_CAPS {
            return None;
        }
        let mut caps = Vec::with_capacity(count);
        for _ in 0..count {
            caps.push(match self.small()? {
                SENDER_HOSTED => CapDescriptor::SenderHosted(self.u32()?),
                RECEIVER_HOSTED => CapDescriptor::ReceiverHosted(self.u32()?),
                RECEIVER_ANSWER => CapDescriptor::ReceiverAnswer { question: self.u32()?, cap: self.u32()? },
                _ => return None,
            });
        }
        Some(caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{depth, CapDescriptor};
    use crate::RpcError;

    fn serde_bytes(message: &Message) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        crate::wire::encode::to_bytes_mut(message, &mut out).expect("encodes");
        out.to_vec()
    }

    fn samples() -> Vec<Message> {
        let mut messages = Vec::new();
        for id in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            for interface in [0, 1, 0x7f, 0x80, 0xdead_beef, u64::MAX >> 1, u64::MAX] {
                for method in [0, 1, 200, u16::MAX] {
                    messages.push(Message::Call {
                        question: id,
                        target: Target::Export(id / 2),
                        interface,
                        method,
                        caps: Vec::new(),
                    });
                    messages.push(Message::Call {
                        question: id,
                        target: Target::Answer { question: id / 3, cap: id % 7 },
                        interface,
                        method,
                        caps: Vec::new(),
                    });
                }
            }
            messages.push(Message::Return { question: id, result: Ok(Vec::new()) });
            messages.push(Message::Finish { question: id });
            messages.push(Message::Release { export: id, count: id / 5 });
            for caps in plain_lists(id) {
                messages.push(Message::Return { question: id, result: Ok(caps.clone()) });
                messages.push(Message::Call {
                    question: id,
                    target: Target::Answer { question: id / 3, cap: 0 },
                    interface: u64::MAX - u64::from(id),
                    method: 1,
                    caps,
                });
            }
        }
        messages
    }

    /// Lists of 1 to `MAX_CAPS` plain descriptors with ids around `id`.
    fn plain_lists(id: u32) -> Vec<Vec<CapDescriptor>> {
        let all = [
            CapDescriptor::SenderHosted(id),
            CapDescriptor::ReceiverHosted(id / 2),
            CapDescriptor::ReceiverAnswer { question: id, cap: id % 11 },
            CapDescriptor::SenderHosted(u32::MAX - id),
        ];
        (1..=MAX_CAPS).map(|n| all[..n].to_vec()).collect()
    }

    #[test]
    fn writes_what_serde_writes() {
        for message in samples() {
            let mut header = Header::new();
            encode(&message, &mut header).expect("one of those written here");
            assert_eq!(header.as_slice(), &serde_bytes(&message)[..], "{message:?}");
        }
    }

    #[test]
    fn reads_what_serde_reads_and_leaves_the_trailer() {
        for message in samples() {
            let mut frame = serde_bytes(&message);
            let header_len = frame.len();
            frame.extend_from_slice(b"payload");
            let (read, len) = decode(&frame).expect("one of those read here");
            assert_eq!(read, message);
            assert_eq!(len, header_len);
            let (by_serde, rest) = depth::from_postcard_bytes::<Message>(&frame, 64, 1 << 20).expect("serde reads it");
            assert_eq!(by_serde, read);
            assert_eq!(rest, b"payload");
        }
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        let window = crate::wire::Window { capacity: 8, batch: 2 };
        let stream_end = CapDescriptor::SequenceReader { stream: 3, window };
        let too_many = vec![CapDescriptor::SenderHosted(4); MAX_CAPS + 1];
        let others = [
            Message::Call { question: 1, target: Target::Export(0), interface: 2, method: 3, caps: too_many.clone() },
            Message::Call { question: 1, target: Target::Export(0), interface: 2, method: 3, caps: vec![stream_end] },
            Message::Return { question: 1, result: Ok(too_many) },
            Message::Return {
                question: 1,
                result: Ok(vec![CapDescriptor::SenderHosted(1), stream_end, CapDescriptor::SenderHosted(2)]),
            },
            Message::Return { question: 1, result: Err(RpcError::cancelled("no")) },
            Message::DisembargoReply { id: 1 },
            Message::Ping(5),
        ];
        for message in others {
            assert!(encode(&message, &mut Header::new()).is_none(), "{message:?}");
            assert!(decode(&serde_bytes(&message)).is_none(), "{message:?}");
        }
    }

    #[test]
    fn refuses_what_serde_refuses() {
        // Cut short anywhere, a varint over its width, a method over u16:
        // never a message serde would not have read.
        for message in samples().into_iter().step_by(7) {
            let bytes = serde_bytes(&message);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_none(), "{message:?} cut at {cut}");
            }
        }
        let over_u32 = [0, 0xff, 0xff, 0xff, 0xff, 0x1f, 0, 0, 1, 0, 0];
        assert!(decode(&over_u32).is_none());
        assert!(depth::from_postcard_bytes::<Message>(&over_u32, 64, 1 << 20).is_err());
        let method_over_u16 = [0, 1, 0, 0, 5, 0x80, 0x80, 0x04, 0];
        assert!(decode(&method_over_u16).is_none());
        assert!(depth::from_postcard_bytes::<Message>(&method_over_u16, 64, 1 << 20).is_err());
        // A method of 0 in four bytes: serde reads a u16 in three at most.
        let long_method = [0, 1, 0, 0, 5, 0x80, 0x80, 0x80, 0x00, 0];
        assert!(decode(&long_method).is_none());
        assert!(depth::from_postcard_bytes::<Message>(&long_method, 64, 1 << 20).is_err());
        // A question of 1 in two bytes, as serde reads it too.
        let long_question = [1, 0x81, 0x00, 0, 0];
        let (message, len) = decode(&long_question).expect("a Return");
        assert_eq!(len, long_question.len());
        assert_eq!(message, depth::from_postcard_bytes::<Message>(&long_question, 64, 1 << 20).unwrap().0);
    }
}
