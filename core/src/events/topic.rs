//! Event topics: `/`-separated identifiers such as `/tasks/exit`.

use crate::error::{Error, Result};
use crate::identifiers;

/// Checks a topic as containerd does: a leading `/`, then one or more
/// components that are each valid identifiers.
pub fn validate(topic: &str) -> Result<()> {
    let rest = topic
        .strip_prefix('/')
        .ok_or_else(|| Error::invalid_argument(format!("topic {topic:?} must start with '/'")))?;
    if rest.is_empty() {
        return Err(Error::invalid_argument(format!(
            "topic {topic:?} must have at least one component"
        )));
    }
    for component in rest.split('/') {
        identifiers::validate("topic component", component).map_err(|e| e.with_context(format!("topic {topic:?}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_known_topics() {
        for topic in ["/tasks/exit", "/tasks/exec-added", "/namespaces/create", "/x"] {
            validate(topic).unwrap();
        }
    }

    #[test]
    fn rejects_malformed_topics() {
        for topic in ["", "/", "tasks/exit", "/tasks//exit", "/tasks/", "/a b", "/-x"] {
            let err = validate(topic).unwrap_err();
            assert!(err.to_string().contains(&format!("{topic:?}")), "{err}");
        }
    }
}
