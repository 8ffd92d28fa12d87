//! Import: an image archive a client streams → content store → snapshots
//! → image records, for the Transfer service (ImageImportStream →
//! ImageStore).
//!
//! The archive's files are stored under a lease as they arrive; then the
//! index is walked: manifests of the platforms the store asks for (every
//! platform when it names none) are kept and labelled so GC follows them,
//! every blob they name must be present, and the unpacks asked for run.
//! Only then are the images recorded, under the names containerd's image
//! store gives them; a bad archive leaves no image and nothing the lease
//! does not let GC free.

use std::io::Read;
use std::sync::Arc;

use berth_api::containerd::services::images::v1::Image;
use berth_api::containerd::types::transfer::{ImageStore, Progress};
use berth_api::containerd::types::{Descriptor, Platform};
use futures_util::future::BoxFuture;

use super::archive_read::{ArchiveTarget, read_archive};
use super::json_blob::read_json_blob;
use super::lease::TransferLease;
use super::pull::{INDEX_TYPES, MANIFEST_TYPES, ProgressSink, descriptor, layer_entries, platform_of};
use super::records::record_image;
use super::unpack::{LayerArrival, Unpack, Unpacker};
use super::{image_names, platform};
use crate::content::Digest;
use crate::content::namespaced::NamespacedContent;
use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::labels::LabelUpdate;
use crate::metadata::MetadataStore;

/// How deep indexes may nest.
const MAX_DEPTH: usize = 4;

/// What to import and where to put it.
#[derive(Debug)]
pub struct ImportRequest {
    /// The namespace of the images and their content.
    pub namespace: String,
    /// gzip the layers a `docker save` archive holds uncompressed.
    pub force_compress: bool,
    /// The image store's names, labels, platforms and unpacks.
    pub store: ImageStore,
}

/// Imports archives; one per daemon.
pub struct Importer {
    content: NamespacedContent,
    unpacker: Unpacker,
    meta: MetadataStore,
    events: Arc<Exchange>,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer").finish_non_exhaustive()
    }
}

/// What walking the index kept.
#[derive(Default)]
struct Walked {
    /// The index's own entries that were kept (the named candidates).
    entries: Vec<Descriptor>,
    unpacks: Vec<Unpack>,
}

impl Importer {
    /// An importer over the daemon's stores.
    pub fn new(content: NamespacedContent, unpacker: Unpacker, meta: MetadataStore, events: Arc<Exchange>) -> Self {
        Self {
            content,
            unpacker,
            meta,
            events,
        }
    }

    /// Imports the archive `source` reads (on a blocking thread); returns
    /// the images recorded.
    pub async fn import(
        &self,
        request: ImportRequest,
        source: impl Read + Send + 'static,
        progress: ProgressSink,
    ) -> Result<Vec<Image>> {
        let lease = TransferLease::create(&self.meta, &request.namespace, "import").await?;
        let outcome = self.import_leased(&request, source, lease.id(), &progress).await;
        lease.release().await;
        outcome
    }

    async fn import_leased(
        &self,
        request: &ImportRequest,
        source: impl Read + Send + 'static,
        lease: &str,
        progress: &ProgressSink,
    ) -> Result<Vec<Image>> {
        let event = |text: &str| {
            progress(Progress {
                event: text.to_string(),
                ..Default::default()
            })
        };
        event("Importing");
        let ns = request.namespace.as_str();
        let root = {
            let (runtime, content) = (tokio::runtime::Handle::current(), self.content.clone());
            let (namespace, lease, force_compress) = (ns.to_string(), lease.to_string(), request.force_compress);
            tokio::task::spawn_blocking(move || {
                let target = ArchiveTarget {
                    runtime,
                    content: &content,
                    namespace: &namespace,
                    lease: &lease,
                    force_compress,
                };
                read_archive(&target, source)
            })
            .await
            .map_err(|e| Error::internal(format!("the archive reader ended: {e}")))??
        };

        let unpacks: Vec<(Platform, String)> = request
            .store
            .unpacks
            .iter()
            .map(|u| {
                let snapshotter = if u.snapshotter.is_empty() {
                    "overlayfs".to_string()
                } else {
                    u.snapshotter.clone()
                };
                (u.platform.clone().unwrap_or_else(platform::host), snapshotter)
            })
            .collect();
        let mut walked = Walked::default();
        let kept = self
            .visit(
                ns,
                &root,
                None,
                &request.store.platforms,
                &unpacks,
                lease,
                0,
                &mut walked,
            )
            .await?;
        if !kept {
            let wanted: Vec<String> = request.store.platforms.iter().map(platform::format).collect();
            return Err(Error::not_found(format!(
                "archive index {}: no manifest for platform {}",
                root.digest,
                wanted.join(", ")
            )));
        }
        for unpack in std::mem::take(&mut walked.unpacks) {
            let stored = vec![LayerArrival::stored(); unpack.layers.len()];
            self.unpacker.run(unpack, stored, Arc::clone(progress)).await?;
        }

        let mut named = image_names::for_index(&request.store, &root);
        for entry in &walked.entries {
            named.extend(image_names::for_entry(&request.store, entry));
        }
        let mut recorded = Vec::new();
        for image in named {
            let target = image.target.clone();
            let stored = record_image(&self.meta, &self.events, ns, image).await?;
            progress(Progress {
                event: "saved".into(),
                name: stored.name.clone(),
                desc: target,
                ..Default::default()
            });
            recorded.push(stored);
        }
        if recorded.is_empty() {
            tracing::info!(
                index = root.digest,
                "an import named no image; its content is left to GC"
            );
        }
        event("Completed import");
        Ok(recorded)
    }

    /// Walks `desc` (an index or a manifest of the archive); true when it
    /// is kept. Labels what it keeps so GC follows it, records the unpacks
    /// its manifests match.
    #[allow(clippy::too_many_arguments)]
    fn visit<'a>(
        &'a self,
        ns: &'a str,
        desc: &'a Descriptor,
        entry_platform: Option<Platform>,
        wanted: &'a [Platform],
        unpacks: &'a [(Platform, String)],
        lease: &'a str,
        depth: usize,
        walked: &'a mut Walked,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let media_type = desc.media_type.as_str();
            if INDEX_TYPES.contains(&media_type) {
                if depth >= MAX_DEPTH {
                    return Err(Error::invalid_argument(format!(
                        "archive index {}: indexes nest deeper than {MAX_DEPTH}",
                        desc.digest
                    )));
                }
                let index = self.read_json(ns, desc, "index").await?;
                let mut labels = Vec::new();
                let entries = index
                    .get("manifests")
                    .and_then(|m| m.as_array())
                    .cloned()
                    .unwrap_or_default();
                for (position, entry) in entries.into_iter().enumerate() {
                    let child =
                        descriptor(&entry).map_err(|e| e.with_context(format!("archive index {}", desc.digest)))?;
                    let child_platform = entry.get("platform").map(platform_of);
                    if let Some(p) = &child_platform
                        && !wanted.is_empty()
                        && !wanted.iter().any(|w| platform::matches(w, p))
                    {
                        continue;
                    }
                    if self
                        .visit(ns, &child, child_platform, wanted, unpacks, lease, depth + 1, walked)
                        .await?
                    {
                        // Numbered by the place in the index, as containerd
                        // does: a later import of another platform adds its own.
                        labels.push((
                            format!("containerd.io/gc.ref.content.m.{position}"),
                            child.digest.clone(),
                        ));
                        if depth == 0 {
                            walked.entries.push(child);
                        }
                    }
                }
                if labels.is_empty() {
                    return Ok(false);
                }
                self.label(ns, &desc.digest, labels).await?;
                Ok(true)
            } else if MANIFEST_TYPES.contains(&media_type) {
                self.visit_manifest(ns, desc, entry_platform, unpacks, lease, walked)
                    .await?;
                Ok(true)
            } else {
                Ok(false)
            }
        })
    }

    async fn visit_manifest(
        &self,
        ns: &str,
        desc: &Descriptor,
        entry_platform: Option<Platform>,
        unpacks: &[(Platform, String)],
        lease: &str,
        walked: &mut Walked,
    ) -> Result<()> {
        let manifest = self.read_json(ns, desc, "manifest").await?;
        let context = |e: Error| e.with_context(format!("archive manifest {}", desc.digest));
        let config = manifest
            .get("config")
            .ok_or_else(|| Error::invalid_argument("no config"))
            .and_then(descriptor)
            .map_err(context)?;
        let layers = layer_entries(&manifest)
            .iter()
            .map(descriptor)
            .collect::<Result<Vec<_>>>()
            .map_err(context)?;
        for (what, blob) in std::iter::once(("config", &config)).chain(layers.iter().map(|l| ("layer", l))) {
            let digest = Digest::parse(&blob.digest).map_err(context)?;
            self.content.info(ns, &digest).await.map_err(|e| {
                if e.is_not_found() {
                    Error::invalid_argument(format!(
                        "archive manifest {}: its {what} {} is not in the archive",
                        desc.digest, blob.digest
                    ))
                } else {
                    e
                }
            })?;
        }
        let image_config = self.read_json(ns, &config, "config").await?;
        let diff_ids: Vec<String> = image_config
            .pointer("/rootfs/diff_ids")
            .and_then(|d| d.as_array())
            .map(|ids| ids.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let mut labels = vec![("containerd.io/gc.ref.content.config".to_string(), config.digest.clone())];
        for (i, layer) in layers.iter().enumerate() {
            labels.push((format!("containerd.io/gc.ref.content.l.{i}"), layer.digest.clone()));
        }
        self.label(ns, &desc.digest, labels).await?;

        let config_platform = entry_platform.unwrap_or_else(|| platform_of(&image_config));
        for (unpack_platform, snapshotter) in unpacks {
            if !platform::matches(unpack_platform, &config_platform) {
                continue;
            }
            if diff_ids.len() != layers.len() {
                return Err(Error::invalid_argument(format!(
                    "archive config {}: {} diff ids for {} layers",
                    config.digest,
                    diff_ids.len(),
                    layers.len()
                )));
            }
            walked.unpacks.push(Unpack {
                namespace: ns.to_string(),
                snapshotter: snapshotter.clone(),
                config: config.clone(),
                layers: layers.clone(),
                diff_ids: diff_ids.clone(),
                lease: lease.to_string(),
            });
        }
        Ok(())
    }

    async fn label(&self, ns: &str, digest: &str, labels: Vec<(String, String)>) -> Result<()> {
        let digest = Digest::parse(digest)?;
        self.content
            .update_labels(ns, &digest, LabelUpdate::Keys(labels))
            .await
            .map(|_| ())
    }

    /// A JSON blob of the archive (`what` names it in errors).
    async fn read_json(&self, ns: &str, desc: &Descriptor, what: &str) -> Result<serde_json::Value> {
        read_json_blob(&self.content, ns, desc).await.map_err(|e| {
            if e.is_not_found() {
                Error::invalid_argument(format!("archive {what} {}: not in the archive", desc.digest))
            } else {
                e.with_context(format!("archive {what} {}", desc.digest))
            }
        })
    }
}
