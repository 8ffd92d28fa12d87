//! berth-runc on a private state root; every container it made is
//! force-deleted when it is dropped, so a failing test leaves no process,
//! cgroup or mount behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::binaries;

/// The cgroup parent every test container is placed under.
pub const TEST_CGROUP_PARENT: &str = "berth-tests";

/// The `cgroupsPath` a test container with this id gets.
pub fn test_cgroup_path(id: &str) -> String {
    format!("/{TEST_CGROUP_PARENT}/{id}")
}

/// berth-runc with `--root` in a temporary directory.
#[derive(Debug)]
pub struct Runc {
    root: tempfile::TempDir,
    log: PathBuf,
}

impl Default for Runc {
    fn default() -> Self {
        Self::new()
    }
}

impl Runc {
    /// A fresh state root.
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("berth-runc")
            .tempdir()
            .expect("state root");
        let log = root.path().join("log.json");
        Self { root, log }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The JSON log file every command appends to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The command, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binaries::berth("berth-runc"));
        command
            .arg("--root")
            .arg(self.root.path())
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs to completion, capturing output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run berth-runc")
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth-runc {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that leaves a container process behind (`create`,
    /// `run --detach`): that process inherits stdout and stderr, so they go
    /// to files rather than pipes that would stay open as long as it lives.
    /// Must succeed; returns stdout.
    pub fn ok_detached(&self, args: &[&str]) -> String {
        use std::io::{Read, Seek};
        let mut stdout = tempfile::tempfile().expect("stdout file");
        let mut stderr = tempfile::tempfile().expect("stderr file");
        let status = self
            .command(args)
            .stdout(stdout.try_clone().expect("stdout file"))
            .stderr(stderr.try_clone().expect("stderr file"))
            .status()
            .expect("run berth-runc");
        let read = |file: &mut std::fs::File| {
            let mut text = String::new();
            file.rewind()
                .and_then(|_| file.read_to_string(&mut text))
                .expect("read output");
            text
        };
        let (out, err) = (read(&mut stdout), read(&mut stderr));
        assert!(
            status.success(),
            "berth-runc {} failed ({status}): {out}{err}",
            args.join(" ")
        );
        out
    }

    /// Runs a command that must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "berth-runc {} should have failed",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `state ID`'s status field.
    pub fn status(&self, id: &str) -> String {
        let state: serde_json::Value = serde_json::from_str(&self.ok(&["state", id])).expect("state json");
        state["status"].as_str().unwrap_or_default().to_string()
    }

    /// `state ID`'s pid.
    pub fn pid(&self, id: &str) -> i32 {
        let state: serde_json::Value = serde_json::from_str(&self.ok(&["state", id])).expect("state json");
        state["pid"].as_i64().unwrap_or_default() as i32
    }

    /// The containers under the root.
    pub fn ids(&self) -> Vec<String> {
        self.ok(&["list", "-q"]).lines().map(str::to_string).collect()
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.root.path()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                let id = entry.file_name().to_string_lossy().into_owned();
                let _ = self.run(&["delete", "--force", &id]);
            }
        }
        // The shared parent goes once the last test using it is done; while
        // another still has a container there, removal fails with EBUSY.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for hierarchy in hierarchies.flatten() {
                let _ = std::fs::remove_dir(hierarchy.path().join(TEST_CGROUP_PARENT));
            }
        }
    }
}
