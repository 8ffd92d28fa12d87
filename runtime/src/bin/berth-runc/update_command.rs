//! `update`: the resources to apply, from `--resources` or from runc's
//! one-limit-per-flag options.

use std::io::Read as _;

use berth_runtime::container::update;
use berth_runtime::error::{Error, Result};
use oci_spec::runtime::LinuxResources;

use crate::args::UpdateArgs;

/// The LinuxResources the command line asks for.
pub fn resources(args: &UpdateArgs) -> Result<LinuxResources> {
    match args.resources.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Error::io("reading", "stdin", &e))?;
            update::parse_resources(&text)
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, &e))?;
            update::parse_resources(&text)
        }
        None => from_flags(args),
    }
}

fn from_flags(args: &UpdateArgs) -> Result<LinuxResources> {
    if args.l3_cache_schema.is_some() || args.mem_bw_schema.is_some() {
        return Err(Error::invalid(
            "--l3-cache-schema/--mem-bw-schema",
            "Intel RDT is not offered by berth-runc",
        ));
    }
    let mut value = serde_json::json!({});
    let mut set = |pointer: &str, field: serde_json::Value| {
        let mut at = &mut value;
        for key in pointer.split('/').filter(|k| !k.is_empty()) {
            at = &mut at[key];
        }
        *at = field;
    };
    let size = |flag: &str, text: &Option<String>| text.as_deref().map(|t| parse_size(flag, t)).transpose();
    if let Some(weight) = args.blkio_weight {
        set("/blockIO/weight", weight.into());
    }
    if let Some(period) = args.cpu_period {
        set("/cpu/period", period.into());
    }
    if let Some(quota) = args.cpu_quota {
        set("/cpu/quota", quota.into());
    }
    if let Some(burst) = args.cpu_burst {
        set("/cpu/burst", burst.into());
    }
    if let Some(period) = args.cpu_rt_period {
        set("/cpu/realtimePeriod", period.into());
    }
    if let Some(runtime) = args.cpu_rt_runtime {
        set("/cpu/realtimeRuntime", runtime.into());
    }
    if let Some(shares) = args.cpu_share {
        set("/cpu/shares", shares.into());
    }
    if let Some(cpus) = &args.cpuset_cpus {
        set("/cpu/cpus", cpus.as_str().into());
    }
    if let Some(mems) = &args.cpuset_mems {
        set("/cpu/mems", mems.as_str().into());
    }
    if let Some(idle) = args.cpu_idle {
        set("/cpu/idle", idle.into());
    }
    if let Some(limit) = size("--memory", &args.memory)? {
        set("/memory/limit", limit.into());
    }
    if let Some(reservation) = size("--memory-reservation", &args.memory_reservation)? {
        set("/memory/reservation", reservation.into());
    }
    if let Some(swap) = size("--memory-swap", &args.memory_swap)? {
        set("/memory/swap", swap.into());
    }
    if let Some(kernel) = size("--kernel-memory", &args.kernel_memory)? {
        set("/memory/kernel", kernel.into());
    }
    if let Some(tcp) = size("--kernel-memory-tcp", &args.kernel_memory_tcp)? {
        set("/memory/kernelTCP", tcp.into());
    }
    if let Some(limit) = args.pids_limit {
        set("/pids/limit", limit.into());
    }
    serde_json::from_value(value).map_err(|e| Error::invalid("update", e.to_string()))
}

/// A size as runc reads it: bytes, or a number with k, m, g, t or p
/// (powers of 1024, either case, an optional `b`/`ib`), or -1 for none.
fn parse_size(flag: &str, text: &str) -> Result<i64> {
    let bad = || Error::invalid(flag, format!("{text:?} is not a size (e.g. 50M, 1g, 1048576, -1)"));
    let trimmed = text.trim();
    if trimmed == "-1" {
        return Ok(-1);
    }
    let lower = trimmed.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let number: f64 = lower[..digits_end].parse().map_err(|_| bad())?;
    let unit = lower[digits_end..].trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    Ok((number * multiplier) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_runc_reads_them() {
        assert_eq!(parse_size("--memory", "50M").unwrap(), 50 << 20);
        assert_eq!(parse_size("--memory", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("--memory", "67108864").unwrap(), 67108864);
        assert_eq!(parse_size("--memory", "-1").unwrap(), -1);
        assert_eq!(parse_size("--memory", "2kb").unwrap(), 2048);
        for bad in ["", "M", "5x", "-2"] {
            assert!(parse_size("--memory", bad).is_err(), "{bad:?}");
        }
    }
}
