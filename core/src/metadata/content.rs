//! Content records: which blobs each namespace holds (with their labels),
//! and the ingests in progress. The bytes are in the content store.

use std::collections::{HashMap, HashSet};

use berth_api::berth::metadata::v1::IngestRecord;
use berth_api::containerd::services::content::v1::Info;
use redb::{ReadTransaction, WriteTransaction};

use super::records::Records;
use super::store_error;
use crate::content::Digest;
use crate::error::{Error, Result};
use crate::labels::{self, LabelUpdate};
use crate::timestamps;

/// (namespace, digest) -> `containerd.services.content.v1.Info`.
pub(crate) const BLOBS: Records<Info> = Records::new("content_blobs", "content");

/// (namespace, ref) -> `berth.metadata.v1.IngestRecord`.
pub(crate) const INGESTS: Records<IngestRecord> = Records::new("content_ingests", "ingest");

fn not_found(digest: &Digest) -> Error {
    Error::not_found(format!("content {digest}"))
}

/// The record of a blob in a namespace.
pub fn get(txn: &ReadTransaction, namespace: &str, digest: &Digest) -> Result<Option<Info>> {
    let table = txn.open_table(BLOBS.def).map_err(store_error)?;
    BLOBS.get(&table, namespace, &digest.to_string())
}

/// The record of a blob, inside a write transaction.
pub fn get_for_update(txn: &WriteTransaction, namespace: &str, digest: &Digest) -> Result<Option<Info>> {
    let table = txn.open_table(BLOBS.def).map_err(store_error)?;
    BLOBS.get(&table, namespace, &digest.to_string())
}

/// Every blob record of a namespace.
pub fn list(txn: &ReadTransaction, namespace: &str) -> Result<Vec<Info>> {
    let table = txn.open_table(BLOBS.def).map_err(store_error)?;
    Ok(BLOBS
        .list(&table, namespace)?
        .into_iter()
        .map(|(_, info)| info)
        .collect())
}

/// Adds a committed blob to a namespace. Returns the record and whether the
/// namespace had it already (then nothing changes).
pub fn add(
    txn: &WriteTransaction,
    namespace: &str,
    digest: &Digest,
    size: i64,
    labels: HashMap<String, String>,
) -> Result<(Info, bool)> {
    if let Some(existing) = get_for_update(txn, namespace, digest)? {
        return Ok((existing, true));
    }
    labels::validate_all(&labels).map_err(|e| e.with_context(format!("content {digest}")))?;
    let now = timestamps::now();
    let info = Info {
        digest: digest.to_string(),
        size,
        created_at: Some(now),
        updated_at: Some(now),
        labels: labels::without_empty(labels),
    };
    BLOBS.put(txn, namespace, &info.digest, &info)?;
    Ok((info, false))
}

/// Changes a blob's labels.
pub fn update_labels(txn: &WriteTransaction, namespace: &str, digest: &Digest, update: LabelUpdate) -> Result<Info> {
    let mut info = get_for_update(txn, namespace, digest)?.ok_or_else(|| not_found(digest))?;
    update
        .apply(&mut info.labels)
        .map_err(|e| e.with_context(format!("content {digest}")))?;
    info.updated_at = Some(timestamps::now());
    BLOBS.put(txn, namespace, &info.digest, &info)?;
    Ok(info)
}

/// Removes a blob from a namespace; NotFound when it has none.
pub fn remove(txn: &WriteTransaction, namespace: &str, digest: &Digest) -> Result<Info> {
    BLOBS
        .remove(txn, namespace, &digest.to_string())?
        .ok_or_else(|| not_found(digest))
}

/// The record of an ingest.
pub fn get_ingest(txn: &ReadTransaction, namespace: &str, reference: &str) -> Result<Option<IngestRecord>> {
    let table = txn.open_table(INGESTS.def).map_err(store_error)?;
    INGESTS.get(&table, namespace, reference)
}

/// The record of an ingest, inside a write transaction.
pub fn get_ingest_for_update(txn: &WriteTransaction, namespace: &str, reference: &str) -> Result<Option<IngestRecord>> {
    let table = txn.open_table(INGESTS.def).map_err(store_error)?;
    INGESTS.get(&table, namespace, reference)
}

/// Every ingest record of a namespace, by ref.
pub fn list_ingests(txn: &ReadTransaction, namespace: &str) -> Result<Vec<(String, IngestRecord)>> {
    let table = txn.open_table(INGESTS.def).map_err(store_error)?;
    INGESTS.list(&table, namespace)
}

/// Records (or refreshes) an ingest.
pub fn put_ingest(txn: &WriteTransaction, namespace: &str, reference: &str, record: &IngestRecord) -> Result<()> {
    INGESTS.put(txn, namespace, reference, record)
}

/// Forgets an ingest; returns its record when there was one.
pub fn remove_ingest(txn: &WriteTransaction, namespace: &str, reference: &str) -> Result<Option<IngestRecord>> {
    INGESTS.remove(txn, namespace, reference)
}

/// What the content store must keep: every digest some namespace records,
/// and the on-disk key of every recorded ingest.
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Digests of recorded blobs, in any namespace.
    pub digests: HashSet<String>,
    /// Ingest keys (`<namespace>/<ref>`) of recorded ingests.
    pub ingest_keys: HashSet<String>,
}

/// Collects [`Live`] across all namespaces.
pub fn all_live(txn: &ReadTransaction) -> Result<Live> {
    let blobs = txn.open_table(BLOBS.def).map_err(store_error)?;
    let ingests = txn.open_table(INGESTS.def).map_err(store_error)?;
    Ok(Live {
        digests: BLOBS.all(&blobs)?.into_iter().map(|(_, digest, _)| digest).collect(),
        ingest_keys: INGESTS
            .all(&ingests)?
            .into_iter()
            .map(|(ns, reference, _)| crate::content::namespaced::ingest_key(&ns, &reference))
            .collect(),
    })
}
