//! The daemon side of containerd's Transfer API: moving images between a
//! registry and the image store: pull (with platform selection and
//! unpacking, under a lease) and push.

pub mod platform;
pub mod pull;
pub mod push;
pub mod unpack;

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
}
