//! Pulls through berthd's Transfer service (the registry client in the
//! daemon) from a private Debian docker-registry, driven by a Python
//! grpcio client: the image is recorded, unpacked and runs under `ctr`;
//! progress streams back; bad references fail cleanly, recording nothing.

use berth_tests::clients;
use berth_tests::daemon::Daemon;
use berth_tests::images;
use berth_tests::registry::{Registry, RegistryOptions};
use berth_tests::token_server::TokenServer;

/// Runs the Python pull client; its exit status and JSON report.
fn python_pull(daemon: &Daemon, args: &[&str]) -> (bool, serde_json::Value) {
    let target = format!("unix://{}", daemon.socket.display());
    let mut all = vec!["--target", target.as_str()];
    all.extend_from_slice(args);
    let out = clients::python_script("transfer_pull.py", &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "transfer_pull.py printed no report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

#[test]
fn a_python_client_pulls_through_transfer_and_ctr_runs_the_image() {
    let registry = Registry::start();
    let busybox = images::busybox();
    registry.push_oci_archive(&busybox.oci_tar, "tools/busybox:1");
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    let reference = format!("{}/tools/busybox:1", registry.address);
    let subscription = ctr.spawn(&["events"]);
    // The subscription is live once it sees a marker event.
    ctr.ok(&["namespaces", "create", "marker"]);
    berth_tests::wait::until(std::time::Duration::from_secs(10), "ctr events to subscribe", || {
        ctr.run(&["namespaces", "label", "marker", "seen=1"]);
        subscription.stdout().contains("/namespaces/update").then_some(())
    });

    let (ok, report) = python_pull(&daemon, &["--ref", &reference]);
    assert!(ok, "pull failed: {report}\n{}", daemon.log());
    // The image record's event, as containerd publishes it.
    subscription.wait_for_line(&["/images/create", &reference], std::time::Duration::from_secs(10));
    let progress = report["progress"].as_array().unwrap();
    let events: Vec<&str> = progress.iter().map(|p| p["event"].as_str().unwrap()).collect();
    assert!(
        events.first().is_some_and(|e| e.starts_with("Resolving from")),
        "{events:?}"
    );
    assert!(
        events.last().is_some_and(|e| e.starts_with("Completed pull from")),
        "{events:?}"
    );
    assert!(events.contains(&"saved"), "{events:?}");
    // Every blob reports its progress.
    for digest in busybox
        .layer_digests
        .iter()
        .chain([&busybox.manifest_digest, &busybox.config_digest])
    {
        assert!(
            progress.iter().any(|p| p["digest"] == digest.as_str()),
            "no progress for {digest}: {events:?}"
        );
    }
    let layer_done = progress.iter().any(|p| {
        p["event"] == "complete" && p["digest"] == busybox.layer_digests[0].as_str() && p["progress"] == p["total"]
    });
    assert!(layer_done, "{progress:?}");

    let listed = ctr.ok(&["images", "ls"]);
    assert!(listed.contains(&reference), "{listed}");
    assert!(listed.contains(&busybox.manifest_digest), "{listed}");
    let snapshots = ctr.ok(&["snapshot", "--snapshotter", "overlayfs", "ls"]);
    assert!(snapshots.contains(&busybox.chain_id), "{snapshots}");
    let checked = ctr.ok(&["images", "check"]);
    assert!(
        checked.lines().nth(1).is_some_and(|l| l.trim_end().ends_with("true")),
        "{checked}"
    );
    let out = ctr.ok(&["run", "--rm", &reference, "transfer-run", "echo", "pulled-and-ran"]);
    assert!(out.contains("pulled-and-ran"), "{out}");

    // Pulling again downloads nothing: every blob is already there.
    let (ok, report) = python_pull(&daemon, &["--ref", &reference]);
    assert!(ok, "{report}");
    subscription.wait_for_line(&["/images/update", &reference], std::time::Duration::from_secs(10));
    let again = report["progress"].as_array().unwrap();
    assert!(
        again.iter().all(|p| p["event"] != "downloading"),
        "a second pull downloaded: {again:?}"
    );
}

#[test]
fn bad_references_and_transfers_fail_clearly_and_record_nothing() {
    let registry = Registry::start();
    let busybox = images::busybox();
    registry.push_oci_archive(&busybox.oci_tar, "busybox:1");
    let daemon = Daemon::start();
    let ctr = daemon.ctr();

    let missing_tag = format!("{}/busybox:nope", registry.address);
    let (ok, report) = python_pull(&daemon, &["--ref", &missing_tag]);
    assert!(!ok);
    assert_eq!(report["code"], "NOT_FOUND", "{report}");
    assert!(report["details"].as_str().unwrap().contains("busybox:nope"), "{report}");

    // Nothing listens on port 1 of loopback.
    let (ok, report) = python_pull(&daemon, &["--ref", "127.0.0.1:1/busybox:1"]);
    assert!(!ok);
    assert_eq!(report["code"], "UNAVAILABLE", "{report}");
    assert!(report["details"].as_str().unwrap().contains("127.0.0.1:1"), "{report}");

    let (ok, report) = python_pull(&daemon, &["--ref", "Not A Reference"]);
    assert!(!ok);
    assert_eq!(report["code"], "INVALID_ARGUMENT", "{report}");

    let (ok, report) = python_pull(
        &daemon,
        &[
            "--ref",
            &format!("{}/busybox:1", registry.address),
            "--snapshotter",
            "nosuch",
        ],
    );
    assert!(!ok);
    assert!(report["details"].as_str().unwrap().contains("nosuch"), "{report}");

    let images = ctr.ok(&["images", "ls", "-q"]);
    assert!(images.trim().is_empty(), "images recorded: {images}");
}

#[test]
fn https_with_a_ca_from_hosts_toml_and_basic_auth_from_the_auth_stream_or_a_docker_config() {
    let registry = Registry::start_with(RegistryOptions {
        tls: true,
        login: Some(("puller".into(), "s3cret".into())),
        ..Default::default()
    });
    let busybox = images::busybox();
    registry.push_oci_archive(&busybox.oci_tar, "private/busybox:1");
    let reference = format!("{}/private/busybox:1", registry.address);
    let certs = tempfile::tempdir().unwrap();

    // Without the CA the certificate is refused, naming the host.
    let untrusted = certs.path().join("untrusted");
    let (host, port) = registry.address.split_once(':').unwrap();
    std::fs::create_dir_all(untrusted.join(format!("{host}_{port}_"))).unwrap();
    std::fs::write(
        untrusted.join(format!("{host}_{port}_/hosts.toml")),
        format!("server = \"https://{}\"\n", registry.address),
    )
    .unwrap();
    let daemon = Daemon::start_with_config(&format!("[registry]\nconfig_path = \"{}\"\n", untrusted.display()));
    let (ok, report) = python_pull(
        &daemon,
        &["--ref", &reference, "--user", "puller", "--password", "s3cret"],
    );
    assert!(!ok);
    assert_eq!(report["code"], "UNAVAILABLE", "{report}");
    assert!(
        report["details"].as_str().unwrap().contains(&registry.address),
        "{report}"
    );
    drop(daemon);

    let trusted = certs.path().join("trusted");
    registry.hosts_dir(&trusted);
    let daemon = Daemon::start_with_config(&format!("[registry]\nconfig_path = \"{}\"\n", trusted.display()));
    let ctr = daemon.ctr();
    // Anonymous: refused.
    let (ok, report) = python_pull(&daemon, &["--ref", &reference]);
    assert!(!ok);
    assert_eq!(report["code"], "PERMISSION_DENIED", "{report}");
    // Wrong password: refused, nothing recorded.
    let (ok, report) = python_pull(
        &daemon,
        &["--ref", &reference, "--user", "puller", "--password", "wrong"],
    );
    assert!(!ok);
    assert_eq!(report["code"], "PERMISSION_DENIED", "{report}");
    assert!(ctr.ok(&["images", "ls", "-q"]).trim().is_empty());
    // The client answers the daemon's question on its auth stream.
    let (ok, report) = python_pull(
        &daemon,
        &["--ref", &reference, "--user", "puller", "--password", "s3cret"],
    );
    assert!(ok, "{report}\n{}", daemon.log());
    assert_eq!(report["auth"][0]["host"], registry.address.as_str(), "{report}");
    let out = ctr.ok(&["run", "--rm", &reference, "https-run", "echo", "over-tls"]);
    assert!(out.contains("over-tls"), "{out}");
    drop(daemon);

    // Credentials from a docker config.json named in the config.
    let docker = certs.path().join("config.json");
    std::fs::write(
        &docker,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"cHVsbGVyOnMzY3JldA=="}}}}}}"#,
            registry.address
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with_config(&format!(
        "[registry]\nconfig_path = \"{}\"\ndocker_config = \"{}\"\n",
        trusted.display(),
        docker.display()
    ));
    let (ok, report) = python_pull(&daemon, &["--ref", &reference]);
    assert!(ok, "{report}\n{}", daemon.log());
    assert!(daemon.ctr().ok(&["images", "ls"]).contains(&reference));
}

#[test]
fn bearer_tokens_from_a_token_server_are_fetched_with_the_credentials_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), "puller", "t0ken-pw");
    let mut registry = Registry::start_with(RegistryOptions {
        auth: Some(tokens.registry_auth()),
        ..Default::default()
    });
    registry.login = Some(("puller".into(), "t0ken-pw".into()));
    let busybox = images::busybox();
    registry.push_oci_archive(&busybox.oci_tar, "tokened/busybox:1");
    let reference = format!("{}/tokened/busybox:1", registry.address);
    let daemon = Daemon::start();

    let (ok, report) = python_pull(
        &daemon,
        &["--ref", &reference, "--user", "puller", "--password", "nope"],
    );
    assert!(!ok);
    assert_eq!(report["code"], "PERMISSION_DENIED", "{report}");
    assert!(report["details"].as_str().unwrap().contains("token"), "{report}");

    let before = tokens.issued.load(std::sync::atomic::Ordering::Relaxed);
    let (ok, report) = python_pull(
        &daemon,
        &["--ref", &reference, "--user", "puller", "--password", "t0ken-pw"],
    );
    assert!(ok, "{report}\n{}", daemon.log());
    // One token for the whole pull: every request after the first reuses it.
    let used = tokens.issued.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert_eq!(used, 1, "tokens fetched for one pull");
    let out = daemon
        .ctr()
        .ok(&["run", "--rm", &reference, "token-run", "echo", "with-a-token"]);
    assert!(out.contains("with-a-token"), "{out}");
}
