use rpc_core::eventual;

#[eventual]
pub trait Watcher {
    fn when_broken(&self) -> u32;
}

fn main() {}
