//! Each command, over the runtime library.

use std::io::Write as _;
use std::path::Path;

use berth_runtime::container::create::{CreateOptions, create};
use berth_runtime::container::{Globals, delete, kill, pause, query, start, update};
use berth_runtime::error::{Error, Result};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::WaitStatus;

use crate::args::{Cli, Command, CreateArgs, Format};
use crate::foreground_terminal::{self, Pending, Proxy, Resizer};

fn out(text: &str) -> Result<()> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Error::io("writing", "stdout", &e))
}

fn options(args: &CreateArgs) -> CreateOptions {
    CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        pid_file: args.pid_file.clone(),
        console_socket: args.console_socket.clone(),
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
        preserve_fds: args.preserve_fds,
        ..CreateOptions::default()
    }
}

/// Runs the command line; returns the exit code.
pub fn run(cli: &Cli) -> Result<i32> {
    let globals = Globals {
        root: cli.root.clone(),
        systemd_cgroup: cli.systemd_cgroup,
        warn: crate::log::warning,
        debug: cli.debug.then_some(crate::log::debug as fn(&str)),
    };
    if cli.version {
        out(&format!(
            "berth-runc version {}\ncommit: {}\nspec: 1.0.2-dev\nlibseccomp: {}\n",
            env!("CARGO_PKG_VERSION"),
            env!("BERTH_REVISION"),
            libseccomp_version()
        ))?;
        return Ok(0);
    }
    let Some(command) = &cli.command else {
        return Err(Error::invalid("command", "no command given (see --help)"));
    };
    match command {
        Command::Create { args, .. } => create(&globals, &options(args)).map(|_| 0),
        Command::Exec(args) => {
            let forwarded = if args.detach { None } else { Some(become_waiter()?) };
            crate::exec_command::run(&globals, args, |pid, terminal| match forwarded {
                Some(signals) => {
                    let proxy = terminal.map(Pending::receive).transpose()?;
                    let code = wait_forwarding(pid, signals, proxy.as_ref().map(Proxy::resizer));
                    if let Some(proxy) = proxy {
                        proxy.finish();
                    }
                    code
                }
                None => Ok(0),
            })
        }
        Command::Start { id } => start::start(&globals, id).map(|()| 0),
        Command::Run { args, detach, keep } => run_container(&globals, args, *detach, *keep),
        Command::State { id } => {
            let report = query::state(&globals, id)?;
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            ))?;
            Ok(0)
        }
        Command::Kill { all, id, signal } => kill::kill(&globals, id, kill::parse_signal(signal)?, *all).map(|()| 0),
        Command::Delete { force, id } => delete::delete(&globals, id, *force).map(|()| 0),
        Command::Pause { id } => pause::pause(&globals, id).map(|()| 0),
        Command::Resume { id } => pause::resume(&globals, id).map(|()| 0),
        Command::Update(args) => {
            let resources = crate::update_command::resources(args)?;
            update::update(&globals, &args.id, &resources).map(|()| 0)
        }
        Command::List { format, quiet } => list(&globals, *format, *quiet).map(|()| 0),
        Command::Ps { format, id, ps_args } => {
            out(&crate::ps_command::render(&globals, id, *format, ps_args)?)?;
            Ok(0)
        }
        Command::Events { stats, interval, id } => crate::events_command::run(&globals, id, *stats, interval),
        Command::Checkpoint { args } | Command::Restore { args } => {
            check_parent_path(args)?;
            Err(Error::other(
                "checkpoint and restore",
                "berth-runc does not checkpoint containers (no CRIU support)",
            ))
        }
        Command::Spec { bundle } => write_spec(bundle).map(|()| 0),
        Command::Features => {
            out(&format!("{}\n", features()))?;
            Ok(0)
        }
    }
}

/// `--parent-path` is read as runc reads it (relative to the image path,
/// an existing directory) so a bad one is named before anything else.
fn check_parent_path(args: &[String]) -> Result<()> {
    let value = |name: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{name}="))
                .map(str::to_string)
                .or_else(|| (a == name).then(|| args.get(i + 1).cloned().unwrap_or_default()))
        })
    };
    let Some(parent) = value("--parent-path") else {
        return Ok(());
    };
    if Path::new(&parent).is_absolute() {
        return Err(Error::invalid("--parent-path", "must be relative to --image-path"));
    }
    let image = value("--image-path").unwrap_or_else(|| "checkpoint".to_string());
    let resolved = Path::new(&image).join(&parent);
    if !resolved.is_dir() {
        return Err(Error::invalid(
            "--parent-path",
            format!("{} is not a directory", resolved.display()),
        ));
    }
    Ok(())
}

fn list(globals: &Globals, format: Format, quiet: bool) -> Result<()> {
    let reports = query::list(globals)?;
    if quiet {
        let ids: String = reports.iter().map(|r| format!("{}\n", r.id)).collect();
        return out(&ids);
    }
    match format {
        Format::Json => out(&format!("{}\n", serde_json::to_string(&reports).unwrap_or_default())),
        Format::Table => {
            let mut text = format!(
                "{:<12} {:<8} {:<10} {:<40} {:<30} {}\n",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"
            );
            for r in reports {
                text.push_str(&format!(
                    "{:<12} {:<8} {:<10} {:<40} {:<30} {}\n",
                    r.id,
                    r.pid,
                    r.status,
                    r.bundle.display(),
                    r.created,
                    r.owner
                ));
            }
            out(&text)
        }
    }
}

fn write_spec(bundle: &Path) -> Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(Error::precondition(
            "config.json",
            format!("{} exists already", path.display()),
        ));
    }
    std::fs::write(&path, berth_runtime::spec::default_spec_json() + "\n").map_err(|e| Error::io("writing", &path, &e))
}

/// The libseccomp this binary runs with (empty if it cannot tell).
fn libseccomp_version() -> String {
    libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default()
}

fn features() -> String {
    let mut capabilities: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    capabilities.sort();
    let libseccomp = libseccomp_version();
    serde_json::to_string_pretty(&serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "lazytime", "loud",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nolazytime", "nomand", "norelatime",
            "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared",
            "rslave", "runbindable", "rw", "shared", "silent", "slave", "strictatime", "suid", "sync",
            "tmpcopyup", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"],
            "capabilities": capabilities,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": [
                    "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64",
                    "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32",
                    "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
                    "SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"
                ]
            },
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true}
        },
        "annotations": {
            "io.github.seccomp.libseccomp.version": libseccomp,
            "org.berth.runtime.version": env!("CARGO_PKG_VERSION")
        }
    }))
    .unwrap_or_default()
}

/// The signals `run` passes on to the container.
const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Makes this process the one that reaps the container's processes (their
/// own parent exits), and blocks the signals to pass on, before any thread
/// starts, so every thread inherits the mask. Returns those signals.
fn become_waiter() -> Result<SigSet> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut forwarded = SigSet::empty();
    for signal in FORWARDED {
        forwarded.add(signal);
    }
    forwarded
        .thread_block()
        .map_err(|e| Error::nix("blocking signals", "sigprocmask", e))?;
    Ok(forwarded)
}

/// Waits for `pid`, passing it the signals this process receives (but
/// for SIGWINCH, which resizes the terminal when berth-runc holds it); its
/// exit code (128 + the signal when killed).
fn wait_forwarding(pid: i32, forwarded: SigSet, terminal: Option<Resizer>) -> Result<i32> {
    let pid = nix::unistd::Pid::from_raw(pid);
    std::thread::spawn(move || {
        while let Ok(signal) = forwarded.wait() {
            match (&terminal, signal) {
                (Some(terminal), Signal::SIGWINCH) => terminal.resize(),
                _ => {
                    let _ = nix::sys::signal::kill(pid, signal);
                }
            }
        }
    });
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::nix("waiting for the process", format!("pid {pid}"), e)),
        }
    }
}

/// `run`: create, start, and (unless detached) wait, pass signals on, and
/// delete the container when it exits; the exit code is the container's.
fn run_container(globals: &Globals, args: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    // The container's init is reparented to us when its first process
    // exits, so we can wait for it.
    let forwarded = if detach { None } else { Some(become_waiter()?) };
    let mut options = options(args);
    // In the foreground with a terminal and nowhere to send it, the
    // terminal is ours to pass on, as with runc.
    let terminal = if !detach && options.console_socket.is_none() && spec_wants_terminal(&args.bundle) {
        let (console, pending) = foreground_terminal::pair()?;
        options.console = Some(console);
        Some(pending)
    } else {
        None
    };
    let state = create(globals, &options)?;
    let proxy = match terminal.map(Pending::receive).transpose() {
        Ok(proxy) => proxy,
        Err(e) => {
            let _ = delete::delete(globals, &args.id, true);
            return Err(e);
        }
    };
    if let Err(e) = start::start(globals, &args.id) {
        let _ = delete::delete(globals, &args.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let code = wait_forwarding(
        state.pid,
        forwarded.unwrap_or_else(SigSet::empty),
        proxy.as_ref().map(Proxy::resizer),
    );
    if let Some(proxy) = proxy {
        proxy.finish();
    }
    let code = code?;
    if !keep {
        delete::delete(globals, &args.id, true)?;
    }
    Ok(code)
}

/// Whether the bundle's spec asks for a terminal (an unreadable spec is
/// left for create to report).
fn spec_wants_terminal(bundle: &Path) -> bool {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .is_some_and(|spec| spec["process"]["terminal"].as_bool() == Some(true))
}
