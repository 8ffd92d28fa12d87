//! Mount options as OCI specs and `containerd.types.Mount` write them
//! (`ro`, `nosuid`, `rbind`, `rslave`, `mode=755`, …) turned into mount(2)
//! flags, propagation flags and the filesystem's data string. One table
//! for the daemon's snapshot mounts and the runtime's container mounts.

use nix::mount::MsFlags;

/// One mount's options, split the way mount(2) takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount call itself.
    pub flags: MsFlags,
    /// Flags an option asked to be off (`rw`, `dev`, `atime`, …): a bind
    /// mount of a source that has one of them locked on must fail rather
    /// than quietly keep it.
    pub cleared: MsFlags,
    /// Propagation changes, applied by separate calls after the mount.
    pub propagation: Vec<MsFlags>,
    /// Options for the filesystem (`mode=755,size=65536k`).
    pub data: Vec<String>,
    /// `MOUNT_ATTR_*` bits to set on the mount and every mount below it
    /// (`rro`, `rnosuid`, `rnoatime`, ...), with mount_setattr(2).
    pub recursive_set: u64,
    /// `MOUNT_ATTR_*` bits to clear likewise (`rrw`, `rexec`, ...).
    pub recursive_clear: u64,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            recursive_set: 0,
            recursive_clear: 0,
        }
    }
}

/// The recursive options: the attribute each sets (true) or clears.
fn recursive_attribute(option: &str) -> Option<(bool, u64)> {
    Some(match option {
        "rro" => (true, libc::MOUNT_ATTR_RDONLY),
        "rrw" => (false, libc::MOUNT_ATTR_RDONLY),
        "rnosuid" => (true, libc::MOUNT_ATTR_NOSUID),
        "rsuid" => (false, libc::MOUNT_ATTR_NOSUID),
        "rnodev" => (true, libc::MOUNT_ATTR_NODEV),
        "rdev" => (false, libc::MOUNT_ATTR_NODEV),
        "rnoexec" => (true, libc::MOUNT_ATTR_NOEXEC),
        "rexec" => (false, libc::MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (true, libc::MOUNT_ATTR_NODIRATIME),
        "rdiratime" => (false, libc::MOUNT_ATTR_NODIRATIME),
        "rrelatime" => (true, libc::MOUNT_ATTR_RELATIME),
        "rnorelatime" => (false, libc::MOUNT_ATTR_RELATIME),
        "rnoatime" => (true, libc::MOUNT_ATTR_NOATIME),
        "ratime" => (false, libc::MOUNT_ATTR_NOATIME),
        "rstrictatime" => (true, libc::MOUNT_ATTR_STRICTATIME),
        "rnostrictatime" => (false, libc::MOUNT_ATTR_STRICTATIME),
        "rnosymfollow" => (true, libc::MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => (false, libc::MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

impl MountOptions {
    /// Whether this is a bind mount.
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// The data string, or None when empty.
    pub fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// Splits `options` into flags, propagation and data.
pub fn parse(options: &[String]) -> MountOptions {
    let mut out = MountOptions::default();
    for option in options {
        if let Some((set, attribute)) = recursive_attribute(option) {
            if set {
                out.recursive_set |= attribute;
                // An access-time mode is one field: setting one means
                // clearing the field first (mount_setattr(2)).
                if attribute & libc::MOUNT_ATTR__ATIME == attribute {
                    out.recursive_clear |= libc::MOUNT_ATTR__ATIME;
                }
            } else {
                out.recursive_clear |= attribute;
            }
            continue;
        }
        let (set, clear): (MsFlags, MsFlags) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                out.propagation.push(propagation(option).unwrap_or(MsFlags::MS_PRIVATE));
                continue;
            }
            // runc's own option for tmpfs; berth does not copy up.
            "tmpcopyup" => continue,
            _ => {
                out.data.push(option.clone());
                continue;
            }
        };
        out.flags.insert(set);
        out.cleared.remove(set);
        out.flags.remove(clear);
        out.cleared.insert(clear);
    }
    out
}

/// The options that set `flags`, as a mount option list names them
/// (`ro,nodev,relatime`), for messages.
pub fn names(flags: MsFlags) -> String {
    let table = [
        (MsFlags::MS_RDONLY, "ro"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
        (MsFlags::MS_SYNCHRONOUS, "sync"),
        (MsFlags::MS_DIRSYNC, "dirsync"),
        (MsFlags::MS_MANDLOCK, "mand"),
        (MsFlags::MS_NOATIME, "noatime"),
        (MsFlags::MS_NODIRATIME, "nodiratime"),
        (MsFlags::MS_RELATIME, "relatime"),
        (MsFlags::MS_STRICTATIME, "strictatime"),
        (MsFlags::MS_LAZYTIME, "lazytime"),
    ];
    let named: Vec<&str> = table
        .iter()
        .filter(|(flag, _)| flags.contains(*flag))
        .map(|(_, name)| *name)
        .collect();
    named.join(",")
}

/// The propagation flags a name stands for (`rslave` → MS_SLAVE|MS_REC).
pub fn propagation(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_named_as_options() {
        assert_eq!(
            names(MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_RELATIME),
            "ro,nodev,relatime"
        );
        assert_eq!(names(MsFlags::MS_BIND), "");
        let cleared = opts(&["ro", "rw", "dev", "nodev", "atime"]).cleared;
        assert_eq!(
            cleared,
            MsFlags::MS_RDONLY | MsFlags::MS_NOATIME,
            "the last word on each flag counts"
        );
    }

    fn opts(list: &[&str]) -> MountOptions {
        parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn recursive_options_become_mount_attributes() {
        let o = opts(&["rbind", "rro", "rnosuid", "rexec", "rnoatime"]);
        assert!(o.flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC));
        assert_eq!(
            o.recursive_set,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOATIME
        );
        assert_eq!(o.recursive_clear, libc::MOUNT_ATTR_NOEXEC | libc::MOUNT_ATTR__ATIME);
        assert!(o.data.is_empty(), "{:?}", o.data);
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data().as_deref(), Some("mode=755,size=65536k"));
        let o = opts(&["rbind", "ro", "rslave"]);
        assert!(o.is_bind());
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        let o = opts(&["ro", "rw"]);
        assert!(o.flags.is_empty(), "a later option overrides an earlier one");
        assert_eq!(opts(&[]).data(), None);
        let o = opts(&["rbind", "index=off", "rprivate"]);
        assert_eq!(o.data, ["index=off"]);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
    }
}
