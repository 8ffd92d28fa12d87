//! `binary://` stdio: a logging program the client names receives the
//! process's output, as containerd's shims run it. The program gets the
//! read ends of the stdout and stderr pipes as descriptors 3 and 4, a
//! pipe's write end as descriptor 5 that it closes once ready, and
//! `CONTAINER_ID` and `CONTAINER_NAMESPACE` in its environment; the URI's
//! query becomes its arguments (`binary:///bin/log?-x=1` → `-x 1`).

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a logger may take to say it is ready.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// A parsed `binary://` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logger {
    /// The program.
    pub path: PathBuf,
    /// Its arguments, from the query.
    pub args: Vec<String>,
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `binary://<path>[?k=v&...]`.
pub fn parse(uri: &str) -> Option<Logger> {
    let rest = uri.strip_prefix("binary://")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(unescape(key));
        if !value.is_empty() {
            args.push(unescape(value));
        }
    }
    Some(Logger {
        path: PathBuf::from(unescape(path)),
        args,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), tonic::Status> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| tonic::Status::internal(format!("pipe: {e}")))
}

/// Starts `logger` for container `id` in `namespace`; returns the write
/// ends the process's stdout and stderr get, once the logger is ready.
pub fn start(logger: &Logger, namespace: &str, id: &str) -> Result<(OwnedFd, OwnedFd), tonic::Status> {
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let (ready_read, ready_write) = pipe()?;
    let fds = [out_read.as_raw_fd(), err_read.as_raw_fd(), ready_write.as_raw_fd()];
    let mut command = Command::new(&logger.path);
    command
        .args(&logger.args)
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only dup2 and fcntl between fork and exec, on descriptors
    // opened before the fork.
    unsafe {
        command.pre_exec(move || {
            // Above every target first, so no dup2 overwrites a source.
            let mut moved = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                moved[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if moved[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in moved.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| tonic::Status::invalid_argument(format!("starting the logger {}: {e}", logger.path.display())))?;
    // The logger owns the read ends now; our copy of the ready pipe's write
    // end goes, so its close is the EOF we wait for.
    drop((out_read, err_read, ready_write));
    wait_ready(ready_read)?;
    // Reaped by the shim's reaper when it exits.
    drop(child);
    Ok((out_write, err_write))
}

fn wait_ready(ready: OwnedFd) -> Result<(), tonic::Status> {
    let deadline = Instant::now() + READY_LIMIT;
    let mut file = std::fs::File::from(ready);
    let flags = nix::fcntl::OFlag::O_NONBLOCK;
    let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags));
    let mut buf = [0u8; 64];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(tonic::Status::internal(format!("waiting for the logger: {e}"))),
        }
        if Instant::now() > deadline {
            return Err(tonic::Status::deadline_exceeded("the logger never said it was ready"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_give_the_program_and_its_arguments() {
        let logger = parse("binary:///usr/bin/log%20ger?-id=x&verbose").unwrap();
        assert_eq!(logger.path, PathBuf::from("/usr/bin/log ger"));
        assert_eq!(logger.args, ["-id", "x", "verbose"]);
        assert!(parse("file:///x").is_none());
    }
}
