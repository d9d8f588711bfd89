//! Generates the Rust code for the wire contract with a vendored protoc, unless PROTOC is set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        #[allow(unsafe_code)] // set_var is unsafe only because of other threads; there are none
        unsafe {
            std::env::set_var("PROTOC", protoc)
        };
    }
    let protos = [
        "proto/conclave/v1/kv.proto",
        "proto/conclave/v1/cluster.proto",
        "proto/conclave/v1/raft.proto",
        "proto/conclave/v1/tasks.proto",
        "proto/conclave/v1/agents.proto",
        "proto/conclave/v1/decisions.proto",
        "proto/conclave/v1/locks.proto",
        "proto/conclave/v1/barriers.proto",
        "proto/conclave/v1/workflows.proto",
        "proto/conclave/v1/topics.proto",
        "proto/conclave/v1/transactions.proto",
    ];
    // The descriptor set serves gRPC reflection (the node's `grpc.reflection.v1` service), so
    // grpcurl and other generic clients can list and call the services without the .proto files.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("conclave_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    // The directory too, so that a new .proto file reruns this script.
    println!("cargo:rerun-if-changed=proto");
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
