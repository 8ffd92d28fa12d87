//! The Differ: applies layers onto mounts and computes layers between
//! mounts. The walking differ in berth-snapshotters implements it; the Diff
//! service reaches it through the plugin registry.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use berth_api::containerd::types::Descriptor;

use crate::error::Result;
use crate::mount::Mount;

/// What a differ's futures return.
pub type DiffFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Applying one layer.
#[derive(Clone, Debug)]
pub struct ApplyRequest {
    /// The namespace whose content holds the layer.
    pub namespace: String,
    /// The (possibly compressed) layer blob.
    pub layer: Descriptor,
    /// Where to apply it.
    pub mounts: Vec<Mount>,
    /// Flush the written files to disk before returning.
    pub sync_fs: bool,
    /// The layer's bytes as they arrive, read instead of the content
    /// store's blob; None reads the blob. They are not verified yet: the
    /// caller checks the blob's digest before it keeps what was applied.
    pub stream: Option<LayerStream>,
}

/// A layer handed to a differ as a byte stream; the first differ that
/// applies it takes the reader.
#[derive(Clone)]
pub struct LayerStream(Arc<Mutex<Option<Box<dyn Read + Send>>>>);

impl LayerStream {
    /// A stream of `reader`'s bytes (blocking reads: a differ reads it on a
    /// blocking thread).
    pub fn new(reader: impl Read + Send + 'static) -> Self {
        Self(Arc::new(Mutex::new(Some(Box::new(reader)))))
    }

    /// The reader, unless a differ took it already.
    pub fn take(&self) -> Option<Box<dyn Read + Send>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

impl std::fmt::Debug for LayerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerStream")
    }
}

/// Computing a layer between two trees.
#[derive(Clone, Debug)]
pub struct CompareRequest {
    /// The namespace the layer is written to.
    pub namespace: String,
    /// The tree before.
    pub lower: Vec<Mount>,
    /// The tree after.
    pub upper: Vec<Mount>,
    /// Media type of the layer to write; empty for tar+gzip.
    pub media_type: String,
    /// Ingest ref for the write; empty for a generated one.
    pub reference: String,
    /// Labels for the stored blob.
    pub labels: HashMap<String, String>,
    /// Lease the written blob is added to.
    pub lease: Option<String>,
}

/// Applies and computes filesystem layers.
pub trait Differ: Send + Sync + 'static {
    /// Unpacks a layer onto mounts; returns the descriptor of the
    /// uncompressed layer (its digest is the diff id).
    fn apply(&self, request: ApplyRequest) -> DiffFuture<'_, Descriptor>;
    /// Writes the changes from `lower` to `upper` to the content store as a
    /// layer; returns its descriptor.
    fn compare(&self, request: CompareRequest) -> DiffFuture<'_, Descriptor>;
}

/// Applies `request` with the first of `differs` that does not answer
/// NotImplemented, as containerd tries its differs in order.
pub async fn apply_first(differs: &[Arc<DifferPlugin>], request: ApplyRequest) -> Result<Descriptor> {
    let mut last = crate::Error::not_implemented("no differ is loaded");
    for differ in differs {
        match differ.0.apply(request.clone()).await {
            Ok(applied) => return Ok(applied),
            Err(e) if e.kind() == crate::ErrorKind::NotImplemented => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Every differ plugin that loaded, in registration order.
pub fn loaded(plugins: &crate::plugin::PluginSet) -> Vec<Arc<DifferPlugin>> {
    plugins
        .of_type(crate::plugin::types::DIFFER)
        .into_iter()
        .filter_map(|entry| entry.get::<DifferPlugin>().ok())
        .collect()
}

/// The instance a differ plugin returns.
pub struct DifferPlugin(pub Arc<dyn Differ>);

impl std::fmt::Debug for DifferPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DifferPlugin")
    }
}
