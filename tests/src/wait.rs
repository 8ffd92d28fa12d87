//! Bounded waiting: every wait in the suite has a deadline.

use std::time::{Duration, Instant};

/// Polls `probe` every 10 ms until it returns `Some`, or panics with `what`
/// after `limit`.
pub fn until<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
