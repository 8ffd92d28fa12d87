//! AppArmor profiles and SELinux labels: applied to the process's exec
//! where the host runs that security module, and otherwise ignored with a
//! warning (a host without them cannot confine by them, and refusing
//! would make specs written for other hosts unusable).

use std::path::Path;

use oci_spec::runtime::Process;

use crate::error::{Error, Result};

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.trim() == "Y")
}

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// What the host cannot apply, as warnings naming the field (the runtime
/// reports them; the process goes on without).
pub fn unsupported(process: &Process) -> Vec<Error> {
    let mut warnings = Vec::new();
    if process.apparmor_profile().as_deref().is_some_and(|p| !p.is_empty()) && !apparmor_enabled() {
        warnings.push(Error::invalid(
            "process.apparmorProfile",
            "ignored: AppArmor is not enabled on this host",
        ));
    }
    if process.selinux_label().as_deref().is_some_and(|l| !l.is_empty()) && !selinux_enabled() {
        warnings.push(Error::invalid(
            "process.selinuxLabel",
            "ignored: SELinux is not enabled on this host",
        ));
    }
    warnings
}

fn write_exec_attr(file: &str, value: &str, field: &str) -> Result<()> {
    std::fs::write(file, value).map_err(|e| Error::io(format!("applying {field}"), file, &e))
}

/// Sets the labels the process's exec takes on, where the host has the
/// module; the last step before the exec.
pub fn apply(process: &Process) -> Result<()> {
    if let Some(profile) = process.apparmor_profile().as_deref().filter(|p| !p.is_empty())
        && apparmor_enabled()
    {
        let file = if Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        write_exec_attr(file, &format!("exec {profile}"), "process.apparmorProfile")?;
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty())
        && selinux_enabled()
    {
        write_exec_attr("/proc/self/attr/exec", label, "process.selinuxLabel")?;
    }
    Ok(())
}
