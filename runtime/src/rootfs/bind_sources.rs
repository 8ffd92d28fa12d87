//! Bind-mount sources opened while the runtime still has the host's
//! credentials.
//!
//! In a new user namespace the container's root is an unprivileged user
//! to the host: a source under a directory it may not search (a 0700
//! directory of the host's root) could not even be looked up at mount
//! time. So, before the user namespace is made, each bind source is
//! cloned as a detached mount tree (`open_tree`, recursively for `rbind`)
//! and later attached at its destination with `move_mount`. (A plain
//! descriptor would not do: a bind from a path of another mount namespace
//! is refused.) Sources under the rootfs are left to be looked up at
//! mount time: they may name what an earlier mount of the spec put there.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::path::Path;

use oci_spec::runtime::Spec;

use super::mounts::{bind_source, is_bind};
use berth_core::mount_options;

/// Detached copies of the spec's bind sources, by mount index.
#[derive(Debug, Default)]
pub struct OpenedSources(BTreeMap<usize, OwnedFd>);

impl OpenedSources {
    /// Clones every bind source of `spec` outside `rootfs`. One that cannot
    /// be cloned now is left to mount time, where its error is reported.
    pub fn open(spec: &Spec, bundle: &Path, rootfs: &Path) -> Self {
        let mut opened = BTreeMap::new();
        for (index, mount) in spec.mounts().iter().flatten().enumerate() {
            if !is_bind(mount) {
                continue;
            }
            let Some(source) = bind_source(mount, bundle) else {
                continue;
            };
            if source.starts_with(rootfs) {
                continue;
            }
            let options = mount_options::parse(mount.options().as_deref().unwrap_or(&[]));
            let recursive = options.flags.contains(nix::mount::MsFlags::MS_REC);
            if let Some(tree) = clone_tree(&source, recursive) {
                opened.insert(index, tree);
            }
        }
        Self(opened)
    }

    /// The detached tree for mount `index`, if its source was cloned.
    pub fn tree(&self, index: usize) -> Option<RawFd> {
        self.0.get(&index).map(|fd| fd.as_raw_fd())
    }
}

/// `open_tree(OPEN_TREE_CLONE)` of `source`, with its submounts if
/// `recursive`; None if it cannot be made.
fn clone_tree(source: &Path, recursive: bool) -> Option<OwnedFd> {
    let path = std::ffi::CString::new(source.as_os_str().as_encoded_bytes()).ok()?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: a NUL-terminated path that lives across the call.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
