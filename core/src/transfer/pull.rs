//! Pull: registry → content store → snapshots → image record, in the
//! daemon, for the Transfer service.
//!
//! The root is resolved and stored; an index is narrowed to the platforms
//! asked for; each manifest's config is fetched, and its layers download in
//! parallel (bounded by the daemon's setting) while the unpacker applies
//! them in order as each one lands. Every blob is written through an ingest
//! named as containerd names them (`layer-<digest>`, …), so a pull cut off
//! resumes from where its ingest stopped; the commit verifies the digest.
//! Two pulls of one blob at once take turns: the second finds it stored.
//! Everything is held by a lease (with an expiry, for a crash) until the
//! image record holds it, so a failed pull leaves only what GC frees.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_api::containerd::services::images::v1::Image;
use berth_api::containerd::types::transfer::Progress;
use berth_api::containerd::types::{Descriptor, Platform};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;

use super::layer_feed::{FeedEnd, LayerFeed};
use super::lease::TransferLease;
use super::platform;
use super::records::record_image;
use super::unpack::{Committed, LayerArrival, Unpack, Unpacker};
use crate::content::Digest;
use crate::content::namespaced::{ContentWriter, NamespacedContent};
use crate::error::{Error, ErrorKind, Result};
use crate::events::Exchange;
use crate::keyed_lock::KeyedLocks;
use crate::labels::LabelUpdate;
use crate::metadata::MetadataStore;
use crate::registry::{Authorizer, CredentialSource, Reference, RegistryConfig, Repository};

/// Media types of indexes (lists of manifests).
pub(crate) const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// Media types of image manifests.
pub(crate) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Bytes gathered before one write to the ingest.
const WRITE_BATCH: usize = 1 << 20;

/// Reports progress to the client (or nowhere).
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// What to pull and where to put it.
pub struct PullRequest {
    /// The namespace of the image and its content.
    pub namespace: String,
    /// The reference as the client gave it.
    pub reference: String,
    /// The image name to record (the reference when empty).
    pub name: String,
    /// Labels of the image record.
    pub labels: HashMap<String, String>,
    /// Platforms whose manifests are fetched (the host's when empty).
    pub platforms: Vec<Platform>,
    /// Platforms and snapshotters to unpack to.
    pub unpacks: Vec<(Platform, String)>,
    /// `http` or `https` for hosts without a hosts.toml entry; empty for
    /// the default.
    pub default_scheme: String,
    /// Extra headers for every request.
    pub headers: Vec<(String, String)>,
    /// Where credentials come from.
    pub credentials: Arc<dyn CredentialSource>,
}

impl std::fmt::Debug for PullRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullRequest")
            .field("namespace", &self.namespace)
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

/// Pulls images; one per daemon, shared by every Transfer call.
pub struct Puller {
    content: NamespacedContent,
    unpacker: Unpacker,
    meta: MetadataStore,
    events: Arc<Exchange>,
    config: RegistryConfig,
    downloads: Arc<Semaphore>,
    blob_locks: KeyedLocks,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Puller {
    /// A puller over the daemon's stores, downloading at most
    /// `max_downloads` blobs at once.
    pub fn new(
        content: NamespacedContent,
        unpacker: Unpacker,
        meta: MetadataStore,
        events: Arc<Exchange>,
        config: RegistryConfig,
        max_downloads: usize,
    ) -> Self {
        Self {
            content,
            unpacker,
            meta,
            events,
            config,
            downloads: Arc::new(Semaphore::new(max_downloads.max(1))),
            blob_locks: KeyedLocks::new(),
        }
    }

    /// Pulls `request`; returns the image record made or updated.
    pub async fn pull(self: &Arc<Self>, request: PullRequest, progress: ProgressSink) -> Result<Image> {
        let reference = Reference::parse(&request.reference)?;
        let lease = TransferLease::create(&self.meta, &request.namespace, "pull").await?;
        let outcome = self.pull_leased(&request, &reference, &lease, &progress).await;
        lease.release().await;
        outcome
    }

    async fn pull_leased(
        self: &Arc<Self>,
        request: &PullRequest,
        reference: &Reference,
        transfer_lease: &TransferLease,
        progress: &ProgressSink,
    ) -> Result<Image> {
        let ns = request.namespace.as_str();
        let lease = transfer_lease.id();
        let event = |text: String| {
            progress(Progress {
                event: text,
                ..Default::default()
            })
        };
        event(format!("Resolving from {reference}"));
        let auth = Arc::new(Authorizer::new(Arc::clone(&request.credentials)));
        let repo = Arc::new(Repository::open(
            &self.config,
            reference,
            &request.default_scheme,
            &request.headers,
            auth,
        )?);
        let (root, root_bytes) = repo.resolve().await?;
        if root.media_type == "application/vnd.docker.distribution.manifest.v1+prettyjws"
            || root.media_type == "application/vnd.docker.distribution.manifest.v1+json"
        {
            return Err(Error::invalid_argument(format!(
                "{reference}: schema 1 manifests are not supported"
            )));
        }
        event(format!("Pulling from {reference}"));
        progress(Progress {
            event: "fetching image content".into(),
            name: reference.to_string(),
            desc: Some(root.clone()),
            ..Default::default()
        });

        let wanted: Vec<Platform> = if request.platforms.is_empty() {
            vec![platform::host()]
        } else {
            request.platforms.clone()
        };
        let source_label = (
            format!("{SOURCE_LABEL_PREFIX}{}", reference.host),
            reference.repository.clone(),
        );

        // The manifests to fetch, with their platforms where an index says.
        let mut manifests: Vec<(Descriptor, Option<Platform>, Option<bytes::Bytes>)> = Vec::new();
        let mut root_labels = HashMap::from([source_label.clone()]);
        if INDEX_TYPES.contains(&root.media_type.as_str()) {
            let index: serde_json::Value = serde_json::from_slice(&root_bytes)
                .map_err(|e| Error::invalid_argument(format!("index {} of {reference}: {e}", root.digest)))?;
            let entries = index
                .get("manifests")
                .and_then(|m| m.as_array())
                .cloned()
                .unwrap_or_default();
            for (position, entry) in entries.iter().enumerate() {
                let desc = descriptor(entry).map_err(|e| e.with_context(format!("index {}", root.digest)))?;
                let entry_platform = entry.get("platform").map(platform_of);
                let selected = match &entry_platform {
                    Some(p) => wanted.iter().any(|w| platform::matches(w, p)),
                    None => false,
                };
                if selected && MANIFEST_TYPES.contains(&desc.media_type.as_str()) {
                    // Numbered by the place in the index, as containerd
                    // does: a later pull of another platform adds its own.
                    root_labels.insert(
                        format!("containerd.io/gc.ref.content.m.{position}"),
                        desc.digest.clone(),
                    );
                    manifests.push((desc, entry_platform, None));
                }
            }
            if manifests.is_empty() {
                let names: Vec<String> = wanted.iter().map(platform::format).collect();
                return Err(Error::not_found(format!(
                    "{reference}: no manifest for platform {}",
                    names.join(", ")
                )));
            }
        } else if MANIFEST_TYPES.contains(&root.media_type.as_str()) {
            manifests.push((root.clone(), None, Some(root_bytes.clone())));
        } else {
            return Err(Error::invalid_argument(format!(
                "{reference}: {} is not an image manifest or index",
                root.media_type
            )));
        }

        let mut unpacked: Vec<BoxFuture<'static, Result<()>>> = Vec::new();
        for (desc, manifest_platform, known_bytes) in manifests {
            let bytes = match known_bytes {
                Some(bytes) => bytes,
                None => repo.fetch_small(&desc).await?,
            };
            let manifest: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::invalid_argument(format!("manifest {} of {reference}: {e}", desc.digest)))?;
            let config = manifest
                .get("config")
                .ok_or_else(|| Error::invalid_argument(format!("manifest {}: no config", desc.digest)))
                .and_then(descriptor)?;
            let layers = layer_entries(&manifest)
                .iter()
                .map(descriptor)
                .collect::<Result<Vec<_>>>()
                .map_err(|e| e.with_context(format!("manifest {}", desc.digest)))?;

            let config_bytes = repo.fetch_small(&config).await?;
            let image_config: serde_json::Value = serde_json::from_slice(&config_bytes)
                .map_err(|e| Error::invalid_argument(format!("config {} of {reference}: {e}", config.digest)))?;
            let diff_ids: Vec<String> = image_config
                .pointer("/rootfs/diff_ids")
                .and_then(|d| d.as_array())
                .map(|ids| ids.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if diff_ids.len() != layers.len() {
                return Err(Error::invalid_argument(format!(
                    "config {} of {reference}: {} diff ids for {} layers",
                    config.digest,
                    diff_ids.len(),
                    layers.len()
                )));
            }
            let config_platform = manifest_platform.clone().unwrap_or_else(|| platform_of(&image_config));

            // Layers start downloading now; the unpack takes each as it lands.
            let mut arrivals: Vec<LayerArrival> = Vec::new();
            for (i, layer) in layers.iter().enumerate() {
                let labels = HashMap::from([
                    ("containerd.io/uncompressed".to_string(), diff_ids[i].clone()),
                    source_label.clone(),
                ]);
                let feed = LayerFeed::new();
                let task = {
                    let (puller, repo, layer, progress) =
                        (Arc::clone(self), Arc::clone(&repo), layer.clone(), Arc::clone(progress));
                    let (ns, lease, parent) = (ns.to_string(), lease.to_string(), desc.digest.clone());
                    let end = FeedEnd(Arc::clone(&feed));
                    tokio::spawn(async move {
                        let blob = BlobFetch {
                            repo: &repo,
                            ns: &ns,
                            desc: &layer,
                            lease: &lease,
                            parent: &parent,
                            progress: &progress,
                            feed: &end.0,
                        };
                        puller.fetch_blob(&blob, labels).await
                    })
                };
                transfer_lease.track(task.abort_handle());
                let download: BoxFuture<'static, Result<()>> = Box::pin(async move {
                    task.await
                        .map_err(|e| Error::internal(format!("a layer download ended: {e}")))?
                });
                arrivals.push(LayerArrival {
                    committed: download.shared(),
                    feed: Some(feed),
                });
            }

            self.store_small(
                ns,
                &config,
                config_bytes,
                HashMap::from([source_label.clone()]),
                lease,
                progress,
            )
            .await?;
            let mut manifest_labels = HashMap::from([
                ("containerd.io/gc.ref.content.config".to_string(), config.digest.clone()),
                source_label.clone(),
            ]);
            for (i, layer) in layers.iter().enumerate() {
                manifest_labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), layer.digest.clone());
            }
            self.store_small(ns, &desc, bytes, manifest_labels, lease, progress)
                .await?;

            let mut unpacks_of_this = Vec::new();
            for (unpack_platform, snapshotter) in &request.unpacks {
                if platform::matches(unpack_platform, &config_platform) {
                    unpacks_of_this.push(Unpack {
                        namespace: ns.to_string(),
                        snapshotter: if snapshotter.is_empty() {
                            "overlayfs".to_string()
                        } else {
                            snapshotter.clone()
                        },
                        config: config.clone(),
                        layers: layers.clone(),
                        diff_ids: diff_ids.clone(),
                        lease: lease.to_string(),
                    });
                }
            }
            // Every layer downloads even when nothing unpacks it.
            let all: Vec<Committed> = arrivals.iter().map(|a| a.committed.clone()).collect();
            unpacked.push(Box::pin(async move {
                for download in all {
                    download.await?;
                }
                Ok(())
            }));
            for unpack in unpacks_of_this {
                let (unpacker, arrivals, progress) = (self.unpacker.clone(), arrivals.clone(), Arc::clone(progress));
                unpacked.push(Box::pin(async move { unpacker.run(unpack, arrivals, progress).await }));
            }
        }
        // Wait for all of it; the first error wins, the rest still end.
        let results = futures_util::future::join_all(unpacked).await;
        if let Some(error) = results.into_iter().find_map(|r| r.err()) {
            return Err(error);
        }
        if INDEX_TYPES.contains(&root.media_type.as_str()) {
            self.store_small(ns, &root, root_bytes, root_labels, lease, progress)
                .await?;
        }

        let name = if request.name.is_empty() {
            request.reference.clone()
        } else {
            request.name.clone()
        };
        let image = self.record(ns, &name, &root, &request.labels).await?;
        progress(Progress {
            event: "saved".into(),
            name: name.clone(),
            desc: Some(root.clone()),
            ..Default::default()
        });
        event(format!("Completed pull from {reference}"));
        Ok(image)
    }

    /// Creates the image record, or points the existing one at `target`.
    async fn record(
        &self,
        ns: &str,
        name: &str,
        target: &Descriptor,
        labels: &HashMap<String, String>,
    ) -> Result<Image> {
        let image = Image {
            name: name.to_string(),
            labels: labels.clone(),
            target: Some(target.clone()),
            created_at: None,
            updated_at: None,
        };
        record_image(&self.meta, &self.events, ns, image).await
    }

    /// Stores bytes already fetched and verified, with `labels`.
    async fn store_small(
        &self,
        ns: &str,
        desc: &Descriptor,
        bytes: bytes::Bytes,
        labels: HashMap<String, String>,
        lease: &str,
        progress: &ProgressSink,
    ) -> Result<()> {
        let digest = Digest::parse(&desc.digest)?;
        let reference = ref_key(desc);
        let stored: Result<()> = async {
            let Some(mut writer) = self.writer_for(ns, &reference, desc, &digest, lease).await? else {
                return self.add_labels(ns, &digest, labels).await;
            };
            if writer.status()?.offset != desc.size {
                writer.truncate().await?;
                writer.write(bytes.to_vec()).await?;
            }
            match writer.commit(desc.size, Some(digest.clone()), labels.clone()).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => self.add_labels(ns, &digest, labels).await,
                Err(e) => Err(e),
            }
        }
        .await;
        stored?;
        progress(Progress {
            event: "complete".into(),
            name: reference,
            parents: Vec::new(),
            progress: desc.size,
            total: desc.size,
            desc: Some(desc.clone()),
        });
        Ok(())
    }

    /// The ingest `name` for `desc`, or None when the namespace holds the
    /// blob already (the lease then holds it too).
    async fn writer_for(
        &self,
        ns: &str,
        name: &str,
        desc: &Descriptor,
        digest: &Digest,
        lease: &str,
    ) -> Result<Option<ContentWriter>> {
        match self
            .content
            .writer(ns, name, desc.size, Some(digest.clone()), Some(lease.to_string()))
            .await
        {
            Ok(writer) => Ok(Some(writer)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds `labels` to a blob the namespace holds; a distribution source
    /// joins the repositories already named, as containerd's do.
    async fn add_labels(&self, ns: &str, digest: &Digest, mut labels: HashMap<String, String>) -> Result<()> {
        if labels.keys().any(|k| k.starts_with(SOURCE_LABEL_PREFIX)) {
            let existing = self.content.info(ns, digest).await?.labels;
            for (key, value) in labels.iter_mut() {
                if key.starts_with(SOURCE_LABEL_PREFIX)
                    && let Some(before) = existing.get(key)
                {
                    *value = joined_sources(before, value);
                }
            }
        }
        self.content
            .update_labels(ns, digest, LabelUpdate::Keys(labels.into_iter().collect()))
            .await
            .map(|_| ())
    }

    /// Downloads one blob into the content store (resuming its ingest,
    /// retrying a broken body from where it stopped), verified at commit.
    async fn fetch_blob(&self, blob: &BlobFetch<'_>, labels: HashMap<String, String>) -> Result<()> {
        let BlobFetch {
            repo,
            ns,
            desc,
            lease,
            parent,
            progress,
            feed,
        } = *blob;
        let digest = Digest::parse(&desc.digest)?;
        let name = ref_key(desc);
        let report = |event: &str, offset: i64| {
            progress(Progress {
                event: event.to_string(),
                name: name.clone(),
                parents: vec![parent.to_string()],
                progress: offset,
                total: desc.size,
                desc: Some(desc.clone()),
            })
        };
        // One download of a blob at a time: a second pull waits, then finds
        // it stored.
        let _turn = self.blob_locks.lock([format!("{ns}/{digest}")]).await;
        let Some(mut writer) = self.writer_for(ns, &name, desc, &digest, lease).await? else {
            self.add_labels(ns, &digest, labels).await?;
            report("already exists", desc.size);
            return Ok(());
        };
        let _permit = self
            .downloads
            .acquire()
            .await
            .map_err(|_| Error::internal("the download limiter closed"))?;
        if let Some(data) = writer.data_reader()? {
            feed.opened(data, u64::try_from(writer.status()?.offset).unwrap_or(0));
        }
        if let Err(e) = self.download(repo, &mut writer, desc, &digest, &report, feed).await {
            // A failed pull leaves no partial blob behind.
            drop(writer);
            let _ = self.content.abort(ns, &name, Some(lease.to_string())).await;
            return Err(e);
        }
        match writer.commit(desc.size, Some(digest.clone()), labels.clone()).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => self.add_labels(ns, &digest, labels).await?,
            Err(e) => {
                // Bad bytes are not kept for a resume to build on.
                let _ = self.content.abort(ns, &name, Some(lease.to_string())).await;
                return Err(e.with_context(format!("blob {digest} from {}", repo.reference())));
            }
        }
        // Where a test kills the daemon with part of a pull committed.
        crate::failpoint::check("transfer.blob-committed")?;
        report("complete", desc.size);
        Ok(())
    }

    /// Writes blob `digest` into `writer` from where it stands, resuming a
    /// body that broke off, up to the configured attempts; tells `feed`
    /// how far the data reaches after each write.
    async fn download(
        &self,
        repo: &Repository,
        writer: &mut ContentWriter,
        desc: &Descriptor,
        digest: &Digest,
        report: &(dyn Fn(&str, i64) + Send + Sync),
        feed: &LayerFeed,
    ) -> Result<()> {
        let reached = |offset: i64| feed.reached(u64::try_from(offset).unwrap_or(0));
        let mut offset = writer.status()?.offset;
        if offset > desc.size {
            writer.truncate().await?;
            feed.restarted();
            offset = 0;
        }
        report("downloading", offset);
        let mut attempt = 0;
        while offset < desc.size {
            attempt += 1;
            let outcome: Result<()> = async {
                let mut body = repo.open_blob(digest, offset as u64).await?;
                if body.offset != offset as u64 {
                    writer.truncate().await?;
                    feed.restarted();
                    offset = 0;
                }
                let mut batch = Vec::with_capacity(WRITE_BATCH);
                let mut reported = offset;
                while let Some(chunk) = body.next().await? {
                    batch.extend_from_slice(&chunk);
                    if batch.len() >= WRITE_BATCH {
                        offset += batch.len() as i64;
                        writer.write(std::mem::take(&mut batch)).await?;
                        reached(offset);
                        if offset > desc.size {
                            break;
                        }
                        if offset - reported >= WRITE_BATCH as i64 {
                            report("downloading", offset);
                            reported = offset;
                        }
                    }
                }
                if !batch.is_empty() {
                    offset += batch.len() as i64;
                    writer.write(batch).await?;
                    reached(offset);
                }
                Ok(())
            }
            .await;
            match outcome {
                Ok(()) => {
                    if offset < desc.size {
                        // The body ended early: go on from there.
                        if attempt >= self.config.attempts {
                            return Err(Error::unavailable(format!(
                                "blob {digest} from {}: the body ended at {offset} of {} bytes",
                                repo.reference(),
                                desc.size
                            )));
                        }
                        continue;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Unavailable && attempt < self.config.attempts => {
                    tracing::debug!(%digest, error = %e, "blob download broke off, resuming");
                    offset = writer.status()?.offset;
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// One layer blob to download and where its progress and bytes go.
#[derive(Clone, Copy)]
struct BlobFetch<'a> {
    repo: &'a Repository,
    ns: &'a str,
    desc: &'a Descriptor,
    lease: &'a str,
    /// The manifest the blob belongs to (progress names it).
    parent: &'a str,
    progress: &'a ProgressSink,
    /// Readers following the download.
    feed: &'a LayerFeed,
}

/// The label naming, per registry host, the repositories a blob came from.
const SOURCE_LABEL_PREFIX: &str = "containerd.io/distribution.source.";

/// `before` (a comma-separated list of repositories) with `added`'s,
/// sorted and without repeats.
fn joined_sources(before: &str, added: &str) -> String {
    let mut repositories: Vec<&str> = before
        .split(',')
        .chain(added.split(','))
        .filter(|r| !r.is_empty())
        .collect();
    repositories.sort_unstable();
    repositories.dedup();
    repositories.join(",")
}

/// containerd's ingest names: `index-`, `manifest-`, `config-`, `layer-`
/// before the digest.
fn ref_key(desc: &Descriptor) -> String {
    let media_type = desc.media_type.as_str();
    let kind = if INDEX_TYPES.contains(&media_type) {
        "index"
    } else if MANIFEST_TYPES.contains(&media_type) {
        "manifest"
    } else if media_type.contains("config") {
        "config"
    } else if media_type.contains("layer") {
        "layer"
    } else {
        "unknown"
    };
    format!("{kind}-{}", desc.digest)
}

/// The entries of a manifest's `layers` (none when it has no such array).
pub(crate) fn layer_entries(manifest: &serde_json::Value) -> &[serde_json::Value] {
    manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A descriptor from its JSON form (checked digest, non-negative size).
pub(crate) fn descriptor(value: &serde_json::Value) -> Result<Descriptor> {
    let text = |field: &str| {
        value
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let digest = text("digest");
    Digest::parse(&digest)?;
    let size = value
        .get("size")
        .and_then(|s| s.as_i64())
        .filter(|&s| s >= 0)
        .ok_or_else(|| Error::invalid_argument(format!("descriptor {digest}: no valid size")))?;
    let annotations = value
        .get("annotations")
        .and_then(|a| a.as_object())
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Descriptor {
        media_type: text("mediaType"),
        digest,
        size,
        annotations,
    })
}

/// A platform from an index entry's `platform` or a config's fields.
pub(crate) fn platform_of(value: &serde_json::Value) -> Platform {
    let text = |field: &str| {
        value
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Platform {
        os: text("os"),
        architecture: text("architecture"),
        variant: text("variant"),
        os_version: text("os.version"),
    }
}

#[cfg(test)]
mod tests {
    use super::joined_sources;

    #[test]
    fn distribution_sources_join_sorted_without_repeats() {
        assert_eq!(joined_sources("library/b", "library/a"), "library/a,library/b");
        assert_eq!(joined_sources("a,c", "b"), "a,b,c");
        assert_eq!(joined_sources("a,b", "a"), "a,b");
        assert_eq!(joined_sources("", "a"), "a");
    }
}
