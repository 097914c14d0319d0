//! tonic's small-struct stream, N items: the program `scripts/costs.sh --peers`
//! runs under callgrind to count tonic's instructions per streamed item, beside
//! ours and the raw floor (`examples/src/bin/cost_probe.rs`).
//!
//! Counted the same way as cost_probe: one current-thread runtime, client and
//! server in that one thread over TCP loopback (Nagle off), so scheduling, and
//! with it the count, is repeatable; the script runs two sizes and divides the
//! difference, which cancels start-up, connection set-up and the HTTP/2
//! handshake. The server is the benchmark's own (`src/peers/tonic_service.rs`),
//! streaming the same item as every contender.
//!
//! Run: `cargo run --release --manifest-path benches/Cargo.toml --no-default-features
//! --features tonic --bin tonic_probe -- sequence N`. Exits with status 3 when
//! built without protoc (no tonic code generated).

#[allow(dead_code)]
#[path = "../common.rs"]
mod common;

#[cfg(have_protoc)]
#[path = "../peers/tonic_service.rs"]
mod tonic_service;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tonic_probe sequence N";
    let [workload, n] = args.as_slice() else { panic!("{usage}") };
    assert!(workload == "sequence", "{usage}");
    let n: u64 = n.parse().expect(usage);
    #[cfg(have_protoc)]
    {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(sequence(n));
    }
    #[cfg(not(have_protoc))]
    {
        /// Exit status when the probe cannot measure tonic on this machine.
        const SKIPPED: i32 = 3;
        let _ = n;
        eprintln!("skipped: {}", option_env!("BENCH_TONIC_SKIP").unwrap_or("protoc not found"));
        std::process::exit(SKIPPED);
    }
}

/// Streams `n` small structs from the server to the client and checks each.
#[cfg(have_protoc)]
async fn sequence(n: u64) {
    use futures::StreamExt;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::transport::{Endpoint, Server};
    use tonic_service::pb::bench_client::BenchClient;
    use tonic_service::pb::bench_server::BenchServer;
    use tonic_service::{pb, small_pb, TServer};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    let server = Server::builder().tcp_nodelay(true).add_service(BenchServer::new(TServer));
    tokio::spawn(server.serve_with_incoming(incoming));
    let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().tcp_nodelay(true).connect().await.unwrap();
    let mut client = BenchClient::new(channel);
    let mut items = client.items(pb::Count { count: n }).await.unwrap().into_inner();
    let mut i = 0;
    while let Some(item) = items.message().await.unwrap() {
        assert_eq!(item, small_pb(i));
        i += 1;
    }
    assert_eq!(i, n);
}
