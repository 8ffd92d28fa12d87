//! Push: image record → registry, for the Transfer service.
//!
//! The image's tree is read from the content store (an index with the
//! manifests it holds locally, each manifest's config and layers). Blobs go
//! first, children before parents: one the repository has already is
//! skipped, one pulled from another repository of the same registry is
//! mounted from there, any other streams from its file. Manifests follow by
//! digest, the root last under the reference's tag (or digest). Pushing
//! some platforms of an index pushes a new index naming only theirs.

use std::io::Read as _;
use std::sync::Arc;

use berth_api::containerd::types::transfer::Progress;
use berth_api::containerd::types::{Descriptor, Platform};
use bytes::Bytes;

use super::platform;
use super::pull::{INDEX_TYPES, MANIFEST_TYPES, ProgressSink, descriptor, platform_of};
use crate::content::Digest;
use crate::content::namespaced::NamespacedContent;
use crate::error::{Error, Result};
use crate::metadata::{MetadataStore, images};
use crate::registry::transport::Payload;
use crate::registry::{Authorizer, CredentialSource, Reference, RegistryConfig, Repository};

/// What to push and where.
pub struct PushRequest {
    /// The namespace of the image.
    pub namespace: String,
    /// The image record's name.
    pub image: String,
    /// Where to: the reference the root goes under.
    pub reference: String,
    /// Only these platforms' manifests of an index (all held when empty).
    pub platforms: Vec<Platform>,
    /// `http` or `https` where no hosts.toml says; empty for the default.
    pub default_scheme: String,
    /// Extra headers for every request.
    pub headers: Vec<(String, String)>,
    /// Where credentials come from.
    pub credentials: Arc<dyn CredentialSource>,
}

/// Pushes images from the daemon's stores.
pub struct Pusher {
    content: NamespacedContent,
    meta: MetadataStore,
    config: RegistryConfig,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").finish_non_exhaustive()
    }
}

impl Pusher {
    /// A pusher over the daemon's content and metadata.
    pub fn new(content: NamespacedContent, meta: MetadataStore, config: RegistryConfig) -> Self {
        Self { content, meta, config }
    }

    /// Pushes `request`; returns the root's descriptor.
    pub async fn push(&self, request: PushRequest, progress: ProgressSink) -> Result<Descriptor> {
        let reference = Reference::parse(&request.reference)?;
        let ns = request.namespace.as_str();
        let (n, name) = (ns.to_string(), request.image.clone());
        let image = self
            .meta
            .read(move |txn| images::get(txn, &n, &name))
            .await?
            .ok_or_else(|| Error::not_found(format!("image {:?}", request.image)))?;
        let root = image
            .target
            .ok_or_else(|| Error::failed_precondition(format!("image {:?} has no target", request.image)))?;
        let auth = Arc::new(Authorizer::new(Arc::clone(&request.credentials)));
        let repo = Repository::open(
            &self.config,
            &reference,
            &request.default_scheme,
            &request.headers,
            auth,
        )?;
        progress(Progress {
            event: format!("Pushing to {reference}"),
            ..Default::default()
        });

        let mut root_bytes = self.read_small(ns, &root).await?;
        let mut root = root;
        let mut manifests = Vec::new();
        if INDEX_TYPES.contains(&root.media_type.as_str()) {
            let mut index: serde_json::Value = serde_json::from_slice(&root_bytes)
                .map_err(|e| Error::invalid_argument(format!("index {}: {e}", root.digest)))?;
            let entries = index
                .get("manifests")
                .and_then(|m| m.as_array())
                .cloned()
                .unwrap_or_default();
            let mut kept = Vec::new();
            for entry in &entries {
                let desc = descriptor(entry)?;
                if !request.platforms.is_empty() {
                    let entry_platform = entry.get("platform").map(platform_of).unwrap_or_default();
                    if !request.platforms.iter().any(|w| platform::matches(w, &entry_platform)) {
                        continue;
                    }
                }
                let digest = Digest::parse(&desc.digest)?;
                match self.content.info(ns, &digest).await {
                    Ok(_) => manifests.push(desc),
                    Err(e) if e.is_not_found() => {
                        return Err(Error::failed_precondition(format!(
                            "image {:?}: manifest {} of its index is not held here (pull every platform first)",
                            request.image, desc.digest
                        )));
                    }
                    Err(e) => return Err(e),
                }
                kept.push(entry.clone());
            }
            if kept.len() < entries.len() {
                // Some platforms only: a new index of theirs, as a registry
                // refuses one naming manifests it was never sent.
                if kept.is_empty() {
                    let names: Vec<String> = request.platforms.iter().map(platform::format).collect();
                    return Err(Error::not_found(format!(
                        "image {:?}: no manifest for platform {}",
                        request.image,
                        names.join(", ")
                    )));
                }
                if reference.digest.is_some() {
                    return Err(Error::invalid_argument(format!(
                        "{reference}: a digest names the whole index of image {:?}; push some of its platforms under a tag",
                        request.image
                    )));
                }
                index["manifests"] = serde_json::Value::Array(kept);
                let bytes = serde_json::to_vec(&index)
                    .map_err(|e| Error::internal(format!("writing the index of {:?}: {e}", request.image)))?;
                root = Descriptor {
                    media_type: root.media_type.clone(),
                    digest: Digest::of(&bytes).to_string(),
                    size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
                    annotations: root.annotations.clone(),
                };
                root_bytes = Bytes::from(bytes);
            }
        } else if MANIFEST_TYPES.contains(&root.media_type.as_str()) {
            manifests.push(root.clone());
        } else {
            return Err(Error::invalid_argument(format!(
                "image {:?}: {} is not a manifest or index",
                request.image, root.media_type
            )));
        }

        for manifest_desc in &manifests {
            let bytes = if manifest_desc.digest == root.digest {
                root_bytes.clone()
            } else {
                self.read_small(ns, manifest_desc).await?
            };
            let manifest: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::invalid_argument(format!("manifest {}: {e}", manifest_desc.digest)))?;
            let mut blobs = vec![
                manifest
                    .get("config")
                    .ok_or_else(|| Error::invalid_argument(format!("manifest {}: no config", manifest_desc.digest)))
                    .and_then(descriptor)?,
            ];
            for layer in manifest
                .get("layers")
                .and_then(|l| l.as_array())
                .cloned()
                .unwrap_or_default()
            {
                blobs.push(descriptor(&layer)?);
            }
            for blob in &blobs {
                self.push_blob(ns, &repo, &reference, blob, &progress).await?;
            }
            if manifest_desc.digest != root.digest {
                repo.put_manifest(&manifest_desc.digest, &manifest_desc.media_type, bytes)
                    .await?;
                report(&progress, "complete", manifest_desc);
            }
        }
        repo.put_manifest(&reference.object(), &root.media_type, root_bytes)
            .await?;
        report(&progress, "complete", &root);
        progress(Progress {
            event: format!("Completed push to {reference}"),
            desc: Some(root.clone()),
            ..Default::default()
        });
        Ok(root)
    }

    async fn push_blob(
        &self,
        ns: &str,
        repo: &Repository,
        reference: &Reference,
        blob: &Descriptor,
        progress: &ProgressSink,
    ) -> Result<()> {
        let digest = Digest::parse(&blob.digest)?;
        if repo.blob_exists(&digest).await? {
            report(progress, "exists", blob);
            return Ok(());
        }
        let info = self.content.info(ns, &digest).await.map_err(|e| {
            if e.is_not_found() {
                Error::failed_precondition(format!("blob {digest} is not held here, so it cannot be pushed"))
            } else {
                e
            }
        })?;
        // Pulled from another repository of this registry: mount it.
        let source = info
            .labels
            .get(&format!("containerd.io/distribution.source.{}", reference.host))
            .and_then(|repos| repos.split(',').find(|r| *r != reference.repository))
            .map(str::to_string);
        let (file, size) = self.content.open(ns, &digest).await?;
        report(progress, "uploading", blob);
        let mounted = repo
            .upload_blob(&digest, Payload::File(Arc::new(file), size as u64), source.as_deref())
            .await?;
        report(progress, if mounted { "mounted" } else { "complete" }, blob);
        Ok(())
    }

    /// A manifest, index or config from the store, within the size cap.
    async fn read_small(&self, ns: &str, desc: &Descriptor) -> Result<Bytes> {
        let digest = Digest::parse(&desc.digest)?;
        let (file, size) = self.content.open(ns, &digest).await?;
        if size as u64 > self.config.max_manifest_size as u64 {
            return Err(Error::invalid_argument(format!(
                "{digest}: {size} bytes is over the limit of {}",
                self.config.max_manifest_size
            )));
        }
        tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::with_capacity(size as usize);
            let mut file = file;
            file.read_to_end(&mut bytes)
                .map(|_| Bytes::from(bytes))
                .map_err(|e| Error::io(format!("reading {digest}"), &e))
        })
        .await
        .map_err(|e| Error::internal(format!("reading a blob: {e}")))?
    }
}

fn report(progress: &ProgressSink, event: &str, desc: &Descriptor) {
    progress(Progress {
        event: event.to_string(),
        name: desc.digest.clone(),
        parents: Vec::new(),
        progress: if event == "uploading" { 0 } else { desc.size },
        total: desc.size,
        desc: Some(desc.clone()),
    });
}
