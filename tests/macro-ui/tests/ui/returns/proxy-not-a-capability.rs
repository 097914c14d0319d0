use rpc_core::eventual;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct PlayerProxy;

#[eventual]
pub trait Game {
    fn player(&self) -> PlayerProxy;
}

fn main() {}
