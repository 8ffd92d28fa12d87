//! A process's stdio as the client gave it: FIFO paths (`ctr` makes them),
//! `file://` paths (output appended to a file that outlives every client)
//! or nothing (/dev/null). Output goes through pipes the shim copies into
//! the FIFOs without ever blocking the runtime; a terminal's master is
//! copied the same way.

use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use berth_runtime::container::ProcessStdio;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::unix::pipe;
use tokio::sync::watch;

/// Where one stream goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Null,
    Binary(crate::binary_logger::Logger),
    Fifo(PathBuf),
    File(PathBuf),
}

fn target(uri: &str) -> Result<Target, tonic::Status> {
    if uri.is_empty() {
        return Ok(Target::Null);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        return Ok(Target::File(PathBuf::from(path)));
    }
    if let Some(logger) = crate::binary_logger::parse(uri) {
        return Ok(Target::Binary(logger));
    }
    let path = uri.strip_prefix("fifo://").unwrap_or(uri);
    Ok(Target::Fifo(PathBuf::from(path)))
}

fn status(what: &str, path: &std::path::Path, e: std::io::Error) -> tonic::Status {
    tonic::Status::internal(format!("{what} {}: {e}", path.display()))
}

fn dev_null(write: bool) -> Result<OwnedFd, tonic::Status> {
    let file = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map_err(|e| status("opening", std::path::Path::new("/dev/null"), e))?;
    Ok(file.into())
}

fn append_file(path: &std::path::Path) -> Result<OwnedFd, tonic::Status> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| status("creating", dir, e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| status("opening the log file", path, e))?;
    Ok(file.into())
}

/// Copies `from` into the FIFO at `path` until EOF; then closes it, which
/// is the reader's EOF. Opening read-write never blocks, whoever reads.
async fn copy_to_fifo(mut from: impl AsyncRead + Unpin, path: PathBuf) {
    let Ok(mut fifo) = pipe::OpenOptions::new().read_write(true).open_sender(&path) else {
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if fifo.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Copies the FIFO at `path` into `to` until the client closes stdin
/// (CloseIO) or the process is gone.
async fn copy_from_fifo(path: PathBuf, mut to: impl AsyncWrite + Unpin, mut closed: watch::Receiver<bool>) {
    // Read-write, so a client that has not opened its end yet is no EOF.
    let Ok(mut fifo) = pipe::OpenOptions::new().read_write(true).open_receiver(&path) else {
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            read = fifo.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => if to.write_all(&buf[..n]).await.is_err() { break },
            },
            _ = stdin_closed(&mut closed) => break,
        }
    }
}

/// Resolves when the client closes stdin.
async fn stdin_closed(closed: &mut watch::Receiver<bool>) {
    while !*closed.borrow_and_update() {
        if closed.changed().await.is_err() {
            // The process record is gone: stop copying.
            return;
        }
    }
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), tonic::Status> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| tonic::Status::internal(format!("pipe: {e}")))
}

/// The stdio of one process while it runs.
#[derive(Debug)]
pub struct Stdio {
    /// Closing stdin (CloseIO): the copier stops and closes the pipe.
    close_stdin: watch::Sender<bool>,
    /// The terminal's master, for resizes.
    master: Option<std::sync::Arc<OwnedFd>>,
}

impl Stdio {
    /// Closes the process's stdin.
    pub fn close_stdin(&self) {
        let _ = self.close_stdin.send(true);
    }

    /// Resizes the terminal.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), tonic::Status> {
        let Some(master) = &self.master else {
            return Err(tonic::Status::not_found("the process has no terminal"));
        };
        let size = libc::winsize {
            ws_row: height as u16,
            ws_col: width as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that outlives the call.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
            return Err(tonic::Status::internal(format!(
                "resizing: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}

/// What the client asked for one process.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// stdin URI.
    pub stdin: String,
    /// stdout URI.
    pub stdout: String,
    /// stderr URI.
    pub stderr: String,
    /// Whether the process has a terminal.
    pub terminal: bool,
    /// The namespace and container id (for `binary://` loggers).
    pub namespace: String,
    /// The container id.
    pub id: String,
}

/// Descriptors for a process without a terminal, and the copiers started.
pub fn prepare(request: &Request) -> Result<(ProcessStdio, Stdio), tonic::Status> {
    let (close_stdin, closed) = watch::channel(false);
    let stdin = match target(&request.stdin)? {
        Target::Null | Target::Binary(_) => dev_null(false)?,
        Target::File(path) => {
            let file = std::fs::File::open(&path).map_err(|e| status("opening stdin", &path, e))?;
            file.into()
        }
        Target::Fifo(path) => {
            let (read, write) = pipe_pair()?;
            let sender = pipe::Sender::from_owned_fd(write).map_err(|e| status("stdin pipe", &path, e))?;
            tokio::spawn(copy_from_fifo(path, sender, closed));
            read
        }
    };
    let output = |uri: &str| -> Result<OwnedFd, tonic::Status> {
        match target(uri)? {
            Target::Null | Target::Binary(_) => dev_null(true),
            Target::File(path) => append_file(&path),
            Target::Fifo(path) => {
                let (read, write) = pipe_pair()?;
                let receiver = pipe::Receiver::from_owned_fd(read).map_err(|e| status("output pipe", &path, e))?;
                tokio::spawn(copy_to_fifo(receiver, path));
                Ok(write)
            }
        }
    };
    if let Target::Binary(logger) = target(&request.stdout)? {
        // One logger takes both streams.
        let (stdout, stderr) = crate::binary_logger::start(&logger, &request.namespace, &request.id)?;
        return Ok((
            ProcessStdio { stdin, stdout, stderr },
            Stdio {
                close_stdin,
                master: None,
            },
        ));
    }
    let stdout = output(&request.stdout)?;
    let stderr = if request.stderr == request.stdout && request.stdout.starts_with("file://") {
        stdout
            .try_clone()
            .map_err(|e| tonic::Status::internal(format!("dup: {e}")))?
    } else {
        output(&request.stderr)?
    };
    Ok((
        ProcessStdio { stdin, stdout, stderr },
        Stdio {
            close_stdin,
            master: None,
        },
    ))
}

/// How a process's stdio is set up: descriptors for the runtime now, and
/// (with a terminal) the console connection to take the master from once
/// the runtime made it.
#[derive(Debug)]
pub struct Setup {
    /// What the runtime gives the process (None with a terminal).
    pub process: Option<ProcessStdio>,
    /// The runtime's end of the console connection.
    pub console: Option<OwnedFd>,
    copiers: Option<Stdio>,
    ours: Option<OwnedFd>,
}

impl Setup {
    /// Prepares `request`.
    pub fn new(request: &Request) -> Result<Self, tonic::Status> {
        if request.terminal {
            let (ours, theirs) = console_pair()?;
            return Ok(Self {
                process: None,
                console: Some(theirs),
                copiers: None,
                ours: Some(ours),
            });
        }
        let (process, copiers) = prepare(request)?;
        Ok(Self {
            process: Some(process),
            console: None,
            copiers: Some(copiers),
            ours: None,
        })
    }

    /// Once the runtime made the process: its running stdio.
    pub fn finish(self, request: &Request) -> Result<Stdio, tonic::Status> {
        match (self.copiers, self.ours) {
            (Some(copiers), _) => Ok(copiers),
            (None, Some(ours)) => attach_terminal(&ours, request),
            (None, None) => Err(tonic::Status::internal("stdio was set up twice")),
        }
    }
}

/// A connected pair: the runtime sends the terminal's master over one end.
pub fn console_pair() -> Result<(OwnedFd, OwnedFd), tonic::Status> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| tonic::Status::internal(format!("socketpair: {e}")))
}

/// Takes the master the runtime sent and copies between it and the FIFOs.
pub fn attach_terminal(ours: &OwnedFd, request: &Request) -> Result<Stdio, tonic::Status> {
    let master = receive_master(ours)?;
    let master = std::sync::Arc::new(master);
    let (close_stdin, closed) = watch::channel(false);
    // Each copier polls its own duplicate: one descriptor registers once.
    let dup = || {
        master
            .try_clone()
            .map_err(|e| tonic::Status::internal(format!("terminal: {e}")))
    };
    if let Target::Fifo(path) = target(&request.stdout)? {
        let reader = MasterIo::new(dup()?)?;
        tokio::spawn(copy_to_fifo(reader, path));
    }
    if let Target::Fifo(path) = target(&request.stdin)? {
        let writer = MasterIo::new(dup()?)?;
        tokio::spawn(copy_from_fifo(path, writer, closed));
    }
    Ok(Stdio {
        close_stdin,
        master: Some(master),
    })
}

fn receive_master(socket: &OwnedFd) -> Result<OwnedFd, tonic::Status> {
    let mut name = [0u8; 256];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let message = nix::sys::socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .map_err(|e| tonic::Status::internal(format!("receiving the terminal: {e}")))?;
    for control in message
        .cmsgs()
        .map_err(|e| tonic::Status::internal(format!("receiving the terminal: {e}")))?
    {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = control
            && let Some(fd) = fds.first()
        {
            // SAFETY: the descriptor arrived with this message; nobody else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(tonic::Status::internal("the runtime sent no terminal"))
}

/// Non-blocking reads and writes on the terminal's master.
struct MasterIo {
    fd: AsyncFd<OwnedFd>,
}

impl MasterIo {
    fn new(master: OwnedFd) -> Result<Self, tonic::Status> {
        let flags = nix::fcntl::fcntl(master.as_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| tonic::Status::internal(format!("terminal: {e}")))?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(master.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| tonic::Status::internal(format!("terminal: {e}")))?;
        // SAFETY: the AsyncFd owns `master`, an open descriptor that stays
        // open (and the same) until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(master) }.map_err(|e| tonic::Status::internal(format!("terminal: {e}")))?;
        Ok(Self { fd })
    }
}

impl AsyncRead for MasterIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            let mut guard = std::task::ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| nix::unistd::read(inner.get_ref(), unfilled).map_err(std::io::Error::from)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                // EIO: the slave side is closed (the process is gone): EOF.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return std::task::Poll::Ready(Ok(())),
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for MasterIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            let mut guard = std::task::ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(std::io::Error::from)) {
                Ok(result) => return std::task::Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
