//! Threshold's public contract, generated from the `.proto` files under
//! `proto/threshold/v1` at build time.
//!
//! The messages are always built; the gRPC clients and servers only with the
//! `grpc` feature, so pure crates (the domain) can use the event payloads
//! without pulling in a network stack.

/// Package `threshold.v1`: the envelope, event payloads and services.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    rust_2018_idioms
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/threshold.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every `.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/threshold_descriptor.bin"));

/// Request metadata carrying the simulated clock's time (RFC 3339) to a
/// server started in simulation mode (`threshold serve --simulation`). A
/// server on the real clock refuses a request that carries it.
pub const SIMULATED_TIME_HEADER: &str = "threshold-simulated-time";

#[cfg(feature = "grpc")]
pub mod clock;
#[cfg(feature = "grpc")]
pub mod codec;

/// gRPC status conventions shared by every service.
#[cfg(feature = "grpc")]
pub mod status {
    /// tonic reports a message over the size limit as OUT_OF_RANGE; gRPC
    /// specifies RESOURCE_EXHAUSTED, which is what clients are told.
    pub fn oversized(status: tonic::Status) -> tonic::Status {
        if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
            tonic::Status::resource_exhausted(status.message().to_owned())
        } else {
            status
        }
    }
}
