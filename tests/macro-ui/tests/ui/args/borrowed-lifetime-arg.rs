use rpc_core::eventual;

#[eventual]
pub trait Game {
    fn join(&self, name: std::borrow::Cow<'_, str>);
}

fn main() {}
