//! augur wire protocol: the generated gRPC code for `augur.v1`.
//!
//! Layout:
//! - `v1`: messages and services generated from `augur/v1/*.proto` (the truth for the wire).
//! - [`convert`]: wire messages to and from `augur-core` domain types.
//! - [`PROTOCOL_VERSION`]: the version an agent states in `Hello`.
//!
//! No logic lives here beyond small conversions.

pub mod convert;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("augur.v1");
}

/// Protocol version spoken by this build (`Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = v1::ProtocolVersion::ProtocolVersion1 as u32;
