use rpc_core::eventual;

pub struct Player;

#[eventual]
pub trait Game {
    fn join(&self, name: String, player: Player);
}

fn main() {}
