//! A tracing subscriber for tests that records events with their fields and
//! the fields of their enclosing spans.
//!
//! One subscriber is installed as the process-wide default (per-thread
//! defaults, set and dropped by tests running in parallel, race on each
//! callsite's cached interest and lose events); it keeps what it sees per
//! thread. A `#[tokio::test]` on the current-thread runtime runs all its
//! tasks on its own thread, so each test sees only its own events.

use std::cell::RefCell;
use std::sync::Once;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One event the subscriber saw.
#[derive(Clone, Debug)]
pub struct SeenEvent {
    /// Its level.
    pub level: Level,
    /// Its fields, `message` included, as `Debug` text.
    pub fields: Vec<(String, String)>,
    /// The event's spans, innermost first: name and fields.
    pub scope: Vec<(String, Vec<(String, String)>)>,
}

impl SeenEvent {
    /// The field `name`, as text.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The event's message.
    pub fn message(&self) -> &str {
        self.field("message").unwrap_or("")
    }

    /// The fields of the enclosing span called `name`, if any.
    pub fn span(&self, name: &str) -> Option<&[(String, String)]> {
        self.scope.iter().find(|(n, _)| n == name).map(|(_, fields)| fields.as_slice())
    }
}

/// The field `name` of a span's `fields`.
pub fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let name = field.name().to_string();
        let value = format!("{value:?}");
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

thread_local! {
    /// What the subscriber saw on this thread: each test runs its tasks on
    /// its own thread, so tests running in parallel do not see each other's.
    static SEEN: RefCell<Vec<SeenEvent>> = const { RefCell::new(Vec::new()) };
}

/// This thread's view of the process-wide capturing subscriber.
pub struct Capture;

impl Capture {
    /// Every event seen on this thread since [`capture`].
    pub fn events(&self) -> Vec<SeenEvent> {
        SEEN.with(|seen| seen.borrow().clone())
    }

    /// The events with this message.
    pub fn with_message(&self, message: &str) -> Vec<SeenEvent> {
        self.events().into_iter().filter(|e| e.message() == message).collect()
    }
}

/// The layer behind [`Capture`].
struct Recorder;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| {
                        let fields = span.extensions().get::<Fields>().map(|f| f.0.clone()).unwrap_or_default();
                        (span.name().to_string(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let seen = SeenEvent { level: *event.metadata().level(), fields: fields.0, scope };
        SEEN.with(|log| log.borrow_mut().push(seen));
    }
}

/// Installs the capturing subscriber as the global default (once: a global
/// default keeps every callsite's interest fixed, where per-thread defaults
/// set and dropped by parallel tests race on it), and clears this thread's log.
pub fn capture() -> Capture {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(Recorder);
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in this test binary");
    });
    SEEN.with(|seen| seen.borrow_mut().clear());
    Capture
}
