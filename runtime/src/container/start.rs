//! `start`: let a created container's init exec the user's command.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;

use super::{Globals, load};
use crate::error::{Error, Result};
use crate::hooks::{self, HookState};
use crate::seccomp_agent;
use crate::state::{self, EXEC_SOCKET, State, Status};

/// Passes the init's seccomp listener on to the profile's agent.
fn hand_listener_to_agent(spec: Option<&oci_spec::runtime::Spec>, state: &State, stream: &UnixStream) -> Result<()> {
    let with_profile = spec.and_then(|s| Some((s, s.linux().as_ref()?.seccomp().as_ref()?)));
    let Some((spec, profile)) = with_profile else {
        return Err(Error::invalid(
            "linux.seccomp",
            "the init loaded a notify filter the spec does not have",
        ));
    };
    let listener = seccomp_agent::read_listener(stream, state.pid)?;
    let hook_state = HookState::new(spec, &state.id, "creating", Some(state.pid), &state.bundle);
    seccomp_agent::hand_to_agent(profile, &hook_state, state.pid, listener, stream)
}

/// Starts container `id`; it must be `created`.
pub fn start(globals: &Globals, id: &str) -> Result<()> {
    let (state, _, status) = load(globals, id)?;
    if status != Status::Created {
        return Err(Error::precondition(
            id,
            format!("cannot start a container that is {}", status.as_str()),
        ));
    }
    let dir = state::dir(&globals.root, id);
    // Connect by a relative path: the state path may be longer than a
    // socket address allows.
    let cwd = std::env::current_dir().map_err(|e| Error::io("reading the working directory", ".", &e))?;
    nix::unistd::chdir(&dir).map_err(|e| Error::nix("entering the state directory", &dir, e))?;
    let connected = UnixStream::connect(EXEC_SOCKET);
    let _ = nix::unistd::chdir(&cwd);
    globals.step(|| format!("start {id}: signalling init pid {}", state.pid));
    let mut stream = connected.map_err(|e| Error::io("starting the container", dir.join(EXEC_SOCKET), &e))?;
    stream
        .write_all(b"s")
        .map_err(|e| Error::io("starting the container", dir.join(EXEC_SOCKET), &e))?;
    let _ = std::fs::remove_file(dir.join(EXEC_SOCKET));
    let spec = super::bundle_spec(&state);
    // The socket closes when exec succeeds; an error is written otherwise,
    // and before either the init may hand over a seccomp listener.
    let mut first = [0u8; 1];
    let mut reply = Vec::new();
    loop {
        match stream.read(&mut first) {
            Ok(0) | Err(_) => break,
            Ok(_) if first[0] == seccomp_agent::LISTENER_MARK => {
                hand_listener_to_agent(spec.as_ref(), &state, &stream)?;
            }
            Ok(_) => {
                reply.push(first[0]);
                let _ = stream.read_to_end(&mut reply);
                break;
            }
        }
    }
    if !reply.is_empty() {
        let error: Error = serde_json::from_slice(&reply)
            .unwrap_or_else(|_| Error::other("starting the container", String::from_utf8_lossy(&reply).into_owned()));
        return Err(error);
    }
    globals.step(|| format!("start {id}: the init exec'd the process"));
    if let Some(spec) = spec {
        let hook_state = HookState::new(&spec, id, "running", Some(state.pid), &state.bundle);
        for warning in hooks::run_all(hooks::Kind::Poststart, &spec, &hook_state) {
            (globals.warn)(&warning);
        }
    }
    Ok(())
}
