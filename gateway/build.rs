//! Build script: stamps the version with the commit it was built from, so `penghubung
//! --version` and audit records can name the exact build; and generates the gRPC code from
//! `proto/` with protox (pure Rust: no system `protoc`), keeping the file descriptor set for
//! server reflection.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PENGHUBUNG_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=gateway/build.rs");

    let protos = [
        "proto/penghubung/v1/exchange.proto",
        "proto/penghubung/v1/catalog.proto",
        "proto/penghubung/v1/audit.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"]).expect("the gRPC contract compiles");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("penghubung_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )
    .expect("OUT_DIR is writable");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(descriptors)
        .expect("gRPC code generation");
}
