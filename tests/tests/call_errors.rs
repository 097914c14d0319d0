//! `CallError<E>`: an application error type with no framework variant and
//! no `From<RpcError>`, awaited through `split_errors()`, locally and over a
//! connection; framework failures arrive as the `RpcError` itself. Today's
//! form (`E: From<RpcError>`, awaited as it is) keeps working beside it.

use rpc_core::{eventual, CallError, Config, ErrorKind, RpcError};
use rpc_tests::{connect_pair, Via};
use serde::{Deserialize, Serialize};

/// A pure domain error: no `Rpc` variant, no `From<RpcError>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Denied {
    Locked { until: u32 },
    Unknown(String),
}

/// Today's form, with a framework variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Classic {
    Refused,
    Rpc(String),
}

impl From<RpcError> for Classic {
    fn from(err: RpcError) -> Self {
        Classic::Rpc(err.to_string())
    }
}

#[eventual]
pub trait Vault {
    async fn open(&self, code: u32) -> Result<String, Denied>;
    fn classic(&self, ok: bool) -> Result<u8, Classic>;
    /// A capability behind a fallible call, with the domain error type.
    async fn inner(&self, code: u32) -> Result<VaultProxy, Denied>;
    fn explode(&self) -> Result<u8, Denied>;
}

struct Safe;

impl Vault for Safe {
    async fn open(&self, code: u32) -> Result<String, Denied> {
        match code {
            1234 => Ok("gold".into()),
            0 => Err(Denied::Locked { until: 9 }),
            other => Err(Denied::Unknown(other.to_string())),
        }
    }
    fn classic(&self, ok: bool) -> Result<u8, Classic> {
        if ok {
            Ok(1)
        } else {
            Err(Classic::Refused)
        }
    }
    async fn inner(&self, code: u32) -> Result<VaultProxy, Denied> {
        self.open(code).await.map(|_| VaultProxy::new(Safe))
    }
    fn explode(&self) -> Result<u8, Denied> {
        panic!("boom")
    }
}

#[tokio::test]
async fn application_errors_arrive_as_app_values() {
    for via in Via::BOTH {
        let (vault, _conns) = via.reach(VaultProxy::new(Safe)).await;
        assert_eq!(vault.open(1234).split_errors().await, Ok("gold".to_string()), "{via:?}");
        assert_eq!(vault.open(0).split_errors().await, Err(CallError::App(Denied::Locked { until: 9 })), "{via:?}");
        let err = vault.open(7).split_errors().await.unwrap_err();
        assert_eq!(err.app(), Some(Denied::Unknown("7".into())), "{via:?}");
    }
}

#[tokio::test]
async fn framework_failures_arrive_as_the_rpc_error_itself() {
    std::panic::set_hook(Box::new(|_| {}));
    for via in Via::BOTH {
        let (vault, _conns) = via.reach(VaultProxy::new(Safe)).await;
        let err = vault.explode().split_errors().await.unwrap_err();
        let rpc = err.rpc().expect("a framework error");
        assert_eq!(rpc.kind(), ErrorKind::HandlerPanicked, "{via:?}: {rpc}");
    }
    let _ = std::panic::take_hook();
}

#[tokio::test]
async fn a_lost_connection_is_an_rpc_error_with_its_kind() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (server, _client, vault) = connect_pair(a, b, VaultProxy::new(Safe), Config::default()).await.expect("connect");
    server.close();
    let err = vault.open(1234).split_errors().await.unwrap_err();
    assert!(matches!(&err, CallError::Rpc(e) if e.kind() == ErrorKind::Disconnected), "{err:?}");
}

#[tokio::test]
async fn pipelining_works_with_an_error_type_without_a_framework_variant() {
    for via in Via::BOTH {
        let (vault, _conns) = via.reach(VaultProxy::new(Safe)).await;
        let inner = vault.inner(1234).pipeline();
        assert_eq!(inner.open(1234).split_errors().await, Ok("gold".into()), "{via:?}");
        // A pipelined call on a refused promise fails with the promise's
        // application error, readable as the domain type.
        let refused = vault.inner(0).pipeline();
        let err = refused.open(1234).split_errors().await.unwrap_err();
        assert_eq!(err, CallError::App(Denied::Locked { until: 9 }), "{via:?}");
    }
}

#[tokio::test]
async fn todays_form_keeps_working_beside_it() {
    for via in Via::BOTH {
        let (vault, _conns) = via.reach(VaultProxy::new(Safe)).await;
        assert_eq!(vault.classic(true).await, Ok(1), "{via:?}");
        assert_eq!(vault.classic(false).await, Err(Classic::Refused), "{via:?}");
        // The same method, split, on the same proxy.
        assert_eq!(vault.classic(false).split_errors().await, Err(CallError::App(Classic::Refused)), "{via:?}");
    }
}

#[test]
fn call_errors_display_their_inner_error_and_are_transparent() {
    #[derive(Debug)]
    struct Why;
    impl std::fmt::Display for Why {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the lobby is closed")
        }
    }
    impl std::error::Error for Why {}
    #[derive(Debug)]
    struct Full(Why);
    impl std::fmt::Display for Full {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the room is full")
        }
    }
    impl std::error::Error for Full {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let app: CallError<Full> = CallError::App(Full(Why));
    assert_eq!(app.to_string(), "the room is full");
    // The chain a reporter prints names each message once.
    let chain: Vec<String> =
        std::iter::successors(Some(&app as &dyn std::error::Error), |e| e.source()).map(|e| e.to_string()).collect();
    assert_eq!(chain, ["the room is full", "the lobby is closed"]);
    let rpc: CallError<Full> = CallError::Rpc(RpcError::timeout("2 s"));
    assert_eq!(rpc.to_string(), "timed out: 2 s");
    let boxed: Box<dyn std::error::Error> = Box::new(rpc);
    assert!(boxed.source().is_none(), "an RpcError has no source of its own");
}
