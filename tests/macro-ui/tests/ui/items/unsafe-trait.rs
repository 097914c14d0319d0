use rpc_core::eventual;

#[eventual]
pub unsafe trait Game {
    fn join(&self, name: String);
}

fn main() {}
