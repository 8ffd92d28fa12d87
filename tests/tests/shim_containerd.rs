//! berth's shim under a private stock containerd: `ctr run --runtime
//! io.containerd.berth.v2` with containerd's own task service driving
//! `containerd-shim-berth-v2` over ttrpc.

use std::time::Duration;

use berth_tests::containerd::Containerd;
use berth_tests::wait;

const RUNTIME: &str = "io.containerd.berth.v2";

fn berth_shims() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("cmdline")).is_ok_and(|c| {
                c.split('\0')
                    .next()
                    .is_some_and(|arg0| arg0.ends_with("containerd-shim-berth-v2"))
            })
        })
        .count()
}

#[test]
fn run_rm_prints_the_output_and_returns_the_exit_code() {
    let (_containerd, ctr, image) = Containerd::with_busybox();
    let shims_before = berth_shims();
    assert_eq!(
        ctr.ok(&["run", "--runtime", RUNTIME, "--rm", &image, "s1", "echo", "hi"]),
        "hi\n"
    );
    let out = ctr.run(&["run", "--runtime", RUNTIME, "--rm", &image, "s2", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    wait::until(Duration::from_secs(10), "the shims to exit", || {
        (berth_shims() <= shims_before).then_some(())
    });
}

#[test]
fn a_detached_task_execs_pauses_reports_metrics_and_is_killed() {
    let (_containerd, ctr, image) = Containerd::with_busybox();
    ctr.ok(&["run", "--runtime", RUNTIME, "-d", &image, "d1", "sleep", "1000"]);
    assert_eq!(ctr.task_status("d1"), "RUNNING");
    let out = ctr.ok(&["task", "exec", "--exec-id", "e1", "d1", "ps", "-o", "pid,args"]);
    assert!(
        out.lines()
            .any(|l| l.trim().starts_with("1 ") && l.contains("sleep 1000")),
        "{out}"
    );
    let dup = ctr.run(&["task", "exec", "--exec-id", "e1", "d1", "true"]);
    assert!(
        dup.status.success(),
        "an exec id is free again once its process is deleted: {}",
        dup.stderr
    );
    let ps = ctr.ok(&["task", "ps", "d1"]);
    assert!(ps.lines().count() >= 2, "{ps}");
    ctr.ok(&["task", "pause", "d1"]);
    assert_eq!(ctr.task_status("d1"), "PAUSED");
    ctr.ok(&["task", "resume", "d1"]);
    assert_eq!(ctr.task_status("d1"), "RUNNING");
    let metrics = ctr.ok(&["task", "metrics", "d1"]);
    for row in ["memory.usage_in_bytes", "cpuacct.usage", "pids.current"] {
        assert!(metrics.contains(row), "{row} in {metrics}");
    }
    ctr.ok(&["task", "kill", "-s", "SIGKILL", "d1"]);
    wait::until(Duration::from_secs(10), "the task to stop", || {
        (ctr.task_status("d1") == "STOPPED").then_some(())
    });
    let again = ctr.run(&["task", "kill", "-s", "SIGKILL", "d1"]);
    assert!(
        !again.status.success() && again.stderr.contains("not found"),
        "{}",
        again.stderr
    );
    ctr.ok(&["task", "rm", "d1"]);
    ctr.ok(&["container", "rm", "d1"]);
}

#[test]
fn run_t_gives_the_process_a_terminal() {
    let (_containerd, ctr, image) = Containerd::with_busybox();
    let text = ctr.in_terminal(&format!(
        "run --runtime {RUNTIME} -t --rm {image} t1 sh -c 'tty; [ -t 0 ] && echo stdin-is-a-tty'"
    ));
    assert!(text.contains("/dev/pts/0") && text.contains("stdin-is-a-tty"), "{text}");
}
