//! Generates the gRPC code from `augur/v1/*.proto` with the system `protoc`
//! (Debian: protobuf-compiler; or set PROTOC).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "augur/v1/telemetry.proto",
        "augur/v1/query.proto",
        "augur/v1/predictions.proto",
        "augur/v1/orchestrator.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        // `Telemetry.Connect` would collide with the generated `connect` constructor;
        // clients are built from a `tonic::transport::Channel` instead.
        .build_transport(false)
        .compile_protos(&protos, &["."])?;
    Ok(())
}
