//! A seccomp agent for tests: listens on a Unix socket as a profile's
//! `listenerPath` names it, takes the `ContainerProcessState` message and
//! listener a runtime sends, and answers every notified system call with
//! one fixed reply, so a test sees what the container's process sees.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How the agent answers a notified system call.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// Let the call run as if it had not been intercepted.
    Continue,
    /// Fail the call with this errno.
    Errno(i32),
}

/// The kernel's `struct seccomp_data`.
#[repr(C)]
#[derive(Default)]
struct SeccompData {
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

/// The kernel's `struct seccomp_notif`.
#[repr(C)]
#[derive(Default)]
struct Notification {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

/// The kernel's `struct seccomp_notif_resp`.
#[repr(C)]
struct Response {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

/// `_IOWR('!', 0, struct seccomp_notif)`.
const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
/// `_IOWR('!', 1, struct seccomp_notif_resp)`.
const NOTIF_SEND: libc::c_ulong = 0xc018_2101;
/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE`.
const FLAG_CONTINUE: u32 = 1;

/// A running agent; stops (closing every listener it holds) when dropped.
pub struct Agent {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    messages: Arc<Mutex<Vec<serde_json::Value>>>,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    /// Listens at `path` and answers every notification with `reply`.
    pub fn start(path: &Path, reply: Reply) -> Self {
        let socket = UnixListener::bind(path).expect("binding the agent's socket");
        socket.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let messages = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            let messages = Arc::clone(&messages);
            std::thread::spawn(move || serve(&socket, reply, &stop, &messages))
        };
        Self {
            path: path.to_path_buf(),
            stop,
            messages,
            thread: Some(thread),
        }
    }

    /// The socket path, for the profile's `listenerPath`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every `ContainerProcessState` message received so far.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.messages.lock().unwrap().clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(socket: &UnixListener, reply: Reply, stop: &AtomicBool, messages: &Mutex<Vec<serde_json::Value>>) {
    let mut listeners: Vec<OwnedFd> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok((connection, _)) = socket.accept() {
            connection.set_nonblocking(false).unwrap();
            if let Some((message, listener)) = receive(connection.as_raw_fd()) {
                messages.lock().unwrap().push(message);
                listeners.push(listener);
            }
        }
        let mut polled: Vec<libc::pollfd> = listeners
            .iter()
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll on our own array of descriptors, 20 ms at most.
        unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 20) };
        if polled.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut gone = Vec::new();
        for (i, entry) in polled.iter().enumerate() {
            if entry.revents & libc::POLLIN != 0 {
                answer(entry.fd, reply);
            } else if entry.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            listeners.remove(i);
        }
    }
}

/// The state message and the listener it carries.
fn receive(connection: RawFd) -> Option<(serde_json::Value, OwnedFd)> {
    let mut body = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(&mut body)];
    let message = nix::sys::socket::recvmsg::<()>(
        connection,
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let length = message.bytes;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for control in message.cmsgs().ok()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(raw) = control {
            // SAFETY: SCM_RIGHTS just gave us these descriptors.
            fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let state: serde_json::Value = serde_json::from_slice(&body[..length]).ok()?;
    let index = state["fds"].as_array()?.iter().position(|name| name == "seccompFd")?;
    let listener = fds.into_iter().nth(index)?;
    Some((state, listener))
}

fn answer(listener: RawFd, reply: Reply) {
    let mut notification = Notification::default();
    // SAFETY: the kernel fills our zeroed notification struct.
    if unsafe { libc::ioctl(listener, NOTIF_RECV, &mut notification as *mut Notification) } != 0 {
        return;
    }
    let mut response = Response {
        id: notification.id,
        val: 0,
        error: 0,
        flags: 0,
    };
    match reply {
        Reply::Continue => response.flags = FLAG_CONTINUE,
        Reply::Errno(errno) => response.error = -errno,
    }
    // SAFETY: the kernel reads our response struct.
    unsafe { libc::ioctl(listener, NOTIF_SEND, &mut response as *mut Response) };
}
