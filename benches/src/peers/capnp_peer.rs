//! capnp-rpc: Cap'n Proto RPC over its two-party vat network on TCP (!Send:
//! both sides on a current-thread runtime with a LocalSet).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use capnp::capability::Rc as CapRc;
use capnp_rpc::{rpc_twoparty_capnp, twoparty, RpcSystem};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::bench_capnp::{bench, node, sink};
use crate::common::*;
use crate::rt::{listener, tokio_listener, ServerThread};

struct CServer;

impl bench::Server for CServer {
    async fn echo(self: CapRc<Self>, params: bench::EchoParams, mut results: bench::EchoResults) -> capnp::Result<()> {
        let data = params.get()?.get_data()?;
        results.get().set_data(data);
        Ok(())
    }

    async fn root(self: CapRc<Self>, _: bench::RootParams, mut results: bench::RootResults) -> capnp::Result<()> {
        results.get().set_node(capnp_rpc::new_client(CNode(0)));
        Ok(())
    }

    async fn items(self: CapRc<Self>, params: bench::ItemsParams, _: bench::ItemsResults) -> capnp::Result<()> {
        let params = params.get()?;
        let count = params.get_count();
        let sink = params.get_sink()?;
        for i in 0..count {
            let s = small(i);
            let mut request = sink.push_request();
            {
                let mut item = request.get().init_item();
                item.set_id(s.id);
                item.set_x(s.x);
                item.set_flags(s.flags);
            }
            request.send().await?;
        }
        sink.done_request().send().promise.await?;
        Ok(())
    }
}

struct CNode(u32);

impl node::Server for CNode {
    async fn next(self: CapRc<Self>, _: node::NextParams, mut results: node::NextResults) -> capnp::Result<()> {
        results.get().set_node(capnp_rpc::new_client(CNode(self.0 + 1)));
        Ok(())
    }

    async fn depth(self: CapRc<Self>, _: node::DepthParams, mut results: node::DepthResults) -> capnp::Result<()> {
        results.get().set_depth(self.0);
        Ok(())
    }
}

/// The client's end of a stream: counts items.
struct CSink(Rc<Cell<u64>>);

impl sink::Server for CSink {
    async fn push(self: CapRc<Self>, params: sink::PushParams) -> capnp::Result<()> {
        let item = params.get()?.get_item()?;
        debug_assert_eq!(item.get_id(), self.0.get());
        std::hint::black_box((item.get_id(), item.get_x(), item.get_flags()));
        self.0.set(self.0.get() + 1);
        Ok(())
    }

    async fn done(self: CapRc<Self>, _: sink::DoneParams, _: sink::DoneResults) -> capnp::Result<()> {
        Ok(())
    }
}

fn network(
    stream: TcpStream,
    side: rpc_twoparty_capnp::Side,
) -> Box<twoparty::VatNetwork<impl futures::AsyncRead + Unpin>> {
    let (reader, writer) = stream.compat().split();
    Box::new(twoparty::VatNetwork::new(
        futures::io::BufReader::new(reader),
        futures::io::BufWriter::new(writer),
        side,
        Default::default(),
    ))
}

pub struct Capnp {
    bench: bench::Client,
    root: node::Client,
}

impl Capnp {
    pub async fn setup(server: &ServerThread) -> Res<Capnp> {
        let (l, addr) = listener();
        server.spawn(move || async move {
            let listener = tokio_listener(l);
            let bench: bench::Client = capnp_rpc::new_client(CServer);
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).ok();
                let rpc = RpcSystem::new(network(stream, rpc_twoparty_capnp::Side::Server), Some(bench.clone().client));
                tokio::task::spawn_local(rpc);
            }
        });
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut rpc = RpcSystem::new(network(stream, rpc_twoparty_capnp::Side::Client), None);
        let bench: bench::Client = rpc.bootstrap(rpc_twoparty_capnp::Side::Server);
        tokio::task::spawn_local(rpc);
        let root = bench.root_request().send().promise.await?.get()?.get_node()?;
        Ok(Capnp { bench, root })
    }

    fn echo(&self, payload: &[u8]) -> impl std::future::Future<Output = Res<usize>> {
        let mut request = self.bench.echo_request();
        request.get().set_data(payload);
        let reply = request.send().promise;
        async move { Ok(reply.await?.get()?.get_data()?.len()) }
    }
}

impl Contender for Capnp {
    fn name(&self) -> &'static str {
        "capnp-rpc"
    }

    fn unary(&self, calls: usize) -> Option<Fut<'_, Vec<Duration>>> {
        Some(Box::pin(async move {
            let payload = vec![7u8; PAYLOAD];
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                let len = self.echo(&payload).await?;
                samples.push(start.elapsed());
                debug_assert_eq!(len, PAYLOAD);
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
                in_flight.push(self.echo(&payload));
                sent += 1;
            }
            while let Some(reply) = in_flight.next().await {
                reply?;
                if sent < calls {
                    in_flight.push(self.echo(&payload));
                    sent += 1;
                }
            }
            Ok(start.elapsed())
        }))
    }

    fn chain(&self, chains: usize, pipelined: bool) -> Option<Fut<'_, Vec<Duration>>> {
        Some(Box::pin(async move {
            let mut samples = Vec::with_capacity(chains);
            for _ in 0..chains {
                let start = Instant::now();
                let mut node = self.root.clone();
                for _ in 0..CHAIN - 1 {
                    let next = node.next_request().send();
                    node = if pipelined { next.pipeline.get_node() } else { next.promise.await?.get()?.get_node()? };
                }
                let depth = node.depth_request().send().promise.await?.get()?.get_depth();
                samples.push(start.elapsed());
                if depth as usize != CHAIN - 1 {
                    return Err(err("wrong depth"));
                }
            }
            Ok(samples)
        }))
    }

    fn stream(&self, count: u64) -> Option<Fut<'_, Duration>> {
        Some(Box::pin(async move {
            let got = Rc::new(Cell::new(0));
            let sink: sink::Client = capnp_rpc::new_client(CSink(got.clone()));
            let start = Instant::now();
            let mut request = self.bench.items_request();
            request.get().set_count(count);
            request.get().set_sink(sink);
            request.send().promise.await?;
            let elapsed = start.elapsed();
            if got.get() != count {
                return Err(err(format!("got {} of {count} items", got.get())));
            }
            Ok(elapsed)
        }))
    }
}
