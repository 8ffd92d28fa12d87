//! A new user namespace: its uid and gid mappings, checked before anything
//! is made and written by the runtime (outside the namespace) once the
//! container's first process has unshared it.
//!
//! Order in the first process: unshare the user namespace, wait for the
//! runtime to write the maps, then unshare every other namespace, so the
//! kernel makes them owned by the new user namespace.

use std::io::Write as _;

use oci_spec::runtime::{LinuxIdMapping, Spec};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The maps of a new user namespace, as the kernel's `uid_map` and
/// `gid_map` files take them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mappings {
    /// `container host size` lines for uid_map.
    pub uid_map: String,
    /// The same for gid_map.
    pub gid_map: String,
    /// Whether container uid 0 is mapped (the init becomes it).
    pub maps_root: bool,
}

fn check(mappings: &[LinuxIdMapping], field: &str) -> Result<String> {
    if mappings.is_empty() {
        return Err(Error::invalid(field, "a user namespace needs at least one mapping"));
    }
    let mut text = String::new();
    for (i, m) in mappings.iter().enumerate() {
        if m.size() == 0 {
            return Err(Error::invalid(format!("{field}[{i}].size"), "must not be 0"));
        }
        let end = |start: u32| u64::from(start) + u64::from(m.size());
        crate::ids::check_range(&format!("{field}[{i}].containerID"), m.container_id(), m.size())?;
        crate::ids::check_range(&format!("{field}[{i}].hostID"), m.host_id(), m.size())?;
        for (j, earlier) in mappings[..i].iter().enumerate() {
            let overlaps =
                |a: u32, b: u32| u64::from(a) < u64::from(b) + u64::from(earlier.size()) && u64::from(b) < end(a);
            if overlaps(m.container_id(), earlier.container_id()) {
                return Err(Error::invalid(
                    format!("{field}[{i}]"),
                    format!("its container ids overlap those of {field}[{j}]"),
                ));
            }
            if overlaps(m.host_id(), earlier.host_id()) {
                return Err(Error::invalid(
                    format!("{field}[{i}]"),
                    format!("its host ids overlap those of {field}[{j}]"),
                ));
            }
        }
        text.push_str(&format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()));
    }
    Ok(text)
}

/// The spec's mappings when it asks for a new user namespace; an error
/// names the field when they are missing, overlap, or come without one.
pub fn plan(spec: &Spec, new_user_namespace: bool) -> Result<Option<Mappings>> {
    let linux = spec.linux().as_ref();
    let uids = linux.and_then(|l| l.uid_mappings().clone()).unwrap_or_default();
    let gids = linux.and_then(|l| l.gid_mappings().clone()).unwrap_or_default();
    if !new_user_namespace {
        if !uids.is_empty() || !gids.is_empty() {
            return Err(Error::invalid(
                "linux.uidMappings",
                "mappings need a new user namespace in linux.namespaces",
            ));
        }
        return Ok(None);
    }
    let maps_root = uids.iter().any(|m| m.container_id() == 0);
    Ok(Some(Mappings {
        uid_map: check(&uids, "linux.uidMappings")?,
        gid_map: check(&gids, "linux.gidMappings")?,
        maps_root,
    }))
}

/// Writes the maps of process `pid`'s user namespace (from outside it).
pub fn write(pid: i32, mappings: &Mappings) -> Result<()> {
    for (file, text) in [("uid_map", &mappings.uid_map), ("gid_map", &mappings.gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("writing the user namespace's mappings", &path, &e))?;
        // One write: the kernel takes a map whole, once.
        handle
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("writing the user namespace's mappings", &path, &e))?;
    }
    Ok(())
}

/// In the container's first process after the maps are written: becomes
/// the namespace's root (when it is mapped), so files it creates have an
/// owner the namespace can name.
pub fn become_root(mappings: &Mappings) -> Result<()> {
    if !mappings.maps_root {
        return Ok(());
    }
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| Error::nix("becoming root in the user namespace", "setresgid", e))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(|e| Error::nix("becoming root in the user namespace", "setresuid", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(uids: serde_json::Value, gids: serde_json::Value) -> Spec {
        let mut value: serde_json::Value = serde_json::from_str(&crate::spec::default_spec_json()).unwrap();
        value["linux"]["uidMappings"] = uids;
        value["linux"]["gidMappings"] = gids;
        crate::spec::parse(&value.to_string()).unwrap()
    }

    #[test]
    fn mappings_are_checked_and_written_as_the_kernel_reads_them() {
        let ok = spec(
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 1}, {"containerID": 1, "hostID": 200000, "size": 10}]),
        );
        let plan = plan(&ok, true).unwrap().unwrap();
        assert_eq!(plan.uid_map, "0 100000 65536\n");
        assert_eq!(plan.gid_map, "0 100000 1\n1 200000 10\n");
        assert!(plan.maps_root);

        let overlapping = spec(
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 100}, {"containerID": 50, "hostID": 300000, "size": 10}]),
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 1}]),
        );
        let err = super::plan(&overlapping, true).unwrap_err();
        assert_eq!(err.subject.as_deref(), Some("linux.uidMappings[1]"));
        let host_overlap = spec(
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 1}]),
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 10}, {"containerID": 10, "hostID": 100005, "size": 1}]),
        );
        let err = super::plan(&host_overlap, true).unwrap_err();
        assert_eq!(err.subject.as_deref(), Some("linux.gidMappings[1]"));
        let err = super::plan(&ok, false).unwrap_err();
        assert_eq!(err.subject.as_deref(), Some("linux.uidMappings"));
    }
}
