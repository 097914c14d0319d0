use rpc_core::eventual;

#[derive(Debug)]
pub struct JoinError;

impl From<rpc_core::RpcError> for JoinError {
    fn from(_: rpc_core::RpcError) -> Self {
        JoinError
    }
}

#[eventual]
pub trait Game {
    async fn join(&self, name: String) -> Result<u32, JoinError>;
}

fn main() {}
