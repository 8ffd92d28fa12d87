//! `update`: change a container's resource limits while it runs.

use oci_spec::runtime::LinuxResources;

use super::{Globals, load};
use crate::error::{Error, Result};
use crate::state::Status;

/// Reads a `LinuxResources` JSON document (what `update --resources` takes).
pub fn parse_resources(text: &str) -> Result<LinuxResources> {
    serde_json::from_str(text).map_err(|e| Error::invalid("resources", e.to_string()))
}

/// Applies `resources` to container `id`'s cgroup.
pub fn update(globals: &Globals, id: &str, resources: &LinuxResources) -> Result<()> {
    let (_, cgroup, status) = load(globals, id)?;
    if status == Status::Stopped {
        return Err(Error::precondition(id, "cannot update a stopped container"));
    }
    cgroup.set(resources)
}
