//! The in-process core of a byte stream: chunks of `bytes::Bytes`, counted in
//! bytes. Like `Shared<T>` for sequences, it redirects to a connection-bound
//! half once one end is sent away.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

use super::{Ending, Window};
use super::{RemoteConsumer, RemoteProducer};
use crate::RpcError;

pub(crate) struct ByteCore {
    state: Mutex<ByteState>,
}

pub(crate) struct ByteState {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    pub(crate) window: Window,
    ending: Option<Ending>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    sink: Option<Arc<RemoteProducer>>,
    /// Spliced into another in-process byte stream: everything goes there.
    forward: Option<Arc<ByteCore>>,
    source: Option<Arc<RemoteConsumer>>,
}

impl ByteCore {
    pub(crate) fn new(window: Window) -> Arc<Self> {
        Arc::new(ByteCore {
            state: Mutex::new(ByteState {
                chunks: VecDeque::new(),
                buffered: 0,
                window,
                ending: None,
                reader: None,
                writer: None,
                sink: None,
                forward: None,
                source: None,
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ByteState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self, chunk: Bytes) -> Result<(), RpcError> {
        let mut state = self.lock();
        if let Some(forward) = state.forward.clone() {
            drop(state);
            return forward.write(chunk);
        }
        if let Some(sink) = state.sink.clone() {
            drop(state);
            return sink.write_bytes(chunk);
        }
        if let Some(ending) = &state.ending {
            return Err(ending.for_writer());
        }
        if !chunk.is_empty() {
            state.buffered += chunk.len();
            state.chunks.push_back(chunk);
        }
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Room left in the window, in bytes: `Ready(0)` never happens.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<usize, RpcError>> {
        let mut state = self.lock();
        if let Some(forward) = state.forward.clone() {
            drop(state);
            return forward.poll_room(cx);
        }
        if let Some(sink) = state.sink.clone() {
            drop(state);
            return sink.poll_room(cx);
        }
        if let Some(ending) = &state.ending {
            return Poll::Ready(Err(ending.for_writer()));
        }
        let capacity = state.window.capacity as usize;
        if state.buffered < capacity {
            return Poll::Ready(Ok(capacity - state.buffered));
        }
        state.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// # Errors
    ///
    /// `Cancelled` if the consumer cancelled first.
    pub(crate) fn close(&self, error: Option<RpcError>) -> Result<(), RpcError> {
        let mut state = self.lock();
        if let Some(forward) = state.forward.clone() {
            drop(state);
            return forward.close(error);
        }
        if let Some(sink) = state.sink.clone() {
            drop(state);
            sink.close(error);
            return Ok(());
        }
        if let Some(ending @ Ending::Cancelled(_)) = &state.ending {
            return Err(ending.for_writer());
        }
        if state.ending.is_none() {
            state.ending = Some(error.map_or(Ending::Closed, Ending::Failed));
        }
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
        Ok(())
    }

    pub(crate) fn abort(&self) {
        let mut state = self.lock();
        if let Some(forward) = state.forward.clone() {
            drop(state);
            return forward.abort();
        }
        if let Some(sink) = state.sink.clone() {
            drop(state);
            return sink.abort();
        }
        if state.ending.is_none() {
            state.ending = Some(Ending::Aborted);
        }
        state.chunks.clear();
        state.buffered = 0;
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
    }

    pub(crate) fn poll_read(&self, cx: &mut Context<'_>, max: usize) -> Poll<Result<Option<Bytes>, RpcError>> {
        let mut state = self.lock();
        let discarded = state.ending.as_ref().is_some_and(Ending::discards);
        if !discarded && state.buffered > 0 {
            let data = take(&mut state.chunks, max.max(1));
            state.buffered -= data.len();
            if let Some(waker) = state.writer.take() {
                waker.wake();
            }
            return Poll::Ready(Ok(Some(data)));
        }
        if let Some(source) = state.source.clone() {
            drop(state);
            return source.poll_read_bytes(cx, max);
        }
        match &state.ending {
            Some(ending) => Poll::Ready(ending.for_reader()),
            None => {
                state.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    pub(crate) fn cancel(&self, reason: Option<String>) {
        let mut state = self.lock();
        if let Some(source) = state.source.clone() {
            drop(state);
            return source.cancel(reason);
        }
        if state.ending.is_none() || matches!(state.ending, Some(Ending::Closed | Ending::Failed(_))) {
            state.ending = Some(Ending::Cancelled(reason));
        }
        state.chunks.clear();
        state.buffered = 0;
        if let Some(waker) = state.writer.take() {
            waker.wake();
        }
    }

    pub(crate) fn set_window(&self, window: Window) {
        let mut state = self.lock();
        state.window = window;
        if let Some(waker) = state.writer.take() {
            waker.wake();
        }
        if let Some(source) = state.source.clone() {
            drop(state);
            source.set_window(window);
        }
    }

    /// The consumer end left: hand what is buffered to `sink` (called with
    /// the connection locked: records only, the caller schedules).
    pub(crate) fn redirect_to_sink(&self, sink: &Arc<RemoteProducer>) {
        let mut state = self.lock();
        for chunk in state.chunks.drain(..) {
            if sink.push_bytes(chunk).is_err() {
                break;
            }
        }
        state.buffered = 0;
        match state.ending.take() {
            Some(Ending::Closed) => drop(sink.mark_closing(None)),
            Some(Ending::Failed(err)) => drop(sink.mark_closing(Some(err))),
            Some(Ending::Aborted) => drop(sink.mark_aborted()),
            _ => {}
        }
        state.sink = Some(sink.clone());
        if let Some(waker) = state.writer.take() {
            waker.wake();
        }
    }

    /// Splices this stream's producer side into `target`'s (see `Shared::forward_to`).
    pub(crate) fn forward_to(&self, target: &Arc<ByteCore>) {
        let mut state = self.lock();
        for chunk in state.chunks.drain(..) {
            if target.write(chunk).is_err() {
                break;
            }
        }
        state.buffered = 0;
        match state.ending.take() {
            Some(Ending::Closed) => drop(target.close(None)),
            Some(Ending::Failed(err)) => drop(target.close(Some(err))),
            Some(Ending::Aborted) => target.abort(),
            _ => {}
        }
        state.forward = Some(target.clone());
        if let Some(waker) = state.writer.take() {
            waker.wake();
        }
    }

    pub(crate) fn forward(&self) -> Option<Arc<ByteCore>> {
        self.lock().forward.clone()
    }

    pub(crate) fn redirect_to_source(&self, source: &Arc<RemoteConsumer>) {
        let mut state = self.lock();
        state.source = Some(source.clone());
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
    }

    /// Whether the producer end went over a connection.
    pub(crate) fn has_source(&self) -> bool {
        self.lock().source.is_some()
    }

    /// Whether the consumer end went elsewhere: writes no longer stay here.
    pub(crate) fn is_redirected(&self) -> bool {
        let state = self.lock();
        state.sink.is_some() || state.forward.is_some()
    }

    pub(crate) fn sink(&self) -> Option<Arc<RemoteProducer>> {
        self.lock().sink.clone()
    }

    pub(crate) fn drained_source(&self) -> Option<Arc<RemoteConsumer>> {
        let state = self.lock();
        if state.buffered == 0 {
            state.source.clone()
        } else {
            None
        }
    }

    pub(crate) fn window(&self) -> Window {
        let state = self.lock();
        if let Some(forward) = state.forward.clone() {
            drop(state);
            return forward.window();
        }
        match &state.sink {
            Some(sink) => sink.window(),
            None => state.window,
        }
    }
}

/// Takes up to `max` bytes off the front: zero-copy within one chunk.
fn take(chunks: &mut VecDeque<Bytes>, max: usize) -> Bytes {
    let single = chunks.len() == 1;
    let front = chunks.front_mut().expect("buffered > 0");
    if front.len() >= max || single {
        let data = front.split_to(max.min(front.len()));
        if front.is_empty() {
            chunks.pop_front();
        }
        return data;
    }
    // Sized by what is buffered, never by `max` alone: a peer chooses `max`.
    let want = chunks.iter().map(Bytes::len).sum::<usize>().min(max);
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
