//! One content write in progress: its lock, its data file and its digest.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::store::IngestStatus;
use crate::error::{Error, Result};

/// How often the `updatedat` file is rewritten while data flows.
const UPDATED_AT_EVERY: Duration = Duration::from_secs(1);

/// Holds an ingest key for one writer; released on drop.
#[derive(Debug)]
pub struct IngestLock {
    locks: Arc<Mutex<HashMap<String, SystemTime>>>,
    key: String,
}

impl IngestLock {
    pub(super) fn new(locks: Arc<Mutex<HashMap<String, SystemTime>>>, key: String) -> Self {
        Self { locks, key }
    }

    /// The locked key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// What a commit produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size.
    pub size: i64,
    /// The store already had this blob (the ingest was dropped).
    pub existed: bool,
}

/// Writes one ingest. Synchronous: callers run it on a blocking thread.
#[derive(Debug)]
pub struct IngestWriter {
    dir: PathBuf,
    blobs: PathBuf,
    file: File,
    hasher: Sha256,
    offset: i64,
    total: i64,
    started_at: SystemTime,
    updated_at: SystemTime,
    updated_at_written: SystemTime,
    lock: IngestLock,
}

fn nanos(time: SystemTime) -> String {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

impl IngestWriter {
    /// Starts a new ingest in `dir` (which must not exist).
    pub(super) fn create(dir: PathBuf, lock: IngestLock, total: i64, blobs: PathBuf) -> Result<Self> {
        let key = lock.key().to_string();
        let io = |e: std::io::Error| Error::io(format!("ingest {key:?}"), &e);
        std::fs::DirBuilder::new().mode(0o755).create(&dir).map_err(io)?;
        let now = SystemTime::now();
        std::fs::write(dir.join("ref"), key.as_bytes()).map_err(io)?;
        std::fs::write(dir.join("startedat"), nanos(now)).map_err(io)?;
        std::fs::write(dir.join("updatedat"), nanos(now)).map_err(io)?;
        if total > 0 {
            std::fs::write(dir.join("total"), total.to_string()).map_err(io)?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join("data"))
            .map_err(io)?;
        Ok(Self {
            dir,
            blobs,
            file,
            hasher: Sha256::new(),
            offset: 0,
            total,
            started_at: now,
            updated_at: now,
            updated_at_written: now,
            lock,
        })
    }

    /// Continues an ingest found on disk, hashing the bytes it already has.
    /// On failure the lock is handed back so the caller can start over.
    pub(super) fn resume(
        dir: PathBuf,
        lock: IngestLock,
        status: IngestStatus,
        blobs: PathBuf,
    ) -> Result<Self, (IngestLock, Error)> {
        let key = lock.key().to_string();
        let result = (|| -> std::io::Result<(File, Sha256, u64)> {
            let mut hasher = Sha256::new();
            let mut reader = File::open(dir.join("data"))?;
            let mut buffer = vec![0u8; 1 << 20];
            let mut length = 0u64;
            loop {
                let n = reader.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                length += n as u64;
            }
            let mut file = OpenOptions::new().write(true).open(dir.join("data"))?;
            file.seek(SeekFrom::Start(length))?;
            Ok((file, hasher, length))
        })();
        match result {
            Ok((file, hasher, length)) => Ok(Self {
                dir,
                blobs,
                file,
                hasher,
                offset: i64::try_from(length).unwrap_or(i64::MAX),
                total: status.total,
                started_at: status.started_at,
                updated_at: status.updated_at,
                updated_at_written: status.updated_at,
                lock,
            }),
            Err(e) => Err((lock, Error::io(format!("resuming ingest {key:?}"), &e))),
        }
    }

    /// The ingest key.
    pub fn key(&self) -> &str {
        self.lock.key()
    }

    /// Where the ingest stands.
    pub fn status(&self) -> IngestStatus {
        IngestStatus {
            key: self.key().to_string(),
            offset: self.offset,
            total: self.total,
            started_at: self.started_at,
            updated_at: self.updated_at,
        }
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_sha256(self.hasher.clone())
    }

    /// Sets the announced total (a later request may state it).
    pub fn set_total(&mut self, total: i64) {
        if total > 0 && total != self.total {
            self.total = total;
            if let Err(e) = std::fs::write(self.dir.join("total"), total.to_string()) {
                tracing::debug!(error = %e, "cannot record ingest total");
            }
        }
    }

    /// Appends `data` at the current offset.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(|e| Error::io(format!("writing ingest {:?}", self.lock.key()), &e))?;
        self.hasher.update(data);
        self.offset += i64::try_from(data.len()).unwrap_or(i64::MAX);
        self.updated_at = SystemTime::now();
        if self
            .updated_at
            .duration_since(self.updated_at_written)
            .unwrap_or_default()
            >= UPDATED_AT_EVERY
        {
            // Progress bookkeeping only; the data itself is what matters.
            let _ = std::fs::write(self.dir.join("updatedat"), nanos(self.updated_at));
            self.updated_at_written = self.updated_at;
        }
        Ok(())
    }

    /// A read-only descriptor of the data written so far (and of what is
    /// written later: it is the same file), for a reader that follows the
    /// write.
    pub fn open_data(&self) -> Result<File> {
        File::open(self.dir.join("data")).map_err(|e| Error::io(format!("reading ingest {:?}", self.lock.key()), &e))
    }

    /// Starts the data over from offset 0.
    pub fn truncate(&mut self) -> Result<()> {
        let key = self.lock.key().to_string();
        let io = |e: std::io::Error| Error::io(format!("truncating ingest {key:?}"), &e);
        self.file.set_len(0).map_err(io)?;
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.hasher = Sha256::new();
        self.offset = 0;
        self.updated_at = SystemTime::now();
        Ok(())
    }

    /// Verifies and stores the blob. `size` (when non-zero) and `expected`
    /// (when given) must match what was written, or the commit is refused
    /// with FailedPrecondition and the ingest stays as it was.
    pub fn commit(mut self, size: i64, expected: Option<&Digest>) -> Result<Committed> {
        let key = self.lock.key().to_string();
        let io = |what: &str, e: std::io::Error| Error::io(format!("committing ingest {key:?}: {what}"), &e);
        self.file.sync_all().map_err(|e| io("sync", e))?;
        let actual_size = i64::try_from(self.file.metadata().map_err(|e| io("stat", e))?.len()).unwrap_or(i64::MAX);
        if size > 0 && size != actual_size {
            return Err(Error::failed_precondition(format!(
                "ref {key:?}: unexpected commit size {actual_size}, expected {size}"
            )));
        }
        let digest = Digest::from_sha256(std::mem::take(&mut self.hasher));
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::failed_precondition(format!(
                "ref {key:?}: unexpected commit digest {digest}, expected {expected}"
            )));
        }
        let blobs_dir = self.blobs.join(digest.algorithm().name());
        let target = blobs_dir.join(digest.hex());
        if target.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
            return Ok(Committed {
                digest,
                size: actual_size,
                existed: true,
            });
        }
        let data = self.dir.join("data");
        // Read-only before it becomes visible, so no one ever sees a writable blob.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o444)).map_err(|e| io("chmod", e))?;
        crate::failpoint::check("content.during-commit")?;
        std::fs::rename(&data, &target).map_err(|e| io("rename", e))?;
        File::open(&blobs_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync blobs directory", e))?;
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove committed ingest directory");
        }
        Ok(Committed {
            digest,
            size: actual_size,
            existed: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::store::ContentStore;
    use crate::error::ErrorKind;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        (dir, store)
    }

    #[test]
    fn write_and_commit_makes_a_read_only_blob() {
        let (_dir, store) = store();
        let mut writer = store.open_ingest(store.lock_ingest("ns/a").unwrap(), 11).unwrap();
        writer.write(b"hello ").unwrap();
        writer.write(b"world").unwrap();
        assert_eq!(writer.status().offset, 11);
        assert_eq!(writer.digest(), Digest::of(b"hello world"));
        let committed = writer.commit(11, Some(&Digest::of(b"hello world"))).unwrap();
        assert!(!committed.existed);
        let path = store.blob_path(&committed.digest);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o444);
        assert!(store.ingest_status("ns/a").unwrap().is_none(), "ingest removed");
        assert!(!store.is_locked("ns/a"), "lock released");
    }

    #[test]
    fn wrong_size_or_digest_is_refused_and_nothing_is_stored() {
        let (_dir, store) = store();
        let mut writer = store.open_ingest(store.lock_ingest("ns/b").unwrap(), 0).unwrap();
        writer.write(b"data").unwrap();
        let err = writer.commit(5, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(
            err.to_string().contains("unexpected commit size 4, expected 5"),
            "{err}"
        );
        assert!(store.blobs().unwrap().is_empty());

        let mut writer = store.open_ingest(store.lock_ingest("ns/b").unwrap(), 0).unwrap();
        assert_eq!(writer.status().offset, 4, "the failed commit left the ingest to resume");
        writer.write(b"!").unwrap();
        let err = writer.commit(0, Some(&Digest::of(b"other"))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(err.to_string().contains("unexpected commit digest"), "{err}");
        assert!(store.blobs().unwrap().is_empty());
    }

    #[test]
    fn a_second_writer_on_the_same_key_is_unavailable() {
        let (_dir, store) = store();
        let _first = store.lock_ingest("ns/c").unwrap();
        let err = store.lock_ingest("ns/c").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.to_string().contains("ns/c"), "{err}");
        store.lock_ingest("ns/other").unwrap();
    }

    #[test]
    fn ingests_resume_with_the_right_digest() {
        let (_dir, store) = store();
        {
            let mut writer = store.open_ingest(store.lock_ingest("ns/d").unwrap(), 10).unwrap();
            writer.write(b"01234").unwrap();
            // Dropped without commit, as when a client disconnects.
        }
        let status = store.ingest_status("ns/d").unwrap().unwrap();
        assert_eq!((status.offset, status.total), (5, 10));
        let mut writer = store.open_ingest(store.lock_ingest("ns/d").unwrap(), 10).unwrap();
        assert_eq!(writer.status().offset, 5);
        writer.write(b"56789").unwrap();
        let committed = writer.commit(10, Some(&Digest::of(b"0123456789"))).unwrap();
        assert_eq!(committed.size, 10);
    }

    #[test]
    fn truncate_starts_over() {
        let (_dir, store) = store();
        let mut writer = store.open_ingest(store.lock_ingest("ns/e").unwrap(), 0).unwrap();
        writer.write(b"garbage").unwrap();
        writer.truncate().unwrap();
        writer.write(b"good").unwrap();
        assert_eq!(writer.commit(0, None).unwrap().digest, Digest::of(b"good"));
    }

    #[test]
    fn committing_an_existing_blob_drops_the_ingest() {
        let (_dir, store) = store();
        for key in ["ns/f", "ns/g"] {
            let mut writer = store.open_ingest(store.lock_ingest(key).unwrap(), 0).unwrap();
            writer.write(b"same").unwrap();
            let committed = writer.commit(0, None).unwrap();
            assert_eq!(committed.existed, key == "ns/g");
        }
        assert_eq!(store.blobs().unwrap(), [Digest::of(b"same")]);
        assert!(store.ingests().unwrap().is_empty());
    }

    #[test]
    fn a_different_total_starts_a_fresh_ingest() {
        let (_dir, store) = store();
        {
            let mut writer = store.open_ingest(store.lock_ingest("ns/h").unwrap(), 10).unwrap();
            writer.write(b"abc").unwrap();
        }
        let writer = store.open_ingest(store.lock_ingest("ns/h").unwrap(), 20).unwrap();
        assert_eq!(writer.status().offset, 0);
        assert_eq!(writer.status().total, 20);
    }
}
