//! Unpack: a manifest's layers onto a snapshotter, in order. A layer whose
//! turn comes while it still downloads is decompressed and applied from
//! its feed as the bytes land (later layers downloading meanwhile); one
//! already stored is applied from the content store. A layer whose chain
//! is already committed is skipped; each applied layer is checked against
//! its diff id, and its blob's commit (the digest check) is awaited, before
//! its snapshot is committed under the chain id (as containerd names them,
//! so images share snapshots with `ctr`'s). A streamed apply that fails
//! gives way to the download's own verdict, then to an apply of the
//! committed blob.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use berth_api::containerd::types::Descriptor;
use berth_api::containerd::types::transfer::Progress;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use super::layer_feed::LayerFeed;
use super::pull::ProgressSink;
use crate::content::Digest;
use crate::content::namespaced::NamespacedContent;
use crate::diff::{ApplyRequest, DifferPlugin, LayerStream};
use crate::error::{Error, ErrorKind, Result};
use crate::labels::LabelUpdate;
use crate::snapshots::namespaced::NamespacedSnapshots;

/// One manifest to unpack to one snapshotter.
#[derive(Clone, Debug)]
pub struct Unpack {
    /// The namespace of the snapshots.
    pub namespace: String,
    /// The snapshotter.
    pub snapshotter: String,
    /// The manifest's config blob (labelled with the top snapshot).
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// Their diff ids from the config.
    pub diff_ids: Vec<String>,
    /// The pull's lease.
    pub lease: String,
}

/// Resolves once a layer's blob is committed (verified) in the content
/// store; shared by every unpack of the layer.
pub type Committed = Shared<BoxFuture<'static, Result<()>>>;

/// How one layer's bytes reach the unpacker.
#[derive(Clone, Debug)]
pub struct LayerArrival {
    /// The blob's commit.
    pub committed: Committed,
    /// Its bytes while they download, for an apply that starts before the
    /// commit; None for a blob that is only read once stored.
    pub feed: Option<Arc<LayerFeed>>,
}

impl LayerArrival {
    /// A layer whose blob is in the content store already.
    pub fn stored() -> Self {
        let done: BoxFuture<'static, Result<()>> = Box::pin(async { Ok(()) });
        Self {
            committed: done.shared(),
            feed: None,
        }
    }
}

/// Applies layers through the daemon's differs.
#[derive(Clone)]
pub struct Unpacker {
    content: NamespacedContent,
    snapshots: NamespacedSnapshots,
    differs: Vec<Arc<DifferPlugin>>,
}

impl std::fmt::Debug for Unpacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unpacker")
            .field("differs", &self.differs.len())
            .finish()
    }
}

/// The chain id of a layer on top of `parent` (empty for the bottom one).
pub fn chain_id(parent: &str, diff_id: &str) -> String {
    if parent.is_empty() {
        diff_id.to_string()
    } else {
        Digest::of(format!("{parent} {diff_id}").as_bytes()).to_string()
    }
}

impl Unpacker {
    /// An unpacker over the daemon's stores and differs.
    pub fn new(content: NamespacedContent, snapshots: NamespacedSnapshots, differs: Vec<Arc<DifferPlugin>>) -> Self {
        Self {
            content,
            snapshots,
            differs,
        }
    }

    /// Unpacks `unpack`, layer i as `arrivals[i]` brings it.
    pub async fn run(&self, unpack: Unpack, arrivals: Vec<LayerArrival>, progress: ProgressSink) -> Result<()> {
        let ns = unpack.namespace.as_str();
        let snapshotter = unpack.snapshotter.as_str();
        // An unknown snapshotter is the request's error, before any work.
        self.snapshots.snapshotters().get(snapshotter)?;
        let mut parent = String::new();
        for (i, layer) in unpack.layers.iter().enumerate() {
            let chain = chain_id(&parent, &unpack.diff_ids[i]);
            match self.snapshots.stat(ns, snapshotter, &chain).await {
                Ok(_) => {
                    parent = chain;
                    continue;
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            let arrival = &arrivals[i];
            // Still downloading: apply the bytes as they land.
            let streamed = match (&arrival.feed, arrival.committed.peek()) {
                (Some(feed), None) => feed.subscribe(u64::try_from(layer.size).unwrap_or(0)),
                _ => None,
            };
            if streamed.is_none() {
                arrival.committed.clone().await?;
            }
            let report = |event: &str| {
                progress(Progress {
                    event: event.to_string(),
                    name: format!("layer-{}", layer.digest),
                    parents: vec![unpack.config.digest.clone()],
                    progress: layer.size,
                    total: layer.size,
                    desc: Some(layer.clone()),
                })
            };
            report("extracting");
            let step = LayerStep {
                ns,
                snapshotter,
                layer,
                diff_id: &unpack.diff_ids[i],
                parent: &parent,
                chain: &chain,
                lease: &unpack.lease,
                committed: &arrival.committed,
            };
            if let Some(reader) = streamed {
                if let Err(e) = self.apply_one(&step, Some(LayerStream::new(reader))).await {
                    // What was read was not verified yet: the download's
                    // verdict comes first, then the stored blob is applied.
                    arrival.committed.clone().await?;
                    tracing::debug!(layer = %layer.digest, error = %e, "streamed apply failed; applying the stored blob");
                    self.apply_one(&step, None).await?;
                }
            } else {
                self.apply_one(&step, None).await?;
            }
            report("extracted");
            parent = chain;
        }
        if !parent.is_empty() {
            let digest = Digest::parse(&unpack.config.digest)?;
            self.content
                .update_labels(
                    ns,
                    &digest,
                    LabelUpdate::Keys(vec![(format!("containerd.io/gc.ref.snapshot.{snapshotter}"), parent)]),
                )
                .await?;
        }
        Ok(())
    }

    /// Applies one layer to a new snapshot on `step.parent` and commits it
    /// under its chain id once the blob's own commit has succeeded.
    async fn apply_one(&self, step: &LayerStep<'_>, stream: Option<LayerStream>) -> Result<()> {
        let LayerStep {
            ns,
            snapshotter,
            layer,
            diff_id,
            parent,
            chain,
            lease,
            committed,
        } = *step;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let key = format!("extract-{nanos}-{chain}");
        let lease = Some(lease.to_string());
        let mounts = self
            .snapshots
            .prepare(ns, snapshotter, &key, parent, HashMap::new(), lease.clone())
            .await?;
        let outcome: Result<()> = async {
            let request = ApplyRequest {
                namespace: ns.to_string(),
                layer: layer.clone(),
                mounts,
                sync_fs: false,
                stream,
            };
            let applied = crate::diff::apply_first(&self.differs, request).await?;
            if applied.digest != diff_id {
                return Err(Error::failed_precondition(format!(
                    "layer {}: its content is {}, the config says {diff_id}",
                    layer.digest, applied.digest
                )));
            }
            // Nothing is kept from bytes whose digest was not checked.
            committed.clone().await?;
            self.snapshots
                .commit(ns, snapshotter, chain, &key, HashMap::new(), lease.clone())
                .await
        }
        .await;
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.snapshots.remove(ns, snapshotter, &key, lease).await;
                // Another unpack committed the same chain meanwhile.
                if e.kind() == ErrorKind::AlreadyExists {
                    return Ok(());
                }
                Err(e.with_context(format!("unpacking layer {} to {snapshotter}", layer.digest)))
            }
        }
    }
}

/// One layer's apply: where it goes and what it is checked against.
#[derive(Clone, Copy)]
struct LayerStep<'a> {
    ns: &'a str,
    snapshotter: &'a str,
    layer: &'a Descriptor,
    diff_id: &'a str,
    parent: &'a str,
    chain: &'a str,
    lease: &'a str,
    committed: &'a Committed,
}
