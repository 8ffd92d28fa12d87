//! Limits that protect berthd from a misbehaving client: connections
//! opened and abandoned in a loop, many concurrent calls, a cap on open
//! connections (`[grpc] max_connections`). Throughout, `ctr version`
//! answers quickly, and berthd's descriptors return to their idle count.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::clients;
use berth_tests::daemon::Daemon;

fn open_descriptors(daemon: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", daemon.pid())).unwrap().count()
}

/// Runs the load client, timing `ctr version` calls meanwhile when
/// `with_ctr`; its report and the slowest `ctr version`.
fn load(daemon: &Daemon, args: &[&str], with_ctr: bool) -> (serde_json::Value, Duration) {
    let python = clients::dir().join("python/.venv/bin/python");
    let socket = daemon.socket.display().to_string();
    let mut load = Command::new(python)
        .arg(clients::dir().join("python/load_check.py"))
        .args(["--socket", &socket])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ctr = daemon.ctr();
    let mut slowest = Duration::ZERO;
    while with_ctr && load.try_wait().unwrap().is_none() {
        let start = Instant::now();
        ctr.ok(&["version"]);
        slowest = slowest.max(start.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = load.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).unwrap(), slowest)
}

fn descriptors_return_to(daemon: &Daemon, idle: usize) {
    berth_tests::wait::until(
        Duration::from_secs(10),
        "berthd's descriptors to return to idle",
        || (open_descriptors(daemon) <= idle).then_some(()),
    );
}

#[test]
fn abandoned_connections_and_a_thousand_concurrent_calls_leave_ctr_answering() {
    let daemon = Daemon::start();
    daemon.ctr().ok(&["version"]);
    let idle = open_descriptors(&daemon);
    let (report, slowest) = load(
        &daemon,
        &["--abandon", "200", "--hold", "3", "--calls", "1000", "--channels", "10"],
        true,
    );
    assert_eq!(report["opened"], 200, "{report}");
    assert_eq!(report["codes"], serde_json::json!({"OK": 1000}), "{report}");
    assert!(slowest < Duration::from_secs(1), "ctr version took {slowest:?}");
    descriptors_return_to(&daemon, idle);
}

#[test]
fn connections_past_max_connections_are_closed_at_once_and_the_rest_served() {
    let daemon = Daemon::start_with_config("version = 2\n[grpc]\nmax_connections = 40\n");
    daemon.ctr().ok(&["version"]);
    let idle = open_descriptors(&daemon);
    let (report, _) = load(&daemon, &["--abandon", "100", "--hold", "2", "--calls", "0"], false);
    assert_eq!(report["closed_by_daemon"], 60, "{report}");
    assert!(
        daemon.log().contains("grpc.max_connections are open"),
        "{}",
        daemon.log()
    );
    descriptors_return_to(&daemon, idle);
    // Once they are gone, calls are served again.
    daemon.ctr().ok(&["version"]);
}
