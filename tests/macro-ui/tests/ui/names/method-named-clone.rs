use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn clone(&self) -> u32;
}

fn main() {}
