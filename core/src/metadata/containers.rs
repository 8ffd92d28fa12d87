//! Container records: what a task is created from (spec, runtime, snapshot).

use berth_api::containerd::services::containers::v1::Container;
use redb::{ReadTransaction, WriteTransaction};

use super::records::Records;
use super::{namespaces, store_error};
use crate::error::{Error, Result};
use crate::labels::{self, LabelUpdate};
use crate::{identifiers, timestamps};

/// (namespace, id) -> `containerd.services.containers.v1.Container`.
pub(crate) const CONTAINERS: Records<Container> = Records::new("containers", "container");

fn not_found(id: &str) -> Error {
    Error::not_found(format!("container {id:?}"))
}

/// Checks a container as containerd does before storing it.
pub fn validate(container: &Container) -> Result<()> {
    let id = &container.id;
    identifiers::validate("container id", id)?;
    let context = |e: Error| e.with_context(format!("container {id:?}"));
    if container.extensions.keys().any(String::is_empty) {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: extension keys must not be empty"
        )));
    }
    labels::validate_all(&container.labels).map_err(context)?;
    if container.runtime.as_ref().is_none_or(|r| r.name.is_empty()) {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: runtime name must be set"
        )));
    }
    if container.spec.is_none() {
        return Err(Error::invalid_argument(format!("container {id:?}: spec must be set")));
    }
    if !container.snapshot_key.is_empty() && container.snapshotter.is_empty() {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: snapshotter must be set when snapshot key is set"
        )));
    }
    Ok(())
}

/// One container.
pub fn get(txn: &ReadTransaction, namespace: &str, id: &str) -> Result<Option<Container>> {
    let table = txn.open_table(CONTAINERS.def).map_err(store_error)?;
    CONTAINERS.get(&table, namespace, id)
}

/// Every container of a namespace, in id order.
pub fn list(txn: &ReadTransaction, namespace: &str) -> Result<Vec<Container>> {
    let table = txn.open_table(CONTAINERS.def).map_err(store_error)?;
    Ok(CONTAINERS
        .list(&table, namespace)?
        .into_iter()
        .map(|(_, c)| c)
        .collect())
}

/// Stores a new container; AlreadyExists when the id is taken.
pub fn create(txn: &WriteTransaction, namespace: &str, mut container: Container) -> Result<Container> {
    validate(&container)?;
    namespaces::ensure(txn, namespace)?;
    {
        let table = txn.open_table(CONTAINERS.def).map_err(store_error)?;
        if CONTAINERS.get(&table, namespace, &container.id)?.is_some() {
            return Err(Error::already_exists(format!("container {:?}", container.id)));
        }
    }
    let now = timestamps::now();
    container.created_at = Some(now);
    container.updated_at = Some(now);
    container.labels = labels::without_empty(container.labels);
    CONTAINERS.put(txn, namespace, &container.id.clone(), &container)?;
    Ok(container)
}

/// Changes a container as the field mask says (`labels`, `labels.<k>`,
/// `spec`, `extensions`, `extensions.<k>`, `image`, `snapshotkey`; empty =
/// all of those, and then the runtime and snapshotter must be unchanged).
pub fn update(txn: &WriteTransaction, namespace: &str, container: Container, paths: &[String]) -> Result<Container> {
    let id = container.id.clone();
    if id.is_empty() {
        return Err(Error::invalid_argument("container id is required for update"));
    }
    let mut updated = {
        let table = txn.open_table(CONTAINERS.def).map_err(store_error)?;
        CONTAINERS.get(&table, namespace, &id)?.ok_or_else(|| not_found(&id))?
    };
    let created_at = updated.created_at;
    let default_paths: Vec<String>;
    let paths = if paths.is_empty() {
        if updated.snapshotter != container.snapshotter {
            return Err(Error::invalid_argument(format!(
                "container {id:?}: snapshotter is immutable"
            )));
        }
        let runtime_name = |c: &Container| c.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default();
        if runtime_name(&updated) != runtime_name(&container) {
            return Err(Error::invalid_argument(format!(
                "container {id:?}: runtime name is immutable"
            )));
        }
        default_paths = ["labels", "spec", "extensions", "image", "snapshotkey"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        &default_paths[..]
    } else {
        paths
    };
    let mut label_keys = Vec::new();
    for path in paths {
        if let Some(key) = path.strip_prefix("labels.") {
            label_keys.push((key.to_string(), container.labels.get(key).cloned().unwrap_or_default()));
            continue;
        }
        if let Some(key) = path.strip_prefix("extensions.") {
            match container.extensions.get(key) {
                Some(value) => updated.extensions.insert(key.to_string(), value.clone()),
                None => updated.extensions.remove(key),
            };
            continue;
        }
        match path.as_str() {
            "labels" => updated.labels = container.labels.clone(),
            "spec" => updated.spec = container.spec.clone(),
            "extensions" => updated.extensions = container.extensions.clone(),
            "image" => updated.image = container.image.clone(),
            "snapshotkey" => updated.snapshot_key = container.snapshot_key.clone(),
            _ => {
                return Err(Error::invalid_argument(format!(
                    "container {id:?}: cannot update {path:?} field"
                )));
            }
        }
    }
    LabelUpdate::Keys(label_keys)
        .apply(&mut updated.labels)
        .map_err(|e| e.with_context(format!("container {id:?}")))?;
    updated.labels = labels::without_empty(std::mem::take(&mut updated.labels));
    validate(&updated)?;
    updated.created_at = created_at;
    updated.updated_at = Some(timestamps::now());
    CONTAINERS.put(txn, namespace, &id, &updated)?;
    Ok(updated)
}

/// Removes a container; NotFound when there is none.
pub fn delete(txn: &WriteTransaction, namespace: &str, id: &str) -> Result<Container> {
    CONTAINERS.remove(txn, namespace, id)?.ok_or_else(|| not_found(id))
}
