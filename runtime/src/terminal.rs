//! A process's terminal: a pty made inside the container (its own devpts
//! instance), the master sent to whoever listens on `--console-socket`
//! (SCM_RIGHTS, with the slave's name, as runc sends it), the slave made
//! the process's controlling terminal, stdio and (for the container's init)
//! `/dev/console`.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};

/// The environment variable carrying the console socket's descriptor to
/// the init.
pub const CONSOLE_FD_ENV: &str = "_BERTH_CONSOLE_FD";

/// Connects to the console socket at `path` (done by the runtime, which
/// passes the connection on to the init).
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let stream = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| Error::invalid("--console-socket", format!("{}: {e}", path.display())))?;
    Ok(OwnedFd::from(stream))
}

/// The connection to the console socket a process with a terminal needs
/// (None without a terminal); `field` names what asked for the terminal.
pub fn console_for(socket: Option<&Path>, terminal: bool, field: &str) -> Result<Option<OwnedFd>> {
    match (socket, terminal) {
        (Some(path), true) => connect(path).map(Some),
        (None, true) => Err(Error::invalid(field, "a terminal needs --console-socket to send it to")),
        (_, false) => Ok(None),
    }
}

/// The console connection for a process: the caller's own connected
/// socket when it passed one, else a connection to `socket`.
pub fn console_connection(
    given: Option<&OwnedFd>,
    socket: Option<&Path>,
    terminal: bool,
    field: &str,
) -> Result<Option<OwnedFd>> {
    match given {
        Some(connected) if terminal => connected
            .try_clone()
            .map(Some)
            .map_err(|e| Error::io("passing the console socket", "dup", &e)),
        _ => console_for(socket, terminal, field),
    }
}

/// The console socket the runtime passed, if any (and forgets the
/// variable, so the user's process never sees it).
pub fn inherited_socket() -> Option<OwnedFd> {
    let fd: RawFd = std::env::var(CONSOLE_FD_ENV).ok()?.parse().ok()?;
    // SAFETY: single-threaded, just exec'd: nothing reads the environment
    // concurrently.
    unsafe { std::env::remove_var(CONSOLE_FD_ENV) };
    // SAFETY: the runtime passed this descriptor for us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl on our own descriptor: close it on the final exec.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(fd)
}

/// Opens a new pty in the current mount namespace's /dev/ptmx, sends the
/// master over `socket`, and makes the slave this process's controlling
/// terminal and stdin, stdout and stderr. With `console`, the slave is also
/// bind-mounted on /dev/console. With `size` (rows, columns: the
/// process's `consoleSize`), the terminal starts with that size.
pub fn attach(socket: &OwnedFd, console: bool, size: Option<(u16, u16)>) -> Result<()> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| Error::nix("opening a terminal", "/dev/ptmx", e))?;
    nix::pty::grantpt(&master).map_err(|e| Error::nix("opening a terminal", "grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| Error::nix("opening a terminal", "unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| Error::nix("opening a terminal", "ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::nix("opening a terminal", name.as_str(), e))?;

    if let Some((rows, columns)) = size {
        let window = libc::winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct we own.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &window) } != 0 {
            return Err(Error::sys(
                "setting process.consoleSize",
                &name,
                nix::errno::Errno::last_raw(),
            ));
        }
    }
    crate::fd_passing::send_with_fd(socket.as_raw_fd(), name.as_bytes(), master.as_raw_fd())
        .map_err(|e| Error::nix("sending the terminal", "--console-socket", e))?;
    drop(master);

    if console {
        bind_console(&name)?;
    }
    nix::unistd::setsid().map_err(|e| Error::nix("starting a session for the terminal", "setsid", e))?;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::sys(
            "making the terminal controlling",
            &name,
            nix::errno::Errno::last_raw(),
        ));
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; the slave stays open.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(Error::sys(
                "attaching the terminal",
                &name,
                nix::errno::Errno::last_raw(),
            ));
        }
    }
    Ok(())
}

/// Makes /dev/console the pty slave (a bind mount on an empty file).
fn bind_console(slave: &str) -> Result<()> {
    let console = Path::new("/dev/console");
    if !console.exists() {
        std::fs::File::create(console).map_err(|e| Error::io("creating /dev/console", console, &e))?;
    }
    nix::mount::mount(
        Some(slave),
        console,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::nix("binding the terminal on /dev/console", slave, e))
}

/// The size a process asks its terminal to start with (`consoleSize`:
/// rows, columns), if it gives one.
pub fn requested_size(process: &oci_spec::runtime::Process) -> Option<(u16, u16)> {
    let size = process.console_size()?;
    let rows = u16::try_from(size.height()).ok()?;
    let columns = u16::try_from(size.width()).ok()?;
    (rows > 0 && columns > 0).then_some((rows, columns))
}
