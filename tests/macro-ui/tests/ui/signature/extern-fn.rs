use rpc_core::eventual;

#[eventual]
pub trait Game {
    extern "C" fn join(&self, id: u32);
}

fn main() {}
