//! Reading and checking a bundle's `config.json`.
//!
//! The spec is parsed with oci-spec, after a first pass over the raw JSON
//! that names the field of the errors people make most (an unknown
//! namespace type, a relative mount destination), so a bad config is
//! refused with the field in the message before anything is created.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// The namespace types berth knows, as the spec names them.
const NAMESPACE_TYPES: [&str; 8] = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"];

/// A bundle: its directory, its parsed spec and its root filesystem.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// The bundle directory (absolute).
    pub dir: PathBuf,
    /// The parsed `config.json`.
    pub spec: Spec,
    /// The root filesystem (absolute).
    pub rootfs: PathBuf,
}

/// Reads and checks `<dir>/config.json`.
pub fn load_bundle(dir: &Path) -> Result<Bundle> {
    let dir = std::path::absolute(dir).map_err(|e| Error::io("resolving the bundle", dir, &e))?;
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, &e))?;
    let spec = parse(&text)?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::invalid("root", "the spec has no root filesystem"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    match std::fs::metadata(&rootfs) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(Error::invalid(
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ));
        }
        Err(e) => return Err(Error::invalid("root.path", format!("{}: {e}", rootfs.display()))),
    }
    Ok(Bundle { dir, spec, rootfs })
}

/// Parses and checks a spec's text.
pub fn parse(text: &str) -> Result<Spec> {
    let mut raw: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::invalid("config.json", e.to_string()))?;
    for unknown in drop_unknown_capabilities(&mut raw) {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "warning: ignoring unknown or unavailable capability {unknown}"
        );
    }
    check_raw(&raw)?;
    let spec: Spec = serde_json::from_value(raw).map_err(|e| Error::invalid("config.json", e.to_string()))?;
    check(&spec)?;
    Ok(spec)
}

/// Takes capability names this runtime does not know out of the process's
/// sets, and returns them: runc warns of them and runs the container
/// without them (a spec written for a newer kernel still runs).
pub fn drop_unknown_capabilities(raw: &mut serde_json::Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let Some(sets) = raw.pointer_mut("/process/capabilities").and_then(|c| c.as_object_mut()) else {
        return unknown;
    };
    for names in sets.values_mut().filter_map(|v| v.as_array_mut()) {
        names.retain(|name| {
            // Anything but a name is left for check_raw to refuse.
            let Some(text) = name.as_str() else { return true };
            let known = text.parse::<caps::Capability>().is_ok()
                && serde_json::from_value::<oci_spec::runtime::Capability>(name.clone()).is_ok();
            if !known && !unknown.iter().any(|u| u == text) {
                unknown.push(text.to_string());
            }
            known
        });
    }
    unknown
}

/// Checks the fields whose serde errors would not say where they are.
fn check_raw(raw: &serde_json::Value) -> Result<()> {
    if let Some(namespaces) = raw.pointer("/linux/namespaces").and_then(|v| v.as_array()) {
        let mut seen = HashSet::new();
        for (i, ns) in namespaces.iter().enumerate() {
            let field = format!("linux.namespaces[{i}].type");
            let kind = ns
                .get("type")
                .and_then(|t| t.as_str())
                .ok_or_else(|| Error::invalid(&field, "missing"))?;
            let canonical = match kind {
                "mnt" => "mount",
                "net" => "network",
                other => other,
            };
            if !NAMESPACE_TYPES.contains(&canonical) {
                return Err(Error::invalid(
                    &field,
                    format!(
                        "unknown namespace type {kind:?} (known: {})",
                        NAMESPACE_TYPES.join(", ")
                    ),
                ));
            }
            if !seen.insert(canonical.to_string()) {
                return Err(Error::invalid(&field, format!("namespace {kind:?} is listed twice")));
            }
        }
    }
    if let Some(sets) = raw.pointer("/process/capabilities").and_then(|v| v.as_object()) {
        for (set, names) in sets {
            for (i, name) in names.as_array().into_iter().flatten().enumerate() {
                let field = format!("process.capabilities.{set}[{i}]");
                let text = name.as_str().ok_or_else(|| Error::invalid(&field, "not a string"))?;
                if text.parse::<caps::Capability>().is_err() {
                    return Err(Error::invalid(&field, format!("unknown capability {text:?}")));
                }
            }
        }
    }
    if let Some(mounts) = raw.get("mounts").and_then(|v| v.as_array()) {
        for (i, m) in mounts.iter().enumerate() {
            let field = format!("mounts[{i}].destination");
            let dest = m
                .get("destination")
                .and_then(|d| d.as_str())
                .ok_or_else(|| Error::invalid(&field, "missing"))?;
            if !dest.starts_with('/') {
                return Err(Error::invalid(&field, format!("{dest:?} is not an absolute path")));
            }
            if Path::new(dest).components().any(|c| c == Component::ParentDir) {
                return Err(Error::invalid(&field, format!("{dest:?} contains \"..\"")));
            }
        }
    }
    Ok(())
}

/// Checks a process (the spec's, or one for exec): a command, an absolute
/// working directory, capabilities this kernel interface knows.
pub fn check_process(process: &oci_spec::runtime::Process) -> Result<()> {
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::invalid("process.args", "no command to run"));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::invalid(
            "process.cwd",
            format!("{} is not an absolute path", process.cwd().display()),
        ));
    }
    crate::ids::check_user(process.user())?;
    crate::capabilities::plan(process).map(|_| ())
}

/// Checks what the parsed spec must satisfy.
fn check(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::invalid("process", "the spec has no process"))?;
    check_process(process)?;
    let has = |kind: LinuxNamespaceType| {
        spec.linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|n| n.iter().any(|ns| ns.typ() == kind && ns.path().is_none()))
    };
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        return Err(Error::invalid(
            "hostname",
            "setting a hostname needs a new uts namespace",
        ));
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        return Err(Error::invalid(
            "domainname",
            "setting a domain name needs a new uts namespace",
        ));
    }
    if let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref())
        && path.components().any(|c| c == Component::ParentDir)
    {
        return Err(Error::invalid(
            "linux.cgroupsPath",
            format!("{} contains \"..\"", path.display()),
        ));
    }
    Ok(())
}

/// The spec `berth-runc spec` writes: runc's defaults (a shell in a new set
/// of namespaces, a read-only root, the usual /proc, /dev and /sys mounts,
/// masked and read-only paths).
pub fn default_spec_json() -> String {
    let spec = serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "berth",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    // A cgroup namespace only on a cgroup2-only host, as runc's default:
    // on v1 and hybrid hosts processes see (and tools expect) the host's
    // cgroup paths.
    let mut spec = spec;
    let unified = crate::cgroups::Layout::detect().is_ok_and(|l| l.mode == crate::cgroups::Mode::Unified);
    if unified && let Some(namespaces) = spec.pointer_mut("/linux/namespaces").and_then(|n| n.as_array_mut()) {
        namespaces.push(serde_json::json!({"type": "cgroup"}));
    }
    serde_json::to_string_pretty(&spec).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut value: serde_json::Value = serde_json::from_str(&default_spec_json()).unwrap();
        edit(&mut value);
        value.to_string()
    }

    #[test]
    fn unknown_capabilities_are_left_out_and_named() {
        let text = with(|v| {
            v["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_UNKNOWN", "CAP_KILL", "UNKNOWN_CAP"]);
            v["process"]["capabilities"]["ambient"] = serde_json::json!(["CAP_UNKNOWN"]);
        });
        let mut raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(drop_unknown_capabilities(&mut raw), ["CAP_UNKNOWN", "UNKNOWN_CAP"]);
        assert_eq!(
            raw["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_KILL"])
        );
        let spec = parse(&text).unwrap();
        let bounding = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone();
        assert_eq!(bounding.unwrap().len(), 1);
    }

    #[test]
    fn the_default_spec_parses() {
        let spec = parse(&default_spec_json()).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("berth"));
    }

    #[test]
    fn bad_specs_name_their_field() {
        let cases = [
            (
                with(|v| v["linux"]["namespaces"][2]["type"] = "foo".into()),
                "linux.namespaces[2].type",
            ),
            (
                with(|v| v["linux"]["namespaces"][1]["type"] = "pid".into()),
                "linux.namespaces[1].type",
            ),
            (
                with(|v| v["mounts"][0]["destination"] = "proc".into()),
                "mounts[0].destination",
            ),
            (
                with(|v| v["mounts"][1]["destination"] = "/a/../../etc".into()),
                "mounts[1].destination",
            ),
            (with(|v| v["process"]["args"] = serde_json::json!([])), "process.args"),
            (with(|v| v["process"]["cwd"] = "tmp".into()), "process.cwd"),
            (
                with(|v| v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}])),
                "hostname",
            ),
            (
                with(|v| v["linux"]["cgroupsPath"] = "/a/../../b".into()),
                "linux.cgroupsPath",
            ),
            ("{not json".to_string(), "config.json"),
            (
                with(|v| v["process"]["capabilities"]["bounding"][1] = 7.into()),
                "process.capabilities.bounding[1]",
            ),
        ];
        for (text, field) in cases {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.kind, crate::error::Kind::InvalidArgument, "{field}: {err}");
            assert_eq!(err.subject.as_deref(), Some(field), "{err}");
        }
    }
}
