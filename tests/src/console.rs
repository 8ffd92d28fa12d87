//! The receiving end of `--console-socket`: listens on a socket in a
//! temporary directory and takes the pty master a runtime sends over it.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

/// A listening console socket.
#[derive(Debug)]
pub struct ConsoleSocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl Default for ConsoleSocket {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleSocket {
    /// Binds a new socket.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-console")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).expect("bind console socket");
        Self {
            _dir: dir,
            path,
            listener,
        }
    }

    /// Its path, for `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one connection and receives the master and the slave's name.
    pub fn receive(&self) -> (OwnedFd, String) {
        let (stream, _) = self.listener.accept().expect("accept console connection");
        let mut name = [0u8; 256];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut name)];
        let message = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
            .expect("recvmsg on the console socket");
        let received = message.bytes;
        let mut master = None;
        for control in message.cmsgs().expect("control messages") {
            if let ControlMessageOwned::ScmRights(fds) = control {
                // SAFETY: the descriptor arrived with this message; nothing else owns it.
                master = fds.first().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
        let name = String::from_utf8_lossy(&name[..received]).into_owned();
        (master.expect("a descriptor came with the message"), name)
    }
}
