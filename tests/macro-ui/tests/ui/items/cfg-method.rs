use rpc_core::eventual;

#[eventual]
pub trait Game {
    #[cfg(unix)]
    fn rank(&self) -> u32;
    fn join(&self, name: String);
}

fn main() {}
