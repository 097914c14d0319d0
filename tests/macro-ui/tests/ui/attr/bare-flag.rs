use rpc_core::eventual;

#[eventual(id)]
pub trait Game {
    fn join(&self, name: String);
}

fn main() {}
