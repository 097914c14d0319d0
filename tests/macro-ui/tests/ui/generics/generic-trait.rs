use rpc_core::eventual;

#[eventual]
pub trait Game<T> {
    fn join(&self, name: T);
}

fn main() {}
