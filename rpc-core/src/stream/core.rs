//! The in-process core shared by the two ends of a stream, for sequences
//! and byte streams alike (generic over the [`Kind`] of unit it carries).
//!
//! Both ends of a pair created in this process point at one `Shared<K>`.
//! Units are moved, never serialized. When one end is sent over a connection,
//! the core is told where that end went (`sink` for a consumer that left,
//! `source` for a producer that left) and the end that stayed delegates to it.
//! When a local handler's returned stream is spliced into the caller's, the
//! core `forward`s everything to the caller's core.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::kind::{Consume, Kind, Produce};
use super::{Ending, Window};
use super::{RemoteConsumer, RemoteProducer, WriterLane};
use crate::proto::Protocol;
use crate::RpcError;

pub(crate) struct Shared<K: Kind> {
    state: Mutex<Core<K>>,
}

pub(crate) struct Core<K: Kind> {
    /// Written and not yet read.
    units: VecDeque<K::Unit>,
    /// The weight of `units`, counted against the window.
    buffered: usize,
    pub(crate) window: Window,
    ending: Option<Ending>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The consumer end was sent away: writes go here.
    sink: Option<Arc<RemoteProducer>>,
    /// Spliced into another in-process pair (a local handler's returned
    /// stream feeding the caller's): everything goes to that core.
    forward: Option<Arc<Shared<K>>>,
    /// The producer end was sent away: reads come from here once `units` is drained.
    source: Option<Arc<RemoteConsumer>>,
}

/// Where a producer-side call goes instead of this core.
enum Redirect<K: Kind> {
    Forward(Arc<Shared<K>>),
    Sink(Arc<RemoteProducer>),
}

impl<K: Kind> Core<K> {
    fn redirect(&self) -> Option<Redirect<K>> {
        if let Some(forward) = &self.forward {
            return Some(Redirect::Forward(forward.clone()));
        }
        self.sink.as_ref().map(|sink| Redirect::Sink(sink.clone()))
    }

    /// Buffers `unit` here (an empty chunk only wakes the reader).
    fn push(&mut self, unit: K::Unit) -> Result<(), RpcError> {
        if let Some(ending) = &self.ending {
            return Err(ending.for_writer());
        }
        let weight = K::weight(&unit);
        if weight > 0 {
            self.buffered += weight;
            self.units.push_back(unit);
        }
        wake(&mut self.reader);
        Ok(())
    }

    /// Ends the stream after what is buffered (unless the consumer cancelled).
    fn close(&mut self, error: Option<RpcError>) -> Result<(), RpcError> {
        if let Some(ending @ Ending::Cancelled(_)) = &self.ending {
            return Err(ending.for_writer());
        }
        if self.ending.is_none() {
            self.ending = Some(error.map_or(Ending::Closed, Ending::Failed));
        }
        wake(&mut self.reader);
        Ok(())
    }

    /// Ends the stream at once; returns the unread units, to drop unlocked.
    fn abort(&mut self) -> VecDeque<K::Unit> {
        if self.ending.is_none() {
            self.ending = Some(Ending::Aborted);
        }
        wake(&mut self.reader);
        self.take_units()
    }

    fn take_units(&mut self) -> VecDeque<K::Unit> {
        self.buffered = 0;
        std::mem::take(&mut self.units)
    }
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

impl<K: Kind> Shared<K> {
    pub(crate) fn new(window: Window) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(Core {
                units: VecDeque::new(),
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ----- producer side ---------------------------------------------------

    /// Buffers `unit` for the consumer; never waits.
    pub(crate) fn write(&self, unit: K::Unit) -> Result<(), RpcError>
    where
        K: Produce,
    {
        let mut core = self.lock();
        match core.redirect() {
            None => core.push(unit),
            Some(redirect) => {
                drop(core);
                match redirect {
                    Redirect::Forward(forward) => forward.write(unit),
                    Redirect::Sink(sink) => K::write(&sink, &mut WriterLane::none(), unit),
                }
            }
        }
    }

    /// Room left in the consumer's window (in units of weight, at least 1);
    /// pending while there is none.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<usize, RpcError>> {
        let mut core = self.lock();
        if let Some(redirect) = core.redirect() {
            drop(core);
            return match redirect {
                Redirect::Forward(forward) => forward.poll_room(cx),
                Redirect::Sink(sink) => K::poll_room(&sink, cx),
            };
        }
        if let Some(ending) = &core.ending {
            return Poll::Ready(Err(ending.for_writer()));
        }
        let capacity = core.window.capacity as usize;
        if core.buffered < capacity {
            return Poll::Ready(Ok(capacity - core.buffered));
        }
        core.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ends the stream from the producer side, after the buffered units.
    ///
    /// # Errors
    ///
    /// `Cancelled` if the consumer cancelled first.
    pub(crate) fn close(&self, error: Option<RpcError>) -> Result<(), RpcError> {
        let mut core = self.lock();
        match core.redirect() {
            None => core.close(error),
            Some(redirect) => {
                drop(core);
                match redirect {
                    Redirect::Forward(forward) => forward.close(error),
                    Redirect::Sink(sink) => {
                        sink.close(error);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Ends the stream at once, dropping what the consumer has not read.
    pub(crate) fn abort(&self) {
        let mut core = self.lock();
        match core.redirect() {
            None => {
                let dropped = core.abort();
                drop(core);
                drop(dropped);
            }
            Some(redirect) => {
                drop(core);
                match redirect {
                    Redirect::Forward(forward) => forward.abort(),
                    Redirect::Sink(sink) => sink.abort(),
                }
            }
        }
    }

    /// Splices this pair's producer side into `target`'s: what is buffered
    /// moves there, and from now on writes, flushes, close and abort go there,
    /// so `target`'s consumer window, cancel reason and abort hold end to end.
    ///
    /// Returns `false`, changing nothing, if `target`'s consumer end went
    /// elsewhere already (the caller pumps instead).
    pub(crate) fn forward_to(&self, target: &Arc<Shared<K>>) -> bool {
        let mut core = self.lock();
        let mut into = target.lock();
        if into.redirect().is_some() {
            return false;
        }
        let mut units = core.take_units();
        while let Some(unit) = units.pop_front() {
            if into.push(unit).is_err() {
                break;
            }
        }
        let mut dropped = VecDeque::new();
        match core.ending.take() {
            Some(Ending::Closed) => drop(into.close(None)),
            Some(Ending::Failed(err)) => drop(into.close(Some(err))),
            Some(Ending::Aborted) => dropped = into.abort(),
            _ => {}
        }
        drop(into);
        core.forward = Some(target.clone());
        wake(&mut core.writer);
        drop(core);
        drop((units, dropped));
        true
    }

    /// Where a writer should go directly: the spliced-into core, if any.
    pub(crate) fn forward(&self) -> Option<Arc<Shared<K>>> {
        self.lock().forward.clone()
    }

    /// The consumer end left: move what is buffered to `sink` (whose
    /// connection's protocol the caller has locked: `proto`) and write there
    /// from now on. Records only: the caller schedules. Lock order: the
    /// connection, then this core (a write drops the core's lock before it
    /// goes to the connection).
    pub(crate) fn redirect_to_sink(&self, sink: &Arc<RemoteProducer>, proto: &mut Protocol)
    where
        K: Produce,
    {
        let mut core = self.lock();
        let mut units = core.take_units();
        let stream = sink.id();
        while let Some(unit) = units.pop_front() {
            if K::push(proto, stream, unit).is_err() {
                break;
            }
        }
        match core.ending.take() {
            Some(Ending::Closed) => proto.producer_close(stream, None),
            Some(Ending::Failed(err)) => proto.producer_close(stream, Some(err)),
            Some(Ending::Aborted) => proto.producer_abort(stream),
            _ => {}
        }
        core.sink = Some(sink.clone());
        wake(&mut core.writer);
        drop(core);
        drop(units);
    }

    /// The producer end left: read from `source` once `units` is drained.
    pub(crate) fn redirect_to_source(&self, source: &Arc<RemoteConsumer>) {
        let mut core = self.lock();
        core.source = Some(source.clone());
        wake(&mut core.reader);
    }

    /// Whether the producer end went over a connection.
    pub(crate) fn has_source(&self) -> bool {
        self.lock().source.is_some()
    }

    /// Whether the consumer end went elsewhere (over a connection, or
    /// spliced into another pair): writes no longer stay in this core.
    pub(crate) fn is_redirected(&self) -> bool {
        self.lock().redirect().is_some()
    }

    /// Where writes go, if the consumer end left.
    pub(crate) fn sink(&self) -> Option<Arc<RemoteProducer>> {
        self.lock().sink.clone()
    }

    /// Where reads come from, if the producer end left and nothing written
    /// before it left is still unread.
    pub(crate) fn drained_source(&self) -> Option<Arc<RemoteConsumer>> {
        let core = self.lock();
        if core.units.is_empty() {
            core.source.clone()
        } else {
            None
        }
    }

    /// The window the consumer set (so a writer can report it).
    pub(crate) fn window(&self) -> Window {
        let core = self.lock();
        match core.redirect() {
            None => core.window,
            Some(redirect) => {
                drop(core);
                match redirect {
                    Redirect::Forward(forward) => forward.window(),
                    Redirect::Sink(sink) => sink.window(),
                }
            }
        }
    }

    // ----- consumer side ---------------------------------------------------

    /// The next unit (at most `max` of weight): served from the buffer
    /// without yielding when there is one.
    pub(crate) fn poll_read(&self, cx: &mut Context<'_>, max: usize) -> Poll<Result<Option<K::Unit>, RpcError>>
    where
        K: Consume,
    {
        let mut core = self.lock();
        let discarded = core.ending.as_ref().is_some_and(Ending::discards);
        if !discarded && !core.units.is_empty() {
            let unit = K::take(&mut core.units, max.max(1));
            core.buffered -= K::weight(&unit);
            wake(&mut core.writer);
            return Poll::Ready(Ok(Some(unit)));
        }
        if let Some(source) = core.source.clone() {
            drop(core);
            return K::poll_read(&source, cx, max);
        }
        match &core.ending {
            Some(ending) => Poll::Ready(ending.for_reader()),
            None => {
                core.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Ends the stream from the consumer side.
    pub(crate) fn cancel(&self, reason: Option<String>) {
        let mut core = self.lock();
        if let Some(source) = core.source.clone() {
            drop(core);
            return source.cancel(reason);
        }
        if core.ending.is_none() || matches!(core.ending, Some(Ending::Closed | Ending::Failed(_))) {
            core.ending = Some(Ending::Cancelled(reason));
        }
        let dropped = core.take_units();
        wake(&mut core.writer);
        drop(core);
        drop(dropped);
    }

    /// Changes the consumer's window; takes effect for the producer at once.
    pub(crate) fn set_window(&self, window: Window) {
        let mut core = self.lock();
        core.window = window;
        wake(&mut core.writer);
        if let Some(source) = core.source.clone() {
            drop(core);
            source.set_window(window);
        }
    }
}
