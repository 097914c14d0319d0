use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(name: String);
}

fn main() {}
