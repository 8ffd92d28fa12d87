//! Debian's `ctr`, pointed at a daemon's socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::{binaries, wait};

/// How long one `ctr` command may take before the test fails.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// Runs `ctr -a <socket> -n <namespace> ...`.
#[derive(Clone, Debug)]
pub struct Ctr {
    address: PathBuf,
    namespace: String,
}

/// What a finished `ctr` command did.
#[derive(Debug)]
pub struct CtrOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ctr {
    /// `ctr` against the daemon at `address`, in namespace `default`.
    pub fn new(address: &Path) -> Self {
        Self {
            address: address.to_path_buf(),
            namespace: "default".to_string(),
        }
    }

    /// The same client in another namespace.
    pub fn in_namespace(&self, namespace: &str) -> Self {
        Self {
            address: self.address.clone(),
            namespace: namespace.to_string(),
        }
    }

    /// The command, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binaries::host("ctr"));
        command
            .arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs a command to completion (bounded by a generous limit).
    pub fn run(&self, args: &[&str]) -> CtrOutput {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr");
        let output = wait_output(child, COMMAND_LIMIT, &format!("ctr {}", args.join(" ")));
        CtrOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The STATUS column of `ctr task ls` for task `id` (empty if absent).
    pub fn task_status(&self, id: &str) -> String {
        self.ok(&["task", "ls"])
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().last().map(str::to_string))
            .unwrap_or_default()
    }

    /// Waits until task `id` has status `want`.
    pub fn wait_task_status(&self, id: &str, want: &str) {
        wait::until(Duration::from_secs(10), &format!("{id} to be {want}"), || {
            (self.task_status(id) == want).then_some(())
        });
    }

    /// Deletes every task (killing its processes, so its shim exits and
    /// unmounts the rootfs) and every container, in every namespace, and
    /// the namespaces' cgroup parents once empty.
    pub fn remove_all_tasks_and_containers(&self) {
        let namespaces = self.run(&["namespaces", "ls", "-q"]).stdout;
        for namespace in namespaces.lines() {
            let ctr = self.in_namespace(namespace);
            for task in ctr.run(&["tasks", "ls", "-q"]).stdout.lines() {
                let _ = ctr.run(&["tasks", "rm", "--force", task]);
            }
            for container in ctr.run(&["containers", "ls", "-q"]).stdout.lines() {
                let _ = ctr.run(&["containers", "rm", container]);
            }
            // The runtimes' cgroup parent for the namespace (ctr puts
            // containers in /<namespace>/<id>); still in use elsewhere, it stays.
            if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
                for hierarchy in hierarchies.flatten() {
                    let _ = std::fs::remove_dir(hierarchy.path().join(namespace));
                }
            }
        }
    }

    /// Runs `ctr ARGS` (a shell-quoted string) under `script`, so ctr has
    /// a terminal; must succeed; returns what the terminal showed.
    pub fn in_terminal(&self, args: &str) -> String {
        let command = format!(
            "{} --address {} --namespace {} {args}",
            binaries::host("ctr").display(),
            self.address.display(),
            self.namespace
        );
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("script (bsdutils)");
        assert!(
            out.status.success(),
            "{command}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ctr {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// `ctr images import --snapshotter <snapshotter> <archive>`: imports
    /// and unpacks.
    pub fn import(&self, snapshotter: &str, archive: &Path) -> String {
        let archive = archive.to_str().expect("utf-8 archive path");
        self.ok(&["images", "import", "--snapshotter", snapshotter, archive])
    }

    /// Stores `data` as a blob with `ctr content ingest`, labels it a GC
    /// root so it stays, and returns its digest.
    pub fn ingest(&self, reference: &str, data: &[u8]) -> String {
        use std::io::Write as _;
        let mut child = self
            .command(&["content", "ingest", reference])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr content ingest");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(data).expect("write the blob to ctr");
        drop(stdin);
        let output = wait_output(child, COMMAND_LIMIT, "ctr content ingest");
        assert!(
            output.status.success(),
            "ctr content ingest failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
        self.ok(&["content", "label", &digest, "containerd.io/gc.root=test"]);
        digest
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "ctr {} should have failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out.stderr
    }

    /// Starts `ctr events [filters]` and returns once its subscription is
    /// live: it creates and removes probe namespaces until the subscriber
    /// has printed one, so every later event is certainly seen. The filters
    /// must let `/namespaces/create` events through.
    pub fn subscribe(&self, filters: &[&str]) -> Background {
        let mut args = vec!["events"];
        args.extend_from_slice(filters);
        let events = self.spawn(&args);
        for attempt in 0..100 {
            let probe = format!("subscription-probe-{attempt}");
            self.ok(&["namespaces", "create", &probe]);
            self.ok(&["namespaces", "rm", &probe]);
            let deadline = Instant::now() + Duration::from_millis(300);
            while Instant::now() < deadline {
                if events.stdout().contains(&format!("\"{probe}\"")) {
                    return events;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("ctr events never saw a probe event: {}", events.stderr());
    }

    /// Starts a long-running command (such as `ctr events`) in the background.
    pub fn spawn(&self, args: &[&str]) -> Background {
        let dir = tempfile::tempdir().expect("temp dir for ctr output");
        let stdout_path = dir.path().join("stdout");
        let stderr_path = dir.path().join("stderr");
        let child = self
            .command(args)
            .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn ctr");
        Background {
            child,
            stdout_path,
            stderr_path,
            _dir: dir,
        }
    }
}

fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    // Drained while the command runs, so output past a pipe's buffer
    // cannot stall it.
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let (status, timed_out) = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break (status, false),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                break (child.wait().expect("wait for child"), true);
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if timed_out {
        panic!(
            "{what} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// A `ctr` command running in the background; killed when dropped.
#[derive(Debug)]
pub struct Background {
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Background {
    /// What it printed so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until stdout has a line containing every one of `needles`.
    pub fn wait_for_line(&self, needles: &[&str], limit: Duration) -> String {
        wait::until(limit, &format!("a line with {needles:?}"), || {
            self.stdout()
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
                .map(str::to_string)
        })
    }

    /// Waits for the command to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        wait::until(limit, "the background command to exit", || {
            self.child.try_wait().ok().flatten()
        })
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it and returns everything it printed.
    pub fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdout()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
