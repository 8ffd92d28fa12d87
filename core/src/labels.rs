//! Label rules: every object's labels are checked the same way.
//!
//! containerd limits each key plus value to 4096 bytes; berth does too, and
//! also refuses an empty key, which no client can address in a filter or a
//! field mask.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Largest key plus value, in bytes.
pub const MAX_PAIR_SIZE: usize = 4096;

/// How much of an over-long key an error message quotes.
const KEY_EXCERPT: usize = 64;

/// Checks one label.
pub fn validate(key: &str, value: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument("label key must not be empty"));
    }
    let total = key.len() + value.len();
    if total > MAX_PAIR_SIZE {
        let excerpt: String = key.chars().take(KEY_EXCERPT).collect();
        return Err(Error::invalid_argument(format!(
            "label {excerpt:?}: key and value length ({total} bytes) greater than maximum size ({MAX_PAIR_SIZE} bytes)"
        )));
    }
    Ok(())
}

/// Checks every label of a map.
pub fn validate_all(labels: &HashMap<String, String>) -> Result<()> {
    labels.iter().try_for_each(|(k, v)| validate(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn accepts_up_to_the_limit() {
        validate("a", "b").unwrap();
        validate("containerd.io/gc.ref.content.l.0", "sha256:abc").unwrap();
        validate("k", &"v".repeat(MAX_PAIR_SIZE - 1)).unwrap();
        validate("k", "").unwrap();
    }

    #[test]
    fn rejects_over_the_limit_and_empty_keys() {
        let err = validate("k", &"v".repeat(MAX_PAIR_SIZE)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("4097 bytes"), "{err}");
        assert!(err.to_string().starts_with("label \"k\""), "{err}");
        let err = validate(&"k".repeat(5000), "").unwrap_err();
        assert!(
            err.to_string().len() < 300,
            "message quotes only part of the key"
        );
        assert_eq!(
            validate("", "x").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn validate_all_reports_the_bad_label() {
        let labels = HashMap::from([
            ("ok".to_string(), "1".to_string()),
            ("".to_string(), "2".to_string()),
        ]);
        assert!(validate_all(&labels).is_err());
    }
}
