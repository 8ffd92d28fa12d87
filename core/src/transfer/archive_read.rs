//! Reading an image archive (an OCI image layout or `docker save` output,
//! as a tar, maybe gzip- or zstd-compressed) into the content store, for
//! an import. Every file of the archive becomes a blob under the import's
//! lease; a file under `blobs/<algorithm>/` must hash to its name. A
//! `docker save` archive gets a manifest per image and an index naming
//! them, written as containerd writes them. Runs on a blocking thread: the
//! tar is read with blocking I/O, the store is reached through `runtime`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use berth_api::containerd::types::Descriptor;
use serde_json::json;
use tokio::runtime::Handle;

use super::image_names::{IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION};
use super::pull::INDEX_TYPES;
use crate::content::Digest;
use crate::content::namespaced::NamespacedContent;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::Reference;

/// The biggest JSON file of an archive read (`manifest.json`, `oci-layout`).
const JSON_LIMIT: u64 = 20 << 20;
/// Bytes gathered before one write to an ingest.
const WRITE_BATCH: usize = 1 << 20;
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Where an archive's blobs go.
pub(crate) struct ArchiveTarget<'a> {
    pub runtime: Handle,
    pub content: &'a NamespacedContent,
    pub namespace: &'a str,
    pub lease: &'a str,
    /// gzip the layers a `docker save` archive holds uncompressed.
    pub force_compress: bool,
}

/// Stores the archive `source` carries; returns its index.
pub(crate) fn read_archive(target: &ArchiveTarget<'_>, source: impl Read) -> Result<Descriptor> {
    let mut source = BufReader::with_capacity(WRITE_BATCH, source);
    let head = source.fill_buf().map_err(|e| input_error(&e))?;
    let decompressed: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(source))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::with_buffer(source).map_err(|e| input_error(&e))?)
    } else {
        Box::new(source)
    };
    let mut tar = tar::Archive::new(decompressed);
    let mut blobs: HashMap<String, (Digest, i64)> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut layout: Option<serde_json::Value> = None;
    let mut docker: Option<serde_json::Value> = None;
    for entry in tar.entries().map_err(|e| input_error(&e))? {
        let mut entry = entry.map_err(|e| input_error(&e))?;
        let raw = entry.path().map_err(|e| input_error(&e))?.display().to_string();
        let path = clean_path(&raw)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let link = entry
                .link_name()
                .map_err(|e| input_error(&e))?
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let parent = path.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
            let joined = if link.starts_with('/') || parent.is_empty() {
                link
            } else {
                format!("{parent}/{link}")
            };
            links.insert(path, clean_path(&joined)?);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = i64::try_from(entry.header().size().map_err(|e| input_error(&e))?)
            .map_err(|_| Error::invalid_argument(format!("archive entry {path:?}: size out of range")))?;
        match path.as_str() {
            "oci-layout" => layout = Some(read_json(&mut entry, &path)?),
            "manifest.json" => docker = Some(read_json(&mut entry, &path)?),
            _ => {
                let digest = store_entry(target, &path, size, &mut entry)?;
                blobs.insert(path, (digest, size));
            }
        }
    }

    if let Some(layout) = layout {
        let version = layout
            .get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if version != "1.0.0" {
            return Err(Error::invalid_argument(format!(
                "archive oci-layout: unsupported image layout version {version:?}"
            )));
        }
        let (digest, size) = blobs
            .get("index.json")
            .ok_or_else(|| Error::invalid_argument("archive: an OCI layout without index.json"))?;
        return Ok(Descriptor {
            media_type: INDEX_TYPES[0].to_string(),
            digest: digest.to_string(),
            size: *size,
            annotations: HashMap::new(),
        });
    }
    let docker = docker.ok_or_else(|| {
        Error::invalid_argument("archive: neither an OCI layout (oci-layout) nor a docker archive (manifest.json)")
    })?;
    for (name, link) in &links {
        if let Some(blob) = blobs.get(link).cloned() {
            blobs.insert(name.clone(), blob);
        }
    }
    docker_index(target, &docker, &blobs)
}

/// The index of a `docker save` archive, its manifests written first.
fn docker_index(
    target: &ArchiveTarget<'_>,
    docker: &serde_json::Value,
    blobs: &HashMap<String, (Digest, i64)>,
) -> Result<Descriptor> {
    let images = docker
        .as_array()
        .ok_or_else(|| Error::invalid_argument("archive manifest.json: not a list of images"))?;
    let mut entries = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let file = |value: Option<&serde_json::Value>, what: &str| -> Result<(Digest, i64)> {
            let name = value.and_then(|v| v.as_str()).unwrap_or_default();
            let name = clean_path(name)?;
            blobs.get(&name).cloned().ok_or_else(|| {
                Error::invalid_argument(format!(
                    "archive manifest.json image {i}: {what} {name:?} is not in the archive"
                ))
            })
        };
        let (config_digest, config_size) = file(image.get("Config"), "config")?;
        let mut layers = Vec::new();
        for layer in image
            .get("Layers")
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default()
        {
            let (digest, size) = file(Some(&layer), "layer")?;
            layers.push(layer_descriptor(target, digest, size)?);
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest.to_string(), "size": config_size},
            "layers": layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| Error::internal(e.to_string()))?;
        let manifest_digest = store_bytes(target, "manifest", manifest_bytes.clone())?;
        let config = read_stored(target, &config_digest)?;
        let config: serde_json::Value = serde_json::from_slice(&config)
            .map_err(|e| Error::invalid_argument(format!("archive config {config_digest}: {e}")))?;
        let mut entry = json!({
            "mediaType": DOCKER_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest_bytes.len(),
        });
        if let Some(os) = config.get("os").and_then(|o| o.as_str()) {
            let mut platform = json!({"os": os, "architecture": config.get("architecture").and_then(|a| a.as_str()).unwrap_or_default()});
            if let Some(variant) = config.get("variant").and_then(|v| v.as_str()) {
                platform["variant"] = json!(variant);
            }
            entry["platform"] = platform;
        }
        let tags: Vec<String> = image
            .get("RepoTags")
            .and_then(|t| t.as_array())
            .map(|t| t.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if tags.is_empty() {
            entries.push(entry.clone());
        }
        for tag in tags {
            let reference = Reference::parse(&tag).map_err(|e| e.with_context("archive manifest.json RepoTags"))?;
            let normalized = reference.to_string();
            let short = if reference.digest.is_none() {
                reference.object()
            } else {
                normalized.clone()
            };
            let mut named = entry.clone();
            named["annotations"] = json!({IMAGE_NAME_ANNOTATION: normalized, REF_NAME_ANNOTATION: short});
            entries.push(named);
        }
    }
    let index = json!({"schemaVersion": 2, "mediaType": INDEX_TYPES[0], "manifests": entries});
    let bytes = serde_json::to_vec(&index).map_err(|e| Error::internal(e.to_string()))?;
    let size = bytes.len() as i64;
    let digest = store_bytes(target, "index", bytes)?;
    Ok(Descriptor {
        media_type: INDEX_TYPES[0].to_string(),
        digest: digest.to_string(),
        size,
        annotations: HashMap::new(),
    })
}

/// A `docker save` layer's descriptor, its media type from its first
/// bytes; gzipped first when asked.
fn layer_descriptor(target: &ArchiveTarget<'_>, digest: Digest, size: i64) -> Result<serde_json::Value> {
    let (mut file, _) = target
        .runtime
        .block_on(target.content.open(target.namespace, &digest))?;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(format!("content {digest}"), &e))?;
    let head = &head[..n];
    let (media_type, digest, size) = if head.starts_with(&[0x1f, 0x8b]) {
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", digest, size)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ("application/vnd.docker.image.rootfs.diff.tar.zstd", digest, size)
    } else if target.force_compress {
        let (file, _) = target
            .runtime
            .block_on(target.content.open(target.namespace, &digest))?;
        let (compressed, compressed_size) = gzip_blob(target, file, &digest)?;
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            compressed,
            compressed_size,
        )
    } else {
        ("application/vnd.docker.image.rootfs.diff.tar", digest, size)
    };
    Ok(json!({"mediaType": media_type, "digest": digest.to_string(), "size": size}))
}

/// Stores `file` (the blob `uncompressed`) gzipped, labelled with what it
/// holds uncompressed.
fn gzip_blob(target: &ArchiveTarget<'_>, file: std::fs::File, uncompressed: &Digest) -> Result<(Digest, i64)> {
    let reference = format!("compress-blob-{}-{}", target.lease, uncompressed.hex());
    let mut encoder = flate2::read::GzEncoder::new(BufReader::new(file), flate2::Compression::default());
    let labels = HashMap::from([("containerd.io/uncompressed".to_string(), uncompressed.to_string())]);
    write_blob(target, &reference, 0, None, &mut encoder, labels)
}

/// Stores one archive file; its digest.
fn store_entry(target: &ArchiveTarget<'_>, path: &str, size: i64, data: &mut impl Read) -> Result<Digest> {
    let expected = named_digest(path)?;
    let reference = format!("import-{}-{path}", target.lease);
    write_blob(target, &reference, size, expected, data, HashMap::new())
        .map(|(digest, _)| digest)
        .map_err(|e| e.with_context(format!("archive entry {path:?}")))
}

/// Writes `data` into ingest `reference` and commits it; a blob the
/// namespace holds already is only added to the lease.
fn write_blob(
    target: &ArchiveTarget<'_>,
    reference: &str,
    size: i64,
    expected: Option<Digest>,
    data: &mut impl Read,
    labels: HashMap<String, String>,
) -> Result<(Digest, i64)> {
    let (content, ns, lease) = (target.content, target.namespace, Some(target.lease.to_string()));
    let runtime = &target.runtime;
    let mut writer = match runtime.block_on(content.writer(ns, reference, size, expected.clone(), lease.clone())) {
        Ok(writer) => writer,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            std::io::copy(data, &mut std::io::sink()).map_err(|e| input_error(&e))?;
            let digest = expected.ok_or(e)?;
            return Ok((digest, size));
        }
        Err(e) => return Err(e),
    };
    let written: Result<(Digest, i64)> = (|| {
        // The store holds these bytes for another namespace: nothing to write.
        if expected.is_some() && size > 0 && writer.status()?.offset == size {
            std::io::copy(data, &mut std::io::sink()).map_err(|e| input_error(&e))?;
            let digest = writer.digest()?;
            return match runtime.block_on(writer.commit(size, expected.clone(), labels)) {
                Ok(digest) => Ok((digest, size)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok((digest, size)),
                Err(e) => Err(e),
            };
        }
        runtime.block_on(writer.truncate())?;
        let mut total: i64 = 0;
        loop {
            let mut batch = vec![0u8; WRITE_BATCH];
            let n = read_up_to(data, &mut batch).map_err(|e| input_error(&e))?;
            if n == 0 {
                break;
            }
            batch.truncate(n);
            total += n as i64;
            runtime.block_on(writer.write(batch))?;
        }
        let digest = writer.digest()?;
        match runtime.block_on(writer.commit(total, expected.clone(), labels)) {
            Ok(digest) => Ok((digest, total)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok((digest, total)),
            Err(e) if e.kind() == ErrorKind::FailedPrecondition => Err(Error::invalid_argument(format!(
                "its bytes do not match its name: {}",
                e.context()
            ))),
            Err(e) => Err(e),
        }
    })();
    if written.is_err() {
        let _ = runtime.block_on(content.abort(ns, reference, lease));
    }
    written
}

/// Stores bytes the import made itself (a manifest, an index).
fn store_bytes(target: &ArchiveTarget<'_>, kind: &str, bytes: Vec<u8>) -> Result<Digest> {
    let digest = Digest::of(&bytes);
    let reference = format!("{kind}-{digest}");
    let size = bytes.len() as i64;
    write_blob(
        target,
        &reference,
        size,
        Some(digest),
        &mut bytes.as_slice(),
        HashMap::new(),
    )
    .map(|(d, _)| d)
}

fn read_stored(target: &ArchiveTarget<'_>, digest: &Digest) -> Result<Vec<u8>> {
    let (file, size) = target.runtime.block_on(target.content.open(target.namespace, digest))?;
    if size as u64 > JSON_LIMIT {
        return Err(Error::invalid_argument(format!(
            "archive config {digest}: over {JSON_LIMIT} bytes"
        )));
    }
    let mut bytes = Vec::new();
    file.take(JSON_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("content {digest}"), &e))?;
    Ok(bytes)
}

fn read_json(entry: &mut impl Read, path: &str) -> Result<serde_json::Value> {
    let mut bytes = Vec::new();
    entry
        .take(JSON_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| input_error(&e))?;
    if bytes.len() as u64 > JSON_LIMIT {
        return Err(Error::invalid_argument(format!(
            "archive entry {path:?}: over {JSON_LIMIT} bytes"
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid_argument(format!("archive entry {path:?}: {e}")))
}

/// The digest a `blobs/<algorithm>/<hex>` path names.
fn named_digest(path: &str) -> Result<Option<Digest>> {
    let Some(rest) = path.strip_prefix("blobs/") else {
        return Ok(None);
    };
    let Some((algorithm, hex)) = rest.split_once('/') else {
        return Ok(None);
    };
    Digest::parse(&format!("{algorithm}:{hex}"))
        .map(Some)
        .map_err(|e| e.with_context(format!("archive entry {path:?}")))
}

/// An entry's path without `./`, duplicate or trailing slashes; one that
/// climbs out of the archive (`..`) or is absolute is refused.
fn clean_path(raw: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Error::invalid_argument(format!(
                    "archive entry {raw:?}: a path that leaves the archive"
                )));
            }
            part => parts.push(part),
        }
    }
    if raw.starts_with('/') {
        return Err(Error::invalid_argument(format!(
            "archive entry {raw:?}: an absolute path"
        )));
    }
    Ok(parts.join("/"))
}

fn read_up_to(source: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// An error reading the archive: the stream's own error when it was cut
/// off, else a malformed archive.
fn input_error(e: &std::io::Error) -> Error {
    if let Some(inner) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        return inner.clone();
    }
    Error::invalid_argument(format!("archive: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_escapes_refused() {
        assert_eq!(clean_path("./blobs//sha256/ab/").unwrap(), "blobs/sha256/ab");
        assert!(
            clean_path("../etc/passwd")
                .unwrap_err()
                .to_string()
                .contains("leaves the archive")
        );
        assert!(clean_path("/index.json").is_err());
        let hex = "a".repeat(64);
        assert_eq!(
            named_digest(&format!("blobs/sha256/{hex}"))
                .unwrap()
                .unwrap()
                .to_string(),
            format!("sha256:{hex}")
        );
        assert!(named_digest("blobs/sha256/zz").is_err());
        assert!(named_digest("abc/layer.tar").unwrap().is_none());
    }
}
