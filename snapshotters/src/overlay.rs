//! The overlayfs snapshotter (plugin `overlayfs`).
//!
//! ```text
//! <root>/snapshots/overlayfs/
//! ├── metadata.redb            (see storage)
//! └── snapshots/<id>/fs        the snapshot's own layer (upperdir when active)
//!                   /work      overlay workdir (active snapshots only)
//! ```
//! Mounts are the ones containerd's overlay snapshotter returns, so clients
//! that read them (`ctr snapshot mounts`) see the same thing: a bind mount
//! for a snapshot without parents, a read-only bind of the parent for a view
//! of one layer, and otherwise an overlay whose `lowerdir` lists the parents
//! nearest first.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use berth_core::mount::Mount;
use berth_core::snapshots::Kind;
use berth_core::{Error, Result};

use crate::fsutil::staging_dir;
use crate::remove::remove_tree;
use crate::storage::{Snapshot, Storage};
use crate::storage_backed::{Backend, StorageBacked};

/// Snapshots as overlayfs layers.
#[derive(Debug)]
pub struct Overlay {
    storage: Storage,
    index_off: bool,
}

impl Overlay {
    /// Opens the snapshotter under `root`, after checking that this host can
    /// mount an overlay with an upper directory there.
    pub fn open(root: &Path) -> Result<StorageBacked<Self>> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(format!("creating {}", root.display()), &e))?;
        check_overlay_support(root)?;
        Ok(StorageBacked(Self {
            storage: Storage::open(root)?,
            // containerd turns the index feature off where the kernel has it.
            index_off: Path::new("/sys/module/overlay/parameters/index").exists(),
        }))
    }

    fn work(&self, id: u64) -> PathBuf {
        self.storage.dir(id).join("work")
    }
}

fn bind(source: &Path, access: &str) -> Mount {
    Mount {
        r#type: "bind".into(),
        source: source.display().to_string(),
        target: String::new(),
        options: vec![access.to_string(), "rbind".to_string()],
    }
}

/// Mounts a throwaway overlay under `root` to prove the host supports it.
fn check_overlay_support(root: &Path) -> Result<()> {
    let probe = tempfile::Builder::new()
        .prefix(".overlay-check-")
        .tempdir_in(root)
        .map_err(|e| Error::io(format!("creating a probe under {}", root.display()), &e))?;
    for dir in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(probe.path().join(dir)).map_err(|e| Error::io("overlay probe", &e))?;
    }
    let p = probe.path();
    let mount = Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("lowerdir={}", p.join("lower").display()),
            format!("upperdir={}", p.join("upper").display()),
            format!("workdir={}", p.join("work").display()),
        ],
    };
    berth_core::mount::mount(&mount, &p.join("merged"))
        .map_err(|e| berth_core::plugin::skip(format!("overlayfs is not usable under {}: {e}", root.display())))?;
    berth_core::mount::unmount_all(&p.join("merged"))
}

impl Backend for Overlay {
    fn storage(&self) -> &Storage {
        &self.storage
    }

    fn mounts_of(&self, snapshot: &Snapshot) -> Result<Vec<Mount>> {
        let kind = snapshot.kind()?;
        let id = snapshot.record.id;
        if snapshot.parent_ids.is_empty() {
            let access = if kind == Kind::View { "ro" } else { "rw" };
            return Ok(vec![bind(&self.files(id), access)]);
        }
        let mut options = Vec::new();
        if self.index_off {
            options.push("index=off".to_string());
        }
        if kind == Kind::Active {
            options.push(format!("workdir={}", self.work(id).display()));
            options.push(format!("upperdir={}", self.files(id).display()));
        } else if snapshot.parent_ids.len() == 1 {
            return Ok(vec![bind(&self.files(snapshot.parent_ids[0]), "ro")]);
        }
        let lowers: Vec<String> = snapshot
            .parent_ids
            .iter()
            .map(|p| self.files(*p).display().to_string())
            .collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        Ok(vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
        }])
    }

    fn create(&self, key: &str, parent: &str, kind: Kind, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        let snapshot = self.storage.create(key, parent, kind, labels, |id, parent_ids| {
            let staging = staging_dir(&self.storage.snapshots_dir())?;
            let build = || -> std::io::Result<()> {
                let fs = staging.join("fs");
                std::fs::DirBuilder::new().mode(0o755).create(&fs)?;
                if kind == Kind::Active {
                    std::fs::DirBuilder::new().mode(0o711).create(staging.join("work"))?;
                }
                // The layer's root belongs to whoever owns the parent's root.
                if let Some(parent_id) = parent_ids.first() {
                    let owner = std::fs::metadata(self.files(*parent_id))?;
                    std::os::unix::fs::lchown(&fs, Some(owner.uid()), Some(owner.gid()))?;
                }
                std::fs::rename(&staging, self.storage.dir(id))
            };
            build().map_err(|e| {
                let _ = remove_tree(&staging);
                Error::io(format!("creating snapshot {key:?}"), &e)
            })
        })?;
        self.mounts_of(&snapshot)
    }
}
