//! What runs the container: berth-runtime in this process (the default),
//! or a runc-compatible binary (runc, crun, berth-runc) named by the
//! runtime options' `binary_name`, driven through its command line as
//! containerd's runc shim drives runc.

use std::io::Write as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_runtime::cgroups::CgroupManager;
use berth_runtime::container::Globals;
use berth_runtime::container::create::CreateOptions;
use berth_runtime::container::exec::ExecOptions;
use berth_runtime::{Error, Result};
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

/// The operations the shim needs from a runtime.
pub trait ContainerRuntime: std::fmt::Debug + Send + Sync {
    /// Creates the container; its init's pid.
    fn create(&self, options: &CreateOptions) -> Result<i32>;
    /// Starts it.
    fn start(&self, id: &str) -> Result<()>;
    /// Signals its init (or, with `all`, every process).
    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()>;
    /// Deletes it (`force`: even running).
    fn delete(&self, id: &str, force: bool) -> Result<()>;
    /// Freezes it.
    fn pause(&self, id: &str) -> Result<()>;
    /// Thaws it.
    fn resume(&self, id: &str) -> Result<()>;
    /// Runs another process in it; its pid.
    fn exec(&self, options: &ExecOptions) -> Result<i32>;
    /// The pids in its cgroup.
    fn pids(&self, id: &str) -> Result<Vec<i32>>;
    /// Changes its limits.
    fn update(&self, id: &str, resources: &LinuxResources) -> Result<()>;
    /// Its cgroup (stats, OOM events).
    fn cgroup(&self, id: &str, bundle: &Path) -> Result<Box<dyn CgroupManager>>;
}

/// berth-runtime, in this process.
#[derive(Debug)]
pub struct InProcess {
    /// The state root and options.
    pub globals: Globals,
}

impl ContainerRuntime for InProcess {
    fn create(&self, options: &CreateOptions) -> Result<i32> {
        berth_runtime::container::create::create(&self.globals, options).map(|state| state.pid)
    }

    fn start(&self, id: &str) -> Result<()> {
        berth_runtime::container::start::start(&self.globals, id)
    }

    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        berth_runtime::container::kill::kill(&self.globals, id, signal, all)
    }

    fn delete(&self, id: &str, force: bool) -> Result<()> {
        berth_runtime::container::delete::delete(&self.globals, id, force)
    }

    fn pause(&self, id: &str) -> Result<()> {
        berth_runtime::container::pause::pause(&self.globals, id)
    }

    fn resume(&self, id: &str) -> Result<()> {
        berth_runtime::container::pause::resume(&self.globals, id)
    }

    fn exec(&self, options: &ExecOptions) -> Result<i32> {
        berth_runtime::container::exec::exec(&self.globals, options)
    }

    fn pids(&self, id: &str) -> Result<Vec<i32>> {
        berth_runtime::container::query::pids(&self.globals, id)
    }

    fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        berth_runtime::container::update::update(&self.globals, id, resources)
    }

    fn cgroup(&self, id: &str, _bundle: &Path) -> Result<Box<dyn CgroupManager>> {
        berth_runtime::container::load(&self.globals, id).map(|(_, cgroup, _)| cgroup)
    }
}

/// A runc-compatible binary.
#[derive(Debug)]
pub struct Binary {
    /// The program.
    pub path: PathBuf,
    /// Its `--root`.
    pub root: PathBuf,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// Its JSON log (errors are read from it).
    pub log: PathBuf,
}

/// The file in a bundle naming the binary that runs its container.
const RECORD: &str = "berth-runtime-binary.json";

impl Binary {
    /// Notes in `bundle` which binary runs the container.
    pub fn record(&self, bundle: &Path) -> std::io::Result<()> {
        let json = serde_json::json!({
            "path": self.path,
            "root": self.root,
            "systemd_cgroup": self.systemd_cgroup,
        });
        std::fs::write(bundle.join(RECORD), json.to_string())
    }

    /// The binary recorded in `bundle`, if one runs its container.
    pub fn recorded(bundle: &Path) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join(RECORD)).ok()?).ok()?;
        Some(Self {
            path: PathBuf::from(value["path"].as_str()?),
            root: PathBuf::from(value["root"].as_str()?),
            systemd_cgroup: value["systemd_cgroup"].as_bool().unwrap_or(false),
            log: bundle.join("log.json"),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.path);
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .args(["--log-format", "json"]);
        if self.systemd_cgroup {
            command.arg("--systemd-cgroup");
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `command` to completion; an error carries the runtime's message.
    fn run(&self, mut command: Command, what: &str) -> Result<Vec<u8>> {
        let output = command
            .output()
            .map_err(|e| Error::io(what.to_string(), &self.path, &e))?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let logged = std::fs::read_to_string(&self.log)
            .ok()
            .and_then(|log| {
                log.lines()
                    .rev()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|v| v["level"] == "error")
                    .and_then(|v| v["msg"].as_str().map(str::to_string))
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&output.stderr).trim().to_string());
        Err(classify(what, logged))
    }

    /// Runs a command that leaves a process behind (create, exec): with
    /// the process's stdio, a console socket when it has a terminal; its
    /// pid from `pid_file`.
    fn start_process(
        &self,
        mut args: Vec<String>,
        id: &str,
        pid_file: &Path,
        console: Option<&OwnedFd>,
        stdio: Option<&berth_runtime::container::ProcessStdio>,
        what: &str,
    ) -> Result<i32> {
        let relay = self.console(console)?;
        args.push("--pid-file".into());
        args.push(pid_file.display().to_string());
        if let Some(relay) = &relay {
            args.push("--console-socket".into());
            args.push(relay.path.display().to_string());
        }
        args.push(id.to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = self.command(&refs);
        attach_stdio(&mut command, stdio)?;
        self.run(command, what)?;
        if let Some(relay) = &relay {
            relay.relay()?;
        }
        read_pid(pid_file)
    }

    fn simple(&self, args: &[&str], what: &str) -> Result<()> {
        self.run(self.command(args), what).map(|_| ())
    }

    /// A console socket for the binary: a listener in a private directory;
    /// the master it receives is passed on over `forward`.
    fn console(&self, forward: Option<&OwnedFd>) -> Result<Option<ConsoleRelay>> {
        let Some(forward) = forward else { return Ok(None) };
        let dir = std::env::temp_dir().join(format!("berth-console-{}-{}", std::process::id(), next_serial()));
        std::fs::create_dir(&dir).map_err(|e| Error::io("creating the console socket", &dir, &e))?;
        let path = dir.join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| Error::io("creating the console socket", &path, &e))?;
        let forward = forward
            .try_clone()
            .map_err(|e| Error::io("passing the console socket", "dup", &e))?;
        Ok(Some(ConsoleRelay {
            dir,
            path,
            listener,
            forward,
        }))
    }
}

fn next_serial() -> u64 {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The binary's error, kept as the kind the shim maps to a gRPC code.
fn classify(what: &str, message: String) -> Error {
    let lower = message.to_lowercase();
    let mut error = Error::other(what.to_string(), message);
    if lower.contains("does not exist") || lower.contains("not found") || lower.contains("no such") {
        error.kind = berth_runtime::error::Kind::NotFound;
    } else if lower.contains("already exists") {
        error.kind = berth_runtime::error::Kind::AlreadyExists;
    } else if lower.contains("not running") || lower.contains("cannot") || lower.contains("is not") {
        error.kind = berth_runtime::error::Kind::FailedPrecondition;
    }
    error
}

/// Receives the terminal master from the binary and passes it on.
struct ConsoleRelay {
    dir: PathBuf,
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
    forward: OwnedFd,
}

impl ConsoleRelay {
    fn relay(&self) -> Result<()> {
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|e| Error::io("receiving the terminal", &self.path, &e))?;
        let mut name = [0u8; 256];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut name)];
        let message = nix::sys::socket::recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .map_err(|e| Error::nix("receiving the terminal", &self.path, e))?;
        let mut fds = Vec::new();
        for control in message
            .cmsgs()
            .map_err(|e| Error::nix("receiving the terminal", &self.path, e))?
        {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(received) = control {
                fds.extend(received);
            }
        }
        let master = fds
            .first()
            .copied()
            .ok_or_else(|| Error::other("receiving the terminal", "no descriptor came"))?;
        let control = [nix::sys::socket::ControlMessage::ScmRights(&[master])];
        let sent = nix::sys::socket::sendmsg::<()>(
            self.forward.as_raw_fd(),
            &[std::io::IoSlice::new(b"/dev/pts")],
            &control,
            nix::sys::socket::MsgFlags::empty(),
            None,
        );
        for fd in fds {
            let _ = nix::unistd::close(fd);
        }
        sent.map(|_| ())
            .map_err(|e| Error::nix("passing the terminal on", &self.path, e))
    }
}

impl Drop for ConsoleRelay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn attach_stdio(command: &mut Command, stdio: Option<&berth_runtime::container::ProcessStdio>) -> Result<()> {
    match stdio {
        Some(stdio) => stdio.attach(command),
        None => Ok(()),
    }
}

fn read_pid(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading the pid file", path, &e))?;
    text.trim()
        .parse()
        .map_err(|_| Error::other("reading the pid file", format!("{}: not a pid", path.display())))
}

impl ContainerRuntime for Binary {
    fn create(&self, options: &CreateOptions) -> Result<i32> {
        let args = vec![
            "create".to_string(),
            "--bundle".to_string(),
            options.bundle.display().to_string(),
            "--no-new-keyring".to_string(),
        ];
        self.start_process(
            args,
            &options.id,
            &options.bundle.join("init.pid"),
            options.console.as_ref(),
            options.stdio.as_ref(),
            "creating the container",
        )
    }

    fn start(&self, id: &str) -> Result<()> {
        self.simple(&["start", id], "starting the container")
    }

    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        let number = (signal as i32).to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, number.as_str()]);
        self.simple(&args, "signalling the container")
    }

    fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.simple(&args, "deleting the container")
    }

    fn pause(&self, id: &str) -> Result<()> {
        self.simple(&["pause", id], "pausing the container")
    }

    fn resume(&self, id: &str) -> Result<()> {
        self.simple(&["resume", id], "resuming the container")
    }

    fn exec(&self, options: &ExecOptions) -> Result<i32> {
        let dir = std::env::temp_dir().join(format!("berth-exec-{}-{}", std::process::id(), next_serial()));
        std::fs::create_dir(&dir).map_err(|e| Error::io("preparing the exec", &dir, &e))?;
        let outcome = (|| {
            let process = dir.join("process.json");
            let json =
                serde_json::to_vec(&options.process).map_err(|e| Error::other("writing the process", e.to_string()))?;
            std::fs::File::create(&process)
                .and_then(|mut f| f.write_all(&json))
                .map_err(|e| Error::io("writing the process", &process, &e))?;
            let args = vec![
                "exec".to_string(),
                "--process".to_string(),
                process.display().to_string(),
                "--detach".to_string(),
            ];
            self.start_process(
                args,
                &options.id,
                &dir.join("exec.pid"),
                options.console.as_ref(),
                options.stdio.as_ref(),
                "running the process",
            )
        })();
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    }

    fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let mut command = self.command(&["ps", "--format", "json", id]);
        command.stdout(Stdio::piped());
        let out = self.run(command, "listing the processes")?;
        serde_json::from_slice(&out).map_err(|e| Error::other("listing the processes", e.to_string()))
    }

    fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let mut command = self.command(&["update", "--resources", "-", id]);
        command.stdin(Stdio::piped());
        let json = serde_json::to_vec(resources).map_err(|e| Error::other("updating", e.to_string()))?;
        let mut child = command
            .spawn()
            .map_err(|e| Error::io("updating the container", &self.path, &e))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&json);
        }
        let output = child
            .wait_with_output()
            .map_err(|e| Error::io("updating the container", &self.path, &e))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(classify(
                "updating the container",
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ))
        }
    }

    fn cgroup(&self, id: &str, bundle: &Path) -> Result<Box<dyn CgroupManager>> {
        // The cgroup the spec names, found the way every runtime finds it.
        let spec = berth_runtime::spec::load_bundle(bundle)?.spec;
        let path = berth_runtime::cgroups::container_path(
            spec.linux().as_ref().and_then(|l| l.cgroups_path().as_deref()),
            id,
            self.systemd_cgroup,
        );
        berth_runtime::container::manager_for(&path)
    }
}
