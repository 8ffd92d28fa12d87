//! The content store on disk: committed blobs and the ingests that write them.
//!
//! ```text
//! <root>/content/blobs/sha256/<hex>      committed blobs, mode 0444
//! <root>/content/ingest/<sha256(key)>/   one in-progress write
//!     ref        the ingest key ("<namespace>/<ref>")
//!     data       the bytes so far
//!     total      announced size, if any
//!     startedat  when the ingest began (ns since the epoch)
//!     updatedat  when data was last written
//! ```
//! A blob appears under `blobs/` only by renaming a complete, fsynced data
//! file that matched its digest, and the directory is fsynced after the
//! rename: a crash at any point leaves no partial blob visible. The store is
//! not namespaced; [`super::namespaced`] adds namespaces through the
//! metadata store.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind as IoErrorKind, Read as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::digest::{Algorithm, Digest};
use super::ingest::{IngestLock, IngestWriter};
use crate::error::{Error, Result};

/// How long opening a locked ingest waits before answering Unavailable.
const LOCK_WAIT: Duration = Duration::from_millis(100);

/// An ingest as it stands on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestStatus {
    /// The ingest key (`<namespace>/<ref>`).
    pub key: String,
    /// Bytes written so far.
    pub offset: i64,
    /// Announced total size; 0 when unknown.
    pub total: i64,
    /// When the ingest began.
    pub started_at: SystemTime,
    /// When data was last written.
    pub updated_at: SystemTime,
}

/// The blob and ingest directories.
#[derive(Debug)]
pub struct ContentStore {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<String, SystemTime>>>,
    gc_lock: tokio::sync::RwLock<()>,
}

impl ContentStore {
    /// Opens the store under `root` (`<daemon root>/content`), creating it.
    pub fn open(root: &Path) -> Result<Self> {
        for dir in [root.join("blobs").join("sha256"), root.join("ingest")] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), &e))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            locks: Arc::default(),
            gc_lock: tokio::sync::RwLock::new(()),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Commits and ingest creation hold this for reading; garbage
    /// collection holds it for writing while it deletes files, so it never
    /// deletes a blob whose record is about to be written.
    pub fn gc_lock(&self) -> &tokio::sync::RwLock<()> {
        &self.gc_lock
    }

    /// Where a blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// The size of a stored blob, or `None` when it is not stored.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        match std::fs::metadata(self.blob_path(digest)) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == IoErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("content {digest}"), &e)),
        }
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        File::open(self.blob_path(digest)).map_err(|e| {
            if e.kind() == IoErrorKind::NotFound {
                Error::not_found(format!("content {digest}: blob missing from the store"))
            } else {
                Error::io(format!("content {digest}"), &e)
            }
        })
    }

    /// Every stored blob's digest.
    pub fn blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("blobs").join(Algorithm::Sha256.name());
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?;
            let name = entry.file_name();
            // Anything that is not a digest is not ours; leave it alone.
            if let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) {
                out.push(digest);
            }
        }
        Ok(out)
    }

    /// Removes a blob file; `false` when it was not there.
    pub fn delete_blob(&self, digest: &Digest) -> Result<bool> {
        match std::fs::remove_file(self.blob_path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == IoErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("removing content {digest}"), &e)),
        }
    }

    /// The ingest directory of a key.
    fn ingest_dir(&self, key: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(key.as_bytes()));
        self.root.join("ingest").join(name)
    }

    /// Takes the write lock on an ingest key; Unavailable while another
    /// writer holds it (one writer per ref, as containerd).
    pub fn lock_ingest(&self, key: &str) -> Result<IngestLock> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            {
                let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
                match locks.get(key) {
                    None => {
                        locks.insert(key.to_string(), SystemTime::now());
                        return Ok(IngestLock::new(Arc::clone(&self.locks), key.to_string()));
                    }
                    Some(since) if std::time::Instant::now() >= deadline => {
                        let held = SystemTime::now().duration_since(*since).unwrap_or_default();
                        return Err(Error::unavailable(format!(
                            "ref {key:?} is locked by another writer (for {:.1}s)",
                            held.as_secs_f64()
                        )));
                    }
                    Some(_) => {}
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether a writer holds the key now.
    pub fn is_locked(&self, key: &str) -> bool {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).contains_key(key)
    }

    /// Opens the ingest for a locked key, resuming its data when a valid
    /// ingest is on disk (its bytes are hashed again to continue the digest).
    pub fn open_ingest(&self, lock: IngestLock, total: i64) -> Result<IngestWriter> {
        let dir = self.ingest_dir(lock.key());
        if let Some(status) = self.resumable(&dir, lock.key(), total) {
            match IngestWriter::resume(dir.clone(), lock, status, self.root.join("blobs")) {
                Ok(writer) => return Ok(writer),
                Err((lock, e)) => {
                    tracing::info!(key = %lock.key(), error = %e, "cannot resume ingest; starting over");
                    return self.fresh_ingest(dir, lock, total);
                }
            }
        }
        self.fresh_ingest(dir, lock, total)
    }

    fn fresh_ingest(&self, dir: PathBuf, lock: IngestLock, total: i64) -> Result<IngestWriter> {
        let _ = std::fs::remove_dir_all(&dir);
        IngestWriter::create(dir, lock, total, self.root.join("blobs"))
    }

    fn resumable(&self, dir: &Path, key: &str, total: i64) -> Option<IngestStatus> {
        let status = read_status(dir).ok()?;
        if status.key != key {
            tracing::warn!(dir = %dir.display(), "ingest directory holds another ref; replacing it");
            return None;
        }
        if total > 0 && status.total > 0 && total != status.total {
            return None;
        }
        Some(status)
    }

    /// The on-disk state of an ingest, or `None` when there is none.
    pub fn ingest_status(&self, key: &str) -> Result<Option<IngestStatus>> {
        let dir = self.ingest_dir(key);
        match read_status(&dir) {
            Ok(status) if status.key == key => Ok(Some(status)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == IoErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("ingest {key:?}"), &e)),
        }
    }

    /// Removes an ingest's directory and data.
    pub fn remove_ingest(&self, key: &str) -> Result<()> {
        let dir = self.ingest_dir(key);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == IoErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing ingest {key:?}"), &e)),
        }
    }

    /// Every ingest directory with the key it records (`None` when its
    /// `ref` file is unreadable, which only garbage collection cares about).
    pub fn ingests(&self) -> Result<Vec<(PathBuf, Option<String>)>> {
        let dir = self.root.join("ingest");
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let key = std::fs::read_to_string(path.join("ref")).ok();
            out.push((path, key));
        }
        Ok(out)
    }
}

/// Reads an ingest directory's files (never its data, only its size).
pub(super) fn read_status(dir: &Path) -> std::io::Result<IngestStatus> {
    let mut key = String::new();
    File::open(dir.join("ref"))?.read_to_string(&mut key)?;
    let offset = std::fs::metadata(dir.join("data")).map(|m| m.len()).unwrap_or(0);
    let total = std::fs::read_to_string(dir.join("total"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    Ok(IngestStatus {
        key,
        offset: i64::try_from(offset).unwrap_or(i64::MAX),
        total,
        started_at: read_time(&dir.join("startedat"))?,
        updated_at: read_time(&dir.join("updatedat"))?,
    })
}

fn read_time(path: &Path) -> std::io::Result<SystemTime> {
    let text = std::fs::read_to_string(path)?;
    let nanos: u64 = text
        .trim()
        .parse()
        .map_err(|_| std::io::Error::new(IoErrorKind::InvalidData, format!("{}: not a time", path.display())))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}
