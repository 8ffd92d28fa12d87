//! berth-runc as the runtime binary of a private stock containerd, driven
//! through containerd's own runc shim with `ctr --runc-binary`.

use std::time::Duration;

use berth_tests::containerd::Containerd;
use berth_tests::ctr::Ctr;
use berth_tests::{binaries, wait};

fn runc_binary() -> String {
    binaries::berth("berth-runc").display().to_string()
}

#[test]
fn ctr_run_rm_prints_the_output_of_the_container() {
    let (_containerd, ctr, image) = Containerd::with_busybox();
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
    let (_containerd, ctr, image) = Containerd::with_busybox();
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

    let out = ctr.ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "bg",
        "sh",
        "-c",
        "echo from-exec; ps -o pid,args",
    ]);
    assert!(out.contains("from-exec\n"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim().starts_with("1 ") && l.contains("sleep 1000")),
        "{out}"
    );

    ctr.ok(&["task", "kill", "-s", "SIGKILL", "bg"]);
    wait::until(Duration::from_secs(10), "the task to stop", || {
        (status(&ctr) == "STOPPED").then_some(())
    });
    ctr.ok(&["task", "rm", "bg"]);
    ctr.ok(&["container", "rm", "bg"]);
    assert!(ctr.ok(&["task", "ls", "-q"]).trim().is_empty());
}

#[test]
fn ctr_run_t_and_exec_t_give_the_process_a_terminal() {
    let (_containerd, ctr, image) = Containerd::with_busybox();
    let runc = runc_binary();
    let out = ctr.in_terminal(&format!(
        "run --runc-binary {runc} -t --rm {image} tty1 sh -c 'tty; [ -t 0 ] && echo stdin-is-a-tty; [ -c /dev/console ] && echo console-ok'"
    ));
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("stdin-is-a-tty"), "{out}");
    assert!(out.contains("console-ok"), "/dev/console is the terminal: {out}");

    ctr.ok(&["run", "--runc-binary", &runc, "-d", &image, "tty2", "sleep", "1000"]);
    let out = ctr.in_terminal("task exec --exec-id e1 -t tty2 sh -c 'tty; echo exec-done'");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("exec-done"), "{out}");
    ctr.ok(&["task", "kill", "-s", "SIGKILL", "tty2"]);
}
