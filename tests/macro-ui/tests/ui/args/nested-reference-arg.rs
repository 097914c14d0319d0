use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&self, names: Vec<&'static str>);
}

fn main() {}
