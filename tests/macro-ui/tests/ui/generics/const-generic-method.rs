use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn scores<const N: usize>(&self) -> [u32; N];
}

fn main() {}
