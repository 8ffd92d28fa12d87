//! Registries that misbehave, against berthd's Transfer pull: corrupted
//! bytes, a body that stalls, a manifest over the size cap. Each fails with
//! a clear error naming the digest or reference, records no image, and
//! commits no blob from the bad bytes.

use std::time::Instant;

use berth_tests::clients;
use berth_tests::daemon::Daemon;
use berth_tests::fake_registry::{FakeRegistry, Fault};
use berth_tests::images;

/// Runs the Python pull client; it must fail; its report.
fn failed_pull(daemon: &Daemon, reference: &str) -> serde_json::Value {
    let target = format!("unix://{}", daemon.socket.display());
    let out = clients::python_script("transfer_pull.py", &["--target", &target, "--ref", reference]);
    assert!(!out.status.success(), "the pull of {reference} succeeded");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

fn nothing_recorded(daemon: &Daemon, bad_digest: &str) {
    let ctr = daemon.ctr();
    assert!(
        ctr.ok(&["images", "ls", "-q"]).trim().is_empty(),
        "an image was recorded"
    );
    let content = ctr.ok(&["content", "ls", "-q"]);
    assert!(!content.contains(bad_digest), "{bad_digest} was committed: {content}");
    let active = ctr.ok(&["content", "active"]);
    assert!(active.lines().count() <= 1, "ingests left: {active}");
    let snapshots = ctr.ok(&["snapshot", "ls"]);
    assert!(
        !snapshots.lines().skip(1).any(|l| l.contains("Committed")),
        "a snapshot was committed: {snapshots}"
    );
}

/// Where in a pull's progress the first `event` for `name` came.
fn position(report: &serde_json::Value, event: &str, name: &str) -> usize {
    let progress = report["progress"].as_array().expect("progress");
    progress
        .iter()
        .position(|p| p["event"] == event && p["name"] == name)
        .unwrap_or_else(|| panic!("no {event:?} for {name} in {report}"))
}

#[test]
fn a_layer_is_unpacked_while_it_still_downloads() {
    let image = images::noise("streamed", 4 << 20);
    let layer = image.layer_digests[0].clone();
    let registry = FakeRegistry::serve(&image.oci_tar, "paused/noise", "1", Fault::Pause(layer.clone()));
    let daemon = Daemon::start();
    let target = format!("unix://{}", daemon.socket.display());
    let reference = format!("{}/paused/noise:1", registry.address);
    let out = clients::python_script("transfer_pull.py", &["--target", &target, "--ref", &reference]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = format!("layer-{layer}");
    // The apply began during the download's pause, before the commit.
    assert!(
        position(&report, "extracting", &name) < position(&report, "complete", &name),
        "{report}"
    );
    assert!(position(&report, "complete", &name) < position(&report, "extracted", &name));
    assert!(!daemon.log().contains("streamed apply failed"), "{}", daemon.log());
    let snapshots = daemon.ctr().ok(&["snapshot", "ls"]);
    assert!(
        snapshots
            .lines()
            .any(|l| l.starts_with(&image.chain_id) && l.contains("Committed")),
        "{snapshots}"
    );
    assert_eq!(registry.count(&format!("/blobs/{layer}")), 1);
}

#[test]
fn corrupted_bytes_unpacked_as_they_arrive_fail_the_pull_and_keep_no_snapshot() {
    let image = images::noise("streamed-bad", 4 << 20);
    let layer = image.layer_digests[0].clone();
    let registry = FakeRegistry::serve(&image.oci_tar, "paused/bad", "1", Fault::PauseCorrupt(layer.clone()));
    let daemon = Daemon::start();
    let report = failed_pull(&daemon, &format!("{}/paused/bad:1", registry.address));
    assert_eq!(report["code"], "FAILED_PRECONDITION", "{report}");
    assert!(report["details"].as_str().unwrap().contains(&layer), "{report}");
    let name = format!("layer-{layer}");
    position(&report, "extracting", &name);
    nothing_recorded(&daemon, &layer);
}

#[test]
fn a_corrupted_blob_fails_the_pull_naming_its_digest_and_is_not_kept() {
    let busybox = images::busybox();
    let layer = busybox.layer_digests[0].clone();
    let registry = FakeRegistry::serve(&busybox.oci_tar, "bad/busybox", "1", Fault::Corrupt(layer.clone()));
    let daemon = Daemon::start();
    let report = failed_pull(&daemon, &format!("{}/bad/busybox:1", registry.address));
    assert_eq!(report["code"], "FAILED_PRECONDITION", "{report}");
    assert!(report["details"].as_str().unwrap().contains(&layer), "{report}");
    nothing_recorded(&daemon, &layer);
}

#[test]
fn a_stalled_body_fails_after_the_stall_timeout() {
    let busybox = images::busybox();
    let layer = busybox.layer_digests[0].clone();
    let registry = FakeRegistry::serve(&busybox.oci_tar, "slow/busybox", "1", Fault::Stall(layer.clone()));
    let daemon = Daemon::start_with_config("[registry]\nstall_timeout = 1\n");
    let started = Instant::now();
    let report = failed_pull(&daemon, &format!("{}/slow/busybox:1", registry.address));
    assert_eq!(report["code"], "UNAVAILABLE", "{report}");
    let details = report["details"].as_str().unwrap();
    assert!(details.contains("stalled") && details.contains(&layer), "{report}");
    // Four attempts of one second each and the backoff between, not the
    // registry's minute.
    assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());
    nothing_recorded(&daemon, &layer);
}

#[test]
fn a_manifest_over_the_size_cap_is_refused() {
    let busybox = images::busybox();
    let registry = FakeRegistry::serve(&busybox.oci_tar, "huge/busybox", "1", Fault::HugeManifest(5 << 20));
    let daemon = Daemon::start();
    let report = failed_pull(&daemon, &format!("{}/huge/busybox:1", registry.address));
    assert_eq!(report["code"], "INVALID_ARGUMENT", "{report}");
    let details = report["details"].as_str().unwrap();
    assert!(
        details.contains("huge/busybox") && details.contains("larger than"),
        "{report}"
    );
    nothing_recorded(&daemon, &busybox.manifest_digest);
    // Nothing past the manifest was asked for.
    assert_eq!(registry.count("/blobs/"), 0);
}

fn pull_in_background(daemon: &Daemon, reference: &str) -> std::thread::JoinHandle<std::process::Output> {
    let target = format!("unix://{}", daemon.socket.display());
    let reference = reference.to_string();
    std::thread::spawn(move || clients::python_script("transfer_pull.py", &["--target", &target, "--ref", &reference]))
}

#[test]
fn two_identical_pulls_at_once_download_each_blob_once() {
    let layered = images::layered();
    let registry = FakeRegistry::serve(&layered.oci_tar, "twice/layered", "1", Fault::None);
    let daemon = Daemon::start();
    let reference = format!("{}/twice/layered:1", registry.address);
    let first = pull_in_background(&daemon, &reference);
    let second = pull_in_background(&daemon, &reference);
    for pull in [first, second] {
        let out = pull.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    for layer in &layered.layer_digests {
        assert_eq!(
            registry.count(&format!("/blobs/{layer}")),
            1,
            "{layer} was downloaded more than once"
        );
    }
    assert!(daemon.ctr().ok(&["images", "ls"]).contains(&reference));
}

#[test]
fn a_pull_cut_off_by_a_daemon_crash_downloads_only_what_was_not_committed() {
    let layered = images::layered();
    assert!(layered.layer_digests.len() > 1);
    let registry = FakeRegistry::serve(&layered.oci_tar, "cut/layered", "1", Fault::None);
    // One download at a time: when the first blob is committed, the others
    // have not started.
    let mut daemon = Daemon::start_with_config("[registry]\nmax_concurrent_downloads = 1\n");
    let reference = format!("{}/cut/layered:1", registry.address);
    daemon.env = vec![("BERTH_FAILPOINTS".into(), "transfer.blob-committed=exit".into())];
    daemon.restart();
    let out = pull_in_background(&daemon, &reference).join().unwrap();
    assert!(!out.status.success(), "the pull outlived the daemon");
    daemon.wait_exit(std::time::Duration::from_secs(10));
    let fetched_before: usize = layered
        .layer_digests
        .iter()
        .map(|l| registry.count(&format!("/blobs/{l}")))
        .sum();
    assert!(fetched_before >= 1);
    daemon.env.clear();
    daemon.relaunch();
    let out = pull_in_background(&daemon, &reference).join().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        daemon.log()
    );
    for layer in &layered.layer_digests {
        assert_eq!(
            registry.count(&format!("/blobs/{layer}")),
            1,
            "{layer} was downloaded again after the crash"
        );
    }
    let out = daemon
        .ctr()
        .ok(&["run", "--rm", &reference, "after-crash", "ls", "/data"]);
    assert!(out.contains("links"), "{out}");
}

#[test]
fn a_pull_its_client_gives_up_on_releases_its_lease() {
    let busybox = images::busybox();
    let layer = busybox.layer_digests[0].clone();
    let registry = FakeRegistry::serve(&busybox.oci_tar, "gone/busybox", "1", Fault::Stall(layer));
    let daemon = Daemon::start();
    let target = format!("unix://{}", daemon.socket.display());
    let reference = format!("{}/gone/busybox:1", registry.address);
    let out = clients::python_script(
        "transfer_pull.py",
        &["--target", &target, "--ref", &reference, "--timeout", "2"],
    );
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["code"], "DEADLINE_EXCEEDED", "{report}");
    // The stalled download stops and the pull's lease goes with the call.
    let ctr = daemon.ctr();
    berth_tests::wait::until(std::time::Duration::from_secs(10), "the pull's lease to go", || {
        ctr.ok(&["leases", "ls", "-q"]).trim().is_empty().then_some(())
    });
    assert!(ctr.ok(&["images", "ls", "-q"]).trim().is_empty());
}
