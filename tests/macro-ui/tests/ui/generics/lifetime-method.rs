use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join<'a>(&self, name: String);
}

fn main() {}
