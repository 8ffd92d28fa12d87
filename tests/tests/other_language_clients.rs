//! berthd from gRPC stacks other than grpc-go, over the Unix socket: a
//! Python `grpcio` client (gRPC's C core, which sends the percent-encoded
//! socket path as `:authority`) with each authority clients send, and a
//! Node `@grpc/grpc-js` client. Both are installed by the project's
//! install step (scripts/install-deps.sh) under tests/clients.

use std::process::Command;

use berth_tests::clients::{self, python_report as python};
use berth_tests::daemon::Daemon;
use serde_json::Value;

fn names(value: &Value) -> Vec<&str> {
    value.as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect()
}

/// The report of a full run holds what the daemon has.
fn check_report(report: &Value, image: &str) {
    assert_eq!(report["version"]["version"], env!("CARGO_PKG_VERSION"), "{report}");
    let namespaces = &report["namespaces"];
    let created = namespaces["created"].as_str().unwrap();
    assert!(names(&namespaces["listed"]).contains(&created), "{report}");
    assert!(!names(&namespaces["after_delete"]).contains(&created), "{report}");
    assert_eq!(report["events"]["topic"], "/namespaces/create", "{report}");
    assert_eq!(
        report["events"]["type_url"], "containerd.events.NamespaceCreate",
        "{report}"
    );
    assert!(
        report["events"]["name"].as_str().unwrap().starts_with("py-events-"),
        "{report}"
    );
    let images: Vec<&str> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(images.contains(&image), "{report}");
    let content = report["content"].as_array().unwrap();
    assert!(content.len() >= 3, "manifest, config and a layer at least: {report}");
    for blob in content {
        assert_eq!(blob["read"], blob["size"], "{blob}");
        assert_eq!(blob["sha256"], blob["digest"], "{blob}");
    }
}

#[test]
fn python_grpcio_runs_the_api_with_every_authority_clients_send() {
    let (daemon, _ctr, image) = Daemon::with_busybox();
    let target = format!("unix://{}", daemon.socket.display());
    let socket = daemon.socket.display().to_string();
    // Default options (the C core's percent-encoded path), then a raw
    // path, an empty string and a valid host.
    let authorities: [Option<&str>; 4] = [None, Some(&socket), Some(""), Some("localhost")];
    for authority in authorities {
        let mut args = vec!["--target", &target];
        let option;
        if let Some(authority) = authority {
            option = format!("--authority={authority}");
            args.push(&option);
        }
        let report = python(&args);
        check_report(&report, &image);
    }
    // ctr still works on the same socket.
    daemon.ctr().ok(&["version"]);
}

#[test]
fn node_grpc_js_runs_version_and_namespaces() {
    let daemon = Daemon::start();
    let script = clients::dir().join("node/api_check.js");
    assert!(
        clients::dir().join("node/node_modules/@grpc/grpc-js").is_dir(),
        "node_modules is missing: run scripts/install-deps.sh"
    );
    let out = Command::new(berth_tests::binaries::host("node"))
        .arg(script)
        .arg(format!("unix://{}", daemon.socket.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["version"]["version"], env!("CARGO_PKG_VERSION"), "{report}");
    let created = report["namespaces"]["created"].as_str().unwrap();
    assert!(names(&report["namespaces"]["listed"]).contains(&created), "{report}");
    assert!(
        !names(&report["namespaces"]["after_delete"]).contains(&created),
        "{report}"
    );
}
