//! The snapshotter operations the overlayfs and native backends share.
//!
//! Both keep their metadata in a [`Storage`] and each snapshot's own files
//! in `<id>/fs`; they differ only in how a snapshot is made and what its
//! mounts are. A backend says those two things ([`Backend`]), and
//! [`StorageBacked`] is the snapshotter over it: stat, labels, usage,
//! commit (measure, sync, record), remove, walk, cleanup and close.

use std::collections::HashMap;
use std::path::PathBuf;

use berth_core::mount::Mount;
use berth_core::snapshots::{Info, Kind, Snapshotter, Usage};
use berth_core::{Error, Result};

use crate::fsutil::{disk_usage, sync_filesystem};
use crate::remove::remove_tree;
use crate::storage::{Snapshot, Storage};

/// What makes one backend different from the other.
pub trait Backend: std::fmt::Debug + Send + Sync + 'static {
    /// The backend's metadata and directories.
    fn storage(&self) -> &Storage;
    /// The mounts of `snapshot`.
    fn mounts_of(&self, snapshot: &Snapshot) -> Result<Vec<Mount>>;
    /// Makes snapshot `key` of `kind` on `parent`; its mounts.
    fn create(&self, key: &str, parent: &str, kind: Kind, labels: HashMap<String, String>) -> Result<Vec<Mount>>;

    /// The directory with snapshot `id`'s own files.
    fn files(&self, id: u64) -> PathBuf {
        self.storage().dir(id).join("fs")
    }
}

/// A snapshotter over a [`Backend`].
#[derive(Debug)]
pub struct StorageBacked<B>(pub B);

impl<B: Backend> Snapshotter for StorageBacked<B> {
    fn stat(&self, key: &str) -> Result<Info> {
        self.0.storage().get(key)?.info()
    }

    fn update_labels(&self, key: &str, labels: HashMap<String, String>) -> Result<Info> {
        self.0.storage().update_labels(key, labels)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let snapshot = self.0.storage().get(key)?;
        if snapshot.kind()? == Kind::Active {
            return disk_usage(&self.0.files(snapshot.record.id));
        }
        Ok(Usage {
            size: snapshot.record.size,
            inodes: snapshot.record.inodes,
        })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.0.mounts_of(&self.0.storage().get(key)?)
    }

    fn prepare(&self, key: &str, parent: &str, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        self.0.create(key, parent, Kind::Active, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        self.0.create(key, parent, Kind::View, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: HashMap<String, String>) -> Result<()> {
        let storage = self.0.storage();
        let snapshot = storage.get(key)?;
        if snapshot.kind()? != Kind::Active {
            return Err(Error::failed_precondition(format!("snapshot {key:?} is not active")));
        }
        let files = self.0.files(snapshot.record.id);
        let usage = disk_usage(&files)?;
        sync_filesystem(&files)?;
        storage.commit(name, key, usage.size, usage.inodes, labels)
    }

    fn remove(&self, key: &str) -> Result<()> {
        let storage = self.0.storage();
        let record = storage.remove(key)?;
        remove_tree(&storage.dir(record.id))
    }

    fn walk(&self) -> Result<Vec<Info>> {
        self.0.storage().list()
    }

    fn cleanup(&self) -> Result<()> {
        self.0.storage().remove_orphan_dirs().map(|_| ())
    }

    fn close(&self) -> Result<()> {
        self.0.storage().close();
        Ok(())
    }
}
