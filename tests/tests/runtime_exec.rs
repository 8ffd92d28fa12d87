//! `berth-runc exec`: a process in every namespace and the cgroup of a
//! running container, with or without a terminal. Run as root.

use std::io::Read as _;
use std::time::Duration;

use berth_tests::bundle::Bundle;
use berth_tests::console::ConsoleSocket;
use berth_tests::runc::{Runc, test_cgroup_path};

fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// A running `sleep` container.
fn running(runc: &Runc, name: &str) -> (Bundle, String) {
    let id = id(name);
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    (bundle, id)
}

#[test]
fn exec_sees_the_container_pid_namespace_and_returns_the_exit_code() {
    let runc = Runc::new();
    let (_bundle, id) = running(&runc, "exec");
    let out = runc.ok(&["exec", &id, "ps", "-o", "pid,args"]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("1 ") && l.contains("sleep 1000")),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.contains("ps -o pid,args")), "{out}");
    assert_eq!(lines.len(), 3, "only the container's processes: {out}");

    let out = runc.run(&["exec", &id, "sh", "-c", "echo $HOSTNAME; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));

    // Detached, with a pid file: the process is in the container's cgroup.
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    runc.ok_detached(&[
        "exec",
        "-d",
        "--pid-file",
        pid_file.path().to_str().unwrap(),
        &id,
        "sleep",
        "30",
    ]);
    let pid: i32 = std::fs::read_to_string(pid_file.path()).unwrap().parse().unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroups
            .lines()
            .any(|l| l.starts_with("4:memory:") || l.contains(":memory:"))
            && cgroups
                .lines()
                .filter(|l| l.contains(":memory:"))
                .all(|l| l.ends_with(&test_cgroup_path(&id))),
        "{cgroups}"
    );
    let ps: Vec<i32> = serde_json::from_str(&runc.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(ps.contains(&pid), "{ps:?} holds {pid}");
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn exec_takes_a_process_file_with_user_cwd_and_env() {
    let runc = Runc::new();
    let (_bundle, id) = running(&runc, "execproc");
    let process = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        process.path(),
        serde_json::json!({
            "args": ["sh", "-c", "echo $(id -u):$(id -g) $(pwd) $WHO"],
            "cwd": "/etc",
            "env": ["PATH=/bin", "WHO=exec-test"],
            "user": {"uid": 1234, "gid": 99},
        })
        .to_string(),
    )
    .unwrap();
    let out = runc.ok(&["exec", "--process", process.path().to_str().unwrap(), &id]);
    assert_eq!(out, "1234:99 /etc exec-test\n");
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn exec_tty_sends_the_terminal_to_the_console_socket() {
    let runc = Runc::new();
    let (_bundle, id) = running(&runc, "exectty");
    let console = ConsoleSocket::new();
    let socket = console.path().to_str().unwrap().to_string();
    let receiver = std::thread::spawn(move || console.receive());
    runc.ok_detached(&[
        "exec",
        "-d",
        "--tty",
        "--console-socket",
        &socket,
        &id,
        "sh",
        "-c",
        "tty; stty size; sleep 2",
    ]);
    let (master, name) = receiver.join().unwrap();
    assert!(name.starts_with("/dev/pts/"), "{name}");
    let mut master = std::fs::File::from(master);
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&out).contains('\n') || String::from_utf8_lossy(&out).lines().count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no output on the terminal: {:?}",
            String::from_utf8_lossy(&out)
        );
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains(&name), "the process's terminal is the one sent: {text}");
    runc.ok(&["delete", "--force", &id]);
}

#[test]
fn exec_into_a_container_that_is_not_running_fails() {
    let runc = Runc::new();
    let id = id("execstopped");
    let bundle = Bundle::busybox(&["true"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
    // (A created container takes an exec, as with runc: runtime_cli.rs.)
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let mut stopped = false;
    for _ in 0..100 {
        if runc.status(&id) == "stopped" {
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(stopped, "the container's `true` exits");
    let stderr = runc.fails(&["exec", &id, "true"]);
    assert!(stderr.contains("stopped"), "{stderr}");
    let stderr = runc.fails(&["exec", "no-such-container", "true"]);
    assert!(stderr.contains("no-such-container"), "{stderr}");
    runc.ok(&["delete", "--force", &id]);
}
