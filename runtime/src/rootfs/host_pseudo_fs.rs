//! The host's proc and sysfs, taken out of a `--no-pivot` container's view.
//!
//! The kernel lets a user namespace mount a fresh proc or sysfs only if
//! one is already fully visible in its mount namespace. After pivot_root
//! the host's are gone; after the `--no-pivot` move and chroot they are
//! still in the namespace, under the new root, and a process that makes
//! its own user namespace could mount a proc with nothing masked (runc's
//! suite checks that `mount -t proc` is refused). So every full proc and
//! sysfs mount outside the rootfs is detached before the move (made a
//! slave first, so the unmount stays out of the host), or covered with an
//! empty tmpfs where it cannot be unmounted.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::{Error, Result};

/// Mount points of whole proc and sysfs filesystems outside `rootfs`, in
/// the order mountinfo lists them.
pub fn revealing_mounts(mountinfo: &str, rootfs: &Path) -> Vec<PathBuf> {
    crate::mountinfo::entries(mountinfo)
        .filter(|entry| matches!(entry.fstype, "proc" | "sysfs") && entry.root == "/")
        .map(|entry| PathBuf::from(entry.mount_point))
        .filter(|mount_point| !mount_point.starts_with(rootfs))
        .collect()
}

/// Detaches (or covers) each of [`revealing_mounts`] in this mount namespace.
pub fn hide(rootfs: &Path) -> Result<()> {
    let path = Path::new("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, &e))?;
    for mount_point in revealing_mounts(&mountinfo, rootfs) {
        match nix::mount::mount(
            None::<&str>,
            &mount_point,
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        ) {
            // Gone with a mount above it that was detached already.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(Error::nix("keeping an unmount from the host", &mount_point, e)),
            Ok(()) => {}
        }
        match nix::mount::umount2(&mount_point, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EPERM) => nix::mount::mount(
                Some("tmpfs"),
                &mount_point,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| Error::nix("covering the host's filesystem", &mount_point, e))?,
            Err(e) => return Err(Error::nix("detaching the host's filesystem", &mount_point, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_proc_and_sysfs_outside_the_rootfs_count() {
        let mountinfo = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
23 1 0:22 / /sys rw - sysfs sysfs rw
24 22 0:23 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw
30 1 0:24 /sys /host\\040proc/sys ro - proc proc rw
40 1 254:0 / / rw - ext4 /dev/vda rw
41 40 0:30 / /b/rootfs/proc rw - proc proc rw
42 40 0:31 / /b/rootfs/sys ro - sysfs sysfs ro
43 1 0:32 / /other\\040place rw - sysfs sysfs rw
";
        assert_eq!(
            revealing_mounts(mountinfo, Path::new("/b/rootfs")),
            [
                PathBuf::from("/proc"),
                PathBuf::from("/sys"),
                PathBuf::from("/other place")
            ]
        );
    }
}
