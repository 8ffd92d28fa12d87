//! One berthd per root: an exclusive lock on `<root>/berthd.lock`, held for
//! the daemon's life, and a check that no daemon already answers on the
//! socket path (a stale socket file from a crash is removed).

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use berth_core::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// File under the root that carries the lock and the holder's pid.
pub const LOCK_FILE: &str = "berthd.lock";

/// Held while the daemon runs; dropping it releases the root.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
}

/// Takes the root's lock, or says which process holds it.
pub fn lock_root(root: &Path) -> Result<InstanceLock> {
    let path = root.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            return Err(Error::unavailable(format!(
                "another berthd{who} is already running with root {}",
                root.display()
            )));
        }
        Err((_, errno)) => {
            return Err(Error::io(
                format!("locking {}", path.display()),
                &std::io::Error::from(errno),
            ));
        }
    };
    // Record who holds the lock so the next refusal can name it.
    let pid = std::process::id().to_string();
    let record = (|| -> std::io::Result<()> {
        lock.set_len(0)?;
        lock.rewind()?;
        lock.write_all(pid.as_bytes())?;
        lock.sync_all()
    })();
    if let Err(e) = record {
        tracing::warn!(error = %e, "cannot record pid in the lock file");
    }
    Ok(InstanceLock { _lock: lock })
}

/// Makes `path` free for a new listening socket: refuses if a daemon
/// answers there, removes a stale socket file, refuses to remove anything
/// that is not a socket.
pub fn claim_socket_path(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("checking {}", path.display()), &e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(Error::failed_precondition(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::unavailable(format!(
                    "another daemon is already serving on {}",
                    path.display()
                )));
            }
            std::fs::remove_file(path)
                .map_err(|e| Error::io(format!("removing stale socket {}", path.display()), &e))?;
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), &e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ErrorKind;

    #[test]
    fn a_second_lock_on_the_same_root_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_root(dir.path()).unwrap();
        let err = lock_root(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        let message = err.to_string();
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        assert!(message.contains(&dir.path().display().to_string()), "{message}");
    }

    #[test]
    fn the_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(lock_root(dir.path()).unwrap());
        lock_root(dir.path()).unwrap();
    }

    #[test]
    fn socket_paths_are_claimed_carefully() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/d.sock");
        claim_socket_path(&path).unwrap();
        assert!(path.parent().unwrap().is_dir());

        // A live listener is another daemon.
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(claim_socket_path(&path).unwrap_err().kind(), ErrorKind::Unavailable);
        // A socket nobody listens on is stale and removed.
        drop(listener);
        claim_socket_path(&path).unwrap();
        assert!(!path.exists());
        // A regular file is never removed.
        std::fs::write(&path, "data").unwrap();
        assert_eq!(
            claim_socket_path(&path).unwrap_err().kind(),
            ErrorKind::FailedPrecondition
        );
        assert!(path.exists());
    }
}
