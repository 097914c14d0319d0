use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn new(&self, name: String);
}

fn main() {}
