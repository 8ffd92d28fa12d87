//! A redb database that heals itself after a failed write.
//!
//! When a commit fails on an I/O error (a full disk, say), redb refuses
//! every later transaction with "previous I/O error" until the database is
//! closed and opened again; opening repairs it to its last committed state.
//! A daemon cannot stop serving because its disk was full for a moment, so
//! after any failed transaction this probes the database and, when redb
//! reports it poisoned, waits for the transactions in flight to let go of
//! it and reopens it. Callers see the failure of the transaction that hit
//! the error, and success again once space is back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase as _, StorageError, TransactionError, WriteTransaction};

use crate::error::{Error, Result};

/// How long a reopen waits for transactions in flight on the old handle.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Turns a redb error into a berth error, naming the store.
pub type ErrorMapper = fn(redb::Error) -> Error;

/// A redb file opened once, reopened after redb declares it poisoned.
#[derive(Debug)]
pub struct ReopeningDatabase {
    path: PathBuf,
    slot: RwLock<Option<Arc<Database>>>,
    map_error: ErrorMapper,
}

impl ReopeningDatabase {
    /// Opens (or creates) the database at `path`.
    pub fn create(path: &Path, map_error: ErrorMapper) -> Result<Self> {
        let db = Database::create(path).map_err(|e| map_error(e.into()).with_context(path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            slot: RwLock::new(Some(Arc::new(db))),
            map_error,
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` in a read transaction.
    pub fn read<T>(&self, work: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let db = self.current()?;
        let outcome = db
            .begin_read()
            .map_err(|e| (self.map_error)(e.into()))
            .and_then(|txn| work(&txn));
        if outcome.is_err() {
            self.heal(db);
        }
        outcome
    }

    /// Runs `work` in a write transaction and commits it (durably: redb's
    /// default durability fsyncs) when `work` succeeds; an error aborts
    /// every change it made.
    pub fn write<T>(&self, work: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let db = self.current()?;
        let outcome = (|| {
            let txn = db.begin_write().map_err(|e| (self.map_error)(e.into()))?;
            let value = work(&txn)?;
            txn.commit().map_err(|e| (self.map_error)(e.into()))?;
            Ok(value)
        })();
        if outcome.is_err() {
            self.heal(db);
        }
        outcome
    }

    /// The open handle, reopening the file if an earlier reopen failed.
    fn current(&self) -> Result<Arc<Database>> {
        if let Some(db) = self.slot.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
            return Ok(Arc::clone(db));
        }
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = slot.as_ref() {
            return Ok(Arc::clone(db));
        }
        let db = Arc::new(self.open()?);
        *slot = Some(Arc::clone(&db));
        Ok(db)
    }

    fn open(&self) -> Result<Database> {
        Database::create(&self.path).map_err(|e| (self.map_error)(e.into()).with_context(self.path.display()))
    }

    /// After a failed transaction on `db`: reopens the file if redb now
    /// refuses every transaction.
    fn heal(&self, db: Arc<Database>) {
        let poisoned = matches!(
            db.begin_write(),
            Err(TransactionError::Storage(StorageError::PreviousIo))
        );
        if !poisoned {
            return;
        }
        // Let go of our handle before waiting for everyone else's.
        let failed = Arc::as_ptr(&db);
        drop(db);
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        let Some(old) = slot.take_if(|current| std::ptr::eq(Arc::as_ptr(current), failed)) else {
            return; // Another caller already reopened it.
        };
        tracing::warn!(path = %self.path.display(), "a write failed on I/O; reopening the database");
        let deadline = Instant::now() + DRAIN_LIMIT;
        let mut old = old;
        loop {
            match Arc::try_unwrap(old) {
                Ok(database) => {
                    drop(database);
                    break;
                }
                Err(still_shared) if Instant::now() < deadline => {
                    old = still_shared;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(still_shared) => {
                    tracing::warn!(path = %self.path.display(), "transactions still hold the database; reopen later");
                    *slot = Some(still_shared);
                    return;
                }
            }
        }
        match self.open() {
            Ok(database) => *slot = Some(Arc::new(database)),
            // Left empty: the next caller tries again.
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "reopening the database failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    const TABLE: TableDefinition<'_, &str, u64> = TableDefinition::new("t");

    fn map(e: redb::Error) -> Error {
        Error::internal(format!("test store: {e}"))
    }

    #[test]
    fn reads_and_writes_go_through() {
        let dir = tempfile::tempdir().unwrap();
        let db = ReopeningDatabase::create(&dir.path().join("db.redb"), map).unwrap();
        db.write(|txn| {
            txn.open_table(TABLE).unwrap().insert("a", 1).unwrap();
            Ok(())
        })
        .unwrap();
        let value = db
            .read(|txn| Ok(txn.open_table(TABLE).unwrap().get("a").unwrap().map(|v| v.value())))
            .unwrap();
        assert_eq!(value, Some(1));
        // A handle from before stays usable: the same database.
        assert!(db.current().unwrap().begin_read().is_ok());
    }

    #[test]
    fn a_failed_work_aborts_and_keeps_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let db = ReopeningDatabase::create(&dir.path().join("db.redb"), map).unwrap();
        let before = Arc::as_ptr(&db.current().unwrap());
        let err = db
            .write(|txn| {
                txn.open_table(TABLE).unwrap().insert("a", 1).unwrap();
                Err::<(), _>(Error::invalid_argument("no"))
            })
            .unwrap_err();
        assert!(err.to_string().contains("no"));
        assert_eq!(Arc::as_ptr(&db.current().unwrap()), before, "not reopened");
        let value = db
            .read(|txn| {
                Ok(txn
                    .open_table(TABLE)
                    .ok()
                    .and_then(|t| t.get("a").unwrap().map(|v| v.value())))
            })
            .unwrap();
        assert_eq!(value, None);
    }
}
