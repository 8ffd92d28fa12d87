//! The native snapshotter (plugin `native`): each snapshot is a full copy of
//! its parent, for filesystems where overlayfs cannot run.
//!
//! ```text
//! <root>/snapshots/native/
//! ├── metadata.redb
//! └── snapshots/<id>/fs     the snapshot's whole tree
//! ```
//! Copies are reflinks where the filesystem shares extents (XFS, btrfs) and
//! otherwise real copies made by several threads (see [`crate::copy`]). A
//! view shares its committed parent's tree through a read-only bind mount
//! instead of copying an immutable tree.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use berth_core::mount::Mount;
use berth_core::snapshots::{Info, Kind, Snapshotter, Usage};
use berth_core::{Error, Result};

use crate::copy::copy_tree;
use crate::fsutil::{disk_usage, staging_dir, sync_filesystem};
use crate::remove::remove_tree;
use crate::storage::{Snapshot, Storage};

/// Snapshots as full directory trees.
#[derive(Debug)]
pub struct Native {
    storage: Storage,
}

impl Native {
    /// Opens the snapshotter under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(format!("creating {}", root.display()), &e))?;
        Ok(Self {
            storage: Storage::open(root)?,
        })
    }

    fn tree(&self, id: u64) -> PathBuf {
        self.storage.dir(id).join("fs")
    }

    fn mounts_of(&self, snapshot: &Snapshot) -> Result<Vec<Mount>> {
        let kind = snapshot.kind()?;
        let (source, access) = match (kind, snapshot.parent_ids.first()) {
            (Kind::View, Some(parent)) => (self.tree(*parent), "ro"),
            (Kind::View, None) => (self.tree(snapshot.record.id), "ro"),
            _ => (self.tree(snapshot.record.id), "rw"),
        };
        Ok(vec![Mount {
            r#type: "bind".into(),
            source: source.display().to_string(),
            target: String::new(),
            options: vec!["rbind".to_string(), access.to_string()],
        }])
    }

    fn create(&self, key: &str, parent: &str, kind: Kind, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        // The copy is made before the record, outside the transaction, so a
        // long copy does not hold up other snapshots.
        let parent_snapshot = if parent.is_empty() {
            None
        } else {
            Some(self.storage.get(parent).map_err(|e| {
                if e.is_not_found() {
                    Error::not_found(format!("parent snapshot {parent:?}"))
                } else {
                    e
                }
            })?)
        };
        if let Some(p) = &parent_snapshot
            && p.kind()? != Kind::Committed
        {
            return Err(Error::invalid_argument(format!(
                "parent snapshot {parent:?} is not committed"
            )));
        }
        let staging = staging_dir(&self.storage.snapshots_dir())?;
        let result = (|| {
            let tree = staging.join("fs");
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&tree)
                .map_err(|e| Error::io(format!("creating snapshot {key:?}"), &e))?;
            if let Some(p) = &parent_snapshot
                && kind == Kind::Active
            {
                let stats = copy_tree(&self.tree(p.record.id), &tree)?;
                tracing::debug!(
                    key,
                    entries = stats.entries,
                    bytes = stats.bytes,
                    reflinked = stats.reflinked,
                    "copied parent"
                );
            }
            let snapshot = self.storage.create(key, parent, kind, labels, |id, parent_ids| {
                if parent_ids.first() != parent_snapshot.as_ref().map(|p| &p.record.id) {
                    return Err(Error::failed_precondition(format!(
                        "parent snapshot {parent:?} changed meanwhile"
                    )));
                }
                std::fs::rename(&staging, self.storage.dir(id))
                    .map_err(|e| Error::io(format!("creating snapshot {key:?}"), &e))
            })?;
            self.mounts_of(&snapshot)
        })();
        if result.is_err() {
            let _ = remove_tree(&staging);
        }
        result
    }
}

impl Snapshotter for Native {
    fn stat(&self, key: &str) -> Result<Info> {
        self.storage.get(key)?.info()
    }

    fn update_labels(&self, key: &str, labels: HashMap<String, String>) -> Result<Info> {
        self.storage.update_labels(key, labels)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let snapshot = self.storage.get(key)?;
        if snapshot.kind()? == Kind::Active {
            return disk_usage(&self.tree(snapshot.record.id));
        }
        Ok(Usage {
            size: snapshot.record.size,
            inodes: snapshot.record.inodes,
        })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.mounts_of(&self.storage.get(key)?)
    }

    fn prepare(&self, key: &str, parent: &str, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::View, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: HashMap<String, String>) -> Result<()> {
        let snapshot = self.storage.get(key)?;
        if snapshot.kind()? != Kind::Active {
            return Err(Error::failed_precondition(format!("snapshot {key:?} is not active")));
        }
        let tree = self.tree(snapshot.record.id);
        let usage = disk_usage(&tree)?;
        sync_filesystem(&tree)?;
        self.storage.commit(name, key, usage.size, usage.inodes, labels)
    }

    fn remove(&self, key: &str) -> Result<()> {
        let record = self.storage.remove(key)?;
        remove_tree(&self.storage.dir(record.id))
    }

    fn walk(&self) -> Result<Vec<Info>> {
        self.storage.list()
    }

    fn cleanup(&self) -> Result<()> {
        self.storage.remove_orphan_dirs().map(|_| ())
    }

    fn close(&self) -> Result<()> {
        self.storage.close();
        Ok(())
    }
}
