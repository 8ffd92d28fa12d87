//! The cgroup v2 backend on this host's real cgroup2 hierarchy
//! (`/sys/fs/cgroup/unified` beside the v1 ones): moving processes in,
//! cgroup.freeze, cgroup.kill, the eBPF device filter, hugetlb limits and
//! removal. Run as root.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_runtime::cgroups::v2::V2;
use berth_runtime::cgroups::{CgroupManager, Layout, Mode};
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResourcesBuilder};

const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// The host's cgroup2 mount treated as a whole unified host.
fn unified_layout() -> Option<Layout> {
    let layout = Layout::detect().expect("mountinfo");
    let root = layout.unified.clone()?;
    Some(Layout {
        mode: Mode::Unified,
        v1: Vec::new(),
        unified: Some(root),
    })
}

/// A v2 cgroup under a per-test parent; removed (with its parent) on drop,
/// after killing whatever is still in it.
struct TestCgroup {
    manager: V2,
    parent: PathBuf,
}

impl TestCgroup {
    fn new(name: &str) -> Option<Self> {
        let layout = unified_layout()?;
        let parent_name = format!("berth-tests-v2-{name}-{}", std::process::id());
        let path = PathBuf::from("/").join(&parent_name).join("c");
        let manager = V2::new(&layout, &path, &HashMap::new()).expect("v2 manager");
        let parent = layout.unified.unwrap().join(parent_name);
        Some(Self { manager, parent })
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let dir = self.manager.dir();
        if dir.exists() {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.manager.pids().is_ok_and(|p| !p.is_empty()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_dir(&self.parent);
    }
}

/// A shell that waits for a line on stdin before running `script`, so it can
/// be moved into the cgroup first. Killed and reaped on drop.
struct Waiting(Child);

impl Waiting {
    fn spawn(script: &str) -> Self {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("read go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        Self(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn go(&mut self) {
        self.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }

    /// Waits for exit; returns stdout and stderr together.
    fn finish(mut self) -> String {
        self.go();
        let mut out = String::new();
        for line in BufReader::new(self.0.stdout.take().unwrap()).lines() {
            out.push_str(&line.unwrap());
            out.push('\n');
        }
        for line in BufReader::new(self.0.stderr.take().unwrap()).lines() {
            out.push_str(&line.unwrap());
            out.push('\n');
        }
        self.0.wait().unwrap();
        out
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// This suite needs the host's cgroup2 hierarchy; a host without one fails
/// it rather than passing it unexercised.
fn require_cgroup2() {
    assert!(
        Path::new(UNIFIED).join("cgroup.controllers").exists(),
        "no cgroup2 hierarchy at {UNIFIED}: these tests need the hybrid layout CI has"
    );
}

#[test]
fn processes_move_in_freeze_thaw_and_cgroup_kill_ends_them_all() {
    require_cgroup2();
    let cgroup = TestCgroup::new("freeze").unwrap();
    let manager = &cgroup.manager;
    let mut first = Waiting::spawn("sleep 1000");
    let second = Waiting::spawn("sleep 1000");
    manager.apply(first.pid()).unwrap();
    manager.apply(second.pid()).unwrap();
    first.go();
    let mut pids = manager.pids().unwrap();
    pids.sort();
    let mut expected = vec![first.pid(), second.pid()];
    expected.sort();
    // `first` may already have forked its sleep, which joins the cgroup too.
    assert!(expected.iter().all(|p| pids.contains(p)), "{pids:?} holds {expected:?}");

    manager.freeze().unwrap();
    assert!(manager.frozen().unwrap());
    let events = std::fs::read_to_string(manager.dir().join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    manager.thaw().unwrap();
    assert!(!manager.frozen().unwrap());

    manager.signal_all(Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !manager.pids().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "cgroup.kill left {:?}", manager.pids());
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(first);
    drop(second);
    manager.destroy().unwrap();
    assert!(!manager.dir().exists());
}

#[test]
fn a_frozen_cgroup_stops_its_processes_running() {
    require_cgroup2();
    let cgroup = TestCgroup::new("stopped").unwrap();
    let manager = &cgroup.manager;
    let mut busy = Waiting::spawn("while :; do :; done");
    manager.apply(busy.pid()).unwrap();
    busy.go();
    manager.freeze().unwrap();
    // A frozen task sleeps in the kernel: never 'R' while frozen.
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..20 {
        assert_ne!(state_of(busy.pid()), Some('R'), "a frozen process ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    manager.thaw().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while state_of(busy.pid()) != Some('R') {
        assert!(Instant::now() < deadline, "the thawed loop never ran again");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_ebpf_device_filter_allows_only_the_listed_devices() {
    require_cgroup2();
    let cgroup = TestCgroup::new("devices").unwrap();
    let manager = &cgroup.manager;
    let worker = Waiting::spawn(
        "if echo x > /dev/null; then echo null-ok; fi; \
         if head -c1 /dev/zero > /dev/null; then echo zero-ok; else echo zero-denied; fi",
    );
    manager.apply(worker.pid()).unwrap();
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .unwrap();
    let allow_null = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(1)
        .minor(3)
        .access("rw")
        .build()
        .unwrap();
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![deny_all, allow_null])
        .build()
        .unwrap();
    manager.set(&resources).unwrap();
    let out = worker.finish();
    assert!(out.contains("null-ok"), "{out}");
    assert!(out.contains("zero-denied"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");

    // An update replaces the filter rather than stacking another one.
    let worker = Waiting::spawn("if head -c1 /dev/zero > /dev/null; then echo zero-ok; fi");
    manager.apply(worker.pid()).unwrap();
    let allow_all = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .access("rwm")
        .build()
        .unwrap();
    manager
        .set(
            &LinuxResourcesBuilder::default()
                .devices(vec![allow_all])
                .build()
                .unwrap(),
        )
        .unwrap();
    let out = worker.finish();
    assert!(out.contains("zero-ok"), "{out}");
}

#[test]
fn hugetlb_limits_and_stats_come_from_the_v2_files() {
    require_cgroup2();
    let controllers = std::fs::read_to_string(Path::new(UNIFIED).join("cgroup.controllers")).unwrap();
    assert!(
        controllers.split_whitespace().any(|c| c == "hugetlb"),
        "hugetlb is not on cgroup2 here ({controllers}); CI's hybrid layout puts it there"
    );
    let cgroup = TestCgroup::new("hugetlb").unwrap();
    let manager = &cgroup.manager;
    let worker = Waiting::spawn("true");
    manager.apply(worker.pid()).unwrap();
    let limit = oci_spec::runtime::LinuxHugepageLimitBuilder::default()
        .page_size("2MB")
        .limit(4 * 2 * 1024 * 1024)
        .build()
        .unwrap();
    let resources = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![limit])
        .build()
        .unwrap();
    manager.set(&resources).unwrap();
    let max = std::fs::read_to_string(manager.dir().join("hugetlb.2MB.max")).unwrap();
    assert_eq!(max.trim(), (8 * 1024 * 1024).to_string());
    let stats = manager.stats().unwrap();
    assert!(
        stats.hugetlb.iter().any(|h| h.page_size == "2MB"),
        "{:?}",
        stats.hugetlb
    );
    drop(worker.finish());
}

#[test]
fn a_bad_unified_key_is_refused_naming_it() {
    require_cgroup2();
    let cgroup = TestCgroup::new("unified").unwrap();
    let manager = &cgroup.manager;
    let worker = Waiting::spawn("true");
    manager.apply(worker.pid()).unwrap();
    let resources = LinuxResourcesBuilder::default()
        .unified(HashMap::from([("../escape".to_string(), "1".to_string())]))
        .build()
        .unwrap();
    let err = manager.set(&resources).unwrap_err().to_string();
    assert!(err.contains("linux.resources.unified"), "{err}");
    assert!(!Path::new(UNIFIED).join("escape").exists());
    drop(worker.finish());
}
