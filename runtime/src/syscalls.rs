//! The system calls that set up a container's filesystem and identity,
//! behind a trait.
//!
//! The real implementation ([`Linux`]) makes the calls; the recording fake
//! (`syscalls::fake`, tests only) writes them down and answers questions
//! about the rootfs from an in-memory tree, so the mount and namespace
//! planning is unit-tested without root.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::Result;

#[cfg(test)]
pub mod fake;
mod linux;

pub use linux::Linux;

/// What is at a path (never following a final symlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// A device node to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// FIFO.
    Fifo,
}

/// The calls container setup makes.
pub trait Syscalls {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    /// umount2(2).
    fn umount(&self, target: &Path, flags: MntFlags) -> Result<()>;
    /// Makes `rootfs` the root: pivot_root into it and detach the old root.
    fn pivot_into(&self, rootfs: &Path) -> Result<()>;
    /// Makes `rootfs` the root without pivot_root: take the host's proc
    /// and sysfs out of the namespace, move it onto `/` and chroot (runc's
    /// `--no-pivot`).
    fn move_into(&self, rootfs: &Path) -> Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> Result<()>;
    /// Creates a directory and its missing parents.
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()>;
    /// Creates an empty file if nothing is there (a bind-mount target).
    fn create_file(&self, path: &Path) -> Result<()>;
    /// symlink(2).
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    /// mknod(2).
    fn mknod(&self, path: &Path, kind: NodeKind, mode: u32, major: u64, minor: u64) -> Result<()>;
    /// lchown(2).
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> Result<()>;
    /// setdomainname(2).
    fn setdomainname(&self, name: &str) -> Result<()>;
    /// Writes `contents` to an existing file (sysctls, proc knobs).
    fn write_file(&self, path: &Path, contents: &str) -> Result<()>;
    /// What is at `path`, or None.
    fn kind_of(&self, path: &Path) -> Result<Option<FileKind>>;
    /// What `path` leads to, its symlinks followed, or None (also for a
    /// dangling link).
    fn kind_of_target(&self, path: &Path) -> Result<Option<FileKind>>;
    /// readlink(2).
    fn read_link(&self, path: &Path) -> Result<PathBuf>;
    /// The flags of the mount at `path` that the kernel may lock (ro,
    /// nosuid, nodev, noexec and the atime ones): from a user namespace, a
    /// remount must repeat those a more privileged namespace set.
    fn lockable_mount_flags(&self, path: &Path) -> Result<MsFlags>;
    /// Sets and clears `MOUNT_ATTR_*` bits on the mount at `path` and
    /// every mount below it (mount_setattr with AT_RECURSIVE).
    fn set_recursive_attributes(&self, path: &Path, set: u64, clear: u64) -> Result<()>;
}
