use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&self, name: impl Into<String>);
}

fn main() {}
