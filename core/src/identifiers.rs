//! Identifier rules for namespaces, container ids, lease ids and exec ids.
//!
//! The same rule as containerd's, so that every id one accepts the other
//! does: `^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$`, at most 76 characters. Ids end
//! up in paths and mount options, which is why separators may neither lead,
//! trail nor repeat.

use crate::error::{Error, Result};

/// Longest identifier accepted.
pub const MAX_LENGTH: usize = 76;

/// The rule, as shown in error messages.
pub const PATTERN: &str = "^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$";

/// Checks `id`; `what` names the object in the error (e.g. `namespace`).
pub fn validate(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid_argument(format!("{what} must not be empty")));
    }
    if id.len() > MAX_LENGTH {
        return Err(Error::invalid_argument(format!(
            "{what} {id:?} is longer than the maximum of {MAX_LENGTH} characters"
        )));
    }
    if !matches_pattern(id) {
        return Err(Error::invalid_argument(format!("{what} {id:?} must match {PATTERN}")));
    }
    Ok(())
}

fn matches_pattern(id: &str) -> bool {
    let mut previous_was_separator = true; // forbids a leading separator
    for byte in id.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => previous_was_separator = false,
            b'.' | b'_' | b'-' if !previous_was_separator => previous_was_separator = true,
            _ => return false,
        }
    }
    !previous_was_separator // forbids a trailing separator
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn accepts_containerd_identifiers() {
        for id in ["default", "k8s.io", "a", "A9", "a-b_c.d", "x1-2-3", &"a".repeat(76)] {
            validate("namespace", id).unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }

    #[test]
    fn rejects_everything_else() {
        for id in [
            "",
            "-a",
            "a-",
            ".a",
            "a.",
            "a..b",
            "a-_b",
            "a b",
            "a/b",
            "ä",
            "a\0",
            "A:b",
            &"a".repeat(77),
        ] {
            let err = validate("namespace", id).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{id:?}");
        }
    }

    #[test]
    fn errors_name_the_object_and_value() {
        let err = validate("namespace", "Bad Name").unwrap_err();
        assert_eq!(
            err.to_string(),
            "namespace \"Bad Name\" must match ^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$: invalid argument"
        );
        let err = validate("container id", &"x".repeat(80)).unwrap_err();
        assert!(err.to_string().contains("longer than the maximum of 76"));
        assert_eq!(
            validate("lease id", "").unwrap_err().to_string(),
            "lease id must not be empty: invalid argument"
        );
    }
}
