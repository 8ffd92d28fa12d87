//! The runtime's cgroup numbers as containerd's `io.containerd.cgroups.v1.
//! Metrics`, the message `ctr task metrics` prints.

use berth_api::io::containerd::cgroups::v1::{
    CpuStat, CpuUsage, HugetlbStat, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};
use berth_runtime::cgroups::Stats;

/// The v1 metrics of `stats`.
pub fn v1(stats: &Stats) -> Metrics {
    let stat = |key: &str| stats.memory.stat.get(key).copied().unwrap_or(0);
    Metrics {
        hugetlb: stats
            .hugetlb
            .iter()
            .map(|h| HugetlbStat {
                usage: h.usage,
                max: h.max_usage,
                failcnt: h.failcnt,
                pagesize: h.page_size.clone(),
            })
            .collect(),
        pids: Some(PidsStat {
            current: stats.pids.current,
            limit: stats.pids.limit,
        }),
        cpu: Some(CpuStat {
            usage: Some(CpuUsage {
                total: stats.cpu.usage_total,
                kernel: stats.cpu.usage_kernel,
                user: stats.cpu.usage_user,
                per_cpu: stats.cpu.per_cpu.clone(),
            }),
            throttling: Some(Throttle {
                periods: stats.cpu.periods,
                throttled_periods: stats.cpu.throttled_periods,
                throttled_time: stats.cpu.throttled_time,
            }),
        }),
        memory: Some(MemoryStat {
            cache: stat("cache"),
            rss: stat("rss"),
            rss_huge: stat("rss_huge"),
            mapped_file: stat("mapped_file"),
            dirty: stat("dirty"),
            writeback: stat("writeback"),
            pg_pg_in: stat("pgpgin"),
            pg_pg_out: stat("pgpgout"),
            pg_fault: stat("pgfault"),
            pg_maj_fault: stat("pgmajfault"),
            inactive_anon: stat("inactive_anon"),
            active_anon: stat("active_anon"),
            inactive_file: stat("inactive_file"),
            active_file: stat("active_file"),
            unevictable: stat("unevictable"),
            hierarchical_memory_limit: stat("hierarchical_memory_limit"),
            hierarchical_swap_limit: stat("hierarchical_memsw_limit"),
            total_cache: stat("total_cache"),
            total_rss: stat("total_rss"),
            total_rss_huge: stat("total_rss_huge"),
            total_mapped_file: stat("total_mapped_file"),
            total_dirty: stat("total_dirty"),
            total_writeback: stat("total_writeback"),
            total_pg_pg_in: stat("total_pgpgin"),
            total_pg_pg_out: stat("total_pgpgout"),
            total_pg_fault: stat("total_pgfault"),
            total_pg_maj_fault: stat("total_pgmajfault"),
            total_inactive_anon: stat("total_inactive_anon"),
            total_active_anon: stat("total_active_anon"),
            total_inactive_file: stat("total_inactive_file"),
            total_active_file: stat("total_active_file"),
            total_unevictable: stat("total_unevictable"),
            usage: Some(MemoryEntry {
                limit: stats.memory.limit,
                usage: stats.memory.usage,
                max: stats.memory.max_usage,
                failcnt: stats.memory.failcnt,
            }),
            swap: Some(MemoryEntry {
                limit: stats.memory.swap_limit,
                usage: stats.memory.swap_usage,
                ..MemoryEntry::default()
            }),
            kernel: Some(MemoryEntry {
                usage: stats.memory.kernel_usage,
                ..MemoryEntry::default()
            }),
            kernel_tcp: Some(MemoryEntry::default()),
        }),
        ..Metrics::default()
    }
}
