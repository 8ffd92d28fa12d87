//! Keeping the runtime's own binary out of a container's reach
//! (CVE-2019-5736).
//!
//! The runtime re-executes itself in processes a container can see: a
//! container process could hold `/proc/<pid>/exe` of one and, once it is
//! no longer running, reopen it for writing and replace the binary the
//! host runs next. So the binary is executed through a read-only bind
//! mount of itself, made in the child's own mount namespace just before
//! its exec: every way back to the file from that process leads through a
//! read-only mount (EROFS), while the host's view is untouched.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The runtime binary's path, prepared before a fork.
#[derive(Clone, Debug)]
pub struct ProtectedBinary {
    path: PathBuf,
    c_path: CString,
}

impl ProtectedBinary {
    /// This process's binary.
    pub fn current() -> Result<Self> {
        let path =
            std::env::current_exe().map_err(|e| Error::io("finding the runtime binary", "/proc/self/exe", &e))?;
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::other("finding the runtime binary", "its path contains a NUL byte"))?;
        Ok(Self { path, c_path })
    }

    /// The path to execute (after [`Self::bind_read_only`]).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Between fork and exec, in a mount namespace of the child's own:
    /// stops mounts propagating back to the host, then binds the binary
    /// read-only over itself.
    ///
    /// # Safety
    /// Only async-signal-safe calls are made; call it between fork and exec.
    pub unsafe fn bind_read_only(&self) -> std::io::Result<()> {
        let path = self.c_path.as_ptr();
        let none = std::ptr::null::<libc::c_char>();
        let steps = [
            (c"/".as_ptr(), none, libc::MS_REC | libc::MS_SLAVE),
            (path, path, libc::MS_BIND),
            (path, none, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY),
        ];
        for (target, source, flags) in steps {
            // SAFETY: mount(2) with NUL-terminated strings prepared before the fork.
            if unsafe { libc::mount(source, target, none, flags, std::ptr::null()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
