use rpc_core::eventual;

// An error type without `From<RpcError>` is accepted by the macro, but a
// promise of it cannot be awaited as it is (only through `split_errors()`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct JoinError;

#[eventual]
pub trait Game {
    async fn join(&self, name: String) -> Result<u32, JoinError>;
}

async fn play(game: GameProxy) {
    let _ = game.join("ada".into()).await;
}

fn main() {
    drop(play);
}
