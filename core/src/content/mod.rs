//! Content: blobs addressed by digest, shared on disk, visible per namespace.
//!
//! [`store`] is the files; [`namespaced`] is what the Content service serves:
//! blobs and ingests as a namespace sees them, with leases and labels.

mod digest;
mod ingest;
pub mod namespaced;
pub mod store;

pub use digest::{Algorithm, Digest};
pub use ingest::{Committed, IngestLock, IngestWriter};
pub use store::{ContentStore, IngestStatus};

use std::sync::Arc;

use crate::plugin::{Instance, Registration, types};

/// The content store as a plugin: `io.containerd.content.v1.content`, at
/// `<root>/content`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::CONTENT,
        id: "content",
        requires: &[],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let root = ctx.daemon.root.join("content");
                let store = tokio::task::spawn_blocking(move || ContentStore::open(&root))
                    .await
                    .map_err(|e| crate::Error::internal(format!("content store: {e}")))??;
                Ok(Arc::new(store) as Instance)
            })
        }),
    }
}
