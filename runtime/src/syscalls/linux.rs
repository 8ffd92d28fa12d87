//! The real system calls.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use super::{FileKind, NodeKind, Syscalls};
use crate::error::{Error, Result};

/// Makes the calls for real.
#[derive(Clone, Copy, Debug, Default)]
pub struct Linux;

impl Syscalls for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(|e| {
            let what = match fstype {
                Some(t) => format!("mounting {t}"),
                None => "mounting".to_string(),
            };
            Error::nix(what, target, e)
        })
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> Result<()> {
        nix::mount::umount2(target, flags).map_err(|e| Error::nix("unmounting", target, e))
    }

    fn pivot_into(&self, rootfs: &Path) -> Result<()> {
        let old_root = nix::fcntl::open(
            "/",
            nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(|e| Error::nix("opening the old root", "/", e))?;
        let new_root = nix::fcntl::open(
            rootfs,
            nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(|e| Error::nix("opening the rootfs", rootfs, e))?;
        nix::unistd::fchdir(&new_root).map_err(|e| Error::nix("entering the rootfs", rootfs, e))?;
        // pivot_root(".", ".") stacks the old root under the new one; it is
        // then reached through the fd and detached.
        nix::unistd::pivot_root(".", ".").map_err(|e| Error::nix("pivot_root", rootfs, e))?;
        nix::unistd::fchdir(&old_root).map_err(|e| Error::nix("entering the old root", "/", e))?;
        // Slave first, so the detach does not propagate to the host.
        nix::mount::mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::nix("making the old root a slave", "/", e))?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::nix("detaching the old root", "/", e))?;
        nix::unistd::chdir("/").map_err(|e| Error::nix("entering the new root", "/", e))
    }

    fn move_into(&self, rootfs: &Path) -> Result<()> {
        crate::rootfs::host_pseudo_fs::hide(rootfs)?;
        nix::unistd::chdir(rootfs).map_err(|e| Error::nix("entering the rootfs", rootfs, e))?;
        nix::mount::mount(Some(rootfs), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(|e| Error::nix("moving the rootfs onto /", rootfs, e))?;
        nix::unistd::chroot(".").map_err(|e| Error::nix("chroot", rootfs, e))?;
        nix::unistd::chdir("/").map_err(|e| Error::nix("entering the new root", "/", e))
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        nix::unistd::chdir(path).map_err(|e| Error::nix("changing directory", path, e))
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(|e| Error::io("creating directory", path, &e))
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        match std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::io("creating file", path, &e)),
        }
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("creating symlink", link, &e)),
        }
    }

    fn mknod(&self, path: &Path, kind: NodeKind, mode: u32, major: u64, minor: u64) -> Result<()> {
        let kind = match kind {
            NodeKind::Char => SFlag::S_IFCHR,
            NodeKind::Block => SFlag::S_IFBLK,
            NodeKind::Fifo => SFlag::S_IFIFO,
        };
        let dev = nix::sys::stat::makedev(major, minor);
        nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(mode), dev)
            .map_err(|e| Error::nix("creating device", path, e))?;
        // Exactly the mode asked for: mknod applies the umask.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("setting the device's mode", path, &e))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| Error::io("changing owner", path, &e))
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).map_err(|e| Error::nix("setting the hostname", name, e))
    }

    fn setdomainname(&self, name: &str) -> Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        if rc < 0 {
            return Err(Error::sys(
                "setting the domain name",
                name,
                nix::errno::Errno::last_raw(),
            ));
        }
        Ok(())
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        std::fs::write(path, contents).map_err(|e| Error::io("writing", path, &e))
    }

    fn kind_of(&self, path: &Path) -> Result<Option<FileKind>> {
        kind_from(std::fs::symlink_metadata(path), path)
    }

    fn kind_of_target(&self, path: &Path) -> Result<Option<FileKind>> {
        kind_from(std::fs::metadata(path), path)
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf> {
        std::fs::read_link(path).map_err(|e| Error::io("reading link", path, &e))
    }

    fn set_recursive_attributes(&self, path: &Path, set: u64, clear: u64) -> Result<()> {
        /// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0, 32 bytes).
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        let attr = MountAttr {
            attr_set: set,
            attr_clr: clear,
            propagation: 0,
            userns_fd: 0,
        };
        let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::invalid("mount destination", "contains a NUL byte"))?;
        // SAFETY: a NUL-terminated path and a mount_attr that live across
        // the call, its size passed with it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_RECURSIVE as libc::c_uint,
                &attr as *const MountAttr,
                size_of::<MountAttr>(),
            )
        };
        if rc != 0 {
            return Err(Error::sys(
                "setting recursive mount attributes",
                path,
                nix::errno::Errno::last_raw(),
            ));
        }
        Ok(())
    }

    fn lockable_mount_flags(&self, path: &Path) -> Result<MsFlags> {
        use nix::sys::statvfs::FsFlags;
        let stat = nix::sys::statvfs::statvfs(path).map_err(|e| Error::nix("reading mount flags", path, e))?;
        let flags = stat.flags();
        let pairs = [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ];
        Ok(pairs
            .into_iter()
            .filter(|(st, _)| flags.contains(*st))
            .fold(MsFlags::empty(), |acc, (_, ms)| acc | ms))
    }
}

fn kind_from(meta: std::io::Result<std::fs::Metadata>, path: &Path) -> Result<Option<FileKind>> {
    match meta {
        Ok(meta) => {
            let t = meta.file_type();
            Ok(Some(if t.is_dir() {
                FileKind::Dir
            } else if t.is_symlink() {
                FileKind::Symlink
            } else if t.is_file() {
                FileKind::File
            } else {
                FileKind::Other
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("inspecting", path, &e)),
    }
}
