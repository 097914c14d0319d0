use rpc_core::eventual;

#[eventual(version = 2)]
pub trait Game<P> {
    type Score;
    fn join(&mut self, name: &str) -> impl Clone;
    fn leave<T>(self, reason: T);
    fn new(&self);
    fn ping(&self) -> u32 {
        0
    }
}

fn main() {}
