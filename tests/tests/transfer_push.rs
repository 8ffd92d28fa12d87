//! Push through berthd's Transfer service to a private Debian
//! docker-registry, driven by the Python grpcio client: an imported image
//! uploads its blobs; one pulled from another repository of the registry
//! is mounted from there; blobs the repository has are skipped; a fresh
//! berthd pulls the pushed image back by digest, the same manifest.

use berth_tests::clients;
use berth_tests::daemon::Daemon;
use berth_tests::images;
use berth_tests::registry::Registry;

fn transfer(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let target = format!("unix://{}", daemon.socket.display());
    let mut all = vec!["--target", target.as_str()];
    all.extend_from_slice(args);
    let out = clients::python_script("transfer_pull.py", &all);
    assert!(
        out.status.success(),
        "transfer {args:?}: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    serde_json::from_slice(&out.stdout).expect("a report")
}

/// Blob upload requests the registry logged for `repository`.
fn uploads(registry: &Registry, repository: &str) -> usize {
    registry
        .log()
        .lines()
        .filter(|l| l.contains("http.request.method=PUT") && l.contains(&format!("/v2/{repository}/blobs/uploads/")))
        .count()
}

#[test]
fn push_uploads_mounts_or_skips_and_the_image_comes_back_by_digest() {
    let registry = Registry::start();
    let busybox = images::busybox();
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    ctr.import("overlayfs", &busybox.oci_tar);

    // An imported image: every blob is uploaded.
    let first = format!("{}/first/busybox:1", registry.address);
    let report = transfer(&daemon, &["--push", &busybox.name, "--ref", &first]);
    let events: Vec<&str> = report["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["event"].as_str().unwrap())
        .collect();
    assert!(
        events.last().is_some_and(|e| e.starts_with("Completed push")),
        "{events:?}"
    );
    assert_eq!(
        uploads(&registry, "first/busybox"),
        2,
        "config and layer:\n{}",
        registry.log()
    );

    // Pushed again under another tag: the repository has every blob.
    let again = format!("{}/first/busybox:2", registry.address);
    let report = transfer(&daemon, &["--push", &busybox.name, "--ref", &again]);
    let skipped = report["progress"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["event"] == "exists")
        .count();
    assert_eq!(skipped, 2, "{report}");
    assert_eq!(uploads(&registry, "first/busybox"), 2, "a blob was uploaded again");

    // Pulled from one repository, pushed to another: mounted, not sent.
    let pulled = Daemon::start();
    transfer(&pulled, &["--ref", &first]);
    let moved = format!("{}/moved/busybox:1", registry.address);
    let report = transfer(&pulled, &["--push", &first, "--ref", &moved]);
    let mounted = report["progress"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["event"] == "mounted")
        .count();
    assert_eq!(mounted, 2, "{report}");
    assert_eq!(uploads(&registry, "moved/busybox"), 0, "{}", registry.log());

    // A fresh daemon pulls it back by digest: the same manifest.
    let fresh = Daemon::start();
    let by_digest = format!("{}/moved/busybox@{}", registry.address, busybox.manifest_digest);
    transfer(&fresh, &["--ref", &by_digest]);
    let listed = fresh.ctr().ok(&["images", "ls"]);
    assert!(listed.contains(&busybox.manifest_digest), "{listed}");
    let out = fresh
        .ctr()
        .ok(&["run", "--rm", &by_digest, "pushed-back", "echo", "round-trip"]);
    assert!(out.contains("round-trip"), "{out}");

    // Pulled again from the first repository: its blobs name both.
    transfer(&fresh, &["--ref", &first]);
    let content = fresh.ctr().ok(&["content", "ls"]);
    let layer = content
        .lines()
        .find(|l| l.starts_with(&busybox.layer_digest))
        .unwrap_or_else(|| panic!("{content}"));
    let source = format!(
        "containerd.io/distribution.source.{}=first/busybox,moved/busybox",
        registry.address
    );
    assert!(layer.contains(&source), "{layer}");

    // Pushing an image that is not there names it.
    let target = format!("unix://{}", daemon.socket.display());
    let out = clients::python_script(
        "transfer_pull.py",
        &["--target", &target, "--push", "no/such:image", "--ref", &first],
    );
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["code"], "NOT_FOUND", "{report}");
    assert!(
        report["details"].as_str().unwrap().contains("no/such:image"),
        "{report}"
    );
}
