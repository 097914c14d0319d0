use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn name(&self) -> impl std::fmt::Display;
}

fn main() {}
