use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join<N: Into<String>>(&self, name: N);
}

fn main() {}
