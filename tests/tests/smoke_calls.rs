//! The basics, run against a local object and through a connection.

use rpc_core::{eventual, ErrorKind, RpcError};
use rpc_tests::Via;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    DivideByZero,
    Rpc(String),
}

impl From<RpcError> for MathError {
    fn from(err: RpcError) -> Self {
        MathError::Rpc(err.to_string())
    }
}

#[eventual]
pub trait Math {
    async fn add(&self, a: i64, b: i64) -> i64;
    fn negate(&self, a: i64) -> i64;
    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>;
}

struct Calculator;

impl Math for Calculator {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn negate(&self, a: i64) -> i64 {
        -a
    }
    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            return Err(MathError::DivideByZero);
        }
        Ok(a / b)
    }
}

#[tokio::test]
async fn calls_return_values_and_application_errors() {
    for via in Via::BOTH {
        let (math, _conns) = via.reach(MathProxy::new(Calculator)).await;
        assert_eq!(math.add(2, 3).await.unwrap(), 5, "{via:?}");
        assert_eq!(math.negate(7).await.unwrap(), -7, "{via:?}");
        assert_eq!(math.divide(9, 3).await.unwrap(), 3, "{via:?}");
        assert_eq!(math.divide(1, 0).await.unwrap_err(), MathError::DivideByZero, "{via:?}");
    }
}

#[tokio::test]
async fn framework_errors_convert_into_the_application_error() {
    let (math, conns) = Via::Remote.reach(MathProxy::new(Calculator)).await;
    let (server, _client) = conns.unwrap();
    server.close();
    let err = math.divide(1, 1).await.unwrap_err();
    assert!(matches!(&err, MathError::Rpc(text) if text.contains("disconnected")), "{err:?}");
    let err = math.add(1, 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected);
}
