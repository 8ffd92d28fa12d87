//! berth-runc on a busybox bundle, as root: what the container sees from
//! inside, limits the kernel enforces, the lifecycle, and bad input that
//! must leave nothing behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_tests::bundle::Bundle;
use berth_tests::runc::{Runc, TEST_CGROUP_PARENT, test_cgroup_path};

/// A container id unique to this test process.
fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Every directory the container's cgroup has on this host.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = entry.path().join(TEST_CGROUP_PARENT).join(id);
        if dir.exists() {
            dirs.push(dir);
        }
    }
    dirs
}

fn mounts_under(path: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m).starts_with(path)))
        .map(str::to_string)
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// Asserts nothing of container `id` is left: state, cgroups, mounts.
fn assert_gone(runc: &Runc, bundle: &Bundle, id: &str) {
    assert!(!runc.root().join(id).exists(), "state directory of {id} left behind");
    assert!(
        cgroup_dirs(id).is_empty(),
        "cgroups of {id} left behind: {:?}",
        cgroup_dirs(id)
    );
    assert!(
        mounts_under(&bundle.rootfs()).is_empty(),
        "mounts left: {:?}",
        mounts_under(&bundle.rootfs())
    );
}

fn with_cgroup(bundle: &Bundle, id: &str, resources: serde_json::Value) {
    let path = test_cgroup_path(id);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = path.into();
        c["linux"]["resources"] = resources;
    });
}

#[test]
fn inside_the_container_pid_1_hostname_mounts_and_limits_show() {
    let runc = Runc::new();
    let id = id("inside");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "echo pid=$$; echo host=$(hostname); grep -E ' /(proc|dev|dev/pts|dev/shm|dev/mqueue|sys|data) ' /proc/mounts; \
         echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); echo pids=$(cat /sys/fs/cgroup/pids/pids.max); \
         cat /data/hello; echo x > /dev/null && head -c1 /dev/zero > /dev/null && echo devices-ok",
    ]);
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello"), "from the host\n").unwrap();
    with_cgroup(
        &bundle,
        &id,
        serde_json::json!({"memory": {"limit": 67108864}, "pids": {"limit": 42}}),
    );
    bundle.edit(|c| {
        c["hostname"] = "inside-test".into();
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"destination": "/data", "type": "bind", "source": data.path(), "options": ["rbind", "ro"]}));
    });
    let out = runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("host=inside-test\n"), "{out}");
    for mount in [
        "proc /proc proc",
        "tmpfs /dev tmpfs",
        "devpts /dev/pts devpts",
        "shm /dev/shm tmpfs",
        "mqueue /dev/mqueue mqueue",
        "sysfs /sys sysfs ro",
    ] {
        assert!(out.contains(mount), "{mount} in {out}");
    }
    assert!(
        out.lines().any(|l| l.contains(" /data ") && l.contains(" ro,")),
        "{out}"
    );
    assert!(out.contains("mem=67108864\n"), "{out}");
    assert!(out.contains("pids=42\n"), "{out}");
    assert!(out.contains("from the host"), "{out}");
    assert!(out.contains("devices-ok"), "the default devices open: {out}");
    assert_gone(&runc, &bundle, &id);
}

#[test]
fn the_pids_limit_stops_a_fork_loop() {
    let runc = Runc::new();
    let id = id("pids");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 30 ]; do sleep 30 & i=$((i+1)); done; echo started; kill $(jobs -p) 2>/dev/null; true",
    ]);
    with_cgroup(&bundle, &id, serde_json::json!({"pids": {"limit": 10}}));
    let out = runc.run(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("can't fork") || all.contains("Resource temporarily unavailable"),
        "{all}"
    );
    assert_gone(&runc, &bundle, &id);
}

#[test]
fn an_allocation_over_the_memory_limit_is_oom_killed() {
    let runc = Runc::new();
    let id = id("oom");
    // tail keeps the whole line-less stream in memory.
    let bundle = Bundle::busybox(&["tail", "/dev/zero"]);
    with_cgroup(
        &bundle,
        &id,
        serde_json::json!({"memory": {"limit": 33554432, "swap": 33554432}}),
    );
    let out = runc.run(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(137), "{}", String::from_utf8_lossy(&out.stderr));
    assert_gone(&runc, &bundle, &id);
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn lifecycle_create_start_pause_resume_update_kill_delete() {
    let runc = Runc::new();
    let id = id("life");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    with_cgroup(&bundle, &id, serde_json::json!({"pids": {"limit": 20}}));
    let pid_file = bundle.path().join("init.pid");
    runc.ok_detached(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(runc.status(&id), "created");
    let pid = runc.pid(&id);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    assert!(alive(pid));
    runc.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    runc.ok(&["start", &id]);
    assert_eq!(runc.status(&id), "running");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, "sleep\u{0}1000\u{0}", "the init became the user's process");
    let listed = runc.ok(&["list"]);
    assert!(listed.contains(&id) && listed.contains("running"), "{listed}");

    runc.ok(&["pause", &id]);
    assert_eq!(runc.status(&id), "paused");
    let freezer = Path::new("/sys/fs/cgroup/freezer")
        .join(TEST_CGROUP_PARENT)
        .join(&id)
        .join("freezer.state");
    assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    runc.ok(&["resume", &id]);
    assert_eq!(runc.status(&id), "running");

    let mut update = runc.command(&["update", "--resources", "-", &id]);
    update.stdin(std::process::Stdio::piped());
    let mut child = update.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), br#"{"pids": {"limit": 33}}"#).unwrap();
    assert!(child.wait().unwrap().success());
    let pids_max = Path::new("/sys/fs/cgroup/pids")
        .join(TEST_CGROUP_PARENT)
        .join(&id)
        .join("pids.max");
    assert_eq!(std::fs::read_to_string(&pids_max).unwrap().trim(), "33");

    let ps: Vec<i32> = serde_json::from_str(&runc.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(ps, [pid]);
    runc.fails(&["delete", &id]);
    runc.ok(&["kill", &id, "KILL"]);
    wait_until("the container to stop", || runc.status(&id) == "stopped");
    runc.ok(&["delete", &id]);
    assert!(!alive(pid));
    assert_gone(&runc, &bundle, &id);
    runc.fails(&["state", &id]);
}

#[test]
fn delete_force_kills_a_running_container_and_kill_all_reaches_every_process() {
    let runc = Runc::new();
    let id = id("force");
    let bundle = Bundle::busybox(&["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    with_cgroup(&bundle, &id, serde_json::json!({}));
    runc.ok_detached(&["run", "--detach", "--bundle", bundle.path().to_str().unwrap(), &id]);
    wait_until("three processes", || {
        serde_json::from_str::<Vec<i32>>(&runc.ok(&["ps", "--format", "json", &id]))
            .unwrap()
            .len()
            == 3
    });
    let pids: Vec<i32> = serde_json::from_str(&runc.ok(&["ps", "--format", "json", &id])).unwrap();
    runc.ok(&["kill", "--all", &id, "9"]);
    wait_until("every process to die", || pids.iter().all(|p| !alive(*p)));
    runc.ok(&["delete", &id]);
    assert_gone(&runc, &bundle, &id);

    let id = self::id("force2");
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let pid = runc.pid(&id);
    runc.ok(&["delete", "--force", &id]);
    assert!(!alive(pid));
    assert_gone(&runc, &bundle, &id);
}

/// The last error line of the JSON log.
fn last_log_error(runc: &Runc) -> String {
    let text = std::fs::read_to_string(runc.log_path()).unwrap_or_default();
    let line = text.lines().last().unwrap_or_default().to_string();
    let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    assert_eq!(value["level"], "error", "{line}");
    value["msg"].as_str().unwrap_or_default().to_string()
}

/// Spoils a good bundle in one way.
type BreakBundle = Box<dyn Fn(&Bundle)>;

#[test]
fn bad_bundles_fail_naming_the_field_and_leave_nothing() {
    let runc = Runc::new();
    let cases: Vec<(&str, BreakBundle, &str)> = vec![
        (
            "bad-json",
            Box::new(|b: &Bundle| std::fs::write(b.path().join("config.json"), "{\"ociVersion\": ").unwrap()),
            "config.json",
        ),
        (
            "no-rootfs",
            Box::new(|b: &Bundle| b.edit(|c| c["root"]["path"] = "missing-rootfs".into())),
            "root.path",
        ),
        (
            "escape",
            Box::new(|b: &Bundle| {
                std::os::unix::fs::symlink("../../../../../../tmp", b.rootfs().join("escape")).unwrap();
                b.edit(|c| {
                    c["mounts"]
                        .as_array_mut()
                        .unwrap()
                        .push(serde_json::json!({"destination": "/escape/x", "type": "tmpfs", "source": "tmpfs"}));
                });
            }),
            "mounts[7].destination",
        ),
        (
            "bad-ns",
            Box::new(|b: &Bundle| b.edit(|c| c["linux"]["namespaces"][0]["type"] = "bogus".into())),
            "linux.namespaces[0].type",
        ),
        (
            "no-command",
            Box::new(|b: &Bundle| b.edit(|c| c["process"]["args"] = serde_json::json!(["/bin/not-there"]))),
            "process.args[0]",
        ),
    ];
    for (name, break_it, field) in cases {
        let id = id(name);
        let bundle = Bundle::busybox(&["true"]);
        with_cgroup(&bundle, &id, serde_json::json!({"pids": {"limit": 10}}));
        break_it(&bundle);
        let stderr = runc.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
        assert!(stderr.contains(field), "{name}: {field} in {stderr}");
        assert!(
            last_log_error(&runc).contains(field),
            "{name}: the JSON log names {field}"
        );
        assert!(runc.ids().is_empty(), "{name}: a container was recorded");
        assert_gone(&runc, &bundle, &id);
        assert!(
            !Path::new("/tmp/x").exists(),
            "{name}: something was made outside the rootfs"
        );
    }
}

#[test]
fn no_pivot_and_a_read_only_root() {
    let runc = Runc::new();
    let id = id("nopivot");
    let bundle = Bundle::busybox(&["sh", "-c", "touch /x 2>&1; echo rc=$?; ls /"]);
    with_cgroup(&bundle, &id, serde_json::json!({}));
    let out = runc.ok(&["run", "--no-pivot", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("bin"), "{out}");
    assert_gone(&runc, &bundle, &id);
}

/// With `--no-pivot` the host's proc is still in the mount namespace,
/// under the new root; if it stayed mounted, a process making its own user
/// namespace could mount a proc with nothing masked. It is taken out.
#[test]
fn no_pivot_leaves_no_whole_proc_for_a_nested_user_namespace_to_copy() {
    let runc = Runc::new();
    let id = id("nopivot-proc");
    let bundle = Bundle::busybox(&[
        "unshare",
        "-mrpf",
        "sh",
        "-c",
        "mount -t proc none /proc 2>&1 && echo mounted",
    ]);
    with_cgroup(&bundle, &id, serde_json::json!({}));
    bundle.add_capability("CAP_SETFCAP");
    let out = runc.run(&["run", "--no-pivot", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("mounted"), "a fresh proc was mounted: {stdout}");
    assert!(
        stdout.contains("Permission denied") || stdout.contains("permission denied"),
        "{stdout}"
    );
    // The host's proc is untouched.
    assert!(Path::new("/proc/self/status").exists());
    assert_gone(&runc, &bundle, &id);
}

#[test]
fn the_process_gets_its_user_groups_cwd_env_sysctls_oom_score_and_time_namespace() {
    let runc = Runc::new();
    let id = id("process");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "echo ids=$(id -u):$(id -g) groups=$(id -G); echo cwd=$(pwd); echo env=$GREETING; \
         echo forward=$(cat /proc/sys/net/ipv4/ip_forward); echo oom=$(cat /proc/self/oom_score_adj); \
         echo domain=$(cat /proc/sys/kernel/domainname); echo uptime=$(cut -d. -f1 /proc/uptime)",
    ]);
    with_cgroup(&bundle, &id, serde_json::json!({}));
    std::fs::create_dir(bundle.rootfs().join("work")).unwrap();
    bundle.edit(|c| {
        c["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1001, "additionalGids": [1002, 1003]});
        c["process"]["cwd"] = "/work".into();
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("GREETING=hello there".into());
        c["process"]["oomScoreAdj"] = 123.into();
        c["domainname"] = "example.test".into();
        c["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        // A time namespace whose boot clock starts ten days ahead.
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "time"}));
        c["linux"]["timeOffsets"] = serde_json::json!({"boottime": {"secs": 864000, "nanosecs": 0}});
    });
    let out = runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(out.contains("ids=1000:1001 groups=1001 1002 1003\n"), "{out}");
    assert!(out.contains("cwd=/work\n"), "{out}");
    assert!(out.contains("env=hello there\n"), "{out}");
    assert!(out.contains("forward=1\n"), "{out}");
    assert!(out.contains("oom=123\n"), "{out}");
    assert!(out.contains("domain=example.test\n"), "{out}");
    let host_uptime: u64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let uptime: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("uptime="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        uptime >= host_uptime + 864_000 - 5,
        "boot time offset applied: {uptime} vs host {host_uptime}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .ok()
            .as_deref()
            .map(str::trim),
        Some(host_forwarding()),
        "the sysctl stayed in the container's network namespace"
    );
    assert_gone(&runc, &bundle, &id);
}

/// The host's IPv4 forwarding setting, read before any test could touch it.
fn host_forwarding() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim()
            .to_string()
    })
}

#[test]
fn a_namespace_given_by_path_is_joined() {
    let runc = Runc::new();
    // The first container's network and UTS namespaces, joined by the second.
    let first = id("ns-owner");
    let owner = Bundle::busybox(&["sleep", "1000"]);
    with_cgroup(&owner, &first, serde_json::json!({}));
    owner.edit(|c| c["hostname"] = "owner".into());
    runc.ok_detached(&["run", "-d", "--bundle", owner.path().to_str().unwrap(), &first]);
    let pid = runc.pid(&first);

    let second = id("ns-joiner");
    let joiner = Bundle::busybox(&["sh", "-c", "echo host=$(hostname); readlink /proc/self/ns/net"]);
    with_cgroup(&joiner, &second, serde_json::json!({}));
    joiner.edit(|c| {
        c.as_object_mut().unwrap().remove("hostname");
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" || ns["type"] == "uts" {
                let kind = if ns["type"] == "network" { "net" } else { "uts" };
                ns["path"] = format!("/proc/{pid}/ns/{kind}").into();
            }
        }
    });
    let out = runc.ok(&["run", "--bundle", joiner.path().to_str().unwrap(), &second]);
    let owner_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert!(out.contains("host=owner\n"), "{out}");
    assert!(out.contains(owner_net.to_str().unwrap()), "{out} shares {owner_net:?}");
    runc.ok(&["delete", "--force", &first]);
    assert_gone(&runc, &owner, &first);
    assert_gone(&runc, &joiner, &second);
}
