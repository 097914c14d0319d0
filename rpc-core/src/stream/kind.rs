//! What a stream carries, for the one generic in-process core (`core.rs`).
//!
//! A sequence carries items of `T`, each taking one place of the window; a
//! byte stream carries chunks of `bytes::Bytes`, each taking its length.
//! Everything else about the in-process pair is the same, so the core is
//! written once over a [`Kind`]; the few places where the two really differ
//! are the methods of these traits: how a unit counts against the window,
//! how a read takes from the buffer (one item, or up to `max` bytes across
//! chunks), and which calls of the connection-bound halves carry a unit.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ReadCache;
use super::{RemoteConsumer, RemoteProducer, WriterLane};
use crate::proto::Protocol;
use crate::RpcError;

/// The unit a stream buffers and how it counts.
pub(crate) trait Kind {
    /// What is written, buffered and read.
    type Unit;
    /// Whether this is a byte stream (windows and credit in bytes).
    const BYTES: bool;
    /// What the stream is called in errors.
    const NAME: &'static str;
    /// How much of the consumer's window `unit` takes.
    fn weight(unit: &Self::Unit) -> usize;
    /// Takes what one read returns off the front of a non-empty buffer: at
    /// most `max` (at least 1) of weight.
    fn take(units: &mut VecDeque<Self::Unit>, max: usize) -> Self::Unit;
    /// Room in `sink`'s window: at least 1 when ready (a sequence's producer
    /// also bounds the bytes of its items, so it reports only that there is room).
    fn poll_room(sink: &RemoteProducer, cx: &mut Context<'_>) -> Poll<Result<usize, RpcError>>;
    /// Ready once `sink`'s window has room (what a writer's flush waits for).
    #[inline]
    fn poll_flush(sink: &RemoteProducer, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        Self::poll_room(sink, cx).map_ok(drop)
    }
}

/// Units that can go into a connection-bound producer.
pub(crate) trait Produce: Kind {
    /// Queues `unit` on `sink` and tells the connection (not with it locked);
    /// `lane` is the writing end's hold on the producer's lane.
    fn write(sink: &RemoteProducer, lane: &mut WriterLane, unit: Self::Unit) -> Result<(), RpcError>;
    /// Queues `unit` on `sink` with the connection locked; returns whether
    /// the connection must be told.
    fn push(proto: &mut Protocol, stream: u32, unit: Self::Unit) -> Result<(), RpcError>;
}

/// Units that can be read from a connection-bound consumer.
pub(crate) trait Consume: Kind {
    /// Reads at most `max` of weight from `source`.
    fn poll_read(
        source: &RemoteConsumer,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Self::Unit>, RpcError>>;
    /// Reads through `cache`: a sequence decodes a whole received batch
    /// without the consumer's lock (a byte stream has nothing to decode).
    #[inline]
    fn poll_read_cached(
        source: &RemoteConsumer,
        cache: &mut ReadCache,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Self::Unit>, RpcError>> {
        let _ = cache;
        Self::poll_read(source, cx, max)
    }
}

/// A sequence of `T`: one item is one place of the window.
pub(crate) struct Items<T>(PhantomData<fn() -> T>);

/// A byte stream: a chunk takes its length in bytes.
pub(crate) struct Chunks;

impl<T> Kind for Items<T> {
    type Unit = T;
    const BYTES: bool = false;
    const NAME: &'static str = "sequence";

    #[inline]
    fn weight(_: &T) -> usize {
        1
    }

    #[inline]
    fn take(units: &mut VecDeque<T>, _max: usize) -> T {
        units.pop_front().expect("taken from a non-empty buffer")
    }

    fn poll_room(sink: &RemoteProducer, cx: &mut Context<'_>) -> Poll<Result<usize, RpcError>> {
        sink.poll_flush(cx).map_ok(|()| 1)
    }

    #[inline]
    fn poll_flush(sink: &RemoteProducer, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        sink.poll_flush(cx)
    }
}

impl<T: Serialize> Produce for Items<T> {
    #[inline]
    fn write(sink: &RemoteProducer, lane: &mut WriterLane, item: T) -> Result<(), RpcError> {
        sink.write(lane, &item)
    }

    fn push(proto: &mut Protocol, stream: u32, item: T) -> Result<(), RpcError> {
        proto.producer_encode_item(stream, &item)
    }
}

impl<T: DeserializeOwned> Consume for Items<T> {
    #[inline]
    fn poll_read(source: &RemoteConsumer, cx: &mut Context<'_>, _max: usize) -> Poll<Result<Option<T>, RpcError>> {
        source.poll_read(cx)
    }

    #[inline]
    fn poll_read_cached(
        source: &RemoteConsumer,
        cache: &mut ReadCache,
        cx: &mut Context<'_>,
        _max: usize,
    ) -> Poll<Result<Option<T>, RpcError>> {
        source.poll_read_cached(cache, cx)
    }
}

impl Kind for Chunks {
    type Unit = bytes::Bytes;
    const BYTES: bool = true;
    const NAME: &'static str = "byte stream";

    #[inline]
    fn weight(chunk: &bytes::Bytes) -> usize {
        chunk.len()
    }

    fn take(chunks: &mut VecDeque<bytes::Bytes>, max: usize) -> bytes::Bytes {
        take_bytes(chunks, max)
    }

    fn poll_room(sink: &RemoteProducer, cx: &mut Context<'_>) -> Poll<Result<usize, RpcError>> {
        sink.poll_room(cx)
    }
}

impl Produce for Chunks {
    #[inline]
    fn write(sink: &RemoteProducer, _lane: &mut WriterLane, chunk: bytes::Bytes) -> Result<(), RpcError> {
        sink.write_bytes(chunk)
    }

    fn push(proto: &mut Protocol, stream: u32, chunk: bytes::Bytes) -> Result<(), RpcError> {
        proto.producer_push_chunk(stream, chunk)
    }
}

impl Consume for Chunks {
    fn poll_read(
        source: &RemoteConsumer,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<bytes::Bytes>, RpcError>> {
        source.poll_read_bytes(cx, max)
    }
}

/// Takes up to `max` bytes off the front: zero-copy within one chunk.
fn take_bytes(chunks: &mut VecDeque<bytes::Bytes>, max: usize) -> bytes::Bytes {
    let single = chunks.len() == 1;
    let front = chunks.front_mut().expect("taken from a non-empty buffer");
    if front.len() >= max || single {
        let data = front.split_to(max.min(front.len()));
        if front.is_empty() {
            chunks.pop_front();
        }
        return data;
    }
    // Sized by what is buffered, never by `max` alone: a peer chooses `max`.
    let want = chunks.iter().map(bytes::Bytes::len).sum::<usize>().min(max);
    let mut gathered = BytesMut::with_capacity(want);
    while gathered.len() < max {
        let Some(chunk) = chunks.front_mut() else { break };
        let n = (max - gathered.len()).min(chunk.len());
        gathered.extend_from_slice(&chunk.split_to(n));
        if chunk.is_empty() {
            chunks.pop_front();
        }
    }
    gathered.freeze()
}
