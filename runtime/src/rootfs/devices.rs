//! /dev inside the container: the default devices every container has
//! (null, zero, full, random, urandom, tty), the spec's own, and the usual
//! links (fd, stdin, stdout, stderr, ptmx, core).

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxDeviceType, Spec};

use super::RootfsConfig;
use super::resolve::resolve;
use crate::error::{Error, Result};
use crate::syscalls::{NodeKind, Syscalls};

/// A device to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Path in the container.
    pub path: PathBuf,
    /// Kind.
    pub kind: NodeKind,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The devices every container gets (runc's list).
pub fn default_devices() -> Vec<Device> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| Device {
        path: PathBuf::from("/dev").join(name),
        kind: NodeKind::Char,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Whether the spec binds the host's /dev (then nothing is created).
pub fn dev_is_bound(spec: &Spec) -> bool {
    spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind"))
    })
}

/// The spec's devices and the defaults it does not override.
fn devices_of(spec: &Spec) -> Result<Vec<Device>> {
    let mut out = Vec::new();
    for (i, device) in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let kind = match device.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => NodeKind::Char,
            LinuxDeviceType::B => NodeKind::Block,
            LinuxDeviceType::P => NodeKind::Fifo,
            LinuxDeviceType::A => {
                return Err(Error::invalid(
                    format!("linux.devices[{i}].type"),
                    "a device must be c, b, u or p",
                ));
            }
        };
        if !device.path().is_absolute() {
            return Err(Error::invalid(
                format!("linux.devices[{i}].path"),
                format!("{} is not an absolute path", device.path().display()),
            ));
        }
        out.push(Device {
            path: device.path().clone(),
            kind,
            major: device.major() as u64,
            minor: device.minor() as u64,
            mode: device.file_mode().unwrap_or(0o666) & 0o7777,
            uid: device.uid().unwrap_or(0),
            gid: device.gid().unwrap_or(0),
        });
    }
    for default in default_devices() {
        if !out.iter().any(|d| d.path == default.path) {
            out.push(default);
        }
    }
    Ok(out)
}

/// Creates the devices and links under the rootfs's /dev.
pub fn create(sys: &dyn Syscalls, config: &RootfsConfig<'_>) -> Result<()> {
    let dev = resolve(sys, config.rootfs, Path::new("/dev"), "/dev")?;
    sys.mkdir_all(&dev, 0o755)?;
    for device in devices_of(config.spec)? {
        let path = resolve(sys, config.rootfs, &device.path, &device.path.display().to_string())?;
        if let Some(parent) = path.parent() {
            sys.mkdir_all(parent, 0o755)?;
        }
        match sys.mknod(&path, device.kind, device.mode, device.major, device.minor) {
            Ok(()) => sys.chown(&path, device.uid, device.gid)?,
            // Not allowed to make nodes (a user namespace): bind the host's.
            Err(e) if e.errno == Some(libc::EPERM) => {
                sys.create_file(&path)?;
                sys.mount(Some(&device.path), &path, None, MsFlags::MS_BIND, None)?;
            }
            Err(e) if e.errno == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    let links: [(&str, &str); 4] = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    for (target, name) in links {
        sys.symlink(Path::new(target), &dev.join(name))?;
    }
    let has_devpts = config
        .spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.destination() == Path::new("/dev/pts"));
    if has_devpts {
        sys.symlink(Path::new("pts/ptmx"), &dev.join("ptmx"))?;
    }
    if sys.kind_of(Path::new("/proc/kcore"))?.is_some() {
        sys.symlink(Path::new("/proc/kcore"), &dev.join("core"))?;
    }
    Ok(())
}
