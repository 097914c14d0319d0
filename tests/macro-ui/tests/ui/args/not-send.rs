use rpc_core::eventual;
use std::marker::PhantomData;

/// Serializable, but not `Send` (it holds a raw pointer type).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Local(PhantomData<*const u8>);

#[eventual]
pub trait Game {
    async fn join(&self, name: String, local: Local);
}

fn main() {}
