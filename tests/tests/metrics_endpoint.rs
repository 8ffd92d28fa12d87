//! The metrics endpoint (`[metrics] address`, `GET /v1/metrics`): gRPC
//! counts by method and code, each task's cgroup figures read from its
//! shim (a stopped shim does not hold up the scrape), berthd's own
//! process figures; a taken address stops the start.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use berth_tests::daemon::Daemon;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// GET /v1/metrics; the body.
fn scrape(address: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET /v1/metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample whose line starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const VERSION_OK: &str = "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"containerd.services.version.v1.Version\",grpc_method=\"Version\",grpc_code=\"OK\"}";

#[test]
fn counts_calls_shows_both_tasks_and_is_not_held_up_by_a_stopped_shim() {
    let address = free_address();
    let daemon = Daemon::start_with_config(&format!(
        "version = 2\n[metrics]\naddress = \"{address}\"\ngrpc_histogram = true\n"
    ));
    let ctr = daemon.ctr();
    let image = berth_tests::images::busybox();
    ctr.import("overlayfs", &image.oci_tar);
    for id in ["metrics-a", "metrics-b"] {
        ctr.ok(&["run", "-d", &image.name, id, "sleep", "1000"]);
    }
    struct Cleanup<'a>(&'a berth_tests::ctr::Ctr, Option<Pid>);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            if let Some(shim) = self.1 {
                let _ = kill(shim, Signal::SIGCONT);
            }
            self.0.remove_all_tasks_and_containers();
        }
    }
    let mut cleanup = Cleanup(&ctr, None);

    ctr.ok(&["version"]);
    let before = sample(&scrape(&address), VERSION_OK).expect("Version counted");
    ctr.ok(&["version"]);
    ctr.ok(&["version"]);
    let text = scrape(&address);
    assert_eq!(sample(&text, VERSION_OK), Some(before + 2.0), "{text}");
    assert!(text.contains("grpc_server_started_total{"), "{text}");
    assert!(text.contains("grpc_server_handling_seconds_bucket{"), "{text}");
    for id in ["metrics-a", "metrics-b"] {
        let labels = format!("{{container_id=\"{id}\",namespace=\"default\"}}");
        let memory = sample(&text, &format!("container_memory_usage_bytes{labels}"));
        assert!(memory.is_some_and(|m| m > 0.0), "{id}: {text}");
        assert_eq!(
            sample(&text, &format!("container_pids_current{labels}")),
            Some(1.0),
            "{text}"
        );
        assert!(
            sample(&text, &format!("container_cpu_total_nanoseconds{labels}")).is_some(),
            "{text}"
        );
    }
    assert!(
        sample(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(
        sample(&text, "process_proportional_memory_bytes").is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(sample(&text, "process_open_fds").is_some_and(|v| v > 0.0), "{text}");

    // A stopped shim: the scrape answers within its limit, without that task.
    let task_pid: i32 = ctr
        .ok(&["task", "ls"])
        .lines()
        .find(|l| l.starts_with("metrics-a "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("metrics-a's pid");
    let status = std::fs::read_to_string(format!("/proc/{task_pid}/status")).unwrap();
    let shim: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap();
    assert!(
        std::fs::read_to_string(format!("/proc/{shim}/cmdline"))
            .unwrap()
            .contains("containerd-shim-berth-v2"),
        "the task's parent is its shim"
    );
    kill(Pid::from_raw(shim), Signal::SIGSTOP).unwrap();
    cleanup.1 = Some(Pid::from_raw(shim));
    let started = Instant::now();
    let text = scrape(&address);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "the scrape took {took:?}");
    assert!(!text.contains("container_id=\"metrics-a\""), "{text}");
    assert!(
        text.contains("container_memory_usage_bytes{container_id=\"metrics-b\""),
        "{text}"
    );
}

#[test]
fn a_metrics_address_in_use_stops_the_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let daemon = Daemon::unstarted(&format!("version = 2\n[metrics]\naddress = \"{address}\"\n"), &[]);
    let log = daemon.dir().join("refused.log");
    let status = Daemon::spawn_raw(&daemon.args(), &log).wait().unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(&address) && log.contains("metrics.address"), "{log}");
    assert!(!daemon.socket.exists());
}
