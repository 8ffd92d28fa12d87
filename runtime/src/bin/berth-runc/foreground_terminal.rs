//! A terminal for a foreground `run` or `exec` given no `--console-socket`:
//! as runc does, berth-runc takes the pty master itself and joins it to
//! its own standard streams. The terminal berth-runc runs on (stderr,
//! stdout, stdin or else the controlling one) is put in raw mode, restored
//! at the end, and its size is given to the pty, again on every SIGWINCH.

use std::fs::File;
use std::io::{IoSliceMut, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use berth_runtime::error::{Error, Result};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::termios::{self, SetArg, Termios};

/// After the process exits, output is passed on until the pty is closed
/// by all, or for as long as some keeps coming within this interval.
const QUIET_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Where the runtime sends the master: one end of a socket pair, the
/// other end handed to the runtime as its console connection.
pub struct Pending {
    receiver: UnixStream,
}

/// Makes the pair: the descriptor for the runtime's `console` option, and
/// the end the master arrives on.
pub fn pair() -> Result<(OwnedFd, Pending)> {
    let (sender, receiver) =
        UnixStream::pair().map_err(|e| Error::io("making the terminal's socket pair", "socketpair", &e))?;
    Ok((OwnedFd::from(sender), Pending { receiver }))
}

impl Pending {
    /// Takes the master the process's runtime sent and starts passing
    /// data between it and this process's stdio.
    pub fn receive(self) -> Result<Proxy> {
        let master = receive_master(&self.receiver)?;
        Proxy::start(master)
    }
}

fn receive_master(socket: &UnixStream) -> Result<File> {
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| Error::nix("receiving the terminal", "console socket pair", e))?;
    let fd = message
        .cmsgs()
        .map_err(|e| Error::nix("receiving the terminal", "console socket pair", e))?
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .ok_or_else(|| Error::invalid("terminal", "the runtime sent no terminal"))?;
    // SAFETY: SCM_RIGHTS just gave this process the descriptor; nothing
    // else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The running proxy between the pty master and this process's stdio.
pub struct Proxy {
    master: Arc<File>,
    host: Arc<File>,
    restore: Termios,
    /// Bytes passed to stdout so far.
    output: Arc<AtomicU64>,
    output_done: Receiver<()>,
}

impl Proxy {
    fn start(master: File) -> Result<Self> {
        let host = HostConsole::find()?;
        // The container's output passes through as it was written: no
        // "\r\n" for "\n" on the way out (runc clears ONLCR too).
        let mut settings =
            termios::tcgetattr(master.as_fd()).map_err(|e| Error::nix("reading the pty's settings", "master", e))?;
        settings.output_flags.remove(termios::OutputFlags::ONLCR);
        termios::tcsetattr(master.as_fd(), SetArg::TCSANOW, &settings)
            .map_err(|e| Error::nix("setting the pty", "master", e))?;
        let saved = termios::tcgetattr(host.file.as_fd())
            .map_err(|e| Error::nix("reading the terminal's settings", &host.name, e))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(host.file.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| Error::nix("setting the terminal raw", &host.name, e))?;
        let master = Arc::new(master);
        let output = Arc::new(AtomicU64::new(0));
        let (done, output_done) = channel();
        {
            let from = master.clone();
            let output = output.clone();
            std::thread::spawn(move || {
                copy(&mut &*from, &mut std::io::stdout(), &output);
                let _ = done.send(());
            });
        }
        let proxy = Self {
            master: master.clone(),
            host: Arc::new(host.file),
            restore: saved,
            output,
            output_done,
        };
        proxy.resizer().resize();
        // Input ends with this process: a reader blocked on stdin cannot
        // be woken, and runc does not wait for it either.
        let to = master;
        std::thread::spawn(move || copy(&mut std::io::stdin(), &mut &*to, &AtomicU64::new(0)));
        Ok(proxy)
    }

    /// What resizes the pty (on SIGWINCH).
    pub fn resizer(&self) -> Resizer {
        Resizer {
            master: self.master.clone(),
            host: self.host.clone(),
        }
    }

    /// After the process exited: passes on the output left, until the pty
    /// reports that every holder closed it or nothing more comes for a
    /// while; then the host terminal is put back as it was (on drop).
    pub fn finish(self) {
        let mut seen = self.output.load(Ordering::Relaxed);
        while let Err(RecvTimeoutError::Timeout) = self.output_done.recv_timeout(QUIET_AFTER_EXIT) {
            let now = self.output.load(Ordering::Relaxed);
            if now == seen {
                break;
            }
            seen = now;
        }
        let _ = std::io::stdout().flush();
    }
}

/// The terminal berth-runc itself runs on, as runc finds it: stderr,
/// stdout or stdin, whichever is one, else the controlling terminal.
struct HostConsole {
    file: File,
    name: String,
}

impl HostConsole {
    fn find() -> Result<Self> {
        for (fd, name) in [
            (libc::STDERR_FILENO, "stderr"),
            (libc::STDOUT_FILENO, "stdout"),
            (libc::STDIN_FILENO, "stdin"),
        ] {
            // SAFETY: isatty only inspects the descriptor.
            if unsafe { libc::isatty(fd) } == 1 {
                // SAFETY: dup of a standard descriptor this process holds.
                let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
                if copy >= 0 {
                    return Ok(Self {
                        // SAFETY: `copy` is a new descriptor owned by nobody else.
                        file: unsafe { File::from_raw_fd(copy) },
                        name: name.to_string(),
                    });
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|e| Error::io("finding a terminal to pass the container's on to", "/dev/tty", &e))?;
        Ok(Self {
            file,
            name: "/dev/tty".to_string(),
        })
    }
}

/// The host terminal's size (rows, columns), for a process whose pty
/// should have it from the start, before the proxy can resize it.
pub fn host_size() -> Option<(u16, u16)> {
    let host = HostConsole::find().ok()?;
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into `size`, which lives
    // through the call.
    if unsafe { libc::ioctl(host.file.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } != 0 {
        return None;
    }
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

/// Gives the pty the size of the host terminal.
#[derive(Clone)]
pub struct Resizer {
    master: Arc<File>,
    host: Arc<File>,
}

impl Resizer {
    /// Copies the host terminal's size to the pty.
    pub fn resize(&self) {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into `size`, which lives
        // across the call.
        if unsafe { libc::ioctl(self.host.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0 {
            // SAFETY: TIOCSWINSZ reads the winsize; the master is open.
            unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.host.as_fd(), SetArg::TCSANOW, &self.restore);
    }
}

/// Copies until end of file or an error (EIO on the master once every
/// holder of the slave closed it).
fn copy(from: &mut impl std::io::Read, to: &mut impl std::io::Write, copied: &AtomicU64) {
    let mut buffer = [0u8; 32 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buffer[..n]).and_then(|()| to.flush()).is_err() {
                    return;
                }
                copied.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}
