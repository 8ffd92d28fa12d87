//! Unpacking a layer tar onto a directory, as containerd's applier does.
//!
//! Per entry: clean the name, open its parent inside the root (making
//! missing parents), then create the entry (replacing what is there unless
//! both are directories), set owner, extended attributes, mode and times.
//! Directory times are set last. OCI whiteouts (`.wh.<name>` deletes a
//! lower entry, `.wh..wh..opq` hides a directory's lower contents) are
//! either carried out (a plain directory) or turned into overlayfs
//! whiteouts (a 0/0 character device, the `trusted.overlay.opaque` xattr)
//! when unpacking straight into an overlay upper directory.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::{Error, Result};

use super::file_pool::{DirIdentity, FileJob, FilePool, MAX_POOLED_FILE, dir_identity};
use super::header_budget::{Budgeted, Window};
use super::root::{self, Root, clean, cstring, is_dir, join, list_dir, mkdir_at, remove_at, stat_at};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const PAX_XATTR: &str = "SCHILY.xattr.";

/// Where and how to unpack.
pub struct Target {
    root: Root,
    /// Unpacking into an overlay upper directory: these are its lower
    /// directories, nearest first, consulted for missing parents.
    overlay_lowers: Option<Vec<Root>>,
}

impl Target {
    /// Unpack into a plain directory tree (whiteouts delete).
    pub fn directory(path: &Path) -> Result<Self> {
        Ok(Self {
            root: Root::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), &e))?,
            overlay_lowers: None,
        })
    }

    /// Unpack into an overlay upper directory with the given lower
    /// directories, nearest first (whiteouts become overlay whiteouts).
    pub fn overlay_upper(upper: &Path, lowers: &[PathBuf]) -> Result<Self> {
        let open = |p: &Path| Root::open(p).map_err(|e| Error::io(format!("opening {}", p.display()), &e));
        Ok(Self {
            root: open(upper)?,
            overlay_lowers: Some(lowers.iter().map(|p| open(p)).collect::<Result<_>>()?),
        })
    }
}

impl Target {
    /// Flushes the filesystem holding the target to disk (syncfs(2)).
    pub fn sync(&self) -> Result<()> {
        self.root
            .sync()
            .map_err(|e| Error::io("syncing the unpacked layer", &e))
    }
}

/// An archive entry the layer is refused for.
fn invalid(name: &Path, why: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!("{}: {why}", entry_label(name)))
}

fn io_error(name: &Path, e: io::Error) -> Error {
    Error::io(entry_label(name), &e)
}

/// The longest entry name an error quotes whole: names can be up to the
/// header budget long, and an error carrying a megabyte of name is one
/// no client shows (or some cannot even receive).
const QUOTED_NAME_LIMIT: usize = 256;

/// `layer entry "<name>"`, the name cut short (with its full length)
/// when it is longer than [`QUOTED_NAME_LIMIT`].
pub(super) fn entry_label(name: &Path) -> String {
    let name = name.display().to_string();
    if name.len() <= QUOTED_NAME_LIMIT {
        return format!("layer entry {name:?}");
    }
    let mut cut = QUOTED_NAME_LIMIT;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("layer entry {:?}… ({} bytes)", &name[..cut], name.len())
}

struct PendingTimes {
    components: Vec<OsString>,
    times: [libc::timespec; 2],
}

struct Applier<'a> {
    target: &'a Target,
    /// Creates small regular files on other threads.
    pool: FilePool,
    /// The parent directory opened last, reused while entries stay in it,
    /// with its identity (device, inode).
    parent_cache: Option<(Vec<OsString>, Arc<OwnedFd>, DirIdentity)>,
    /// Entries this layer created (for opaque whiteouts on plain trees).
    unpacked: HashSet<Vec<OsString>>,
    dirs: Vec<PendingTimes>,
    buffer: Vec<u8>,
}

fn timespec(seconds: i64, nanos: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: seconds,
        tv_nsec: nanos,
    }
}

/// A PAX time value: seconds with an optional fraction.
fn pax_time(value: &[u8]) -> Option<(i64, i64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: i64 = seconds.parse().ok()?;
    let digits: String = fraction.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some((seconds, nanos))
}

/// Unpacks every entry of `archive` onto `target`.
pub fn apply(archive: impl Read, target: &Target) -> Result<()> {
    let window = Window::default();
    let mut archive = tar::Archive::new(Budgeted::new(archive, window.clone()));
    std::thread::scope(|scope| {
        let mut applier = Applier {
            target,
            pool: FilePool::start(scope),
            parent_cache: None,
            unpacked: HashSet::new(),
            dirs: Vec::new(),
            buffer: vec![0u8; 1 << 20],
        };
        let mut entries = archive
            .entries()
            .map_err(|e| Error::invalid_argument(format!("reading the layer tar: {e}")))?;
        for index in 0.. {
            // Finding the next entry reads its headers and records into
            // memory: bounded. Its data, read after, streams.
            window.open();
            let next = entries.next();
            window.close();
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|e| Error::invalid_argument(format!("reading the layer tar: {e}")))?;
            applier.entry(&mut entry)?;
            // What the entry did not use is skipped here, outside the
            // bounded window.
            io::copy(&mut entry, &mut io::sink())
                .map_err(|e| Error::invalid_argument(format!("reading the layer tar: {e}")))?;
            if index == 10 {
                berth_core::failpoint::check("diff.during-apply")?;
            }
        }
        applier.finish()
    })
}

impl Applier<'_> {
    fn invalidate(&mut self, removed: &[OsString]) {
        if self
            .parent_cache
            .as_ref()
            .is_some_and(|(cached, _, _)| cached.starts_with(removed))
        {
            self.parent_cache = None;
        }
    }

    /// Opens the parent directory of an entry, making missing directories.
    fn parent(&mut self, components: &[OsString], name: &Path) -> Result<&Arc<OwnedFd>> {
        Ok(self.parent_with_identity(components, name)?.0)
    }

    /// The parent directory of an entry and which directory it really is:
    /// through symlinks, two names can lead to the same one.
    fn parent_with_identity(&mut self, components: &[OsString], name: &Path) -> Result<(&Arc<OwnedFd>, DirIdentity)> {
        let cached = self
            .parent_cache
            .as_ref()
            .is_some_and(|(c, _, _)| c.as_slice() == components);
        if !cached {
            let fd = self.open_or_make(components, name)?;
            let identity = dir_identity(&fd).map_err(|e| io_error(name, e))?;
            self.parent_cache = Some((components.to_vec(), Arc::new(fd), identity));
        }
        let (_, fd, identity) = self.parent_cache.as_ref().expect("just set");
        Ok((fd, *identity))
    }

    fn open_or_make(&self, components: &[OsString], name: &Path) -> Result<OwnedFd> {
        match self.target.root.open_dir(components) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(invalid(name, "a parent is not a directory"));
            }
            Err(e) => return Err(io_error(name, e)),
        }
        // Make each missing component in turn, like mkdir -p.
        let mut parent = self.target.root.open_dir(&[]).map_err(|e| io_error(name, e))?;
        for i in 0..components.len() {
            match self.target.root.open_dir(&components[..=i]) {
                Ok(fd) => parent = fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match mkdir_at(&parent, &components[i], 0o755) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            return Err(invalid(name, "a parent is a symlink that leads nowhere"));
                        }
                        Err(e) => return Err(io_error(name, e)),
                    }
                    self.copy_up_dir(&parent, &components[..=i]);
                    parent = self
                        .target
                        .root
                        .open_dir(&components[..=i])
                        .map_err(|e| io_error(name, e))?;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(invalid(name, "a parent is not a directory"));
                }
                Err(e) => return Err(io_error(name, e)),
            }
        }
        Ok(parent)
    }

    /// A parent made in an overlay upper directory takes the owner, mode and
    /// times of the same directory in the nearest lower layer that has one.
    fn copy_up_dir(&self, parent: &OwnedFd, components: &[OsString]) {
        let Some(lowers) = &self.target.overlay_lowers else {
            return;
        };
        let name = components.last().expect("at least one component");
        for lower in lowers {
            let Ok(fd) = lower.open_dir(components) else { continue };
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            // SAFETY: fd is open and st writable.
            if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
                return;
            }
            // SAFETY: fstat succeeded.
            let st = unsafe { st.assume_init() };
            let times = [
                timespec(st.st_atime, st.st_atime_nsec),
                timespec(st.st_mtime, st.st_mtime_nsec),
            ];
            let owner = Some((st.st_uid, st.st_gid));
            if let Err(e) = root::set_metadata_at(parent, name, owner, Some(st.st_mode & 0o7777), Some(times)) {
                tracing::debug!(error = %e, "cannot copy directory attributes up");
            }
            return;
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_name = entry
            .path()
            .map_err(|e| Error::invalid_argument(format!("layer entry name: {e}")))?
            .into_owned();
        let entry_type = entry.header().entry_type();
        if entry_type == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        let mut components = clean(&raw_name);
        let Some(base) = components.pop() else {
            return Ok(()); // the root itself: containerd ignores it too
        };
        let base_bytes = base.as_bytes();

        // PAX records: owner, times and extended attributes.
        let header = entry.header().clone();
        let mut uid = u32::try_from(header.uid().unwrap_or(0)).map_err(|_| invalid(&raw_name, "uid out of range"))?;
        let mut gid = u32::try_from(header.gid().unwrap_or(0)).map_err(|_| invalid(&raw_name, "gid out of range"))?;
        let mode = header.mode().map_err(|e| invalid(&raw_name, e))? & 0o7777;
        let mut mtime = (i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0), 0i64);
        let mut atime: Option<(i64, i64)> = None;
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(|e| invalid(&raw_name, e))? {
            for extension in extensions {
                let extension = extension.map_err(|e| invalid(&raw_name, e))?;
                let Ok(key) = extension.key() else { continue };
                match key {
                    "uid" => {
                        uid = std::str::from_utf8(extension.value_bytes())
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(uid)
                    }
                    "gid" => {
                        gid = std::str::from_utf8(extension.value_bytes())
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(gid)
                    }
                    "mtime" => mtime = pax_time(extension.value_bytes()).unwrap_or(mtime),
                    "atime" => atime = pax_time(extension.value_bytes()),
                    _ => {
                        if let Some(name) = key.strip_prefix(PAX_XATTR) {
                            xattrs.push((name.to_string(), extension.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
        let atime = atime.filter(|a| *a > mtime).unwrap_or(mtime);
        let times = [timespec(atime.0, atime.1), timespec(mtime.0, mtime.1)];

        // Whiteouts and hard links act on what is already there: let every
        // queued file land first. So must any entry at, or under, a path
        // still being written.
        let mut full = components.clone();
        full.push(base.clone());
        if base_bytes.starts_with(WHITEOUT_PREFIX.as_bytes())
            || entry_type == tar::EntryType::Link
            || self.pool.touches(&full)
        {
            self.pool.barrier()?;
        }

        // Whiteouts.
        if base_bytes == OPAQUE_WHITEOUT.as_bytes() {
            return self.opaque(&components, &raw_name);
        }
        if let Some(original) = base_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if original.is_empty() || original == b"." || original == b".." {
                return Err(invalid(&raw_name, "invalid whiteout name"));
            }
            return self.whiteout(&components, OsStr::from_bytes(original), uid, gid, &raw_name);
        }

        let link_target = if entry_type == tar::EntryType::Link {
            let link = entry
                .link_name()
                .map_err(|e| invalid(&raw_name, e))?
                .ok_or_else(|| invalid(&raw_name, "hard link without a target"))?;
            Some(clean(&link))
        } else {
            None
        };
        let symlink_target = if entry_type == tar::EntryType::Symlink {
            Some(
                entry
                    .link_name()
                    .map_err(|e| invalid(&raw_name, e))?
                    .ok_or_else(|| invalid(&raw_name, "symlink without a target"))?
                    .into_owned(),
            )
        } else {
            None
        };
        let device = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );

        // The same file may be reached under another name (a symlinked
        // parent): if it is still being written, let it land first.
        let (_, identity) = self.parent_with_identity(&components, &raw_name)?;
        if self.pool.writes(identity, &base) {
            self.pool.barrier()?;
        }

        // Replace whatever is there, unless both are directories.
        let parent = self.parent(&components, &raw_name)?;
        let existing = stat_at(parent, &base).map_err(|e| io_error(&raw_name, e))?;
        let is_dir_entry = entry_type == tar::EntryType::Directory;
        if let Some(st) = existing
            && !(is_dir(&st) && is_dir_entry)
        {
            // A directory being replaced may hold files still being written.
            self.pool.barrier()?;
            let parent = self.parent(&components, &raw_name)?;
            remove_at(parent, &base).map_err(|e| io_error(&raw_name, e))?;
            self.invalidate(&full);
        }
        let parent = Arc::clone(self.parent(&components, &raw_name)?);
        let cname = cstring(&base).map_err(|e| io_error(&raw_name, e))?;

        let size = header.size().map_err(|e| invalid(&raw_name, e))?;
        if matches!(entry_type, tar::EntryType::Regular | tar::EntryType::Continuous) && size <= MAX_POOLED_FILE {
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry
                .read_to_end(&mut data)
                .map_err(|e| invalid(&raw_name, format!("reading its data: {e}")))?;
            let job = FileJob {
                parent,
                name: cname,
                entry: raw_name.clone(),
                data,
                owner: (uid, gid),
                mode,
                times,
                xattrs,
            };
            self.pool.submit(full.clone(), (identity, base.clone()), job)?;
            self.unpacked.insert(full);
            return Ok(());
        }

        let mut set_mode = true;
        match entry_type {
            tar::EntryType::Directory => {
                if existing.is_none_or(|st| !is_dir(&st)) {
                    mkdir_at(&parent, &base, mode).map_err(|e| io_error(&raw_name, e))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                // SAFETY: parent is open, cname NUL-terminated; O_EXCL with
                // O_NOFOLLOW never opens something that was already there.
                let fd = unsafe {
                    libc::openat(
                        parent.as_raw_fd(),
                        cname.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                        0o600,
                    )
                };
                if fd < 0 {
                    return Err(io_error(&raw_name, io::Error::last_os_error()));
                }
                // SAFETY: fd was just opened and is owned by nothing else.
                let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                copy_data(entry, &mut file, &mut self.buffer, &raw_name)?;
            }
            tar::EntryType::Symlink => {
                let target = cstring(symlink_target.as_deref().unwrap_or(Path::new("")).as_os_str())
                    .map_err(|e| io_error(&raw_name, e))?;
                // SAFETY: both strings NUL-terminated; parent is open.
                if unsafe { libc::symlinkat(target.as_ptr(), parent.as_raw_fd(), cname.as_ptr()) } < 0 {
                    return Err(io_error(&raw_name, io::Error::last_os_error()));
                }
                set_mode = false;
            }
            tar::EntryType::Link => {
                let mut target = link_target.unwrap_or_default();
                let target_base = target
                    .pop()
                    .ok_or_else(|| invalid(&raw_name, "hard link to the root"))?;
                let target_dir = self.target.root.open_dir(&target).map_err(|e| {
                    if e.raw_os_error() == Some(libc::ENOENT) {
                        invalid(&raw_name, "hard link target does not exist in the layer")
                    } else {
                        io_error(&raw_name, e)
                    }
                })?;
                let ctarget = cstring(&target_base).map_err(|e| io_error(&raw_name, e))?;
                // SAFETY: both dirs open, both names NUL-terminated; flags 0
                // links the entry itself (never follows a symlink).
                let rc = unsafe {
                    libc::linkat(
                        target_dir.as_raw_fd(),
                        ctarget.as_ptr(),
                        parent.as_raw_fd(),
                        cname.as_ptr(),
                        0,
                    )
                };
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    return Err(if e.raw_os_error() == Some(libc::ENOENT) {
                        invalid(&raw_name, "hard link target does not exist in the layer")
                    } else {
                        io_error(&raw_name, e)
                    });
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind = match entry_type {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let dev = libc::makedev(device.0, device.1);
                // SAFETY: parent open, name NUL-terminated.
                if unsafe { libc::mknodat(parent.as_raw_fd(), cname.as_ptr(), kind | mode, dev) } < 0 {
                    return Err(io_error(&raw_name, io::Error::last_os_error()));
                }
            }
            other => return Err(invalid(&raw_name, format!("unsupported tar entry type {other:?}"))),
        }

        root::set_metadata_at(&parent, &base, Some((uid, gid)), None, None).map_err(|e| io_error(&raw_name, e))?;
        for (key, value) in &xattrs {
            if let Err(e) = root::set_xattr_at(&parent, &base, key, value) {
                let skip = matches!(e.raw_os_error(), Some(libc::ENOTSUP))
                    || (e.raw_os_error() == Some(libc::EPERM)
                        && key.starts_with("user.")
                        && !may_carry_user_xattrs(entry_type));
                if skip {
                    tracing::warn!(entry = %raw_name.display(), key, "extended attribute ignored: not supported here");
                    continue;
                }
                return Err(io_error(&raw_name, e));
            }
        }
        root::set_metadata_at(
            &parent,
            &base,
            None,
            set_mode.then_some(mode),
            (!is_dir_entry).then_some(times),
        )
        .map_err(|e| io_error(&raw_name, e))?;
        if is_dir_entry {
            self.dirs.push(PendingTimes {
                components: full.clone(),
                times,
            });
        }
        self.unpacked.insert(full);
        Ok(())
    }

    fn whiteout(&mut self, components: &[OsString], original: &OsStr, uid: u32, gid: u32, name: &Path) -> Result<()> {
        let overlay = self.target.overlay_lowers.is_some();
        let parent = self
            .parent(components, name)?
            .try_clone()
            .map_err(|e| io_error(name, e))?;
        if overlay {
            let c = cstring(original).map_err(|e| io_error(name, e))?;
            // SAFETY: parent open, name NUL-terminated; a 0/0 character
            // device is overlayfs's whiteout.
            if unsafe { libc::mknodat(parent.as_raw_fd(), c.as_ptr(), libc::S_IFCHR, 0) } < 0 {
                return Err(io_error(name, io::Error::last_os_error()));
            }
            root::set_metadata_at(&parent, original, Some((uid, gid)), None, None).map_err(|e| io_error(name, e))?;
        } else {
            remove_at(&parent, original).map_err(|e| io_error(name, e))?;
            let mut full = components.to_vec();
            full.push(original.to_os_string());
            self.invalidate(&full);
        }
        Ok(())
    }

    fn opaque(&mut self, components: &[OsString], name: &Path) -> Result<()> {
        let overlay = self.target.overlay_lowers.is_some();
        let dir = self
            .parent(components, name)?
            .try_clone()
            .map_err(|e| io_error(name, e))?;
        if overlay {
            return root::set_xattr_fd(&dir, "trusted.overlay.opaque", b"y").map_err(|e| io_error(name, e));
        }
        // A plain tree: remove what lower layers put in this directory.
        for child in list_dir(&dir).map_err(|e| io_error(name, e))? {
            let mut full = components.to_vec();
            full.push(child.clone());
            if !self.unpacked.contains(&full) {
                remove_at(&dir, &child).map_err(|e| io_error(name, e))?;
                self.invalidate(&full);
            }
        }
        Ok(())
    }

    /// Directory times, set once nothing more is written into them.
    fn finish(&mut self) -> Result<()> {
        self.pool.barrier()?;
        self.parent_cache = None;
        for pending in self.dirs.drain(..).rev() {
            let Ok(fd) = self.target.root.open_dir(&pending.components) else {
                continue; // removed by a later entry
            };
            // SAFETY: fd is open; times is a two-element array.
            if unsafe { libc::futimens(fd.as_raw_fd(), pending.times.as_ptr()) } != 0 {
                tracing::debug!(path = %join(&pending.components).display(), "cannot set directory times");
            }
        }
        Ok(())
    }
}

/// Whether an entry type may carry `user.*` xattrs (files and directories
/// only); for the others a refusal is ignored, as containerd does.
fn may_carry_user_xattrs(entry_type: tar::EntryType) -> bool {
    matches!(
        entry_type,
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory
    )
}

/// Copies an entry's data into the file: a read failure is a bad layer
/// (truncated, corrupt), a write failure the disk's.
fn copy_data(source: &mut impl Read, file: &mut std::fs::File, buffer: &mut [u8], name: &Path) -> Result<()> {
    use std::io::Write as _;
    loop {
        let n = match source.read(buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(invalid(name, format!("reading its data: {e}"))),
        };
        file.write_all(&buffer[..n]).map_err(|e| io_error(name, e))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_nanoseconds() {
        assert_eq!(pax_time(b"1704067200"), Some((1_704_067_200, 0)));
        assert_eq!(pax_time(b"1704067200.5"), Some((1_704_067_200, 500_000_000)));
        assert_eq!(pax_time(b"1704067200.123456789123"), Some((1_704_067_200, 123_456_789)));
        assert_eq!(pax_time(b"soon"), None);
    }
}
