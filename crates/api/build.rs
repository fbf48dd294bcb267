//! Generates Rust from `proto/threshold/v1` with `protox`, so no system
//! `protoc` is needed: a machine with cargo and a C compiler builds.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let dir = root.join("threshold/v1");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    files.sort();
    println!("cargo:rerun-if-changed={}", dir.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let fds = protox::compile(&files, [&root])?;
    // The descriptor set, for gRPC server reflection.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("threshold_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .build_transport(false)
        // A request that does not decode is INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::ApiCodec")
        .compile_fds(fds)?;
    Ok(())
}
