use rpc_core::eventual;

pub struct Player;

#[eventual]
pub trait Game {
    async fn player(&self) -> Player;
}

fn main() {}
