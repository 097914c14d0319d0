use rpc_core::eventual;

#[eventual(id = 1, id = 2)]
pub trait Game {
    fn join(&self, name: String);
}

fn main() {}
