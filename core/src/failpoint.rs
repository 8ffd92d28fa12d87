//! Failpoints: named places where a test can make the daemon (or a shim)
//! crash, fail or stall, to prove that a crash at any step leaves a
//! consistent state.
//!
//! `BERTH_FAILPOINTS="name=action[,name=action…]"`, read once; actions:
//! `exit` (the process ends at once with status 137, no cleanup, as a
//! SIGKILL would), `error` (the step fails), `sleep(ms)`. Without the
//! variable every check is a lookup in an empty map.
//!
//! Only builds with the cargo feature `failpoints` (what the test command
//! builds) have them: elsewhere [`check`] is an empty function and the
//! variable means nothing, so no release build can be made to stall or
//! crash by its environment.

use std::collections::HashMap;
#[cfg(feature = "failpoints")]
use std::sync::OnceLock;
use std::time::Duration;

#[cfg(feature = "failpoints")]
use crate::error::Error;
use crate::error::Result;

/// The environment variable naming the failpoints.
pub const ENV: &str = "BERTH_FAILPOINTS";

/// Whether this build has failpoints (and the other test-only hooks that
/// follow the same switch).
pub const ENABLED: bool = cfg!(feature = "failpoints");

#[cfg_attr(not(any(test, feature = "failpoints")), allow(dead_code))]
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Exit,
    Error,
    Sleep(Duration),
}

#[cfg_attr(not(any(test, feature = "failpoints")), allow(dead_code))]
fn parse(text: &str) -> HashMap<String, Action> {
    text.split(',')
        .filter_map(|pair| {
            let (name, action) = pair.trim().split_once('=')?;
            let action = match action.trim() {
                "exit" => Action::Exit,
                "error" => Action::Error,
                other => {
                    let ms = other.strip_prefix("sleep(")?.strip_suffix(')')?.parse().ok()?;
                    Action::Sleep(Duration::from_millis(ms))
                }
            };
            Some((name.trim().to_string(), action))
        })
        .collect()
}

#[cfg(feature = "failpoints")]
fn active() -> &'static HashMap<String, Action> {
    static ACTIVE: OnceLock<HashMap<String, Action>> = OnceLock::new();
    ACTIVE.get_or_init(|| std::env::var(ENV).map(|v| parse(&v)).unwrap_or_default())
}

/// Passes through failpoint `name`: nothing, in a build without them.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_name: &str) -> Result<()> {
    Ok(())
}

/// Passes through failpoint `name`: crashes, fails or stalls there when a
/// test asked for it.
#[cfg(feature = "failpoints")]
pub fn check(name: &str) -> Result<()> {
    match active().get(name) {
        None => Ok(()),
        Some(Action::Exit) => {
            tracing::warn!(failpoint = name, "failpoint: exiting");
            // SAFETY: _exit ends the process at once; nothing runs after it.
            unsafe { libc::_exit(137) }
        }
        Some(Action::Error) => Err(Error::internal(format!("failpoint {name}"))),
        Some(Action::Sleep(duration)) => {
            std::thread::sleep(*duration);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let points = parse("a=exit, b=error,c=sleep(20),d=bogus");
        assert_eq!(points.get("a"), Some(&Action::Exit));
        assert_eq!(points.get("b"), Some(&Action::Error));
        assert_eq!(points.get("c"), Some(&Action::Sleep(Duration::from_millis(20))));
        assert!(!points.contains_key("d"));
    }
}
