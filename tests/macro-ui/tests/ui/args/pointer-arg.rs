use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&self, name: *const u8);
}

fn main() {}
