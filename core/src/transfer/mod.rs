//! The daemon side of containerd's Transfer API: moving images between a
//! registry and the image store (pull), with platform selection and
//! unpacking, under a lease.

pub mod platform;
pub mod pull;
pub mod unpack;

pub use pull::{ProgressSink, PullRequest, Puller};
pub use unpack::Unpacker;
