//! `berth-runc update` on v1 cgroups where the order of the writes
//! matters to the kernel: memory with memory+swap, a CPU period under a
//! parent's quota, and device rules re-applied under a running container
//! that must never see a device it may use refused. Run as root.

use std::path::PathBuf;

use berth_tests::bundle::Bundle;
use berth_tests::runc::{Runc, TEST_CGROUP_PARENT, test_cgroup_path};

fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// A v1 file of a container's cgroup, trimmed.
fn read(controller: &str, cgroup: &str, file: &str) -> String {
    std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{cgroup}/{file}"))
        .unwrap_or_else(|e| panic!("{controller}{cgroup}/{file}: {e}"))
        .trim()
        .to_string()
}

/// A parent cgroup made by the test (as a pod's would be), removed when
/// dropped: declare it before the `Runc` whose containers live in it.
struct ParentCgroup {
    path: String,
    dirs: Vec<PathBuf>,
}

impl ParentCgroup {
    fn new(name: &str, controllers: &[&str]) -> Self {
        let path = format!("/{TEST_CGROUP_PARENT}/{name}");
        let dirs = controllers
            .iter()
            .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}{path}")))
            .collect::<Vec<_>>();
        for dir in &dirs {
            std::fs::create_dir_all(dir).unwrap();
        }
        Self { path, dirs }
    }

    fn child(&self, id: &str) -> String {
        format!("{}/{id}", self.path)
    }
}

impl Drop for ParentCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn run_sleeping(runc: &Runc, id: &str, cgroup: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Bundle {
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = cgroup.into();
        edit(c);
    });
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), id]);
    bundle
}

#[test]
fn lifting_the_memory_limit_lifts_memory_and_swap_together() {
    // Without swap accounting there is no memsw file and only the memory
    // limit is checked.
    let swap = std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
    let unlimited = read("memory", "", "memory.limit_in_bytes");
    let runc = Runc::new();
    let id = id("update-memsw");
    let cgroup = test_cgroup_path(&id);
    let _bundle = run_sleeping(&runc, &id, &cgroup, |c| {
        c["linux"]["resources"]["memory"] = serde_json::json!({"limit": 33554432});
    });
    if swap {
        runc.ok(&["update", &id, "--memory", "52428800", "--memory-swap", "96468992"]);
        assert_eq!(read("memory", &cgroup, "memory.memsw.limit_in_bytes"), "96468992");
    }
    // memsw may never be below the memory limit: with only --memory -1 the
    // swap limit goes too (and first), as runc does.
    runc.ok(&["update", &id, "--memory", "-1"]);
    assert_eq!(read("memory", &cgroup, "memory.limit_in_bytes"), unlimited);
    if swap {
        assert_eq!(read("memory", &cgroup, "memory.memsw.limit_in_bytes"), unlimited);
        // And limits can be set again, the swap limit lowered after.
        runc.ok(&["update", &id, "--memory", "33554432", "--memory-swap", "41943040"]);
        assert_eq!(read("memory", &cgroup, "memory.memsw.limit_in_bytes"), "41943040");
    } else {
        runc.ok(&["update", &id, "--memory", "33554432"]);
    }
    assert_eq!(read("memory", &cgroup, "memory.limit_in_bytes"), "33554432");
}

#[test]
fn a_shorter_cpu_period_under_a_parents_quota_sets_the_quota_first() {
    let id = id("update-pod-cpu");
    let parent = ParentCgroup::new(&format!("pod-{id}"), &["cpu"]);
    let runc = Runc::new();
    std::fs::write(format!("/sys/fs/cgroup/cpu{}/cpu.cfs_quota_us", parent.path), "50000").unwrap();
    let cgroup = parent.child(&id);
    let _bundle = run_sleeping(&runc, &id, &cgroup, |c| {
        c["linux"]["resources"]["cpu"] = serde_json::json!({"quota": 500000, "period": 1000000});
    });
    // 60 % under a parent held to 50 % is refused, naming the file.
    let err = runc.fails(&["update", &id, "--cpu-quota", "600000"]);
    assert!(err.contains("cpu.cfs_quota_us"), "{err}");
    // 30 % with a period a hundredth of the current one: the period alone
    // would make the old quota 5000 %, so the quota is written first.
    runc.ok(&["update", &id, "--cpu-period", "10000", "--cpu-quota", "3000"]);
    assert_eq!(read("cpu", &cgroup, "cpu.cfs_period_us"), "10000");
    assert_eq!(read("cpu", &cgroup, "cpu.cfs_quota_us"), "3000");
    // Back to a long period: now the period has to go first.
    runc.ok(&["update", &id, "--cpu-period", "1000000", "--cpu-quota", "400000"]);
    assert_eq!(read("cpu", &cgroup, "cpu.cfs_period_us"), "1000000");
    assert_eq!(read("cpu", &cgroup, "cpu.cfs_quota_us"), "400000");
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn updates_never_refuse_a_device_the_container_may_use() {
    let runc = Runc::new();
    let id = id("update-devices");
    let cgroup = test_cgroup_path(&id);
    // The container writes to /dev/null without pause and notes each
    // refusal in its own root; /dev/kmsg stays denied (runc's suite writes
    // that rule with an access of "rwa").
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "while :; do echo x >/dev/null 2>/dev/null || echo refused >>/refusals; done",
    ]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = cgroup.clone().into();
        c["linux"]["resources"]["devices"] = serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": false, "type": "c", "major": 1, "minor": 11, "access": "rwa"}
        ]);
        c["linux"]["devices"] = serde_json::json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]);
    });
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let rules = read("devices", &cgroup, "devices.list");
    assert!(rules.lines().any(|l| l == "c 1:3 rwm"), "{rules}");
    assert!(
        !rules.lines().any(|l| l.starts_with("c 1:11") || l.starts_with("a ")),
        "{rules}"
    );
    for _ in 0..30 {
        runc.ok(&["update", &id, "--pids-limit", "30"]);
    }
    assert_eq!(read("devices", &cgroup, "devices.list"), rules, "the same rules after");
    let kmsg = runc.run(&["exec", &id, "sh", "-c", "head -c1 /dev/kmsg"]);
    assert!(!kmsg.status.success(), "/dev/kmsg stays denied");
    runc.ok(&["delete", "--force", &id]);
    let refusals = std::fs::read_to_string(bundle.rootfs().join("refusals")).unwrap_or_default();
    assert!(
        refusals.is_empty(),
        "/dev/null was refused {} times",
        refusals.lines().count()
    );
}

#[test]
fn the_init_never_builds_under_device_rules_in_transition() {
    // The change from the parent's allow-all to the container's list
    // denies every device for a moment; widened to 300 ms here. The init
    // makes device nodes and opens its console's /dev/ptmx meanwhile
    // unless the rules are in place before it starts building.
    let runc = Runc::new();
    let id = id("devices-first");
    let bundle = Bundle::busybox(&["sh", "-c", "tty; echo x > /dev/null && echo null-ok"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["process"]["terminal"] = true.into();
    });
    let console = berth_tests::console::ConsoleSocket::new();
    let socket = console.path().to_str().unwrap().to_string();
    let receiver = std::thread::spawn(move || console.receive());
    // stderr to a file: the container's init holds it until its console
    // replaces it.
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let status = runc
        .command(&[
            "create",
            "--console-socket",
            &socket,
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ])
        .env("BERTH_FAILPOINTS", "runtime.devices.default-changed=sleep(300)")
        .stdout(std::process::Stdio::null())
        .stderr(stderr.reopen().unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "create: {}",
        std::fs::read_to_string(stderr.path()).unwrap_or_default()
    );
    let (master, name) = receiver.join().unwrap();
    assert!(name.starts_with("/dev/pts/"), "{name}");
    runc.ok(&["start", &id]);
    let mut terminal = std::fs::File::from(master);
    let mut out = String::new();
    let mut buf = [0u8; 256];
    while !out.contains("null-ok") {
        match std::io::Read::read(&mut terminal, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let _ = runc.run(&["delete", "--force", &id]);
    assert!(out.contains("null-ok"), "{out}");
}
