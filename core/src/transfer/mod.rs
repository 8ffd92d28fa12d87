//! The daemon side of containerd's Transfer API: moving images between a
//! registry and the image store: pull (with platform selection and
//! unpacking, under a lease) and push; and between the image store and
//! image archives a client streams: import and export.

mod archive_read;
pub mod channel_io;
pub mod export;
pub mod image_names;
pub mod import;
mod json_blob;
pub mod layer_feed;
mod lease;
pub mod platform;
pub mod pull;
pub mod push;
mod records;
pub mod unpack;

pub use export::{ExportRequest, Exporter};
pub use import::{ImportRequest, Importer};
pub use pull::{ProgressSink, PullRequest, Puller};
pub use push::{PushRequest, Pusher};
pub use unpack::Unpacker;

/// The daemon's transfer plugin (`io.containerd.transfer.v1.local`).
#[derive(Debug)]
pub struct LocalTransfer {
    /// Registry → image store.
    pub puller: std::sync::Arc<Puller>,
    /// Image store → registry.
    pub pusher: std::sync::Arc<Pusher>,
    /// Archive stream → image store.
    pub importer: std::sync::Arc<Importer>,
    /// Image store → archive stream.
    pub exporter: std::sync::Arc<Exporter>,
    /// Frees what a transfer that did not finish wrote under its lease.
    pub collector: crate::gc::GarbageCollector,
}
