//! Removing a snapshot's tree, with several threads.
//!
//! Unlinking tens of thousands of small files one after another spends
//! most of its time waiting on the filesystem's journal, not on the CPU;
//! several threads each emptying other directories keep the disk busy.
//! Workers take directories from a shared queue, unlink what is not a
//! directory (the type comes from the directory listing, no stat), queue
//! the subdirectories, and record every directory; once all are empty
//! they are removed deepest first. Symlinks are unlinked, never followed.
//! When this returns the files are gone: nothing is left for later.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use berth_core::{Error, Result};

/// Worker threads; more than cores, as they mostly wait on I/O.
const WORKERS: usize = 16;

struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

#[derive(Default)]
struct QueueState {
    pending: Vec<PathBuf>,
    /// Directories being emptied right now.
    busy: usize,
    /// Every directory seen, with its depth.
    dirs: Vec<(usize, PathBuf)>,
    failure: Option<Error>,
}

impl Queue {
    /// The next directory to empty, or None when all are done.
    fn take(&self) -> Option<PathBuf> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.failure.is_some() {
                return None;
            }
            if let Some(dir) = state.pending.pop() {
                state.busy += 1;
                return Some(dir);
            }
            if state.busy == 0 {
                return None;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn done(&self, subdirs: Vec<PathBuf>, failure: Option<Error>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.busy -= 1;
        for dir in subdirs {
            let depth = dir.components().count();
            state.dirs.push((depth, dir.clone()));
            state.pending.push(dir);
        }
        if let Some(failure) = failure {
            state.failure.get_or_insert(failure);
        }
        self.changed.notify_all();
    }
}

fn fail(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), &e)
}

/// Unlinks everything in `dir` that is not a directory; returns the
/// subdirectories.
fn empty_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut subdirs = Vec::new();
    let mut files: Vec<OsString> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| fail("listing", dir, e))? {
        let entry = entry.map_err(|e| fail("listing", dir, e))?;
        let kind = entry.file_type().map_err(|e| fail("reading", &entry.path(), e))?;
        if kind.is_dir() {
            subdirs.push(entry.path());
        } else {
            files.push(entry.file_name());
        }
    }
    for name in files {
        let path = dir.join(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("removing", &path, e)),
        }
    }
    Ok(subdirs)
}

/// Removes the directory tree at `root` (or the file there); a missing
/// path is fine. Returns once everything is unlinked.
pub fn remove_tree(root: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail("removing", root, e)),
        Ok(meta) => meta,
    };
    if !meta.is_dir() {
        return std::fs::remove_file(root).map_err(|e| fail("removing", root, e));
    }
    let queue = Queue {
        state: Mutex::new(QueueState {
            pending: vec![root.to_path_buf()],
            dirs: vec![(0, root.to_path_buf())],
            ..QueueState::default()
        }),
        changed: Condvar::new(),
    };
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                while let Some(dir) = queue.take() {
                    match empty_dir(&dir) {
                        Ok(subdirs) => queue.done(subdirs, None),
                        Err(e) => queue.done(Vec::new(), Some(e)),
                    }
                }
            });
        }
    });
    let mut state = queue.state.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(failure) = state.failure {
        return Err(failure);
    }
    state.dirs.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
    for (_, dir) in state.dirs {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("removing", &dir, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_deep_wide_tree_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "kept").unwrap();
        let root = dir.path().join("tree");
        for d in 0..30 {
            let sub = root.join(format!("d{d}/a/b"));
            std::fs::create_dir_all(&sub).unwrap();
            for f in 0..20 {
                std::fs::write(sub.join(format!("f{f}")), "x").unwrap();
            }
        }
        std::os::unix::fs::symlink(&outside, root.join("d0/link")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("d1/a/up")).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "kept");
        remove_tree(&root).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
    }
}
