//! A small tour over TCP loopback: a server, a client, a pipelined call, and a
//! capability passed from the client to the server and called back.
//!
//! Run: `cargo run -p rpc-examples --bin hello`

use rpc_core::{eventual, RpcError};
use serde::{Deserialize, Serialize};

/// An application error: travels as itself.
#[derive(Debug, Serialize, Deserialize)]
pub enum GreetError {
    EmptyName,
    Rpc(String),
}

impl std::fmt::Display for GreetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GreetError::EmptyName => write!(f, "a name must not be empty"),
            GreetError::Rpc(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for GreetError {}

impl From<RpcError> for GreetError {
    fn from(err: RpcError) -> Self {
        GreetError::Rpc(err.to_string())
    }
}

#[eventual]
pub trait Greeter {
    /// Greets `name`, or refuses an empty one.
    async fn greet(&self, name: String) -> Result<String, GreetError>;
    /// A greeter in another language: returns a capability.
    fn in_language(&self, language: String) -> GreeterProxy;
    /// Calls the client back through the capability it passed.
    async fn greet_later(&self, name: String, listener: ListenerProxy) -> Result<(), RpcError>;
}

#[eventual]
pub trait Listener {
    async fn hear(&self, text: String);
}

struct Polyglot {
    hello: &'static str,
}

impl Greeter for Polyglot {
    async fn greet(&self, name: String) -> Result<String, GreetError> {
        if name.is_empty() {
            return Err(GreetError::EmptyName);
        }
        Ok(format!("{}, {name}!", self.hello))
    }

    fn in_language(&self, language: String) -> GreeterProxy {
        let hello = match language.as_str() {
            "fr" => "Bonjour",
            "de" => "Hallo",
            _ => "Hello",
        };
        GreeterProxy::new(Polyglot { hello })
    }

    async fn greet_later(&self, name: String, listener: ListenerProxy) -> Result<(), RpcError> {
        listener.hear(format!("{}, {name}, called back!", self.hello)).await
    }
}

struct Printer;

impl Listener for Printer {
    async fn hear(&self, text: String) {
        println!("client heard: {text}");
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(rpc_core::serve(listener, || GreeterProxy::new(Polyglot { hello: "Hello" })));

    let greeter: GreeterProxy = rpc_core::connect(addr).await?;
    println!("{}", greeter.greet("world".into()).await?);

    // Pipelined: `greet` goes out at once, aimed at the greeter not yet returned.
    let french = greeter.in_language("fr".into());
    println!("{}", french.greet("monde".into()).await?);

    match greeter.greet(String::new()).await {
        Err(GreetError::EmptyName) => println!("empty names are refused, as a typed error"),
        other => println!("unexpected: {other:?}"),
    }

    // Pass a capability to the server; it calls us back on the same connection.
    greeter.greet_later("client".into(), ListenerProxy::new(Printer)).await?;
    Ok(())
}
