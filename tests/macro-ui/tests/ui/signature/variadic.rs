use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&self, id: u32, ...);
}

fn main() {}
