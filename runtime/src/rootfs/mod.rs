//! Building the container's filesystem view, in the container's new mount
//! namespace: propagation of `/`, the rootfs bound onto itself, the spec's
//! mounts in order, devices and /dev links, then pivot_root (or the
//! `--no-pivot` move); then, once the console is in place, the read-only
//! mounts and root.

pub mod devices;
pub mod host_pseudo_fs;
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
    /// Who binds the sources the container's user namespace may not look
    /// up; None when there is no one to ask.
    pub host_binds: Option<&'a dyn HostBinds>,
}

/// Bind mounts made with the host's credentials for a container in a user
/// namespace whose root may not reach a source (a host directory closed
/// to others, say): the runtime looks the source up and binds it inside
/// the container's mount namespace, where the host's locked flags stay
/// locked on the bind.
pub trait HostBinds: std::fmt::Debug {
    /// What `source` leads to, followed through its symlinks.
    fn kind_of_source(&self, source: &Path) -> Result<Option<crate::syscalls::FileKind>>;
    /// Binds `source` on `dest` (already made) in the container's mount
    /// namespace, with `flags` (MS_BIND, maybe MS_REC).
    fn bind(&self, source: &Path, dest: &Path, flags: MsFlags) -> Result<()>;
}

/// What [`setup`] leaves for [`seal`]: the read-only flags that would stop
/// the files still to be made (the console in `/dev`) from being made.
#[derive(Debug)]
#[must_use = "the read-only mounts the spec asks for are made by seal()"]
pub struct Unsealed {
    /// Mounts to make read-only, each at its path inside the new root.
    read_only_later: Vec<(mounts::ReadOnlyLater, std::path::PathBuf)>,
    readonly_root: bool,
}

/// Builds the filesystem and enters it. Runs in the container's mount
/// namespace; on return the process's root is the container's.
/// `before_pivot` runs once the mounts are made, before the root changes.
/// Read-only tmpfs mounts, a read-only `/dev` and a read-only root are
/// made read-only by [`seal`], once the console is in place.
pub fn setup(
    sys: &dyn Syscalls,
    config: &RootfsConfig<'_>,
    before_pivot: &mut dyn FnMut() -> Result<()>,
) -> Result<Unsealed> {
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

    let mut read_only_later = Vec::new();
    for (index, mount) in config.spec.mounts().iter().flatten().enumerate() {
        if let Some(later) = mounts::mount_entry(sys, config, index, mount)? {
            let inside = Path::new("/").join(later.dest.strip_prefix(config.rootfs).unwrap_or(&later.dest));
            read_only_later.push((later, inside));
        }
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
    Ok(Unsealed {
        read_only_later,
        readonly_root: config.spec.root().as_ref().is_some_and(|r| r.readonly() == Some(true)),
    })
}

/// Makes read-only what [`setup`] left writable, the root last.
pub fn seal(sys: &dyn Syscalls, unsealed: Unsealed) -> Result<()> {
    for (mount, inside) in &unsealed.read_only_later {
        mounts::make_read_only(sys, mount, inside)?;
    }
    if unsealed.readonly_root {
        let kept = sys.lockable_mount_flags(Path::new("/"))?;
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
