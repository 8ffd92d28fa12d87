//! The last steps before the user's process runs: its executable found in
//! the container's PATH, limits, identity, working directory, a clean
//! signal state and only the file descriptors it should have; then exec.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigHandler, SigSet, Signal};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxSeccomp, PosixRlimitType, Process};

use crate::error::{Error, Result};

/// Where to look for a command without a slash when the spec sets no PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to execute.
#[derive(Debug)]
pub struct Exec {
    /// The executable's path.
    pub path: CString,
    /// argv.
    pub args: Vec<CString>,
    /// envp.
    pub env: Vec<CString>,
}

fn cstring(text: &str, field: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::invalid(field, "contains a NUL byte"))
}

fn is_executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is NUL-terminated.
    let ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    ok && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Finds the command in the container (after pivot_root), as execvp would
/// with the spec's PATH.
pub fn prepare(process: &Process) -> Result<Exec> {
    let args = process.args().as_deref().unwrap_or_default();
    let command = args
        .first()
        .ok_or_else(|| Error::invalid("process.args", "no command to run"))?;
    let env = environment(process);
    let path = if command.contains('/') {
        let path = PathBuf::from(command);
        if !is_executable(&path) {
            return Err(Error::invalid(
                "process.args[0]",
                format!("exec: {command:?}: no such executable file"),
            ));
        }
        path
    } else {
        let search = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
        search
            .split(':')
            .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(command))
            .find(|p| is_executable(p))
            .ok_or_else(|| {
                Error::invalid(
                    "process.args[0]",
                    format!("exec: {command:?}: executable file not found in $PATH"),
                )
            })?
    };
    Ok(Exec {
        path: CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::invalid("process.args[0]", "NUL"))?,
        args: args
            .iter()
            .enumerate()
            .map(|(i, a)| cstring(a, &format!("process.args[{i}]")))
            .collect::<Result<_>>()?,
        env: env
            .iter()
            .enumerate()
            .map(|(i, e)| cstring(e, &format!("process.env[{i}]")))
            .collect::<Result<_>>()?,
    })
}

/// The environment the process runs with (and a startContainer hook
/// without its own): the spec's, each name once, with HOME from the
/// container's /etc/passwd (else "/") when it has none or an empty one.
/// Read inside the container, after pivot_root.
pub fn environment(process: &Process) -> Vec<String> {
    let mut env = without_repeats(process.env().as_deref().unwrap_or_default());
    // An empty HOME counts as none, as with runc.
    env.retain(|e| e != "HOME=");
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|passwd| home_of(&passwd, process.user().uid()))
            .unwrap_or_else(|| "/".to_string());
        env.push(format!("HOME={home}"));
    }
    env
}

/// The environment with each name once: a later `NAME=value` replaces an
/// earlier one in its place (as runc sets it, and as a shell would read it).
fn without_repeats(env: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(env.len());
    for entry in env {
        let name = entry.split_once('=').map_or(entry.as_str(), |(name, _)| name);
        match out
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == name)
        {
            Some(earlier) => earlier.clone_from(entry),
            None => out.push(entry.clone()),
        }
    }
    out
}

/// The home directory `/etc/passwd` (its text) gives `uid`: the process
/// gets it as HOME when its environment has none, else "/" (as with runc).
fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2].parse() == Ok(uid) && !fields[5].is_empty()).then(|| fields[5].to_string())
    })
}

fn resource(kind: PosixRlimitType) -> Resource {
    match kind {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Limits and the OOM score, set while still privileged.
pub fn apply_limits(process: &Process) -> Result<()> {
    for (i, limit) in process.rlimits().iter().flatten().enumerate() {
        setrlimit(resource(limit.typ()), limit.soft(), limit.hard())
            .map_err(|e| Error::nix(format!("setting process.rlimits[{i}]"), format!("{:?}", limit.typ()), e))?;
    }
    if let Some(score) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", score.to_string())
            .map_err(|e| Error::io("setting process.oomScoreAdj", "/proc/self/oom_score_adj", &e))?;
    }
    Ok(())
}

/// Becomes the spec's user with the spec's capabilities: bounding set,
/// supplementary groups, gid, uid, the other capability sets, umask,
/// no_new_privileges.
pub fn become_user(
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
    hand_off: crate::seccomp::HandOff<'_>,
) -> Result<()> {
    // Without no_new_privileges, loading a filter needs CAP_SYS_ADMIN: it
    // goes in first, while the process still has it (as runc does), and the
    // profile must allow what follows.
    if process.no_new_privileges() != Some(true)
        && let Some(profile) = seccomp
    {
        crate::seccomp::load(profile, hand_off)?;
    }
    let capabilities = crate::capabilities::plan(process)?;
    if let Some(plan) = &capabilities {
        crate::capabilities::before_user_change(plan)?;
    }
    let user = process.user();
    // Checked again at the point of use: an id past 2^31-1 would reach
    // setresuid as -1, "unchanged", and leave the process root.
    crate::ids::check_user(user)?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| Error::nix("setting process.user.additionalGids", "setgroups", e))?;
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| Error::nix("setting process.user.gid", "setresgid", e))?;
    let uid = Uid::from_raw(user.uid());
    give_stdio_to(uid)?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| Error::nix("setting process.user.uid", "setresuid", e))?;
    if let Some(plan) = &capabilities {
        crate::capabilities::after_user_change(plan)?;
    }
    if let Some(umask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    if process.no_new_privileges() == Some(true) {
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integers.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(Error::sys(
                "setting process.noNewPrivileges",
                "prctl",
                nix::errno::Errno::last_raw(),
            ));
        }
    }
    Ok(())
}

/// Makes the process's user the owner of its stdio (its terminal, above
/// all), so that a non-root user can use the console it was given; the
/// group stays as devpts set it (`tty`). Skipped for descriptors already
/// the user's and for /dev/null; a descriptor that cannot change owner
/// (a read-only /dev, an owner not mapped in a user namespace) is left as
/// it is, as runc leaves it.
fn give_stdio_to(uid: Uid) -> Result<()> {
    let null = nix::sys::stat::stat("/dev/null").ok().map(|s| s.st_rdev);
    for fd in 0..3 {
        // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into our own struct; a closed fd is EBADF.
        if unsafe { libc::fstat(fd, &mut stat) } != 0 {
            continue;
        }
        if stat.st_uid == uid.as_raw() || Some(stat.st_rdev) == null {
            continue;
        }
        // SAFETY: fchown on one of our standard descriptors; -1 keeps the group.
        if unsafe { libc::fchown(fd, uid.as_raw(), u32::MAX) } != 0 {
            let errno = nix::errno::Errno::last_raw();
            if ![libc::EINVAL, libc::EPERM, libc::EROFS].contains(&errno) {
                return Err(Error::sys(
                    "giving stdio to process.user.uid",
                    format!("/proc/self/fd/{fd}"),
                    errno,
                ));
            }
        }
    }
    Ok(())
}

/// Loads the seccomp filter of a process with no_new_privileges: the last
/// step before its exec, so the filter covers only the user's program.
pub fn load_seccomp_last(
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
    hand_off: crate::seccomp::HandOff<'_>,
) -> Result<()> {
    match seccomp {
        Some(profile) if process.no_new_privileges() == Some(true) => crate::seccomp::load(profile, hand_off),
        _ => Ok(()),
    }
}

/// Enters the working directory.
pub fn enter_cwd(process: &Process) -> Result<()> {
    nix::unistd::chdir(process.cwd()).map_err(|e| Error::nix("entering process.cwd", process.cwd(), e))
}

/// Default signal handling and an empty mask, as a new process expects
/// (ignored signals would stay ignored across exec), and every descriptor
/// past stdio and the preserved ones closed on exec.
pub fn clean_inheritance(preserve_fds: i32) -> Result<()> {
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: restoring the default disposition is always sound.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| Error::nix("clearing the signal mask", "sigprocmask", e))?;
    let first = (3 + preserve_fds.max(0)) as libc::c_uint;
    // SAFETY: close_range only flags descriptors; CLOEXEC closes them at exec.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc < 0 {
        // A seccomp profile loaded before this step may refuse close_range
        // (or the kernel may lack it); flag each open descriptor instead.
        let refused = nix::errno::Errno::last_raw();
        return flag_open_descriptors_cloexec(first as i32)
            .map_err(|_| Error::sys("closing inherited descriptors", "close_range", refused));
    }
    Ok(())
}

/// Sets FD_CLOEXEC on every open descriptor from `first` on, as listed
/// in /proc/self/fd.
fn flag_open_descriptors_cloexec(first: i32) -> Result<()> {
    let listing =
        std::fs::read_dir("/proc/self/fd").map_err(|e| Error::io("listing /proc/self/fd", "/proc/self/fd", &e))?;
    let fds: Vec<i32> = listing
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD only changes the flags of a descriptor number;
        // one that closed since the listing answers EBADF, ignored below.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        if rc < 0 && nix::errno::Errno::last() != nix::errno::Errno::EBADF {
            return Err(Error::sys(
                "flagging inherited descriptors",
                "fcntl",
                nix::errno::Errno::last_raw(),
            ));
        }
    }
    Ok(())
}

/// Replaces this process with the command; returns only on failure.
pub fn exec(exec: &Exec) -> Error {
    match nix::unistd::execve(&exec.path, &exec.args, &exec.env) {
        Err(e) => Error::exec(exec.path.to_string_lossy().into_owned(), e),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_variable_keeps_its_place_and_its_last_value() {
        let env: Vec<String> = ["ONE=two", "PATH=/bin", "ONE=", "TWO=2", "PATH=/usr/bin"]
            .map(String::from)
            .to_vec();
        assert_eq!(without_repeats(&env), ["ONE=", "PATH=/usr/bin", "TWO=2"]);
    }

    #[test]
    fn home_comes_from_the_users_passwd_line() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nbad line\ntempuser:x:2000:2000::/home/tempuser:/bin/sh\nnohome:x:3000:3000:::/bin/sh\n";
        assert_eq!(home_of(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(home_of(passwd, 2000).as_deref(), Some("/home/tempuser"));
        assert_eq!(home_of(passwd, 3000), None);
        assert_eq!(home_of(passwd, 1000), None);
    }
}
