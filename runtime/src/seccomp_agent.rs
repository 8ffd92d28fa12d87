//! Handing a seccomp notify listener to the profile's agent
//! (`linux.seccomp.listenerPath`), as the OCI runtime spec describes.
//!
//! The process that loads a filter with SCMP_ACT_NOTIFY rules gets the
//! listener descriptor from the kernel. It writes its number to the
//! runtime over the connection already open between them (a marker byte
//! and four bytes) and waits for one byte back. The runtime takes a copy
//! of the descriptor with `pidfd_getfd`, connects to the agent, sends it
//! the container's state as a `ContainerProcessState` JSON message with
//! the descriptor attached, closes its own copy and answers. So the
//! process makes no system call a profile could hand to the agent before
//! the agent has the listener: `write` cannot be notified (the profile is
//! refused), and the read that waits for the answer is one the agent,
//! holding the listener by then, can let through.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};

use crate::error::{Error, Result};
use crate::hooks::HookState;

/// The byte that carries the listener from the process to the runtime.
pub const LISTENER_MARK: u8 = b'S';
/// The runtime's answer once the agent has the listener.
const HANDED_OFF: u8 = b'a';
/// The name of the listener in `ContainerProcessState.fds`.
const SECCOMP_FD_NAME: &str = "seccompFd";

/// Whether the profile hands any system call to an agent.
pub fn uses_notify(profile: &LinuxSeccomp) -> bool {
    let notify = |action: LinuxSeccompAction| action == LinuxSeccompAction::ScmpActNotify;
    notify(profile.default_action()) || profile.syscalls().iter().flatten().any(|rule| notify(rule.action()))
}

/// The profile's agent socket; a notify profile without one is refused.
pub fn listener_path(profile: &LinuxSeccomp) -> Result<&Path> {
    profile
        .listener_path()
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            Error::invalid(
                "linux.seccomp.listenerPath",
                "SCMP_ACT_NOTIFY needs a listenerPath for the seccomp agent",
            )
        })
}

/// In the process that loaded the filter: tells the runtime over
/// `connection` which descriptor the listener is, and waits until the
/// runtime says the agent has it.
pub fn send_to_runtime(connection: RawFd, listener: RawFd) -> Result<()> {
    let mut message = [LISTENER_MARK, 0, 0, 0, 0];
    message[1..].copy_from_slice(&listener.to_le_bytes());
    // SAFETY: writing our own five-byte buffer.
    let written = unsafe { libc::write(connection, message.as_ptr().cast(), message.len()) };
    if written != message.len() as isize {
        return Err(Error::sys(
            "telling the runtime about the seccomp listener",
            "linux.seccomp",
            nix::errno::Errno::last_raw(),
        ));
    }
    await_hand_off(connection)
}

/// In the process: waits for the runtime's answer that the agent has the
/// listener.
pub fn await_hand_off(connection: RawFd) -> Result<()> {
    let mut answer = [0u8; 1];
    // SAFETY: reading into our own one-byte buffer.
    let read = unsafe { libc::read(connection, answer.as_mut_ptr().cast(), 1) };
    if read == 1 && answer[0] == HANDED_OFF {
        Ok(())
    } else {
        Err(Error::other(
            "handing the seccomp listener to the agent",
            "the runtime did not reach the seccomp agent",
        ))
    }
}

/// In the runtime, after reading [`LISTENER_MARK`] from process `pid`'s
/// connection: reads the descriptor's number and takes a copy of it.
pub fn read_listener(connection: &UnixStream, pid: i32) -> Result<OwnedFd> {
    let mut number = [0u8; 4];
    std::io::Read::read_exact(&mut &*connection, &mut number)
        .map_err(|e| Error::io("reading the seccomp listener's number", "sync connection", &e))?;
    take_listener(pid, i32::from_le_bytes(number))
}

/// In the runtime: a copy of descriptor `number` of process `pid`.
pub fn take_listener(pid: i32, number: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(Error::sys(
            "taking the seccomp listener",
            format!("pidfd_open {pid}"),
            nix::errno::Errno::last_raw(),
        ));
    }
    // SAFETY: pidfd_open just returned this descriptor, ours alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that
    // process and flags; it returns a new descriptor (close-on-exec).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), number, 0) };
    if fd < 0 {
        return Err(Error::sys(
            "taking the seccomp listener",
            format!("pidfd_getfd {pid}/{number}"),
            nix::errno::Errno::last_raw(),
        ));
    }
    // SAFETY: pidfd_getfd just returned this descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// In the runtime: sends `listener` with the container's `state` to the
/// profile's agent, closes the runtime's copy, and tells the process
/// (over `connection`) to go on.
pub fn hand_to_agent(
    profile: &LinuxSeccomp,
    state: &HookState,
    pid: i32,
    listener: OwnedFd,
    connection: &UnixStream,
) -> Result<()> {
    let path = listener_path(profile)?;
    let agent = connect(path).map_err(|e| {
        Error::invalid(
            "linux.seccomp.listenerPath",
            format!(
                "failed to connect with seccomp agent specified in the seccomp profile ({}): {e}",
                path.display()
            ),
        )
    })?;
    let message = serde_json::json!({
        "ociVersion": state.oci_version,
        "fds": [SECCOMP_FD_NAME],
        "pid": pid,
        "metadata": profile.listener_metadata().clone().unwrap_or_default(),
        "state": state,
    });
    let body = message.to_string();
    crate::fd_passing::send_with_fd(agent.as_raw_fd(), body.as_bytes(), listener.as_raw_fd())
        .map_err(|e| Error::nix("sending the seccomp listener to the agent", path, e))?;
    // Only the agent may hold the listener: when it goes, the notified
    // system calls fail with ENOSYS instead of waiting.
    drop(listener);
    drop(agent);
    std::io::Write::write_all(&mut &*connection, &[HANDED_OFF])
        .map_err(|e| Error::io("telling the process the agent has its listener", "sync connection", &e))
}

/// Connects to a listener path, `@name` meaning an abstract socket.
fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let text = path.to_string_lossy();
    match text.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            UnixStream::connect_addr(&address)
        }
        None => UnixStream::connect(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::MsgFlags;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    /// Container `id`'s state, as the runtime sends it.
    fn state_of(id: &str, bundle: &Path) -> HookState {
        HookState {
            oci_version: "1.0.2".into(),
            id: id.into(),
            status: "created".into(),
            pid: Some(7),
            bundle: bundle.to_path_buf(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn only_notify_rules_need_an_agent() {
        let plain = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/agent.sock",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
        }));
        assert!(!uses_notify(&plain));
        let notify = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(uses_notify(&notify));
    }

    #[test]
    fn the_listener_reaches_the_agent_with_the_state_and_the_process_goes_on() {
        let dir = std::env::temp_dir().join(format!("berth-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("agent.sock");
        let agent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let profile = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": socket,
            "listenerMetadata": "bar",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        let state = state_of("c1", &dir);
        let (runtime_end, process_end) = UnixStream::pair().unwrap();
        // Any descriptor stands in for the listener.
        let listener = std::fs::File::open("/dev/null").unwrap();
        let process = std::thread::spawn(move || send_to_runtime(process_end.as_raw_fd(), listener.as_raw_fd()));
        let mut mark = [0u8; 1];
        std::io::Read::read_exact(&mut &runtime_end, &mut mark).unwrap();
        assert_eq!(mark[0], LISTENER_MARK);
        let fd = read_listener(&runtime_end, std::process::id() as i32).unwrap();
        hand_to_agent(&profile, &state, 7, fd, &runtime_end).unwrap();
        process.join().unwrap().unwrap();

        let (connection, _) = agent.accept().unwrap();
        let mut body = vec![0u8; 4096];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut body)];
        let received = nix::sys::socket::recvmsg::<()>(
            connection.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        let length = received.bytes;
        let fds: Vec<RawFd> = received
            .cmsgs()
            .unwrap()
            .flat_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds,
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(fds.len(), 1, "one descriptor goes with the state");
        // SAFETY: SCM_RIGHTS just gave us this descriptor.
        drop(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        let message: serde_json::Value = serde_json::from_slice(&body[..length]).unwrap();
        assert_eq!(message["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!(message["pid"], 7);
        assert_eq!(message["metadata"], "bar");
        assert_eq!(message["state"]["id"], "c1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_agent_is_an_error_naming_the_listener_path() {
        let profile = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/nonexistent/berth-agent.sock",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        let state = state_of("c1", Path::new("/"));
        let (runtime_end, _process_end) = UnixStream::pair().unwrap();
        let listener = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let err = hand_to_agent(&profile, &state, 7, listener, &runtime_end).unwrap_err();
        assert!(
            err.to_string().contains("failed to connect with seccomp agent"),
            "{err}"
        );
    }
}
