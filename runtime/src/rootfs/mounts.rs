//! One mount of the spec: a bind, a cgroup tree, or a filesystem.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

use super::RootfsConfig;
use super::resolve::resolve;
use crate::error::{Error, Result};
use crate::syscalls::{FileKind, Syscalls};
use berth_core::mount_options::{self as options, MountOptions};

/// A mount made writable so that what follows can create files in it
/// (devices in `/dev`, mount points in a tmpfs), to be made read-only
/// once the whole tree is built, as its spec asks.
#[derive(Debug)]
pub struct ReadOnlyLater {
    /// The mount's host path, under the rootfs.
    pub dest: PathBuf,
    /// The flags it was mounted with, MS_RDONLY taken out.
    pub flags: MsFlags,
}

/// Mounts `mount` (the spec's `mounts[index]`) inside the rootfs. A
/// read-only tmpfs or `/dev` comes back as [`ReadOnlyLater`].
pub fn mount_entry(
    sys: &dyn Syscalls,
    config: &RootfsConfig<'_>,
    index: usize,
    mount: &Mount,
) -> Result<Option<ReadOnlyLater>> {
    let field = format!("mounts[{index}]");
    let fstype = mount.typ().as_deref().unwrap_or("");
    let destination = in_container(config.rootfs, mount.destination());
    if matches!(fstype, "proc" | "sysfs") {
        refuse_a_symlinked_destination(sys, config.rootfs, &destination, &field, fstype)?;
    }
    let dest = resolve(sys, config.rootfs, &destination, &format!("{field}.destination"))?;
    let mut opts = options::parse(mount.options().as_deref().unwrap_or(&[]));
    if fstype == "bind" {
        opts.flags.insert(MsFlags::MS_BIND);
    }
    let mut read_only_later = None;
    if opts.is_bind() {
        bind(sys, config, &field, mount, &dest, &opts)?;
    } else if fstype == "cgroup" || fstype == "cgroup2" && !config.cgroups.is_empty() {
        cgroup_tree(sys, config, &dest, &opts)?;
    } else {
        if fstype.is_empty() {
            return Err(Error::invalid(
                format!("{field}.type"),
                "a mount that is not a bind needs a type",
            ));
        }
        // A tmpfs given no mode= takes the mode of the directory it
        // covers (set-id and sticky bits too), as with runc.
        if fstype == "tmpfs" && !opts.data.iter().any(|o| o.starts_with("mode=")) {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = std::fs::symlink_metadata(&dest)
                && meta.is_dir()
            {
                opts.data.push(format!("mode={:o}", meta.permissions().mode() & 0o7777));
            }
        }
        sys.mkdir_all(&dest, 0o755)?;
        if opts.flags.contains(MsFlags::MS_RDONLY) && (fstype == "tmpfs" || destination == Path::new("/dev")) {
            opts.flags.remove(MsFlags::MS_RDONLY);
            read_only_later = Some(ReadOnlyLater {
                dest: dest.clone(),
                flags: opts.flags,
            });
        }
        let source = mount.source().clone().unwrap_or_else(|| PathBuf::from(fstype));
        let data = opts.data();
        match sys.mount(Some(&source), &dest, Some(fstype), opts.flags, data.as_deref()) {
            Ok(()) => {}
            // sysfs needs a network namespace of its own; without one, show
            // the host's read-only, as runc does.
            Err(e) if fstype == "sysfs" && e.errno == Some(libc::EPERM) => {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
                sys.mount(Some(Path::new("/sys")), &dest, None, flags, None)?;
                remount(sys, &dest, opts.flags | MsFlags::MS_RDONLY, MsFlags::empty())?;
            }
            Err(e) => return Err(e.context(&field)),
        }
    }
    for propagation in &opts.propagation {
        sys.mount(None, &dest, None, *propagation, None)?;
    }
    Ok(read_only_later)
}

/// Makes a [`ReadOnlyLater`] mount read-only; `at` is where it is now
/// (inside the new root). A plain remount (not a bind one): it changes
/// the filesystem's flags, as it was mounted with them.
pub fn make_read_only(sys: &dyn Syscalls, mount: &ReadOnlyLater, at: &Path) -> Result<()> {
    let kept = sys.lockable_mount_flags(at)?;
    sys.mount(
        None,
        at,
        None,
        mount.flags | kept | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None,
    )
}

/// The in-container path of a destination. One that already names a
/// place under the rootfs (`<rootfs>/mnt/x`) means that place, as with
/// runc; anything else is a path inside the container.
fn in_container(rootfs: &Path, destination: &Path) -> PathBuf {
    match destination.strip_prefix(rootfs) {
        Ok(inside) => Path::new("/").join(inside),
        Err(_) => destination.to_path_buf(),
    }
}

/// proc and sysfs go on a directory of the rootfs itself: an image whose
/// /proc is a symlink would otherwise have them mounted wherever it points
/// (and leave /proc as it made it), so it is refused, as runc refuses it.
fn refuse_a_symlinked_destination(
    sys: &dyn Syscalls,
    rootfs: &Path,
    destination: &Path,
    field: &str,
    fstype: &str,
) -> Result<()> {
    let inside = rootfs.join(destination.strip_prefix("/").unwrap_or(destination));
    if sys.read_link(&inside).is_ok() {
        return Err(Error::invalid(
            format!("{field}.destination"),
            format!(
                "{} is a symlink: {fstype} must be mounted on ordinary directory",
                destination.display()
            ),
        ));
    }
    Ok(())
}

/// The access-time flags, which the kernel locks as one.
const ACCESS_TIME_FLAGS: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME)
    .union(MsFlags::MS_NODIRATIME);

/// Applies the flags a bind mount asked for (a bind cannot take them at
/// first). Only those asked for: what the source had and the options did
/// not name is off (`bind,nosuid` of a nodev source is not nodev); with no
/// flag named, set or `cleared`, the bind keeps the source's flags. The
/// access-time mode stays the source's unless one is named (the kernel
/// keeps it on a remount that names none).
///
/// From a user namespace the kernel refuses to drop what it locked on the
/// source (ro, nosuid, nodev, noexec, the access-time mode): then the
/// remount repeats those, unless an option asked to clear one or for
/// another access-time mode, which fails rather than make a mount other
/// than the one asked for.
fn remount(sys: &dyn Syscalls, dest: &Path, flags: MsFlags, cleared: MsFlags) -> Result<()> {
    let asked = flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if asked.is_empty() && cleared.is_empty() {
        return Ok(());
    }
    let flags = asked | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    let refused = match sys.mount(None, dest, None, flags, None) {
        Ok(()) => return Ok(()),
        Err(refused) => refused,
    };
    let locked = sys.lockable_mount_flags(dest)?;
    let stuck = locked & cleared;
    if !stuck.is_empty() {
        return Err(refused.context(format!("cannot clear {}, locked on the source", options::names(stuck))));
    }
    let access_time = asked & ACCESS_TIME_FLAGS;
    if !access_time.is_empty() && access_time != locked & ACCESS_TIME_FLAGS {
        return Err(refused.context(format!(
            "cannot change the access-time flags locked on the source ({})",
            options::names(locked & ACCESS_TIME_FLAGS)
        )));
    }
    sys.mount(None, dest, None, flags | locked, None).map_err(|e| {
        e.context(format!(
            "remounting with the source's locked {} repeated",
            options::names(locked)
        ))
    })
}

fn bind(
    sys: &dyn Syscalls,
    config: &RootfsConfig<'_>,
    field: &str,
    mount: &Mount,
    dest: &Path,
    opts: &MountOptions,
) -> Result<()> {
    let source = mount
        .source()
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("{field}.source"), "a bind mount needs a source"))?;
    let source = if source.is_absolute() {
        source.clone()
    } else {
        config.bundle.join(source)
    };
    // The kind of what the source leads to: mount(2) follows its links.
    // A source closed to the user namespace's root is the host's to bind.
    let (kind, host_binds) = match sys.kind_of_target(&source) {
        Err(e) if e.errno == Some(libc::EACCES) && config.user_ns && config.host_binds.is_some() => {
            let host_binds = config.host_binds.expect("checked");
            (host_binds.kind_of_source(&source)?, Some(host_binds))
        }
        kind => (kind?, None),
    };
    let kind = kind.ok_or_else(|| {
        Error::invalid(
            format!("{field}.source"),
            format!("{} does not exist", source.display()),
        )
    })?;
    if kind == FileKind::Dir {
        sys.mkdir_all(dest, 0o755)?;
    } else {
        if let Some(parent) = dest.parent() {
            sys.mkdir_all(parent, 0o755)?;
        }
        sys.create_file(dest)?;
    }
    let bind_flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
    match host_binds {
        Some(host_binds) => host_binds.bind(&source, dest, bind_flags)?,
        None => sys.mount(Some(&source), dest, None, bind_flags, None)?,
    }
    remount(sys, dest, opts.flags, opts.cleared).map_err(|e| e.context(format!("{field}.options")))?;
    if opts.recursive_set != 0 || opts.recursive_clear != 0 {
        sys.set_recursive_attributes(dest, opts.recursive_set, opts.recursive_clear)
            .map_err(|e| e.context(field))?;
    }
    Ok(())
}

/// `/sys/fs/cgroup`: the container's own cgroups. In a cgroup namespace
/// each hierarchy is mounted fresh (its root is the container's cgroup);
/// otherwise the container's directories are bound from the host.
fn cgroup_tree(sys: &dyn Syscalls, config: &RootfsConfig<'_>, dest: &Path, opts: &MountOptions) -> Result<()> {
    let flags = opts.flags - MsFlags::MS_RDONLY;
    let read_only = opts.flags.contains(MsFlags::MS_RDONLY);
    sys.mkdir_all(dest, 0o755)?;
    let one_unified = matches!(config.cgroups, [only] if only.name.is_empty());
    let mut mounted = Vec::new();
    if one_unified {
        let cgroup = &config.cgroups[0];
        mount_hierarchy(sys, config, cgroup, dest, flags)?;
        mounted.push(dest.to_path_buf());
    } else {
        let data = opts.data().unwrap_or_else(|| "mode=755".to_string());
        sys.mount(Some(Path::new("tmpfs")), dest, Some("tmpfs"), flags, Some(&data))?;
        for cgroup in config.cgroups {
            let sub = dest.join(&cgroup.name);
            sys.mkdir_all(&sub, 0o755)?;
            mount_hierarchy(sys, config, cgroup, &sub, flags)?;
            mounted.push(sub);
            // A combined hierarchy (cpu,cpuacct) is reachable by each name.
            if cgroup.name.contains(',') {
                for part in cgroup.name.split(',') {
                    sys.symlink(Path::new(&cgroup.name), &dest.join(part))?;
                }
            }
        }
    }
    if read_only {
        for path in &mounted {
            remount(sys, path, flags | MsFlags::MS_RDONLY, MsFlags::empty())?;
        }
        if !one_unified {
            sys.mount(None, dest, None, flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None)?;
        }
    }
    Ok(())
}

fn mount_hierarchy(
    sys: &dyn Syscalls,
    config: &RootfsConfig<'_>,
    cgroup: &crate::cgroups::CgroupMount,
    target: &Path,
    flags: MsFlags,
) -> Result<()> {
    if config.cgroup_ns && !config.user_ns {
        let source = Path::new(&cgroup.fstype);
        sys.mount(
            Some(source),
            target,
            Some(&cgroup.fstype),
            flags,
            cgroup.data.as_deref(),
        )
    } else {
        sys.mount(
            Some(&cgroup.host_dir),
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        remount(sys, target, flags, MsFlags::empty())
    }
}
