//! The spec's seccomp profile as a kernel filter, through libseccomp (the
//! library runc and crun use): it resolves syscall names per architecture
//! from its own tables and compiles per-rule actions, errno values,
//! argument conditions and filter flags exactly as OCI profiles mean them.
//!
//! The filter is built twice: once by the runtime before anything is made
//! (so a bad profile fails create and changes nothing), and again by the
//! process itself, which loads it last before its exec.

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};

use crate::error::{Error, Result};

fn action(kind: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<ScmpAction> {
    let errno = errno.map_or(Ok(libc::EPERM), |e| {
        i32::try_from(e).map_err(|_| Error::invalid(format!("{field}.errnoRet"), "out of range"))
    })?;
    Ok(match kind {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(u16::try_from(errno).unwrap_or(u16::MAX)),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    })
}

fn compare(op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> (ScmpCompareOp, u64) {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, value),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // The profile's value is the mask, valueTwo the value compared.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    }
}

fn failed(field: &str, e: libseccomp::error::SeccompError) -> Error {
    Error::invalid(field, e.to_string())
}

/// Compiles the profile (without loading it); errors name the field.
pub fn build(profile: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let default = action(
        profile.default_action(),
        profile.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    let mut filter = ScmpFilterContext::new(default).map_err(|e| failed("linux.seccomp.defaultAction", e))?;
    for (i, arch) in profile.architectures().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.architectures[{i}]");
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let arch: ScmpArch = name.parse().map_err(|e| failed(&field, e))?;
        filter.add_arch(arch).map_err(|e| failed(&field, e))?;
    }
    for flag in profile.flags().iter().flatten() {
        let set = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => filter.set_ctl_log(true).map(|_| ()),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => filter.set_ctl_tsync(true).map(|_| ()),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => filter.set_ctl_ssb(true).map(|_| ()),
            // Only meaningful with a notify listener, which berth does not offer.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => Ok(()),
        };
        set.map_err(|e| failed("linux.seccomp.flags", e))?;
    }
    for (i, rule) in profile.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(rule.action(), rule.errno_ret(), &field)?;
        if act == default {
            // libseccomp refuses a rule that repeats the default; it changes nothing.
            continue;
        }
        let conditions: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|arg| {
                let (op, datum) = compare(arg.op(), arg.value(), arg.value_two());
                ScmpArgCompare::new(arg.index() as u32, op, datum)
            })
            .collect();
        for (j, name) in rule.names().iter().enumerate() {
            let name_field = format!("{field}.names[{j}]");
            let syscall = ScmpSyscall::from_name(name)
                .map_err(|_| Error::invalid(&name_field, format!("unknown system call {name:?}")))?;
            filter
                .add_rule_conditional(act, syscall, &conditions)
                .map_err(|e| failed(&name_field, e))?;
        }
    }
    Ok(filter)
}

/// A profile that hands syscalls to a user-space agent (SCMP_ACT_NOTIFY)
/// is checked before anything is made, with runc's errors: `write` cannot
/// be handed over (the process's report to the runtime goes through it),
/// and the agent needs a `listenerPath`. The agent itself is reached when
/// the filter is loaded (see [`crate::seccomp_agent`]).
pub fn check_notify(profile: &LinuxSeccomp) -> Result<()> {
    if !crate::seccomp_agent::uses_notify(profile) {
        return Ok(());
    }
    let notified = |rule: &&oci_spec::runtime::LinuxSyscall| rule.action() == LinuxSeccompAction::ScmpActNotify;
    for (i, rule) in profile.syscalls().iter().flatten().enumerate() {
        if let Some(j) = Some(rule)
            .filter(notified)
            .and_then(|r| r.names().iter().position(|n| n == "write"))
        {
            return Err(Error::invalid(
                format!("linux.seccomp.syscalls[{i}].names[{j}]"),
                "SCMP_ACT_NOTIFY cannot be used for the write syscall",
            ));
        }
    }
    crate::seccomp_agent::listener_path(profile).map(|_| ())
}

/// Gives a notify listener (the descriptor's number in this process) to
/// the runtime, which passes it on to the agent; returns once the agent
/// has it.
pub type HandOff<'a> = &'a mut dyn FnMut(std::os::fd::RawFd) -> Result<()>;

/// Builds and loads the profile into this process; a profile with notify
/// rules has its listener handed to the agent through `hand_off` before
/// this returns.
pub fn load(profile: &LinuxSeccomp, hand_off: HandOff<'_>) -> Result<()> {
    let filter = build(profile)?;
    filter
        .load()
        .map_err(|e| Error::other("loading the seccomp filter", e.to_string()))?;
    if crate::seccomp_agent::uses_notify(profile) {
        let listener = filter
            .get_notify_fd()
            .map_err(|e| Error::other("loading the seccomp filter", format!("no notify listener: {e}")))?;
        hand_off(listener)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_profile_compiles_and_bad_names_are_named() {
        let good = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_NE"}]},
                {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}
            ]
        }));
        build(&good).unwrap();
        let bad = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read", "teleport"], "action": "SCMP_ACT_ERRNO"}]
        }));
        let err = build(&bad).unwrap_err();
        assert_eq!(err.subject.as_deref(), Some("linux.seccomp.syscalls[0].names[1]"));
    }
}
