use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(self: Box<Self>, name: String);
}

fn main() {}
