//! Wall-clock timestamps as the API carries them.
//!
//! containerd 1.6 clients treat timestamps as non-nullable, so every record
//! berth returns has them filled in from these helpers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

/// The current time.
pub fn now() -> Timestamp {
    from_system_time(SystemTime::now())
}

/// Converts a `SystemTime` (times before 1970 clamp to the epoch).
pub fn from_system_time(time: SystemTime) -> Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        // Always below one billion, so it fits.
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// Converts back; negative or malformed timestamps clamp to the epoch.
pub fn to_system_time(timestamp: &Timestamp) -> SystemTime {
    let seconds = u64::try_from(timestamp.seconds).unwrap_or(0);
    let nanos = u32::try_from(timestamp.nanos).unwrap_or(0).min(999_999_999);
    UNIX_EPOCH + Duration::new(seconds, nanos)
}

/// Whether a timestamp is unset or zero (the Go zero time is also refused
/// for forwarded events).
pub fn is_zero(timestamp: Option<&Timestamp>) -> bool {
    timestamp.is_none_or(|t| t.seconds == 0 && t.nanos == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = SystemTime::now();
        let back = to_system_time(&from_system_time(t));
        assert_eq!(back, t);
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(None));
        assert!(is_zero(Some(&Timestamp::default())));
        assert!(!is_zero(Some(&now())));
    }
}
