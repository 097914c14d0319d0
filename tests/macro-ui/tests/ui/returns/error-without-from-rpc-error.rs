use rpc_core::eventual;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct JoinError;

#[eventual]
pub trait Game {
    async fn join(&self, name: String) -> Result<u32, JoinError>;
}

fn main() {}
