use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&mut self, name: String);
}

fn main() {}
