use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&self, name: &str);
}

fn main() {}
