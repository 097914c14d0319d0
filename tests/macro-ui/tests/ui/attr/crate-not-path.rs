use rpc_core::eventual;

#[eventual(crate = "rpc_core")]
pub trait Game {
    fn join(&self, name: String);
}

fn main() {}
