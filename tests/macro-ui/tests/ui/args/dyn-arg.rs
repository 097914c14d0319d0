use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&self, name: Box<dyn std::fmt::Display>);
}

fn main() {}
