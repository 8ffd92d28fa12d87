//! Content as one namespace sees it: blob records and ingests from the
//! metadata store, bytes from the content store, and the request's lease.
//!
//! Ingest keys on disk are `<namespace>/<ref>`, so the same ref in two
//! namespaces is two writes. A blob already on disk for another namespace is
//! not written again: a writer that expects its digest commits without data.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_api::berth::metadata::v1::IngestRecord;
use berth_api::containerd::services::content::v1::Info;

use super::digest::Digest;
use super::ingest::{IngestLock, IngestWriter};
use super::store::{ContentStore, IngestStatus};
use crate::error::{Error, Result};
use crate::filters::{Adaptor, Filter, label_field};
use crate::labels::{self, LabelUpdate};
use crate::metadata::{MetadataStore, content, leases, namespaces};
use crate::timestamps;

/// How long an ingest no lease holds is kept after it was last opened.
pub const UNLEASED_INGEST_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Content of every namespace, over one content store and metadata store.
#[derive(Clone, Debug)]
pub struct NamespacedContent {
    store: Arc<ContentStore>,
    meta: MetadataStore,
}

/// An ingest's status as a namespace sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefStatus {
    /// The client's ref.
    pub reference: String,
    /// Where the write stands.
    pub status: IngestStatus,
    /// The digest the client said to expect, if any.
    pub expected: Option<String>,
}

/// The content store's key for a namespace's ingest.
pub(crate) fn ingest_key(namespace: &str, reference: &str) -> String {
    format!("{namespace}/{reference}")
}

fn ref_not_found(reference: &str) -> Error {
    Error::not_found(format!("ref {reference:?}"))
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("content task failed: {e}")))?
}

/// Filter fields of a blob: `digest`, `size` and `labels.<key>`.
struct InfoFields<'a>(&'a Info);

impl Adaptor for InfoFields<'_> {
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        match path.first()?.as_str() {
            "digest" => Some(Cow::Borrowed(&self.0.digest)),
            "size" => Some(Cow::Owned(self.0.size.to_string())),
            "labels" => label_field(&self.0.labels, &path[1..]),
            _ => None,
        }
    }
}

/// Filter fields of an ingest status: `ref`.
struct StatusFields<'a>(&'a RefStatus);

impl Adaptor for StatusFields<'_> {
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        match path.first()?.as_str() {
            "ref" => Some(Cow::Borrowed(&self.0.reference)),
            _ => None,
        }
    }
}

impl NamespacedContent {
    /// Content over `store`, recorded in `meta`.
    pub fn new(store: Arc<ContentStore>, meta: MetadataStore) -> Self {
        Self { store, meta }
    }

    /// The content store underneath.
    pub fn store(&self) -> &Arc<ContentStore> {
        &self.store
    }

    /// A blob's record; NotFound when the namespace does not hold it.
    pub async fn info(&self, namespace: &str, digest: &Digest) -> Result<Info> {
        let (ns, d) = (namespace.to_string(), digest.clone());
        self.meta
            .read(move |txn| content::get(txn, &ns, &d))
            .await?
            .ok_or_else(|| Error::not_found(format!("content {digest}")))
    }

    /// Changes a blob's labels (the only mutable field).
    pub async fn update_labels(&self, namespace: &str, digest: &Digest, update: LabelUpdate) -> Result<Info> {
        let (ns, d) = (namespace.to_string(), digest.clone());
        self.meta
            .write(move |txn| content::update_labels(txn, &ns, &d, update))
            .await
    }

    /// Every blob of a namespace that passes `filter`.
    pub async fn list(&self, namespace: &str, filter: Filter) -> Result<Vec<Info>> {
        let ns = namespace.to_string();
        let infos = self.meta.read(move |txn| content::list(txn, &ns)).await?;
        Ok(infos.into_iter().filter(|i| filter.matches(&InfoFields(i))).collect())
    }

    /// Removes a blob from a namespace (garbage collection removes the file
    /// once no namespace holds it).
    pub async fn delete(&self, namespace: &str, digest: &Digest, lease: Option<String>) -> Result<()> {
        let (ns, d) = (namespace.to_string(), digest.clone());
        self.meta
            .write(move |txn| {
                content::remove(txn, &ns, &d)?;
                leases::release(txn, &ns, lease.as_deref(), leases::CONTENT, &d.to_string())
            })
            .await
    }

    /// Opens a blob for reading; returns the file and the recorded size.
    pub async fn open(&self, namespace: &str, digest: &Digest) -> Result<(std::fs::File, i64)> {
        let info = self.info(namespace, digest).await?;
        let store = Arc::clone(&self.store);
        let d = digest.clone();
        let file = blocking(move || store.open_blob(&d)).await?;
        Ok((file, info.size))
    }

    /// Starts or resumes a write of `reference`. With an `expected` digest
    /// the namespace already holds, answers AlreadyExists (and adds the blob
    /// to the lease, as the client will rely on it).
    pub async fn writer(
        &self,
        namespace: &str,
        reference: &str,
        total: i64,
        expected: Option<Digest>,
        lease: Option<String>,
    ) -> Result<ContentWriter> {
        if reference.is_empty() {
            return Err(Error::invalid_argument("ref must not be empty"));
        }
        if reference.chars().any(char::is_control) {
            return Err(Error::invalid_argument(format!(
                "ref {reference:?} must not contain control characters"
            )));
        }
        if total < 0 {
            return Err(Error::invalid_argument(format!(
                "ref {reference:?}: total must not be negative"
            )));
        }
        let ns = namespace.to_string();
        let mut shared_size = None;
        if let Some(expected) = &expected {
            let (n, d, l) = (ns.clone(), expected.clone(), lease.clone());
            let present = self
                .meta
                .write(move |txn| {
                    if content::get_for_update(txn, &n, &d)?.is_some() {
                        leases::hold(txn, &n, l.as_deref(), leases::CONTENT, &d.to_string())?;
                        return Ok(true);
                    }
                    Ok(false)
                })
                .await?;
            if present {
                return Err(Error::already_exists(format!("content {expected}")));
            }
            let store = Arc::clone(&self.store);
            let d = expected.clone();
            if let Some(size) = blocking(move || store.blob_size(&d)).await? {
                let size = i64::try_from(size).unwrap_or(i64::MAX);
                if total == 0 || total == size {
                    shared_size = Some(size);
                }
            }
        }

        let key = ingest_key(&ns, reference);
        let store = Arc::clone(&self.store);
        let lock = blocking(move || store.lock_ingest(&key)).await?;

        let _gc = self.store.gc_lock().read().await;
        let record = IngestRecord {
            expected: expected.as_ref().map(Digest::to_string).unwrap_or_default(),
            total,
            expire_at: lease
                .is_none()
                .then(|| timestamps::from_system_time(SystemTime::now() + UNLEASED_INGEST_LIFETIME)),
        };
        let (n, r, l) = (ns.clone(), reference.to_string(), lease.clone());
        self.meta
            .write(move |txn| {
                namespaces::ensure(txn, &n)?;
                content::put_ingest(txn, &n, &r, &record)?;
                leases::hold(txn, &n, l.as_deref(), leases::INGESTS, &r)
            })
            .await?;
        let state = match (shared_size, expected) {
            (Some(size), Some(digest)) => WriterState::Shared {
                digest,
                size,
                started_at: SystemTime::now(),
                lock,
            },
            _ => {
                let store = Arc::clone(&self.store);
                WriterState::Ingest(blocking(move || store.open_ingest(lock, total)).await?)
            }
        };
        Ok(ContentWriter {
            content: self.clone(),
            namespace: ns,
            reference: reference.to_string(),
            lease,
            state: Some(state),
        })
    }

    /// The status of one ingest of a namespace.
    pub async fn status(&self, namespace: &str, reference: &str) -> Result<RefStatus> {
        let (ns, r) = (namespace.to_string(), reference.to_string());
        let record = self
            .meta
            .read(move |txn| content::get_ingest(txn, &ns, &r))
            .await?
            .ok_or_else(|| ref_not_found(reference))?;
        let store = Arc::clone(&self.store);
        let key = ingest_key(namespace, reference);
        let status = blocking(move || store.ingest_status(&key))
            .await?
            .ok_or_else(|| ref_not_found(reference))?;
        Ok(RefStatus {
            reference: reference.to_string(),
            status,
            expected: (!record.expected.is_empty()).then_some(record.expected),
        })
    }

    /// Every ingest of a namespace that has data on disk and passes `filter`.
    pub async fn list_statuses(&self, namespace: &str, filter: Filter) -> Result<Vec<RefStatus>> {
        let ns = namespace.to_string();
        let records = self.meta.read(move |txn| content::list_ingests(txn, &ns)).await?;
        let store = Arc::clone(&self.store);
        let ns = namespace.to_string();
        let statuses = blocking(move || {
            let mut out = Vec::new();
            for (reference, record) in records {
                if let Some(status) = store.ingest_status(&ingest_key(&ns, &reference))? {
                    out.push(RefStatus {
                        reference,
                        status,
                        expected: (!record.expected.is_empty()).then_some(record.expected),
                    });
                }
            }
            Ok(out)
        })
        .await?;
        Ok(statuses
            .into_iter()
            .filter(|s| filter.matches(&StatusFields(s)))
            .collect())
    }

    /// Drops an ingest and its data.
    pub async fn abort(&self, namespace: &str, reference: &str, lease: Option<String>) -> Result<()> {
        let (ns, r) = (namespace.to_string(), reference.to_string());
        self.meta
            .write(move |txn| {
                content::remove_ingest(txn, &ns, &r)?.ok_or_else(|| ref_not_found(&r))?;
                leases::release(txn, &ns, lease.as_deref(), leases::INGESTS, &r)
            })
            .await?;
        let store = Arc::clone(&self.store);
        let key = ingest_key(namespace, reference);
        blocking(move || store.remove_ingest(&key)).await
    }
}

enum WriterState {
    /// Bytes go to an ingest on disk.
    Ingest(IngestWriter),
    /// The blob is on disk already (for another namespace); no bytes needed.
    Shared {
        digest: Digest,
        size: i64,
        started_at: SystemTime,
        lock: IngestLock,
    },
}

/// One open write; the ref stays locked until it is committed or dropped.
pub struct ContentWriter {
    content: NamespacedContent,
    namespace: String,
    reference: String,
    lease: Option<String>,
    state: Option<WriterState>,
}

impl std::fmt::Debug for ContentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentWriter")
            .field("namespace", &self.namespace)
            .field("ref", &self.reference)
            .finish()
    }
}

impl ContentWriter {
    fn state(&self) -> Result<&WriterState> {
        self.state
            .as_ref()
            .ok_or_else(|| Error::internal(format!("writer for ref {:?} was lost", self.reference)))
    }

    /// Where the write stands.
    pub fn status(&self) -> Result<IngestStatus> {
        Ok(match self.state()? {
            WriterState::Ingest(w) => w.status(),
            WriterState::Shared {
                size, started_at, lock, ..
            } => IngestStatus {
                key: lock.key().to_string(),
                offset: *size,
                total: *size,
                started_at: *started_at,
                updated_at: *started_at,
            },
        })
    }

    /// The digest of what is written so far.
    pub fn digest(&self) -> Result<Digest> {
        Ok(match self.state()? {
            WriterState::Ingest(w) => w.digest(),
            WriterState::Shared { digest, .. } => digest.clone(),
        })
    }

    /// A read-only descriptor of the ingest's data, which follows later
    /// writes; None while the writer has no data file (the blob is stored
    /// already and nothing was written).
    pub fn data_reader(&self) -> Result<Option<std::fs::File>> {
        match self.state()? {
            WriterState::Ingest(w) => w.open_data().map(Some),
            WriterState::Shared { .. } => Ok(None),
        }
    }

    /// Records a total stated after the first request.
    pub fn set_total(&mut self, total: i64) {
        if let Some(WriterState::Ingest(w)) = self.state.as_mut() {
            w.set_total(total);
        }
    }

    /// Runs `work` on the ingest writer on a blocking thread, turning a
    /// shared (no-data) writer into a real ingest first.
    async fn with_ingest(
        &mut self,
        copy_existing: bool,
        work: impl FnOnce(&mut IngestWriter) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let state = self.state.take().ok_or_else(|| Error::internal("writer was lost"))?;
        let store = Arc::clone(&self.content.store);
        let (state, result) = tokio::task::spawn_blocking(move || -> (Option<WriterState>, Result<()>) {
            let mut writer = match state {
                WriterState::Ingest(w) => w,
                WriterState::Shared { digest, size, lock, .. } => {
                    let opened = store.open_ingest(lock, size).and_then(|mut w| {
                        w.truncate()?;
                        if copy_existing {
                            let mut blob = store.open_blob(&digest)?;
                            let mut buffer = vec![0u8; 1 << 20];
                            loop {
                                let n = std::io::Read::read(&mut blob, &mut buffer)
                                    .map_err(|e| Error::io(format!("content {digest}"), &e))?;
                                if n == 0 {
                                    break;
                                }
                                w.write(&buffer[..n])?;
                            }
                        }
                        Ok(w)
                    });
                    match opened {
                        Ok(w) => w,
                        Err(e) => return (None, Err(e)),
                    }
                }
            };
            let result = work(&mut writer);
            (Some(WriterState::Ingest(writer)), result)
        })
        .await
        .map_err(|e| Error::internal(format!("content write task failed: {e}")))?;
        self.state = state;
        result
    }

    /// Appends data at the current offset.
    pub async fn write(&mut self, data: Vec<u8>) -> Result<()> {
        self.with_ingest(true, move |w| w.write(&data)).await
    }

    /// Starts the data over.
    pub async fn truncate(&mut self) -> Result<()> {
        self.with_ingest(false, |w| w.truncate()).await
    }

    /// Verifies and stores the blob, records it in the namespace (with
    /// `labels`) and moves it from ingest to content in the request's lease.
    /// AlreadyExists when the namespace held the blob already.
    pub async fn commit(
        mut self,
        size: i64,
        expected: Option<Digest>,
        labels: HashMap<String, String>,
    ) -> Result<Digest> {
        labels::validate_all(&labels).map_err(|e| e.with_context(format!("ref {:?}", self.reference)))?;
        let state = self.state.take().ok_or_else(|| Error::internal("writer was lost"))?;
        let store = Arc::clone(&self.content.store);
        let _gc = store.gc_lock().read().await;
        let (digest, size) = match state {
            WriterState::Ingest(writer) => {
                let committed = blocking(move || writer.commit(size, expected.as_ref())).await?;
                (committed.digest, committed.size)
            }
            WriterState::Shared { digest, size: have, .. } => {
                if size != 0 && size != have {
                    return Err(Error::failed_precondition(format!(
                        "ref {:?}: unexpected commit size {have}, expected {size}",
                        self.reference
                    )));
                }
                if let Some(expected) = expected
                    && expected != digest
                {
                    return Err(Error::failed_precondition(format!(
                        "ref {:?}: unexpected commit digest {digest}, expected {expected}",
                        self.reference
                    )));
                }
                (digest, have)
            }
        };
        let (ns, reference, lease, d) = (
            self.namespace.clone(),
            self.reference.clone(),
            self.lease.clone(),
            digest.clone(),
        );
        let existed = self
            .content
            .meta
            .write(move |txn| {
                namespaces::ensure(txn, &ns)?;
                content::remove_ingest(txn, &ns, &reference)?;
                leases::release(txn, &ns, lease.as_deref(), leases::INGESTS, &reference)?;
                let (_, existed) = content::add(txn, &ns, &d, size, labels)?;
                leases::hold(txn, &ns, lease.as_deref(), leases::CONTENT, &d.to_string())?;
                Ok(existed)
            })
            .await?;
        if existed {
            return Err(Error::already_exists(format!("content {digest}")));
        }
        Ok(digest)
    }
}

#[cfg(test)]
#[path = "namespaced_tests.rs"]
mod tests;
