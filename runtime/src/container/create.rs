//! `create`: build a container from a bundle and leave it waiting for
//! `start`.
//!
//! Order: check the id and bundle, make the state directory, spawn the
//! init with its namespaces, create the cgroup (the init forks the
//! container's pid 1 inside it), set the limits, let it build the container, then record the state and
//! the pid file. Anything that fails undoes what was done: the process is
//! killed, the cgroup and the state directory removed.

use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

use super::{Globals, host_binds, manager_for};
use crate::error::{Error, Result};
use crate::hooks::{self, HookState};
use crate::init::{INIT_ARG, INIT_FD_ENV};
use crate::namespaces;
use crate::spec::load_bundle;
use crate::state::{self, State};
use crate::sync::{Channel, FromInit, InitConfig, ToInit, UserNamespaceSetup};

/// `create`'s options, as runc takes them.
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// Container id.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Where to write the init's pid.
    pub pid_file: Option<PathBuf>,
    /// Where to send the terminal's master side.
    pub console_socket: Option<PathBuf>,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-new-keyring` (berth never makes a session keyring).
    pub no_new_keyring: bool,
    /// Descriptors 3..3+n passed to the process.
    pub preserve_fds: i32,
    /// The process's stdio, instead of the caller's.
    pub stdio: Option<super::ProcessStdio>,
    /// A connected socket to send the terminal's master over, instead of
    /// connecting to `console_socket`.
    pub console: Option<std::os::fd::OwnedFd>,
}

/// Undoes a half-made container unless disarmed.
struct Cleanup<'a> {
    state_dir: PathBuf,
    init_pid: Option<i32>,
    cgroup: Option<Rc<dyn crate::cgroups::CgroupManager>>,
    armed: bool,
    _root: &'a Path,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.init_pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.signal_all(Signal::SIGKILL);
            let _ = cgroup.destroy();
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Refuses a cgroup that already holds processes (another container's,
/// which a failed create's cleanup would otherwise kill) or is frozen (the
/// init would hang in it), as runc does; checked before anything is made.
fn refuse_a_cgroup_in_use(cgroup: &dyn crate::cgroups::CgroupManager, id: &str, path: &Path) -> Result<()> {
    let pids = cgroup.pids().unwrap_or_default();
    if !pids.is_empty() {
        return Err(Error::precondition(
            id,
            format!(
                "container's cgroup is not empty: {} process(es) found in {}",
                pids.len(),
                path.display()
            ),
        ));
    }
    if cgroup.frozen().unwrap_or(false) {
        return Err(Error::precondition(
            id,
            format!("container's cgroup unexpectedly frozen: {}", path.display()),
        ));
    }
    Ok(())
}

/// Creates the container; returns its state.
pub fn create(globals: &Globals, options: &CreateOptions) -> Result<State> {
    state::validate_id(&options.id)?;
    let bundle = load_bundle(&options.bundle)?;
    let spec = &bundle.spec;
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    let console = crate::terminal::console_connection(
        options.console.as_ref(),
        options.console_socket.as_deref(),
        terminal,
        "process.terminal",
    )?;
    hooks::check(spec)?;
    if let Some(process) = spec.process() {
        for warning in crate::security_labels::unsupported(process) {
            (globals.warn)(&warning);
        }
    }
    if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        crate::seccomp::build(profile)?;
        crate::seccomp::check_notify(profile)?;
    }
    let plan = namespaces::plan(spec)?;
    globals.step(|| format!("create {}: spec read from {}", options.id, bundle.dir.display()));

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&globals.root)
        .map_err(|e| Error::io("creating the state root", &globals.root, &e))?;
    let state_dir = state::dir(&globals.root, &options.id);
    match std::fs::DirBuilder::new().mode(0o700).create(&state_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Error::already_exists(&options.id)),
        Err(e) => return Err(Error::io("creating the state directory", &state_dir, &e)),
    }
    let mut cleanup = Cleanup {
        state_dir: state_dir.clone(),
        init_pid: None,
        cgroup: None,
        armed: true,
        _root: &globals.root,
    };

    let cgroup_path = crate::cgroups::container_path(
        spec.linux().as_ref().and_then(|l| l.cgroups_path().as_deref()),
        &options.id,
        globals.systemd_cgroup,
    );
    let cgroup: Rc<dyn crate::cgroups::CgroupManager> = Rc::from(manager_for(&cgroup_path)?);
    refuse_a_cgroup_in_use(cgroup.as_ref(), &options.id, &cgroup_path)?;
    globals.step(|| format!("create {}: cgroup {}", options.id, cgroup_path.display()));

    let (mut ours, theirs) = Channel::pair()?;
    let child_fd = theirs.raw_fd();
    let cgroup_ns = plan.new_cgroup;
    let mappings = crate::user_namespace::plan(spec, plan.new_user)?;
    // With a new user namespace, the init unshares it first and every other
    // namespace after its maps are written (see user_namespace); otherwise
    // they are unshared here, before the init's exec.
    let user_namespace = mappings.as_ref().map(|mappings| UserNamespaceSetup {
        mappings: mappings.clone(),
        unshare: plan.unshare.bits(),
        time_offsets: plan.time_offsets.clone(),
    });
    let (unshare, time_offsets) = if user_namespace.is_some() {
        (CloneFlags::empty(), Vec::new())
    } else {
        (plan.unshare, plan.time_offsets.clone())
    };
    let joins: Vec<(i32, i32)> = plan
        .join
        .iter()
        .map(|(fd, kind)| (std::os::fd::AsRawFd::as_raw_fd(fd), kind.bits()))
        .collect();
    let binary = crate::self_protection::ProtectedBinary::current()?;
    let mut command = Command::new(binary.path());
    if let Some(stdio) = &options.stdio {
        stdio.attach(&mut command)?;
    }
    command.arg(INIT_ARG).env(INIT_FD_ENV, child_fd.to_string());
    let console_fd = console.as_ref().map(std::os::fd::AsRawFd::as_raw_fd).unwrap_or(-1);
    if console_fd >= 0 {
        command.env(crate::terminal::CONSOLE_FD_ENV, console_fd.to_string());
    }
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls (setns, unshare, mount, open, write,
    // close, fcntl) on descriptors and values prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            for (fd, kind) in &joins {
                if libc::setns(*fd, *kind) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if !unshare.is_empty() && libc::unshare(unshare.bits()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A mount namespace of its own (the container's, or a throwaway
            // one when the user namespace comes first) for the read-only
            // binary.
            if !unshare.contains(CloneFlags::CLONE_NEWNS) && libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Between fork and exec, as bind_read_only requires.
            binary.bind_read_only()?;
            if !time_offsets.is_empty() {
                // Only before a process enters the new time namespace (this
                // one does at its exec).
                let file = c"/proc/self/timens_offsets";
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, time_offsets.as_ptr().cast(), time_offsets.len());
                libc::close(fd);
                if written != time_offsets.len() as isize {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::fcntl(child_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if console_fd >= 0 && libc::fcntl(console_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut intermediate = command
        .spawn()
        .map_err(|e| Error::io("starting the container's init (namespaces)", "/proc/self/exe", &e))?;
    drop(theirs);
    drop(plan);
    drop(console);
    // The cgroup is made while the init starts; the init enters it itself
    // and forks the container's pid 1 there (see cgroups::join).
    cleanup.init_pid = Some(intermediate.id() as i32);
    globals.step(|| format!("create {}: init started (pid {})", options.id, intermediate.id()));
    cleanup.cgroup = Some(Rc::clone(&cgroup));
    let cgroup_entry = cgroup.create()?;
    // The device rules before the init is configured: it opens its console
    // and makes device nodes while the other limits are set, and on cgroup
    // v1 the change from the parent's allow-all to the container's list
    // passes through deny-all.
    let mut device_rules = LinuxResources::default();
    device_rules.set_devices(Some(crate::cgroups::devices::container_rules(spec)));
    cgroup.set(&device_rules)?;

    let config = InitConfig {
        id: options.id.clone(),
        spec: spec.clone(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        state_dir: state_dir.clone(),
        no_pivot: options.no_pivot,
        cgroups: cgroup.mounts(),
        cgroup_entry,
        cgroup_ns,
        user_namespace,
        preserve_fds: options.preserve_fds,
        debug: globals.debug.is_some(),
    };
    ours.send(&ToInit::Config(Box::new(config)))?;
    // The container's pid 1 shares the channel with its parent and may ask
    // for a host bind or its hooks before the parent reports its pid; it
    // waits for the answer, so at most one such request comes early, and
    // it waits for the pid.
    let mut early_request = None;
    let pid = loop {
        match ours.recv_from_init(globals.debug)? {
            Some(FromInit::Pid(pid)) => break pid,
            Some(request) if host_binds::is_request(&request) || matches!(request, FromInit::RunHooks) => {
                early_request = Some(request)
            }
            Some(FromInit::MapUsers) => {
                let Some(mappings) = &mappings else {
                    return Err(Error::other(
                        "creating the container",
                        "the init asked for maps it has no use for",
                    ));
                };
                globals.step(|| format!("create {}: writing the user namespace's maps", options.id));
                crate::user_namespace::write(intermediate.id() as i32, mappings)?;
                ours.send(&ToInit::UsersMapped)?;
            }
            Some(FromInit::Failed(e)) => return Err(e),
            Some(other) => {
                return Err(Error::other(
                    "creating the container",
                    format!("the init sent {other:?} before its pid"),
                ));
            }
            None => {
                return Err(Error::other(
                    "creating the container",
                    "the init exited before reporting",
                ));
            }
        }
    };
    cleanup.init_pid = Some(pid);
    // An early host bind is answered now; early hooks run once the limits
    // are set, as hooks asked for later do.
    let mut early_hooks = None;
    match early_request {
        Some(FromInit::RunHooks) => early_hooks = Some(FromInit::RunHooks),
        Some(request) => host_binds::answer(request, pid, &mut ours)?,
        None => {}
    }
    let status = intermediate
        .wait()
        .map_err(|e| Error::io("waiting for the init", "/proc/self/exe", &e))?;
    if !status.success() {
        return Err(Error::other(
            "creating the container",
            format!("the init failed ({status})"),
        ));
    }

    let mut resources = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    // The device rules are in place already.
    resources.set_devices(None);
    cgroup.set(&resources)?;
    globals.step(|| format!("create {}: cgroup limits set for pid {pid}", options.id));
    // The init builds the container meanwhile; if it already failed, its
    // report is waiting on the channel, and says more than the closed pipe.
    if let Err(send_error) = ours.send(&ToInit::Go) {
        return Err(match ours.recv_from_init(globals.debug) {
            Ok(Some(FromInit::Failed(e))) => e,
            _ => send_error,
        });
    }
    loop {
        let message = match early_hooks.take() {
            Some(hooks) => Some(hooks),
            None => ours.recv_from_init(globals.debug)?,
        };
        match message {
            Some(FromInit::Created) => break,
            Some(request) if host_binds::is_request(&request) => {
                globals.step(|| format!("create {}: {request:?} for the init", options.id));
                host_binds::answer(request, pid, &mut ours)?;
            }
            Some(FromInit::RunHooks) => {
                globals.step(|| format!("create {}: running prestart and createRuntime hooks", options.id));
                let state = HookState::new(spec, &options.id, "creating", Some(pid), &bundle.dir);
                hooks::run(hooks::Kind::Prestart, spec, &state)?;
                hooks::run(hooks::Kind::CreateRuntime, spec, &state)?;
                ours.send(&ToInit::HooksDone)?;
            }
            Some(FromInit::Failed(e)) => return Err(e),
            _ => {
                return Err(Error::other(
                    "creating the container",
                    "the container's init exited while building the container",
                ));
            }
        }
    }

    let pid_start = state::process_start(pid).map(|(start, _)| start).unwrap_or(0);
    let state = State {
        id: options.id.clone(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        pid,
        pid_start,
        created: state::now_rfc3339(),
        cgroup_path,
        systemd_cgroup: globals.systemd_cgroup,
        annotations: spec.annotations().clone().unwrap_or_default(),
        owner: nix::unistd::getuid().to_string(),
    };
    state.save(&globals.root)?;
    if let Some(pid_file) = &options.pid_file {
        super::write_pid_file(pid_file, pid)?;
    }
    cleanup.armed = false;
    globals.step(|| format!("create {}: created, init pid {pid} waits for start", options.id));
    Ok(state)
}
