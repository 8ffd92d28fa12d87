//! `events [--stats] [--interval D] ID`: a container's resource usage as
//! JSON lines (`{"type":"stats","id":…,"data":{…}}`, runc's layout) every
//! interval, and `{"type":"oom","id":…}` for each OOM kill, until the
//! container is deleted; with `--stats`, one stats line.

use std::io::Write as _;
use std::time::{Duration, Instant};

use berth_runtime::cgroups::OomSource;
use berth_runtime::cgroups::stats::Stats;
use berth_runtime::container::{Globals, load};
use berth_runtime::error::{Error, Result};

/// How often the container's existence and its OOM count are checked
/// between stats lines.
const POLL: Duration = Duration::from_millis(100);

/// Runs the command; its exit code.
pub fn run(globals: &Globals, id: &str, stats_once: bool, interval: &str) -> Result<i32> {
    let interval = parse_duration(interval)?;
    let (_, cgroup, _) = load(globals, id)?;
    if stats_once {
        emit(&stats_event(id, &cgroup.stats()?))?;
        return Ok(0);
    }
    let oom = cgroup.oom_source();
    let mut kills = oom.as_ref().map(oom_kills).unwrap_or(0);
    let mut next_stats = Instant::now();
    loop {
        let Ok((_, cgroup, _)) = load(globals, id) else {
            return Ok(0);
        };
        if let Some(source) = &oom {
            let now = oom_kills(source);
            for _ in kills..now {
                emit(&format!(r#"{{"type":"oom","id":{}}}"#, quoted(id)))?;
            }
            kills = kills.max(now);
        }
        if Instant::now() >= next_stats {
            // A container whose cgroup is going away has no numbers; the
            // next round finds it deleted.
            if let Ok(stats) = cgroup.stats() {
                emit(&stats_event(id, &stats))?;
            }
            next_stats += interval;
        }
        std::thread::sleep(POLL.min(interval));
    }
}

fn emit(line: &str) -> Result<()> {
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing", "stdout", &e))
}

fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// OOM kills the cgroup has seen (`oom_kill` in memory.oom_control on v1,
/// memory.events on cgroup2); 0 when it cannot tell.
fn oom_kills(source: &OomSource) -> u64 {
    let file = match source {
        OomSource::V1(dir) => dir.join("memory.oom_control"),
        OomSource::V2(dir) => dir.join("memory.events"),
    };
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One stats line; the keys come in runc's order (type, id, data), which
/// tools match on.
fn stats_event(id: &str, stats: &Stats) -> String {
    let hugetlb: serde_json::Map<String, serde_json::Value> = stats
        .hugetlb
        .iter()
        .map(|h| {
            (
                h.page_size.clone(),
                serde_json::json!({"usage": h.usage, "max": h.max_usage, "failcnt": h.failcnt}),
            )
        })
        .collect();
    let memory = &stats.memory;
    let data = serde_json::json!({
        "cpu": {
            "usage": {
                "total": stats.cpu.usage_total,
                "percpu": stats.cpu.per_cpu,
                "kernel": stats.cpu.usage_kernel,
                "user": stats.cpu.usage_user,
            },
            "throttling": {
                "periods": stats.cpu.periods,
                "throttledPeriods": stats.cpu.throttled_periods,
                "throttledTime": stats.cpu.throttled_time,
            },
        },
        "memory": {
            "cache": memory.stat.get("cache").or_else(|| memory.stat.get("file")).copied().unwrap_or(0),
            "usage": {"limit": memory.limit, "usage": memory.usage, "max": memory.max_usage, "failcnt": memory.failcnt},
            "swap": {"limit": memory.swap_limit, "usage": memory.swap_usage},
            "kernel": {"usage": memory.kernel_usage},
            "raw": memory.stat,
        },
        "pids": {"current": stats.pids.current, "limit": stats.pids.limit},
        "blkio": {},
        "hugetlb": hugetlb,
    });
    format!(r#"{{"type":"stats","id":{},"data":{data}}}"#, quoted(id))
}

/// A duration as Go writes them: `5s`, `100ms`, `1.5s`, `1m30s`, `2h`.
fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || Error::invalid("--interval", format!("{text:?} is not a duration (e.g. 5s, 100ms)"));
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    if total <= 0.0 {
        return Err(Error::invalid("--interval", format!("{text:?}: must be positive")));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "5", "s", "5x", "0s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_stats_line_starts_with_type_and_id() {
        let line = stats_event("c1", &Stats::default());
        assert!(line.starts_with(r#"{"type":"stats","id":"c1","data":{"#), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["data"]["pids"]["current"], 0);
    }
}
