//! The container operations, one file each, over the state directory.

pub mod create;
pub mod delete;
pub mod exec;
pub mod host_binds;
pub mod kill;
pub mod pause;
pub mod query;
pub mod start;
pub mod update;

use std::path::{Path, PathBuf};

use crate::cgroups::{self, CgroupManager, Layout};
use crate::error::{Error, Result};
use crate::state::{State, Status};

/// Options every command shares.
#[derive(Clone, Debug)]
pub struct Globals {
    /// Where container state lives (`--root`).
    pub root: PathBuf,
    /// `--systemd-cgroup`: cgroup paths are `slice:prefix:name`.
    pub systemd_cgroup: bool,
    /// Where problems that do not fail an operation are reported (a failed
    /// poststart or poststop hook).
    pub warn: fn(&Error),
    /// Where the steps of an operation are reported as they happen
    /// (runc's `--debug`), the init's included; None keeps them unsaid.
    pub debug: Option<fn(&str)>,
}

impl Globals {
    /// Reports one step when debugging; the message is only made then.
    pub fn step(&self, message: impl FnOnce() -> String) {
        if let Some(debug) = self.debug {
            debug(&message());
        }
    }
}

impl Default for Globals {
    fn default() -> Self {
        Self {
            root: PathBuf::from(DEFAULT_ROOT),
            systemd_cgroup: false,
            warn: |_| {},
            debug: None,
        }
    }
}

/// Where a process's stdin, stdout and stderr go, when not to the
/// caller's own (a shim passes pipes and files).
#[derive(Debug)]
pub struct ProcessStdio {
    /// Standard input.
    pub stdin: std::os::fd::OwnedFd,
    /// Standard output.
    pub stdout: std::os::fd::OwnedFd,
    /// Standard error.
    pub stderr: std::os::fd::OwnedFd,
}

impl ProcessStdio {
    /// Sets `command`'s standard descriptors to duplicates of these.
    pub fn attach(&self, command: &mut std::process::Command) -> Result<()> {
        let dup = |fd: &std::os::fd::OwnedFd| {
            fd.try_clone()
                .map(std::process::Stdio::from)
                .map_err(|e| Error::io("passing the process's stdio", "dup", &e))
        };
        command
            .stdin(dup(&self.stdin)?)
            .stdout(dup(&self.stdout)?)
            .stderr(dup(&self.stderr)?);
        Ok(())
    }
}

/// The spec in a container's bundle, if it can still be read (for the
/// hooks of start and delete).
pub fn bundle_spec(state: &State) -> Option<oci_spec::runtime::Spec> {
    let text = std::fs::read_to_string(state.bundle.join("config.json")).ok()?;
    crate::spec::parse(&text).ok()
}

/// berth-runc's state root when `--root` is not given.
pub const DEFAULT_ROOT: &str = "/run/berth-runc";

/// The cgroup manager for a cgroup path on this host.
pub fn manager_for(path: &Path) -> Result<Box<dyn CgroupManager>> {
    cgroups::manager(&Layout::detect()?, path)
}

/// A container's state, its cgroup and its status now.
pub fn load(globals: &Globals, id: &str) -> Result<(State, Box<dyn CgroupManager>, Status)> {
    let state = State::load(&globals.root, id)?;
    let cgroup = manager_for(&state.cgroup_path)?;
    let status = state.status(&globals.root, || cgroup.frozen().unwrap_or(false));
    Ok((state, cgroup, status))
}

/// Writes a pid file atomically (go-runc reads it as soon as create or
/// exec returns).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = std::path::absolute(path).map_err(|e| Error::io("writing the pid file", path, &e))?;
    let temp = path.with_extension("tmp-berth");
    std::fs::write(&temp, pid.to_string()).map_err(|e| Error::io("writing the pid file", &temp, &e))?;
    std::fs::rename(&temp, &path).map_err(|e| Error::io("writing the pid file", &path, &e))
}
