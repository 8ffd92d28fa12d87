//! `exec`: run another process in a running container, in all of its
//! namespaces and its cgroup.
//!
//! The runtime joins every namespace but the mount namespace just before
//! re-executing itself (so its own binary comes from the host, not from
//! the container); the re-executed process enters the container's mount
//! namespace, puts itself in the container's cgroup and forks the process,
//! which is then inside the pid namespace too. The process reports a
//! failure over the sync channel; a successful exec closes it.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::{Globals, load};
use crate::error::{Error, Result};
use crate::init::{INIT_ARG, INIT_FD_ENV};
use crate::state::Status;
use crate::sync::{Channel, ExecConfig, FromInit, ToInit};

/// `exec`'s options.
#[derive(Debug)]
pub struct ExecOptions {
    /// Container id.
    pub id: String,
    /// The process to run.
    pub process: Process,
    /// Where to write the process's pid.
    pub pid_file: Option<PathBuf>,
    /// Where to send the terminal's master side.
    pub console_socket: Option<PathBuf>,
    /// Descriptors 3..3+n passed to the process.
    pub preserve_fds: i32,
    /// The process's stdio, instead of the caller's.
    pub stdio: Option<super::ProcessStdio>,
    /// A connected socket to send the terminal's master over, instead of
    /// connecting to `console_socket`.
    pub console: Option<OwnedFd>,
    /// Join a paused container too (the process runs once it is resumed).
    pub ignore_paused: bool,
}

/// The namespace files joined before the re-exec. The runtime (root on
/// the host) may join namespaces a container's user namespace owns without
/// joining that one; the mount namespace and then the user namespace are
/// joined last, by the re-executed process, after it entered the cgroup
/// with the host's credentials.
const JOIN_ORDER: [(LinuxNamespaceType, &str); 6] = [
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Pid, "pid"),
    (LinuxNamespaceType::Cgroup, "cgroup"),
    (LinuxNamespaceType::Time, "time"),
];

/// Starts the process; returns its pid (in the runtime's pid namespace)
/// once it has exec'd. The caller becomes its parent only if it is a
/// subreaper (the process's own parent exits).
pub fn exec(globals: &Globals, options: &ExecOptions) -> Result<i32> {
    let (state, cgroup, status) = load(globals, &options.id)?;
    match status {
        // A created container's init waits in its namespaces: a process
        // may join them before start, as with runc.
        Status::Running | Status::Created => {}
        Status::Paused if options.ignore_paused => {}
        Status::Paused => {
            return Err(Error::precondition(&options.id, "cannot exec in a paused container"));
        }
        Status::Stopped => {
            return Err(Error::precondition(&options.id, "cannot exec in a stopped container"));
        }
    }
    let spec = super::bundle_spec(&state).ok_or_else(|| {
        Error::invalid(
            "bundle",
            format!("{}: config.json cannot be read", state.bundle.display()),
        )
    })?;
    crate::spec::check_process(&options.process)?;
    for warning in crate::security_labels::unsupported(&options.process) {
        (globals.warn)(&warning);
    }
    let terminal = options.process.terminal() == Some(true);
    let console = crate::terminal::console_connection(
        options.console.as_ref(),
        options.console_socket.as_deref(),
        terminal,
        "--tty",
    )?;

    let joins: Vec<(OwnedFd, i32)> = JOIN_ORDER
        .iter()
        .filter(|(kind, _)| crate::namespaces::has(&spec, *kind))
        .map(|(kind, name)| {
            let path = format!("/proc/{}/ns/{name}", state.pid);
            let file =
                std::fs::File::open(&path).map_err(|e| Error::io("opening the container's namespace", &path, &e))?;
            Ok((OwnedFd::from(file), crate::namespaces::flag(*kind).bits()))
        })
        .collect::<Result<_>>()?;
    let raw_joins: Vec<(i32, i32)> = joins.iter().map(|(fd, kind)| (fd.as_raw_fd(), *kind)).collect();
    let mount_path = format!("/proc/{}/ns/mnt", state.pid);
    let mount_namespace = OwnedFd::from(
        std::fs::File::open(&mount_path)
            .map_err(|e| Error::io("opening the container's namespace", &mount_path, &e))?,
    );
    let mount_fd = mount_namespace.as_raw_fd();
    let user_namespace = if crate::namespaces::has(&spec, LinuxNamespaceType::User) {
        let path = format!("/proc/{}/ns/user", state.pid);
        Some(OwnedFd::from(std::fs::File::open(&path).map_err(|e| {
            Error::io("opening the container's namespace", &path, &e)
        })?))
    } else {
        None
    };
    let user_fd = user_namespace.as_ref().map(|fd| fd.as_raw_fd()).unwrap_or(-1);
    let cgroup_entry = cgroup.create()?;

    let (mut ours, theirs) = Channel::pair()?;
    let child_fd = theirs.raw_fd();
    let console_fd = console.as_ref().map(|c| c.as_raw_fd()).unwrap_or(-1);
    let binary = crate::self_protection::ProtectedBinary::current()?;
    let mut command = Command::new(binary.path());
    if let Some(stdio) = &options.stdio {
        stdio.attach(&mut command)?;
    }
    command.arg(INIT_ARG).env(INIT_FD_ENV, child_fd.to_string());
    if console_fd >= 0 {
        command.env(crate::terminal::CONSOLE_FD_ENV, console_fd.to_string());
    }
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls (setns, unshare, mount, fcntl) on
    // descriptors and strings prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            for (fd, kind) in &raw_joins {
                if libc::setns(*fd, *kind) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // A throwaway mount namespace for the read-only binary (the
            // container's is entered after the exec).
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Between fork and exec, as bind_read_only requires.
            binary.bind_read_only()?;
            for fd in [child_fd, console_fd, mount_fd, user_fd] {
                if fd >= 0 && libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut intermediate = command
        .spawn()
        .map_err(|e| Error::io("entering the container's namespaces", "/proc/self/exe", &e))?;
    drop(theirs);
    drop(joins);
    drop(mount_namespace);
    drop(user_namespace);
    drop(console);

    let config = ExecConfig {
        process: options.process.clone(),
        mount_namespace_fd: mount_fd,
        user_namespace_fd: (user_fd >= 0).then_some(user_fd),
        cgroup_entry,
        preserve_fds: options.preserve_fds,
        seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
        debug: globals.debug.is_some(),
    };
    globals.step(|| format!("exec {}: joining the namespaces of pid {}", options.id, state.pid));
    ours.send(&ToInit::Exec(Box::new(config)))?;
    // The process shares the channel with its parent and may hand over its
    // seccomp listener before the parent reports its pid; it waits for the
    // answer, so that comes early at most once, and waits for the pid.
    let mut early_listener = None;
    let pid = loop {
        match ours.recv_from_init(globals.debug)? {
            Some(FromInit::Pid(pid)) => break pid,
            Some(listener @ FromInit::SeccompListener(_)) => early_listener = Some(listener),
            Some(FromInit::Failed(e)) => {
                let _ = intermediate.wait();
                return Err(e);
            }
            Some(other) => {
                let _ = intermediate.wait();
                return Err(Error::other(
                    "exec",
                    format!("the process sent {other:?} before its pid"),
                ));
            }
            None => {
                let _ = intermediate.wait();
                return Err(Error::other("exec", "the process exited before reporting"));
            }
        }
    };
    let _ = intermediate.wait();
    globals.step(|| format!("exec {}: process pid {pid}", options.id));
    loop {
        let message = match early_listener.take() {
            Some(listener) => Some(listener),
            None => ours.recv_from_init(globals.debug)?,
        };
        match message {
            // The channel closed: the exec succeeded.
            None => break,
            Some(FromInit::Failed(e)) => return Err(e),
            Some(FromInit::SeccompListener(number)) => {
                let profile = spec
                    .linux()
                    .as_ref()
                    .and_then(|l| l.seccomp().as_ref())
                    .ok_or_else(|| {
                        Error::invalid(
                            "linux.seccomp",
                            "the process loaded a notify filter the spec does not have",
                        )
                    })?;
                let listener = crate::seccomp_agent::take_listener(pid, number)?;
                let hook_state =
                    crate::hooks::HookState::new(&spec, &options.id, "running", Some(state.pid), &state.bundle);
                crate::seccomp_agent::hand_to_agent(profile, &hook_state, pid, listener, ours.stream())?;
            }
            Some(other) => return Err(Error::other("exec", format!("unexpected message {other:?}"))),
        }
    }
    globals.step(|| format!("exec {}: pid {pid} runs its command", options.id));
    if let Some(path) = &options.pid_file {
        super::write_pid_file(path, pid)?;
    }
    Ok(pid)
}

/// Moves this single-threaded process into the container's mount
/// namespace (root and working directory become the container's) and then
/// its user namespace, given the descriptors the runtime passed.
pub fn enter_mount_and_user_namespaces(mount_fd: i32, user_fd: Option<i32>) -> Result<()> {
    for (fd, kind) in [
        (Some(mount_fd), CloneFlags::CLONE_NEWNS),
        (user_fd, CloneFlags::CLONE_NEWUSER),
    ] {
        let Some(fd) = fd else { continue };
        // SAFETY: the runtime passed this descriptor for this process alone.
        let namespace = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        nix::sched::setns(namespace, kind)
            .map_err(|e| Error::nix("entering the container's namespaces", format!("{kind:?}"), e))?;
    }
    Ok(())
}
