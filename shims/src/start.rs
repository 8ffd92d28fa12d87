//! `start`: bind the shim's socket, leave a daemonised shim serving it, and
//! print its address for the daemon.
//!
//! The socket lives at `<bundle>/../../../s/<sha256 of address/ns/id>`:
//! the bundle is `<state>/<dir>/<ns>/<id>` under berthd and containerd
//! alike, so both find it in their own state directory. A path past the
//! 108-byte limit of a socket address becomes an abstract socket, written
//! without the `unix://` prefix, as containerd's shims do.

use std::io::Write as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

use crate::args::Args;

/// Longest path a socket address holds (sun_path, less the terminator).
const SOCKET_PATH_LIMIT: usize = 107;

/// The descriptor the serving shim finds its listening socket on.
pub const LISTENER_FD: i32 = 3;

/// Where the shim of `args` listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketAddress {
    /// A socket file.
    Path(PathBuf),
    /// An abstract socket name (without the leading NUL).
    Abstract(String),
}

impl SocketAddress {
    /// For the daemon: `unix://<path>`, or the bare abstract name.
    pub fn display(&self) -> String {
        match self {
            Self::Path(path) => format!("unix://{}", path.display()),
            Self::Abstract(name) => name.clone(),
        }
    }
}

/// The socket address for `args`.
pub fn socket_address(args: &Args) -> SocketAddress {
    let digest = hex::encode(Sha256::digest(format!(
        "{}/{}/{}",
        args.address, args.namespace, args.id
    )));
    let state = args.bundle.parent().and_then(Path::parent).and_then(Path::parent);
    let path = state.map(|s| s.join("s").join(&digest));
    match path {
        Some(path) if path.as_os_str().len() <= SOCKET_PATH_LIMIT => SocketAddress::Path(path),
        _ => SocketAddress::Abstract(format!("/berth-shim/{digest}.sock")),
    }
}

fn bind(address: &SocketAddress) -> Result<UnixListener, String> {
    match address {
        SocketAddress::Path(path) => {
            if let Some(dir) = path.parent() {
                private_dir(dir)?;
            }
            if path.exists() {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(format!("a shim already listens on {}", path.display()));
                }
                let _ = std::fs::remove_file(path);
            }
            bind_private(path)
        }
        SocketAddress::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .map_err(|e| format!("abstract socket {name}: {e}"))?;
            UnixListener::bind_addr(&addr).map_err(|e| format!("binding abstract socket {name}: {e}"))
        }
    }
}

/// Makes `dir` (and its parents) and leaves it 0700: whoever can reach a
/// shim's socket controls its container, so only root may look inside.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let failed = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed)?;
    let mode = std::fs::metadata(dir).map_err(failed)?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    Ok(())
}

/// Binds a socket file that appears at `path` already 0600: bound under a
/// temporary name, given its mode, then renamed into place.
fn bind_private(path: &Path) -> Result<UnixListener, String> {
    use std::os::unix::fs::PermissionsExt as _;
    // Shorter than the final name, so it fits a socket address too.
    let temp = path.with_file_name(format!(".t{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp).map_err(|e| format!("binding {}: {e}", temp.display()))?;
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(format!("binding {}: {e}", path.display()));
    }
    Ok(listener)
}

/// Writes `<bundle>/address` atomically.
fn write_address(bundle: &Path, address: &str) -> Result<(), String> {
    let temp = bundle.join(".address.tmp");
    std::fs::write(&temp, address).map_err(|e| format!("{}: {e}", temp.display()))?;
    std::fs::rename(&temp, bundle.join("address")).map_err(|e| format!("{}: {e}", bundle.display()))
}

/// The serving shim's stderr: the bundle's `log` FIFO when the daemon
/// reads it (never blocking on it), else nothing.
fn log_sink(bundle: &Path) -> Stdio {
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"));
    match fifo {
        Ok(file) => Stdio::from(file),
        Err(_) => Stdio::null(),
    }
}

use std::os::unix::fs::OpenOptionsExt as _;

/// Runs `start`: returns the address printed.
pub fn start(args: &Args) -> Result<String, String> {
    let address = socket_address(args);
    let listener = bind(&address)?;
    let listener_fd: OwnedFd = listener.into();
    let raw = listener_fd.as_raw_fd();
    let exe = std::env::current_exe().map_err(|e| format!("finding the shim binary: {e}"))?;
    let mut command = Command::new(exe);
    command
        .args([
            "-namespace",
            &args.namespace,
            "-address",
            &args.address,
            "-publish-binary",
            &args.publish_binary,
        ])
        .args(["-id", &args.id, "-bundle"])
        .arg(&args.bundle)
        .current_dir(&args.bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_sink(&args.bundle));
    if args.debug {
        command.arg("-debug");
    }
    // SAFETY: between fork and exec only async-signal-safe calls: setsid,
    // dup2 onto a fixed descriptor number (or fcntl).
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let kept = if raw == LISTENER_FD {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, LISTENER_FD)
            };
            if kept < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The serving shim is not waited for: it outlives this process (its
    // parent becomes the init or a subreaper).
    let shim = command.spawn().map_err(|e| format!("starting the shim: {e}"))?;
    drop(listener_fd);
    let _ = std::fs::write(args.bundle.join("shim.pid"), shim.id().to_string());
    let printed = address.display();
    write_address(&args.bundle, &printed)?;
    let mut stdout = std::io::stdout();
    let _ = write!(stdout, "{printed}");
    let _ = stdout.flush();
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_go_three_levels_above_the_bundle_or_become_abstract() {
        let args = Args {
            namespace: "default".into(),
            address: "/run/berth/berth.sock".into(),
            id: "c1".into(),
            bundle: PathBuf::from("/run/berth/tasks/default/c1"),
            ..Args::default()
        };
        let SocketAddress::Path(path) = socket_address(&args) else {
            panic!("a path")
        };
        assert!(path.starts_with("/run/berth/s/"), "{}", path.display());
        assert_eq!(path.file_name().unwrap().len(), 64);
        let deep = Args {
            bundle: PathBuf::from(format!("/{}/tasks/default/c1", "x".repeat(80))),
            ..args
        };
        assert!(matches!(socket_address(&deep), SocketAddress::Abstract(_)));
        assert!(!socket_address(&deep).display().starts_with("unix://"));
    }
}
