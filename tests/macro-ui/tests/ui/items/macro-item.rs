use rpc_core::eventual;

macro_rules! methods {
    () => {};
}

#[eventual]
pub trait Game {
    methods!();
    fn join(&self, name: String);
}

fn main() {}
