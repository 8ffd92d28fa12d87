//! berthd's own process figures for the metrics endpoint, under the
//! names Prometheus client libraries give them (`process_*`), plus the
//! proportional set size beside the resident one.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Figures read from /proc/self.
#[derive(Debug, Default, PartialEq)]
struct ProcessFigures {
    cpu_seconds: f64,
    start_time_seconds: f64,
    threads: i64,
    virtual_bytes: i64,
    resident_bytes: i64,
    proportional_bytes: i64,
    open_fds: i64,
    max_fds: i64,
}

/// Reads them; a figure that cannot be read is left at zero.
fn read() -> ProcessFigures {
    let mut figures = ProcessFigures::default();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // The fields after the command's closing parenthesis, from state (3).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        figures.cpu_seconds = (field(14) + field(15)) / ticks;
        figures.threads = field(20) as i64;
        figures.virtual_bytes = field(23) as i64;
        figures.resident_bytes = field(24) as i64 * page;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<f64>().ok()))
            })
            .unwrap_or(0.0);
        figures.start_time_seconds = boot + field(22) / ticks;
    }
    if let Ok(rollup) = std::fs::read_to_string("/proc/self/smaps_rollup") {
        figures.proportional_bytes = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            .map_or(0, |kib| kib * 1024);
    }
    figures.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    if let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        figures.max_fds = i64::try_from(soft).unwrap_or(i64::MAX);
    }
    figures
}

/// Adds the process's figures to a scrape's registry.
pub fn register(registry: &mut Registry) {
    let figures = read();
    let cpu = Counter::<f64, AtomicU64>::default();
    cpu.inc_by(figures.cpu_seconds);
    registry.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds.",
        cpu,
    );
    let start = Gauge::<f64, AtomicU64>::default();
    start.set(figures.start_time_seconds);
    registry.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        start,
    );
    for (name, help, value) in [
        (
            "process_threads",
            "Number of OS threads in the process.",
            figures.threads,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            figures.virtual_bytes,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            figures.resident_bytes,
        ),
        (
            "process_proportional_memory_bytes",
            "Proportional set size in bytes: resident memory, pages shared with other processes counted in part.",
            figures.proportional_bytes,
        ),
        ("process_open_fds", "Number of open file descriptors.", figures.open_fds),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            figures.max_fds,
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_figures() {
        let figures = read();
        assert!(
            figures.resident_bytes > 0 && figures.proportional_bytes > 0,
            "{figures:?}"
        );
        assert!(
            figures.open_fds >= 3 && figures.max_fds >= figures.open_fds,
            "{figures:?}"
        );
        assert!(
            figures.threads >= 1 && figures.start_time_seconds > 1.0e9,
            "{figures:?}"
        );
    }
}
