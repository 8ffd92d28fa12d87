//! Snapshots as a namespace sees them.
//!
//! Each namespace names its snapshots; the backend knows them by
//! `<namespace>/<sequence>/<key>`, so two namespaces never share a backend
//! snapshot and a key can be reused as soon as it is removed. Every change
//! is one metadata write transaction with the backend call inside it, so a
//! failed backend step leaves no record; a backend snapshot left without a
//! record (a crash between the two) is removed by garbage collection.
//! Removing a snapshot drops its record; its data goes at the next
//! collection, as with containerd.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use berth_api::berth::metadata::v1::SnapshotRecord;

use super::{Info, Kind, Snapshotters, Usage, inherited_labels};
use crate::error::{Error, Result};
use crate::filters::{Adaptor, Filter, label_field};
use crate::labels::{self, LabelUpdate};
use crate::metadata::{MetadataStore, leases, namespaces, snapshots};
use crate::mount::Mount;
use crate::timestamps;

/// Snapshots of every namespace, over the loaded snapshotters.
#[derive(Clone, Debug)]
pub struct NamespacedSnapshots {
    meta: MetadataStore,
    snapshotters: Arc<Snapshotters>,
}

fn lease_type(snapshotter: &str) -> String {
    format!("{}{snapshotter}", leases::SNAPSHOTS_PREFIX)
}

fn not_found(key: &str) -> Error {
    Error::not_found(format!("snapshot {key:?}"))
}

fn info_of(key: &str, record: SnapshotRecord) -> Result<Info> {
    Ok(Info {
        name: key.to_string(),
        parent: record.parent,
        kind: Kind::from_proto(record.kind)?,
        labels: record.labels,
        created: record
            .created_at
            .map(|t| timestamps::to_system_time(&t))
            .unwrap_or(std::time::UNIX_EPOCH),
        updated: record
            .updated_at
            .map(|t| timestamps::to_system_time(&t))
            .unwrap_or(std::time::UNIX_EPOCH),
    })
}

/// What a Prepare or View asks for.
struct NewSnapshot<'a> {
    key: &'a str,
    parent: &'a str,
    labels: HashMap<String, String>,
    lease: Option<String>,
    kind: Kind,
}

/// Filter fields of a snapshot: `kind`, `name`, `parent`, `labels.<k>`.
struct InfoFields<'a>(&'a Info);

impl Adaptor for InfoFields<'_> {
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        match path.first()?.as_str() {
            "kind" => Some(Cow::Borrowed(self.0.kind.filter_name())),
            "name" => Some(Cow::Borrowed(&self.0.name)),
            "parent" => Some(Cow::Borrowed(&self.0.parent)),
            "labels" => label_field(&self.0.labels, &path[1..]),
            _ => None,
        }
    }
}

fn validate_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument(format!("snapshot {what} must not be empty")));
    }
    if key.chars().any(char::is_control) {
        return Err(Error::invalid_argument(format!(
            "snapshot {what} {key:?} must not contain control characters"
        )));
    }
    Ok(())
}

impl NamespacedSnapshots {
    /// Snapshots recorded in `meta`, kept by `snapshotters`.
    pub fn new(meta: MetadataStore, snapshotters: Arc<Snapshotters>) -> Self {
        Self { meta, snapshotters }
    }

    /// The loaded snapshotters.
    pub fn snapshotters(&self) -> &Arc<Snapshotters> {
        &self.snapshotters
    }

    /// The lock name of a snapshot key (empty for no key).
    fn lock_name(namespace: &str, snapshotter: &str, key: &str) -> String {
        if key.is_empty() {
            String::new()
        } else {
            format!("{namespace}\0{snapshotter}\0{key}")
        }
    }

    /// Checks what a new snapshot needs and hands out its backend key
    /// (one short write transaction: the namespace exists afterwards).
    async fn reserve(&self, ns: &str, sn: &str, key: &str, lease: Option<&str>) -> Result<String> {
        let (ns, sn, key, lease) = (
            ns.to_string(),
            sn.to_string(),
            key.to_string(),
            lease.map(str::to_string),
        );
        self.meta
            .write(move |txn| {
                namespaces::ensure(txn, &ns)?;
                if snapshots::get_for_update(txn, &ns, &sn, &key)?.is_some() {
                    return Err(Error::already_exists(format!("snapshot {key:?}")));
                }
                if let Some(id) = &lease
                    && !leases::exists(txn, &ns, id)?
                {
                    return Err(Error::not_found(format!("lease {id:?} of this request")));
                }
                Ok(format!("{ns}/{}/{key}", snapshots::next_sequence(txn)?))
            })
            .await
    }

    /// The backend key of `parent` (empty for none); NotFound when there is
    /// no such snapshot.
    async fn backend_parent(&self, ns: &str, sn: &str, parent: &str) -> Result<String> {
        if parent.is_empty() {
            return Ok(String::new());
        }
        let (ns, sn, p) = (ns.to_string(), sn.to_string(), parent.to_string());
        self.meta
            .read(move |txn| snapshots::get(txn, &ns, &sn, &p))
            .await?
            .map(|record| record.backend_key)
            .ok_or_else(|| Error::not_found(format!("parent snapshot {parent:?}")))
    }

    /// Prepare and View. The key and its parent are locked, so nothing
    /// else changes them meanwhile; the backend works (a native prepare
    /// copies a whole tree) outside any metadata transaction; the record is
    /// written last. Should that fail, the backend snapshot is removed.
    async fn create(&self, namespace: &str, snapshotter: &str, new: NewSnapshot<'_>) -> Result<Vec<Mount>> {
        let NewSnapshot {
            key,
            parent,
            labels,
            lease,
            kind,
        } = new;
        validate_key("key", key)?;
        let backend = self.snapshotters.get(snapshotter)?;
        labels::validate_all(&labels).map_err(|e| e.with_context(format!("snapshot {key:?}")))?;
        let _names = self
            .snapshotters
            .name_locks()
            .lock([
                Self::lock_name(namespace, snapshotter, key),
                Self::lock_name(namespace, snapshotter, parent),
            ])
            .await;
        let _gc = self.snapshotters.gc_lock().read().await;
        let backend_parent = self.backend_parent(namespace, snapshotter, parent).await?;
        let backend_key = self.reserve(namespace, snapshotter, key, lease.as_deref()).await?;

        let inherited = inherited_labels(&labels);
        let mounts = {
            let (backend, backend_key, backend_parent) =
                (Arc::clone(&backend), backend_key.clone(), backend_parent.clone());
            blocking(move || match kind {
                Kind::View => backend.view(&backend_key, &backend_parent, inherited),
                _ => backend.prepare(&backend_key, &backend_parent, inherited),
            })
            .await?
        };

        let (ns, sn, k, p, bk) = (
            namespace.to_string(),
            snapshotter.to_string(),
            key.to_string(),
            parent.to_string(),
            backend_key.clone(),
        );
        let recorded = self
            .meta
            .write(move |txn| {
                // The collector may have taken an unreferenced parent meanwhile.
                if !p.is_empty()
                    && snapshots::get_for_update(txn, &ns, &sn, &p)?.map(|r| r.backend_key) != Some(backend_parent)
                {
                    return Err(Error::not_found(format!("parent snapshot {p:?}")));
                }
                leases::hold(txn, &ns, lease.as_deref(), &lease_type(&sn), &k)?;
                let now = timestamps::now();
                let record = SnapshotRecord {
                    backend_key: bk,
                    parent: p,
                    kind: kind.to_proto(),
                    labels: labels::without_empty(labels),
                    created_at: Some(now),
                    updated_at: Some(now),
                };
                snapshots::put(txn, &ns, &sn, &k, &record)
            })
            .await;
        if let Err(e) = recorded {
            if let Err(cleanup) = blocking(move || backend.remove(&backend_key)).await {
                tracing::warn!(error = %cleanup, "removing the unrecorded snapshot failed; garbage collection will");
            }
            return Err(e);
        }
        Ok(mounts)
    }

    /// A writable snapshot on top of `parent` (empty for none).
    pub async fn prepare(
        &self,
        namespace: &str,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
        lease: Option<String>,
    ) -> Result<Vec<Mount>> {
        let new = NewSnapshot {
            key,
            parent,
            labels,
            lease,
            kind: Kind::Active,
        };
        let mounts = self.create(namespace, snapshotter, new).await?;
        crate::failpoint::check("snapshots.after-prepare")?;
        Ok(mounts)
    }

    /// A read-only view of `parent`.
    pub async fn view(
        &self,
        namespace: &str,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
        lease: Option<String>,
    ) -> Result<Vec<Mount>> {
        let new = NewSnapshot {
            key,
            parent,
            labels,
            lease,
            kind: Kind::View,
        };
        self.create(namespace, snapshotter, new).await
    }

    async fn record(&self, namespace: &str, snapshotter: &str, key: &str) -> Result<SnapshotRecord> {
        validate_key("key", key)?;
        self.snapshotters.get(snapshotter)?;
        let (ns, sn, k) = (namespace.to_string(), snapshotter.to_string(), key.to_string());
        self.meta
            .read(move |txn| snapshots::get(txn, &ns, &sn, &k))
            .await?
            .ok_or_else(|| not_found(key))
    }

    /// The mounts of a snapshot.
    pub async fn mounts(&self, namespace: &str, snapshotter: &str, key: &str) -> Result<Vec<Mount>> {
        let record = self.record(namespace, snapshotter, key).await?;
        let backend = self.snapshotters.get(snapshotter)?;
        blocking(move || backend.mounts(&record.backend_key)).await
    }

    /// Disk use of a snapshot's own layer.
    pub async fn usage(&self, namespace: &str, snapshotter: &str, key: &str) -> Result<Usage> {
        let record = self.record(namespace, snapshotter, key).await?;
        let backend = self.snapshotters.get(snapshotter)?;
        blocking(move || backend.usage(&record.backend_key)).await
    }

    /// One snapshot.
    pub async fn stat(&self, namespace: &str, snapshotter: &str, key: &str) -> Result<Info> {
        let record = self.record(namespace, snapshotter, key).await?;
        info_of(key, record)
    }

    /// Every snapshot of a snapshotter in a namespace that passes `filter`.
    pub async fn list(&self, namespace: &str, snapshotter: &str, filter: Filter) -> Result<Vec<Info>> {
        self.snapshotters.get(snapshotter)?;
        let (ns, sn) = (namespace.to_string(), snapshotter.to_string());
        let records = self.meta.read(move |txn| snapshots::list(txn, &ns, &sn)).await?;
        let mut out = Vec::with_capacity(records.len());
        for (key, record) in records {
            let info = info_of(&key, record)?;
            if filter.matches(&InfoFields(&info)) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Makes the active snapshot `key` the committed snapshot `name`. Both
    /// names are locked; the backend commits (measuring and syncing the
    /// layer) outside any metadata transaction, then the records change.
    pub async fn commit(
        &self,
        namespace: &str,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
        lease: Option<String>,
    ) -> Result<()> {
        validate_key("name", name)?;
        validate_key("key", key)?;
        let backend = self.snapshotters.get(snapshotter)?;
        labels::validate_all(&labels).map_err(|e| e.with_context(format!("snapshot {name:?}")))?;
        let _names = self
            .snapshotters
            .name_locks()
            .lock([
                Self::lock_name(namespace, snapshotter, key),
                Self::lock_name(namespace, snapshotter, name),
            ])
            .await;
        let _gc = self.snapshotters.gc_lock().read().await;
        let active = self.record(namespace, snapshotter, key).await?;
        if Kind::from_proto(active.kind)? != Kind::Active {
            return Err(Error::failed_precondition(format!("snapshot {key:?} is not active")));
        }
        let backend_name = self.reserve(namespace, snapshotter, name, lease.as_deref()).await?;
        let inherited = inherited_labels(&labels);
        {
            let (backend, backend_name, backend_key) =
                (Arc::clone(&backend), backend_name.clone(), active.backend_key.clone());
            blocking(move || backend.commit(&backend_name, &backend_key, inherited)).await?;
        }
        crate::failpoint::check("snapshots.after-backend-commit")?;
        let (ns, sn, name, key) = (
            namespace.to_string(),
            snapshotter.to_string(),
            name.to_string(),
            key.to_string(),
        );
        let recorded = {
            let backend_name = backend_name.clone();
            self.meta
                .write(move |txn| {
                    let current = snapshots::get_for_update(txn, &ns, &sn, &key)?;
                    if current.as_ref().map(|r| &r.backend_key) != Some(&active.backend_key) {
                        // Collected meanwhile: the committed layer belongs to nothing.
                        return Err(not_found(&key));
                    }
                    let lease_kind = lease_type(&sn);
                    leases::release(txn, &ns, lease.as_deref(), &lease_kind, &key)?;
                    leases::hold(txn, &ns, lease.as_deref(), &lease_kind, &name)?;
                    snapshots::remove(txn, &ns, &sn, &key)?;
                    let now = timestamps::now();
                    let record = SnapshotRecord {
                        backend_key: backend_name,
                        parent: active.parent,
                        kind: Kind::Committed.to_proto(),
                        labels: labels::without_empty(labels),
                        created_at: Some(now),
                        updated_at: Some(now),
                    };
                    snapshots::put(txn, &ns, &sn, &name, &record)
                })
                .await
        };
        if let Err(e) = recorded {
            if let Err(cleanup) = blocking(move || backend.remove(&backend_name)).await {
                tracing::warn!(error = %cleanup, "removing the unrecorded snapshot failed; garbage collection will");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Removes a snapshot (its data goes at the next garbage collection).
    /// FailedPrecondition while other snapshots have it as their parent.
    pub async fn remove(&self, namespace: &str, snapshotter: &str, key: &str, lease: Option<String>) -> Result<()> {
        validate_key("key", key)?;
        self.snapshotters.get(snapshotter)?;
        let _name = self
            .snapshotters
            .name_locks()
            .lock([Self::lock_name(namespace, snapshotter, key)])
            .await;
        let (ns, sn, key) = (namespace.to_string(), snapshotter.to_string(), key.to_string());
        self.meta
            .write(move |txn| {
                if snapshots::get_for_update(txn, &ns, &sn, &key)?.is_none() {
                    return Err(not_found(&key));
                }
                let children = snapshots::children(txn, &ns, &sn, &key)?;
                if !children.is_empty() {
                    return Err(Error::failed_precondition(format!(
                        "snapshot {key:?} has children ({}); remove them first",
                        children.join(", ")
                    )));
                }
                snapshots::remove(txn, &ns, &sn, &key)?;
                leases::release(txn, &ns, lease.as_deref(), &lease_type(&sn), &key)
            })
            .await
    }

    /// Changes a snapshot's labels (the only mutable field); labels the
    /// backend keeps are passed on to it.
    pub async fn update_labels(
        &self,
        namespace: &str,
        snapshotter: &str,
        key: &str,
        update: LabelUpdate,
    ) -> Result<Info> {
        validate_key("key", key)?;
        let backend = self.snapshotters.get(snapshotter)?;
        let (ns, sn, k) = (namespace.to_string(), snapshotter.to_string(), key.to_string());
        let record = self
            .meta
            .write(move |txn| {
                let mut record = snapshots::get_for_update(txn, &ns, &sn, &k)?.ok_or_else(|| not_found(&k))?;
                update
                    .apply(&mut record.labels)
                    .map_err(|e| e.with_context(format!("snapshot {k:?}")))?;
                record.updated_at = Some(timestamps::now());
                backend.update_labels(&record.backend_key, inherited_labels(&record.labels))?;
                snapshots::put(txn, &ns, &sn, &k, &record)?;
                Ok(record)
            })
            .await?;
        info_of(key, record)
    }

    /// Removes backend data no snapshot owns. Holds the collector's lock
    /// so no snapshot being created meanwhile looks like an orphan.
    pub async fn cleanup(&self, snapshotter: &str) -> Result<()> {
        let backend = self.snapshotters.get(snapshotter)?;
        let _gc = self.snapshotters.gc_lock().write().await;
        blocking(move || backend.cleanup()).await
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("snapshotter task failed: {e}")))?
}
