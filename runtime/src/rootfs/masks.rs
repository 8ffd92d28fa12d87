//! Masked and read-only paths, applied inside the container after
//! pivot_root.
//!
//! Each path is opened with `O_PATH | O_NOFOLLOW` and the mount is made on
//! `/proc/self/fd/N`, so the object that was checked is the one covered: a
//! symlink planted in /proc or /sys (or swapped in meanwhile) is never
//! followed to somewhere else. A path that does not exist is skipped, as
//! runc does.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

/// An open path that is not a symlink, or None when it does not exist.
fn open_no_follow(path: &Path, field: &str) -> Result<Option<(OwnedFd, bool)>> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::invalid(field, "contains a NUL byte"))?;
    // SAFETY: c is NUL-terminated; the descriptor returned is ours.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        let errno = nix::errno::Errno::last();
        if errno == nix::errno::Errno::ENOENT {
            return Ok(None);
        }
        return Err(Error::nix(format!("opening {field}"), path, errno));
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let stat = nix::sys::stat::fstat(&fd).map_err(|e| Error::nix(format!("inspecting {field}"), path, e))?;
    let kind = stat.st_mode & libc::S_IFMT;
    if kind == libc::S_IFLNK {
        return Err(Error::invalid(
            field,
            format!("{} is a symlink; it is not followed", path.display()),
        ));
    }
    Ok(Some((fd, kind == libc::S_IFDIR)))
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    field: &str,
) -> Result<()> {
    nix::mount::mount(source, target, fstype, flags, data)
        .map_err(|e| Error::nix(format!("applying {field}"), target, e))
}

/// Covers each masked path: a directory with an empty read-only tmpfs, a
/// file with /dev/null.
pub fn mask(spec: &Spec) -> Result<()> {
    let paths = spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default();
    for (i, path) in paths.iter().enumerate() {
        let field = format!("linux.maskedPaths[{i}]");
        let Some((fd, is_dir)) = open_no_follow(Path::new(path), &field)? else {
            continue;
        };
        let target = fd_path(&fd);
        if is_dir {
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0,mode=0755"),
                &field,
            )?;
        } else {
            mount(Some("/dev/null"), &target, None, MsFlags::MS_BIND, None, &field)?;
        }
    }
    Ok(())
}

/// Makes each read-only path a read-only bind mount of itself.
pub fn make_read_only(spec: &Spec) -> Result<()> {
    let paths = spec
        .linux()
        .as_ref()
        .and_then(|l| l.readonly_paths().clone())
        .unwrap_or_default();
    for (i, path) in paths.iter().enumerate() {
        let field = format!("linux.readonlyPaths[{i}]");
        let Some((fd, _)) = open_no_follow(Path::new(path), &field)? else {
            continue;
        };
        let target = fd_path(&fd);
        let source = target.to_string_lossy().into_owned();
        mount(
            Some(source.as_str()),
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            &field,
        )?;
        // The bind now sits on the path; remount that one read-only.
        let Some((fd, _)) = open_no_follow(Path::new(path), &field)? else {
            continue;
        };
        let kept = crate::syscalls::Syscalls::lockable_mount_flags(&crate::syscalls::Linux, &fd_path(&fd))?;
        let flags = kept
            | MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_REC;
        mount(None, &fd_path(&fd), None, flags, None, &field)?;
    }
    Ok(())
}
