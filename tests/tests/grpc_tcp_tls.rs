//! The API over TCP with mutual TLS (`[grpc] tcp_address`, `tcp_tls_ca`,
//! `tcp_tls_cert`, `tcp_tls_key`), from Python's grpcio: the right client
//! certificate gets in; none, one from another CA, or plain text do not;
//! SIGHUP reloads the server's certificate; bad files stop the start with
//! a line naming them.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use berth_tests::certificates::{self, Authority, Issued};
use berth_tests::clients;
use berth_tests::daemon::Daemon;
use nix::sys::signal::Signal;

/// A loopback port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(address: &str, ca: &Path, server: &Issued) -> String {
    format!(
        "version = 2\n[grpc]\ntcp_address = \"{address}\"\ntcp_tls_ca = \"{}\"\ntcp_tls_cert = \"{}\"\ntcp_tls_key = \"{}\"\n",
        ca.display(),
        server.cert.display(),
        server.key.display()
    )
}

/// The Python client's Version and Namespaces checks over TLS.
fn python_over_tls(address: &str, ca: &Path, client: Option<&Issued>) -> std::process::Output {
    let ca = ca.display().to_string();
    let mut args = vec![
        "--target",
        address,
        "--ca",
        &ca,
        "--only",
        "version,namespaces",
        "--timeout",
        "3",
    ];
    let (cert, key);
    if let Some(client) = client {
        cert = client.cert.display().to_string();
        key = client.key.display().to_string();
        args.extend(["--cert", &cert, "--key", &key]);
    }
    clients::python(&args)
}

/// The Python client holding an event stream over TLS, once it printed
/// "ready" (it goes on at a line on its stdin).
fn held_event_stream(address: &str, ca: &Path, client: &Issued) -> std::process::Child {
    let python = clients::dir().join("python/.venv/bin/python");
    let mut child = std::process::Command::new(python)
        .arg(clients::dir().join("python/api_check.py"))
        .args(["--target", address, "--only", "events-held", "--ca"])
        .arg(ca)
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    let stdout = child.stdout.as_mut().unwrap();
    let mut byte = [0u8; 1];
    while !ready.ends_with('\n') {
        assert_eq!(
            std::io::Read::read(stdout, &mut byte).unwrap(),
            1,
            "the client ended before ready"
        );
        ready.push(byte[0] as char);
    }
    assert_eq!(ready, "ready\n");
    child
}

#[test]
fn mutual_tls_lets_in_only_clients_of_the_ca_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "ca");
    let other = Authority::new(dir.path(), "other");
    let server = ca.server("berthd");
    let client = ca.client("client");
    let stranger = other.client("stranger");
    let address = format!("127.0.0.1:{}", free_port());
    let daemon = Daemon::start_with_config(&config(&address, &ca.cert(), &server));

    // The right certificate: the same services as on the Unix socket.
    let out = python_over_tls(&address, &ca.cert(), Some(&client));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["version"]["version"], env!("CARGO_PKG_VERSION"));
    let created = report["namespaces"]["created"].as_str().unwrap();
    assert!(
        report["namespaces"]["listed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == created),
        "{report}"
    );

    // No certificate, another CA's, plain text: refused.
    assert!(!python_over_tls(&address, &ca.cert(), None).status.success());
    assert!(!python_over_tls(&address, &ca.cert(), Some(&stranger)).status.success());
    let plain = clients::python(&["--target", &address, "--only", "version", "--timeout", "3"]);
    assert!(!plain.status.success(), "plain text is refused");
    assert!(daemon.log().contains("TLS handshake refused"), "{}", daemon.log());

    // A call in flight across the reload: an event stream opened before.
    let mut held = held_event_stream(&address, &ca.cert(), &client);

    // A new server certificate in place of the old, then SIGHUP: new
    // connections see it.
    assert_eq!(
        certificates::served_fingerprint(&address, &ca.cert(), &client),
        certificates::fingerprint(&server.cert)
    );
    let renewed = ca.server("berthd-renewed");
    std::fs::copy(&renewed.cert, &server.cert).unwrap();
    std::fs::copy(&renewed.key, &server.key).unwrap();
    daemon.signal(Signal::SIGHUP);
    berth_tests::wait::until(Duration::from_secs(10), "the reloaded certificate", || {
        (certificates::served_fingerprint(&address, &ca.cert(), &client) == certificates::fingerprint(&renewed.cert))
            .then_some(())
    });
    let out = python_over_tls(&address, &ca.cert(), Some(&client));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(daemon.log().contains("TLS certificates reloaded"), "{}", daemon.log());

    // The stream opened before the reload still delivers.
    held.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = held.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["events_held"]["after"].as_str().unwrap().ends_with("-after"),
        "{report}"
    );

    // A broken file on SIGHUP keeps the certificate in use.
    std::fs::write(&server.key, "not a key").unwrap();
    daemon.signal(Signal::SIGHUP);
    berth_tests::wait::until(Duration::from_secs(10), "the failed reload's warning", || {
        daemon.log().contains("certificates not reloaded").then_some(())
    });
    let out = python_over_tls(&address, &ca.cert(), Some(&client));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ctr on the Unix socket throughout.
    daemon.ctr().ok(&["version"]);
}

/// Starts berthd with `config`; it must exit non-zero; its log.
fn refused_start(config: &str) -> String {
    let daemon = Daemon::unstarted(config, &[]);
    let log = daemon.dir().join("refused.log");
    let mut child = Daemon::spawn_raw(&daemon.args(), &log);
    let status = child.wait().unwrap();
    assert!(!status.success(), "berthd started with {config}");
    assert!(!daemon.socket.exists(), "no socket is left behind");
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn bad_tls_files_and_a_taken_address_stop_the_start_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "ca");
    let server = ca.server("berthd");
    let unrelated = ca.server("unrelated");
    let address = format!("127.0.0.1:{}", free_port());

    // A key that is not the certificate's.
    let mismatched = Issued {
        cert: server.cert.clone(),
        key: unrelated.key.clone(),
    };
    let log = refused_start(&config(&address, &ca.cert(), &mismatched));
    assert!(log.contains(&unrelated.key.display().to_string()), "{log}");
    assert!(log.contains("does not go with"), "{log}");

    // A CA file that cannot be read.
    let missing = dir.path().join("no-such-ca.pem");
    let log = refused_start(&config(&address, &missing, &server));
    assert!(log.contains(&missing.display().to_string()), "{log}");

    // The address is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_address = taken.local_addr().unwrap().to_string();
    let log = refused_start(&config(&taken_address, &ca.cert(), &server));
    assert!(log.contains(&taken_address), "{log}");

    // Plain TCP without saying so.
    let log = refused_start(&format!("version = 2\n[grpc]\ntcp_address = \"{address}\"\n"));
    assert!(log.contains("tcp_insecure"), "{log}");
}
