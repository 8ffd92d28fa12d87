//! Which namespaces a container gets: new ones to unshare, existing ones
//! (by path) to join.
//!
//! PID and time namespaces apply to the children of the process that
//! unshares them, so the init forks once after unsharing. The cgroup
//! namespace is unshared last, by the container's init, once it is inside
//! its cgroup, so that cgroup becomes the namespace's root.

use std::os::fd::OwnedFd;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// The namespaces of one container.
#[derive(Debug)]
pub struct Namespaces {
    /// New namespaces to unshare before the init starts (not cgroup).
    pub unshare: CloneFlags,
    /// A new cgroup namespace, unshared by the init once in its cgroup.
    pub new_cgroup: bool,
    /// A new user namespace, unshared first by the init (see
    /// [`crate::user_namespace`]); not part of `unshare`.
    pub new_user: bool,
    /// Existing namespaces to join first: the open file and its type.
    pub join: Vec<(OwnedFd, CloneFlags)>,
    /// What to write to `/proc/self/timens_offsets` right after unsharing
    /// a time namespace, before any process enters it (empty: nothing).
    pub time_offsets: Vec<u8>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Self {
            unshare: CloneFlags::empty(),
            new_cgroup: false,
            new_user: false,
            join: Vec::new(),
            time_offsets: Vec::new(),
        }
    }
}

/// The clone flag of a namespace type.
pub fn flag(kind: LinuxNamespaceType) -> CloneFlags {
    match kind {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Plans the namespaces of `spec`, opening those to join.
pub fn plan(spec: &Spec) -> Result<Namespaces> {
    let mut out = Namespaces::default();
    let listed = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for (i, ns) in listed.into_iter().flatten().enumerate() {
        let kind = ns.typ();
        match ns.path() {
            Some(path) => {
                let file = std::fs::File::open(path).map_err(|e| {
                    Error::invalid(
                        format!("linux.namespaces[{i}].path"),
                        format!("{}: {e}", path.display()),
                    )
                })?;
                out.join.push((OwnedFd::from(file), flag(kind)));
            }
            None if kind == LinuxNamespaceType::Cgroup => out.new_cgroup = true,
            None if kind == LinuxNamespaceType::User => out.new_user = true,
            None => out.unshare |= flag(kind),
        }
    }
    out.time_offsets = time_offsets(spec, out.unshare.contains(flag(LinuxNamespaceType::Time)))?;
    Ok(out)
}

/// The `timens_offsets` text for the spec's `linux.timeOffsets`; they need
/// a new time namespace (a joined one already has its offsets).
fn time_offsets(spec: &Spec, new_time_namespace: bool) -> Result<Vec<u8>> {
    let offsets = spec.linux().as_ref().and_then(|l| l.time_offsets().as_ref());
    let Some(offsets) = offsets.filter(|o| !o.is_empty()) else {
        return Ok(Vec::new());
    };
    if !new_time_namespace {
        return Err(Error::invalid(
            "linux.timeOffsets",
            "clock offsets need a new time namespace in linux.namespaces",
        ));
    }
    let mut clocks: Vec<_> = offsets.iter().collect();
    clocks.sort_by(|a, b| a.0.cmp(b.0));
    let mut text = String::new();
    for (clock, offset) in clocks {
        if clock != "monotonic" && clock != "boottime" {
            return Err(Error::invalid(
                format!("linux.timeOffsets.{clock}"),
                "only the monotonic and boottime clocks can be offset",
            ));
        }
        let nanos = offset.nanosecs().unwrap_or(0);
        if nanos >= 1_000_000_000 {
            return Err(Error::invalid(
                format!("linux.timeOffsets.{clock}.nanosecs"),
                "must be below one second",
            ));
        }
        text.push_str(&format!("{clock} {} {nanos}\n", offset.secs().unwrap_or(0)));
    }
    Ok(text.into_bytes())
}

/// Whether the spec gives the container a namespace of `kind` (new or joined).
pub fn has(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|ns| ns.typ() == kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: serde_json::Value) -> Spec {
        let mut value: serde_json::Value = serde_json::from_str(&crate::spec::default_spec_json()).unwrap();
        value["linux"]["namespaces"] = namespaces;
        value["hostname"] = serde_json::Value::Null;
        crate::spec::parse(&value.to_string()).unwrap()
    }

    #[test]
    fn new_namespaces_and_joined_ones() {
        let plan = plan(&spec(serde_json::json!([
            {"type": "pid"}, {"type": "mount"}, {"type": "network", "path": "/proc/self/ns/net"}, {"type": "cgroup"}
        ])))
        .unwrap();
        assert_eq!(plan.unshare, CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS);
        assert!(plan.new_cgroup);
        assert_eq!(plan.join.len(), 1);
        assert_eq!(plan.join[0].1, CloneFlags::CLONE_NEWNET);
    }

    #[test]
    fn time_offsets_need_a_new_time_namespace_and_known_clocks() {
        let with_offsets = |namespaces: serde_json::Value, offsets: serde_json::Value| {
            let mut value: serde_json::Value = serde_json::from_str(&crate::spec::default_spec_json()).unwrap();
            value["linux"]["namespaces"] = namespaces;
            value["linux"]["timeOffsets"] = offsets;
            value["hostname"] = serde_json::Value::Null;
            plan(&crate::spec::parse(&value.to_string()).unwrap())
        };
        let plan = with_offsets(
            serde_json::json!([{"type": "time"}]),
            serde_json::json!({"boottime": {"secs": 10, "nanosecs": 5}, "monotonic": {"secs": -3}}),
        )
        .unwrap();
        assert_eq!(plan.time_offsets, b"boottime 10 5\nmonotonic -3 0\n");
        let err = with_offsets(serde_json::json!([]), serde_json::json!({"boottime": {"secs": 1}})).unwrap_err();
        assert_eq!(err.subject.as_deref(), Some("linux.timeOffsets"));
        let err = with_offsets(
            serde_json::json!([{"type": "time"}]),
            serde_json::json!({"realtime": {"secs": 1}}),
        )
        .unwrap_err();
        assert_eq!(err.subject.as_deref(), Some("linux.timeOffsets.realtime"));
    }

    #[test]
    fn a_missing_namespace_path_names_the_field() {
        let err = plan(&spec(serde_json::json!([{"type": "ipc", "path": "/nonexistent/ns"}]))).unwrap_err();
        assert_eq!(err.subject.as_deref(), Some("linux.namespaces[0].path"));
    }
}
