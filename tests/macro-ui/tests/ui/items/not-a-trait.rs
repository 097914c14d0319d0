use rpc_core::eventual;

#[eventual]
pub struct Game {
    players: Vec<String>,
}

fn main() {}
