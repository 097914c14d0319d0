use rpc_core::eventual;

#[eventual]
pub trait Game {
    const MAX_PLAYERS: u32;
    fn join(&self, name: String);
}

fn main() {}
