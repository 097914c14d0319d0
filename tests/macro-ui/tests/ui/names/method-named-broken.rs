use rpc_core::eventual;

#[eventual]
pub trait Machine {
    async fn broken(&self) -> bool;
}

fn main() {}
