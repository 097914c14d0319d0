//! Sequences: typed streams that are capabilities.
//!
//! A sequence is a pair: [`Sequence<T>`], the consumer end, and
//! [`SequenceWriter<T>`], the producer end. Either end can be sent anywhere a
//! value can go — an argument, a result, a struct field, an item of another
//! sequence — and the pair keeps working across the connection, with the
//! consumer's flow control:
//!
//! * **capacity**: how many items may be unread at once (in flight plus
//!   buffered). The producer never sends past it; `flush` waits for room.
//! * **batch size**: how many items travel in one network message.
//!
//! Items written close together travel together: a write only buffers, and
//! the connection's writer task packs everything buffered into as few
//! messages (and socket writes) as the window allows.
//!
//! # Examples
//!
//! ```
//! use futures::StreamExt;
//! use rpc_core::Sequence;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rpc_core::RpcError> {
//! let (mut writer, mut numbers) = Sequence::<u32>::channel();
//! tokio::spawn(async move {
//!     for n in 0..5 {
//!         writer.write(n)?;
//!         writer.flush().await?; // waits while the consumer's window is full
//!     }
//!     writer.close(None).await
//! });
//! let mut seen = Vec::new();
//! while let Some(n) = numbers.next().await {
//!     seen.push(n?);
//! }
//! assert_eq!(seen, [0, 1, 2, 3, 4]);
//! # Ok(())
//! # }
//! ```

mod backend;
mod byte_stream;
mod core;
mod end;
mod kind;
mod sequence;
mod writer;

pub use byte_stream::{bytes_result, splice_bytes, Bytes, BytesWriter, DEFAULT_BYTE_WINDOW, DEFAULT_MAX_READ};
pub use sequence::Sequence;
pub use writer::SequenceWriter;

pub(crate) use crate::proto::{ReadCache, RemoteConsumer};
pub(crate) use crate::proto::{RemoteProducer, WriterLane};
pub(crate) use crate::wire::Window;

use serde::Serialize;

/// Default capacity of a new sequence, in items.
pub const DEFAULT_CAPACITY: u32 = 1024;
/// Default batch size of a new sequence, in items per message.
pub const DEFAULT_BATCH: u32 = 256;

/// The window of a new stream: what the stream layer starts from (the wire
/// layer only carries windows).
impl Default for Window {
    fn default() -> Self {
        Window { capacity: DEFAULT_CAPACITY, batch: DEFAULT_BATCH }
    }
}

pub(crate) use crate::proto::Ending;

/// For generated code: the caller's end of a returned sequence, holding the
/// call that fills it. If the call fails, the sequence ends with its error.
pub fn sequence_result<T: Send + 'static>(mut reader: Sequence<T>, call: crate::Promise<()>) -> Sequence<T> {
    reader.keep_alive(Box::new(call));
    reader
}

/// For generated code: connects the sequence a handler returned to the
/// writer the caller sent, so the handler's items go straight to the caller.
pub fn splice<T: Serialize + serde::de::DeserializeOwned + Send + 'static>(from: Sequence<T>, to: SequenceWriter<T>) {
    end::splice(from.take_end(), to.take_backend());
}
