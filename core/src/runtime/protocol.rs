//! The versioned contract between berthd and berth's shims, so a newer
//! daemon can take over shims an older one started.
//!
//! The rule: the shim's ttrpc API is containerd's `containerd.task.v2.Task`
//! and the bundle layout is `<state>/tasks/<ns>/<id>/` with `config.json`,
//! `rootfs/`, `work`, `log`, `address`, `shim.pid` and `shim-binary-path`.
//! Anything a daemon must understand to drive a running shim (a new
//! required call, a changed file in the bundle, a changed meaning) bumps
//! [`PROTOCOL`]; additions an older daemon can ignore do not. A shim tells
//! its version in `Connect` (`berth <release> protocol <n>`). A daemon
//! takes over shims of any protocol up to its own; a shim of a newer
//! protocol is refused with a message and left running, untouched, for a
//! daemon that knows it. Shims of other projects (containerd's runc shim)
//! speak containerd's protocol and are always taken over.

/// The protocol version of this build.
pub const PROTOCOL: u32 = 1;

/// What a berth shim answers in `Connect.version`.
pub fn advertised(release: &str) -> String {
    format!("berth {release} protocol {PROTOCOL}")
}

/// The protocol a `Connect.version` names: Some for berth shims.
pub fn of(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("berth ")?;
    let (_, protocol) = rest.split_once(" protocol ")?;
    protocol.trim().parse().ok()
}

/// Whether this daemon can drive a shim that answered `version`.
pub fn supported(version: &str) -> Result<(), String> {
    match of(version) {
        Some(n) if n > PROTOCOL => Err(format!(
            "the shim speaks berth shim protocol {n}; this berthd knows protocols up to {PROTOCOL}"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_and_judged() {
        assert_eq!(of(&advertised("0.1.0")), Some(PROTOCOL));
        assert!(supported(&advertised("0.1.0")).is_ok());
        assert!(
            supported("berth 9.9.9 protocol 99")
                .unwrap_err()
                .contains("protocol 99")
        );
        assert!(supported("1.6.20").is_ok(), "containerd's shims are taken over");
        assert_eq!(of("berth 0.1.0"), None);
    }
}
