//! Reading and writing cgroup control files, with errors that name the
//! file and the value.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `value` to `dir/file`.
pub fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| Error::io(format!("setting {file} to {value:?}"), &path, &e))
}

/// Writes `value` if the file exists; Ok(false) when it does not.
pub fn write_if_present(dir: &Path, file: &str, value: &str) -> Result<bool> {
    if !dir.join(file).exists() {
        return Ok(false);
    }
    write(dir, file, value).map(|()| true)
}

/// The trimmed text of `dir/file`.
pub fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io("reading", &path, &e))
}

/// A number file; `max` reads as u64::MAX.
pub fn read_u64(dir: &Path, file: &str) -> Result<u64> {
    let text = read(dir, file)?;
    parse_u64(&text).ok_or_else(|| Error::other(format!("reading {file}"), format!("not a number: {text:?}")))
}

/// A number file that may be missing (0 then).
pub fn read_u64_or_zero(dir: &Path, file: &str) -> u64 {
    read(dir, file).ok().and_then(|t| parse_u64(&t)).unwrap_or(0)
}

/// `key value` lines (memory.stat, cpu.stat).
pub fn read_keyed(dir: &Path, file: &str) -> Result<HashMap<String, u64>> {
    Ok(read(dir, file)?
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), parse_u64(value.trim())?))
        })
        .collect())
}

/// The pids listed in `cgroup.procs`.
pub fn procs(dir: &Path) -> Result<Vec<i32>> {
    let path = dir.join("cgroup.procs");
    let mut pids: Vec<i32> = match std::fs::read_to_string(&path) {
        Ok(text) => text.lines().filter_map(|l| l.trim().parse().ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", &path, &e)),
    };
    // The container's processes include those in cgroups made below its
    // own (by the container itself, say, with a writable cgroup mount).
    for child in sub_cgroups(dir) {
        pids.extend(procs(&child)?);
    }
    Ok(pids)
}

/// The cgroup directories directly below `dir`.
fn sub_cgroups(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn parse_u64(text: &str) -> Option<u64> {
    if text == "max" {
        return Some(u64::MAX);
    }
    text.parse().ok()
}

/// Removes a cgroup directory and those below it (deepest first),
/// retrying while the last processes leave them.
pub fn remove_dir(dir: &Path) -> Result<()> {
    for child in sub_cgroups(dir) {
        remove_dir(&child)?;
    }
    for attempt in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(Error::io("removing cgroup", dir, &e)),
        }
    }
    Ok(())
}
