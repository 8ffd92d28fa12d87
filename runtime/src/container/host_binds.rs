//! The runtime's side of `rootfs::HostBinds`: a container in a user
//! namespace asks for the bind sources its root may not reach (a host
//! directory closed to others). The runtime looks the source up itself and
//! binds it with a helper, this binary run again, that joins the
//! container's mount namespace with the host's credentials: the bind is
//! made there from the namespace's own copy of the host's mounts, so the
//! flags the kernel locked on them stay locked on the bind.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};
use crate::init::{INIT_ARG, INIT_FD_ENV};
use crate::sync::{Channel, FromInit, HostBindConfig, ToInit};
use crate::syscalls::FileKind;

/// Whether `message` is a request this module answers.
pub fn is_request(message: &FromInit) -> bool {
    matches!(message, FromInit::LookUpSource(_) | FromInit::BindSource { .. })
}

/// Answers one request of the container's init (pid `init_pid` in the
/// runtime's pid namespace) on `channel`.
pub fn answer(request: FromInit, init_pid: i32, channel: &mut Channel) -> Result<()> {
    match request {
        FromInit::LookUpSource(source) => channel.send(&ToInit::SourceLookedUp(kind_of(&source))),
        FromInit::BindSource { source, dest, flags } => {
            let config = |mount_namespace_fd| HostBindConfig {
                mount_namespace_fd,
                source: source.clone(),
                dest: dest.clone(),
                flags,
            };
            let outcome = bind_in_namespace_of(init_pid, config).err();
            channel.send(&ToInit::SourceBound(outcome))
        }
        other => Err(Error::other(
            "creating the container",
            format!("unexpected message {other:?}"),
        )),
    }
}

/// What `source` leads to, followed through its symlinks, with the
/// runtime's credentials.
fn kind_of(source: &Path) -> Result<Option<FileKind>> {
    match std::fs::metadata(source) {
        Ok(meta) if meta.is_dir() => Ok(Some(FileKind::Dir)),
        Ok(meta) if meta.is_file() => Ok(Some(FileKind::File)),
        Ok(_) => Ok(Some(FileKind::Other)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("looking up a bind source", source, &e)),
    }
}

/// Runs the helper that binds in the mount namespace of `pid`.
fn bind_in_namespace_of(pid: i32, config: impl FnOnce(i32) -> HostBindConfig) -> Result<()> {
    let path = format!("/proc/{pid}/ns/mnt");
    let namespace = OwnedFd::from(
        std::fs::File::open(&path).map_err(|e| Error::io("opening the container's namespace", &path, &e))?,
    );
    let namespace_fd = namespace.as_raw_fd();
    let (mut ours, theirs) = Channel::pair()?;
    let child_fd = theirs.raw_fd();
    let binary = crate::self_protection::ProtectedBinary::current()?;
    let mut command = Command::new(binary.path());
    command
        .arg(INIT_ARG)
        .env(INIT_FD_ENV, child_fd.to_string())
        .stdin(std::process::Stdio::null());
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls (unshare, mount, fcntl) on descriptors
    // and strings prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            // A throwaway mount namespace for the read-only binary (the
            // container's is joined after the exec).
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            binary.bind_read_only()?;
            for fd in [child_fd, namespace_fd] {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut helper = command
        .spawn()
        .map_err(|e| Error::io("starting the bind helper", "/proc/self/exe", &e))?;
    drop(theirs);
    drop(namespace);
    let sent = ours.send(&ToInit::HostBind(Box::new(config(namespace_fd))));
    let reply = sent.and_then(|()| ours.recv::<FromInit>());
    let _ = helper.wait();
    match reply? {
        // The helper closes the channel when the bind is made.
        None => Ok(()),
        Some(FromInit::Failed(e)) => Err(e),
        Some(other) => Err(Error::other(
            "binding a source",
            format!("unexpected message {other:?}"),
        )),
    }
}

/// The helper itself (in the re-executed binary): joins the container's
/// mount namespace and binds.
pub fn run_helper(config: &HostBindConfig) -> Result<()> {
    use nix::mount::MsFlags;
    use std::os::fd::FromRawFd as _;
    // SAFETY: the runtime passed this descriptor for this process alone.
    let namespace = unsafe { OwnedFd::from_raw_fd(config.mount_namespace_fd) };
    nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::nix("entering the container's mount namespace", "setns", e))?;
    let flags = MsFlags::from_bits_truncate(config.flags) & (MsFlags::MS_BIND | MsFlags::MS_REC);
    nix::mount::mount(Some(&config.source), &config.dest, None::<&str>, flags, None::<&str>)
        .map_err(|e| Error::nix(format!("binding {}", config.source.display()), &config.dest, e))
}
