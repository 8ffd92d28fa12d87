//! The walking differ (plugin `io.containerd.differ.v1.walking`).
//!
//! Apply streams a layer from the content store (or from the stream its
//! caller hands over, such as a download still running) through decompression and
//! a sha256 of the uncompressed bytes (the diff id) on one thread while
//! another unpacks it, never holding a whole layer in memory. It writes
//! straight into an overlay upper directory or a bind-mounted directory
//! when the mounts allow, and otherwise mounts them on a temporary
//! directory. Compare mounts both trees read-only, walks them together and
//! streams the layer, compressed, into the content store.

mod apply;
mod compression;
mod compute;
mod file_pool;
mod header_budget;
pub(crate) mod root;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_api::containerd::types::Descriptor;
use berth_core::content::namespaced::NamespacedContent;
use berth_core::content::{ContentStore, Digest};
use berth_core::diff::{ApplyRequest, CompareRequest, DiffFuture, Differ, DifferPlugin};
use berth_core::metadata::MetadataStore;
use berth_core::mount::{Mount, TempMount, overlay_lowerdirs};
use berth_core::plugin::{Instance, Registration, types};
use berth_core::{Error, ErrorKind, Result};
use sha2::{Digest as _, Sha256};

pub use apply::{Target, apply};
pub use compression::{Compression, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, decompress, of_media_type};
pub use compute::write_diff;

/// Label recording a compressed layer's diff id.
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// Bytes per chunk between the decompressing and unpacking threads.
const CHUNK: usize = 256 << 10;

/// Applies and computes layers over the content store.
#[derive(Debug)]
pub struct WalkingDiffer {
    content: NamespacedContent,
    scratch: PathBuf,
}

impl WalkingDiffer {
    /// A differ reading and writing `content`, mounting under `scratch`.
    pub fn new(content: NamespacedContent, scratch: PathBuf) -> Self {
        Self { content, scratch }
    }
}

impl Differ for WalkingDiffer {
    fn apply(&self, request: ApplyRequest) -> DiffFuture<'_, Descriptor> {
        Box::pin(async move {
            of_media_type(&request.layer.media_type)?;
            let digest = Digest::parse(&request.layer.digest)?;
            let source: Box<dyn Read + Send> = match request.stream.as_ref().and_then(|s| s.take()) {
                Some(stream) => stream,
                None => Box::new(self.content.open(&request.namespace, &digest).await?.0),
            };
            let scratch = self.scratch.clone();
            let (diff_id, size) = tokio::task::spawn_blocking(move || {
                apply_layer(source, &request.mounts, &scratch, request.sync_fs)
                    .map_err(|e| e.with_context(format!("applying layer {digest}")))
            })
            .await
            .map_err(|e| Error::internal(format!("apply task failed: {e}")))??;
            Ok(Descriptor {
                media_type: OCI_LAYER_TAR.to_string(),
                digest: diff_id.to_string(),
                size,
                annotations: HashMap::new(),
            })
        })
    }

    fn compare(&self, request: CompareRequest) -> DiffFuture<'_, Descriptor> {
        Box::pin(async move { self.compare_into_content(request).await })
    }
}

impl WalkingDiffer {
    async fn compare_into_content(&self, request: CompareRequest) -> Result<Descriptor> {
        let media_type = if request.media_type.is_empty() {
            OCI_LAYER_GZIP.to_string()
        } else {
            request.media_type.clone()
        };
        let compression = of_media_type(&media_type).map_err(|e| {
            if e.kind() == ErrorKind::NotImplemented {
                Error::not_implemented(format!("cannot write layers of media type {media_type:?}"))
            } else {
                e
            }
        })?;
        let reference = if request.reference.is_empty() {
            format!("diff-{}", uuid_like())
        } else {
            request.reference.clone()
        };
        let mut writer = self
            .content
            .writer(&request.namespace, &reference, 0, None, request.lease.clone())
            .await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let scratch = self.scratch.clone();
        let (lower, upper) = (request.lower.clone(), request.upper.clone());
        let job = tokio::task::spawn_blocking(move || -> Result<Digest> {
            let lower = ReadOnlyTree::new(&lower, &scratch)?;
            let upper = ReadOnlyTree::new(&upper, &scratch)?;
            let sink = compression::compressor(compression, Box::new(ChannelWriter(tx)))?;
            let mut hashing = HashingWriter {
                inner: sink,
                hasher: Sha256::new(),
            };
            write_diff(lower.path(), upper.path(), &mut hashing)?;
            let HashingWriter { inner, hasher } = hashing;
            inner.finish_write().map_err(|e| Error::io("finishing the layer", &e))?;
            Ok(Digest::from_sha256(hasher))
        });
        while let Some(chunk) = rx.recv().await {
            writer.write(chunk).await?;
        }
        let diff_id = job
            .await
            .map_err(|e| Error::internal(format!("diff task failed: {e}")))??;
        let digest = writer.digest()?;
        let size = writer.status()?.offset;
        let mut labels = request.labels.clone();
        labels.insert(UNCOMPRESSED_LABEL.to_string(), diff_id.to_string());
        match writer.commit(0, None, labels).await {
            Ok(_) => {}
            // The namespace had these very bytes already: that is the layer.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Ok(Descriptor {
            media_type,
            digest: digest.to_string(),
            size,
            annotations: HashMap::new(),
        })
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{nanos:x}-{}", std::process::id())
}

/// Unpacks a layer (a blob, or its bytes as they download) onto mounts;
/// returns the diff id and the uncompressed size.
fn apply_layer(source: Box<dyn Read + Send>, mounts: &[Mount], scratch: &Path, sync_fs: bool) -> Result<(Digest, i64)> {
    let mut temporary = None;
    let target = match mounts {
        [m] if m.r#type == "overlay" && m.options.iter().any(|o| o.starts_with("upperdir=")) => {
            let upper = m
                .options
                .iter()
                .find_map(|o| o.strip_prefix("upperdir="))
                .map(PathBuf::from)
                .unwrap_or_default();
            let lowers: Vec<PathBuf> = overlay_lowerdirs(&m.options).into_iter().map(PathBuf::from).collect();
            Target::overlay_upper(&upper, &lowers)?
        }
        [m] if m.r#type == "bind" && !m.options.iter().any(|o| o == "ro") && m.target.is_empty() => {
            // Writes into a bind mount land in its source: skip the mount.
            Target::directory(Path::new(&m.source))?
        }
        _ => {
            let mounted = TempMount::new(mounts, scratch)?;
            let target = Target::directory(mounted.path())?;
            temporary = Some(mounted);
            target
        }
    };

    let abort = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    let producer_abort = Arc::clone(&abort);
    let producer = std::thread::Builder::new()
        .name("layer-decompress".into())
        .spawn(move || -> Result<(Digest, i64)> {
            let mut reader = decompress(source)?;
            let mut hasher = Sha256::new();
            let mut size: i64 = 0;
            let mut sending = true;
            loop {
                let mut chunk = vec![0u8; CHUNK];
                let n = match reader.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::invalid_argument(format!("decompressing the layer: {e}"))),
                };
                chunk.truncate(n);
                hasher.update(&chunk);
                size += n as i64;
                if sending && tx.send(chunk).is_err() {
                    if producer_abort.load(Ordering::Acquire) {
                        return Err(Error::internal("unpacking stopped"));
                    }
                    // The archive ended early (padding follows): keep hashing.
                    sending = false;
                }
            }
            Ok((Digest::from_sha256(hasher), size))
        })
        .map_err(|e| Error::io("starting the decompression thread", &e))?;

    let applied = apply(
        ChannelReader {
            rx,
            current: Vec::new(),
            position: 0,
        },
        &target,
    );
    if applied.is_err() {
        abort.store(true, Ordering::Release);
    }
    let produced = producer
        .join()
        .map_err(|_| Error::internal("the decompression thread panicked"))?;
    applied?;
    let (diff_id, size) = produced?;
    if sync_fs {
        target.sync()?;
    }
    drop(target);
    drop(temporary);
    Ok((diff_id, size))
}

/// Reads the chunks the decompression thread sends.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.current.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.position = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// Sends written bytes to an async task that stores them.
struct ChannelWriter(tokio::sync::mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(buf.to_vec())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the content writer stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Hashes what passes through (the uncompressed layer: its diff id).
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A tree to read: a bind mount's source as it is, anything else mounted
/// read-only on a temporary directory (an overlay with its upper directory
/// turned into the top lower layer, so no workdir is shared).
struct ReadOnlyTree {
    path: PathBuf,
    _mounted: Option<TempMount>,
    _empty: Option<tempfile::TempDir>,
}

impl ReadOnlyTree {
    fn new(mounts: &[Mount], scratch: &Path) -> Result<Self> {
        if let [m] = mounts
            && m.r#type == "bind"
            && m.target.is_empty()
        {
            return Ok(Self {
                path: PathBuf::from(&m.source),
                _mounted: None,
                _empty: None,
            });
        }
        if mounts.is_empty() {
            // No lower tree: compare against an empty directory.
            std::fs::create_dir_all(scratch).map_err(|e| Error::io("creating scratch", &e))?;
            let empty = tempfile::Builder::new()
                .prefix("empty-")
                .tempdir_in(scratch)
                .map_err(|e| Error::io("creating an empty tree", &e))?;
            return Ok(Self {
                path: empty.path().to_path_buf(),
                _mounted: None,
                _empty: Some(empty),
            });
        }
        let read_only: Vec<Mount> = mounts.iter().map(read_only_mount).collect();
        let mounted = TempMount::new(&read_only, scratch)?;
        Ok(Self {
            path: mounted.path().to_path_buf(),
            _mounted: Some(mounted),
            _empty: None,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

fn read_only_mount(mount: &Mount) -> Mount {
    let mut out = mount.clone();
    if mount.r#type == "overlay" {
        let upper = mount.options.iter().find_map(|o| o.strip_prefix("upperdir="));
        let mut lowers = overlay_lowerdirs(&mount.options);
        if let Some(upper) = upper {
            lowers.insert(0, upper.to_string());
        }
        out.options = mount
            .options
            .iter()
            .filter(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir=") && !o.starts_with("lowerdir="))
            .cloned()
            .collect();
        if lowers.len() == 1 {
            // overlay needs two layers without an upper: bind the one there is.
            return Mount {
                r#type: "bind".into(),
                source: lowers.remove(0),
                target: mount.target.clone(),
                options: vec!["ro".into(), "rbind".into()],
            };
        }
        out.options.push(format!("lowerdir={}", lowers.join(":")));
    } else if !out.options.iter().any(|o| o == "ro") {
        out.options.retain(|o| o != "rw");
        out.options.push("ro".into());
    }
    out
}

/// The differ as a plugin: `io.containerd.differ.v1.walking`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::DIFFER,
        id: "walking",
        requires: &[types::METADATA, types::CONTENT],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let store: Arc<ContentStore> = ctx.get(types::CONTENT)?;
                let content = NamespacedContent::new(store, (*meta).clone());
                let scratch = ctx.daemon.state.join("tmpmounts");
                Ok(Arc::new(DifferPlugin(Arc::new(WalkingDiffer::new(content, scratch)))) as Instance)
            })
        }),
    }
}
