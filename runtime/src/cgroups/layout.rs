//! Where the host's cgroup hierarchies are, read from mountinfo.
//!
//! Three shapes exist: legacy (only v1 hierarchies), unified (one cgroup2
//! at /sys/fs/cgroup) and hybrid (v1 hierarchies, plus a cgroup2 that owns
//! the controllers no v1 hierarchy has, usually at /sys/fs/cgroup/unified).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Which shape the host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 hierarchies and a cgroup2 beside them.
    Hybrid,
    /// One cgroup2 hierarchy.
    Unified,
}

/// One mounted v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The path inside the hierarchy that is mounted there (usually `/`).
    pub root: PathBuf,
    /// Its controllers (`cpu`, `cpuacct`, …); named hierarchies as `name=systemd`.
    pub subsystems: Vec<String>,
}

/// The host's cgroup hierarchies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The shape.
    pub mode: Mode,
    /// The v1 hierarchies.
    pub v1: Vec<V1Hierarchy>,
    /// The cgroup2 mount point, if any.
    pub unified: Option<PathBuf>,
}

impl Layout {
    /// Reads this process's mountinfo.
    pub fn detect() -> Result<Self> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, &e))?;
        Ok(Self::parse(&text))
    }

    /// Reads a mountinfo text.
    pub fn parse(mountinfo: &str) -> Self {
        let mut v1 = Vec::new();
        let mut unified = None;
        for entry in crate::mountinfo::entries(mountinfo) {
            match entry.fstype {
                // The first cgroup2 mount wins (a container may see more).
                "cgroup2" if unified.is_none() => unified = Some(PathBuf::from(entry.mount_point)),
                "cgroup2" => {}
                "cgroup" => {
                    let subsystems: Vec<String> = entry
                        .super_options
                        .split(',')
                        .filter(|o| is_subsystem(o) && (!o.contains('=') || o.starts_with("name=")))
                        .map(str::to_string)
                        .collect();
                    if !subsystems.is_empty() {
                        v1.push(V1Hierarchy {
                            mount_point: PathBuf::from(entry.mount_point),
                            root: PathBuf::from(entry.root),
                            subsystems,
                        });
                    }
                }
                _ => {}
            }
        }
        let mode = match (&unified, v1.is_empty()) {
            (Some(_), true) => Mode::Unified,
            (Some(_), false) => Mode::Hybrid,
            (None, _) => Mode::Legacy,
        };
        Self { mode, v1, unified }
    }

    /// The v1 hierarchy that has `subsystem`, if any.
    pub fn v1_for(&self, subsystem: &str) -> Option<&V1Hierarchy> {
        self.v1.iter().find(|h| h.subsystems.iter().any(|s| s == subsystem))
    }
}

/// Mount options of a v1 cgroup that are not controllers.
fn is_subsystem(option: &str) -> bool {
    !matches!(
        option,
        "rw" | "ro"
            | "relatime"
            | "noatime"
            | "nosuid"
            | "nodev"
            | "noexec"
            | "xattr"
            | "clone_children"
            | "noprefix"
            | "cpuset_v2_mode"
            | "all"
            | "none"
    ) && !option.starts_with("release_agent=")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn reads_a_hybrid_host() {
        let layout = Layout::parse(HYBRID);
        assert_eq!(layout.mode, Mode::Hybrid);
        assert_eq!(layout.unified.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(layout.v1.len(), 4);
        assert_eq!(
            layout.v1_for("cpuacct").unwrap().mount_point,
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(layout.v1_for("name=systemd").unwrap().subsystems, ["name=systemd"]);
        assert!(layout.v1_for("hugetlb").is_none());
    }

    #[test]
    fn reads_unified_and_legacy_hosts() {
        let unified = Layout::parse("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        assert_eq!(unified.mode, Mode::Unified);
        let legacy = Layout::parse("35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
        assert_eq!(legacy.mode, Mode::Legacy);
    }
}
