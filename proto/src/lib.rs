//! augur wire protocol: the generated gRPC code for `augur.v1`.
//!
//! Layout:
//! - `v1`: messages and services generated from `augur/v1/*.proto` (the truth for the wire).
//! - [`PROTOCOL_VERSION`]: the version an agent states in `Hello`.
//!
//! No logic lives here beyond small conversions.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("augur.v1");
}

/// Protocol version spoken by this build (`Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = v1::ProtocolVersion::ProtocolVersion1 as u32;
