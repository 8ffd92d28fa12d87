//! The `namespaces` table: one record per namespace, keyed by name.

use std::collections::HashMap;

use berth_api::berth::metadata::v1::NamespaceRecord;
use prost::Message;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::store_error;
use crate::error::{Error, Result};
use crate::labels::{self, LabelUpdate};
use crate::{identifiers, timestamps};

/// name -> encoded [`NamespaceRecord`].
pub(super) const TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("namespaces");

fn decode(name: &str, bytes: &[u8]) -> Result<NamespaceRecord> {
    NamespaceRecord::decode(bytes)
        .map_err(|e| Error::internal(format!("namespace {name:?}: corrupt metadata record: {e}")))
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("namespace {name:?}"))
}

/// Checks a namespace name (as the header and every request carry it).
pub fn validate_name(name: &str) -> Result<()> {
    identifiers::validate("namespace", name)
}

/// The record of `name`, if it exists.
pub fn get(txn: &ReadTransaction, name: &str) -> Result<Option<NamespaceRecord>> {
    let table = txn.open_table(TABLE).map_err(store_error)?;
    let value = table.get(name).map_err(store_error)?;
    value.map(|v| decode(name, v.value())).transpose()
}

/// Every namespace with its record, in name order.
pub fn list(txn: &ReadTransaction) -> Result<Vec<(String, NamespaceRecord)>> {
    let table = txn.open_table(TABLE).map_err(store_error)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(store_error)? {
        let (key, value) = entry.map_err(store_error)?;
        let name = key.value().to_string();
        let record = decode(&name, value.value())?;
        out.push((name, record));
    }
    Ok(out)
}

/// Creates a namespace; AlreadyExists if it is there.
pub fn create(txn: &WriteTransaction, name: &str, labels: HashMap<String, String>) -> Result<NamespaceRecord> {
    validate_name(name)?;
    labels::validate_all(&labels).map_err(|e| e.with_context(format!("namespace {name:?}")))?;
    let mut table = txn.open_table(TABLE).map_err(store_error)?;
    if table.get(name).map_err(store_error)?.is_some() {
        return Err(Error::already_exists(format!("namespace {name:?}")));
    }
    let now = timestamps::now();
    let record = NamespaceRecord {
        // Empty values mean "no label" everywhere else; do not store them.
        labels: labels::without_empty(labels),
        created_at: Some(now),
        updated_at: Some(now),
    };
    table
        .insert(name, record.encode_to_vec().as_slice())
        .map_err(store_error)?;
    Ok(record)
}

/// Creates `name` if it does not exist yet: objects written into a new
/// namespace create it implicitly, as with containerd.
pub fn ensure(txn: &WriteTransaction, name: &str) -> Result<()> {
    validate_name(name)?;
    let exists = {
        let table = txn.open_table(TABLE).map_err(store_error)?;
        table.get(name).map_err(store_error)?.is_some()
    };
    if !exists {
        create(txn, name, HashMap::new())?;
    }
    Ok(())
}

/// Changes the labels of an existing namespace; NotFound if there is none.
pub fn update_labels(txn: &WriteTransaction, name: &str, update: LabelUpdate) -> Result<NamespaceRecord> {
    validate_name(name)?;
    let mut table = txn.open_table(TABLE).map_err(store_error)?;
    let mut record = match table.get(name).map_err(store_error)? {
        Some(value) => decode(name, value.value())?,
        None => return Err(not_found(name)),
    };
    match update {
        LabelUpdate::ReplaceAll(labels) => {
            labels::validate_all(&labels).map_err(|e| e.with_context(format!("namespace {name:?}")))?;
            record.labels = labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        }
        LabelUpdate::Keys(pairs) => {
            for (key, value) in pairs {
                labels::validate(&key, &value).map_err(|e| e.with_context(format!("namespace {name:?}")))?;
                if value.is_empty() {
                    record.labels.remove(&key);
                } else {
                    record.labels.insert(key, value);
                }
            }
        }
    }
    record.updated_at = Some(timestamps::now());
    table
        .insert(name, record.encode_to_vec().as_slice())
        .map_err(store_error)?;
    Ok(record)
}

/// Deletes an empty namespace; NotFound if there is none, and
/// FailedPrecondition while it holds images, content, containers or leases.
pub fn delete(txn: &WriteTransaction, name: &str) -> Result<()> {
    validate_name(name)?;
    {
        let table = txn.open_table(TABLE).map_err(store_error)?;
        if table.get(name).map_err(store_error)?.is_none() {
            return Err(not_found(name));
        }
    }
    let remaining = super::objects_in_namespace(txn, name)?;
    if !remaining.is_empty() {
        return Err(Error::failed_precondition(format!(
            "namespace {name:?} must be empty, but it still has {}",
            remaining.join(", ")
        )));
    }
    // Ingests left by interrupted writes do not keep a namespace alive.
    super::content::INGESTS.remove_namespace(txn, name)?;
    let mut table = txn.open_table(TABLE).map_err(store_error)?;
    table.remove(name).map_err(store_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::metadata::MetadataStore;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    async fn store() -> (tempfile::TempDir, MetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn create_get_list() {
        let (_dir, store) = store().await;
        store
            .write(|txn| create(txn, "n1", labels(&[("a", "b"), ("empty", "")])))
            .await
            .unwrap();
        store.write(|txn| create(txn, "default", HashMap::new())).await.unwrap();
        let record = store.read(|txn| get(txn, "n1")).await.unwrap().unwrap();
        assert_eq!(record.labels, labels(&[("a", "b")]));
        assert!(record.created_at.is_some());
        let names: Vec<String> = store.read(list).await.unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["default", "n1"]);
        assert!(store.read(|txn| get(txn, "other")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn create_twice_is_already_exists() {
        let (_dir, store) = store().await;
        store.write(|txn| create(txn, "n1", HashMap::new())).await.unwrap();
        let err = store.write(|txn| create(txn, "n1", HashMap::new())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(err.to_string(), "namespace \"n1\": already exists");
    }

    #[tokio::test]
    async fn bad_names_and_labels_are_refused() {
        let (_dir, store) = store().await;
        let err = store.write(|txn| create(txn, "a b", HashMap::new())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let big = "v".repeat(5000);
        let err = store
            .write(move |txn| create(txn, "n1", labels(&[("k", &big)])))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().starts_with("namespace \"n1\": label \"k\""), "{err}");
        assert!(store.read(list).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn key_updates_merge_and_empty_values_delete() {
        let (_dir, store) = store().await;
        store
            .write(|txn| create(txn, "n1", labels(&[("a", "b"), ("x", "y")])))
            .await
            .unwrap();
        let record = store
            .write(|txn| {
                update_labels(
                    txn,
                    "n1",
                    LabelUpdate::Keys(vec![("c".into(), "d".into()), ("x".into(), String::new())]),
                )
            })
            .await
            .unwrap();
        assert_eq!(record.labels, labels(&[("a", "b"), ("c", "d")]));
        let record = store
            .write(|txn| update_labels(txn, "n1", LabelUpdate::ReplaceAll(labels(&[("z", "1")]))))
            .await
            .unwrap();
        assert_eq!(record.labels, labels(&[("z", "1")]));
        let (created, updated) = (record.created_at.unwrap(), record.updated_at.unwrap());
        assert!((updated.seconds, updated.nanos) >= (created.seconds, created.nanos));
    }

    #[tokio::test]
    async fn updating_a_missing_namespace_is_not_found_and_creates_nothing() {
        let (_dir, store) = store().await;
        let err = store
            .write(|txn| update_labels(txn, "ghost", LabelUpdate::Keys(vec![("a".into(), "b".into())])))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(store.read(list).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ensure_creates_once() {
        let (_dir, store) = store().await;
        store.write(|txn| ensure(txn, "n1")).await.unwrap();
        store.write(|txn| ensure(txn, "n1")).await.unwrap();
        assert_eq!(store.read(list).await.unwrap().len(), 1);
        let err = store.write(|txn| ensure(txn, "-bad")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[tokio::test]
    async fn delete_missing_is_not_found() {
        let (_dir, store) = store().await;
        store.write(|txn| create(txn, "n1", HashMap::new())).await.unwrap();
        store.write(|txn| delete(txn, "n1")).await.unwrap();
        let err = store.write(|txn| delete(txn, "n1")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), "namespace \"n1\": not found");
    }
}
