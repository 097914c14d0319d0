use rpc_core::eventual;

#[eventual(id = 0x5eed_u32)]
pub trait Game {
    fn join(&self, name: String);
}

fn main() {}
