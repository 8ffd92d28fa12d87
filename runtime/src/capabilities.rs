//! The process's capability sets, as the spec lists them.
//!
//! Order matters, as the kernel checks each step: the bounding set is cut
//! while the process is still root with every capability (dropping needs
//! CAP_SETPCAP); `keepcaps` keeps the permitted set across the switch to
//! the spec's uid; then effective, permitted and inheritable are set (the
//! effective set first, since it must stay within the permitted one), and
//! ambient capabilities, which need to be both permitted and inheritable,
//! are raised last (those that are not are left out, as runc does).

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, Process};

use crate::error::{Error, Result};

/// The five sets, parsed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CapabilityPlan {
    /// The bounding set.
    pub bounding: CapsHashSet,
    /// The effective set.
    pub effective: CapsHashSet,
    /// The permitted set.
    pub permitted: CapsHashSet,
    /// The inheritable set.
    pub inheritable: CapsHashSet,
    /// The ambient set.
    pub ambient: CapsHashSet,
}

fn parse_set(names: Option<&Capabilities>, field: &str) -> Result<CapsHashSet> {
    let mut set = CapsHashSet::new();
    for (i, cap) in names.into_iter().flatten().enumerate() {
        // oci-spec has already turned the name into a known capability
        // (and prints it without the prefix); it must also be one this
        // kernel interface knows.
        let name = format!("CAP_{}", cap.to_string().trim_start_matches("CAP_"));
        let parsed: Capability = name
            .parse()
            .map_err(|_| Error::invalid(format!("{field}[{i}]"), format!("unknown capability {name:?}")))?;
        set.insert(parsed);
    }
    Ok(set)
}

/// The spec's capabilities, or None when the spec lists none (the
/// process keeps what it has, as runc does).
pub fn plan(process: &Process) -> Result<Option<CapabilityPlan>> {
    let Some(caps) = process.capabilities() else {
        return Ok(None);
    };
    Ok(Some(CapabilityPlan {
        bounding: parse_set(caps.bounding().as_ref(), "process.capabilities.bounding")?,
        effective: parse_set(caps.effective().as_ref(), "process.capabilities.effective")?,
        permitted: parse_set(caps.permitted().as_ref(), "process.capabilities.permitted")?,
        inheritable: parse_set(caps.inheritable().as_ref(), "process.capabilities.inheritable")?,
        ambient: parse_set(caps.ambient().as_ref(), "process.capabilities.ambient")?,
    }))
}

fn failed(step: &str, e: caps::errors::CapsError) -> Error {
    Error::other(step.to_string(), e.to_string())
}

/// Cuts the bounding set and keeps capabilities across the uid change;
/// before the process becomes the spec's user.
pub fn before_user_change(plan: &CapabilityPlan) -> Result<()> {
    for cap in caps::runtime::thread_all_supported() {
        if !plan.bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| failed(&format!("dropping {cap} from the bounding set"), e))?;
        }
    }
    caps::securebits::set_keepcaps(true).map_err(|e| failed("keeping capabilities across the uid change", e))
}

/// Sets the effective, permitted, inheritable and ambient sets; after the
/// process became the spec's user.
pub fn after_user_change(plan: &CapabilityPlan) -> Result<()> {
    caps::securebits::set_keepcaps(false).map_err(|e| failed("clearing keepcaps", e))?;
    // Inheritable first: a capability may join it only while it is still
    // permitted (or CAP_SETPCAP is effective), which the next two steps end.
    caps::set(None, CapSet::Inheritable, &plan.inheritable)
        .map_err(|e| failed("setting process.capabilities.inheritable", e))?;
    caps::set(None, CapSet::Effective, &plan.effective)
        .map_err(|e| failed("setting process.capabilities.effective", e))?;
    caps::set(None, CapSet::Permitted, &plan.permitted)
        .map_err(|e| failed("setting process.capabilities.permitted", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| failed("clearing the ambient set", e))?;
    for cap in &plan.ambient {
        // As runc: an ambient capability the kernel refuses (one not both
        // permitted and inheritable, as in the default spec) is left out,
        // with a warning, rather than failing the container.
        if let Err(e) = caps::raise(None, CapSet::Ambient, *cap) {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "warning: can't raise ambient capability {cap}: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_sets_parse() {
        let spec = crate::spec::parse(&crate::spec::default_spec_json()).unwrap();
        let plan = plan(spec.process().as_ref().unwrap()).unwrap().unwrap();
        assert!(plan.bounding.contains(&Capability::CAP_KILL));
        assert!(!plan.bounding.contains(&Capability::CAP_CHOWN));
        assert!(!plan.bounding.contains(&Capability::CAP_SYS_ADMIN));
        assert_eq!(plan.bounding, plan.effective);
    }
}
