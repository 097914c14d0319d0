use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(self, name: String);
}

fn main() {}
