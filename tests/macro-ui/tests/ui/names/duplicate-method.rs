use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&self, name: String);
    fn join(&self, name: String, team: u8);
}

fn main() {}
