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
