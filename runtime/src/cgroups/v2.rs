//! cgroup v2: one directory in the unified hierarchy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::files::{self, read, read_keyed, read_u64_or_zero, write, write_if_present};
use super::layout::Layout;
use super::stats::{CpuStats, HugetlbStats, MemoryStats, PidsStats, Stats};
use super::{
    Backend, CgroupEntry, CgroupManager, CgroupMount, OomSource, apply_resources, bpf, dir_in, signal_each_frozen,
};
use crate::error::{Error, Result};

/// A container's cgroup in the unified hierarchy.
#[derive(Debug)]
pub struct V2 {
    root: PathBuf,
    dir: PathBuf,
    /// What the container's /sys/fs/cgroup calls this hierarchy (empty on
    /// a unified host, `unified` beside v1 hierarchies).
    mount_name: String,
}

impl V2 {
    /// The cgroup `path` under the unified hierarchy of `layout`.
    pub fn new(layout: &Layout, path: &Path, own: &HashMap<String, PathBuf>) -> Result<Self> {
        let root = layout
            .unified
            .clone()
            .ok_or_else(|| Error::other("cgroup v2", "no cgroup2 hierarchy is mounted"))?;
        let mine = own.get("").cloned().unwrap_or_else(|| PathBuf::from("/"));
        let mount_name = match layout.mode {
            super::Mode::Unified => String::new(),
            _ => root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "unified".into()),
        };
        Ok(Self {
            dir: dir_in(&root, Path::new("/"), &mine, path),
            root,
            mount_name,
        })
    }

    /// The container's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn available(&self) -> Vec<String> {
        read(&self.root, "cgroup.controllers")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Creates the directory and moves `pid` in.
    pub(crate) fn enter(&self, pid: i32) -> Result<()> {
        self.create_dir()?;
        write(&self.dir, "cgroup.procs", &pid.to_string())
    }

    /// Creates the directory, enabling every available controller on the
    /// way down.
    pub(crate) fn create_dir(&self) -> Result<()> {
        let relative = self.dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let mut current = self.root.clone();
        for component in relative.components() {
            let controllers = read(&current, "cgroup.controllers").unwrap_or_default();
            let enabled = read(&current, "cgroup.subtree_control").unwrap_or_default();
            for controller in controllers.split_whitespace() {
                if !enabled.split_whitespace().any(|c| c == controller) {
                    // A controller the kernel refuses here (a threaded
                    // subtree, say) is reported when a limit needs it.
                    let _ = write(&current, "cgroup.subtree_control", &format!("+{controller}"));
                }
            }
            current.push(component);
            match std::fs::create_dir(&current) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("creating cgroup", &current, &e)),
            }
        }
        Ok(())
    }

    fn wait_frozen(&self, want: bool) -> Result<()> {
        let value = if want { "1" } else { "0" };
        for _ in 0..1000 {
            let events = read_keyed(&self.dir, "cgroup.events")?;
            if events.get("frozen").map(|v| v.to_string()).as_deref() == Some(value) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(Error::other(
            "freezing",
            format!("cgroup.events never showed frozen {value}"),
        ))
    }

    /// The v2 part of the stats (everything, on a unified host; hugetlb
    /// beside v1).
    pub(crate) fn fill_stats(&self, stats: &mut Stats, everything: bool) -> Result<()> {
        if everything {
            let cpu = read_keyed(&self.dir, "cpu.stat").unwrap_or_default();
            let get = |k: &str| cpu.get(k).copied().unwrap_or(0);
            stats.cpu = CpuStats {
                usage_total: get("usage_usec") * 1000,
                usage_user: get("user_usec") * 1000,
                usage_kernel: get("system_usec") * 1000,
                per_cpu: Vec::new(),
                periods: get("nr_periods"),
                throttled_periods: get("nr_throttled"),
                throttled_time: get("throttled_usec") * 1000,
            };
            let events = read_keyed(&self.dir, "memory.events").unwrap_or_default();
            stats.memory = MemoryStats {
                usage: read_u64_or_zero(&self.dir, "memory.current"),
                max_usage: read_u64_or_zero(&self.dir, "memory.peak"),
                limit: read_u64_or_zero(&self.dir, "memory.max"),
                failcnt: events.get("max").copied().unwrap_or(0),
                swap_usage: read_u64_or_zero(&self.dir, "memory.swap.current"),
                swap_limit: read_u64_or_zero(&self.dir, "memory.swap.max"),
                kernel_usage: 0,
                stat: read_keyed(&self.dir, "memory.stat").unwrap_or_default(),
            };
            stats.pids = PidsStats {
                current: read_u64_or_zero(&self.dir, "pids.current"),
                limit: read_u64_or_zero(&self.dir, "pids.max"),
            };
        }
        if self.available().iter().any(|c| c == "hugetlb") {
            for size in super::stats::hugepage_sizes() {
                let events = read_keyed(&self.dir, &format!("hugetlb.{size}.events")).unwrap_or_default();
                stats.hugetlb.push(HugetlbStats {
                    usage: read_u64_or_zero(&self.dir, &format!("hugetlb.{size}.current")),
                    max_usage: 0,
                    failcnt: events.get("max").copied().unwrap_or(0),
                    page_size: size,
                });
            }
        }
        Ok(())
    }
}

/// cpu.weight from cgroup v1 shares (2..262144 → 1..10000).
pub fn weight_from_shares(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// io.weight from blkio weight (10..1000 → 1..10000).
pub fn io_weight_from_blkio(weight: u16) -> u64 {
    1 + (u64::from(weight).clamp(10, 1000) - 10) * 9999 / 990
}

impl Backend for V2 {
    fn has(&self, controller: &str) -> bool {
        match controller {
            "unified" | "devices" | "freezer" => true,
            "blkio" => false,
            "cpuacct" => self.available().iter().any(|c| c == "cpu"),
            other => self.available().iter().any(|c| c == other),
        }
    }

    fn set_memory(&self, memory: &LinuxMemory) -> Result<()> {
        let limit = memory.limit();
        if let Some(limit) = limit {
            let value = if limit < 0 {
                "max".to_string()
            } else {
                limit.to_string()
            };
            write(&self.dir, "memory.max", &value)?;
        }
        if let Some(swap) = memory.swap() {
            // The spec's swap is memory + swap; v2 limits swap alone.
            let value = match (swap, limit) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l >= 0 => s.saturating_sub(l).max(0).to_string(),
                (_, _) => {
                    return Err(Error::invalid(
                        "linux.resources.memory.swap",
                        "a swap limit needs a memory limit",
                    ));
                }
            };
            write(&self.dir, "memory.swap.max", &value)?;
        }
        if let Some(reservation) = memory.reservation() {
            let value = if reservation < 0 {
                "max".to_string()
            } else {
                reservation.to_string()
            };
            write(&self.dir, "memory.low", &value)?;
        }
        Ok(())
    }

    fn set_cpu(&self, cpu: &LinuxCpu) -> Result<()> {
        if let Some(shares) = cpu.shares()
            && shares > 0
        {
            write(&self.dir, "cpu.weight", &weight_from_shares(shares).to_string())?;
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let period = cpu.period().unwrap_or(100_000);
            let quota = match cpu.quota() {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            write(&self.dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(idle) = cpu.idle() {
            write(&self.dir, "cpu.idle", &idle.to_string())?;
        }
        Ok(())
    }

    fn set_cpuset(&self, cpus: Option<&str>, mems: Option<&str>) -> Result<()> {
        if let Some(cpus) = cpus {
            write(&self.dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = mems {
            write(&self.dir, "cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn set_pids(&self, limit: i64) -> Result<()> {
        let value = if limit > 0 {
            limit.to_string()
        } else {
            "max".to_string()
        };
        write(&self.dir, "pids.max", &value)
    }

    fn set_blkio(&self, blkio: &LinuxBlockIo) -> Result<()> {
        if let Some(weight) = blkio.weight()
            && !write_if_present(&self.dir, "io.bfq.weight", &weight.to_string())?
        {
            write(
                &self.dir,
                "io.weight",
                &format!("default {}", io_weight_from_blkio(weight)),
            )?;
        }
        let throttles = [
            ("rbps", blkio.throttle_read_bps_device()),
            ("wbps", blkio.throttle_write_bps_device()),
            ("riops", blkio.throttle_read_iops_device()),
            ("wiops", blkio.throttle_write_iops_device()),
        ];
        for (key, devices) in throttles {
            for device in devices.iter().flatten() {
                write(
                    &self.dir,
                    "io.max",
                    &format!("{}:{} {key}={}", device.major(), device.minor(), device.rate()),
                )?;
            }
        }
        Ok(())
    }

    fn set_hugetlb(&self, limits: &[LinuxHugepageLimit]) -> Result<()> {
        for limit in limits {
            write(
                &self.dir,
                &format!("hugetlb.{}.max", limit.page_size()),
                &limit.limit().to_string(),
            )?;
        }
        Ok(())
    }

    fn set_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        bpf::apply(&self.dir, rules)
    }

    fn set_unified(&self, values: &HashMap<String, String>) -> Result<()> {
        for (file, value) in values {
            if file.contains('/') || file.starts_with('.') || file.is_empty() {
                return Err(Error::invalid(
                    format!("linux.resources.unified.{file}"),
                    "not a cgroup file name",
                ));
            }
            // `memory.min` belongs to the memory controller: refused, not
            // failed on, when cgroup2 here does not have it (a hybrid host
            // keeps memory on v1), as runc refuses it.
            let controller = file.split('.').next().unwrap_or_default();
            if controller != "cgroup" && !self.has(controller) {
                return Err(Error::invalid(
                    format!("linux.resources.unified.{file}"),
                    format!("the {controller} controller is not available on this host's cgroup2"),
                ));
            }
            write(&self.dir, file, value)?;
        }
        Ok(())
    }
}

impl CgroupManager for V2 {
    fn apply(&self, pid: i32) -> Result<()> {
        self.enter(pid)
    }

    fn create(&self) -> Result<CgroupEntry> {
        self.create_dir()?;
        Ok(CgroupEntry {
            v1_tasks: Vec::new(),
            v2_dir: Some(self.dir.clone()),
        })
    }

    fn set(&self, resources: &LinuxResources) -> Result<()> {
        apply_resources(resources, |c| self.has(c).then_some(self as &dyn Backend))
    }

    fn freeze(&self) -> Result<()> {
        write(&self.dir, "cgroup.freeze", "1")?;
        self.wait_frozen(true)
    }

    fn thaw(&self) -> Result<()> {
        write(&self.dir, "cgroup.freeze", "0")?;
        self.wait_frozen(false)
    }

    fn frozen(&self) -> Result<bool> {
        Ok(read(&self.dir, "cgroup.freeze").is_ok_and(|v| v == "1"))
    }

    fn pids(&self) -> Result<Vec<i32>> {
        files::procs(&self.dir)
    }

    fn signal_all(&self, signal: Signal) -> Result<()> {
        if signal == Signal::SIGKILL && write_if_present(&self.dir, "cgroup.kill", "1")? {
            return Ok(());
        }
        signal_each_frozen(self, true, signal)
    }

    fn stats(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        self.fill_stats(&mut stats, true)?;
        Ok(stats)
    }

    fn destroy(&self) -> Result<()> {
        files::remove_dir(&self.dir)
    }

    fn oom_source(&self) -> Option<OomSource> {
        self.has("memory").then(|| OomSource::V2(self.dir.clone()))
    }

    fn mounts(&self) -> Vec<CgroupMount> {
        vec![CgroupMount {
            name: self.mount_name.clone(),
            host_dir: self.dir.clone(),
            fstype: "cgroup2".into(),
            data: None,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_the_kernel_ranges() {
        assert_eq!(weight_from_shares(2), 1);
        assert_eq!(weight_from_shares(1024), 39);
        assert_eq!(weight_from_shares(262_144), 10_000);
        assert_eq!(io_weight_from_blkio(10), 1);
        assert_eq!(io_weight_from_blkio(1000), 10_000);
    }
}
