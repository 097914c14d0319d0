//! `#[eventual]` expands to fully qualified paths: it compiles in a module
//! with no prelude, where common names are shadowed by user items, and with
//! argument names that match the generated code's own locals.

mod hygiene {
    #![no_implicit_prelude]
    #![allow(dead_code, non_camel_case_types, non_upper_case_globals)]

    // Shadow everything the expansion might name without a leading `::`.
    mod core {}
    mod std {}
    mod rpc_core {}
    mod serde {}
    struct Result;
    struct Ok;
    struct Err;
    struct Box;
    struct Arc;
    struct Send;
    struct Sync;
    struct Future;
    struct Client;
    struct Promise;
    struct Capability;
    struct RpcError;
    struct InterfaceInfo;
    struct MethodId;
    struct Dispatch;
    struct PlayerDispatch;
    struct __T;
    trait Clone {}
    trait Debug {}
    trait Serialize {}
    trait Deserialize {}
    fn call() {}
    fn pipeline() {}
    fn unimplemented() {}
    fn ready_err() {}
    fn reply_value() {}
    fn reply_result() {}
    fn interface_id() {}
    // Single-letter constants, which would turn a generated binding of the
    // same name into a constant pattern.
    const e: u8 = 0;
    const f: u8 = 0;
    const s: u8 = 0;
    const v: u8 = 0;

    /// A single-letter type name, as the dispatcher's generic is `__T`.
    #[derive(::serde::Serialize, ::serde::Deserialize, ::core::fmt::Debug)]
    pub struct T(pub u32);

    /// An application error.
    #[derive(::serde::Serialize, ::serde::Deserialize, ::core::fmt::Debug)]
    pub struct Oops(pub ::std::string::String);

    impl ::core::convert::From<::rpc_core::RpcError> for Oops {
        fn from(error: ::rpc_core::RpcError) -> Self {
            Oops(::std::string::ToString::to_string(&error))
        }
    }

    /// A player.
    #[::rpc_core::eventual]
    pub trait Player {
        /// The player's name.
        fn name(&self) -> ::std::string::String;
    }

    /// Every method shape, with argument names that the expansion uses.
    #[::rpc_core::eventual]
    pub trait Shapes {
        async fn result(&self, call: u32, err: T) -> ::core::result::Result<T, Oops>;
        fn value(&self, args: u32, arg0: u32, client: u32) -> u32;
        async fn unit(&self, object: ::std::string::String);
        fn nothing(&self);
        async fn player(&self, self_: ::std::vec::Vec<u8>) -> PlayerProxy;
        fn patterns(&self, _: u8, (a, b): (u8, u8), mut serializer: u8) -> (u8, u8);
    }
}

use hygiene::{Oops, Player, PlayerProxy, Shapes, ShapesProxy, T};

struct Server;

impl Player for Server {
    fn name(&self) -> String {
        "ada".to_string()
    }
}

impl Shapes for Server {
    async fn result(&self, call: u32, err: T) -> Result<T, Oops> {
        match call {
            0 => Err(Oops("zero".to_string())),
            _ => Ok(T(call + err.0)),
        }
    }
    fn value(&self, args: u32, arg0: u32, client: u32) -> u32 {
        args * 100 + arg0 * 10 + client
    }
    async fn unit(&self, _object: String) {}
    fn nothing(&self) {}
    async fn player(&self, _: Vec<u8>) -> PlayerProxy {
        PlayerProxy::new(Server)
    }
    fn patterns(&self, _: u8, (a, b): (u8, u8), serializer: u8) -> (u8, u8) {
        (a + serializer, b)
    }
}

#[tokio::test]
async fn the_expansion_works_without_a_prelude() {
    let shapes = ShapesProxy::new(Server);
    assert_eq!(shapes.result(1, T(2)).await.unwrap().0, 3);
    assert_eq!(shapes.result(0, T(2)).await.unwrap_err().0, "zero");
    assert_eq!(shapes.value(1, 2, 3).await.unwrap(), 123);
    shapes.unit("x".to_string()).await.unwrap();
    shapes.nothing().await.unwrap();
    let player: PlayerProxy = shapes.player(vec![]);
    assert_eq!(player.name().await.unwrap(), "ada");
    assert_eq!(shapes.patterns(0, (1, 2), 3).await.unwrap(), (4, 2));
}
