//! berth-runc as the runtime binary of a private stock containerd, driven
//! through containerd's own runc shim with `ctr --runc-binary`.

use std::time::Duration;

use berth_tests::containerd::Containerd;
use berth_tests::ctr::Ctr;
use berth_tests::{binaries, images, wait};

fn runc_binary() -> String {
    binaries::berth("berth-runc").display().to_string()
}

fn prepared() -> (Containerd, Ctr, String) {
    let containerd = Containerd::start();
    let ctr = containerd.ctr();
    let image = images::busybox();
    ctr.import("overlayfs", &image.oci_tar);
    (containerd, ctr, image.name.clone())
}

#[test]
fn ctr_run_rm_prints_the_output_of_the_container() {
    let (_containerd, ctr, image) = prepared();
    let runc = runc_binary();
    let out = ctr.ok(&["run", "--runc-binary", &runc, "--rm", &image, "hello", "echo", "hi"]);
    assert_eq!(out, "hi\n");
    let out = ctr.run(&[
        "run",
        "--runc-binary",
        &runc,
        "--rm",
        &image,
        "failing",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(ctr.ok(&["containers", "ls", "-q"]).trim().is_empty());
}

#[test]
fn a_detached_task_pauses_resumes_reports_metrics_and_is_killed() {
    let (_containerd, ctr, image) = prepared();
    let runc = runc_binary();
    ctr.ok(&["run", "--runc-binary", &runc, "-d", &image, "bg", "sleep", "1000"]);
    let status = |ctr: &Ctr| {
        ctr.ok(&["task", "ls"])
            .lines()
            .find(|l| l.starts_with("bg "))
            .map(|l| l.split_whitespace().last().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(status(&ctr), "RUNNING");
    let ps = ctr.ok(&["task", "ps", "bg"]);
    assert_eq!(ps.lines().count(), 2, "one process: {ps}");

    ctr.ok(&["task", "pause", "bg"]);
    assert_eq!(status(&ctr), "PAUSED");
    ctr.ok(&["task", "resume", "bg"]);
    assert_eq!(status(&ctr), "RUNNING");

    let metrics = ctr.ok(&["task", "metrics", "bg"]);
    for row in [
        "memory.usage_in_bytes",
        "memory.limit_in_bytes",
        "cpuacct.usage",
        "pids.current",
    ] {
        assert!(metrics.contains(row), "{row} in {metrics}");
    }
    let pids_current = metrics
        .lines()
        .find(|l| l.starts_with("pids.current"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_default();
    assert_eq!(pids_current, "1", "{metrics}");

    ctr.ok(&["task", "kill", "-s", "SIGKILL", "bg"]);
    wait::until(Duration::from_secs(10), "the task to stop", || {
        (status(&ctr) == "STOPPED").then_some(())
    });
    ctr.ok(&["task", "rm", "bg"]);
    ctr.ok(&["container", "rm", "bg"]);
    assert!(ctr.ok(&["task", "ls", "-q"]).trim().is_empty());
}
