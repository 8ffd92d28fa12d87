//! A recording fake of [`Syscalls`]: every call is written down, and the
//! filesystem questions are answered from an in-memory tree that the calls
//! update (mkdir, create_file, symlink), so a plan can be checked without
//! root.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::{FileKind, NodeKind, Syscalls};
use crate::error::{Error, Result};

/// One recorded call, named after the [`Syscalls`] method that made it,
/// with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // each variant mirrors the trait method of the same name
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount(PathBuf),
    PivotInto(PathBuf),
    MoveInto(PathBuf),
    Chdir(PathBuf),
    MkdirAll(PathBuf),
    CreateFile(PathBuf),
    Symlink(PathBuf, PathBuf),
    Mknod(PathBuf, NodeKind, u32, u64, u64),
    Chown(PathBuf, u32, u32),
    Hostname(String),
    Domainname(String),
    WriteFile(PathBuf, String),
}

#[derive(Clone, Debug)]
enum Entry {
    Dir,
    File,
    Link(PathBuf),
}

/// Records calls; answers from its tree.
#[derive(Debug, Default)]
pub struct Recorder {
    calls: RefCell<Vec<Call>>,
    tree: RefCell<BTreeMap<PathBuf, Entry>>,
}

impl Recorder {
    /// An empty tree with `/` in it.
    pub fn new() -> Self {
        let recorder = Self::default();
        recorder.tree.borrow_mut().insert(PathBuf::from("/"), Entry::Dir);
        recorder
    }

    /// Adds a directory (and its parents).
    pub fn dir(&self, path: &str) -> &Self {
        let mut tree = self.tree.borrow_mut();
        for ancestor in Path::new(path).ancestors() {
            tree.entry(ancestor.to_path_buf()).or_insert(Entry::Dir);
        }
        self
    }

    /// Adds a file (and its parent directories).
    pub fn file(&self, path: &str) -> &Self {
        if let Some(parent) = Path::new(path).parent() {
            self.dir(&parent.display().to_string());
        }
        self.tree.borrow_mut().insert(PathBuf::from(path), Entry::File);
        self
    }

    /// Adds a symlink (and its parent directories).
    pub fn link(&self, path: &str, target: &str) -> &Self {
        if let Some(parent) = Path::new(path).parent() {
            self.dir(&parent.display().to_string());
        }
        self.tree
            .borrow_mut()
            .insert(PathBuf::from(path), Entry::Link(PathBuf::from(target)));
        self
    }

    /// Every call made so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Only the mounts, as (target, fstype, flags, data).
    pub fn mounts(&self) -> Vec<(PathBuf, Option<String>, MsFlags, Option<String>)> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Mount {
                    target,
                    fstype,
                    flags,
                    data,
                    ..
                } => Some((target.clone(), fstype.clone(), *flags, data.clone())),
                _ => None,
            })
            .collect()
    }

    fn record(&self, call: Call) {
        self.calls.borrow_mut().push(call);
    }
}

impl Syscalls for Recorder {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        self.record(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        });
        Ok(())
    }

    fn umount(&self, target: &Path, _flags: MntFlags) -> Result<()> {
        self.record(Call::Umount(target.to_path_buf()));
        Ok(())
    }

    fn pivot_into(&self, rootfs: &Path) -> Result<()> {
        self.record(Call::PivotInto(rootfs.to_path_buf()));
        Ok(())
    }

    fn move_into(&self, rootfs: &Path) -> Result<()> {
        self.record(Call::MoveInto(rootfs.to_path_buf()));
        Ok(())
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        self.record(Call::Chdir(path.to_path_buf()));
        Ok(())
    }

    fn mkdir_all(&self, path: &Path, _mode: u32) -> Result<()> {
        self.dir(&path.display().to_string());
        self.record(Call::MkdirAll(path.to_path_buf()));
        Ok(())
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        self.tree.borrow_mut().entry(path.to_path_buf()).or_insert(Entry::File);
        self.record(Call::CreateFile(path.to_path_buf()));
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        self.tree
            .borrow_mut()
            .insert(link.to_path_buf(), Entry::Link(target.to_path_buf()));
        self.record(Call::Symlink(target.to_path_buf(), link.to_path_buf()));
        Ok(())
    }

    fn mknod(&self, path: &Path, kind: NodeKind, mode: u32, major: u64, minor: u64) -> Result<()> {
        self.tree.borrow_mut().insert(path.to_path_buf(), Entry::File);
        self.record(Call::Mknod(path.to_path_buf(), kind, mode, major, minor));
        Ok(())
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        self.record(Call::Chown(path.to_path_buf(), uid, gid));
        Ok(())
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        self.record(Call::Hostname(name.to_string()));
        Ok(())
    }

    fn setdomainname(&self, name: &str) -> Result<()> {
        self.record(Call::Domainname(name.to_string()));
        Ok(())
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        self.record(Call::WriteFile(path.to_path_buf(), contents.to_string()));
        Ok(())
    }

    fn kind_of(&self, path: &Path) -> Result<Option<FileKind>> {
        Ok(self.tree.borrow().get(path).map(|e| match e {
            Entry::Dir => FileKind::Dir,
            Entry::File => FileKind::File,
            Entry::Link(_) => FileKind::Symlink,
        }))
    }

    fn kind_of_target(&self, path: &Path) -> Result<Option<FileKind>> {
        let mut path = path.to_path_buf();
        for _ in 0..40 {
            let target = match self.tree.borrow().get(&path) {
                Some(Entry::Link(target)) => target.clone(),
                _ => return self.kind_of(&path),
            };
            path = path.parent().unwrap_or(Path::new("/")).join(target);
        }
        Err(Error::sys("inspecting", path, libc::ELOOP))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf> {
        match self.tree.borrow().get(path) {
            Some(Entry::Link(target)) => Ok(target.clone()),
            _ => Err(Error::sys("reading link", path, libc::EINVAL)),
        }
    }

    fn set_recursive_attributes(&self, _path: &Path, _set: u64, _clear: u64) -> Result<()> {
        Ok(())
    }

    fn lockable_mount_flags(&self, _path: &Path) -> Result<MsFlags> {
        Ok(MsFlags::empty())
    }
}
