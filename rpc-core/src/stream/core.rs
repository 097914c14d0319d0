//! The in-process core shared by the two ends of a sequence.
//!
//! Both ends of a pair created in this process point at one `Shared<T>`.
//! Items are moved, never serialized. When one end is sent over a connection,
//! the core is told where that end went (`sink` for a consumer that left,
//! `source` for a producer that left) and the end that stayed delegates to it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{Ending, Window};
use super::{RemoteConsumer, RemoteProducer};
use crate::RpcError;

pub(crate) struct Shared<T> {
    state: Mutex<Core<T>>,
}

pub(crate) struct Core<T> {
    /// Written and not yet read.
    pub(crate) items: VecDeque<T>,
    pub(crate) window: Window,
    pub(crate) ending: Option<Ending>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The consumer end was sent away: writes go here.
    pub(crate) sink: Option<Arc<RemoteProducer>>,
    /// Spliced into another in-process pair (a local handler's returned
    /// sequence feeding the caller's): everything goes to that core.
    forward: Option<Arc<Shared<T>>>,
    /// The producer end was sent away: reads come from here once `items` is drained.
    pub(crate) source: Option<Arc<RemoteConsumer>>,
}

impl<T> Shared<T> {
    pub(crate) fn new(window: Window) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(Core {
                items: VecDeque::new(),
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ----- producer side ---------------------------------------------------

    /// Buffers `item` for the consumer; never waits.
    pub(crate) fn write(&self, item: T) -> Result<(), RpcError>
    where
        T: serde::Serialize,
    {
        let mut core = self.lock();
        if let Some(forward) = core.forward.clone() {
            drop(core);
            return forward.write(item);
        }
        if let Some(sink) = core.sink.clone() {
            drop(core);
            return sink.write(&item);
        }
        if let Some(ending) = &core.ending {
            return Err(ending.for_writer());
        }
        core.items.push_back(item);
        if let Some(waker) = core.reader.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Ready once fewer than `capacity` items are unread.
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        let mut core = self.lock();
        if let Some(forward) = core.forward.clone() {
            drop(core);
            return forward.poll_flush(cx);
        }
        if let Some(sink) = core.sink.clone() {
            drop(core);
            return sink.poll_flush(cx);
        }
        if let Some(ending) = &core.ending {
            return Poll::Ready(Err(ending.for_writer()));
        }
        if core.items.len() < core.window.capacity as usize {
            return Poll::Ready(Ok(()));
        }
        core.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ends the sequence from the producer side, after the buffered items.
    ///
    /// # Errors
    ///
    /// `Cancelled` if the consumer cancelled first.
    pub(crate) fn close(&self, error: Option<RpcError>) -> Result<(), RpcError> {
        let mut core = self.lock();
        if let Some(forward) = core.forward.clone() {
            drop(core);
            return forward.close(error);
        }
        if let Some(sink) = core.sink.clone() {
            drop(core);
            sink.close(error);
            return Ok(());
        }
        if let Some(ending @ Ending::Cancelled(_)) = &core.ending {
            return Err(ending.for_writer());
        }
        if core.ending.is_none() {
            core.ending = Some(match error {
                None => Ending::Closed,
                Some(err) => Ending::Failed(err),
            });
        }
        if let Some(waker) = core.reader.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Ends the sequence at once, dropping what the consumer has not read.
    pub(crate) fn abort(&self) {
        let mut core = self.lock();
        if let Some(forward) = core.forward.clone() {
            drop(core);
            return forward.abort();
        }
        if let Some(sink) = core.sink.clone() {
            drop(core);
            return sink.abort();
        }
        if core.ending.is_none() {
            core.ending = Some(Ending::Aborted);
        }
        let dropped = std::mem::take(&mut core.items);
        if let Some(waker) = core.reader.take() {
            waker.wake();
        }
        drop(core);
        drop(dropped);
    }

    /// Splices this pair's producer side into `target`'s: what is buffered
    /// moves there, and from now on writes, flushes, close and abort go there,
    /// so `target`'s consumer window, cancel reason and abort hold end to end.
    pub(crate) fn forward_to(&self, target: &Arc<Shared<T>>) {
        let mut core = self.lock();
        for item in core.items.drain(..) {
            if target.write_local(item).is_err() {
                break;
            }
        }
        match core.ending.take() {
            Some(Ending::Closed) => drop(target.close(None)),
            Some(Ending::Failed(err)) => drop(target.close(Some(err))),
            Some(Ending::Aborted) => target.abort(),
            _ => {}
        }
        core.forward = Some(target.clone());
        if let Some(waker) = core.writer.take() {
            waker.wake();
        }
    }

    /// Pushes without the serialization bound (used when splicing).
    fn write_local(&self, item: T) -> Result<(), RpcError> {
        let mut core = self.lock();
        if let Some(ending) = &core.ending {
            return Err(ending.for_writer());
        }
        core.items.push_back(item);
        if let Some(waker) = core.reader.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Where a writer should go directly: the spliced-into core, if any.
    pub(crate) fn forward(&self) -> Option<Arc<Shared<T>>> {
        self.lock().forward.clone()
    }

    /// The consumer end left: move what is buffered to `sink` and write there from now on.
    pub(crate) fn redirect_to_sink(&self, sink: &Arc<RemoteProducer>)
    where
        T: serde::Serialize,
    {
        let mut core = self.lock();
        for item in core.items.drain(..) {
            if sink.push(&item).is_err() {
                break;
            }
        }
        // Called with the connection locked: record, the caller schedules.
        match core.ending.take() {
            Some(Ending::Closed) => drop(sink.mark_closing(None)),
            Some(Ending::Failed(err)) => drop(sink.mark_closing(Some(err))),
            Some(Ending::Aborted) => drop(sink.mark_aborted()),
            _ => {}
        }
        core.sink = Some(sink.clone());
        if let Some(waker) = core.writer.take() {
            waker.wake();
        }
    }

    /// The producer end left: read from `source` once `items` is drained.
    pub(crate) fn redirect_to_source(&self, source: &Arc<RemoteConsumer>) {
        let mut core = self.lock();
        core.source = Some(source.clone());
        if let Some(waker) = core.reader.take() {
            waker.wake();
        }
    }

    /// Whether the producer end went over a connection.
    pub(crate) fn has_source(&self) -> bool {
        self.lock().source.is_some()
    }

    /// Whether the consumer end went elsewhere (over a connection, or
    /// spliced into another pair): writes no longer stay in this core.
    pub(crate) fn is_redirected(&self) -> bool {
        let core = self.lock();
        core.sink.is_some() || core.forward.is_some()
    }

    /// Where writes go, if the consumer end left.
    pub(crate) fn sink(&self) -> Option<Arc<RemoteProducer>> {
        self.lock().sink.clone()
    }

    /// Where reads come from, if the producer end left and nothing written
    /// before it left is still unread.
    pub(crate) fn drained_source(&self) -> Option<Arc<RemoteConsumer>> {
        let core = self.lock();
        if core.items.is_empty() {
            core.source.clone()
        } else {
            None
        }
    }

    /// The window the consumer set (so a writer can report it).
    pub(crate) fn window(&self) -> Window {
        let core = self.lock();
        if let Some(forward) = core.forward.clone() {
            drop(core);
            return forward.window();
        }
        match &core.sink {
            Some(sink) => sink.window(),
            None => core.window,
        }
    }

    // ----- consumer side ---------------------------------------------------

    /// The next item: served from the buffer without yielding when there is one.
    pub(crate) fn poll_read(&self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, RpcError>>
    where
        T: serde::de::DeserializeOwned,
    {
        let mut core = self.lock();
        if !matches!(core.ending, Some(Ending::Aborted | Ending::Cancelled(_))) {
            if let Some(item) = core.items.pop_front() {
                if let Some(waker) = core.writer.take() {
                    waker.wake();
                }
                return Poll::Ready(Ok(Some(item)));
            }
        }
        if let Some(source) = core.source.clone() {
            drop(core);
            return source.poll_read(cx);
        }
        match &core.ending {
            Some(ending) => Poll::Ready(ending.for_reader()),
            None => {
                core.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Ends the sequence from the consumer side.
    pub(crate) fn cancel(&self, reason: Option<String>) {
        let mut core = self.lock();
        if let Some(source) = core.source.clone() {
            drop(core);
            return source.cancel(reason);
        }
        if core.ending.is_none() || matches!(core.ending, Some(Ending::Closed | Ending::Failed(_))) {
            core.ending = Some(Ending::Cancelled(reason));
        }
        let dropped = std::mem::take(&mut core.items);
        if let Some(waker) = core.writer.take() {
            waker.wake();
        }
        drop(core);
        drop(dropped);
    }

    /// Changes the consumer's window; takes effect for the producer at once.
    pub(crate) fn set_window(&self, window: Window) {
        let mut core = self.lock();
        core.window = window;
        if let Some(waker) = core.writer.take() {
            waker.wake();
        }
        if let Some(source) = core.source.clone() {
            drop(core);
            source.set_window(window);
        }
    }
}
