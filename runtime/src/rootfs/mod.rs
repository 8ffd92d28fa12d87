//! Building the container's filesystem view, in the container's new mount
//! namespace: propagation of `/`, the rootfs bound onto itself, the spec's
//! mounts in order, devices and /dev links, then pivot_root (or the
//! `--no-pivot` move) and the read-only root.

pub mod devices;
pub mod masks;
pub mod mounts;
pub mod resolve;

use std::path::Path;

use nix::mount::MsFlags;
use oci_spec::runtime::Spec;

use crate::cgroups::CgroupMount;
use crate::error::{Error, Result};
use crate::syscalls::Syscalls;

/// What the rootfs setup needs to know.
#[derive(Debug)]
pub struct RootfsConfig<'a> {
    /// The container's spec.
    pub spec: &'a Spec,
    /// The rootfs directory on the host.
    pub rootfs: &'a Path,
    /// The bundle directory (relative bind sources are read from it).
    pub bundle: &'a Path,
    /// The container's cgroups, for a `cgroup` mount.
    pub cgroups: &'a [CgroupMount],
    /// Whether the container has its own cgroup namespace.
    pub cgroup_ns: bool,
    /// Whether the container has its own user namespace (cgroup v1
    /// filesystems cannot be mounted there: the host's are bound).
    pub user_ns: bool,
    /// runc's `--no-pivot`: move the rootfs onto `/` and chroot.
    pub no_pivot: bool,
}

/// Builds the filesystem and enters it. Runs in the container's mount
/// namespace; on return the process's root is the container's.
/// `before_pivot` runs once the mounts are made, before the root changes.
pub fn setup(
    sys: &dyn Syscalls,
    config: &RootfsConfig<'_>,
    before_pivot: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let linux = config.spec.linux().as_ref();
    let propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        None | Some("") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some(name) => berth_core::mount_options::propagation(name)
            .ok_or_else(|| Error::invalid("linux.rootfsPropagation", format!("unknown propagation {name:?}")))?,
    };
    sys.mount(None, Path::new("/"), None, propagation, None)?;
    // The rootfs must be a mount point of its own for pivot_root.
    sys.mount(
        Some(config.rootfs),
        config.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;

    for (index, mount) in config.spec.mounts().iter().flatten().enumerate() {
        mounts::mount_entry(sys, config, index, mount)?;
    }

    if !devices::dev_is_bound(config.spec) {
        devices::create(sys, config)?;
    }

    // The create-time hooks run here: mounts made, the host's root still
    // visible.
    before_pivot()?;

    if config.no_pivot {
        sys.move_into(config.rootfs)?;
    } else {
        sys.pivot_into(config.rootfs)?;
    }

    if config.spec.root().as_ref().is_some_and(|r| r.readonly() == Some(true)) {
        let kept = sys.kept_mount_flags(Path::new("/"))?;
        sys.mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept,
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
