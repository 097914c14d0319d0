//! rpc-core: the runtime of a capability-based eventual RPC framework.
#![warn(missing_docs, unreachable_pub)]

extern crate self as rpc_core;

mod cap;
mod conn;
mod error;
mod payload;
mod promise;
mod wire;

pub use cap::{Capability, Client};
pub use conn::{connect, serve, serve_with, Config, Connection, ConnectionBuilder, Limits};
pub use error::{ErrorKind, RpcError};
pub use payload::Payload;
pub use promise::Promise;
pub use rpc_macros::eventual;
pub use wire::PROTOCOL_VERSION;

/// Items used by code that `#[eventual]` generates. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::cap::dispatch::{
        interface_id, ready_err, reply_result, reply_value, unimplemented, Dispatch, DispatchFuture, IncomingCall,
        InterfaceInfo, MethodId, Reply,
    };
    pub use serde;
}
