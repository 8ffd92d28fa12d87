//! A task's bundle: `<state>/tasks/<ns>/<id>/` with the container's
//! `config.json`, a `rootfs/` mount point, a `work` link to
//! `<root>/tasks/<ns>/<id>/` (persistent scratch space for the shim) and
//! the `log` FIFO the shim writes to, which the daemon drains.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncBufReadExt as _;
use tokio::task::AbortHandle;

use crate::error::{Error, Result};

/// The directories of one task.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// `<state>/tasks/<ns>/<id>`.
    pub dir: PathBuf,
    /// `<root>/tasks/<ns>/<id>`.
    pub work: PathBuf,
    /// The task copying the log FIFO into the daemon's log, shared by the
    /// bundle's clones: it holds the FIFO open (read-write, so it never
    /// sees an end of file) until [`Bundle::remove`] stops it.
    log_drain: Arc<Mutex<Option<AbortHandle>>>,
}

impl Bundle {
    /// The bundle of task `id` in `namespace`.
    pub fn at(state: &Path, root: &Path, namespace: &str, id: &str) -> Self {
        Self {
            dir: state.join(namespace).join(id),
            work: root.join(namespace).join(id),
            log_drain: Arc::default(),
        }
    }

    /// Makes the bundle: directories, `config.json` (the container's spec
    /// as given), the work link and the log FIFO. A bundle already there is
    /// AlreadyExists (a task exists, or one is being made).
    pub fn create(&self, spec_json: &[u8]) -> Result<()> {
        if let Some(parent) = self.dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), &e))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::already_exists(format!("task bundle {}", self.dir.display())));
            }
            Err(e) => return Err(Error::io(format!("creating {}", self.dir.display()), &e)),
        }
        let made = (|| {
            std::fs::write(self.dir.join("config.json"), spec_json)
                .map_err(|e| Error::io("writing config.json", &e))?;
            std::fs::create_dir(self.dir.join("rootfs")).map_err(|e| Error::io("creating rootfs", &e))?;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(&self.work)
                .map_err(|e| Error::io(format!("creating {}", self.work.display()), &e))?;
            std::os::unix::fs::symlink(&self.work, self.dir.join("work"))
                .map_err(|e| Error::io("linking the work directory", &e))?;
            nix::unistd::mkfifo(&self.dir.join("log"), nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| Error::internal(format!("creating the log FIFO: {e}")))?;
            Ok(())
        })();
        if made.is_err() {
            self.remove();
        }
        made
    }

    /// Copies what the shim writes to `log` into the daemon's log, until
    /// the daemon stops. Opened read-write, so it never blocks or ends
    /// while the shim restarts its end.
    pub fn drain_log(&self, namespace: &str, id: &str) {
        let path = self.dir.join("log");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path);
        let Ok(file) = file else { return };
        let Ok(receiver) = tokio::net::unix::pipe::Receiver::from_file(file) else {
            return;
        };
        let (namespace, id) = (namespace.to_string(), id.to_string());
        let drain = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(receiver).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(namespace = %namespace, task = %id, "shim: {line}");
            }
        });
        let earlier = self.drain_slot().replace(drain.abort_handle());
        if let Some(earlier) = earlier {
            earlier.abort();
        }
    }

    fn drain_slot(&self) -> std::sync::MutexGuard<'_, Option<AbortHandle>> {
        self.log_drain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the bundle and the work directory (whatever is left of
    /// them), and closes the log FIFO.
    pub fn remove(&self) {
        if let Some(drain) = self.drain_slot().take() {
            drain.abort();
        }
        let rootfs = self.dir.join("rootfs");
        while nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}
