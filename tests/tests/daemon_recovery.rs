//! Tasks across berthd crashes and shim deaths: running containers are
//! taken back after a SIGKILL of the daemon, exits that happened meanwhile
//! are reported, a killed shim's task is cleaned up with its exit
//! published, and an emptied state directory (a reboot) leaves containers
//! without tasks. Run as root.

use std::time::Duration;

use berth_tests::ctr::Ctr;
use berth_tests::daemon::Daemon;
use berth_tests::wait;

fn task_pid(ctr: &Ctr, id: &str) -> i32 {
    ctr.ok(&["task", "ls"])
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("task {id} is listed"))
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

#[test]
fn running_tasks_survive_a_daemon_sigkill_and_exits_meanwhile_are_reported() {
    let (mut daemon, ctr, image) = Daemon::with_busybox();
    ctr.ok(&["run", "-d", &image, "keep", "sleep", "1000"]);
    ctr.ok(&["run", "-d", &image, "dies", "sleep", "1000"]);
    let (keep, dies) = (task_pid(&ctr, "keep"), task_pid(&ctr, "dies"));

    daemon.kill();
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(keep) && alive(dies), "containers outlive the daemon");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(dies), nix::sys::signal::Signal::SIGKILL).unwrap();
    daemon.relaunch();

    let events = ctr.subscribe(&[]);
    assert_eq!(ctr.task_status("keep"), "RUNNING");
    assert_eq!(task_pid(&ctr, "keep"), keep, "the same process");
    ctr.wait_task_status("dies", "STOPPED");
    events.wait_for_line(&["/tasks/exit", "\"container_id\":\"dies\""], Duration::from_secs(10));
    assert_eq!(
        ctr.ok(&["task", "exec", "--exec-id", "e1", "keep", "echo", "still-here"]),
        "still-here\n"
    );
    ctr.ok(&["task", "kill", "-s", "SIGKILL", "keep"]);
    ctr.wait_task_status("keep", "STOPPED");
    for id in ["keep", "dies"] {
        ctr.ok(&["task", "rm", id]);
        ctr.ok(&["container", "rm", id]);
    }
}

#[test]
fn a_killed_shim_is_cleaned_up_and_its_exit_published() {
    let (daemon, ctr, image) = Daemon::with_busybox();
    ctr.ok(&["run", "-d", &image, "victim", "sleep", "1000"]);
    let pid = task_pid(&ctr, "victim");
    let events = ctr.subscribe(&[]);
    let shim: i32 = std::fs::read_to_string(daemon.state.join("tasks/default/victim/shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cgroups = cgroups_of(pid);
    assert!(!cgroups.is_empty(), "the container's cgroups are found");
    let killed = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::Signal::SIGKILL).unwrap();
    let exit = events.wait_for_line(&["/tasks/exit", "\"container_id\":\"victim\""], Duration::from_secs(10));
    assert!(exit.contains("\"exit_status\":137"), "{exit}");
    events.wait_for_line(
        &["/tasks/delete", "\"container_id\":\"victim\""],
        Duration::from_secs(10),
    );
    // The measured latency, for the record (`--nocapture` shows it).
    #[allow(clippy::print_stderr)]
    {
        eprintln!("shim SIGKILL to /tasks/delete: {:?}", killed.elapsed());
    }
    wait::until(Duration::from_secs(10), "the container's process to go", || {
        (!alive(pid)).then_some(())
    });
    let out = ctr.run(&["task", "ls", "-q"]);
    assert!(!out.stdout.contains("victim"), "{}", out.stdout);
    assert!(!daemon.state.join("tasks/default/victim").exists(), "bundle left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(daemon.dir().to_str().unwrap()), "mounts left");
    for cgroup in &cgroups {
        assert!(!cgroup.exists(), "cgroup {} left", cgroup.display());
    }
    ctr.ok(&["container", "rm", "victim"]);
}

/// The cgroup directories a process is in, per hierarchy, below the root.
fn cgroups_of(pid: i32) -> Vec<std::path::PathBuf> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut dirs = Vec::new();
    for line in table.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next().unwrap_or(""), fields.next().unwrap_or("/"));
        if path == "/" {
            continue;
        }
        let hierarchy = match controllers {
            "" => "unified".to_string(),
            named => named
                .trim_start_matches("name=")
                .split(',')
                .next()
                .unwrap_or(named)
                .to_string(),
        };
        let dir = std::path::Path::new("/sys/fs/cgroup")
            .join(&hierarchy)
            .join(path.trim_start_matches('/'));
        if dir.exists() {
            dirs.push(dir);
        }
    }
    dirs
}

#[test]
fn after_a_reboot_containers_remain_without_tasks() {
    let (mut daemon, ctr, image) = Daemon::with_busybox();
    ctr.ok(&["run", "-d", &image, "rebooted", "sleep", "1000"]);
    // A reboot: every process gone, the state directory empty.
    ctr.ok(&["task", "kill", "-s", "SIGKILL", "rebooted"]);
    ctr.wait_task_status("rebooted", "STOPPED");
    let shim: i32 = std::fs::read_to_string(daemon.state.join("tasks/default/rebooted/shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    daemon.kill();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::Signal::SIGKILL);
    let rootfs = daemon.state.join("tasks/default/rebooted/rootfs");
    while nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
    std::fs::remove_dir_all(&daemon.state).unwrap();
    // A reboot leaves no cgroups either.
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join("default/rebooted"));
    }
    daemon.relaunch();

    let out = ctr.run(&["task", "ls", "-q"]);
    assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
    assert!(ctr.ok(&["containers", "ls", "-q"]).contains("rebooted"));
    assert!(
        !daemon.root.join("tasks/default/rebooted").exists(),
        "stale work dir removed"
    );
    ctr.ok(&["container", "rm", "rebooted"]);
}

#[test]
fn a_shim_of_a_newer_protocol_is_refused_and_left_running() {
    let mut daemon = Daemon::start();
    daemon.env = vec![("BERTH_TEST_SHIM_PROTOCOL".into(), "99".into())];
    daemon.restart();
    let ctr = daemon.ctr();
    let image = berth_tests::images::busybox();
    ctr.import("overlayfs", &image.oci_tar);
    ctr.ok(&["run", "-d", &image.name, "newer", "sleep", "1000"]);
    let pid = task_pid(&ctr, "newer");
    let shim: i32 = std::fs::read_to_string(daemon.state.join("tasks/default/newer/shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    daemon.kill();
    daemon.env.clear();
    daemon.relaunch();
    assert!(!ctr.ok(&["task", "ls", "-q"]).contains("newer"), "not taken over");
    assert!(daemon.log().contains("protocol 99"), "the refusal is logged");
    assert!(alive(shim) && alive(pid), "the shim and its container are left running");
    assert!(
        daemon.state.join("tasks/default/newer").exists(),
        "its bundle is left alone"
    );
    // Clean up what this daemon does not own.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let rootfs = daemon.state.join("tasks/default/newer/rootfs");
    while nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
    wait::until(Duration::from_secs(10), "the container to die", || {
        (!alive(pid)).then_some(())
    });
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join("default/newer"));
    }
    ctr.ok(&["container", "rm", "newer"]);
}
