//! Export: images of the store → an image archive streamed to the client,
//! for the Transfer service (ImageStore → ImageExportStream).
//!
//! The archive is an OCI image layout, as containerd writes one: every
//! blob of the chosen platforms' manifests under `blobs/<algorithm>/`, an
//! `index.json` naming each image (`io.containerd.image.name`,
//! `org.opencontainers.image.ref.name`), and unless asked not to, a
//! docker-compatible `manifest.json`. Every blob is checked against its
//! digest as it is copied out. The tar is written with blocking I/O on a
//! blocking thread; the bytes go to the client through a channel.

use std::collections::HashSet;
use std::io::{Read, Write};

use berth_api::containerd::types::{Descriptor, Platform};
use bytes::Bytes;
use serde_json::json;
use sha2::Digest as _;
use tokio::sync::mpsc;

use super::channel_io::ChannelWriter;
use super::image_names::{IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION};
use super::json_blob::read_json_blob;
use super::platform;
use super::pull::{INDEX_TYPES, MANIFEST_TYPES, descriptor, layer_entries, platform_of};
use crate::content::Digest;
use crate::content::namespaced::NamespacedContent;
use crate::error::{Error, Result};
use crate::metadata::{MetadataStore, images};
use crate::registry::Reference;

/// What to export.
#[derive(Debug, Default)]
pub struct ExportRequest {
    /// The namespace of the images.
    pub namespace: String,
    /// The images' names.
    pub images: Vec<String>,
    /// The platforms whose manifests go (the host's when empty).
    pub platforms: Vec<Platform>,
    /// Every platform's blobs go too (the docker manifest still names the
    /// chosen platform's).
    pub all_platforms: bool,
    /// Leave out `manifest.json`.
    pub skip_compatibility_manifest: bool,
    /// Leave out layers marked non-distributable.
    pub skip_non_distributable: bool,
}

/// Exports images; one per daemon.
#[derive(Debug)]
pub struct Exporter {
    content: NamespacedContent,
    meta: MetadataStore,
}

/// One file of the archive.
enum Record {
    Blob(Descriptor),
    Json(&'static str, Vec<u8>),
}

impl Exporter {
    /// An exporter over the daemon's stores.
    pub fn new(content: NamespacedContent, meta: MetadataStore) -> Self {
        Self { content, meta }
    }

    /// Writes the archive of `request` into `sink`, a chunk at a time.
    pub async fn export(&self, request: ExportRequest, sink: mpsc::Sender<Bytes>) -> Result<()> {
        let ns = request.namespace.clone();
        if request.images.is_empty() {
            return Err(Error::invalid_argument("export: no image named"));
        }
        let wanted = if request.platforms.is_empty() {
            vec![platform::host()]
        } else {
            request.platforms.clone()
        };
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut entries = Vec::new();
        // Docker manifests: manifest digest → (its descriptor, image names).
        let mut docker: Vec<(Descriptor, Vec<String>)> = Vec::new();
        for name in &request.images {
            let (n, key) = (ns.clone(), name.clone());
            let image = self
                .meta
                .read(move |txn| images::get(txn, &n, &key))
                .await?
                .ok_or_else(|| Error::not_found(format!("image {name:?}")))?;
            let target = image
                .target
                .ok_or_else(|| Error::failed_precondition(format!("image {name:?} has no target")))?;
            let chosen = if MANIFEST_TYPES.contains(&target.media_type.as_str()) {
                self.collect(&ns, &target, &request, &mut blobs, &mut seen, 0).await?;
                target.clone()
            } else if INDEX_TYPES.contains(&target.media_type.as_str()) {
                push_blob(&target, &mut blobs, &mut seen);
                let index = self.read_json(&ns, &target).await?;
                let mut chosen = None;
                for entry in index
                    .get("manifests")
                    .and_then(|m| m.as_array())
                    .cloned()
                    .unwrap_or_default()
                {
                    let child = descriptor(&entry).map_err(|e| e.with_context(format!("index {}", target.digest)))?;
                    let matches = entry
                        .get("platform")
                        .map(platform_of)
                        .is_none_or(|p| wanted.iter().any(|w| platform::matches(w, &p)));
                    if !matches && !request.all_platforms {
                        continue;
                    }
                    self.collect(&ns, &child, &request, &mut blobs, &mut seen, 1).await?;
                    if matches && chosen.is_none() && MANIFEST_TYPES.contains(&child.media_type.as_str()) {
                        chosen = Some(child);
                    }
                }
                chosen.ok_or_else(|| {
                    let names: Vec<String> = wanted.iter().map(platform::format).collect();
                    Error::not_found(format!("image {name:?}: no manifest for platform {}", names.join(", ")))
                })?
            } else {
                return Err(Error::invalid_argument(format!(
                    "image {name:?}: only manifests and indexes may be exported, not {}",
                    target.media_type
                )));
            };
            let mut entry = target.clone();
            entry.annotations.insert(IMAGE_NAME_ANNOTATION.into(), name.clone());
            entry.annotations.insert(REF_NAME_ANNOTATION.into(), short_name(name));
            entries.push(entry);
            match docker.iter_mut().find(|(d, _)| d.digest == chosen.digest) {
                Some((_, names)) => names.push(name.clone()),
                None => docker.push((chosen, vec![name.clone()])),
            }
        }

        let mut records = vec![Record::Json(
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        )];
        records.extend(blobs.into_iter().map(Record::Blob));
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPES[0],
            "manifests": entries.iter().map(descriptor_json).collect::<Vec<_>>(),
        });
        records.push(Record::Json("index.json", to_vec(&index)?));
        if !request.skip_compatibility_manifest {
            let mut compat = Vec::new();
            for (manifest, names) in &docker {
                let manifest = self.read_json(&ns, manifest).await?;
                let path = |d: &serde_json::Value| -> Result<String> {
                    Ok(blob_path(&Digest::parse(&descriptor(d)?.digest)?))
                };
                let config = path(manifest.get("config").unwrap_or(&serde_json::Value::Null))?;
                let layers = layer_entries(&manifest).iter().map(path).collect::<Result<Vec<_>>>()?;
                let tags: Vec<String> = names.iter().map(|n| familiar_name(n)).collect();
                compat.push(json!({"Config": config, "RepoTags": tags, "Layers": layers}));
            }
            records.push(Record::Json(
                "manifest.json",
                to_vec(&serde_json::Value::Array(compat))?,
            ));
        }

        let (content, runtime) = (self.content.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || write_tar(&runtime, &content, &ns, records, sink))
            .await
            .map_err(|e| Error::internal(format!("the archive writer ended: {e}")))?
    }

    /// Adds `desc` and what it names, all of it, to `blobs`.
    fn collect<'a>(
        &'a self,
        ns: &'a str,
        desc: &'a Descriptor,
        request: &'a ExportRequest,
        blobs: &'a mut Vec<Descriptor>,
        seen: &'a mut HashSet<String>,
        depth: usize,
    ) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let media_type = desc.media_type.as_str();
            if request.skip_non_distributable
                && (media_type.contains("nondistributable") || media_type.contains("foreign"))
            {
                return Ok(());
            }
            push_blob(desc, blobs, seen);
            let is_index = INDEX_TYPES.contains(&media_type);
            if !is_index && !MANIFEST_TYPES.contains(&media_type) {
                return Ok(());
            }
            if depth > 4 {
                return Err(Error::invalid_argument(format!(
                    "index {}: indexes nest too deep",
                    desc.digest
                )));
            }
            let value = self.read_json(ns, desc).await?;
            let mut children = Vec::new();
            if is_index {
                children.extend(
                    value
                        .get("manifests")
                        .and_then(|m| m.as_array())
                        .cloned()
                        .unwrap_or_default(),
                );
            } else {
                children.extend(value.get("config").cloned());
                children.extend(
                    value
                        .get("layers")
                        .and_then(|l| l.as_array())
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            for child in children {
                let child = descriptor(&child).map_err(|e| e.with_context(&desc.digest))?;
                self.collect(ns, &child, request, blobs, seen, depth + 1).await?;
            }
            Ok(())
        })
    }

    async fn read_json(&self, ns: &str, desc: &Descriptor) -> Result<serde_json::Value> {
        read_json_blob(&self.content, ns, desc)
            .await
            .map_err(|e| e.with_context(&desc.digest))
    }
}

fn push_blob(desc: &Descriptor, blobs: &mut Vec<Descriptor>, seen: &mut HashSet<String>) {
    if seen.insert(desc.digest.clone()) {
        blobs.push(desc.clone());
    }
}

fn to_vec(value: &serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::internal(e.to_string()))
}

fn descriptor_json(desc: &Descriptor) -> serde_json::Value {
    let mut value = json!({"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size});
    if !desc.annotations.is_empty() {
        let annotations: std::collections::BTreeMap<_, _> = desc.annotations.iter().collect();
        value["annotations"] = json!(annotations);
    }
    value
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().name(), digest.hex())
}

/// The OCI `ref.name` of an image: its tag, or the whole name when it has
/// none (or a digest).
fn short_name(name: &str) -> String {
    match Reference::parse(name) {
        Ok(reference) if reference.digest.is_none() => reference.object(),
        _ => name.to_string(),
    }
}

/// The name docker shows (`busybox:latest` for
/// `docker.io/library/busybox:latest`).
fn familiar_name(name: &str) -> String {
    let Ok(reference) = Reference::parse(name) else {
        return name.to_string();
    };
    let repository = if reference.host == "docker.io" {
        reference
            .repository
            .strip_prefix("library/")
            .unwrap_or(&reference.repository)
            .to_string()
    } else {
        format!("{}/{}", reference.host, reference.repository)
    };
    match &reference.digest {
        Some(digest) => format!("{repository}@{digest}"),
        None => format!("{repository}:{}", reference.object()),
    }
}

/// Writes `records` as a tar into `sink`; blobs are read from the store
/// and checked against their digests.
fn write_tar(
    runtime: &tokio::runtime::Handle,
    content: &NamespacedContent,
    ns: &str,
    records: Vec<Record>,
    sink: mpsc::Sender<Bytes>,
) -> Result<()> {
    let mut tar = tar::Builder::new(ChannelWriter::new(sink));
    let sent = |e: std::io::Error| Error::unavailable(format!("export stream: {e}"));
    let mut directories: Vec<String> = Vec::new();
    for record in records {
        match record {
            Record::Json(name, bytes) => {
                let mut header = file_header(bytes.len() as u64, 0o644);
                tar.append_data(&mut header, name, bytes.as_slice()).map_err(sent)?;
            }
            Record::Blob(desc) => {
                let digest = Digest::parse(&desc.digest)?;
                for dir in ["blobs".to_string(), format!("blobs/{}", digest.algorithm().name())] {
                    if !directories.contains(&dir) {
                        let mut header = tar::Header::new_ustar();
                        header.set_entry_type(tar::EntryType::Directory);
                        header.set_mode(0o755);
                        header.set_size(0);
                        header.set_mtime(0);
                        tar.append_data(&mut header, format!("{dir}/"), std::io::empty())
                            .map_err(sent)?;
                        directories.push(dir);
                    }
                }
                let (file, size) = runtime
                    .block_on(content.open(ns, &digest))
                    .map_err(|e| e.with_context(format!("export of {}", desc.digest)))?;
                let mut checked = Checked {
                    inner: file.take(size as u64),
                    hasher: sha2::Sha256::new(),
                };
                let mut header = file_header(size as u64, 0o444);
                tar.append_data(&mut header, blob_path(&digest), &mut checked)
                    .map_err(|e| Error::io(format!("export of {}", desc.digest), &e))?;
                let copied = Digest::from_sha256(checked.hasher);
                if copied != digest {
                    return Err(Error::internal(format!(
                        "content {digest} reads back as {copied}: the store's copy is damaged"
                    )));
                }
            }
        }
    }
    tar.into_inner().and_then(|mut w| w.flush()).map_err(sent)
}

fn file_header(size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header
}

/// A reader that hashes what passes through it.
struct Checked<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_docker_and_oci_show_them() {
        assert_eq!(familiar_name("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(familiar_name("docker.io/berth/busybox:1"), "berth/busybox:1");
        assert_eq!(familiar_name("127.0.0.1:5000/app:v2"), "127.0.0.1:5000/app:v2");
        assert_eq!(short_name("docker.io/library/busybox:latest"), "latest");
        assert_eq!(short_name("127.0.0.1:5000/app:v2"), "v2");
    }
}
