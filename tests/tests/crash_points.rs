//! berthd killed at each failpoint of `ctr run` and `ctr images import`:
//! after the restart the state is consistent (no shim, mount or ingest
//! leaked; a container either exists and works or does not exist) and the
//! operation can be retried. Run as root.

use std::time::Duration;

use berth_tests::ctr::Ctr;
use berth_tests::daemon::Daemon;
use berth_tests::{images, wait};

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(str::to_string)
        .collect()
}

/// Starts the daemon again with `failpoint` set to exit, runs `args`
/// (which fails as the daemon dies), and starts it again without.
fn crash_at(daemon: &mut Daemon, ctr: &Ctr, failpoint: &str, args: &[&str]) {
    daemon.env = vec![("BERTH_FAILPOINTS".into(), format!("{failpoint}=exit"))];
    daemon.restart();
    let out = ctr.run(args);
    assert!(!out.status.success(), "{failpoint}: ctr {args:?} succeeded");
    wait::until(Duration::from_secs(10), "the daemon to die at the failpoint", || {
        (!daemon.is_running()).then_some(())
    });
    daemon.env.clear();
    daemon.relaunch();
}

#[test]
fn killed_at_each_step_of_ctr_run_the_state_stays_consistent_and_run_works_again() {
    let mut daemon = Daemon::start();
    let ctr = daemon.ctr();
    let image = images::busybox();
    ctr.import("overlayfs", &image.oci_tar);
    for failpoint in [
        "snapshots.after-prepare",
        "containers.after-create",
        "runtime.after-shim-start",
        "runtime.after-task-create",
        "tasks.before-start",
    ] {
        crash_at(
            &mut daemon,
            &ctr,
            failpoint,
            &["run", "-d", &image.name, "c1", "sleep", "1000"],
        );
        let tasks = ctr.ok(&["task", "ls", "-q"]);
        let has_task = tasks.lines().any(|l| l == "c1");
        assert_eq!(daemon.shims(), usize::from(has_task), "{failpoint}: shims");
        let mounts = mounts_under(daemon.dir());
        assert_eq!(mounts.len(), usize::from(has_task), "{failpoint}: mounts {mounts:?}");
        let has_container = ctr.ok(&["containers", "ls", "-q"]).lines().any(|l| l == "c1");
        assert!(has_container || !has_task, "{failpoint}: a task without a container");
        if has_task {
            // It exists, so it works.
            let status = ctr.task_status("c1");
            if status == "CREATED" {
                // Created, never started: ctr can only start a new task.
                ctr.ok(&["task", "rm", "--force", "c1"]);
                ctr.ok(&["task", "start", "-d", "c1"]);
            }
            ctr.wait_task_status("c1", "RUNNING");
            ctr.ok(&["task", "kill", "-s", "SIGKILL", "c1"]);
            ctr.wait_task_status("c1", "STOPPED");
            ctr.ok(&["task", "rm", "c1"]);
        }
        let _ = ctr.run(&["container", "rm", "c1"]);
        // The client's lease holds a snapshot it prepared; the retry
        // removes it, as a client would.
        let _ = ctr.run(&["snapshot", "rm", "c1"]);
        assert!(
            ctr.ok(&["content", "active"]).lines().count() <= 1,
            "{failpoint}: ingests left"
        );
        // And the operation can be retried.
        ctr.ok(&["run", "-d", &image.name, "c1", "sleep", "1000"]);
        ctr.ok(&["task", "kill", "-s", "SIGKILL", "c1"]);
        ctr.wait_task_status("c1", "STOPPED");
        ctr.ok(&["task", "rm", "c1"]);
        ctr.ok(&["container", "rm", "c1"]);
        assert!(
            mounts_under(daemon.dir()).is_empty(),
            "{failpoint}: mounts after the retry"
        );
    }
}

#[test]
fn killed_during_an_import_nothing_partial_is_visible_and_the_import_works_again() {
    let mut daemon = Daemon::start();
    let ctr = daemon.ctr();
    let image = images::busybox();
    for failpoint in ["content.during-commit", "snapshots.after-prepare", "diff.during-apply"] {
        crash_at(
            &mut daemon,
            &ctr,
            failpoint,
            &["images", "import", image.oci_tar.to_str().unwrap()],
        );
        // Every listed blob is whole.
        for line in ctr.ok(&["content", "ls", "-q"]).lines() {
            let digest = line.trim();
            let blob = daemon
                .root
                .join("content/blobs/sha256")
                .join(digest.trim_start_matches("sha256:"));
            let bytes = std::fs::read(&blob).unwrap_or_else(|e| panic!("{failpoint}: {digest}: {e}"));
            let actual = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
            assert_eq!(actual, digest, "{failpoint}: a partial blob is visible");
        }
        assert!(mounts_under(daemon.dir()).is_empty(), "{failpoint}: mounts left");
        // The import can be done again, and the image runs.
        ctr.import("overlayfs", &image.oci_tar);
        assert_eq!(ctr.ok(&["run", "--rm", &image.name, "after", "echo", "ok"]), "ok\n");
        ctr.ok(&["images", "rm", "--sync", &image.name]);
    }
}
