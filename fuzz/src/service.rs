//! The server the `connection` target and the seed recorder talk to: unary
//! methods, a capability result, sequences and byte streams both ways, a
//! writer argument, capabilities passed back in and called, a cancellable
//! slow call. Every size a caller chooses is capped, so one input stays cheap.

use std::time::Duration;

use rpc_core::{eventual, Bytes, BytesWriter, RpcError, Sequence, SequenceWriter};
use serde::{Deserialize, Serialize};

use crate::values::{CapItem, Item, Record};

/// Largest count of items a caller can ask for.
pub const MAX_ITEMS: u32 = 256;
/// Largest byte count a caller can ask for.
pub const MAX_BYTES: u32 = 64 << 10;
/// Longest a `slow` call sleeps (virtual time).
pub const MAX_SLOW_MS: u32 = 20_000;

/// An application error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppError {
    Refused(String),
    Rpc(String),
}

impl From<RpcError> for AppError {
    fn from(err: RpcError) -> Self {
        AppError::Rpc(err.to_string())
    }
}

/// The bootstrap interface. Method ids are declaration indexes (see `method`).
#[eventual]
pub trait Fuzzed {
    /// 0
    fn add(&self, a: i64, b: i64) -> i64;
    /// 1
    async fn echo(&self, record: Record) -> Record;
    /// 2: a capability result, usable (pipelined) at once.
    async fn child(&self, name: String) -> ChildProxy;
    /// 3: a returned sequence.
    fn numbers(&self, n: u32) -> Sequence<u64>;
    /// 4: an uploaded sequence, read to its end.
    async fn sum(&self, items: Sequence<u64>) -> Result<u64, RpcError>;
    /// 5: a returned byte stream.
    fn blob(&self, len: u32) -> Bytes;
    /// 6: an uploaded byte stream, read to its end.
    async fn upload(&self, data: Bytes) -> Result<u64, RpcError>;
    /// 7: the caller's writer, filled by the server.
    async fn fill(&self, n: u32, into: SequenceWriter<Item>) -> Result<(), RpcError>;
    /// 8: a capability passed in and called.
    async fn call_back(&self, child: ChildProxy) -> Result<u32, RpcError>;
    /// 9: sleeps `ms` of virtual time (cancel it with a Finish).
    async fn slow(&self, ms: u32) -> u32;
    /// 10: items holding capabilities and streams.
    async fn items(&self, items: Sequence<CapItem>) -> Result<u32, RpcError>;
    /// 11: a sequence of sequences.
    async fn nested(&self, outer: Sequence<Sequence<u32>>) -> Result<u64, RpcError>;
    /// 12: the caller's byte writer, filled by the server.
    async fn fill_bytes(&self, len: u32, into: BytesWriter) -> Result<(), RpcError>;
    /// 13: an application error when `n` is odd.
    async fn check(&self, n: u32) -> Result<u32, AppError>;
}

/// A capability the server hands out (and a client may implement too).
#[eventual]
pub trait Child {
    /// 0
    fn ping(&self) -> u32;
    /// 1: another capability, for pipelined chains.
    async fn sibling(&self) -> ChildProxy;
    /// 2
    fn name(&self) -> String;
}

/// Method ids of [`Fuzzed`], in declaration order.
pub mod method {
    pub const ADD: u16 = 0;
    pub const ECHO: u16 = 1;
    pub const CHILD: u16 = 2;
    pub const NUMBERS: u16 = 3;
    pub const SUM: u16 = 4;
    pub const BLOB: u16 = 5;
    pub const UPLOAD: u16 = 6;
    pub const FILL: u16 = 7;
    pub const CALL_BACK: u16 = 8;
    pub const SLOW: u16 = 9;
    pub const ITEMS: u16 = 10;
    pub const NESTED: u16 = 11;
    pub const FILL_BYTES: u16 = 12;
    pub const CHECK: u16 = 13;
}

/// Interface id of [`Fuzzed`].
pub const FUZZED: u64 = rpc_core::__private::interface_id("Fuzzed");
/// Interface id of [`Child`].
pub const CHILD: u64 = rpc_core::__private::interface_id("Child");

/// The server's bootstrap object.
pub struct Server;

/// The objects [`Fuzzed::child`] returns.
pub struct Kid {
    pub name: String,
    pub generation: u32,
}

impl Fuzzed for Server {
    fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn echo(&self, record: Record) -> Record {
        record
    }

    async fn child(&self, name: String) -> ChildProxy {
        ChildProxy::new(Kid { name, generation: 0 })
    }

    fn numbers(&self, n: u32) -> Sequence<u64> {
        let n = n.min(MAX_ITEMS);
        Sequence::from_stream(futures::stream::iter(0..u64::from(n)))
    }

    async fn sum(&self, mut items: Sequence<u64>) -> Result<u64, RpcError> {
        let mut total = 0u64;
        while let Some(n) = items.read().await? {
            total = total.wrapping_add(n);
        }
        Ok(total)
    }

    fn blob(&self, len: u32) -> Bytes {
        let len = len.min(MAX_BYTES) as usize;
        let (mut writer, reader) = Bytes::channel();
        tokio::spawn(async move {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for chunk in data.chunks(4096) {
                if writer.write(bytes::Bytes::copy_from_slice(chunk)).is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
            let _ = writer.close(None).await;
        });
        reader
    }

    async fn upload(&self, mut data: Bytes) -> Result<u64, RpcError> {
        let mut total = 0u64;
        while let Some(chunk) = data.read_chunk().await? {
            total += chunk.len() as u64;
        }
        Ok(total)
    }

    async fn fill(&self, n: u32, mut into: SequenceWriter<Item>) -> Result<(), RpcError> {
        for i in 0..n.min(MAX_ITEMS) {
            let item = match i % 3 {
                0 => Item::Number(u64::from(i)),
                1 => Item::Text(format!("item {i}")),
                _ => Item::Pair { key: "k".into(), value: Some(vec![i]) },
            };
            into.write(item)?;
            into.flush().await?;
        }
        into.close(None).await
    }

    async fn call_back(&self, child: ChildProxy) -> Result<u32, RpcError> {
        let a = child.ping().await?;
        let name = child.name().await?;
        Ok(a.wrapping_add(name.len() as u32))
    }

    async fn slow(&self, ms: u32) -> u32 {
        tokio::time::sleep(Duration::from_millis(u64::from(ms.min(MAX_SLOW_MS)))).await;
        ms
    }

    async fn items(&self, mut items: Sequence<CapItem>) -> Result<u32, RpcError> {
        let mut seen = 0u32;
        while let Some(item) = items.read().await? {
            seen += visit(item).await?;
            if seen > MAX_ITEMS {
                break;
            }
        }
        Ok(seen)
    }

    async fn nested(&self, mut outer: Sequence<Sequence<u32>>) -> Result<u64, RpcError> {
        let mut total = 0u64;
        let mut inners = 0;
        while let Some(mut inner) = outer.read().await? {
            while let Some(n) = inner.read().await? {
                total = total.wrapping_add(u64::from(n));
            }
            inners += 1;
            if inners > MAX_ITEMS {
                break;
            }
        }
        Ok(total)
    }

    async fn fill_bytes(&self, len: u32, mut into: BytesWriter) -> Result<(), RpcError> {
        let data = vec![0xa5u8; len.min(MAX_BYTES) as usize];
        for chunk in data.chunks(8192) {
            into.write(bytes::Bytes::copy_from_slice(chunk))?;
            into.flush().await?;
        }
        into.close(None).await
    }

    async fn check(&self, n: u32) -> Result<u32, AppError> {
        if n % 2 == 1 {
            Err(AppError::Refused(format!("{n} is odd")))
        } else {
            Ok(n / 2)
        }
    }
}

/// Uses what an item holds: calls a child, drains a stream (boxed: recursive).
fn visit(item: CapItem) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, RpcError>> + Send>> {
    Box::pin(async move {
        Ok(match item {
            CapItem::Plain(_) => 1,
            CapItem::Child(child) => child.ping().await?,
            CapItem::Stream { mut items, .. } => {
                let mut n = 0;
                while items.read().await?.is_some() {
                    n += 1;
                    if n > MAX_ITEMS {
                        break;
                    }
                }
                n
            }
            CapItem::Raw(mut data) => {
                let mut n = 0;
                while let Some(chunk) = data.read_chunk().await? {
                    n += chunk.len() as u32;
                    if n > MAX_BYTES {
                        break;
                    }
                }
                n
            }
            CapItem::Both(a, b) => {
                let mut n = visit(*a).await?;
                if let Some(b) = b {
                    n += visit(*b).await?;
                }
                n
            }
        })
    })
}

impl Child for Kid {
    fn ping(&self) -> u32 {
        7 + self.generation
    }

    async fn sibling(&self) -> ChildProxy {
        ChildProxy::new(Kid { name: format!("{}'", self.name), generation: self.generation.saturating_add(1) })
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
