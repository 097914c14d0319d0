use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn merge(&self, other: Self);
}

fn main() {}
