use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&'static self, name: String);
}

fn main() {}
