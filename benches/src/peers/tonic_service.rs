//! The tonic service every tonic figure uses: the benchmark's contender
//! (`tonic_peer.rs`) and the instruction-count probe (`bin/tonic_probe.rs`,
//! which includes this file by path), so both measure the same server.

use std::pin::Pin;

use futures::stream::Stream;
use tonic::{Request, Response, Status};

use crate::common::small;

pub mod pb {
    tonic::include_proto!("bench");
}

use pb::bench_server::Bench;

/// Echoes blobs; streams `count` small structs.
pub struct TServer;

/// One streamed item, as every contender sends it (proto3 has no u16).
pub fn small_pb(i: u64) -> pb::Small {
    let s = small(i);
    pb::Small { id: s.id, x: s.x, flags: u32::from(s.flags) }
}

#[tonic::async_trait]
impl Bench for TServer {
    async fn echo(&self, request: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    type ItemsStream = Pin<Box<dyn Stream<Item = Result<pb::Small, Status>> + Send>>;

    async fn items(&self, request: Request<pb::Count>) -> Result<Response<Self::ItemsStream>, Status> {
        let count = request.into_inner().count;
        let items = futures::stream::iter((0..count).map(|i| Ok(small_pb(i))));
        Ok(Response::new(Box::pin(items)))
    }
}
