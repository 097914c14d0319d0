//! tonic: gRPC over HTTP/2 with prost messages; unary calls and server streaming.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Server};

use super::tonic_service::{pb, TServer};
use crate::common::*;
use crate::rt::{listener, tokio_listener, ServerThread};

use pb::bench_client::BenchClient;
use pb::bench_server::BenchServer;

pub struct Tonic {
    client: BenchClient<Channel>,
}

impl Tonic {
    pub async fn setup(server: &ServerThread) -> Res<Tonic> {
        let (l, addr) = listener();
        server.spawn(move || async move {
            // serve_with_incoming takes the accepted sockets as they are:
            // TCP_NODELAY here, as for every contender.
            let incoming = TcpListenerStream::new(tokio_listener(l)).map(|accepted| {
                accepted.inspect(|stream| {
                    let _ = stream.set_nodelay(true);
                })
            });
            let _ = Server::builder()
                .tcp_nodelay(true)
                .add_service(BenchServer::new(TServer))
                .serve_with_incoming(incoming)
                .await;
        });
        let channel = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
        Ok(Tonic { client: BenchClient::new(channel) })
    }
}

impl Contender for Tonic {
    fn name(&self) -> &'static str {
        "tonic"
    }

    fn unary(&self, calls: usize) -> Option<Fut<'_, Vec<Duration>>> {
        Some(Box::pin(async move {
            let mut client = self.client.clone();
            let payload = vec![7u8; PAYLOAD];
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                let reply = client.echo(pb::Blob { data: payload.clone() }).await?;
                samples.push(start.elapsed());
                debug_assert_eq!(reply.get_ref().data.len(), PAYLOAD);
            }
            Ok(samples)
        }))
    }

    fn inflight(&self, calls: usize) -> Option<Fut<'_, Duration>> {
        Some(Box::pin(async move {
            let payload = vec![7u8; PAYLOAD];
            let call = || {
                let mut client = self.client.clone();
                let data = payload.clone();
                async move { client.echo(pb::Blob { data }).await }
            };
            let start = Instant::now();
            let mut in_flight = FuturesUnordered::new();
            let mut sent = 0;
            while sent < calls.min(IN_FLIGHT) {
                in_flight.push(call());
                sent += 1;
            }
            while let Some(reply) = in_flight.next().await {
                reply?;
                if sent < calls {
                    in_flight.push(call());
                    sent += 1;
                }
            }
            Ok(start.elapsed())
        }))
    }

    fn stream(&self, count: u64) -> Option<Fut<'_, Duration>> {
        Some(Box::pin(async move {
            let mut client = self.client.clone();
            let start = Instant::now();
            let mut items = client.items(pb::Count { count }).await?.into_inner();
            let mut n = 0;
            while let Some(item) = items.message().await? {
                debug_assert_eq!(item.id, n);
                std::hint::black_box(item);
                n += 1;
            }
            if n != count {
                return Err(err(format!("got {n} of {count} items")));
            }
            Ok(start.elapsed())
        }))
    }
}
