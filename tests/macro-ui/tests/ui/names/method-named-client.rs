use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn client(&self) -> u32;
}

fn main() {}
