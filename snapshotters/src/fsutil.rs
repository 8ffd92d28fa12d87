//! Filesystem helpers the snapshotters share.

use std::collections::HashSet;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use berth_core::snapshots::Usage;
use berth_core::{Error, Result};

/// Disk use of a tree as `du` counts it: blocks of each inode once, and the
/// number of distinct inodes (the root directory included).
pub fn disk_usage(root: &Path) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| Error::io(format!("measuring {}", path.display()), &e))?;
        if seen.insert((meta.dev(), meta.ino())) {
            usage.inodes += 1;
            usage.size += i64::try_from(meta.blocks() * 512).unwrap_or(i64::MAX);
        }
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path).map_err(|e| Error::io(format!("listing {}", path.display()), &e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(format!("listing {}", path.display()), &e))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(usage)
}

/// Flushes the filesystem holding `path` to disk (syncfs(2)): everything a
/// snapshot wrote is durable before it is recorded as committed.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    // SAFETY: syncfs takes an open file descriptor, which `dir` owns for the call.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(Error::io(
            format!("syncing the filesystem of {}", path.display()),
            &std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A fresh directory under `parent` named `new-<random>`, for building a
/// snapshot before it is renamed into place.
pub fn staging_dir(parent: &Path) -> Result<std::path::PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix("new-")
        .tempdir_in(parent)
        .map_err(|e| Error::io(format!("creating a directory in {}", parent.display()), &e))?;
    Ok(dir.keep())
}
