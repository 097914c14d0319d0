//! How a stream ended: a value every path carries on (made here, received,
//! returned by a call, half read), never lost on the way.

use crate::RpcError;

/// How a sequence ended.
#[derive(Clone, Debug)]
pub(crate) enum Ending {
    /// The producer closed it: the consumer reads what is left, then the end.
    Closed,
    /// The producer closed it with an error, seen after the items.
    Failed(RpcError),
    /// The producer aborted it: unread items are gone.
    Aborted,
    /// The consumer cancelled it, maybe saying why.
    Cancelled(Option<String>),
    /// The connection carrying it went away.
    Disconnected(RpcError),
}

impl Ending {
    /// What a read sees once the buffer is drained.
    pub(crate) fn for_reader<T>(&self) -> Result<Option<T>, RpcError> {
        match self {
            Ending::Closed => Ok(None),
            Ending::Failed(err) | Ending::Disconnected(err) => Err(err.clone()),
            Ending::Aborted => Err(RpcError::new(crate::ErrorKind::Aborted, "the producer aborted the sequence")),
            Ending::Cancelled(reason) => Err(cancelled(reason)),
        }
    }

    /// What a write or flush sees.
    pub(crate) fn for_writer(&self) -> RpcError {
        match self {
            Ending::Closed | Ending::Failed(_) => {
                RpcError::new(crate::ErrorKind::Aborted, "the sequence was already closed by its producer")
            }
            Ending::Aborted => RpcError::new(crate::ErrorKind::Aborted, "the sequence was aborted"),
            Ending::Cancelled(reason) => cancelled(reason),
            Ending::Disconnected(err) => err.clone(),
        }
    }

    /// Whether the consumer throws away unread items at once.
    pub(crate) fn discards(&self) -> bool {
        matches!(self, Ending::Aborted | Ending::Cancelled(_))
    }
}

fn cancelled(reason: &Option<String>) -> RpcError {
    match reason {
        Some(reason) => RpcError::cancelled(format!("the consumer cancelled the sequence: {reason}")),
        None => RpcError::cancelled("the consumer cancelled the sequence"),
    }
}
