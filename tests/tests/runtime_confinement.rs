//! What confines a container, seen from inside: capabilities,
//! no_new_privileges, rlimits, umask, masked and read-only paths. Run as
//! root.

use berth_tests::bundle::Bundle;
use berth_tests::runc::{Runc, test_cgroup_path};

fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn run(runc: &Runc, bundle: &Bundle, id: &str) -> String {
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(id).into());
    runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), id])
}

/// A tmpfs at /tmp to write in.
fn with_writable_tmp(bundle: &Bundle) {
    bundle.edit(|c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    });
}

/// The value of a `/proc/self/status` line printed by the container.
fn status_field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{name} in {out}"))
}

#[test]
fn only_the_listed_capabilities_remain_and_no_new_privileges_holds() {
    let runc = Runc::new();
    let id = id("caps");
    let bundle = Bundle::busybox(&["cat", "/proc/self/status"]);
    // The default spec: AUDIT_WRITE (29), KILL (5), NET_BIND_SERVICE (10).
    let out = run(&runc, &bundle, &id);
    let expected = (1u64 << 29) | (1 << 5) | (1 << 10);
    for field in ["CapBnd", "CapEff", "CapPrm"] {
        let value = u64::from_str_radix(status_field(&out, field), 16).unwrap();
        assert_eq!(value, expected, "{field}: {out}");
    }
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");

    // A root process without CAP_CHOWN cannot give a file away.
    let id = self::id("caps-chown");
    let bundle = Bundle::busybox(&["sh", "-c", "touch /tmp/f && chown 1:1 /tmp/f; echo rc=$?"]);
    with_writable_tmp(&bundle);
    let out = run(&runc, &bundle, &id);
    assert!(out.contains("rc=1"), "{out}");

    // With CAP_CHOWN listed it can, and an unprivileged user keeps an
    // ambient capability it was given.
    let id = self::id("caps-more");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "touch /tmp/f && chown 1:1 /tmp/f; echo rc=$?; grep Cap /proc/self/status",
    ]);
    with_writable_tmp(&bundle);
    bundle.edit(|c| {
        for set in ["bounding", "effective", "permitted", "inheritable", "ambient"] {
            c["process"]["capabilities"][set] = serde_json::json!(["CAP_CHOWN", "CAP_NET_RAW"]);
        }
        c["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    });
    let out = run(&runc, &bundle, &id);
    assert!(out.contains("rc=0"), "{out}");
    let chown_and_raw = (1u64 << 0) | (1 << 13);
    assert_eq!(
        u64::from_str_radix(status_field(&out, "CapAmb"), 16).unwrap(),
        chown_and_raw,
        "{out}"
    );
    assert_eq!(
        u64::from_str_radix(status_field(&out, "CapEff"), 16).unwrap(),
        chown_and_raw,
        "{out}"
    );
}

#[test]
fn rlimits_and_umask_apply() {
    let runc = Runc::new();
    let id = id("limits");
    let bundle = Bundle::busybox(&["sh", "-c", "echo nofile=$(ulimit -n); echo umask=$(umask)"]);
    bundle.edit(|c| {
        c["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 777, "soft": 555}]);
        c["process"]["user"]["umask"] = 0o027.into();
    });
    let out = run(&runc, &bundle, &id);
    assert!(out.contains("nofile=555\n"), "{out}");
    assert!(out.contains("umask=0027\n"), "{out}");
}

#[test]
fn masked_paths_are_empty_and_read_only_paths_refuse_writes() {
    let runc = Runc::new();
    let id = id("masks");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "[ -e /proc/kcore ] && echo kcore=$(wc -c < /proc/kcore) || echo kcore=absent; \
         echo keys=$(wc -c < /proc/keys); echo cpuinfo=$(wc -c < /proc/cpuinfo); \
         echo firmware=$(ls /sys/firmware | wc -l); \
         echo x > /proc/sys/kernel/domainname; echo rc=$?; grep -E ' /proc/(sys|kcore) ' /proc/mounts",
    ]);
    // One more file, one that exists on every host.
    bundle.edit(|c| {
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .push("/proc/cpuinfo".into())
    });
    let out = run(&runc, &bundle, &id);
    // Some kernels have no /proc/kcore at all; where it exists it reads empty.
    assert!(out.contains("kcore=0\n") || out.contains("kcore=absent\n"), "{out}");
    assert!(out.contains("keys=0\n"), "{out}");
    assert!(out.contains("cpuinfo=0\n"), "{out}");
    assert!(out.contains("firmware=0\n"), "{out}");
    assert!(out.contains("rc=1\n"), "{out}");
    assert!(
        out.lines().any(|l| l.contains(" /proc/sys ") && l.contains(" ro,")),
        "/proc/sys read-only: {out}"
    );
}

#[test]
fn a_masked_path_that_is_a_symlink_is_refused_and_nothing_is_left() {
    let runc = Runc::new();
    let id = id("masklink");
    let bundle = Bundle::busybox(&["true"]);
    std::os::unix::fs::symlink("/etc", bundle.rootfs().join("sneaky")).unwrap();
    bundle.edit(|c| {
        c["linux"]["maskedPaths"].as_array_mut().unwrap().push("/sneaky".into());
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
    });
    let stderr = runc.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(stderr.contains("linux.maskedPaths[10]"), "{stderr}");
    assert!(runc.ids().is_empty());
    assert!(!runc.root().join(&id).exists());
}

#[test]
fn a_capability_that_is_not_a_name_is_refused_naming_the_field() {
    // (An unknown name is warned of and left out, as runc does:
    // runtime_cli.rs.)
    let runc = Runc::new();
    let id = id("badcap");
    let bundle = Bundle::busybox(&["true"]);
    bundle.edit(|c| {
        c["process"]["capabilities"]["effective"] = serde_json::json!(["CAP_KILL", 7]);
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
    });
    let stderr = runc.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(stderr.contains("process.capabilities.effective[1]"), "{stderr}");
    assert!(runc.ids().is_empty());
}

/// A profile allowing everything except `rules`.
fn seccomp_profile(rules: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"], "syscalls": rules})
}

#[test]
fn seccomp_rules_return_errors_and_kill() {
    let runc = Runc::new();
    let id = id("seccomp");
    let bundle = Bundle::busybox(&["sh", "-c", "mkdir /tmp/d; echo mkdir=$?; echo uname=$(uname -s)"]);
    with_writable_tmp(&bundle);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = seccomp_profile(serde_json::json!([
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]));
    });
    let out = run(&runc, &bundle, &id);
    assert!(out.contains("mkdir=1\n"), "{out}");
    assert!(out.contains("uname=Linux\n"), "{out}");

    // A kill action ends the process with SIGSYS (exit 128 + 31).
    let id = self::id("seccomp-kill");
    let bundle = Bundle::busybox(&["uname"]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] =
            seccomp_profile(serde_json::json!([{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}]));
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
    });
    let out = runc.run(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(
        out.status.code(),
        Some(128 + 31),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An argument condition: only changing a mode to 0700 is refused.
    let id = self::id("seccomp-args");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "touch /tmp/f; chmod 700 /tmp/f; echo private=$?; chmod 755 /tmp/f; echo open=$?",
    ]);
    with_writable_tmp(&bundle);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = seccomp_profile(serde_json::json!([
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 0o700, "op": "SCMP_CMP_EQ"}]},
            {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 2, "value": 0o700, "op": "SCMP_CMP_EQ"}]}
        ]));
    });
    let out = run(&runc, &bundle, &id);
    assert!(out.contains("private=1\n") && out.contains("open=0\n"), "{out}");
}

#[test]
fn an_exec_gets_the_container_seccomp_profile() {
    let runc = Runc::new();
    let id = id("seccomp-exec");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    with_writable_tmp(&bundle);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = seccomp_profile(serde_json::json!([
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]));
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
    });
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let out = runc.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "mkdir /tmp/x; echo mkdir=$?; grep Seccomp: /proc/self/status",
    ]);
    assert!(out.contains("mkdir=1\n"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn an_unknown_system_call_is_refused_naming_the_field() {
    let runc = Runc::new();
    let id = id("seccomp-bad");
    let bundle = Bundle::busybox(&["true"]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = seccomp_profile(serde_json::json!([
            {"names": ["read"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["write", "warp_drive"], "action": "SCMP_ACT_ERRNO"}
        ]));
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
    });
    let stderr = runc.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(stderr.contains("linux.seccomp.syscalls[1].names[1]"), "{stderr}");
    assert!(runc.ids().is_empty());
    assert!(!runc.root().join(&id).exists());
}

#[test]
fn a_user_namespace_maps_the_container_root_to_an_unprivileged_host_id() {
    let runc = Runc::new();
    let id = id("userns");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; sleep 1000",
    ]);
    let shifted = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    bundle.with_user_namespace(shifted.clone(), shifted);
    let log = tempfile::NamedTempFile::new().unwrap();
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
    let mut create = runc.command(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let status = create
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(log.path()).unwrap());
    let pid = runc.pid(&id);
    berth_tests::wait::until(std::time::Duration::from_secs(10), "the container's output", || {
        let out = std::fs::read_to_string(log.path()).unwrap();
        (out.lines().count() >= 3).then_some(out)
    });
    let out = std::fs::read_to_string(log.path()).unwrap();
    let maps: Vec<Vec<&str>> = out.lines().take(2).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(maps, [["0", "100000", "65536"], ["0", "100000", "65536"]], "{out}");
    assert_eq!(out.lines().nth(2), Some("0"), "{out}");
    // From the host, the container's root is host uid 100000.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid_line.split_whitespace().nth(1), Some("100000"), "{uid_line}");
    // An exec joins the user namespace too.
    let out = runc.ok(&["exec", &id, "sh", "-c", "id -u; cat /proc/self/uid_map"]);
    assert!(out.starts_with("0\n") && out.contains("100000"), "{out}");
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn overlapping_or_missing_mappings_are_refused_naming_the_field() {
    let runc = Runc::new();
    let cases = [
        (
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 1000}, {"containerID": 500, "hostID": 300000, "size": 10}]),
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 1}]),
            "linux.uidMappings[1]",
        ),
        (
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 1}]),
            serde_json::json!([]),
            "linux.gidMappings",
        ),
    ];
    for (i, (uids, gids, field)) in cases.into_iter().enumerate() {
        let id = id(&format!("userns-bad{i}"));
        let bundle = Bundle::busybox(&["true"]);
        bundle.with_user_namespace(uids, gids);
        bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
        let stderr = runc.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
        assert!(stderr.contains(field), "{field} in {stderr}");
        assert!(runc.ids().is_empty());
        assert!(!runc.root().join(&id).exists());
    }
}

#[test]
fn the_runtime_binary_cannot_be_reopened_for_writing_through_the_container() {
    use std::os::fd::AsRawFd as _;
    let runc = Runc::new();
    let id = id("selfprotect");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
    runc.ok_detached(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    // What a process in the container could grab while the init still runs
    // the runtime's binary: its /proc/<pid>/exe.
    let pid = runc.pid(&id);
    let exe = std::fs::File::open(format!("/proc/{pid}/exe")).unwrap();
    runc.ok(&["start", &id]);
    // Once the binary no longer runs there, reopening it for writing is
    // what the attack needs; the read-only bind it ran from refuses.
    let reopened = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    let err = reopened.expect_err("the runtime binary was writable through the container's view");
    // EROFS; or ETXTBSY first while another test runs the same binary.
    assert!(matches!(err.raw_os_error(), Some(libc::EROFS | libc::ETXTBSY)), "{err}");
    // Either way, the file the container could reach sits on a read-only mount.
    let flags = nix::sys::statvfs::fstatvfs(&exe).unwrap().flags();
    assert!(flags.contains(nix::sys::statvfs::FsFlags::ST_RDONLY), "{flags:?}");
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn security_labels_the_host_cannot_apply_are_ignored_with_a_warning() {
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.trim() == "Y");
    let selinux = std::path::Path::new("/sys/fs/selinux/enforce").exists();
    assert!(
        !apparmor && !selinux,
        "this test expects a host without AppArmor and SELinux, as CI's"
    );
    let runc = Runc::new();
    let id = id("labels");
    let bundle = Bundle::busybox(&["echo", "ran"]);
    bundle.edit(|c| {
        c["process"]["apparmorProfile"] = "berth-default".into();
        c["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into();
    });
    let out = run(&runc, &bundle, &id);
    assert_eq!(out, "ran\n");
    let log = std::fs::read_to_string(runc.log_path()).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("\"level\":\"warning\"")).collect();
    assert!(warnings.iter().any(|l| l.contains("process.apparmorProfile")), "{log}");
    assert!(warnings.iter().any(|l| l.contains("process.selinuxLabel")), "{log}");
}

#[test]
fn features_lists_hooks_namespaces_capabilities_and_seccomp_as_runc_does() {
    let runc = Runc::new();
    let features: serde_json::Value = serde_json::from_str(&runc.ok(&["features"])).unwrap();
    assert_eq!(features["hooks"].as_array().map(Vec::len), Some(6), "{features}");
    let namespaces = features["linux"]["namespaces"].as_array().unwrap();
    for ns in ["user", "time", "cgroup", "mount"] {
        assert!(namespaces.iter().any(|n| n == ns), "{ns} in {namespaces:?}");
    }
    let caps = features["linux"]["capabilities"].as_array().unwrap();
    assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"), "{caps:?}");
    assert_eq!(features["linux"]["seccomp"]["enabled"], true);
    assert!(
        features["linux"]["seccomp"]["archs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "SCMP_ARCH_X86_64")
    );
}
