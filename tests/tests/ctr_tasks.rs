//! `ctr run` and `ctr task ...` against berthd: tasks through berth's own
//! shim (and, configured, Debian's runc shim), their events, stdio, logs
//! and terminals, and the errors bad requests get. Run as root.

use std::time::Duration;

use berth_tests::daemon::Daemon;
use berth_tests::{images, wait};

#[test]
fn run_rm_prints_the_output_and_the_exit_code_is_ctrs() {
    let (daemon, ctr, image) = Daemon::with_busybox();
    assert_eq!(ctr.ok(&["run", "--rm", &image, "c1", "echo", "hi"]), "hi\n");
    let out = ctr.run(&["run", "--rm", &image, "c1", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(ctr.ok(&["containers", "ls", "-q"]).trim().is_empty());
    wait::until(Duration::from_secs(10), "the shims to exit", || {
        (daemon.shims() == 0).then_some(())
    });
    let leftovers: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(daemon.dir().to_str().unwrap()))
        .map(str::to_string)
        .collect();
    assert!(leftovers.is_empty(), "mounts left: {leftovers:?}");
}

#[test]
fn a_detached_task_lists_execs_pauses_reports_metrics_and_is_killed() {
    let (_daemon, ctr, image) = Daemon::with_busybox();
    ctr.ok(&["run", "-d", &image, "c2", "sleep", "1000"]);
    assert_eq!(ctr.task_status("c2"), "RUNNING");
    let ps = ctr.ok(&["task", "ps", "c2"]);
    assert_eq!(ps.lines().count(), 2, "{ps}");
    let out = ctr.ok(&["task", "exec", "--exec-id", "e1", "c2", "ps", "-o", "pid,args"]);
    assert!(
        out.lines()
            .any(|l| l.trim().starts_with("1 ") && l.contains("sleep 1000")),
        "{out}"
    );
    let out = ctr.in_terminal("task exec --exec-id e2 -t c2 sh -c 'tty; echo exec-tty-done'");
    assert!(out.contains("/dev/pts/") && out.contains("exec-tty-done"), "{out}");

    ctr.ok(&["task", "pause", "c2"]);
    assert_eq!(ctr.task_status("c2"), "PAUSED");
    ctr.ok(&["task", "resume", "c2"]);
    assert_eq!(ctr.task_status("c2"), "RUNNING");
    let metrics = ctr.ok(&["task", "metrics", "c2"]);
    for row in ["memory.usage_in_bytes", "cpuacct.usage", "pids.current"] {
        assert!(metrics.contains(row), "{row} in {metrics}");
    }

    // SIGTERM (the default) leaves a handler-less pid 1 running, as with containerd.
    ctr.ok(&["task", "kill", "c2"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ctr.task_status("c2"), "RUNNING");
    ctr.ok(&["task", "kill", "-s", "SIGKILL", "c2"]);
    ctr.wait_task_status("c2", "STOPPED");
    let again = ctr.run(&["task", "kill", "-s", "SIGKILL", "c2"]);
    assert!(
        !again.status.success() && again.stderr.contains("not found"),
        "{}",
        again.stderr
    );
    ctr.ok(&["task", "delete", "c2"]);
    ctr.ok(&["container", "rm", "c2"]);
}

#[test]
fn sigterm_stops_a_trapping_container_and_kill_all_reaches_every_process() {
    let (_daemon, ctr, image) = Daemon::with_busybox();
    ctr.ok(&[
        "run",
        "-d",
        &image,
        "trap",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ]);
    ctr.wait_task_status("trap", "RUNNING");
    ctr.ok(&["task", "kill", "trap"]);
    ctr.wait_task_status("trap", "STOPPED");
    ctr.ok(&["task", "rm", "trap"]);

    ctr.ok(&["run", "-d", &image, "all", "sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    wait::until(Duration::from_secs(10), "three processes", || {
        (ctr.ok(&["task", "ps", "all"]).lines().count() == 4).then_some(())
    });
    ctr.ok(&["task", "kill", "--all", "-s", "SIGKILL", "all"]);
    ctr.wait_task_status("all", "STOPPED");
    ctr.ok(&["task", "rm", "all"]);
}

#[test]
fn run_t_has_a_terminal_and_log_uri_writes_a_file() {
    let (daemon, ctr, image) = Daemon::with_busybox();
    let out = ctr.in_terminal(&format!(
        "run -t --rm {image} t1 sh -c 'tty; [ -t 0 ] && echo stdin-is-a-tty; stty size'"
    ));
    assert!(out.contains("/dev/pts/0") && out.contains("stdin-is-a-tty"), "{out}");

    let log = daemon.dir().join("logs/l1.log");
    let uri = format!("file://{}", log.display());
    ctr.ok(&[
        "run",
        "--log-uri",
        &uri,
        "-d",
        &image,
        "l1",
        "sh",
        "-c",
        "echo to-the-log; echo to-stderr >&2",
    ]);
    ctr.wait_task_status("l1", "STOPPED");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("to-the-log\n") && text.contains("to-stderr\n"), "{text}");
    ctr.ok(&["task", "rm", "l1"]);
}

#[test]
fn events_of_a_run_rm_and_of_exec_pause_resume() {
    let (_daemon, ctr, image) = Daemon::with_busybox();
    let events = ctr.subscribe(&[]);
    ctr.ok(&["run", "--rm", &image, "ev", "true"]);
    ctr.ok(&["run", "-d", &image, "ev2", "sleep", "1000"]);
    ctr.ok(&["task", "exec", "--exec-id", "x1", "ev2", "true"]);
    ctr.ok(&["task", "pause", "ev2"]);
    ctr.ok(&["task", "resume", "ev2"]);
    events.wait_for_line(&["/tasks/resumed"], Duration::from_secs(10));
    let seen = events.stdout();
    let topics: Vec<&str> = seen.lines().filter_map(|l| l.split_whitespace().nth(5)).collect();
    let run_rm = [
        "/snapshot/prepare",
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/snapshot/remove",
        "/containers/delete",
    ];
    let mut at = 0;
    for topic in run_rm {
        let found = topics[at..].iter().position(|t| *t == topic);
        assert!(found.is_some(), "{topic} after {:?} in {topics:?}", &topics[..at]);
        at += found.unwrap() + 1;
    }
    for topic in [
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
    ] {
        assert!(topics.contains(&topic), "{topic} in {topics:?}");
    }
    for line in seen
        .lines()
        .filter(|l| l.contains("/tasks/") || l.contains("/containers/"))
    {
        assert!(line.contains('{'), "a JSON body: {line}");
    }
    assert!(
        !events.stderr().contains("warn"),
        "decode warnings: {}",
        events.stderr()
    );
    ctr.ok(&["task", "kill", "-s", "SIGKILL", "ev2"]);
}

#[test]
fn bad_requests_get_containerds_errors_and_leave_nothing() {
    let (daemon, ctr, image) = Daemon::with_busybox();
    // A task for a container that does not exist.
    let out = ctr.run(&["task", "start", "ghost"]);
    assert!(
        !out.status.success() && out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
    // A second task for the same container.
    ctr.ok(&["run", "-d", &image, "twice", "sleep", "1000"]);
    let out = ctr.run(&["task", "start", "twice"]);
    assert!(
        !out.status.success() && out.stderr.contains("already exists"),
        "{}",
        out.stderr
    );
    // An exec id in use.
    ctr.ok(&["task", "exec", "--detach", "--exec-id", "dup", "twice", "sleep", "100"]);
    let out = ctr.run(&["task", "exec", "--exec-id", "dup", "twice", "true"]);
    assert!(
        !out.status.success() && out.stderr.contains("already exists"),
        "{}",
        out.stderr
    );
    // A container whose task cannot be deleted while it runs.
    let out = ctr.run(&["task", "delete", "twice"]);
    assert!(
        !out.status.success() && out.stderr.contains("running"),
        "{}",
        out.stderr
    );
    ctr.ok(&["task", "kill", "-s", "SIGKILL", "twice"]);
    ctr.wait_task_status("twice", "STOPPED");
    ctr.ok(&["task", "rm", "twice"]);

    // An invalid spec: the runtime refuses it at create, naming the field;
    // no shim, bundle or mount is left.
    let spec = daemon.dir().join("bad-spec.json");
    let mut value: serde_json::Value = serde_json::from_str(&ctr.ok(&["oci", "spec"])).unwrap();
    value["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "bogus"}]);
    std::fs::write(&spec, value.to_string()).unwrap();
    let out = ctr.run(&["run", "--config", spec.to_str().unwrap(), "--rm", "bad"]);
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stderr.contains("linux.namespaces[1].type"), "{}", out.stderr);
    assert!(!daemon.state.join("tasks/default/bad").exists(), "bundle left");
    wait::until(Duration::from_secs(10), "the shims to exit", || {
        (daemon.shims() == 0).then_some(())
    });
    let _ = ctr.run(&["container", "rm", "bad"]);
}

#[test]
fn berthd_drives_debians_runc_shim_when_configured() {
    let daemon = Daemon::start_with_config(
        "version = 2\n[plugins.\"io.containerd.runtime.v2.task\".runtimes]\n\"io.containerd.runc.v2\" = \"containerd-shim-runc-v2\"\n",
    );
    // Debian's shim keeps runc state under /run/containerd/runc/<namespace>:
    // a namespace of this test's own keeps clear of anything else there.
    let namespace = format!("berth-runc-shim-{}", std::process::id());
    let ctr = daemon.ctr().in_namespace(&namespace);
    let image = images::busybox();
    ctr.import("overlayfs", &image.oci_tar);
    assert_eq!(ctr.ok(&["run", "--rm", &image.name, "r1", "echo", "hi"]), "hi\n");
    ctr.ok(&["run", "-d", &image.name, "r2", "sleep", "1000"]);
    ctr.wait_task_status("r2", "RUNNING");
    assert_eq!(
        ctr.ok(&["task", "exec", "--exec-id", "e1", "r2", "echo", "exec-ok"]),
        "exec-ok\n"
    );
    ctr.ok(&["task", "kill", "-s", "SIGKILL", "r2"]);
    ctr.wait_task_status("r2", "STOPPED");
    ctr.ok(&["task", "rm", "r2"]);
    ctr.ok(&["container", "rm", "r2"]);
    let runc_state = std::path::Path::new("/run/containerd/runc").join(&namespace);
    assert!(
        std::fs::read_dir(&runc_state).map(|d| d.count()).unwrap_or(0) == 0,
        "runc state left in {}",
        runc_state.display()
    );
    let _ = std::fs::remove_dir(&runc_state);
}

#[test]
fn an_out_of_memory_kill_is_reported_as_an_event() {
    let (_daemon, ctr, image) = Daemon::with_busybox();
    let events = ctr.subscribe(&[]);
    let out = ctr.run(&[
        "run",
        "--rm",
        "--memory-limit",
        "33554432",
        &image,
        "oom",
        "tail",
        "/dev/zero",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", out.stderr);
    let line = events.wait_for_line(&["/tasks/oom", "\"oom\""], Duration::from_secs(10));
    assert!(line.contains("container_id"), "{line}");
}

#[test]
fn a_binary_logger_receives_the_output() {
    use std::os::unix::fs::PermissionsExt as _;
    let (daemon, ctr, image) = Daemon::with_busybox();
    let logger = daemon.dir().join("logger.sh");
    let out = daemon.dir().join("logged.txt");
    std::fs::write(
        &logger,
        "#!/bin/sh\n# fd 3: stdout, fd 4: stderr, fd 5: closed when ready\n\
         out=$1\necho \"id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE\" > \"$out\"\n\
         cat <&3 >> \"$out\" 5>&- &\ncat <&4 >> \"$out\" 5>&- &\nexec 5>&-\nwait\n",
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::fs::Permissions::from_mode(0o755)).unwrap();
    let uri = format!("binary://{}?{}", logger.display(), out.display());
    ctr.ok(&[
        "run",
        "--log-uri",
        &uri,
        "-d",
        &image,
        "logged",
        "sh",
        "-c",
        "echo out-line; echo err-line >&2",
    ]);
    ctr.wait_task_status("logged", "STOPPED");
    wait::until(Duration::from_secs(10), "the logger to write", || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        (text.contains("out-line") && text.contains("err-line")).then_some(text)
    });
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("id=logged ns=default\n"), "{text}");
    ctr.ok(&["task", "rm", "logged"]);
}

#[test]
fn the_shim_drives_a_runc_compatible_binary_named_in_the_options() {
    let (_daemon, ctr, image) = Daemon::with_busybox();
    let berth_runc = berth_tests::binaries::berth("berth-runc").display().to_string();
    for binary in ["runc", berth_runc.as_str()] {
        let out = ctr.run(&[
            "run",
            "--runc-binary",
            binary,
            "--rm",
            &image,
            "b1",
            "sh",
            "-c",
            "echo hi; exit 4",
        ]);
        assert_eq!(
            (out.status.code(), out.stdout.as_str()),
            (Some(4), "hi\n"),
            "{binary}: {}",
            out.stderr
        );
    }
    ctr.ok(&["run", "--runc-binary", "runc", "-d", &image, "b2", "sleep", "1000"]);
    ctr.wait_task_status("b2", "RUNNING");
    assert_eq!(
        ctr.ok(&["task", "exec", "--exec-id", "e1", "b2", "echo", "exec-ok"]),
        "exec-ok\n"
    );
    ctr.ok(&["task", "pause", "b2"]);
    assert_eq!(ctr.task_status("b2"), "PAUSED");
    ctr.ok(&["task", "resume", "b2"]);
    assert!(ctr.ok(&["task", "metrics", "b2"]).contains("pids.current"));
    let out = ctr.in_terminal("task exec --exec-id e2 -t b2 sh -c 'tty'");
    assert!(out.contains("/dev/pts/"), "{out}");
    ctr.ok(&["task", "kill", "-s", "SIGKILL", "b2"]);
    ctr.wait_task_status("b2", "STOPPED");
    ctr.ok(&["task", "rm", "b2"]);
}

#[test]
fn an_interactive_terminal_session_prompts_resizes_and_exits() {
    use std::io::Write as _;
    let (daemon, _ctr, image) = Daemon::with_busybox();
    let command = format!(
        "stty rows 33 cols 101; {} --address {} run -t --rm {image} session sh",
        berth_tests::binaries::host("ctr").display(),
        daemon.socket.display()
    );
    let mut script = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    let mut input = script.stdin.take().unwrap();
    for line in ["echo inside-$((6*7))", "stty size", "exit 7"] {
        std::thread::sleep(Duration::from_millis(700));
        input.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    let out = script.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{text}");
    assert!(text.contains("/ # "), "a prompt: {text}");
    assert!(text.contains("inside-42"), "{text}");
    assert!(text.contains("33 101"), "the terminal has the client's size: {text}");
}
