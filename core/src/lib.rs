//! berth's core: what every service and backend shares.
//!
//! Errors and their gRPC codes, identifier and label rules, the filter
//! language, the metadata store, the plugin registry and the event exchange.
//! Services are thin layers over these; nothing here knows about gRPC
//! transport beyond mapping error kinds to status codes.

pub mod content;
pub mod diff;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod filters;
pub mod gc;
pub mod identifiers;
pub mod keyed_lock;
pub mod labels;
pub mod metadata;
pub mod mount;
pub mod mount_options;
pub mod plugin;
pub mod registry;
pub mod reopening_db;
pub mod runtime;
pub mod shutdown;
pub mod snapshots;
pub mod startup_repair;
pub mod timestamps;
pub mod transfer;

pub use error::{Error, ErrorKind, Result};
