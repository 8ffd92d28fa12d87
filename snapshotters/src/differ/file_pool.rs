//! Writing a layer's small files on several threads.
//!
//! A layer is one sequential tar stream, but creating a file (allocating
//! its inode, writing it, setting owner, attributes, mode and times) is
//! independent of the next one. The unpacker reads each small file whole
//! and hands it here; workers create it in its (already open) parent
//! directory. The unpacker calls [`FilePool::barrier`] before anything that
//! could touch a file still in flight (a path written again, a hard link, a
//! whiteout) and before setting directory times, so the result is the same
//! as writing one entry after another.

use std::collections::HashSet;
use std::ffi::{CString, OsString};
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};

use berth_core::{Error, Result};

/// Files up to this size are handed to the workers; larger ones are
/// streamed by the unpacker itself (no whole-file buffering).
pub const MAX_POOLED_FILE: u64 = 256 << 10;

/// Worker threads: more than cores, since inode allocation waits.
const WORKERS: usize = 4;

/// Files queued at most (bounds memory to QUEUE * MAX_POOLED_FILE).
const QUEUE: usize = 64;

/// One file to create.
pub struct FileJob {
    /// The open parent directory.
    pub parent: Arc<OwnedFd>,
    /// The file's name in it.
    pub name: CString,
    /// The entry's path in the layer, for messages.
    pub entry: PathBuf,
    /// Contents.
    pub data: Vec<u8>,
    /// Owner.
    pub owner: (u32, u32),
    /// Permission bits (set after the owner, so set-id bits stay).
    pub mode: u32,
    /// Access and modification times.
    pub times: [libc::timespec; 2],
    /// Extended attributes.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

#[derive(Default)]
struct Progress {
    in_flight: usize,
    failure: Option<Error>,
}

struct Shared {
    progress: Mutex<Progress>,
    idle: Condvar,
}

/// Which directory a descriptor is open on: (device, inode).
pub type DirIdentity = (u64, u64);

/// The identity of the directory `fd` is open on.
pub fn dir_identity(fd: &OwnedFd) -> io::Result<DirIdentity> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fd is open and st is writable.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled st.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

/// Workers creating files, and the paths they may still be writing.
pub struct FilePool {
    sender: Option<SyncSender<FileJob>>,
    shared: Arc<Shared>,
    /// Paths handed out since the last barrier, as the layer names them.
    pending: HashSet<Vec<OsString>>,
    /// The same files by the directory they are really in and their name
    /// there, which symlinked parents cannot disguise.
    pending_files: HashSet<(DirIdentity, OsString)>,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn create(job: &FileJob) -> io::Result<()> {
    // SAFETY: the parent fd is open (the Arc keeps it), the name is
    // NUL-terminated; O_EXCL|O_NOFOLLOW never opens what was there.
    let fd = unsafe {
        libc::openat(
            job.parent.as_raw_fd(),
            job.name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(&job.data)?;
    // SAFETY: the file's fd is open for the calls below; the pointers point
    // at NUL-terminated keys, `value.len()` bytes, and two timespecs.
    check(unsafe { libc::fchown(file.as_raw_fd(), job.owner.0, job.owner.1) })?;
    for (key, value) in &job.xattrs {
        let ckey = CString::new(key.as_str()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr key"))?;
        // SAFETY: as above.
        let rc = unsafe { libc::fsetxattr(file.as_raw_fd(), ckey.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        match check(rc) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
                tracing::warn!(entry = %job.entry.display(), key, "extended attribute ignored: not supported here");
            }
            other => other?,
        }
    }
    // SAFETY: as above.
    check(unsafe { libc::fchmod(file.as_raw_fd(), job.mode) })?;
    // SAFETY: as above.
    check(unsafe { libc::futimens(file.as_raw_fd(), job.times.as_ptr()) })
}

fn work(jobs: Arc<Mutex<Receiver<FileJob>>>, shared: Arc<Shared>) {
    loop {
        let job = {
            let receiver = jobs.lock().unwrap_or_else(|p| p.into_inner());
            receiver.recv()
        };
        let Ok(job) = job else { return };
        let outcome = create(&job).map_err(|e| Error::io(super::apply::entry_label(&job.entry), &e));
        let mut progress = shared.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.in_flight -= 1;
        if let Err(e) = outcome {
            progress.failure.get_or_insert(e);
        }
        if progress.in_flight == 0 {
            shared.idle.notify_all();
        }
    }
}

impl FilePool {
    /// Starts the workers inside `scope`; they end when the pool is dropped.
    pub fn start<'scope>(scope: &'scope std::thread::Scope<'scope, '_>) -> Self {
        let (sender, receiver) = sync_channel::<FileJob>(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress::default()),
            idle: Condvar::new(),
        });
        for _ in 0..WORKERS {
            let (receiver, shared) = (Arc::clone(&receiver), Arc::clone(&shared));
            scope.spawn(move || work(receiver, shared));
        }
        Self {
            sender: Some(sender),
            shared,
            pending: HashSet::new(),
            pending_files: HashSet::new(),
        }
    }

    /// Whether `path` or one of its parents may still be being written.
    pub fn touches(&self, path: &[OsString]) -> bool {
        !self.pending.is_empty() && (1..=path.len()).any(|n| self.pending.contains(&path[..n]))
    }

    /// Whether the file `name` in directory `dir` may still be being written.
    pub fn writes(&self, dir: DirIdentity, name: &OsString) -> bool {
        !self.pending_files.is_empty() && self.pending_files.contains(&(dir, name.clone()))
    }

    /// Queues a file at `path` (its components in the layer), which is
    /// `file` (its directory and name) on disk.
    pub fn submit(&mut self, path: Vec<OsString>, file: (DirIdentity, OsString), job: FileJob) -> Result<()> {
        self.failed()?;
        self.shared.progress.lock().unwrap_or_else(|p| p.into_inner()).in_flight += 1;
        self.pending.insert(path);
        self.pending_files.insert(file);
        let sender = self.sender.as_ref().expect("pool running");
        if sender.send(job).is_err() {
            return Err(Error::internal("the file workers stopped"));
        }
        Ok(())
    }

    fn failed(&self) -> Result<()> {
        match &self.shared.progress.lock().unwrap_or_else(|p| p.into_inner()).failure {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Waits until every queued file is written; the first failure, if any.
    pub fn barrier(&mut self) -> Result<()> {
        let mut progress = self.shared.progress.lock().unwrap_or_else(|p| p.into_inner());
        while progress.in_flight > 0 {
            progress = self.shared.idle.wait(progress).unwrap_or_else(|p| p.into_inner());
        }
        self.pending.clear();
        self.pending_files.clear();
        match &progress.failure {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl Drop for FilePool {
    fn drop(&mut self) {
        // Closing the channel ends the workers once the queue is drained.
        self.sender = None;
    }
}
