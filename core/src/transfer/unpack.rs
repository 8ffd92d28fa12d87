//! Unpack: a manifest's layers onto a snapshotter, in order, each as soon
//! as its download lands (later ones still downloading). A layer whose
//! chain is already committed is skipped; each applied layer is checked
//! against its diff id before its snapshot is committed under the chain id
//! (as containerd names them, so images share snapshots with `ctr`'s).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use berth_api::containerd::types::Descriptor;
use berth_api::containerd::types::transfer::Progress;
use futures_util::future::{BoxFuture, Shared};

use super::pull::ProgressSink;
use crate::content::Digest;
use crate::content::namespaced::NamespacedContent;
use crate::diff::{ApplyRequest, DifferPlugin};
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

    /// Unpacks `unpack`, waiting for `downloads[i]` before layer i.
    pub async fn run(
        &self,
        unpack: Unpack,
        downloads: Vec<Shared<BoxFuture<'static, Result<()>>>>,
        progress: ProgressSink,
    ) -> Result<()> {
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
            downloads[i].clone().await?;
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
            self.apply_one(
                ns,
                snapshotter,
                layer,
                &unpack.diff_ids[i],
                &parent,
                &chain,
                &unpack.lease,
            )
            .await?;
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

    #[allow(clippy::too_many_arguments)]
    async fn apply_one(
        &self,
        ns: &str,
        snapshotter: &str,
        layer: &Descriptor,
        diff_id: &str,
        parent: &str,
        chain: &str,
        lease: &str,
    ) -> Result<()> {
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
            };
            let applied = crate::diff::apply_first(&self.differs, request).await?;
            if applied.digest != diff_id {
                return Err(Error::failed_precondition(format!(
                    "layer {}: its content is {}, the config says {diff_id}",
                    layer.digest, applied.digest
                )));
            }
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
