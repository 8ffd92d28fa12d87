//! `berth-runc run` and `exec` in the foreground with a terminal and no
//! `--console-socket`: berth-runc passes the pty on to its own terminal
//! (raw, its size, output as written), as runc does, and exits with the
//! process's code. Run as root.

use std::process::{Command, Stdio};

use berth_tests::binaries;
use berth_tests::bundle::Bundle;
use berth_tests::runc::{Runc, test_cgroup_path};

fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Runs a shell command line under `script` (a terminal of 30 rows and
/// 100 columns); returns what the terminal showed and the exit code.
fn in_terminal(command_line: &str) -> (String, Option<i32>) {
    let out = Command::new("script")
        .args([
            "-q",
            "-e",
            "-c",
            &format!("stty rows 30 cols 100; {command_line}"),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils)");
    // `script` passes the end of its (empty) stdin on as the terminal's
    // EOF character, which a raw terminal holds as NUL: the pty echoes it
    // as "^@" (as it does for runc).
    let shown = String::from_utf8_lossy(&out.stdout).replace("^@", "");
    (shown, out.status.code())
}

fn runc_line(runc: &Runc, args: &str) -> String {
    format!(
        "{} --root {} {args}",
        binaries::berth("berth-runc").display(),
        runc.root().display()
    )
}

#[test]
fn run_with_a_terminal_passes_it_on_and_returns_the_exit_code() {
    let runc = Runc::new();
    let id = id("fg-run");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "for f in /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2; do readlink $f; done; stty size; exit 3",
    ]);
    bundle.edit(|c| {
        c["process"]["terminal"] = true.into();
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
    });
    let (out, code) = in_terminal(&runc_line(
        &runc,
        &format!("run --bundle {} {id}", bundle.path().display()),
    ));
    assert_eq!(code, Some(3), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 4, "{out:?}");
    for line in &lines[..3] {
        assert!(line.starts_with("/dev/pts/"), "{out:?}");
    }
    // The host terminal's size, and output without "\r" added.
    assert_eq!(lines[3], "30 100", "{out:?}");
    assert!(!lines[0].ends_with('\r'), "{out:?}");
    assert!(runc.ids().is_empty(), "run deletes the container: {:?}", runc.ids());

    // With no terminal anywhere, the run is refused and nothing is left.
    let out = runc.run(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/dev/tty"), "{err}");
    assert!(runc.ids().is_empty());
}

#[test]
fn exec_t_in_the_foreground_passes_the_terminal_on() {
    let runc = Runc::new();
    let id = id("fg-exec");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let (out, code) = in_terminal(&runc_line(
        &runc,
        &format!("exec -t {id} sh -c 'tty; stty size; exit 5'"),
    ));
    assert_eq!(code, Some(5), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(lines[1], "30 100", "{out:?}");
    // Its input reaches the process, through the terminal.
    let (out, code) = in_terminal(&format!(
        "echo hello | {}",
        runc_line(&runc, &format!("exec -t {id} sh -c 'read line; echo got:$line'"))
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("got:hello"), "{out:?}");
    assert_eq!(runc.status(&id), "running");
    runc.ok(&["delete", "--force", &id]);
}
