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
    /// Existing namespaces to join first: the open file and its type.
    pub join: Vec<(OwnedFd, CloneFlags)>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Self {
            unshare: CloneFlags::empty(),
            new_cgroup: false,
            join: Vec::new(),
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
        if kind == LinuxNamespaceType::User {
            return Err(Error::invalid(
                format!("linux.namespaces[{i}].type"),
                "user namespaces are not supported by this build",
            ));
        }
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
            None => out.unshare |= flag(kind),
        }
    }
    Ok(out)
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
    fn a_missing_namespace_path_names_the_field() {
        let err = plan(&spec(serde_json::json!([{"type": "ipc", "path": "/nonexistent/ns"}]))).unwrap_err();
        assert_eq!(err.subject.as_deref(), Some("linux.namespaces[0].path"));
    }
}
