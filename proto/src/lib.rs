//! berth's wire API.
//!
//! The containerd v1 gRPC services, events and types (same packages, names and
//! field numbers, so stock clients such as `ctr` work unchanged), the shim task
//! API and the events endpoint shims call, the cgroups metrics and runc shim
//! options messages, `grpc.health.v1`, and berth's own `berth.*` records.
//! Everything is generated at build time from the `.proto` files in this
//! folder; [`ttrpc`] carries the shim transport, which no maintained crate
//! offers on this prost version.

#[allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications, rust_2018_idioms)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

pub mod any;
pub mod client;
pub mod ttrpc;

pub use generated::{berth, containerd, google, grpc, io};

/// Messages that frame ttrpc requests and responses (package `ttrpc`).
pub mod ttrpc_wire {
    pub use crate::generated::ttrpc::{KeyValue, Request, Response};
}

/// The encoded `FileDescriptorSet` of every `.proto` file in this crate,
/// imports included. Used to decode an `Any` whose type is only known by
/// name (event filters on `event.<field>`) and by the wire-compatibility test.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth_descriptor.bin"));
