//! A real berthd on a temporary root, state dir and socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::Channel;

use crate::ctr::Ctr;
use crate::{binaries, wait};

/// How long a daemon may take to start answering.
const START_LIMIT: Duration = Duration::from_secs(30);

/// How long a graceful stop may take.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// A running berthd; stopped (killed if need be) when dropped.
#[derive(Debug)]
pub struct Daemon {
    dir: tempfile::TempDir,
    /// `--root`.
    pub root: PathBuf,
    /// `--state`.
    pub state: PathBuf,
    /// `--address`.
    pub socket: PathBuf,
    log: PathBuf,
    extra_args: Vec<String>,
    /// Extra environment for the daemon (and so for its shims).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Daemon {
    /// Starts berthd with default settings on fresh directories.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A berthd with the busybox image imported on overlayfs, a `ctr` for
    /// it, and the image's name.
    pub fn with_busybox() -> (Self, Ctr, String) {
        let daemon = Self::start();
        let ctr = daemon.ctr();
        let image = crate::images::busybox();
        ctr.import("overlayfs", &image.oci_tar);
        (daemon, ctr, image.name)
    }

    /// How many of berth's shims run with a bundle under this daemon's
    /// state directory.
    pub fn shims(&self) -> usize {
        std::fs::read_dir("/proc")
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        let is_shim = std::fs::read_to_string(e.path().join("cmdline")).is_ok_and(|c| {
                            c.split('\0')
                                .next()
                                .is_some_and(|a| a.ends_with("containerd-shim-berth-v2"))
                        });
                        is_shim
                            && std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&self.state))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Starts berthd with `config` as its configuration file.
    pub fn start_with_config(config: &str) -> Self {
        Self::start_configured(config, &[])
    }

    /// Starts berthd with extra command-line arguments.
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_configured("version = 2\n", extra_args)
    }

    fn start_configured(config: &str, extra_args: &[&str]) -> Self {
        let mut daemon = Self::unstarted(config, extra_args);
        daemon.launch();
        daemon
    }

    /// A daemon set up on fresh directories but not started, for tests
    /// that prepare its root first (e.g. mount a small filesystem there);
    /// [`Self::relaunch`] starts it.
    pub fn unstarted(config: &str, extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("berth-it").tempdir().expect("temp dir");
        let daemon = Self {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            socket: dir.path().join("berth.sock"),
            log: dir.path().join("berthd.log"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            dir,
            child: None,
        };
        std::fs::write(daemon.dir.path().join("config.toml"), config).expect("config file");
        daemon
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The arguments berthd runs with.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--root".to_string(),
            self.root.display().to_string(),
            "--state".to_string(),
            self.state.display().to_string(),
            "--address".to_string(),
            self.socket.display().to_string(),
            "--config".to_string(),
            self.dir.path().join("config.toml").display().to_string(),
            "--log-level".to_string(),
            "debug".to_string(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Spawns berthd with the given arguments, logging to `log`, without
    /// waiting for it (for tests that expect it to fail).
    pub fn spawn_raw(args: &[String], log: &Path) -> Child {
        Self::spawn_raw_with_env(args, log, &[])
    }

    /// [`Self::spawn_raw`] with extra environment variables.
    pub fn spawn_raw_with_env(args: &[String], log: &Path, env: &[(String, String)]) -> Child {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log");
        Command::new(binaries::berth("berthd"))
            .args(args)
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .expect("spawn berthd")
    }

    fn launch(&mut self) {
        // An empty config file: tests pass settings as flags.
        let config = self.dir.path().join("config.toml");
        if !config.exists() {
            std::fs::write(&config, "version = 2\n").expect("config file");
        }
        let mut child = Self::spawn_raw_with_env(&self.args(), &self.log, &self.env);
        let socket = self.socket.clone();
        let log = self.log.clone();
        wait::until(START_LIMIT, "berthd to answer on its socket", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "berthd exited during startup ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::os::unix::net::UnixStream::connect(&socket).ok()
        });
        self.child = Some(child);
    }

    /// Stops the daemon gracefully and starts it again on the same directories.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(status.success(), "berthd stopped with {status}:\n{}", self.log());
        self.launch();
    }

    /// Starts the daemon again after it exited or was killed.
    pub fn relaunch(&mut self) {
        assert!(!self.is_running(), "berthd is still running");
        self.child = None;
        self.launch();
    }

    /// `ctr` bound to this daemon, in namespace `default`.
    pub fn ctr(&self) -> Ctr {
        Ctr::new(&self.socket)
    }

    /// A gRPC channel to this daemon.
    pub async fn channel(&self) -> Channel {
        berth_api::client::connect_unix(&self.socket)
            .await
            .expect("connect to berthd")
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.pid()).expect("pid fits");
        kill(Pid::from_raw(pid), signal).expect("signal berthd");
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon running");
        let status = wait::until(limit, "berthd to exit", || child.try_wait().ok().flatten());
        self.child = None;
        status
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(STOP_LIMIT)
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit(STOP_LIMIT);
    }

    /// Everything berthd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Path of the daemon's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Tasks outlive the daemon by design: delete them while it answers.
        if self.is_running() {
            self.ctr().remove_all_tasks_and_containers();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
