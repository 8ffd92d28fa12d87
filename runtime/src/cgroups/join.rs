//! A process entering a created cgroup by itself, then forking its child
//! there.
//!
//! Moving a whole process into a cgroup (a pid written to `cgroup.procs`)
//! takes a global lock whose write side waits for an RCU grace period:
//! several milliseconds, the largest single cost of starting a container.
//! The kernel skips that lock when a thread moves only itself, so a
//! single-threaded process writes `0` to each v1 `tasks` file; cgroup2 has
//! no such path for a process, but `clone3(CLONE_INTO_CGROUP)` creates the
//! child directly in the cgroup2 directory, without moving anyone.

use std::os::fd::AsRawFd as _;
use std::path::Path;

use super::CgroupEntry;
use crate::error::{Error, Result};

/// Which side of the fork this is.
#[derive(Debug, PartialEq, Eq)]
pub enum Forked {
    /// The child, in the cgroup.
    Child,
    /// The parent, with the child's pid.
    Parent(i32),
}

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

fn write_zero(file: &Path) -> Result<()> {
    let mut handle = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .map_err(|e| Error::io("entering the cgroup", file, &e))?;
    std::io::Write::write_all(&mut handle, b"0").map_err(|e| Error::io("entering the cgroup", file, &e))
}

/// Puts the calling process into the v1 directories of `entry` and forks a
/// child that starts in all of them, cgroup2 included. `before_fork` runs
/// once the cgroup files are open (it may leave the mount namespace they
/// are found in).
///
/// # Safety
/// The caller must be single-threaded: writing `0` to a v1 `tasks` file
/// moves only the calling thread, and the child of a fork may only run
/// arbitrary code when no other thread existed.
pub unsafe fn fork_into(entry: &CgroupEntry, before_fork: impl FnOnce() -> Result<()>) -> Result<Forked> {
    for tasks in &entry.v1_tasks {
        write_zero(tasks)?;
    }
    let v2 = match &entry.v2_dir {
        Some(dir) => {
            let handle = std::fs::File::open(dir).map_err(|e| Error::io("opening the cgroup", dir, &e))?;
            let procs = dir.join("cgroup.procs");
            let procs_file = std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| Error::io("entering the cgroup", &procs, &e))?;
            Some((handle, procs_file, procs))
        }
        None => None,
    };
    before_fork()?;
    if let Some((handle, mut procs_file, procs)) = v2 {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: handle.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM or a new stack behaves as fork:
        // the child gets a copy of this (single-threaded, per the caller's
        // promise) process and returns here with 0. `args` outlives the call.
        // Unlike glibc's fork, the child's thread descriptor keeps the
        // parent's tid; only raise/pthread_kill read it, and the container's
        // init never signals itself before it execs.
        let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>()) };
        match pid {
            0 => return Ok(Forked::Child),
            pid if pid > 0 => return Ok(Forked::Parent(pid as i32)),
            // An older kernel, or a cgroup the kernel will not fork into:
            // move this process the ordinary way, which reports the cause.
            _ => std::io::Write::write_all(&mut procs_file, b"0")
                .map_err(|e| Error::io("entering the cgroup", &procs, &e))?,
        }
    }
    // SAFETY: the caller promises a single-threaded process.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent(child.as_raw())),
        Err(e) => Err(Error::nix("forking the container's init", "fork", e)),
    }
}
