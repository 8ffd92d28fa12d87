//! A container's state on disk (`<root>/<id>/state.json`) and its status,
//! worked out from the init process, the start socket and the freezer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The socket the waiting init accepts `start` on.
pub const EXEC_SOCKET: &str = "exec.sock";
const STATE_FILE: &str = "state.json";

/// Where a container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Built, waiting for start.
    Created,
    /// The user process runs.
    Running,
    /// Frozen.
    Paused,
    /// The init process is gone.
    Stopped,
}

impl Status {
    /// The name runc prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }
}

/// What the runtime remembers of a container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Container id.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The rootfs directory.
    pub rootfs: PathBuf,
    /// The init's pid in the runtime's pid namespace.
    pub pid: i32,
    /// The init's start time (clock ticks since boot), to tell it from a
    /// later process that reuses the pid.
    pub pid_start: u64,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The cgroup path (as given to the cgroup manager).
    pub cgroup_path: PathBuf,
    /// Whether `--systemd-cgroup` was given.
    pub systemd_cgroup: bool,
    /// The spec's annotations.
    pub annotations: HashMap<String, String>,
    /// Who created it (uid).
    pub owner: String,
}

/// The `state` command's JSON (runc's fields, read by go-runc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// OCI version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Init pid (0 once stopped).
    pub pid: i32,
    /// Status name.
    pub status: String,
    /// Bundle.
    pub bundle: PathBuf,
    /// Rootfs.
    pub rootfs: PathBuf,
    /// Creation time.
    pub created: String,
    /// Owner.
    pub owner: String,
    /// Annotations.
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}

/// Checks a container id as runc does.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("id", format!("invalid container id {id:?}")))
    }
}

/// The directory of container `id` under `root`.
pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

impl State {
    /// Reads container `id`'s state; NotFound when there is none.
    pub fn load(root: &Path, id: &str) -> Result<Self> {
        validate_id(id)?;
        let path = dir(root, id).join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::not_found(id)),
            Err(e) => return Err(Error::io("reading", &path, &e)),
        };
        serde_json::from_str(&text).map_err(|e| Error::other(format!("reading {}", path.display()), e.to_string()))
    }

    /// Writes the state atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let dir = dir(root, &self.id);
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::other("encoding state", e.to_string()))?;
        let temp = dir.join(".state.json.tmp");
        std::fs::write(&temp, text).map_err(|e| Error::io("writing", &temp, &e))?;
        std::fs::rename(&temp, dir.join(STATE_FILE)).map_err(|e| Error::io("writing", dir.join(STATE_FILE), &e))
    }

    /// Whether the init process still lives (not a zombie, not reused).
    pub fn init_alive(&self) -> bool {
        self.pid > 0 && process_start(self.pid).is_some_and(|(start, zombie)| start == self.pid_start && !zombie)
    }

    /// The status, given whether the cgroup is frozen.
    pub fn status(&self, root: &Path, frozen: impl FnOnce() -> bool) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if dir(root, &self.id).join(EXEC_SOCKET).exists() {
            return Status::Created;
        }
        if frozen() { Status::Paused } else { Status::Running }
    }

    /// The `state` command's view.
    pub fn report(&self, status: Status) -> Report {
        Report {
            oci_version: "1.0.2".into(),
            id: self.id.clone(),
            pid: if status == Status::Stopped { 0 } else { self.pid },
            status: status.as_str().into(),
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// A process's start time and whether it is a zombie, from /proc.
pub fn process_start(pid: i32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    // Field 22 of stat is starttime; `rest` starts at field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

/// Now as RFC 3339 with nanoseconds, in UTC (Go's RFC3339Nano, as runc
/// writes `created`).
pub fn now_rfc3339() -> String {
    berth_core::timestamps::format_rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc() {
        for ok in ["web", "a.b_c+d-1", "0123456789abcdef"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", "..", "a/b", "a b", "é"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn this_process_is_alive() {
        let (start, zombie) = process_start(std::process::id() as i32).unwrap();
        assert!(start > 0 && !zombie);
    }
}
