use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&self, on_join: fn(u32));
}

fn main() {}
