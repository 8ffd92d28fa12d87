//! `kill`: signal a container's init, or every process in it.

use nix::sys::signal::Signal;

use super::{Globals, load};
use crate::error::{Error, Result};
use crate::state::Status;

/// Parses a signal as runc does: a number, `KILL`, or `SIGKILL`; `0`
/// (None) only checks that the process is there.
pub fn parse_signal(text: &str) -> Result<Option<Signal>> {
    if let Ok(number) = text.parse::<i32>() {
        if number == 0 {
            return Ok(None);
        }
        return Signal::try_from(number)
            .map(Some)
            .map_err(|_| Error::invalid("signal", format!("unknown signal {text:?}")));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map(Some)
        .map_err(|_| Error::invalid("signal", format!("unknown signal {text:?}")))
}

/// Sends `signal` to container `id` (`all`: to every process in its
/// cgroup, which for a stopped container is no one and no error).
pub fn kill(globals: &Globals, id: &str, signal: impl Into<Option<Signal>>, all: bool) -> Result<()> {
    let signal = signal.into();
    let (state, cgroup, status) = load(globals, id)?;
    if all {
        return match signal {
            Some(signal) => cgroup.signal_all(signal),
            None => Ok(()),
        };
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
        assert_eq!(parse_signal("9").unwrap(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("TERM").unwrap(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("sigusr1").unwrap(), Some(Signal::SIGUSR1));
        assert_eq!(parse_signal("0").unwrap(), None);
        assert!(parse_signal("NOPE").is_err());
    }
}
