use rpc_core::eventual;

#[eventual(version = 2)]
pub trait Game {
    fn join(&self, name: String);
}

fn main() {}
