//! Generates the Rust code for `tandem/plugin/v1/plugin.proto`.
//!
//! The `.proto` is parsed by `protox` (pure Rust, no `protoc` on any machine); the resulting file
//! descriptor set is written to `OUT_DIR` (for gRPC reflection) and handed to `tonic-prost-build`,
//! which emits the messages plus both the client and the server of the `Plugin` service.

use std::path::PathBuf;

use prost::Message as _;

const PROTO: &str = "tandem/plugin/v1/plugin.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=tandem");

    // The `.proto` is inside this package (Cargo.toml's `include`), never reached through `..`,
    // so the crate builds the same from crates.io as from the workspace.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    // Includes the imported well-known types, so the descriptor set is complete for reflection.
    let fds = protox::compile([root.join(PROTO)], [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("tandem_plugin_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    // prost-build maps google.protobuf to prost-types (it needs those files in the set to resolve
    // them) and writes one file per package: `tandem.plugin.v1.rs` is ours.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
