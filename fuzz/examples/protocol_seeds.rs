//! Writes the `protocol` target's seed corpus, fuzz/corpus/protocol/<name>,
//! from `rpc_core::fuzzing::protocol_seeds` (scripts built from real
//! `Message`s, so they follow the wire format):
//!
//! ```text
//! cargo +nightly run --manifest-path fuzz/Cargo.toml --example protocol_seeds
//! ```

use std::path::Path;

use rpc_core::fuzzing::{protocol_messages, protocol_seeds};

fn main() {
    let dir = Path::new(rpc_fuzz::FUZZ_DIR).join("corpus").join("protocol");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, script) in protocol_seeds() {
        protocol_messages(&script);
        std::fs::write(dir.join(name), &script).unwrap();
        println!("{:>6} bytes  {}", script.len(), dir.join(name).display());
    }
}
