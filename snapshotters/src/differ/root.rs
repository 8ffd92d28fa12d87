//! Filesystem operations confined to a root directory.
//!
//! Layer archives are hostile input: names may hold `..`, be absolute, or
//! lead through symlinks the same archive created. Every path is cleaned
//! the way containerd cleans it (`/` + name, `..` cannot climb above the
//! root) and every directory is opened with openat2(RESOLVE_IN_ROOT), so a
//! symlink is resolved as if the root were `/`. The last component is then
//! acted on with *at system calls that never follow it. Nothing an archive
//! says can reach outside the root.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

/// The components of an archive path after cleaning: `.` and leading `/`
/// dropped, `..` removing the previous component (never above the root).
pub(crate) fn clean(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name.to_os_string()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

pub(crate) fn join(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

pub(crate) fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The kernel's `struct open_how` (openat2), laid out as it is.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// A directory every operation stays inside.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens `path` as a root.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let c = cstring(path.as_os_str())?;
        // SAFETY: c is a NUL-terminated path; the result is a new fd or -1.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Flushes the filesystem holding the root to disk.
    pub(crate) fn sync(&self) -> io::Result<()> {
        // SAFETY: syncfs takes an open descriptor, which self.fd is.
        check(unsafe { libc::syncfs(self.fd.as_raw_fd()) })
    }

    /// Opens the directory at `components`, resolving symlinks inside the
    /// root. ENOENT or ENOTDIR when there is no such directory.
    pub(crate) fn open_dir(&self, components: &[OsString]) -> io::Result<OwnedFd> {
        let rel = if components.is_empty() {
            CString::new(".").map_err(|_| io::Error::other("cstring"))?
        } else {
            cstring(join(components).as_os_str())?
        };
        let how = OpenHow {
            flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: the root fd is open, rel is NUL-terminated, and `how` is a
        // fully initialised open_how passed with its size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                rel.as_ptr(),
                &how as *const OpenHow,
                size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by openat2 and is owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// What `lstat` says of `name` in `dir`, or `None` when it does not exist.
pub(crate) fn stat_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<libc::stat>> {
    let c = cstring(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: dir is open, c is NUL-terminated, st is writable; nofollow.
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::NotFound {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: fstatat succeeded, so st is initialised.
    Ok(Some(unsafe { st.assume_init() }))
}

/// Whether a `stat` describes a directory.
pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Opens `name` in `dir` as a directory, refusing to follow a symlink.
pub(crate) fn open_child_dir(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    // SAFETY: dir is open and c NUL-terminated; O_NOFOLLOW keeps us off symlinks.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The names in a directory (not `.` or `..`).
pub(crate) fn list_dir(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    // Read through /proc so the listing uses this very directory.
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        names.push(entry?.file_name());
    }
    Ok(names)
}

/// Removes `name` in `dir` and, for a directory, everything under it,
/// never following a symlink.
pub(crate) fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    let c = cstring(name)?;
    if is_dir(&st) {
        let child = open_child_dir(dir, name)?;
        for entry in list_dir(&child)? {
            remove_at(&child, &entry)?;
        }
        // SAFETY: dir is open, c NUL-terminated.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })
    } else {
        // SAFETY: dir is open, c NUL-terminated.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })
    }
}

/// Creates a directory `name` in `dir`.
pub(crate) fn mkdir_at(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstring(name)?;
    // SAFETY: dir is open, c NUL-terminated.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) })
}

/// Sets owner, mode and times of `name` in `dir` (those given) without
/// following it; the mode is never given for a symlink.
pub(crate) fn set_metadata_at(
    dir: &OwnedFd,
    name: &OsStr,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    times: Option<[libc::timespec; 2]>,
) -> io::Result<()> {
    let c = cstring(name)?;
    if let Some((uid, gid)) = owner {
        // SAFETY: dir is open, c NUL-terminated; nofollow acts on the entry itself.
        check(unsafe { libc::fchownat(dir.as_raw_fd(), c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
    }
    if let Some(mode) = mode {
        // SAFETY: as above; only called for entries that are not symlinks
        // (the entry was just created by us, so it cannot be swapped).
        check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode, 0) })?;
    }
    if let Some(times) = times {
        // SAFETY: as above; times is a two-element array.
        check(unsafe { libc::utimensat(dir.as_raw_fd(), c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    }
    Ok(())
}

/// Sets an extended attribute on `name` in `dir` without following it.
pub(crate) fn set_xattr_at(dir: &OwnedFd, name: &OsStr, key: &str, value: &[u8]) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    let cpath = CString::new(path).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))?;
    let ckey = CString::new(key).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr key contains NUL"))?;
    // SAFETY: NUL-terminated path and key, value points at `value.len()` bytes;
    // lsetxattr does not follow the last component.
    check(unsafe { libc::lsetxattr(cpath.as_ptr(), ckey.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// Sets an extended attribute on an open file or directory.
pub(crate) fn set_xattr_fd(fd: &OwnedFd, key: &str, value: &[u8]) -> io::Result<()> {
    let ckey = CString::new(key).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr key contains NUL"))?;
    // SAFETY: fd is open, key NUL-terminated, value points at `value.len()` bytes.
    check(unsafe { libc::fsetxattr(fd.as_raw_fd(), ckey.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(path: &str) -> Vec<String> {
        clean(Path::new(path))
            .into_iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn paths_clean_like_containerd() {
        assert_eq!(names("a/b/c"), ["a", "b", "c"]);
        assert_eq!(names("./a/./b/"), ["a", "b"]);
        assert_eq!(names("/etc/passwd"), ["etc", "passwd"]);
        assert_eq!(names("../../etc/passwd"), ["etc", "passwd"]);
        assert_eq!(names("a/../../b"), ["b"]);
        assert!(names("..").is_empty());
        assert!(names("./").is_empty());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("up")).unwrap();
        let r = Root::open(&root).unwrap();
        for through in ["escape", "up"] {
            let fd = r.open_dir(&[OsString::from(through)]).unwrap();
            let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
            assert!(target.starts_with(&root), "{through} resolved to {}", target.display());
        }
    }
}
