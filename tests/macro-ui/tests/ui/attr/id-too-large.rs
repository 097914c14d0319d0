use rpc_core::eventual;

#[eventual(id = 0x1_0000_0000_0000_0000)]
pub trait Game {
    fn join(&self, name: String);
}

fn main() {}
