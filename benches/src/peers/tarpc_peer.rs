//! tarpc: a `#[tarpc::service]` over its serde transport (bincode, length-delimited TCP).

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tarpc::client;
use tarpc::context;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio::net::TcpStream;

use crate::common::*;
use crate::rt::{listener, tokio_listener, ServerThread};

#[tarpc::service]
pub trait TBench {
    async fn echo(data: Vec<u8>) -> Vec<u8>;
}

#[derive(Clone)]
struct TServer;

impl TBench for TServer {
    async fn echo(self, _: context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

pub struct Tarpc {
    client: TBenchClient,
}

impl Tarpc {
    pub async fn setup(server: &ServerThread) -> Res<Tarpc> {
        let (l, addr) = listener();
        server.spawn(move || async move {
            let listener = tokio_listener(l);
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).ok();
                let transport =
                    tarpc::serde_transport::new(Framed::new(stream, LengthDelimitedCodec::new()), Bincode::default());
                tokio::spawn(BaseChannel::with_defaults(transport).execute(TServer.serve()).for_each(
                    |response| async move {
                        tokio::spawn(response);
                    },
                ));
            }
        });
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let transport =
            tarpc::serde_transport::new(Framed::new(stream, LengthDelimitedCodec::new()), Bincode::default());
        let client = TBenchClient::new(client::Config::default(), transport).spawn();
        Ok(Tarpc { client })
    }
}

fn ctx() -> context::Context {
    let mut ctx = context::current();
    ctx.deadline = Instant::now() + Duration::from_secs(60);
    ctx
}

impl Contender for Tarpc {
    fn name(&self) -> &'static str {
        "tarpc"
    }

    fn unary(&self, calls: usize) -> Option<Fut<'_, Vec<Duration>>> {
        Some(Box::pin(async move {
            let payload = vec![7u8; PAYLOAD];
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                let reply = self.client.echo(ctx(), payload.clone()).await?;
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
                in_flight.push(self.client.echo(ctx(), payload.clone()));
                sent += 1;
            }
            while let Some(reply) = in_flight.next().await {
                reply?;
                if sent < calls {
                    in_flight.push(self.client.echo(ctx(), payload.clone()));
                    sent += 1;
                }
            }
            Ok(start.elapsed())
        }))
    }
}
