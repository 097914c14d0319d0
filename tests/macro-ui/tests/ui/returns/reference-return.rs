use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn name(&self) -> &'static str;
}

fn main() {}
