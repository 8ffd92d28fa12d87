//! OCI hooks through berth-runc: each runs at its point of the lifecycle,
//! in order, with the state on stdin; a failing create-time hook fails
//! create and leaves nothing behind. Run as root.

use std::path::Path;
use std::time::Duration;

use berth_tests::bundle::Bundle;
use berth_tests::runc::{Runc, test_cgroup_path};

fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// A hook that appends its name and the state it read to `log`.
fn logging_hook(name: &str, log: &Path) -> serde_json::Value {
    serde_json::json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("printf '%s ' {name} >> {log}; cat >> {log}; echo >> {log}", log = log.display())],
    })
}

fn nothing_left(runc: &Runc, id: &str) {
    assert!(runc.ids().is_empty(), "a container was recorded");
    assert!(!runc.root().join(id).exists(), "state left");
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = hierarchy.path().join("berth-tests").join(id);
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

#[test]
fn every_hook_runs_in_order_with_the_state_on_stdin() {
    let runc = Runc::new();
    let id = id("hooks");
    let logs = tempfile::tempdir().unwrap();
    let host_log = logs.path().join("log");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/hooklog", "type": "bind", "source": logs.path(), "options": ["rbind", "rw"]
        }));
        c["hooks"] = serde_json::json!({
            "prestart": [logging_hook("prestart", &host_log)],
            "createRuntime": [logging_hook("createRuntime", &host_log)],
            "createContainer": [logging_hook("createContainer", &host_log)],
            "startContainer": [logging_hook("startContainer", Path::new("/hooklog/log"))],
            "poststart": [logging_hook("poststart", &host_log)],
            "poststop": [logging_hook("poststop", &host_log)],
        });
        // The in-container hook writes as the container's root.
        c["process"]["capabilities"]["effective"] = serde_json::json!(["CAP_DAC_OVERRIDE", "CAP_KILL"]);
        c["process"]["capabilities"]["permitted"] = serde_json::json!(["CAP_DAC_OVERRIDE", "CAP_KILL"]);
        c["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_DAC_OVERRIDE", "CAP_KILL"]);
    });
    let bundle_path = bundle.path().to_str().unwrap();
    runc.ok_detached(&["create", "--bundle", bundle_path, &id]);
    runc.ok(&["start", &id]);
    let pid = runc.pid(&id);
    runc.ok(&["kill", &id, "KILL"]);
    berth_tests::wait::until(Duration::from_secs(10), "the container to stop", || {
        (runc.status(&id) == "stopped").then_some(())
    });
    runc.ok(&["delete", &id]);

    let log = std::fs::read_to_string(&host_log).unwrap();
    let entries: Vec<(&str, serde_json::Value)> = log
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, json) = l.split_once(' ').unwrap();
            (name, serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {l}")))
        })
        .collect();
    let names: Vec<&str> = entries.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{log}"
    );
    let statuses: Vec<&str> = entries.iter().map(|(_, s)| s["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["creating", "creating", "creating", "created", "running", "stopped"],
        "{log}"
    );
    for (name, state) in &entries {
        assert_eq!(state["id"], id.as_str(), "{name}");
        assert_eq!(state["bundle"], bundle_path, "{name}");
    }
    // The runtime-side hooks see the init's host pid.
    for (name, state) in &entries[..2] {
        assert_eq!(state["pid"], pid, "{name}");
    }
}

#[test]
fn a_failing_prestart_hook_fails_create_and_leaves_nothing() {
    let runc = Runc::new();
    let id = id("hookfail");
    let bundle = Bundle::busybox(&["true"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["hooks"] = serde_json::json!({
            "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo refused >&2; exit 3"]}],
        });
    });
    let stderr = runc.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(stderr.contains("hooks.prestart[0]"), "{stderr}");
    assert!(stderr.contains("refused"), "the hook's stderr is quoted: {stderr}");
    nothing_left(&runc, &id);
}

#[test]
fn a_hook_that_does_not_exist_or_overruns_is_refused_naming_it() {
    let runc = Runc::new();
    let id = id("hookmissing");
    let bundle = Bundle::busybox(&["true"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["hooks"] = serde_json::json!({"createRuntime": [{"path": "/no/such/hook"}]});
    });
    let stderr = runc.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(stderr.contains("hooks.createRuntime[0].path"), "{stderr}");
    nothing_left(&runc, &id);

    let id = self::id("hookslow");
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["hooks"] =
            serde_json::json!({"createContainer": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    });
    let started = std::time::Instant::now();
    let stderr = runc.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout cut the hook short"
    );
    assert!(
        stderr.contains("hooks.createContainer[0]") && stderr.contains("timed out"),
        "{stderr}"
    );
    nothing_left(&runc, &id);
}

/// The container's pid 1 may ask for its hooks before its parent reports
/// its pid (they share the channel): the hooks still run, once, and a
/// failing one is still the error.
#[test]
fn hooks_asked_for_before_the_pid_is_reported_run_all_the_same() {
    let runc = Runc::new();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("log");
    let id = id("hookearly");
    let bundle = Bundle::busybox(&["true"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["hooks"] = serde_json::json!({"prestart": [logging_hook("prestart", &log)]});
    });
    let late_pid = "runtime.init.pid-reported=sleep(300)";
    // stderr to a file: the created container's init holds it.
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let created = runc
        .command(&["create", "--bundle", bundle.path().to_str().unwrap(), &id])
        .env("BERTH_FAILPOINTS", late_pid)
        .stdout(std::process::Stdio::null())
        .stderr(stderr.reopen().unwrap())
        .status()
        .unwrap();
    let message = std::fs::read_to_string(stderr.path()).unwrap_or_default();
    assert!(created.success(), "create: {message}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.matches("prestart ").count(), 1, "{logged}");
    runc.ok(&["delete", "--force", &id]);

    let id = self::id("hookearlyfail");
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["hooks"] = serde_json::json!({
            "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo refused >&2; exit 3"]}],
        });
    });
    let refused = runc
        .command(&["create", "--bundle", bundle.path().to_str().unwrap(), &id])
        .env("BERTH_FAILPOINTS", late_pid)
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("hooks.prestart[0]") && stderr.contains("refused"),
        "{stderr}"
    );
    nothing_left(&runc, &id);
}
