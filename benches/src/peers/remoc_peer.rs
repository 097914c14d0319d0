//! remoc: remote trait calls (`rtc`) and a remote channel (`rch::mpsc`) over
//! one chmux connection on TCP, with remoc's default codec.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use remoc::prelude::*;
use remoc::rtc::{CallError, ServerShared};
use tokio::net::TcpStream;

use crate::common::*;
use crate::rt::{listener, tokio_listener, ServerThread};

#[rtc::remote]
pub trait RBench {
    async fn echo(&self, data: Vec<u8>) -> Result<Vec<u8>, CallError>;
    async fn items(&self, count: u64) -> Result<rch::mpsc::Receiver<Small>, CallError>;
}

struct RServer;

impl RBench for RServer {
    async fn echo(&self, data: Vec<u8>) -> Result<Vec<u8>, CallError> {
        Ok(data)
    }

    async fn items(&self, count: u64) -> Result<rch::mpsc::Receiver<Small>, CallError> {
        let (tx, rx) = rch::mpsc::channel();
        tokio::spawn(async move {
            for i in 0..count {
                if tx.send(small(i)).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }
}

pub struct Remoc {
    client: RBenchClient,
}

impl Remoc {
    pub async fn setup(server: &ServerThread) -> Res<Remoc> {
        let (l, addr) = listener();
        server.spawn(move || async move {
            let listener = tokio_listener(l);
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).ok();
                tokio::spawn(async move {
                    let (rx, tx) = stream.into_split();
                    // Room for 64 calls in flight, all dispatched concurrently.
                    let (mut server, client) =
                        RBenchServerShared::<_, remoc::codec::Default>::with_request_buffer(Arc::new(RServer), 64);
                    server.set_parallelism(64);
                    if remoc::Connect::io(remoc::Cfg::default(), rx, tx).provide(client).await.is_ok() {
                        let _ = server.serve().await;
                    }
                });
            }
        });
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (rx, tx) = stream.into_split();
        let client: RBenchClient = remoc::Connect::io(remoc::Cfg::default(), rx, tx).consume().await?;
        Ok(Remoc { client })
    }
}

impl Contender for Remoc {
    fn name(&self) -> &'static str {
        "remoc"
    }

    fn unary(&self, calls: usize) -> Option<Fut<'_, Vec<Duration>>> {
        Some(Box::pin(async move {
            let payload = vec![7u8; PAYLOAD];
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                let reply = self.client.echo(payload.clone()).await?;
                samples.push(start.elapsed());
                debug_assert_eq!(reply.len(), PAYLOAD);
            }
            Ok(samples)
        }))
    }

    fn inflight(&self, calls: usize) -> Option<Fut<'_, Duration>> {
        Some(Box::pin(async move {
            let payload = vec![7u8; PAYLOAD];
            let start = Instant::now();
            let mut in_flight = FuturesUnordered::new();
            let mut sent = 0;
            while sent < calls.min(IN_FLIGHT) {
                in_flight.push(self.client.echo(payload.clone()));
                sent += 1;
            }
            while let Some(reply) = in_flight.next().await {
                reply?;
                if sent < calls {
                    in_flight.push(self.client.echo(payload.clone()));
                    sent += 1;
                }
            }
            Ok(start.elapsed())
        }))
    }

    fn stream(&self, count: u64) -> Option<Fut<'_, Duration>> {
        Some(Box::pin(async move {
            let start = Instant::now();
            let mut items = self.client.items(count).await?;
            let mut n = 0;
            while let Some(item) = items.recv().await? {
                debug_assert_eq!(item, small(n));
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
