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
use std::path::Path;

use berth_core::mount::Mount;
use berth_core::snapshots::Kind;
use berth_core::{Error, Result};

use crate::copy::copy_tree;
use crate::fsutil::staging_dir;
use crate::remove::remove_tree;
use crate::storage::{Snapshot, Storage};
use crate::storage_backed::{Backend, StorageBacked};

/// Snapshots as full directory trees.
#[derive(Debug)]
pub struct Native {
    storage: Storage,
}

impl Native {
    /// Opens the snapshotter under `root`.
    pub fn open(root: &Path) -> Result<StorageBacked<Self>> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(format!("creating {}", root.display()), &e))?;
        Ok(StorageBacked(Self {
            storage: Storage::open(root)?,
        }))
    }
}

impl Backend for Native {
    fn storage(&self) -> &Storage {
        &self.storage
    }

    fn mounts_of(&self, snapshot: &Snapshot) -> Result<Vec<Mount>> {
        let kind = snapshot.kind()?;
        let (source, access) = match (kind, snapshot.parent_ids.first()) {
            (Kind::View, Some(parent)) => (self.files(*parent), "ro"),
            (Kind::View, None) => (self.files(snapshot.record.id), "ro"),
            _ => (self.files(snapshot.record.id), "rw"),
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
                let stats = copy_tree(&self.files(p.record.id), &tree)?;
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
