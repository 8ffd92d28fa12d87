//! `pause` and `resume`: freeze and thaw every process of a container.

use super::{Globals, load};
use crate::error::{Error, Result};
use crate::state::Status;

/// Freezes container `id`; it must be running.
pub fn pause(globals: &Globals, id: &str) -> Result<()> {
    let (_, cgroup, status) = load(globals, id)?;
    if status != Status::Running {
        return Err(Error::precondition(
            id,
            format!("cannot pause a container that is {}", status.as_str()),
        ));
    }
    cgroup.freeze()
}

/// Thaws container `id`; it must be paused.
pub fn resume(globals: &Globals, id: &str) -> Result<()> {
    let (_, cgroup, status) = load(globals, id)?;
    if status != Status::Paused {
        return Err(Error::precondition(
            id,
            format!("cannot resume a container that is {}", status.as_str()),
        ));
    }
    cgroup.thaw()
}
