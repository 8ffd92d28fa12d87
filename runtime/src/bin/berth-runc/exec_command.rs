//! `exec`: the process from `--process` or from the flags over the
//! container's own, then (unless detached) waiting for it.

use std::path::Path;

use berth_runtime::container::exec::{ExecOptions, exec};
use berth_runtime::container::{Globals, bundle_spec, load};
use berth_runtime::error::{Error, Result};
use oci_spec::runtime::{Capability, Process, UserBuilder};

use crate::args::ExecArgs;
use crate::foreground_terminal::{self, Pending};

/// Reads `--process`.
fn process_file(path: &Path) -> Result<Process> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading --process", path, &e))?;
    let bad = |e: serde_json::Error| Error::invalid("--process", format!("{}: {e}", path.display()));
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    // A process without a user runs as root, as with runc.
    if let Some(object) = value.as_object_mut() {
        object
            .entry("user")
            .or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
    }
    serde_json::from_value(value).map_err(bad)
}

/// `uid[:gid]`.
fn parse_user(text: &str) -> Result<(u32, Option<u32>)> {
    let bad = || Error::invalid("--user", format!("{text:?} is not uid[:gid]"));
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (text, None),
    };
    let uid = uid.parse().map_err(|_| bad())?;
    let gid = gid.map(|g| g.parse().map_err(|_| bad())).transpose()?;
    Ok((uid, gid))
}

/// The process the flags describe, over the container's own.
fn process_from_flags(globals: &Globals, args: &ExecArgs) -> Result<Process> {
    if args.command.is_empty() {
        return Err(Error::invalid("command", "exec needs a command (or --process)"));
    }
    let (state, _, _) = load(globals, &args.id)?;
    let mut process = bundle_spec(&state)
        .and_then(|spec| spec.process().clone())
        .unwrap_or_default();
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    let mut env = process.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    process.set_env(Some(env));
    if args.user.is_some() || !args.additional_gids.is_empty() {
        let current = process.user().clone();
        let (uid, gid) = match &args.user {
            Some(text) => parse_user(text)?,
            None => (current.uid(), None),
        };
        let user = UserBuilder::default()
            .uid(uid)
            .gid(gid.unwrap_or(current.gid()))
            .additional_gids(args.additional_gids.clone())
            .build()
            .map_err(|e| Error::invalid("--user", e.to_string()))?;
        process.set_user(user);
    }
    if !args.caps.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for (i, name) in args.caps.iter().enumerate() {
            // oci-spec names capabilities without the CAP_ prefix.
            let cap: Capability = name
                .trim_start_matches("CAP_")
                .parse()
                .map_err(|_| Error::invalid(format!("--cap[{i}]"), format!("unknown capability {name:?}")))?;
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
                caps.ambient().clone(),
            ]
            .iter()
            .enumerate()
            {
                let mut updated = set.1.clone().unwrap_or_default();
                updated.insert(cap);
                match set.0 {
                    0 => caps.set_bounding(Some(updated)),
                    1 => caps.set_effective(Some(updated)),
                    2 => caps.set_permitted(Some(updated)),
                    _ => caps.set_ambient(Some(updated)),
                };
            }
        }
        process.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &args.apparmor {
        process.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &args.process_label {
        process.set_selinux_label(Some(label.clone()));
    }
    Ok(process)
}

/// Runs `exec`; the exit code is the process's when waited for. `wait`
/// gets the pid, and the terminal to pass on when the process has one and
/// no `--console-socket` takes it (only in the foreground).
pub fn run(globals: &Globals, args: &ExecArgs, wait: impl FnOnce(i32, Option<Pending>) -> Result<i32>) -> Result<i32> {
    let mut process = match &args.process {
        Some(path) => process_file(path)?,
        None => process_from_flags(globals, args)?,
    };
    if args.tty {
        process.set_terminal(Some(true));
    }
    let (console, terminal) = if !args.detach && args.console_socket.is_none() && process.terminal() == Some(true) {
        let (console, pending) = foreground_terminal::pair()?;
        // The pty starts with the host terminal's size: the process may
        // ask for it before the proxy first resizes the pty.
        if process.console_size().is_none()
            && let Some((rows, columns)) = foreground_terminal::host_size()
        {
            let size = oci_spec::runtime::BoxBuilder::default()
                .height(u64::from(rows))
                .width(u64::from(columns))
                .build()
                .map_err(|e| Error::invalid("process.consoleSize", e.to_string()))?;
            process.set_console_size(Some(size));
        }
        (Some(console), Some(pending))
    } else {
        (None, None)
    };
    let options = ExecOptions {
        id: args.id.clone(),
        process,
        pid_file: args.pid_file.clone(),
        console_socket: args.console_socket.clone(),
        preserve_fds: args.preserve_fds,
        stdio: None,
        console,
        ignore_paused: args.ignore_paused,
    };
    let pid = exec(globals, &options)?;
    if args.detach {
        return Ok(0);
    }
    wait(pid, terminal)
}
