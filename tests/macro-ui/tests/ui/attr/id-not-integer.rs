use rpc_core::eventual;

#[eventual(id = "game")]
pub trait Game {
    fn join(&self, name: String);
}

fn main() {}
