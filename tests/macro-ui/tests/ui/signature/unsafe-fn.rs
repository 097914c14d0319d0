use rpc_core::eventual;

#[eventual]
pub trait Game {
    unsafe fn join(&self, name: String);
}

fn main() {}
