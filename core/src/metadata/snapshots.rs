//! Snapshot records: each namespace's names, parents and labels for the
//! snapshots of each snapshotter, keyed (namespace, "<snapshotter>/<key>").

use berth_api::berth::metadata::v1::SnapshotRecord;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::records::Records;
use super::{META, store_error};
use crate::error::Result;

/// (namespace, "<snapshotter>/<key>") -> `berth.metadata.v1.SnapshotRecord`.
pub(crate) const SNAPSHOTS: Records<SnapshotRecord> = Records::new("snapshots", "snapshot");

const SEQUENCE_KEY: &str = "snapshot_sequence";

fn record_key(snapshotter: &str, key: &str) -> String {
    format!("{snapshotter}/{key}")
}

/// One snapshot record.
pub fn get(txn: &ReadTransaction, namespace: &str, snapshotter: &str, key: &str) -> Result<Option<SnapshotRecord>> {
    let table = txn.open_table(SNAPSHOTS.def).map_err(store_error)?;
    SNAPSHOTS.get(&table, namespace, &record_key(snapshotter, key))
}

/// One snapshot record, inside a write transaction.
pub fn get_for_update(
    txn: &WriteTransaction,
    namespace: &str,
    snapshotter: &str,
    key: &str,
) -> Result<Option<SnapshotRecord>> {
    let table = txn.open_table(SNAPSHOTS.def).map_err(store_error)?;
    SNAPSHOTS.get(&table, namespace, &record_key(snapshotter, key))
}

fn of_snapshotter(records: Vec<(String, SnapshotRecord)>, snapshotter: &str) -> Vec<(String, SnapshotRecord)> {
    let prefix = format!("{snapshotter}/");
    records
        .into_iter()
        .filter_map(|(k, r)| k.strip_prefix(&prefix).map(|key| (key.to_string(), r)))
        .collect()
}

/// Every snapshot of one snapshotter in a namespace, by key.
pub fn list(txn: &ReadTransaction, namespace: &str, snapshotter: &str) -> Result<Vec<(String, SnapshotRecord)>> {
    let table = txn.open_table(SNAPSHOTS.def).map_err(store_error)?;
    Ok(of_snapshotter(SNAPSHOTS.list(&table, namespace)?, snapshotter))
}

/// Keys of the snapshots whose parent is `key`, inside a write transaction.
pub fn children(txn: &WriteTransaction, namespace: &str, snapshotter: &str, key: &str) -> Result<Vec<String>> {
    let table = txn.open_table(SNAPSHOTS.def).map_err(store_error)?;
    Ok(of_snapshotter(SNAPSHOTS.list(&table, namespace)?, snapshotter)
        .into_iter()
        .filter(|(_, r)| r.parent == key)
        .map(|(k, _)| k)
        .collect())
}

/// Stores a record.
pub fn put(
    txn: &WriteTransaction,
    namespace: &str,
    snapshotter: &str,
    key: &str,
    record: &SnapshotRecord,
) -> Result<()> {
    SNAPSHOTS.put(txn, namespace, &record_key(snapshotter, key), record)
}

/// Removes a record; returns it if it was there.
pub fn remove(txn: &WriteTransaction, namespace: &str, snapshotter: &str, key: &str) -> Result<Option<SnapshotRecord>> {
    SNAPSHOTS.remove(txn, namespace, &record_key(snapshotter, key))
}

/// A new number for a backend key, unique across the store's life.
pub fn next_sequence(txn: &WriteTransaction) -> Result<u64> {
    let mut meta = txn.open_table(META).map_err(store_error)?;
    let next = meta
        .get(SEQUENCE_KEY)
        .map_err(store_error)?
        .map(|v| v.value())
        .unwrap_or(0)
        + 1;
    meta.insert(SEQUENCE_KEY, next).map_err(store_error)?;
    Ok(next)
}

/// Every record of every namespace, as (namespace, snapshotter, key, record).
pub(crate) fn all(txn: &WriteTransaction) -> Result<Vec<(String, String, String, SnapshotRecord)>> {
    let table = txn.open_table(SNAPSHOTS.def).map_err(store_error)?;
    Ok(SNAPSHOTS
        .all(&table)?
        .into_iter()
        .filter_map(|(ns, k, r)| {
            let (snapshotter, key) = k.split_once('/')?;
            Some((ns, snapshotter.to_string(), key.to_string(), r))
        })
        .collect())
}

/// Backend keys every namespace still refers to, per snapshotter.
pub fn live_backend_keys(
    txn: &ReadTransaction,
) -> Result<std::collections::HashMap<String, std::collections::HashSet<String>>> {
    let table = txn.open_table(SNAPSHOTS.def).map_err(store_error)?;
    let mut out: std::collections::HashMap<String, std::collections::HashSet<String>> = Default::default();
    for entry in table.iter().map_err(store_error)? {
        let (key, value) = entry.map_err(store_error)?;
        let (ns, name) = key.value();
        if let Some((snapshotter, _)) = name.split_once('/') {
            let record: SnapshotRecord = prost::Message::decode(value.value()).map_err(|e| {
                crate::Error::internal(format!(
                    "snapshot {name:?} in namespace {ns:?}: corrupt metadata record: {e}"
                ))
            })?;
            out.entry(snapshotter.to_string())
                .or_default()
                .insert(record.backend_key);
        }
    }
    Ok(out)
}
