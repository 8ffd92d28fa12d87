//! Control groups: one [`CgroupManager`] trait, three backends.
//!
//! [`v1::V1`] drives v1 hierarchies (one directory per hierarchy),
//! [`v2::V2`] one cgroup2 directory, and [`hybrid::Hybrid`] both at once:
//! each controller is set where the host has it (on this kind of host the
//! v1 side has memory, cpu, pids and the rest, cgroup2 has hugetlb), and
//! the v2 core features (`cgroup.kill`) are used where they exist.

pub mod bpf;
pub mod device_transition;
pub mod devices;
pub mod files;
pub mod hybrid;
pub mod join;
pub mod layout;
pub mod stats;
pub mod v1;
pub mod v2;

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use crate::error::{Error, Result};
pub use layout::{Layout, Mode};
pub use stats::Stats;

/// A cgroup filesystem the container's `/sys/fs/cgroup` shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupMount {
    /// Directory name under /sys/fs/cgroup (`memory`, `cpu,cpuacct`,
    /// `systemd`, `unified`); empty for a unified host's cgroup2 at the top.
    pub name: String,
    /// The container's cgroup directory on the host.
    pub host_dir: PathBuf,
    /// `cgroup` or `cgroup2`.
    pub fstype: String,
    /// Mount data for a fresh mount in a cgroup namespace (`cpu,cpuacct`).
    pub data: Option<String>,
}

/// How a process puts itself into a created cgroup without the cost of
/// moving a whole process: a single-threaded process writes `0` to each
/// v1 `tasks` file (moving only the calling thread skips the global lock
/// whose write side waits for an RCU grace period, several milliseconds),
/// then forks its child straight into the v2 directory with
/// `CLONE_INTO_CGROUP`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupEntry {
    /// The `tasks` file of each v1 directory.
    pub v1_tasks: Vec<PathBuf>,
    /// The cgroup2 directory, if any.
    pub v2_dir: Option<PathBuf>,
}

/// One container's cgroup, on whatever hierarchies the host has.
pub trait CgroupManager: std::fmt::Debug {
    /// Creates the cgroup and moves `pid` into it.
    fn apply(&self, pid: i32) -> Result<()>;
    /// Creates the cgroup, empty; says how a process enters it itself.
    fn create(&self) -> Result<CgroupEntry>;
    /// Sets resource limits.
    fn set(&self, resources: &LinuxResources) -> Result<()>;
    /// Freezes every process.
    fn freeze(&self) -> Result<()>;
    /// Thaws every process.
    fn thaw(&self) -> Result<()>;
    /// Whether the cgroup is frozen.
    fn frozen(&self) -> Result<bool>;
    /// The processes in it.
    fn pids(&self) -> Result<Vec<i32>>;
    /// Sends `signal` to every process in it.
    fn signal_all(&self, signal: Signal) -> Result<()>;
    /// Usage numbers.
    fn stats(&self) -> Result<Stats>;
    /// Removes the cgroup (its processes must be gone).
    fn destroy(&self) -> Result<()>;
    /// What the container's /sys/fs/cgroup is made of.
    fn mounts(&self) -> Vec<CgroupMount>;
    /// Where the kernel reports the cgroup's out-of-memory kills.
    fn oom_source(&self) -> Option<OomSource>;
}

/// Where a cgroup's OOM kills are reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OomSource {
    /// A v1 memory directory: `memory.oom_control` through
    /// `cgroup.event_control` and an eventfd.
    V1(PathBuf),
    /// A cgroup2 directory: the `oom_kill` count in `memory.events`.
    V2(PathBuf),
}

/// How a backend sets each kind of resource.
pub(crate) trait Backend {
    /// Whether this backend has the controller.
    fn has(&self, controller: &str) -> bool;
    fn set_memory(&self, memory: &LinuxMemory) -> Result<()>;
    fn set_cpu(&self, cpu: &LinuxCpu) -> Result<()>;
    fn set_cpuset(&self, cpus: Option<&str>, mems: Option<&str>) -> Result<()>;
    fn set_pids(&self, limit: i64) -> Result<()>;
    fn set_blkio(&self, blkio: &LinuxBlockIo) -> Result<()>;
    fn set_hugetlb(&self, limits: &[LinuxHugepageLimit]) -> Result<()>;
    fn set_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()>;
    fn set_unified(&self, values: &std::collections::HashMap<String, String>) -> Result<()>;
}

/// Applies `resources`, each kind through the backend `route` picks for
/// its controller; a limit on a controller the host lacks is an error
/// naming the field.
pub(crate) fn apply_resources<'a>(
    resources: &LinuxResources,
    route: impl Fn(&str) -> Option<&'a dyn Backend>,
) -> Result<()> {
    let backend = |controller: &str, field: &str| {
        route(controller).ok_or_else(|| {
            Error::invalid(
                format!("linux.resources.{field}"),
                format!("the {controller} controller is not available on this host"),
            )
        })
    };
    if let Some(devices) = resources.devices()
        && let Some(b) = route("devices")
    {
        b.set_devices(devices)?;
    }
    if let Some(memory) = resources.memory()
        && memory_is_set(memory)
    {
        backend("memory", "memory")?.set_memory(memory)?;
    }
    if let Some(cpu) = resources.cpu() {
        if cpu.shares().is_some()
            || cpu.quota().is_some()
            || cpu.period().is_some()
            || cpu.realtime_runtime().is_some()
            || cpu.realtime_period().is_some()
            || cpu.idle().is_some()
        {
            backend("cpu", "cpu")?.set_cpu(cpu)?;
        }
        if cpu.cpus().is_some() || cpu.mems().is_some() {
            backend("cpuset", "cpu.cpus")?.set_cpuset(cpu.cpus().as_deref(), cpu.mems().as_deref())?;
        }
    }
    if let Some(pids) = resources.pids() {
        backend("pids", "pids")?.set_pids(pids.limit())?;
    }
    if let Some(blkio) = resources.block_io() {
        let controller = if route("blkio").is_some() { "blkio" } else { "io" };
        backend(controller, "blockIO")?.set_blkio(blkio)?;
    }
    if let Some(limits) = resources.hugepage_limits()
        && !limits.is_empty()
    {
        backend("hugetlb", "hugepageLimits")?.set_hugetlb(limits)?;
    }
    if let Some(unified) = resources.unified()
        && !unified.is_empty()
    {
        backend("unified", "unified")?.set_unified(unified)?;
    }
    Ok(())
}

fn memory_is_set(m: &LinuxMemory) -> bool {
    m.limit().is_some()
        || m.reservation().is_some()
        || m.swap().is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer().is_some()
}

/// The directory of cgroup `path` in a hierarchy mounted at `mount_point`
/// whose mounted root is `mount_root`; a relative path is placed under
/// `own` (this process's cgroup in that hierarchy), as runc does.
pub(crate) fn dir_in(mount_point: &Path, mount_root: &Path, own: &Path, path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        own.join(path)
    };
    let inside = absolute.strip_prefix(mount_root).unwrap_or(&absolute);
    let relative = inside.strip_prefix("/").unwrap_or(inside);
    mount_point.join(relative)
}

/// This process's cgroup in each hierarchy, from /proc/self/cgroup: v1
/// entries by controller, the v2 entry under "".
pub(crate) fn own_cgroups() -> std::collections::HashMap<String, PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        if controllers.is_empty() {
            out.insert(String::new(), PathBuf::from(path));
        } else {
            for controller in controllers.split(',') {
                out.insert(controller.to_string(), PathBuf::from(path));
            }
        }
    }
    out
}

/// Sends `signal` to every process of `cgroup`, which is frozen meanwhile
/// when it can be (and is not already), so no process forks a new one
/// between the listing and the signals.
pub(crate) fn signal_each_frozen(cgroup: &dyn CgroupManager, can_freeze: bool, signal: Signal) -> Result<()> {
    let freeze = can_freeze && !cgroup.frozen()?;
    if freeze {
        cgroup.freeze()?;
    }
    for pid in cgroup.pids()? {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
    if freeze {
        cgroup.thaw()?;
    }
    Ok(())
}

/// The cgroup path a container gets: the spec's, a systemd
/// `slice:prefix:name` turned into its cgroupfs path, or `/<id>`.
pub fn container_path(spec_path: Option<&Path>, id: &str, systemd: bool) -> PathBuf {
    let Some(path) = spec_path.filter(|p| !p.as_os_str().is_empty()) else {
        return PathBuf::from(format!("/{id}"));
    };
    let text = path.display().to_string();
    if systemd {
        let parts: Vec<&str> = text.split(':').collect();
        if let [slice, prefix, name] = parts.as_slice() {
            let slice = if slice.is_empty() { "system.slice" } else { slice };
            let unit = if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            return PathBuf::from("/").join(slice).join(unit);
        }
    }
    path.to_path_buf()
}

/// The manager for the host's layout and a container's cgroup path.
pub fn manager(layout: &Layout, path: &Path) -> Result<Box<dyn CgroupManager>> {
    let own = own_cgroups();
    Ok(match layout.mode {
        Mode::Legacy => Box::new(v1::V1::new(layout, path, &own)),
        Mode::Unified => Box::new(v2::V2::new(layout, path, &own)?),
        Mode::Hybrid => Box::new(hybrid::Hybrid::new(layout, path, &own)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths() {
        assert_eq!(container_path(None, "web", false), Path::new("/web"));
        assert_eq!(
            container_path(Some(Path::new("/default/web")), "web", false),
            Path::new("/default/web")
        );
        assert_eq!(
            container_path(Some(Path::new("system.slice:cri-containerd:abc")), "abc", true),
            Path::new("/system.slice/cri-containerd-abc.scope")
        );
    }

    #[test]
    fn directories_follow_the_mounted_root() {
        let own = Path::new("/user.slice/session-1");
        assert_eq!(
            dir_in(
                Path::new("/sys/fs/cgroup/memory"),
                Path::new("/"),
                own,
                Path::new("/default/web")
            ),
            Path::new("/sys/fs/cgroup/memory/default/web")
        );
        assert_eq!(
            dir_in(
                Path::new("/sys/fs/cgroup/memory"),
                Path::new("/"),
                own,
                Path::new("web")
            ),
            Path::new("/sys/fs/cgroup/memory/user.slice/session-1/web")
        );
        assert_eq!(
            dir_in(Path::new("/sys/fs/cgroup"), Path::new("/ns"), own, Path::new("/ns/web")),
            Path::new("/sys/fs/cgroup/web")
        );
    }
}
