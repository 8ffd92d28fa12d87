//! `state`, `list` and `ps`: what the runtime knows of its containers.

use super::{Globals, load};
use crate::error::{Error, Result};
use crate::state::{Report, State};

/// Container `id`'s state as runc reports it.
pub fn state(globals: &Globals, id: &str) -> Result<Report> {
    let (state, _, status) = load(globals, id)?;
    Ok(state.report(status))
}

/// Every container under the root, by id.
pub fn list(globals: &Globals) -> Result<Vec<Report>> {
    let entries = match std::fs::read_dir(&globals.root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", &globals.root, &e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    let mut out = Vec::new();
    for id in ids {
        // A directory without a state file is a create in progress.
        if let Ok(state_now) = state(globals, &id) {
            out.push(state_now);
        }
    }
    Ok(out)
}

/// The pids of every process in container `id`.
pub fn pids(globals: &Globals, id: &str) -> Result<Vec<i32>> {
    let (_, cgroup, _) = load(globals, id)?;
    cgroup.pids()
}

/// The stored state, without the status (for tools).
pub fn stored(globals: &Globals, id: &str) -> Result<State> {
    State::load(&globals.root, id)
}
