//! Feeds arbitrary text to the filter parser: it must never panic, must
//! refuse with InvalidArgument only, and whatever it accepts must be
//! matchable against any object without panicking.

#![no_main]

use std::borrow::Cow;

use berth_core::ErrorKind;
use berth_core::filters::{Adaptor, Filter};
use libfuzzer_sys::fuzz_target;

/// An object where every path is present and its value is the joined path,
/// except paths starting with "absent".
struct Everything;

impl Adaptor for Everything {
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        if path.first().is_some_and(|p| p.starts_with("absent")) {
            None
        } else {
            Some(Cow::Owned(path.join(".")))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Newlines separate filters, so one input also exercises the OR of several.
    let filters: Vec<&str> = text.split('\n').collect();
    match Filter::parse_all(&filters) {
        Ok(filter) => {
            let _ = filter.matches(&Everything);
            let _ = filter.uses_field("event");
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}"),
    }
});
