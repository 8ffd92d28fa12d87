//! berthd killed at each failpoint of `ctr run` and `ctr images import`:
//! after the restart the state is consistent (no shim, mount or ingest
//! leaked; a container either exists and works or does not exist) and the
//! operation can be retried. The shim's failpoints kill the shim instead
//! of the daemon. Run as root.

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

/// The snapshot keys of the default snapshotter, sorted.
fn snapshot_keys(ctr: &Ctr) -> Vec<String> {
    let mut keys: Vec<String> = ctr
        .ok(&["snapshots", "--snapshotter", "overlayfs", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    keys.sort();
    keys
}

/// After a restart: no ingest survived and no interrupted unpack left an
/// active snapshot; once the clients' leases are gone (as they expire),
/// only `keep` remains, in the metadata and on disk.
fn assert_nothing_left_beyond_leases(daemon: &Daemon, ctr: &Ctr, failpoint: &str, keep: &[String]) {
    let ingests = ctr.ok(&["content", "active"]);
    assert!(ingests.lines().count() <= 1, "{failpoint}: ingests left:\n{ingests}");
    let keys = snapshot_keys(ctr);
    assert!(
        !keys.iter().any(|k| k.starts_with("extract-")),
        "{failpoint}: an interrupted unpack left {keys:?}"
    );
    for lease in ctr.ok(&["leases", "ls", "-q"]).lines() {
        ctr.ok(&["leases", "rm", "--sync", lease]);
    }
    assert_eq!(snapshot_keys(ctr), keep, "{failpoint}: snapshots left");
    let on_disk = std::fs::read_dir(daemon.root.join("snapshots/overlayfs/snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(on_disk, keep.len(), "{failpoint}: snapshot directories left");
    let ingest_dirs = std::fs::read_dir(daemon.root.join("content/ingest"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(ingest_dirs, 0, "{failpoint}: ingest directories left");
}

/// Like [`crash_at`] for a failpoint in the shim: the shim dies, the
/// daemon stays; then the daemon restarts without the failpoint.
fn shim_crash_at(daemon: &mut Daemon, ctr: &Ctr, failpoint: &str, args: &[&str]) {
    daemon.env = vec![("BERTH_FAILPOINTS".into(), format!("{failpoint}=exit"))];
    daemon.restart();
    let out = ctr.run(args);
    assert!(!out.status.success(), "{failpoint}: ctr {args:?} succeeded");
    assert!(daemon.is_running(), "{failpoint}: the daemon died with the shim");
    daemon.env.clear();
    daemon.restart();
}

/// Processes whose root directory is under `dir` (a container's).
fn processes_rooted_under(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter(|e| std::fs::read_link(e.path().join("root")).is_ok_and(|root| root.starts_with(dir)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn killed_at_each_step_of_ctr_run_the_state_stays_consistent_and_run_works_again() {
    let mut daemon = Daemon::start();
    let ctr = daemon.ctr();
    let image = images::busybox();
    ctr.import("overlayfs", &image.oci_tar);
    let layers = snapshot_keys(&ctr);
    for failpoint in [
        "snapshots.after-prepare",
        "containers.after-create",
        "runtime.after-shim-start",
        "runtime.after-task-create",
        "tasks.before-start",
        "shim.after-create",
        "shim.before-start",
    ] {
        let args = ["run", "-d", &image.name, "c1", "sleep", "1000"];
        if failpoint.starts_with("shim.") {
            shim_crash_at(&mut daemon, &ctr, failpoint, &args);
        } else {
            crash_at(&mut daemon, &ctr, failpoint, &args);
        }
        let tasks = ctr.ok(&["task", "ls", "-q"]);
        let has_task = tasks.lines().any(|l| l == "c1");
        assert_eq!(daemon.shims(), usize::from(has_task), "{failpoint}: shims");
        let mounts = mounts_under(daemon.dir());
        assert_eq!(mounts.len(), usize::from(has_task), "{failpoint}: mounts {mounts:?}");
        if !has_task {
            let left = processes_rooted_under(daemon.dir());
            assert!(left.is_empty(), "{failpoint}: container processes left: {left:?}");
        }
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
        assert_nothing_left_beyond_leases(&daemon, &ctr, failpoint, &layers);
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
        // Ingests and half-applied layers were dropped at the restart;
        // what else stays is held by the client's lease.
        assert_nothing_left_beyond_leases(&daemon, &ctr, failpoint, &[]);
        // The import can be done again, and the image runs.
        ctr.import("overlayfs", &image.oci_tar);
        assert_eq!(ctr.ok(&["run", "--rm", &image.name, "after", "echo", "ok"]), "ok\n");
        ctr.ok(&["images", "rm", "--sync", &image.name]);
    }
}

#[test]
fn killed_between_a_backend_commit_and_its_record_the_snapshot_can_be_made_again() {
    let mut daemon = Daemon::start();
    let ctr = daemon.ctr();
    fn with<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["snapshots", "--snapshotter", "overlayfs"][..], args].concat()
    }
    ctr.ok(&with(&["prepare", "k1"]));
    crash_at(
        &mut daemon,
        &ctr,
        "snapshots.after-backend-commit",
        &with(&["commit", "layer-1", "k1"]),
    );
    // The Commit failed: neither the active record nor the committed
    // layer remains, on disk either.
    assert_nothing_left_beyond_leases(&daemon, &ctr, "snapshots.after-backend-commit", &[]);
    ctr.ok(&with(&["prepare", "k1"]));
    ctr.ok(&with(&["commit", "layer-1", "k1"]));
    assert_eq!(snapshot_keys(&ctr), ["layer-1"]);
    ctr.ok(&with(&["rm", "layer-1"]));
}
