//! Sending a message with one descriptor attached (SCM_RIGHTS) over a
//! Unix socket, in a single `sendmsg`: a console socket gets the pty
//! master with its name, a seccomp agent the listener with the state.

use std::io::IoSlice;
use std::os::fd::RawFd;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// Sends `bytes` over `socket` with `fd` attached.
pub fn send_with_fd(socket: RawFd, bytes: &[u8], fd: RawFd) -> nix::Result<usize> {
    let fds = [fd];
    let control = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(socket, &[IoSlice::new(bytes)], &control, MsgFlags::empty(), None)
}
