//! berth-runc's command line where tools written for runc read it:
//! version and help layout, `ps` tables, `events`, `exec -p` defaults, the
//! HOME a process gets, unknown capabilities. Run as root.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use berth_tests::bundle::Bundle;
use berth_tests::runc::{Runc, test_cgroup_path};
use berth_tests::seccomp_agent::{Agent, Reply};
use berth_tests::wait;

fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// A running `sleep` container.
fn running(runc: &Runc, name: &str) -> (Bundle, String) {
    let id = id(name);
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    (bundle, id)
}

#[test]
fn version_and_help_have_runcs_layout() {
    let runc = Runc::new();
    let version = runc.ok(&["--version"]);
    let lines: Vec<&str> = version.lines().collect();
    assert!(lines[0].starts_with("berth-runc version "), "{version}");
    assert!(
        lines[1].starts_with("commit: ") && lines[1].len() > "commit: ".len(),
        "{version}"
    );
    assert!(lines[2].starts_with("spec: 1."), "{version}");

    let help = runc.ok(&["--help"]);
    assert!(
        help.starts_with("NAME:\n   berth-runc - Open Container Initiative runtime\n"),
        "{help}"
    );
    for command in ["create", "exec", "events", "ps", "update", "checkpoint", "restore"] {
        for flag in ["-h", "--help"] {
            let help = runc.ok(&[command, flag]);
            let second = help.lines().nth(1).unwrap_or_default().to_string();
            assert!(
                second.starts_with(&format!("   berth-runc {command} - ")),
                "{command}: {help}"
            );
        }
    }
    let out = runc.run(&["--root", "/tmp", "nosuch", "-h"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No help topic for 'nosuch'"));

    let err = runc.fails(&["checkpoint", "anything"]);
    assert!(err.contains("checkpoint"), "{err}");
    // A bad --parent-path is named first, as runc names it.
    let err = runc.fails(&["checkpoint", "--parent-path", "/abs", "--image-path", "./i", "anything"]);
    assert!(err.contains("--parent-path"), "{err}");
}

#[test]
fn ps_prints_the_hosts_table_for_the_containers_processes_only() {
    let runc = Runc::new();
    let (_bundle, id) = running(&runc, "ps");
    let pid = runc.pid(&id).to_string();
    let table = runc.ok(&["ps", &id]);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "{table}"
    );
    assert_eq!(lines.len(), 2, "{table}");
    assert_eq!(lines[1].split_whitespace().nth(1), Some(pid.as_str()), "{table}");

    let table = runc.ok(&["ps", &id, "-e", "-x"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["PID", "TTY", "STAT", "TIME", "COMMAND"], "{table}");
    assert!(
        table.lines().nth(1).is_some_and(|l| l.contains("sleep 1000")),
        "{table}"
    );

    assert_eq!(runc.ok(&["ps", "-f", "json", &id]).trim(), format!("[{pid}]"));
    let err = runc.fails(&["ps", &id, "--no-such-ps-option"]);
    assert!(err.contains("ps"), "{err}");
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn events_prints_stats_lines_and_an_oom_kill_and_ends_with_the_container() {
    let runc = Runc::new();
    let (_bundle, id) = running(&runc, "events");
    let once = runc.ok(&["events", "--stats", &id]);
    assert!(
        once.starts_with(&format!(r#"{{"type":"stats","id":"{id}","data":{{"#)),
        "{once}"
    );
    let stats: serde_json::Value = serde_json::from_str(once.trim()).unwrap();
    assert!(stats["data"]["pids"]["current"].as_u64() >= Some(1), "{once}");
    assert!(stats["data"]["memory"]["usage"]["usage"].as_u64() > Some(0), "{once}");
    let err = runc.fails(&["events", "--interval", "soon", &id]);
    assert!(err.contains("--interval"), "{err}");

    // A stream at 100ms, which ends when the container is deleted.
    let mut events = runc
        .command(&["events", "--interval", "100ms", &id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(events.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        let line = lines.next().unwrap().unwrap();
        assert!(line.starts_with(r#"{"type":"stats""#), "{line}");
    }
    runc.ok(&["delete", "--force", &id]);
    let ended = wait::until(Duration::from_secs(10), "events to end with the container", || {
        events.try_wait().unwrap()
    });
    assert!(ended.success());
}

#[test]
fn an_oom_kill_is_an_event() {
    let runc = Runc::new();
    let id = id("events-oom");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["linux"]["resources"]["memory"] = serde_json::json!({"limit": 33554432});
    });
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let mut events = runc.command(&["events", &id]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(events.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with(r#"{"type":"stats""#), "{first}");
    let _ = runc.run(&["exec", &id, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    let oom = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.starts_with(r#"{"type":"oom""#)))
        .unwrap()
        .unwrap();
    assert_eq!(oom, format!(r#"{{"type":"oom","id":"{id}"}}"#));
    runc.ok(&["delete", "--force", &id]);
    let _ = events.wait();
}

#[test]
fn exec_defaults_and_home_and_unknown_capabilities_follow_runc() {
    let runc = Runc::new();
    let (bundle, id) = running(&runc, "exec-defaults");
    // A process file without a user runs as root.
    let process = bundle.path().join("process.json");
    std::fs::write(
        &process,
        r#"{"cwd": "/", "args": ["sh", "-c", "id -u; echo $HOME"], "env": ["PATH=/bin"]}"#,
    )
    .unwrap();
    assert_eq!(runc.ok(&["exec", "-p", process.to_str().unwrap(), &id]), "0\n/root\n");
    // HOME from /etc/passwd, else "/".
    assert_eq!(
        runc.ok(&["exec", "--user", "65534", &id, "sh", "-c", "echo $HOME"]),
        "/nonexistent\n"
    );
    assert_eq!(
        runc.ok(&["exec", "--user", "1000", &id, "sh", "-c", "echo $HOME"]),
        "/\n"
    );
    assert_eq!(
        runc.ok(&["exec", "--env", "HOME=/mine", &id, "sh", "-c", "echo $HOME"]),
        "/mine\n"
    );
    runc.ok(&["delete", "--force", &id]);

    // Unknown capabilities are warned of and left out.
    let id = self::id("unknown-caps");
    let bundle = Bundle::busybox(&["sh", "-c", "grep Cap /proc/self/status"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_UNKNOWN", "CAP_KILL"]);
    });
    let out = runc.run(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("CAP_UNKNOWN"), "{stderr}");
    assert!(stdout.contains("CapBnd:\t0000000000000020"), "{stdout}");
}

#[test]
fn exec_refuses_a_paused_container_with_255_unless_told_to_wait() {
    let runc = Runc::new();
    let (_bundle, id) = running(&runc, "exec-paused");
    runc.ok(&["pause", &id]);
    let out = runc.run(&["exec", &id, "echo", "ok"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot exec in a paused container"));
    // --ignore-paused: the process runs once the container is resumed.
    let waiting = runc
        .command(&["exec", "--ignore-paused", &id, "echo", "ok"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    runc.ok(&["resume", &id]);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    // A command that is not there: 255 too, not a code the process could give.
    assert_eq!(runc.run(&["exec", &id, "no-such-command"]).status.code(), Some(255));
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn exec_joins_a_created_container() {
    let runc = Runc::new();
    let id = id("exec-created");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
    runc.ok_detached(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(runc.status(&id), "created");
    assert_eq!(runc.ok(&["exec", &id, "hostname"]).trim(), "berth");
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn a_cgroup_in_use_or_frozen_is_refused_and_left_alone() {
    let runc = Runc::new();
    let (_bundle, first) = running(&runc, "cgroup-owner");
    // A second container given the first one's cgroup.
    let second = id("cgroup-sharer");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&first).into());
    for command in ["run", "create"] {
        let mut args = vec![command, "--bundle", bundle.path().to_str().unwrap(), &second];
        if command == "run" {
            args.insert(1, "-d");
        }
        let err = runc.fails(&args);
        assert!(err.contains("container's cgroup is not empty"), "{err}");
    }
    assert_eq!(runc.status(&first), "running", "the first container is untouched");
    assert_eq!(runc.ids(), std::slice::from_ref(&first));
    runc.ok(&["delete", "--force", &first]);

    // A frozen cgroup made beforehand.
    let frozen = id("cgroup-frozen");
    let freezer =
        std::path::PathBuf::from("/sys/fs/cgroup/freezer").join(test_cgroup_path(&frozen).trim_start_matches('/'));
    std::fs::create_dir_all(&freezer).unwrap();
    std::fs::write(freezer.join("freezer.state"), "FROZEN").unwrap();
    let bundle = Bundle::busybox(&["true"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&frozen).into());
    let out = runc
        .command(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &frozen])
        .output()
        .unwrap();
    std::fs::write(freezer.join("freezer.state"), "THAWED").unwrap();
    let _ = std::fs::remove_dir(&freezer);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unexpectedly frozen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(runc.ids().is_empty());
}

#[test]
fn unified_keys_for_a_controller_cgroup2_lacks_here_are_invalid() {
    let runc = Runc::new();
    let unified_controllers = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").unwrap_or_default();
    if unified_controllers.split_whitespace().any(|c| c == "memory")
        || !std::path::Path::new("/sys/fs/cgroup/memory").exists()
    {
        return; // Not a hybrid host keeping memory on v1.
    }
    let id = id("unified-memory");
    let bundle = Bundle::busybox(&["true"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["linux"]["resources"]["unified"] = serde_json::json!({"memory.min": "131072"});
    });
    let err = runc.fails(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(
        err.contains("invalid configuration") && err.contains("linux.resources.unified.memory.min"),
        "{err}"
    );
    assert!(runc.ids().is_empty());
}

#[test]
fn inheritable_and_ambient_capabilities_from_the_spec_reach_exec() {
    let runc = Runc::new();
    let id = id("ambient");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["process"]["capabilities"] = serde_json::json!({
            "inheritable": ["CAP_CHOWN", "CAP_SYSLOG"],
            "permitted": ["CAP_KILL", "CAP_CHOWN"],
            "effective": ["CAP_KILL"],
            "bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_SYSLOG"],
            "ambient": ["CAP_CHOWN"]
        });
    });
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let status = runc.ok(&["exec", &id, "cat", "/proc/self/status"]);
    for want in [
        "CapInh:\t0000000400000001",
        "CapPrm:\t0000000000000021",
        "CapBnd:\t0000000400000021",
        "CapAmb:\t0000000000000001",
    ] {
        assert!(status.contains(want), "{want} in {status}");
    }
    let status = runc.ok(&["exec", "--cap", "CAP_SYSLOG", &id, "cat", "/proc/self/status"]);
    for want in [
        "CapPrm:\t0000000400000021",
        "CapEff:\t0000000400000021",
        "CapAmb:\t0000000400000001",
    ] {
        assert!(status.contains(want), "{want} in {status}");
    }
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn update_takes_runcs_flags_and_keeps_the_device_rules() {
    let runc = Runc::new();
    let id = id("update-flags");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["linux"]["resources"]["devices"] = serde_json::json!([{"allow": false, "access": "rwm"}]);
        // Made in /dev, but the cgroup's rules say whether it opens.
        c["linux"]["devices"] = serde_json::json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11},
            {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0}]);
    });
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let denied = |runc: &Runc| {
        let out = runc.run(&["exec", &id, "sh", "-c", "head -c1 /dev/kmsg"]);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Operation not permitted")
    };
    assert!(denied(&runc), "a spec device gets no allow rule of its own");
    // The mode runc gives a device without one: 0666, whatever the umask.
    let listing = runc.ok(&["exec", &id, "ls", "-ln", "/dev/tty", "/dev/kmsg"]);
    assert!(listing.lines().all(|l| l.starts_with("crw-rw-rw-")), "{listing}");

    runc.ok(&[
        "update",
        &id,
        "--memory",
        "50M",
        "--pids-limit",
        "42",
        "--cpu-quota",
        "-1",
        "--cpu-period",
        "100000",
    ]);
    let path = test_cgroup_path(&id);
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{path}/{file}"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(read("memory", "memory.limit_in_bytes"), (50u64 << 20).to_string());
    assert_eq!(read("pids", "pids.max"), "42");
    assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
    assert!(denied(&runc), "update keeps the device rules");
    let err = runc.fails(&["update", &id, "--memory", "lots"]);
    assert!(err.contains("--memory"), "{err}");
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn repeated_variables_are_set_once_and_an_empty_home_is_filled_in() {
    let runc = Runc::new();
    let id = id("env-once");
    let bundle = Bundle::busybox(&["env"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["process"]["env"] = serde_json::json!(["ONE=two", "HOME=", "ONE=", "PATH=/usr/bin:/bin"]);
    });
    let out = runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["HOME=/root", "ONE=", "PATH=/usr/bin:/bin"], "{out}");
}

#[test]
fn descriptors_berth_runc_inherited_do_not_reach_the_container() {
    assert_an_inherited_descriptor_stays_out("fd-leak", None);
}

/// runc's suite checks that a profile refusing the new mount and
/// descriptor calls (as older kernels lack them) still lets a container
/// start: without noNewPrivileges the filter is in force before the
/// runtime closes what it inherited.
#[test]
fn a_seccomp_profile_refusing_close_range_still_keeps_inherited_descriptors_out() {
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["close_range", "fsopen", "fsconfig", "fspick", "openat2", "open_tree", "move_mount", "mount_setattr"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 38
        }]
    });
    assert_an_inherited_descriptor_stays_out("fd-leak-seccomp", Some(profile));
}

fn assert_an_inherited_descriptor_stays_out(name: &str, seccomp: Option<serde_json::Value>) {
    use std::os::fd::AsRawFd as _;
    let runc = Runc::new();
    let id = id(name);
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        if let Some(profile) = &seccomp {
            c["linux"]["seccomp"] = profile.clone();
            c["process"]["noNewPrivileges"] = false.into();
        }
    });
    // A descriptor left open (not close-on-exec) by whoever runs berth-runc.
    let leaked = std::fs::File::open("/etc/hostname").unwrap();
    let fd = leaked.as_raw_fd();
    let mut command = runc.command(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    // SAFETY: pre_exec runs in the forked child; fcntl is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        command.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    // (The created init holds what it was given as stdio: a file, not a
    // pipe this test would wait on.)
    let log = tempfile::NamedTempFile::new().unwrap();
    let status = command
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );
    let pid = runc.pid(&id);
    let targets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .collect();
    assert!(!targets.iter().any(|t| t == "/etc/hostname"), "{targets:?}");
    runc.ok(&["start", &id]);
    let in_container = runc.ok(&["exec", &id, "ls", "/proc/self/fd"]);
    assert_eq!(
        in_container.split_whitespace().count(),
        4,
        "stdio and ls's own: {in_container}"
    );
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn a_rootfs_whose_proc_is_a_symlink_is_refused() {
    let runc = Runc::new();
    let id = id("proc-symlink");
    let bundle = Bundle::busybox(&["true"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
    let rootfs = bundle.rootfs();
    let _ = std::fs::remove_dir_all(rootfs.join("proc"));
    std::fs::create_dir(rootfs.join("bad-proc")).unwrap();
    std::os::unix::fs::symlink("/bad-proc", rootfs.join("proc")).unwrap();
    let err = runc.fails(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(err.contains("must be mounted on ordinary directory"), "{err}");
    assert!(runc.ids().is_empty());
    assert_eq!(std::fs::read_dir(rootfs.join("bad-proc")).unwrap().count(), 0);
}

#[test]
fn delete_force_kills_and_removes_cgroups_made_below_the_containers() {
    let runc = Runc::new();
    let (_bundle, id) = running(&runc, "sub-cgroups");
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    runc.ok_detached(&[
        "exec",
        "-d",
        "--pid-file",
        pid_file.path().to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]);
    let pid: i32 = std::fs::read_to_string(pid_file.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let path = test_cgroup_path(&id);
    let mut made = Vec::new();
    for controller in ["memory", "freezer"] {
        let sub = std::path::PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}/foo"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("tasks"), pid.to_string()).unwrap();
        made.push(sub);
    }
    // ps lists the process in the sub-cgroup too.
    assert!(runc.ok(&["ps", "-f", "json", &id]).contains(&pid.to_string()));
    runc.ok(&["delete", "--force", &id]);
    assert!(
        runc.run(&["state", &id]).status.code() != Some(0),
        "the container is gone"
    );
    for sub in &made {
        assert!(!sub.exists(), "{} is removed", sub.display());
    }
    wait::until(Duration::from_secs(5), "the process in the sub-cgroup to die", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")))
        .then_some(())
    });
}

#[test]
fn rro_makes_a_bind_read_only_all_the_way_down_where_ro_does_not() {
    let volume = tempfile::tempdir().unwrap();
    let top = volume.path();
    nix::mount::mount(
        Some("tmpfs"),
        top,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let sub = top.join("subvol");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    struct Unmount(std::path::PathBuf, std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.1, nix::mount::MntFlags::MNT_DETACH);
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(top.to_path_buf(), sub.clone());
    let runc = Runc::new();
    for (name, options, sub_writable) in [("ro", ["rbind", "ro"], true), ("rro", ["rbind", "rro"], false)] {
        let id = id(&format!("mount-{name}"));
        let bundle = Bundle::busybox(&["sleep", "1000"]);
        bundle.edit(|c| {
            c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
            c["mounts"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"source": top, "destination": "/mnt", "options": options}));
        });
        runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
        let top_write = runc.run(&["exec", &id, "touch", "/mnt/foo"]);
        assert!(!top_write.status.success(), "{name}: /mnt is read-only");
        let sub_write = runc.run(&["exec", &id, "touch", "/mnt/subvol/bar"]);
        assert_eq!(sub_write.status.success(), sub_writable, "{name}: /mnt/subvol");
        runc.ok(&["delete", "--force", &id]);
    }
}

#[test]
fn signal_0_checks_the_container_and_a_stopped_one_is_not_running() {
    let runc = Runc::new();
    let (_bundle, id) = running(&runc, "kill-0");
    runc.ok(&["kill", &id, "0"]);
    runc.ok(&["kill", &id, "KILL"]);
    wait::until(Duration::from_secs(10), "the container to stop", || {
        (runc.status(&id) == "stopped").then_some(())
    });
    let err = runc.fails(&["kill", &id, "0"]);
    assert!(err.contains("container not running"), "{err}");
    runc.ok(&["kill", "--all", &id, "0"]);
    runc.ok(&["delete", &id]);
}

#[test]
fn a_start_container_hook_gets_the_process_environment() {
    let runc = Runc::new();
    let id = id("hook-env");
    let bundle = Bundle::busybox(&["true"]);
    let script = bundle.rootfs().join("check-env.sh");
    std::fs::write(&script, "#!/bin/sh -ue\ntest $ONE = two\ntest $FOO = bar\necho $HOME\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["process"]["env"] = serde_json::json!(["ONE=two", "FOO=bar", "PATH=/bin"]);
        c["hooks"] = serde_json::json!({"startContainer": [{"path": "/check-env.sh"}]});
    });
    assert_eq!(
        runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]),
        "/root\n"
    );
}

#[test]
fn a_tmpfs_without_a_mode_takes_the_mode_of_the_directory_it_covers() {
    let runc = Runc::new();
    let id = id("tmpfs-mode");
    let bundle = Bundle::busybox(&["stat", "-c", "%a", "/tmp"]);
    std::fs::set_permissions(
        bundle.rootfs().join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o7777),
    )
    .unwrap();
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["mounts"].as_array_mut().unwrap().push(
            serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}),
        );
    });
    assert_eq!(
        runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id])
            .trim(),
        "7777"
    );
}

#[test]
fn a_create_container_hook_runs_from_the_container_root() {
    let runc = Runc::new();
    let id = id("hook-cwd");
    let bundle = Bundle::busybox(&["ls", "/made-by-hook"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["root"]["readonly"] = false.into();
        c["hooks"] =
            serde_json::json!({"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "touch ./made-by-hook"]}]});
    });
    assert_eq!(
        runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id])
            .trim(),
        "/made-by-hook"
    );
}

#[test]
fn a_seccomp_notify_profile_without_a_reachable_agent_is_refused_clearly() {
    let runc = Runc::new();
    let agent_dir = tempfile::tempdir().unwrap();
    let agent_path = agent_dir.path().join("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&agent_path).unwrap();
    let cases = [
        (notify_profile("", &["mkdir"]), "needs a listenerPath"),
        (
            notify_profile("/no/such/agent.sock", &["mkdir"]),
            "failed to connect with seccomp agent",
        ),
        (
            notify_profile("@no-such-abstract-agent", &["mkdir"]),
            "failed to connect with seccomp agent",
        ),
        (
            notify_profile(agent_path.to_str().unwrap(), &["write"]),
            "cannot be used for the write syscall",
        ),
    ];
    for (i, (seccomp, want)) in cases.into_iter().enumerate() {
        let id = id(&format!("notify-{i}"));
        let bundle = Bundle::busybox(&["mkdir", "/tmp/x"]);
        bundle.edit(|c| {
            c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
            c["linux"]["seccomp"] = seccomp;
        });
        let err = runc.fails(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
        assert!(err.contains(want), "case {i}: {err}");
        assert!(runc.ids().is_empty());
    }
    // A listenerPath without any notify action is ignored.
    let id = id("notify-none");
    let bundle = Bundle::busybox(&["true"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/no/such"});
    });
    runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
}

fn notify_profile(listener: &str, names: &[&str]) -> serde_json::Value {
    serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": listener, "listenerMetadata": "meta",
        "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [{"names": names, "action": "SCMP_ACT_NOTIFY"}]})
}

#[test]
fn a_seccomp_agent_answers_the_containers_notified_calls() {
    let runc = Runc::new();
    let dir = tempfile::tempdir().unwrap();
    // ENOMEDIUM: an answer only the agent could have given.
    let agent = Agent::start(&dir.path().join("agent.sock"), Reply::Errno(libc::ENOMEDIUM));
    let listener = agent.path().to_str().unwrap();
    for no_new_privileges in [false, true] {
        let id = id(&format!("agent-run-{no_new_privileges}"));
        let bundle = Bundle::busybox(&["mkdir", "/tmp/x"]);
        bundle.edit(|c| {
            c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
            c["linux"]["seccomp"] = notify_profile(listener, &["mkdir"]);
            c["process"]["noNewPrivileges"] = no_new_privileges.into();
        });
        let err = runc.fails(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
        assert!(err.contains("No medium found"), "{err}");
    }
    let messages = agent.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    let first = &messages[0];
    assert_eq!(first["fds"], serde_json::json!(["seccompFd"]));
    assert_eq!(first["metadata"], "meta");
    assert_eq!(first["state"]["id"], id("agent-run-false").as_str());
    assert_eq!(first["pid"], first["state"]["pid"]);

    // exec hands its own listener over.
    let id = id("agent-exec");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["linux"]["seccomp"] = notify_profile(listener, &["mkdir"]);
    });
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let err = runc.fails(&["exec", &id, "mkdir", "/tmp/y"]);
    assert!(err.contains("No medium found"), "{err}");
    let messages = agent.messages();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[3]["state"]["status"], "running");
    assert_ne!(messages[3]["pid"], messages[2]["pid"], "the exec'd process's own pid");

    runc.ok(&["delete", "--force", &id]);

    // When the agent goes, nothing waits: the calls fail with ENOSYS.
    let gone = self::id("agent-gone");
    let bundle = Bundle::busybox(&["sh", "-c", "sleep 2; mkdir /dev/shm/z"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&gone).into();
        c["linux"]["seccomp"] = notify_profile(listener, &["mkdir"]);
    });
    let bundle_path = bundle.path().to_str().unwrap();
    let err = std::thread::scope(|scope| {
        let run = scope.spawn(|| runc.fails(&["run", "--bundle", bundle_path, &gone]));
        wait::until(Duration::from_secs(30), "the agent has the listener", || {
            (agent.messages().len() == 5).then_some(())
        });
        drop(agent);
        run.join().unwrap()
    });
    assert!(err.contains("Function not implemented"), "{err}");
}

/// The exec'd process may hand its listener over before its parent
/// reports its pid (they share the channel): the agent gets it all the same.
#[test]
fn an_exec_listener_handed_over_before_the_pid_reaches_the_agent() {
    let runc = Runc::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("agent.sock"), Reply::Errno(libc::ENOMEDIUM));
    let id = id("agent-early");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["linux"]["seccomp"] = notify_profile(agent.path().to_str().unwrap(), &["mkdir"]);
    });
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let exec = runc
        .command(&["exec", &id, "mkdir", "/tmp/y"])
        .env("BERTH_FAILPOINTS", "runtime.init.pid-reported=sleep(300)")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&exec.stderr);
    runc.ok(&["delete", "--force", &id]);
    assert!(err.contains("No medium found"), "{err}");
    assert_eq!(agent.messages().len(), 2);
}

#[test]
fn a_seccomp_agent_may_take_the_calls_the_runtime_itself_makes() {
    let runc = Runc::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("agent.sock"), Reply::Continue);
    let names = ["execve", "openat", "open", "read", "close", "fcntl", "mkdir"];
    for no_new_privileges in [false, true] {
        let id = id(&format!("agent-busy-{no_new_privileges}"));
        let bundle = Bundle::busybox(&["sh", "-c", "mkdir /dev/shm/x && cat /proc/self/status >/dev/null"]);
        bundle.edit(|c| {
            c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
            c["linux"]["seccomp"] = notify_profile(agent.path().to_str().unwrap(), &names);
            c["process"]["noNewPrivileges"] = no_new_privileges.into();
        });
        runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    }
    assert_eq!(agent.messages().len(), 2);
}

/// Lines of `text` at debug level, in either log format.
fn debug_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("level=debug") || l.contains(r#""level":"debug""#))
        .collect()
}

#[test]
fn debug_reports_the_steps_of_create_start_and_exec_where_runc_would() {
    let runc = Runc::new();
    let id = id("debug");
    let bundle = Bundle::busybox(&["echo", "hello"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
    let bundle_dir = bundle.path().to_str().unwrap();

    // Without --log: text lines on standard error, the init's steps among them.
    let out = std::process::Command::new(berth_tests::binaries::berth("berth-runc"))
        .args([
            "--root",
            runc.root().to_str().unwrap(),
            "--debug",
            "run",
            "--bundle",
            bundle_dir,
            &id,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let lines = debug_lines(&stderr);
    for step in [
        "spec read from",
        "init started",
        "init: mounts made",
        "init: built, reporting created",
        "created, init pid",
        "signalling init",
    ] {
        assert!(lines.iter().any(|l| l.contains(step)), "{step:?} missing:\n{stderr}");
    }
    assert!(lines.iter().all(|l| l.starts_with("time=\"")), "{stderr}");

    // With --log (JSON here): into the file, none on standard error.
    let log = runc.log_path();
    let before = std::fs::read_to_string(log).unwrap_or_default().len();
    let out = runc.run(&["--debug", "run", "--bundle", bundle_dir, &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(debug_lines(&stderr).is_empty(), "{stderr}");
    let logged = std::fs::read_to_string(log).unwrap()[before..].to_string();
    let lines = debug_lines(&logged);
    assert!(lines.iter().any(|l| l.contains("init: mounts made")), "{logged}");
    for line in &lines {
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(parsed["msg"].is_string() && parsed["time"].is_string(), "{line}");
    }

    // exec reports its process's steps up to the command.
    let (_running_bundle, running_id) = running(&runc, "debug-exec");
    let before = std::fs::read_to_string(log).unwrap().len();
    assert_eq!(runc.ok(&["--debug", "exec", &running_id, "true"]), "");
    let logged = std::fs::read_to_string(log).unwrap()[before..].to_string();
    for step in [
        "joining the namespaces",
        "becoming its user",
        "loading seccomp",
        "runs its command",
    ] {
        assert!(logged.contains(step), "{step:?} missing:\n{logged}");
    }

    // Without --debug: no step is reported.
    let before = std::fs::read_to_string(log).unwrap().len();
    runc.ok(&["exec", &running_id, "true"]);
    let logged = std::fs::read_to_string(log).unwrap()[before..].to_string();
    assert!(debug_lines(&logged).is_empty(), "{logged}");
    runc.ok(&["delete", "--force", &running_id]);
}
