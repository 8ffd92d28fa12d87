//! Usage numbers of a cgroup, the same whichever hierarchy they came from
//! (the numbers `ctr task metrics` shows).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// CPU time, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStats {
    /// All CPU time.
    pub usage_total: u64,
    /// In user mode.
    pub usage_user: u64,
    /// In kernel mode.
    pub usage_kernel: u64,
    /// Per CPU (v1 only).
    pub per_cpu: Vec<u64>,
    /// Enforcement periods.
    pub periods: u64,
    /// Periods in which the group was throttled.
    pub throttled_periods: u64,
    /// Time throttled.
    pub throttled_time: u64,
}

/// Memory, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// In use now.
    pub usage: u64,
    /// The most ever used (v1).
    pub max_usage: u64,
    /// The limit (u64::MAX for none).
    pub limit: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
    /// Memory + swap in use (v1) or swap in use (v2).
    pub swap_usage: u64,
    /// Its limit.
    pub swap_limit: u64,
    /// Kernel memory in use.
    pub kernel_usage: u64,
    /// memory.stat.
    pub stat: HashMap<String, u64>,
}

/// Process counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidsStats {
    /// Processes now.
    pub current: u64,
    /// The limit (u64::MAX for none).
    pub limit: u64,
}

/// One huge page size's use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugetlbStats {
    /// The page size, as cgroup files name it (`2MB`).
    pub page_size: String,
    /// Bytes in use.
    pub usage: u64,
    /// The most used (v1).
    pub max_usage: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// Everything a cgroup reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
    /// Processes.
    pub pids: PidsStats,
    /// Huge pages, per size.
    pub hugetlb: Vec<HugetlbStats>,
}

/// The host's huge page sizes as cgroup files name them (`2MB`, `1GB`).
pub fn hugepage_sizes() -> Vec<String> {
    let mut sizes: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let kb: u64 = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
                    Some(size_name(kb))
                })
                .collect()
        })
        .unwrap_or_default();
    sizes.sort();
    sizes
}

/// `2048` kB → `2MB`, as the kernel names hugetlb files.
fn size_name(kb: u64) -> String {
    if kb >= 1 << 20 && kb.is_multiple_of(1 << 20) {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb.is_multiple_of(1 << 10) {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_named_like_the_kernel() {
        assert_eq!(size_name(2048), "2MB");
        assert_eq!(size_name(1 << 20), "1GB");
        assert_eq!(size_name(64), "64KB");
    }
}
