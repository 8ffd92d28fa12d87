//! The shim's socket file, removed only while it is still this shim's.
//!
//! A task deleted and created again under the same id gets a new shim on
//! the same socket path. The old shim must not remove its successor's
//! socket: it removes the file as soon as it is told to shut down (before
//! it answers), once (an inode number freed then may be reused by the
//! successor's file), and only if the file is still the one it bound.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// A socket file this shim bound, known by its device and inode.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
    removed: AtomicBool,
}

impl SocketFile {
    /// Records the file at `path` as this shim's (it was bound just now).
    pub fn claim(path: PathBuf) -> Option<Self> {
        let meta = std::fs::symlink_metadata(&path).ok()?;
        Some(Self {
            path,
            identity: (meta.dev(), meta.ino()),
            removed: AtomicBool::new(false),
        })
    }

    /// Removes the file if it is still the one this shim bound; only the
    /// first call does anything.
    pub fn remove_if_ours(&self) {
        if self.removed.swap(true, Ordering::AcqRel) {
            return;
        }
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successor_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let _first = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let ours = SocketFile::claim(path.clone()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _second = std::os::unix::net::UnixListener::bind(&path).unwrap();
        ours.remove_if_ours();
        assert!(path.exists(), "the successor's socket stays");
        // Even should the successor's file reuse the inode number.
        let again = SocketFile::claim(path.clone()).unwrap();
        again.remove_if_ours();
        let _third = std::os::unix::net::UnixListener::bind(&path).unwrap();
        again.remove_if_ours();
        assert!(path.exists(), "removed once only");
        std::fs::remove_file(&path).unwrap();
        let _fourth = std::os::unix::net::UnixListener::bind(&path).unwrap();
        SocketFile::claim(path.clone()).unwrap().remove_if_ours();
        assert!(!path.exists());
    }
}
