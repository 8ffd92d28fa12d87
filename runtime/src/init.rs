//! The container's init, in two processes.
//!
//! The runtime never forks itself (it may have threads): it spawns its
//! own binary again as `<exe> init`, with the new namespaces unshared just
//! before that exec. That process is single-threaded, so it may fork: its
//! child is the container's pid 1 (PID and time namespaces only apply to
//! children), forked inside the container's cgroup; it reports the
//! child's pid and exits. The child waits until its limits are set, builds
//! the container, reports, then waits on the start socket and execs the
//! user's command.
//!
//! Every binary that creates containers with this library calls
//! [`run_if_init`] first thing in `main`.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sched::CloneFlags;
use oci_spec::runtime::LinuxNamespaceType;

use crate::cgroups::join::{Forked, fork_into};
use crate::error::{Error, Result};
use crate::hooks::{self, HookState};
use crate::rootfs::{self, RootfsConfig};
use crate::state::EXEC_SOCKET;
use crate::sync::{Channel, ExecConfig, FromInit, InitConfig, ToInit};
use crate::syscalls::{Linux, Syscalls};
use crate::{namespaces, process};

/// The environment variable carrying the sync channel's descriptor.
pub const INIT_FD_ENV: &str = "_BERTH_INIT_FD";
/// The argument that makes a binary the init.
pub const INIT_ARG: &str = "init";

/// If this process was started as a container init, becomes it and never
/// returns; otherwise returns at once.
pub fn run_if_init() {
    let mut args = std::env::args_os();
    let is_init = args.nth(1).is_some_and(|a| a == INIT_ARG) && std::env::var_os(INIT_FD_ENV).is_some();
    if !is_init {
        return;
    }
    let code = match intermediate() {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code);
}

fn inherited_channel() -> Result<Channel> {
    let fd: i32 = std::env::var(INIT_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::other("init", format!("{INIT_FD_ENV} is not a descriptor")))?;
    // SAFETY: the runtime passed this descriptor for us alone; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain fcntl on our own descriptor: close it on the final exec.
    unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: single-threaded at this point (just exec'd); nothing reads the
    // environment concurrently.
    unsafe { std::env::remove_var(INIT_FD_ENV) };
    Ok(Channel::from_fd(fd))
}

/// The first process: reads the configuration, forks the container's pid
/// 1, reports its pid, exits.
fn intermediate() -> Result<()> {
    let mut channel = inherited_channel()?;
    let console = crate::terminal::inherited_socket();
    let config = match channel.recv::<ToInit>()? {
        Some(ToInit::Config(config)) => config,
        Some(ToInit::Exec(exec)) => return exec_intermediate(&mut channel, &exec, console.as_ref()),
        Some(ToInit::HostBind(bind)) => {
            let outcome = crate::container::host_binds::run_helper(&bind);
            if let Err(e) = &outcome {
                let _ = channel.send(&FromInit::Failed(e.clone()));
            }
            return outcome;
        }
        _ => return Err(Error::other("init", "no configuration received")),
    };
    let mut before_fork: Box<dyn FnOnce() -> Result<()>> = Box::new(|| Ok(()));
    if let Some(setup) = &config.user_namespace {
        if let Err(e) = make_user_namespace(&mut channel) {
            let _ = channel.send(&FromInit::Failed(e.clone()));
            return Err(e);
        }
        // The cgroup files are opened with the host's credentials first.
        before_fork = Box::new(move || unshare_owned_namespaces(setup));
    }
    // SAFETY: this process is single-threaded (freshly exec'd, no threads
    // started), so it may move only itself and its child may run any code.
    match unsafe { fork_into(&config.cgroup_entry, before_fork) } {
        Ok(Forked::Child) => {
            let outcome = container(&mut channel, &config, console.as_ref());
            if let Err(e) = outcome {
                let _ = channel.send(&FromInit::Failed(e));
            }
            std::process::exit(1);
        }
        Ok(Forked::Parent(child)) => {
            // Where a test lets the container's pid 1 speak first.
            berth_core::failpoint::check("runtime.init.pid-reported")
                .map_err(|e| Error::other("reporting the init's pid", e.to_string()))?;
            channel.send(&FromInit::Pid(child))
        }
        Err(err) => {
            let _ = channel.send(&FromInit::Failed(err.clone()));
            Err(err)
        }
    }
}

/// Unshares a user namespace and waits for the runtime to map it.
fn make_user_namespace(channel: &mut Channel) -> Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|e| Error::nix("creating the user namespace", "unshare", e))?;
    channel.send(&FromInit::MapUsers)?;
    match channel.recv::<ToInit>()? {
        Some(ToInit::UsersMapped) => Ok(()),
        _ => Err(Error::other(
            "init",
            "the runtime went away before mapping the user namespace",
        )),
    }
}

/// Unshares the namespaces a new user namespace owns, then sets the time
/// namespace's clock offsets (before any process enters it).
fn unshare_owned_namespaces(setup: &crate::sync::UserNamespaceSetup) -> Result<()> {
    let flags = CloneFlags::from_bits_retain(setup.unshare);
    if !flags.is_empty() {
        nix::sched::unshare(flags).map_err(|e| Error::nix("creating the container's namespaces", "unshare", e))?;
    }
    if !setup.time_offsets.is_empty() {
        let path = "/proc/self/timens_offsets";
        std::fs::write(path, &setup.time_offsets).map_err(|e| Error::io("setting linux.timeOffsets", path, &e))?;
    }
    Ok(())
}

/// The first process of an exec: enters the mount namespace, forks the
/// process into the container's cgroup (and, being forked, its pid
/// namespace), reports its pid, exits.
fn exec_intermediate(channel: &mut Channel, config: &ExecConfig, console: Option<&OwnedFd>) -> Result<()> {
    // The cgroup files are opened on the host's side, then the container's
    // mount and user namespaces are entered.
    let enter =
        || crate::container::exec::enter_mount_and_user_namespaces(config.mount_namespace_fd, config.user_namespace_fd);
    // SAFETY: this process is single-threaded (freshly exec'd, no threads
    // started), so it may move only itself and its child may run any code.
    match unsafe { fork_into(&config.cgroup_entry, enter) } {
        Ok(Forked::Child) => {
            let err = exec_process(config, console, channel);
            let _ = channel.send(&FromInit::Failed(err));
            std::process::exit(1);
        }
        Ok(Forked::Parent(child)) => {
            // Where a test lets the process speak first.
            berth_core::failpoint::check("runtime.init.pid-reported")
                .map_err(|e| Error::other("reporting the process's pid", e.to_string()))?;
            channel.send(&FromInit::Pid(child))
        }
        Err(err) => {
            let _ = channel.send(&FromInit::Failed(err.clone()));
            Err(err)
        }
    }
}

/// The exec'd process: terminal, limits, working directory, identity,
/// then the command; returns only on failure.
fn exec_process(config: &ExecConfig, console: Option<&OwnedFd>, channel: &mut Channel) -> Error {
    let process = &config.process;
    let sync = channel.raw_fd();
    // Shared by the seccomp hand-off and the step reports between.
    let channel = RefCell::new(channel);
    let mut hand_off = |listener| {
        channel.borrow_mut().send(&FromInit::SeccompListener(listener))?;
        crate::seccomp_agent::await_hand_off(sync)
    };
    let step = |message: &'static str| channel.borrow_mut().step(config.debug, || message.to_string());
    let ready = (|| {
        if let Some(socket) = console {
            crate::terminal::attach(socket, false, crate::terminal::requested_size(process))?;
        }
        process::apply_limits(process)?;
        process::enter_cwd(process)?;
        let exec = process::prepare(process)?;
        step("exec: in the container's namespaces and cgroup, becoming its user");
        process::become_user(process, config.seccomp.as_ref(), &mut hand_off)?;
        process::clean_inheritance(config.preserve_fds)?;
        crate::security_labels::apply(process)?;
        // The last word before the filter, which may refuse writes.
        step("exec: loading seccomp, then executing the command");
        process::load_seccomp_last(process, config.seccomp.as_ref(), &mut hand_off)?;
        Ok(exec)
    })();
    match ready {
        Ok(exec) => process::exec(&exec),
        Err(e) => e,
    }
}

/// Binds the start socket in the state directory (before pivot_root hides
/// it); a relative path keeps clear of the socket path length limit.
fn listen_for_start(state_dir: &Path) -> Result<UnixListener> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("reading the working directory", ".", &e))?;
    nix::unistd::chdir(state_dir).map_err(|e| Error::nix("entering the state directory", state_dir, e))?;
    let listener = UnixListener::bind(EXEC_SOCKET)
        .map_err(|e| Error::io("creating the start socket", state_dir.join(EXEC_SOCKET), &e));
    nix::unistd::chdir(&cwd).map_err(|e| Error::nix("leaving the state directory", &cwd, e))?;
    listener
}

/// Waits for the runtime's message that `wanted` accepts, noting a `Go`
/// (limits set) that comes first.
fn await_runtime(channel: &mut Channel, limits_set: &Cell<bool>, wanted: fn(&ToInit) -> bool) -> Result<ToInit> {
    loop {
        match channel.recv::<ToInit>()? {
            Some(ToInit::Go) => {
                limits_set.set(true);
                if wanted(&ToInit::Go) {
                    return Ok(ToInit::Go);
                }
            }
            Some(message) if wanted(&message) => return Ok(message),
            Some(other) => return Err(Error::other("init", format!("unexpected message {other:?}"))),
            None => {
                return Err(Error::other(
                    "init",
                    "the runtime went away while the container was built",
                ));
            }
        }
    }
}

/// The init's [`rootfs::HostBinds`]: each request goes to the runtime
/// (see `container::host_binds`), which answers on the channel.
#[derive(Debug)]
struct AskTheRuntime<'a, 'c> {
    channel: &'a RefCell<&'c mut Channel>,
    limits_set: &'a Cell<bool>,
}

impl rootfs::HostBinds for AskTheRuntime<'_, '_> {
    fn kind_of_source(&self, source: &Path) -> Result<Option<crate::syscalls::FileKind>> {
        let mut channel = self.channel.borrow_mut();
        channel.send(&FromInit::LookUpSource(source.to_path_buf()))?;
        match await_runtime(&mut channel, self.limits_set, |m| {
            matches!(m, ToInit::SourceLookedUp(_))
        })? {
            ToInit::SourceLookedUp(kind) => kind,
            other => Err(Error::other("init", format!("unexpected message {other:?}"))),
        }
    }

    fn bind(&self, source: &Path, dest: &Path, flags: nix::mount::MsFlags) -> Result<()> {
        let mut channel = self.channel.borrow_mut();
        channel.send(&FromInit::BindSource {
            source: source.to_path_buf(),
            dest: dest.to_path_buf(),
            flags: flags.bits(),
        })?;
        match await_runtime(&mut channel, self.limits_set, |m| matches!(m, ToInit::SourceBound(_)))? {
            ToInit::SourceBound(None) => Ok(()),
            ToInit::SourceBound(Some(e)) => Err(e),
            other => Err(Error::other("init", format!("unexpected message {other:?}"))),
        }
    }
}

/// The container's pid 1: builds everything, then waits for start.
///
/// It was forked inside its cgroup, so it builds the container while the
/// runtime sets the limits; it needs their `Go` only before the runtime's
/// hooks run and before it reports the container created.
fn container(channel: &mut Channel, config: &InitConfig, console: Option<&OwnedFd>) -> Result<()> {
    let limits_set = Cell::new(false);
    if config.cgroup_ns {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| Error::nix("creating the cgroup namespace", "unshare", e))?;
    }
    // Bound with the host's credentials: the state directory is the
    // runtime's, closed to the namespace's root.
    let listener = listen_for_start(&config.state_dir)?;
    channel.step(config.debug, || {
        "init: in the container's cgroup, start socket bound".into()
    });
    if let Some(setup) = &config.user_namespace {
        crate::user_namespace::become_root(&setup.mappings)?;
        channel.step(config.debug, || "init: root in the new user namespace".into());
    }
    let sys = Linux;
    let spec = &config.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::invalid("process", "the spec has no process"))?;

    if namespaces::has(spec, LinuxNamespaceType::Uts) {
        if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            sys.sethostname(hostname)?;
        }
        if let Some(domain) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            sys.setdomainname(domain)?;
        }
    }
    let unsealed = if namespaces::has(spec, LinuxNamespaceType::Mount) {
        // Shared by the hooks' and the host binds' exchanges with the runtime.
        let shared = RefCell::new(&mut *channel);
        let host_binds = AskTheRuntime {
            channel: &shared,
            limits_set: &limits_set,
        };
        let rootfs_config = RootfsConfig {
            spec,
            rootfs: &config.rootfs,
            bundle: &config.bundle,
            cgroups: &config.cgroups,
            cgroup_ns: config.cgroup_ns,
            user_ns: config.user_namespace.is_some(),
            no_pivot: config.no_pivot,
            host_binds: Some(&host_binds),
        };
        let runtime_hooks = hooks::has(hooks::Kind::Prestart, spec) || hooks::has(hooks::Kind::CreateRuntime, spec);
        let mut create_hooks = || {
            if runtime_hooks {
                let mut channel = shared.borrow_mut();
                channel.send(&FromInit::RunHooks)?;
                await_runtime(&mut channel, &limits_set, |m| matches!(m, ToInit::HooksDone))?;
            }
            let state = HookState::new(
                spec,
                &config.id,
                "creating",
                Some(nix::unistd::getpid().as_raw()),
                &config.bundle,
            );
            // createContainer hooks run from the container's root (before
            // pivot_root), so a relative path names what is in it, as with runc.
            let previous = std::env::current_dir().ok();
            nix::unistd::chdir(config.rootfs.as_path())
                .map_err(|e| Error::nix("entering the root filesystem", &config.rootfs, e))?;
            let ran = hooks::run(hooks::Kind::CreateContainer, spec, &state);
            if let Some(previous) = previous {
                let _ = nix::unistd::chdir(previous.as_path());
            }
            ran
        };
        let unsealed = rootfs::setup(&sys, &rootfs_config, &mut create_hooks)?;
        shared.into_inner().step(config.debug, || {
            format!("init: mounts made, root is now {}", config.rootfs.display())
        });
        unsealed
    } else {
        return Err(Error::invalid(
            "linux.namespaces",
            "a container needs a mount namespace of its own",
        ));
    };
    for (key, value) in spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().as_ref())
        .into_iter()
        .flatten()
    {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        sys.write_file(&path, value)
            .map_err(|e| e.context(format!("setting linux.sysctl {key:?}")))?;
    }
    // After the sysctls, which write under /proc/sys.
    rootfs::masks::make_read_only(spec)?;
    rootfs::masks::mask(spec)?;
    channel.step(config.debug, || {
        "init: sysctls written, paths masked and read-only".into()
    });
    if let Some(socket) = console {
        crate::terminal::attach(socket, true, crate::terminal::requested_size(process))?;
    }
    rootfs::seal(&sys, unsealed)?;
    process::apply_limits(process)?;
    process::enter_cwd(process)?;
    let exec = process::prepare(process)?;
    channel.step(config.debug, || {
        "init: root sealed, limits and working directory set".into()
    });

    if !limits_set.get() {
        await_runtime(channel, &limits_set, |m| matches!(m, ToInit::Go))?;
    }
    channel.step(config.debug, || {
        "init: built, reporting created and waiting for start".into()
    });
    channel.send(&FromInit::Created)?;

    // Wait for `start`: one connection, one byte.
    let (mut connection, _) = listener
        .accept()
        .map_err(|e| Error::io("waiting for start", EXEC_SOCKET, &e))?;
    let mut byte = [0u8; 1];
    std::io::Read::read_exact(&mut connection, &mut byte)
        .map_err(|e| Error::io("waiting for start", EXEC_SOCKET, &e))?;
    drop(listener);

    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let start = connection.as_raw_fd();
    let mut hand_off = |listener| crate::seccomp_agent::send_to_runtime(start, listener);
    let ready = process::become_user(process, seccomp, &mut hand_off)
        .and_then(|()| {
            let state = HookState::new(
                spec,
                &config.id,
                "created",
                Some(nix::unistd::getpid().as_raw()),
                &config.bundle,
            );
            hooks::run(hooks::Kind::StartContainer, spec, &state)
        })
        .and_then(|()| process::clean_inheritance(config.preserve_fds))
        .and_then(|()| crate::security_labels::apply(process))
        .and_then(|()| process::load_seccomp_last(process, seccomp, &mut hand_off));
    let failure = match ready {
        Ok(()) => process::exec(&exec),
        Err(e) => e,
    };
    // The start command is still connected: tell it why nothing runs.
    let text = serde_json::to_vec(&failure).unwrap_or_default();
    let _ = std::io::Write::write_all(&mut connection, &text);
    Err(failure)
}
