//! A stateless resumption server for the multi-process tests
//! (`tests/tests/resume_redis.rs`): serves `rpc_core::resume::Resume` from a
//! Redis session store and prints `listening <addr>` once bound.
//!
//! Usage: `resume-server <listen-addr> <redis-url> <key-prefix>`

use std::io::Write;
use std::sync::Arc;

use rpc_core::resume::{RedisStore, ResumeProxy, ResumeServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, url, prefix] = args.as_slice() else {
        return Err("usage: resume-server <listen-addr> <redis-url> <key-prefix>".into());
    };
    let store = Arc::new(RedisStore::connect(url, prefix).await?);
    let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    rpc_core::serve(listener, move || ResumeProxy::new(ResumeServer::new(store.clone()))).await?;
    Ok(())
}
