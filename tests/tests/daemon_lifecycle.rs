//! berthd as a process: one per root, clean shutdown, crash restarts,
//! configuration and flags.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::process::Command;
use std::time::Duration;

use berth_api::containerd::services::events::v1::SubscribeRequest;
use berth_api::containerd::services::events::v1::events_client::EventsClient;
use berth_tests::binaries;
use berth_tests::daemon::Daemon;
use futures_util::StreamExt;
use nix::sys::signal::Signal;

#[test]
fn a_second_daemon_on_the_same_root_refuses_to_start() {
    let daemon = Daemon::start();
    let log = daemon.dir().join("second.log");
    let mut args = daemon.args();
    // Same root, different state and socket.
    let state_at = args.iter().position(|a| a == "--state").unwrap() + 1;
    args[state_at] = daemon.dir().join("state2").display().to_string();
    let address_at = args.iter().position(|a| a == "--address").unwrap() + 1;
    args[address_at] = daemon.dir().join("second.sock").display().to_string();
    let status = Daemon::spawn_raw(&args, &log).wait().unwrap();
    assert!(!status.success());
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(
        output.contains("already running with root") && output.contains(&daemon.root.display().to_string()),
        "{output}"
    );
    assert!(
        output.contains(&format!("pid {}", daemon.pid())),
        "names the holder: {output}"
    );
    // The first daemon is unaffected.
    daemon.ctr().ok(&["version"]);
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let daemon = Daemon::start();
    let log = daemon.dir().join("second.log");
    let mut args = daemon.args();
    let root_at = args.iter().position(|a| a == "--root").unwrap() + 1;
    args[root_at] = daemon.dir().join("root2").display().to_string();
    let state_at = args.iter().position(|a| a == "--state").unwrap() + 1;
    args[state_at] = daemon.dir().join("state2").display().to_string();
    let status = Daemon::spawn_raw(&args, &log).wait().unwrap();
    assert!(!status.success());
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(output.contains("already serving on"), "{output}");
    daemon.ctr().ok(&["version"]);
}

#[tokio::test]
async fn sigterm_ends_subscriptions_and_removes_the_sockets() {
    let mut daemon = Daemon::start();
    let mut events = EventsClient::new(daemon.channel().await);
    let mut stream = events
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ctr_events = daemon.ctr().spawn(&["events"]);

    daemon.signal(Signal::SIGTERM);
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the subscription ends within the grace period");
    assert!(!matches!(ended, Some(Ok(_))), "no event, just the end: {ended:?}");
    let status = daemon.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "clean exit: {status}\n{}", daemon.log());
    assert!(!daemon.socket.exists(), "gRPC socket removed");
    let ttrpc = daemon.dir().join("berth.sock.ttrpc");
    assert!(!ttrpc.exists(), "ttrpc socket removed");
    drop(ctr_events);
    assert!(daemon.log().contains("berthd stopped"), "{}", daemon.log());
}

/// A client may stop the daemon the moment its socket appears (as a
/// supervisor or a test does); that stop is the graceful one, every time.
#[test]
fn sigterm_as_soon_as_the_socket_appears_is_a_clean_stop() {
    let mut daemon = Daemon::start();
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    let args = daemon.args();
    for round in 0..20 {
        let log = daemon.dir().join(format!("early-stop-{round}.log"));
        let mut child = Daemon::spawn_raw(&args, &log);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !daemon.socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "no socket:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "round {round}: {status}\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(!daemon.socket.exists(), "round {round}: socket left behind");
    }
}

#[test]
fn data_survives_sigkill_and_the_stale_socket_is_replaced() {
    let mut daemon = Daemon::start();
    daemon.ctr().ok(&["namespaces", "create", "kept", "x=1"]);
    daemon.kill();
    assert!(
        std::fs::symlink_metadata(&daemon.socket)
            .unwrap()
            .file_type()
            .is_socket(),
        "a killed daemon leaves its socket behind"
    );
    daemon.relaunch();
    let list = daemon.ctr().ok(&["namespaces", "ls"]);
    assert!(list.lines().any(|l| l.split_whitespace().eq(["kept", "x=1"])), "{list}");
}

#[test]
fn the_socket_is_owner_and_group_only() {
    let daemon = Daemon::start();
    for path in [daemon.socket.clone(), daemon.dir().join("berth.sock.ttrpc")] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "{}", path.display());
    }
}

#[test]
fn config_default_prints_the_whole_default_configuration() {
    let out = Command::new(binaries::berth("berthd"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    for key in [
        "version",
        "root",
        "state",
        "grpc",
        "ttrpc",
        "debug",
        "plugins",
        "disabled_plugins",
    ] {
        assert!(parsed.contains_key(key), "{key} in:\n{text}");
    }
    assert_eq!(parsed["root"].as_str(), Some("/var/lib/berth"));
    assert_eq!(parsed["state"].as_str(), Some("/run/berth"));
    assert_eq!(parsed["grpc"]["address"].as_str(), Some("/run/berth/berth.sock"));
}

#[test]
fn the_config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\naddress = \"{}\"\n",
            dir.path().join("cfg-root").display(),
            dir.path().join("cfg-state").display(),
            dir.path().join("cfg.sock").display()
        ),
    )
    .unwrap();
    let out = Command::new(binaries::berth("berthd"))
        .arg("--config")
        .arg(&config)
        .args(["--address", "/tmp/flag.sock", "config", "dump"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dump: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(
        dump["root"].as_str(),
        Some(dir.path().join("cfg-root").to_str().unwrap())
    );
    assert_eq!(dump["grpc"]["address"].as_str(), Some("/tmp/flag.sock"));
}

#[test]
fn bad_settings_are_refused_by_name() {
    let run = |args: &[&str]| {
        let out = Command::new(binaries::berth("berthd")).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let err = run(&["--config", missing.to_str().unwrap(), "config", "dump"]);
    assert!(err.contains("missing.toml"), "{err}");
    let err = run(&["--log-level", "loud", "config", "dump"]);
    assert!(err.contains("\"loud\""), "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 2\n[grpc]\nadress = \"/x\"\n").unwrap();
    let err = run(&["--config", bad.to_str().unwrap(), "config", "dump"]);
    assert!(err.contains("adress") && err.contains("bad.toml"), "{err}");
}
