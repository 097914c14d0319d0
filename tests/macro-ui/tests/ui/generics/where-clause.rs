use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&self, name: String) where Self: Sized;
}

fn main() {}
