//! `kill`: signal a container's init, or every process in it.

use nix::sys::signal::Signal;

use super::{Globals, load};
use crate::error::{Error, Result};
use crate::state::Status;

/// Parses a signal as runc does: a number, `KILL`, or `SIGKILL`.
pub fn parse_signal(text: &str) -> Result<Signal> {
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| Error::invalid("signal", format!("unknown signal {text:?}")));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| Error::invalid("signal", format!("unknown signal {text:?}")))
}

/// Sends `signal` to container `id` (`all`: to every process in its cgroup).
pub fn kill(globals: &Globals, id: &str, signal: Signal, all: bool) -> Result<()> {
    let (state, cgroup, status) = load(globals, id)?;
    if all {
        return cgroup.signal_all(signal);
    }
    if status == Status::Stopped {
        return Err(Error::precondition(id, "container not running"));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid), signal)
        .map_err(|e| Error::nix("signalling the container", format!("pid {}", state.pid), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_and_name() {
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
    }
}
