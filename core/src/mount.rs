//! Performing the mounts snapshotters describe.
//!
//! Snapshotters answer with `containerd.types.Mount` lists (bind, overlay,
//! ...); the diff service and the shims turn them into real mounts here.
//! Overlay mounts whose `lowerdir=` list would not fit in one page (about
//! 120 layers with containerd-style paths) are made with the new mount API,
//! adding one lower layer per `lowerdir+` parameter (Linux 6.8+), so deep
//! images mount without the relative-path tricks older daemons need.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

pub use berth_api::containerd::types::Mount;
use nix::mount::{MntFlags, MsFlags};

use crate::error::{Error, Result};
use crate::mount_options::{MountOptions, parse};

/// Most bytes the kernel takes in one mount(2) data string (a page, less
/// the terminator).
const MOUNT_DATA_LIMIT: usize = 4095;

/// The kernel's limit on overlay lower layers (`OVL_MAX_STACK`).
pub const OVERLAY_MAX_LAYERS: usize = 500;

fn errno_error(what: String, errno: nix::errno::Errno) -> Error {
    Error::io(what, &std::io::Error::from(errno))
}

/// Mounts `mount` on `target` (relative `mount.target` joined below it).
pub fn mount(mount: &Mount, target: &Path) -> Result<()> {
    let target = if mount.target.is_empty() {
        target.to_path_buf()
    } else {
        target.join(mount.target.trim_start_matches('/'))
    };
    let parsed = parse(&mount.options);
    let what = || format!("mounting {} ({}) on {}", mount.source, mount.r#type, target.display());
    if mount.r#type == "overlay" {
        return mount_overlay(&target, &parsed).map_err(|e| e.with_context(what()));
    }
    let is_bind = mount.r#type == "bind" || parsed.flags.contains(MsFlags::MS_BIND);
    let data = parsed.data.join(",");
    let fstype = (!is_bind).then_some(mount.r#type.as_str());
    let flags = if is_bind {
        parsed.flags | MsFlags::MS_BIND
    } else {
        parsed.flags
    };
    // A bind mount ignores MS_RDONLY on creation; it is applied by the remount below.
    let first = if is_bind { flags - MsFlags::MS_RDONLY } else { flags };
    nix::mount::mount(
        Some(mount.source.as_str()),
        &target,
        fstype,
        first,
        (!data.is_empty() && !is_bind).then_some(data.as_str()),
    )
    .map_err(|e| errno_error(what(), e))?;
    // A bind mount takes its read-only flag only on a remount.
    if is_bind && parsed.flags.contains(MsFlags::MS_RDONLY) {
        let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | (parsed.flags & MsFlags::MS_REC);
        if let Err(e) = nix::mount::mount(None::<&str>, &target, None::<&str>, remount, None::<&str>) {
            let _ = nix::mount::umount2(&target, MntFlags::MNT_DETACH);
            return Err(errno_error(format!("{}: read-only remount", what()), e));
        }
    }
    for propagation in &parsed.propagation {
        nix::mount::mount(None::<&str>, &target, None::<&str>, *propagation, None::<&str>)
            .map_err(|e| errno_error(format!("{}: propagation", what()), e))?;
    }
    Ok(())
}

/// The lower layers of an overlay mount's options.
pub fn overlay_lowerdirs(options: &[String]) -> Vec<String> {
    options
        .iter()
        .filter_map(|o| o.strip_prefix("lowerdir="))
        .flat_map(|l| l.split(':').map(str::to_string))
        .collect()
}

fn mount_overlay(target: &Path, parsed: &MountOptions) -> Result<()> {
    let lowers = overlay_lowerdirs(&parsed.data);
    if lowers.len() > OVERLAY_MAX_LAYERS {
        return Err(Error::invalid_argument(format!(
            "overlay of {} lower layers exceeds the kernel's limit of {OVERLAY_MAX_LAYERS}",
            lowers.len()
        )));
    }
    let data = parsed.data.join(",");
    if data.len() <= MOUNT_DATA_LIMIT {
        return nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            parsed.flags,
            Some(data.as_str()),
        )
        .map_err(|e| errno_error(format!("{} lower layers", lowers.len()), e));
    }
    new_api_overlay(target, &parsed.data, &lowers, parsed.flags.contains(MsFlags::MS_RDONLY))
}

/// Makes an overlay with fsopen/fsconfig/fsmount/move_mount, passing each
/// lower layer as its own `lowerdir+` parameter.
fn new_api_overlay(target: &Path, data: &[String], lowers: &[String], read_only: bool) -> Result<()> {
    let cstr =
        |s: &str| CString::new(s).map_err(|_| Error::invalid_argument(format!("mount option {s:?} contains NUL")));
    let check = |rc: libc::c_long, step: &str| -> Result<libc::c_long> {
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            let hint = if step.starts_with("lowerdir+") && e.raw_os_error() == Some(libc::EINVAL) {
                " (overlay with this many layers needs Linux 6.8 or newer)"
            } else {
                ""
            };
            Err(Error::io(format!("overlay {step}{hint}"), &e))
        } else {
            Ok(rc)
        }
    };
    let fstype = cstr("overlay")?;
    // SAFETY: fsopen takes a NUL-terminated name and flags; it returns a new fd or -1.
    let fd = check(
        unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) },
        "fsopen",
    )?;
    // SAFETY: the fd was just returned by fsopen and is owned by nothing else.
    let context = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let set = |key: &str, value: Option<&str>| -> Result<()> {
        let k = cstr(key)?;
        let v = value.map(cstr).transpose()?;
        let (command, value_ptr) = match &v {
            Some(v) => (libc::FSCONFIG_SET_STRING, v.as_ptr()),
            None => (libc::FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: the fs context fd is valid; key and value are NUL-terminated
        // strings that outlive the call (or null for a flag).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                command,
                k.as_ptr(),
                value_ptr,
                0,
            )
        };
        check(rc, key).map(|_| ())
    };
    for option in data {
        if option.starts_with("lowerdir=") {
            continue;
        }
        match option.split_once('=') {
            Some((key, value)) => set(key, Some(value))?,
            None => set(option, None)?,
        }
    }
    for lower in lowers {
        set("lowerdir+", Some(lower))?;
    }
    // SAFETY: valid fs context fd; no key or value for CMD_CREATE.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    check(rc, "create")?;
    let attrs = if read_only { libc::MOUNT_ATTR_RDONLY } else { 0 };
    // SAFETY: valid fs context fd; returns a new mount fd or -1.
    let mfd = check(
        unsafe { libc::syscall(libc::SYS_fsmount, context.as_raw_fd(), libc::FSMOUNT_CLOEXEC, attrs) },
        "fsmount",
    )?;
    // SAFETY: the fd was just returned by fsmount and is owned by nothing else.
    let mount_fd = unsafe { OwnedFd::from_raw_fd(mfd as i32) };
    let target_c = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| Error::invalid_argument("mount target contains NUL"))?;
    let empty = cstr("")?;
    // SAFETY: mount fd is valid, the empty path with MOVE_MOUNT_F_EMPTY_PATH
    // means "the fd itself"; the target is a NUL-terminated absolute path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount_fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(rc, "move_mount")?;
    Ok(())
}

/// Mounts every mount in order on `target`; on failure, undoes what was mounted.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount(m, target) {
            for _ in 0..i {
                let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts everything mounted on `target` (stacked mounts included).
pub fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) => return Ok(()), // not a mount point (any more)
            Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                // Busy: detach it; the kernel finishes when the last user leaves.
                nix::mount::umount2(target, MntFlags::MNT_DETACH)
                    .map_err(|e| errno_error(format!("unmounting {}", target.display()), e))?;
            }
            Err(e) => return Err(errno_error(format!("unmounting {}", target.display()), e)),
        }
    }
}

/// Mounts into a fresh temporary directory, unmounted and removed on drop.
#[derive(Debug)]
pub struct TempMount {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TempMount {
    /// Mounts `mounts` on a new directory under `parent`.
    pub fn new(mounts: &[Mount], parent: &Path) -> Result<Self> {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), &e))?;
        let dir = tempfile::Builder::new()
            .prefix("mount-")
            .tempdir_in(parent)
            .map_err(|e| Error::io(format!("creating a mount point under {}", parent.display()), &e))?;
        let path = dir.path().to_path_buf();
        mount_all(mounts, &path)?;
        Ok(Self { dir: Some(dir), path })
    }

    /// Where the mounts are.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = unmount_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot unmount");
            // Keep the directory rather than delete files through a mount.
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lowerdirs_are_listed_in_order() {
        let options = opts(&["workdir=/w", "upperdir=/u", "lowerdir=/a:/b:/c"]);
        assert_eq!(overlay_lowerdirs(&options), ["/a", "/b", "/c"]);
    }

    #[test]
    fn too_many_layers_are_refused_before_any_syscall() {
        let lowers: Vec<String> = (0..OVERLAY_MAX_LAYERS + 1).map(|i| format!("/l/{i}")).collect();
        let mount = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![format!("lowerdir={}", lowers.join(":"))],
        };
        let err = super::mount(&mount, Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("exceeds the kernel's limit of 500"), "{err}");
    }
}
