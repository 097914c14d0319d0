//! Generates the tonic and capnp-rpc code when their compilers are installed.
//!
//! A missing compiler (or a failed generation) never fails the build: the
//! peer's code is left out, `cfg(have_protoc)` / `cfg(have_capnp)` stays unset
//! and the program prints "skipped: protoc not found" (etc.) for that peer.
//! `scripts/install-bench-deps.sh` installs both compilers.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(have_protoc)");
    println!("cargo::rustc-check-cfg=cfg(have_capnp)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PROTOC");
    println!("cargo::rerun-if-env-changed=PATH");
    #[cfg(feature = "tonic")]
    tonic();
    #[cfg(feature = "capnp")]
    capnp();
}

/// Why a peer was skipped, for the program to print.
#[allow(dead_code)]
fn skip(var: &str, why: &str) {
    println!("cargo::warning={why}");
    println!("cargo::rustc-env={var}={why}");
}

#[allow(dead_code)]
fn runs(program: &str) -> bool {
    Command::new(program).arg("--version").output().map(|out| out.status.success()).unwrap_or(false)
}

#[cfg(feature = "tonic")]
fn tonic() {
    println!("cargo::rerun-if-changed=proto/bench.proto");
    let protoc = std::env::var("PROTOC").unwrap_or_else(|_| "protoc".into());
    if !runs(&protoc) {
        return skip("BENCH_TONIC_SKIP", "protoc not found (run scripts/install-bench-deps.sh)");
    }
    match tonic_prost_build::configure().compile_protos(&["proto/bench.proto"], &["proto"]) {
        Ok(()) => println!("cargo::rustc-cfg=have_protoc"),
        Err(err) => skip("BENCH_TONIC_SKIP", &format!("protoc failed: {err}")),
    }
}

#[cfg(feature = "capnp")]
fn capnp() {
    println!("cargo::rerun-if-changed=schema/bench.capnp");
    if !runs("capnp") {
        return skip("BENCH_CAPNP_SKIP", "capnp not found (run scripts/install-bench-deps.sh)");
    }
    match capnpc::CompilerCommand::new().src_prefix("schema").file("schema/bench.capnp").run() {
        Ok(()) => println!("cargo::rustc-cfg=have_capnp"),
        // Debian's capnproto lacks the standard schemas (`-> stream` imports
        // /capnp/stream.capnp): libcapnp-dev has them.
        Err(err) => skip(
            "BENCH_CAPNP_SKIP",
            &format!("capnp compile failed (scripts/install-bench-deps.sh installs libcapnp-dev): {err}"),
        ),
    }
}
