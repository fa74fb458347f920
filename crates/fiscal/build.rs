//! Compiles `proto/fiscal.proto` with a pure-Rust parser, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/fiscal.proto");
    let fds = protox::compile(["proto/fiscal.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
