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

/// A change to an object's labels, as field masks express it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelUpdate {
    /// Replace every label with these (an empty mask, or the path `labels`).
    ReplaceAll(HashMap<String, String>),
    /// Set or, when the value is empty, remove single keys (`labels.<key>`).
    Keys(Vec<(String, String)>),
}

impl LabelUpdate {
    /// Checks the new labels and applies them; an empty value removes a
    /// key, so no stored label is ever empty.
    pub fn apply(self, labels: &mut HashMap<String, String>) -> Result<()> {
        match self {
            Self::ReplaceAll(new) => {
                validate_all(&new)?;
                *labels = new.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            }
            Self::Keys(pairs) => {
                for (key, value) in &pairs {
                    validate(key, value)?;
                }
                for (key, value) in pairs {
                    if value.is_empty() {
                        labels.remove(&key);
                    } else {
                        labels.insert(key, value);
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads an update mask whose only mutable field is `labels` (as for
    /// namespaces, content and leases); other paths are refused naming
    /// `object`.
    pub fn from_mask(object: &str, labels: HashMap<String, String>, paths: &[String]) -> Result<Self> {
        let mut keys = Vec::new();
        for path in paths {
            if path == "labels" {
                return Ok(Self::ReplaceAll(labels));
            }
            match path.strip_prefix("labels.") {
                Some(key) if !key.is_empty() => {
                    keys.push((key.to_string(), labels.get(key).cloned().unwrap_or_default()));
                }
                _ => {
                    return Err(Error::invalid_argument(format!(
                        "{object}: cannot update {path:?} field"
                    )));
                }
            }
        }
        if paths.is_empty() {
            Ok(Self::ReplaceAll(labels))
        } else {
            Ok(Self::Keys(keys))
        }
    }
}

/// Keeps only non-empty labels (an empty value means "no label").
pub fn without_empty(labels: HashMap<String, String>) -> HashMap<String, String> {
    labels.into_iter().filter(|(_, v)| !v.is_empty()).collect()
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
        assert!(err.to_string().len() < 300, "message quotes only part of the key");
        assert_eq!(validate("", "x").unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn masks_map_to_updates() {
        let l = map(&[("c", "d")]);
        assert_eq!(
            LabelUpdate::from_mask("x", l.clone(), &[]).unwrap(),
            LabelUpdate::ReplaceAll(l.clone())
        );
        assert_eq!(
            LabelUpdate::from_mask("x", l.clone(), &["labels".into()]).unwrap(),
            LabelUpdate::ReplaceAll(l.clone())
        );
        assert_eq!(
            LabelUpdate::from_mask("x", l.clone(), &["labels.c".into(), "labels.gone".into()]).unwrap(),
            LabelUpdate::Keys(vec![("c".into(), "d".into()), ("gone".into(), String::new())])
        );
        // Everything after "labels." is the key, dots and slashes included.
        assert_eq!(
            LabelUpdate::from_mask("x", map(&[("a.b/c", "1")]), &["labels.a.b/c".into()]).unwrap(),
            LabelUpdate::Keys(vec![("a.b/c".into(), "1".into())])
        );
        for path in ["name", "labels.", "annotations"] {
            let err = LabelUpdate::from_mask("namespace \"n1\"", HashMap::new(), &[path.to_string()]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.to_string().starts_with("namespace \"n1\": cannot update"), "{err}");
        }
    }

    #[test]
    fn updates_merge_and_empty_values_delete() {
        let mut labels = map(&[("a", "b"), ("x", "y")]);
        LabelUpdate::Keys(vec![("c".into(), "d".into()), ("x".into(), String::new())])
            .apply(&mut labels)
            .unwrap();
        assert_eq!(labels, map(&[("a", "b"), ("c", "d")]));
        LabelUpdate::ReplaceAll(map(&[("z", "1"), ("e", "")]))
            .apply(&mut labels)
            .unwrap();
        assert_eq!(labels, map(&[("z", "1")]));
        let before = labels.clone();
        assert!(
            LabelUpdate::Keys(vec![("ok".into(), "1".into()), ("".into(), "v".into())])
                .apply(&mut labels)
                .is_err()
        );
        assert_eq!(labels, before, "a refused update changes nothing");
    }

    #[test]
    fn validate_all_reports_the_bad_label() {
        let labels = HashMap::from([("ok".to_string(), "1".to_string()), ("".to_string(), "2".to_string())]);
        assert!(validate_all(&labels).is_err());
    }
}
