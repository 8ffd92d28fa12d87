//! The metadata store: every record berthd keeps, in one redb file.
//!
//! ```text
//! <root>/meta.redb
//! ├── meta             "schema_version"                -> u64 (SCHEMA_VERSION below)
//! │                    "snapshot_sequence"             -> u64 (last backend key number)
//! ├── namespaces       name                            -> berth.metadata.v1.NamespaceRecord
//! ├── images           (namespace, name)               -> containerd.services.images.v1.Image
//! ├── containers       (namespace, id)                 -> containerd.services.containers.v1.Container
//! ├── content_blobs    (namespace, digest)             -> containerd.services.content.v1.Info
//! ├── content_ingests  (namespace, ref)                -> berth.metadata.v1.IngestRecord
//! ├── leases           (namespace, id)                 -> containerd.services.leases.v1.Lease
//! ├── lease_resources  (namespace, lease, type, id)    -> ()
//! │                    type: "content" (digest), "ingests" (ref), "snapshots/<name>" (key)
//! └── snapshots        (namespace, "<snapshotter>/<key>") -> berth.metadata.v1.SnapshotRecord
//! ```
//! Values are protobuf records: berth's own (`proto/berth/metadata/v1`) or
//! the API's own messages where those carry exactly what is stored, so a
//! field added later reads as its default in old records. Blobs are shared
//! between namespaces on disk; a namespace sees a blob only through its own
//! `content_blobs` record. Each change the
//! API makes is one write transaction, committed with redb's immediate
//! durability (fsync before commit returns), so a crash leaves either the
//! whole change or none of it.
//!
//! Changing a table's layout means: bump [`SCHEMA_VERSION`], add a step to
//! [`MIGRATIONS`] that rewrites the old layout in place, and redraw the tree
//! above. A store written by a newer berthd is refused rather than misread.

pub mod containers;
pub mod content;
pub mod gc;
pub mod images;
pub mod leases;
pub mod namespaces;
mod records;
pub mod snapshots;

use std::path::Path;
use std::sync::Arc;

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use crate::error::{Error, ErrorKind, Result};
use crate::plugin::{Instance, Registration, types};
use crate::reopening_db::ReopeningDatabase;

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// File name of the store under the daemon's root.
pub const FILE_NAME: &str = "meta.redb";

pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const VERSION_KEY: &str = "schema_version";

/// One migration step: rewrites the layout of version `n` into `n + 1`
/// inside the transaction it is given.
type Migration = fn(&WriteTransaction) -> Result<()>;

/// `MIGRATIONS[i]` upgrades a store from version `i + 1` to `i + 2`.
/// Version 1 is the first layout, so there is nothing to migrate yet.
const MIGRATIONS: &[Migration] = &[];

/// The open store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct MetadataStore {
    db: Arc<ReopeningDatabase>,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore").field("path", &self.db.path()).finish()
    }
}

/// Turns a redb failure into a berth error; a full disk stays recognisable.
pub(crate) fn store_error(err: impl Into<redb::Error>) -> Error {
    match err.into() {
        redb::Error::PreviousIo => Error::unavailable("metadata store: an earlier write failed; it is being reopened"),
        redb::Error::Io(io) => Error::io("metadata store", &io),
        redb::Error::DatabaseAlreadyOpen => Error::unavailable("metadata store is already open in another process"),
        other => Error::internal(format!("metadata store: {other}")),
    }
}

impl MetadataStore {
    /// Opens (or creates) the store at `<root>/meta.redb` and brings its
    /// layout to [`SCHEMA_VERSION`].
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(format!("creating {}", root.display()), &e))?;
        let path = root.join(FILE_NAME);
        let db = ReopeningDatabase::create(&path, store_error)?;
        let store = Self { db: Arc::new(db) };
        store.upgrade()?;
        Ok(store)
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// The layout version recorded in the store.
    pub fn schema_version(&self) -> Result<u64> {
        self.db.read(read_version)
    }

    fn upgrade(&self) -> Result<()> {
        self.db.write(|txn| self.upgrade_in(txn))
    }

    fn upgrade_in(&self, txn: &WriteTransaction) -> Result<()> {
        let found = {
            let mut meta = txn.open_table(META).map_err(store_error)?;
            let found = meta.get(VERSION_KEY).map_err(store_error)?.map(|v| v.value());
            if found.is_none() {
                meta.insert(VERSION_KEY, SCHEMA_VERSION).map_err(store_error)?;
            }
            found
        };
        create_tables(txn)?;
        if let Some(mut version) = found {
            if version > SCHEMA_VERSION {
                return Err(Error::failed_precondition(format!(
                    "metadata store {} has schema version {version}, newer than the {SCHEMA_VERSION} this berthd understands; run a newer berthd",
                    self.path().display()
                )));
            }
            while version < SCHEMA_VERSION {
                let step = usize::try_from(version - 1)
                    .ok()
                    .and_then(|i| MIGRATIONS.get(i))
                    .ok_or_else(|| Error::internal(format!("no migration from schema version {version}")))?;
                step(txn)?;
                version += 1;
                tracing::info!(version, "metadata store migrated");
            }
            let mut meta = txn.open_table(META).map_err(store_error)?;
            meta.insert(VERSION_KEY, SCHEMA_VERSION).map_err(store_error)?;
        }
        Ok(())
    }

    /// Runs `work` in a read transaction on a blocking thread.
    pub async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        run_blocking(move || db.read(work)).await
    }

    /// Runs `work` in a write transaction on a blocking thread and commits
    /// it (durably) when `work` succeeds; an error aborts every change it made.
    pub async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        run_blocking(move || db.write(work)).await
    }
}

/// The store as a plugin: `io.containerd.metadata.v1.redb`, at `<root>/meta.redb`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::METADATA,
        id: "redb",
        requires: &[],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let root = ctx.daemon.root.clone();
                let store = run_blocking(move || MetadataStore::open(&root)).await?;
                Ok(Arc::new(store) as Instance)
            })
        }),
    }
}

fn read_version(txn: &ReadTransaction) -> Result<u64> {
    let meta = txn.open_table(META).map_err(store_error)?;
    let version = meta.get(VERSION_KEY).map_err(store_error)?;
    version
        .map(|v| v.value())
        .ok_or_else(|| Error::new(ErrorKind::Internal, "metadata store has no schema version"))
}

/// Creates every table of the current layout, so readers never meet a
/// missing table.
fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(namespaces::TABLE).map_err(store_error)?;
    for def in [
        images::IMAGES.def,
        containers::CONTAINERS.def,
        content::BLOBS.def,
        content::INGESTS.def,
        leases::LEASES.def,
        snapshots::SNAPSHOTS.def,
    ] {
        txn.open_table(def).map_err(store_error)?;
    }
    txn.open_table(leases::RESOURCES).map_err(store_error)?;
    Ok(())
}

/// What kinds of objects still live in `namespace` (for refusing to delete
/// a namespace that is not empty).
pub(crate) fn objects_in_namespace(txn: &WriteTransaction, namespace: &str) -> Result<Vec<&'static str>> {
    let mut kinds = Vec::new();
    let mut check = |kind: &'static str, present: bool| {
        if present {
            kinds.push(kind);
        }
    };
    let table = |def| txn.open_table(def).map_err(store_error);
    check("images", images::IMAGES.any_in(&table(images::IMAGES.def)?, namespace)?);
    check(
        "content",
        content::BLOBS.any_in(&table(content::BLOBS.def)?, namespace)?,
    );
    check(
        "containers",
        containers::CONTAINERS.any_in(&table(containers::CONTAINERS.def)?, namespace)?,
    );
    check("leases", leases::LEASES.any_in(&table(leases::LEASES.def)?, namespace)?);
    Ok(kinds)
}

async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("metadata store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_store_records_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(dir.path().join(FILE_NAME).exists());
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = MetadataStore::open(dir.path()).unwrap();
            store
                .write(|txn| namespaces::create(txn, "n1", Default::default()).map(|_| ()))
                .await
                .unwrap();
        }
        let store = MetadataStore::open(dir.path()).unwrap();
        let names = store.read(namespaces::list).await.unwrap();
        assert_eq!(names.into_iter().map(|(n, _)| n).collect::<Vec<_>>(), ["n1"]);
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = MetadataStore::open(dir.path()).unwrap();
            store
                .db
                .write(|txn| {
                    txn.open_table(META)
                        .unwrap()
                        .insert(VERSION_KEY, SCHEMA_VERSION + 1)
                        .unwrap();
                    Ok(())
                })
                .unwrap();
        }
        let err = MetadataStore::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[tokio::test]
    async fn a_second_opener_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = MetadataStore::open(dir.path()).unwrap();
        let err = MetadataStore::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.to_string().contains("already open"), "{err}");
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        let err = store
            .write(|txn| {
                namespaces::create(txn, "n1", Default::default())?;
                namespaces::create(txn, "Bad Name", Default::default())
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let names = store.read(namespaces::list).await.unwrap();
        assert!(names.is_empty(), "the first create was rolled back");
    }
}
