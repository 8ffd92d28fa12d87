//! cgroup v1: one directory per mounted hierarchy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::device_transition::DeviceState;
use super::files::{self, read, read_keyed, read_u64_or_zero, write, write_if_present};
use super::layout::{Layout, V1Hierarchy};
use super::stats::{CpuStats, HugetlbStats, MemoryStats, PidsStats, Stats};
use super::{Backend, CgroupEntry, CgroupManager, CgroupMount, OomSource, apply_resources, dir_in, signal_each_frozen};
use crate::error::{Error, Result};

/// USER_HZ: the unit of cpuacct.stat.
const TICKS_PER_SECOND: u64 = 100;

/// A container's cgroup on every v1 hierarchy.
#[derive(Debug)]
pub struct V1 {
    dirs: Vec<(V1Hierarchy, PathBuf)>,
}

impl V1 {
    /// The cgroup `path` on every v1 hierarchy of `layout`.
    pub fn new(layout: &Layout, path: &Path, own: &HashMap<String, PathBuf>) -> Self {
        let dirs = layout
            .v1
            .iter()
            .map(|h| {
                let mine = h
                    .subsystems
                    .iter()
                    .find_map(|s| own.get(s))
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from("/"));
                (h.clone(), dir_in(&h.mount_point, &h.root, &mine, path))
            })
            .collect();
        Self { dirs }
    }

    /// The directory of the hierarchy that has `subsystem`.
    pub fn dir(&self, subsystem: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(h, _)| h.subsystems.iter().any(|s| s == subsystem))
            .map(|(_, d)| d.as_path())
    }

    fn require(&self, subsystem: &str) -> Result<&Path> {
        self.dir(subsystem)
            .ok_or_else(|| Error::other("cgroup v1", format!("no {subsystem} hierarchy is mounted")))
    }

    /// A new cpuset cgroup starts with no cpus or mems, and takes no
    /// processes until given some: copy them down from the nearest parent.
    fn init_cpuset(&self, mount_point: &Path, dir: &Path) -> Result<()> {
        let relative = dir.strip_prefix(mount_point).unwrap_or(Path::new(""));
        let mut current = mount_point.to_path_buf();
        for component in relative.components() {
            let parent = current.clone();
            current.push(component);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if read(&current, file)?.is_empty() {
                    write(&current, file, &read(&parent, file)?)?;
                }
            }
        }
        Ok(())
    }

    fn freezer_state(&self) -> Result<Option<String>> {
        match self.dir("freezer") {
            Some(dir) => read(dir, "freezer.state").map(Some),
            None => Ok(None),
        }
    }

    fn set_freezer(&self, state: &str) -> Result<()> {
        let dir = self.require("freezer")?;
        write(dir, "freezer.state", state)?;
        for _ in 0..1000 {
            if read(dir, "freezer.state")? == state {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
            write(dir, "freezer.state", state)?;
        }
        Err(Error::other("freezing", format!("the cgroup did not become {state}")))
    }

    /// The v1 part of the stats.
    pub(crate) fn fill_stats(&self, stats: &mut Stats) -> Result<()> {
        if let Some(dir) = self.dir("cpuacct") {
            let ticks = |key: &str, map: &HashMap<String, u64>| {
                map.get(key).copied().unwrap_or(0) * (1_000_000_000 / TICKS_PER_SECOND)
            };
            let stat = read_keyed(dir, "cpuacct.stat").unwrap_or_default();
            stats.cpu.usage_total = read_u64_or_zero(dir, "cpuacct.usage");
            stats.cpu.usage_user = ticks("user", &stat);
            stats.cpu.usage_kernel = ticks("system", &stat);
            stats.cpu.per_cpu = read(dir, "cpuacct.usage_percpu")
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
        }
        if let Some(dir) = self.dir("cpu") {
            let throttling = read_keyed(dir, "cpu.stat").unwrap_or_default();
            stats.cpu.periods = throttling.get("nr_periods").copied().unwrap_or(0);
            stats.cpu.throttled_periods = throttling.get("nr_throttled").copied().unwrap_or(0);
            stats.cpu.throttled_time = throttling.get("throttled_time").copied().unwrap_or(0);
        }
        if let Some(dir) = self.dir("memory") {
            stats.memory = MemoryStats {
                usage: read_u64_or_zero(dir, "memory.usage_in_bytes"),
                max_usage: read_u64_or_zero(dir, "memory.max_usage_in_bytes"),
                limit: read_u64_or_zero(dir, "memory.limit_in_bytes"),
                failcnt: read_u64_or_zero(dir, "memory.failcnt"),
                swap_usage: read_u64_or_zero(dir, "memory.memsw.usage_in_bytes"),
                swap_limit: read_u64_or_zero(dir, "memory.memsw.limit_in_bytes"),
                kernel_usage: read_u64_or_zero(dir, "memory.kmem.usage_in_bytes"),
                stat: read_keyed(dir, "memory.stat").unwrap_or_default(),
            };
        }
        if let Some(dir) = self.dir("pids") {
            stats.pids = PidsStats {
                current: read_u64_or_zero(dir, "pids.current"),
                limit: read_u64_or_zero(dir, "pids.max"),
            };
        }
        if let Some(dir) = self.dir("hugetlb") {
            for size in super::stats::hugepage_sizes() {
                stats.hugetlb.push(HugetlbStats {
                    usage: read_u64_or_zero(dir, &format!("hugetlb.{size}.usage_in_bytes")),
                    max_usage: read_u64_or_zero(dir, &format!("hugetlb.{size}.max_usage_in_bytes")),
                    failcnt: read_u64_or_zero(dir, &format!("hugetlb.{size}.failcnt")),
                    page_size: size,
                });
            }
        }
        Ok(())
    }

    /// Creates every directory (a new cpuset gets its parent's cpus and
    /// mems, or no task could join it).
    pub(crate) fn create_dirs(&self) -> Result<()> {
        for (hierarchy, dir) in &self.dirs {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating cgroup", dir, &e))?;
            if hierarchy.subsystems.iter().any(|s| s == "cpuset") {
                self.init_cpuset(&hierarchy.mount_point, dir)?;
            }
        }
        Ok(())
    }

    /// Creates every directory and moves `pid` in.
    pub(crate) fn enter(&self, pid: i32) -> Result<()> {
        self.create_dirs()?;
        for (_, dir) in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// The `tasks` file of every directory.
    pub(crate) fn tasks_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, dir)| dir.join("tasks")).collect()
    }
}

impl Backend for V1 {
    fn has(&self, controller: &str) -> bool {
        match controller {
            "io" | "unified" => false,
            other => self.dir(other).is_some(),
        }
    }

    fn set_memory(&self, memory: &LinuxMemory) -> Result<()> {
        let dir = self.require("memory")?;
        let has_swap_file = dir.join("memory.memsw.limit_in_bytes").exists();
        let set_limit = |limit: i64| write(dir, "memory.limit_in_bytes", &limit.to_string());
        let set_swap = |total: i64| write(dir, "memory.memsw.limit_in_bytes", &total.to_string());
        // Lifting the memory limit lifts memory+swap with it, unless the
        // spec says otherwise: memsw may never be below the memory limit.
        let swap = match (memory.limit(), memory.swap()) {
            (Some(-1), None) if has_swap_file => Some(-1),
            (_, swap) => swap,
        };
        match (memory.limit(), swap) {
            (limit, Some(swap)) if has_swap_file => {
                // memsw (memory + swap) may never be below the memory limit:
                // raise it first when growing, lower it last when shrinking.
                let current = files::read_u64(dir, "memory.memsw.limit_in_bytes").unwrap_or(u64::MAX);
                let grows = swap == -1 || limit.is_some_and(|l| l < 0 || l as u64 > current);
                if grows {
                    set_swap(swap)?;
                    if let Some(limit) = limit {
                        set_limit(limit)?;
                    }
                } else {
                    if let Some(limit) = limit {
                        set_limit(limit)?;
                    }
                    set_swap(swap)?;
                }
            }
            (limit, Some(swap)) => {
                if swap != -1 && Some(swap) != limit {
                    return Err(Error::invalid(
                        "linux.resources.memory.swap",
                        "swap accounting is not enabled on this host",
                    ));
                }
                if let Some(limit) = limit {
                    set_limit(limit)?;
                }
            }
            (Some(limit), None) => set_limit(limit)?,
            (None, None) => {}
        }
        if let Some(reservation) = memory.reservation() {
            write(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
        }
        if let Some(swappiness) = memory.swappiness() {
            if swappiness > 100 {
                return Err(Error::invalid(
                    "linux.resources.memory.swappiness",
                    format!("{swappiness} is not between 0 and 100"),
                ));
            }
            write(dir, "memory.swappiness", &swappiness.to_string())?;
        }
        if memory.disable_oom_killer() == Some(true) {
            write(dir, "memory.oom_control", "1")?;
        }
        Ok(())
    }

    fn set_cpu(&self, cpu: &LinuxCpu) -> Result<()> {
        let dir = self.require("cpu")?;
        if let Some(shares) = cpu.shares() {
            write(dir, "cpu.shares", &shares.to_string())?;
        }
        let set_period = |period: u64| write(dir, "cpu.cfs_period_us", &period.to_string());
        let set_quota = |quota: i64| write(dir, "cpu.cfs_quota_us", &quota.to_string());
        match (cpu.period(), cpu.quota()) {
            (Some(period), Some(quota)) => {
                // The kernel checks quota/period against the parent's limit
                // at each write: a shorter period under the old quota may
                // exceed it, so then the quota goes first.
                match set_period(period) {
                    Err(e) if e.errno == Some(libc::EINVAL) => {
                        set_quota(quota)?;
                        set_period(period)?;
                    }
                    other => {
                        other?;
                        set_quota(quota)?;
                    }
                }
            }
            (Some(period), None) => set_period(period)?,
            (None, Some(quota)) => set_quota(quota)?,
            (None, None) => {}
        }
        if let Some(period) = cpu.realtime_period() {
            write(dir, "cpu.rt_period_us", &period.to_string())?;
        }
        if let Some(runtime) = cpu.realtime_runtime() {
            write(dir, "cpu.rt_runtime_us", &runtime.to_string())?;
        }
        Ok(())
    }

    fn set_cpuset(&self, cpus: Option<&str>, mems: Option<&str>) -> Result<()> {
        let dir = self.require("cpuset")?;
        if let Some(cpus) = cpus {
            write(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = mems {
            write(dir, "cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn set_pids(&self, limit: i64) -> Result<()> {
        let value = if limit > 0 {
            limit.to_string()
        } else {
            "max".to_string()
        };
        write(self.require("pids")?, "pids.max", &value)
    }

    fn set_blkio(&self, blkio: &LinuxBlockIo) -> Result<()> {
        let dir = self.require("blkio")?;
        if let Some(weight) = blkio.weight()
            && !write_if_present(dir, "blkio.weight", &weight.to_string())?
        {
            write(dir, "blkio.bfq.weight", &weight.to_string())?;
        }
        if let Some(weight) = blkio.leaf_weight() {
            write_if_present(dir, "blkio.leaf_weight", &weight.to_string())?;
        }
        for device in blkio.weight_device().iter().flatten() {
            if let Some(weight) = device.weight() {
                write(
                    dir,
                    "blkio.weight_device",
                    &format!("{}:{} {weight}", device.major(), device.minor()),
                )?;
            }
        }
        let throttles = [
            ("blkio.throttle.read_bps_device", blkio.throttle_read_bps_device()),
            ("blkio.throttle.write_bps_device", blkio.throttle_write_bps_device()),
            ("blkio.throttle.read_iops_device", blkio.throttle_read_iops_device()),
            ("blkio.throttle.write_iops_device", blkio.throttle_write_iops_device()),
        ];
        for (file, devices) in throttles {
            for device in devices.iter().flatten() {
                write(
                    dir,
                    file,
                    &format!("{}:{} {}", device.major(), device.minor(), device.rate()),
                )?;
            }
        }
        Ok(())
    }

    fn set_hugetlb(&self, limits: &[LinuxHugepageLimit]) -> Result<()> {
        let dir = self.require("hugetlb")?;
        for limit in limits {
            write(
                dir,
                &format!("hugetlb.{}.limit_in_bytes", limit.page_size()),
                &limit.limit().to_string(),
            )?;
        }
        Ok(())
    }

    fn set_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        let dir = self.require("devices")?;
        let list = read(dir, "devices.list")?;
        let current = DeviceState::from_list(&list);
        for (file, line) in current.transition_to(&current.with_rules(rules)) {
            write(dir, file, &line)?;
            // Where a test widens the moment a change of default denies
            // every device.
            if line.starts_with("a ") {
                berth_core::failpoint::check("runtime.devices.default-changed")
                    .map_err(|e| Error::other("setting the device rules", e.to_string()))?;
            }
        }
        Ok(())
    }

    fn set_unified(&self, _values: &HashMap<String, String>) -> Result<()> {
        Err(Error::invalid(
            "linux.resources.unified",
            "unified resources need cgroup v2",
        ))
    }
}

impl CgroupManager for V1 {
    fn apply(&self, pid: i32) -> Result<()> {
        self.enter(pid)
    }

    fn create(&self) -> Result<CgroupEntry> {
        self.create_dirs()?;
        Ok(CgroupEntry {
            v1_tasks: self.tasks_files(),
            v2_dir: None,
        })
    }

    fn set(&self, resources: &LinuxResources) -> Result<()> {
        apply_resources(resources, |c| self.has(c).then_some(self as &dyn Backend))
    }

    fn freeze(&self) -> Result<()> {
        self.set_freezer("FROZEN")
    }

    fn thaw(&self) -> Result<()> {
        self.set_freezer("THAWED")
    }

    fn frozen(&self) -> Result<bool> {
        Ok(self.freezer_state()?.is_some_and(|s| s == "FROZEN"))
    }

    fn pids(&self) -> Result<Vec<i32>> {
        match self.dirs.first() {
            Some((_, dir)) => files::procs(dir),
            None => Ok(Vec::new()),
        }
    }

    fn signal_all(&self, signal: Signal) -> Result<()> {
        signal_each_frozen(self, self.dir("freezer").is_some(), signal)
    }

    fn stats(&self) -> Result<Stats> {
        let mut stats = Stats {
            cpu: CpuStats::default(),
            ..Stats::default()
        };
        self.fill_stats(&mut stats)?;
        Ok(stats)
    }

    fn destroy(&self) -> Result<()> {
        for (_, dir) in &self.dirs {
            files::remove_dir(dir)?;
        }
        Ok(())
    }

    fn oom_source(&self) -> Option<OomSource> {
        self.dir("memory").map(|d| OomSource::V1(d.to_path_buf()))
    }

    fn mounts(&self) -> Vec<CgroupMount> {
        self.dirs
            .iter()
            .map(|(h, dir)| CgroupMount {
                name: h
                    .mount_point
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                host_dir: dir.clone(),
                fstype: "cgroup".into(),
                data: Some(h.subsystems.join(",")),
            })
            .collect()
    }
}
