//! Mounting snapshots the way a user does (running the command `ctr
//! snapshot mounts` prints) and describing the trees they show, to compare
//! what two daemons unpacked file by file.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::ctr::Ctr;

/// A snapshot mounted on a temporary directory; unmounted on drop.
#[derive(Debug)]
pub struct MountedSnapshot {
    dir: tempfile::TempDir,
    target: PathBuf,
}

impl MountedSnapshot {
    /// Mounts snapshot `key` with the command `ctr snapshot mounts` prints.
    pub fn new(ctr: &Ctr, snapshotter: &str, key: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-mnt")
            .tempdir()
            .expect("mount dir");
        let target = dir.path().join("m");
        std::fs::create_dir(&target).expect("mount point");
        let command = ctr.ok(&[
            "snapshot",
            "--snapshotter",
            snapshotter,
            "mounts",
            target.to_str().expect("utf-8 path"),
            key,
        ]);
        let status = Command::new("sh").arg("-c").arg(command.trim()).status().expect("sh");
        assert!(status.success(), "the printed mount command failed: {command}");
        Self { dir, target }
    }

    /// Where the snapshot is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for MountedSnapshot {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(&self.target).status();
        let _ = &self.dir;
    }
}

fn xattrs(path: &Path) -> Vec<(String, String)> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut names = vec![0u8; 64 << 10];
    // SAFETY: NUL-terminated path; the buffer holds names.len() bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in names[..n as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let key = String::from_utf8_lossy(name).into_owned();
        if key.starts_with("trusted.overlay.") {
            continue;
        }
        let cname = CString::new(name).expect("xattr name");
        let mut value = vec![0u8; 64 << 10];
        // SAFETY: NUL-terminated path and name; the buffer holds value.len() bytes.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len >= 0 {
            out.push((key, hex::encode(&value[..len as usize])));
        }
    }
    out.sort();
    out
}

/// Options for [`describe`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Describe {
    /// Leave directory modification times out (they change as entries are
    /// made inside).
    pub skip_dir_mtimes: bool,
}

/// Every entry under `root`, by relative path: type, mode, owner, size,
/// content digest or link target or device number, whole-second mtime,
/// extended attributes (not overlayfs's own), and which other paths share
/// its inode.
pub fn describe(root: &Path, options: Describe) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<String>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
        let kind = meta.file_type();
        let name = rel.display().to_string();
        let body = if kind.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&full)
                .unwrap_or_else(|e| panic!("{}: {e}", full.display()))
                .map(|e| rel.join(e.expect("entry").file_name()))
                .collect();
            children.sort();
            stack.extend(children);
            "dir".to_string()
        } else if kind.is_symlink() {
            format!("symlink -> {}", std::fs::read_link(&full).expect("readlink").display())
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                inodes.entry(meta.ino()).or_default().push(name.clone());
            }
            let data = std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
            format!(
                "file size={} sha256={}",
                data.len(),
                &hex::encode(Sha256::digest(&data))[..16]
            )
        } else if kind.is_char_device() {
            format!("char {:x}", meta.rdev())
        } else if kind.is_block_device() {
            format!("block {:x}", meta.rdev())
        } else if kind.is_fifo() {
            "fifo".to_string()
        } else {
            "socket".to_string()
        };
        let mtime = if rel.as_os_str().is_empty() || (kind.is_dir() && options.skip_dir_mtimes) {
            String::new()
        } else {
            format!(" mtime={}", meta.mtime())
        };
        let mut line = format!(
            "{body} mode={:o} owner={}:{}{mtime}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        for (key, value) in xattrs(&full) {
            line.push_str(&format!(" xattr:{key}={value}"));
        }
        out.insert(name, line);
    }
    for mut names in inodes.into_values() {
        names.sort();
        for name in &names {
            if let Some(line) = out.get_mut(name) {
                line.push_str(&format!(" links={}", names.join(",")));
            }
        }
    }
    out
}

/// The entries that differ between two descriptions, for a readable
/// assertion message.
pub fn differences(ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, line) in ours {
        match theirs.get(path) {
            None => out.push(format!("only ours: {path}: {line}")),
            Some(other) if other != line => out.push(format!("{path}: ours {line} / theirs {other}")),
            Some(_) => {}
        }
    }
    for (path, line) in theirs {
        if !ours.contains_key(path) {
            out.push(format!("only theirs: {path}: {line}"));
        }
    }
    out
}
