//! `delete`: remove a stopped container (or, with force, any), its cgroup
//! and its state.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{Globals, load};
use crate::error::{Error, Result};
use crate::hooks::{self, HookState};
use crate::state::{self, Status};

/// How long `delete --force` waits for a killed container's processes.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Deletes container `id`.
pub fn delete(globals: &Globals, id: &str, force: bool) -> Result<()> {
    let (state, cgroup, status) = match load(globals, id) {
        Ok(loaded) => loaded,
        // Nothing recorded but a directory left: remove it.
        Err(e) if e.kind == crate::error::Kind::NotFound && force => {
            let _ = std::fs::remove_dir_all(state::dir(&globals.root, id));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match status {
        Status::Stopped | Status::Created => {}
        Status::Running | Status::Paused if force => {}
        other => {
            return Err(Error::precondition(
                id,
                format!("cannot delete a container that is {} (use --force)", other.as_str()),
            ));
        }
    }
    if status != Status::Stopped {
        if status == Status::Paused {
            let _ = cgroup.thaw();
        }
        cgroup.signal_all(Signal::SIGKILL)?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid), Signal::SIGKILL);
        let deadline = Instant::now() + KILL_WAIT;
        while state.init_alive() || !cgroup.pids()?.is_empty() {
            if Instant::now() > deadline {
                return Err(Error::other("deleting the container", "its processes did not die"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Processes left by a stopped init (it was not pid 1 of a namespace).
    if !cgroup.pids()?.is_empty() {
        cgroup.signal_all(Signal::SIGKILL)?;
    }
    cgroup.destroy()?;
    let dir = state::dir(&globals.root, id);
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io("removing the state directory", &dir, &e))?;
    if let Some(spec) = super::bundle_spec(&state) {
        let hook_state = HookState::new(&spec, id, "stopped", None, &state.bundle);
        for warning in hooks::run_all(hooks::Kind::Poststop, &spec, &hook_state) {
            (globals.warn)(&warning);
        }
    }
    Ok(())
}
