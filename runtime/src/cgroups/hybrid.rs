//! Hybrid hosts: v1 hierarchies for most controllers and a cgroup2 that
//! owns the rest. The container gets a directory on both; each limit goes
//! to the side that has its controller; the v2 side's `cgroup.kill`
//! kills every process at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

use super::layout::Layout;
use super::stats::Stats;
use super::v1::V1;
use super::v2::V2;
use super::{Backend, CgroupEntry, CgroupManager, CgroupMount, OomSource, apply_resources};
use crate::error::Result;

/// A container's cgroup on a hybrid host.
#[derive(Debug)]
pub struct Hybrid {
    v1: V1,
    v2: V2,
}

impl Hybrid {
    /// The cgroup `path` on both sides.
    pub fn new(layout: &Layout, path: &Path, own: &HashMap<String, PathBuf>) -> Result<Self> {
        Ok(Self {
            v1: V1::new(layout, path, own),
            v2: V2::new(layout, path, own)?,
        })
    }

    fn route(&self, controller: &str) -> Option<&dyn Backend> {
        if controller != "unified" && self.v1.has(controller) {
            return Some(&self.v1);
        }
        // Devices and freezing are the v1 side's when it has them; the v2
        // side takes what only it has (hugetlb here) and unified files.
        match controller {
            "devices" | "freezer" if self.v1.has(controller) => Some(&self.v1),
            _ if self.v2.has(controller) => Some(&self.v2),
            _ => None,
        }
    }
}

impl CgroupManager for Hybrid {
    fn apply(&self, pid: i32) -> Result<()> {
        self.v1.enter(pid)?;
        self.v2.enter(pid)
    }

    fn create(&self) -> Result<CgroupEntry> {
        self.v1.create_dirs()?;
        self.v2.create_dir()?;
        Ok(CgroupEntry {
            v1_tasks: self.v1.tasks_files(),
            v2_dir: Some(self.v2.dir().to_path_buf()),
        })
    }

    fn set(&self, resources: &LinuxResources) -> Result<()> {
        apply_resources(resources, |c| self.route(c))
    }

    fn freeze(&self) -> Result<()> {
        if self.v1.has("freezer") {
            self.v1.freeze()
        } else {
            self.v2.freeze()
        }
    }

    fn thaw(&self) -> Result<()> {
        if self.v1.has("freezer") {
            self.v1.thaw()
        } else {
            self.v2.thaw()
        }
    }

    fn frozen(&self) -> Result<bool> {
        if self.v1.has("freezer") {
            self.v1.frozen()
        } else {
            self.v2.frozen()
        }
    }

    fn pids(&self) -> Result<Vec<i32>> {
        self.v2.pids()
    }

    fn signal_all(&self, signal: Signal) -> Result<()> {
        if signal == Signal::SIGKILL {
            self.v2.signal_all(signal)
        } else {
            self.v1.signal_all(signal)
        }
    }

    fn stats(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        self.v1.fill_stats(&mut stats)?;
        self.v2.fill_stats(&mut stats, false)?;
        Ok(stats)
    }

    fn destroy(&self) -> Result<()> {
        self.v1.destroy()?;
        self.v2.destroy()
    }

    fn oom_source(&self) -> Option<OomSource> {
        self.v1.oom_source().or_else(|| self.v2.oom_source())
    }

    fn mounts(&self) -> Vec<CgroupMount> {
        let mut mounts = self.v1.mounts();
        mounts.extend(self.v2.mounts());
        mounts
    }
}
