use rpc_core::eventual;

#[eventual]
pub trait Game {
    type Score;
    fn join(&self, name: String);
}

fn main() {}
