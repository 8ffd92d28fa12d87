//! Failpoints: named places where a test can make the daemon (or a shim)
//! crash, fail or stall, to prove that a crash at any step leaves a
//! consistent state.
//!
//! `BERTH_FAILPOINTS="name=action[,name=action…]"`, read once; actions:
//! `exit` (the process ends at once with status 137, no cleanup, as a
//! SIGKILL would), `error` (the step fails), `sleep(ms)`. Without the
//! variable every check is a lookup in an empty map.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};

/// The environment variable naming the failpoints.
pub const ENV: &str = "BERTH_FAILPOINTS";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Exit,
    Error,
    Sleep(Duration),
}

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

fn active() -> &'static HashMap<String, Action> {
    static ACTIVE: OnceLock<HashMap<String, Action>> = OnceLock::new();
    ACTIVE.get_or_init(|| std::env::var(ENV).map(|v| parse(&v)).unwrap_or_default())
}

/// Passes through failpoint `name`: crashes, fails or stalls there when a
/// test asked for it.
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
