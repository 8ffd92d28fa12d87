//! A snapshotter's own records: `<root>/metadata.redb` beside its
//! `snapshots/<id>/` directories.
//!
//! ```text
//! metadata.redb
//! ├── snapshots  backend key -> berth.metadata.v1.BackendSnapshot {id, kind, parent, labels, times, usage}
//! └── meta       "next_id"   -> u64
//! ```
//! Creating a snapshot makes its directory under a temporary name, then in
//! one transaction records it and renames the directory to its id; removing
//! one deletes the record first and the directory after. A crash therefore
//! leaves at most a directory no record owns, which `cleanup` removes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_api::berth::metadata::v1::BackendSnapshot;
use berth_core::reopening_db::ReopeningDatabase;
use berth_core::snapshots::{Info, Kind};
use berth_core::{Error, Result, timestamps};
use prost::Message;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

const SNAPSHOTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("snapshots");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const NEXT_ID: &str = "next_id";

fn db_error(err: impl Into<redb::Error>) -> Error {
    match err.into() {
        redb::Error::Io(io) => Error::io("snapshotter metadata", &io),
        redb::Error::PreviousIo => {
            Error::unavailable("snapshotter metadata: an earlier write failed; it is being reopened")
        }
        other => Error::internal(format!("snapshotter metadata: {other}")),
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<BackendSnapshot> {
    BackendSnapshot::decode(bytes).map_err(|e| Error::internal(format!("snapshot {key:?}: corrupt record: {e}")))
}

/// The record of `key`, if there is one.
fn lookup(table: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> Result<Option<BackendSnapshot>> {
    table
        .get(key)
        .map_err(db_error)?
        .map(|v| decode(key, v.value()))
        .transpose()
}

/// The record of `key`, NotFound when there is none.
fn existing(table: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> Result<BackendSnapshot> {
    lookup(table, key)?.ok_or_else(|| not_found(key))
}

fn not_found(key: &str) -> Error {
    Error::not_found(format!("snapshot {key:?}"))
}

/// A snapshot record with the ids of its parents, nearest first.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The backend key.
    pub key: String,
    /// The record.
    pub record: BackendSnapshot,
    /// Directory ids of the parent chain, nearest first.
    pub parent_ids: Vec<u64>,
}

impl Snapshot {
    /// The record's kind.
    pub fn kind(&self) -> Result<Kind> {
        Kind::from_proto(self.record.kind)
    }

    /// The snapshot as the trait reports it.
    pub fn info(&self) -> Result<Info> {
        info_of(&self.key, &self.record)
    }
}

fn info_of(key: &str, record: &BackendSnapshot) -> Result<Info> {
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map(timestamps::to_system_time)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    Ok(Info {
        name: key.to_string(),
        parent: record.parent.clone(),
        kind: Kind::from_proto(record.kind)?,
        labels: record.labels.clone(),
        created: time(&record.created_at),
        updated: time(&record.updated_at),
    })
}

/// The records of one snapshotter.
#[derive(Debug)]
pub struct Storage {
    db: ReopeningDatabase,
    root: PathBuf,
    closed: std::sync::atomic::AtomicBool,
}

impl Storage {
    /// Opens (or creates) the records and the `snapshots/` directory under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join("snapshots");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), &e))?;
        let path = root.join("metadata.redb");
        let db = ReopeningDatabase::create(&path, db_error)?;
        db.write(|txn| {
            txn.open_table(SNAPSHOTS).map_err(db_error)?;
            txn.open_table(META).map_err(db_error)?;
            Ok(())
        })?;
        Ok(Self {
            db,
            root: root.to_path_buf(),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Refuses every later call: the daemon is shutting down and no
    /// snapshot may change after its final state was recorded.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
    }

    fn db(&self) -> Result<&ReopeningDatabase> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::unavailable("snapshotter is closed"));
        }
        Ok(&self.db)
    }

    /// The directory of snapshot `id`.
    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// The `snapshots/` directory.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn parent_ids(txn_get: &impl Fn(&str) -> Result<Option<BackendSnapshot>>, mut parent: String) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        while !parent.is_empty() {
            let record = txn_get(&parent)?
                .ok_or_else(|| Error::internal(format!("parent snapshot {parent:?} is missing from the records")))?;
            ids.push(record.id);
            parent = record.parent;
        }
        Ok(ids)
    }

    /// One snapshot with its parent chain.
    pub fn get(&self, key: &str) -> Result<Snapshot> {
        self.db()?.read(|txn| {
            let table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
            let get = |k: &str| lookup(&table, k);
            let record = get(key)?.ok_or_else(|| not_found(key))?;
            let parent_ids = Self::parent_ids(&get, record.parent.clone())?;
            Ok(Snapshot {
                key: key.to_string(),
                record,
                parent_ids,
            })
        })
    }

    /// Records a new snapshot. `make_dir` gets its id and parent chain and
    /// must leave its directory at [`Storage::dir`] (renamed into place);
    /// it runs inside the transaction, so a failure records nothing.
    pub fn create(
        &self,
        key: &str,
        parent: &str,
        kind: Kind,
        labels: HashMap<String, String>,
        make_dir: impl FnOnce(u64, &[u64]) -> Result<()>,
    ) -> Result<Snapshot> {
        self.db()?.write(|txn| {
            let snapshot = {
                let mut table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
                if table.get(key).map_err(db_error)?.is_some() {
                    return Err(Error::already_exists(format!("snapshot {key:?}")));
                }
                let parent_ids = if parent.is_empty() {
                    Vec::new()
                } else {
                    let parent_record = lookup(&table, parent)?
                        .ok_or_else(|| Error::not_found(format!("parent snapshot {parent:?}")))?;
                    if Kind::from_proto(parent_record.kind)? != Kind::Committed {
                        return Err(Error::invalid_argument(format!(
                            "parent snapshot {parent:?} is not committed"
                        )));
                    }
                    let get = |k: &str| lookup(&table, k);
                    let mut ids = vec![parent_record.id];
                    ids.extend(Self::parent_ids(&get, parent_record.parent.clone())?);
                    ids
                };
                let id = next_id(txn)?;
                let now = timestamps::now();
                let record = BackendSnapshot {
                    id,
                    kind: kind.to_proto(),
                    parent: parent.to_string(),
                    labels,
                    created_at: Some(now),
                    updated_at: Some(now),
                    size: 0,
                    inodes: 0,
                };
                make_dir(id, &parent_ids)?;
                table.insert(key, record.encode_to_vec().as_slice()).map_err(db_error)?;
                Snapshot {
                    key: key.to_string(),
                    record,
                    parent_ids,
                }
            };
            Ok(snapshot)
        })
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`
    /// with the given usage and labels.
    pub fn commit(&self, name: &str, key: &str, size: i64, inodes: i64, labels: HashMap<String, String>) -> Result<()> {
        self.db()?.write(|txn| {
            {
                let mut table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
                let mut record = existing(&table, key)?;
                if Kind::from_proto(record.kind)? != Kind::Active {
                    return Err(Error::failed_precondition(format!("snapshot {key:?} is not active")));
                }
                if table.get(name).map_err(db_error)?.is_some() {
                    return Err(Error::already_exists(format!("snapshot {name:?}")));
                }
                record.kind = Kind::Committed.to_proto();
                record.size = size;
                record.inodes = inodes;
                record.labels.extend(labels);
                record.updated_at = Some(timestamps::now());
                table.remove(key).map_err(db_error)?;
                table
                    .insert(name, record.encode_to_vec().as_slice())
                    .map_err(db_error)?;
            }
            Ok(())
        })
    }

    /// Forgets a snapshot (its directory is the caller's to remove after);
    /// FailedPrecondition while another snapshot has it as parent.
    pub fn remove(&self, key: &str) -> Result<BackendSnapshot> {
        self.db()?.write(|txn| {
            let record = {
                let mut table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
                let record = existing(&table, key)?;
                let mut children = Vec::new();
                for entry in table.iter().map_err(db_error)? {
                    let (k, v) = entry.map_err(db_error)?;
                    if decode(k.value(), v.value())?.parent == key {
                        children.push(k.value().to_string());
                    }
                }
                if !children.is_empty() {
                    return Err(Error::failed_precondition(format!(
                        "snapshot {key:?} has children ({}); remove them first",
                        children.join(", ")
                    )));
                }
                table.remove(key).map_err(db_error)?;
                record
            };
            Ok(record)
        })
    }

    /// Replaces a snapshot's labels.
    pub fn update_labels(&self, key: &str, labels: HashMap<String, String>) -> Result<Info> {
        self.db()?.write(|txn| {
            let record = {
                let mut table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
                let mut record = existing(&table, key)?;
                record.labels = labels;
                record.updated_at = Some(timestamps::now());
                table.insert(key, record.encode_to_vec().as_slice()).map_err(db_error)?;
                record
            };
            info_of(key, &record)
        })
    }

    /// Every snapshot.
    pub fn list(&self) -> Result<Vec<Info>> {
        self.db()?.read(|txn| {
            let table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(db_error)? {
                let (k, v) = entry.map_err(db_error)?;
                out.push(info_of(k.value(), &decode(k.value(), v.value())?)?);
            }
            Ok(out)
        })
    }

    /// Ids of every recorded snapshot.
    pub fn ids(&self) -> Result<HashSet<u64>> {
        self.db()?.read(|txn| {
            let table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
            let mut out = HashSet::new();
            for entry in table.iter().map_err(db_error)? {
                let (k, v) = entry.map_err(db_error)?;
                out.insert(decode(k.value(), v.value())?.id);
            }
            Ok(out)
        })
    }

    /// Removes every directory under `snapshots/` no record owns (left by a
    /// crash mid-create or mid-remove).
    pub fn remove_orphan_dirs(&self) -> Result<usize> {
        let ids = self.ids()?;
        let dir = self.snapshots_dir();
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {}", dir.display()), &e))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let owned = name
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|id| ids.contains(&id));
            if owned {
                continue;
            }
            match crate::remove::remove_tree(&entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove orphan snapshot directory")
                }
            }
        }
        Ok(removed)
    }
}

fn next_id(txn: &WriteTransaction) -> Result<u64> {
    let mut meta = txn.open_table(META).map_err(db_error)?;
    let id = meta.get(NEXT_ID).map_err(db_error)?.map(|v| v.value()).unwrap_or(0) + 1;
    meta.insert(NEXT_ID, id).map_err(db_error)?;
    Ok(id)
}
