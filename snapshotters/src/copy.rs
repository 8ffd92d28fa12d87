//! Copying a snapshot's tree for the native snapshotter.
//!
//! A faithful copy: regular files (reflinked with FICLONE where the
//! filesystem shares extents, else copied in the kernel with
//! copy_file_range, holes kept), symlinks, device nodes and FIFOs, hard links
//! as hard links, extended attributes, ownership, modes (set after
//! ownership, so set-id bits survive) and times (directories last, after
//! their contents stopped changing them). Files are copied by several
//! threads at once, each taking the next file when done with one; the tree
//! is walked once up front.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use berth_core::{Error, Result};

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Entries copied (directories included).
    pub entries: u64,
    /// Bytes of regular file data.
    pub bytes: u64,
    /// Whether regular files were reflinked rather than copied.
    pub reflinked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    Dir,
    File,
    Symlink,
    Special,
    Socket,
}

struct Item {
    rel: PathBuf,
    meta: std::fs::Metadata,
    kind: Type,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), &e)
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid_argument(format!("{} contains NUL", path.display())))
}

fn check(rc: libc::c_int, what: &str, path: &Path) -> Result<()> {
    if rc < 0 {
        Err(io(what, path, std::io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// Copies the tree under `src` into the existing empty directory `dst`.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats> {
    let items = scan(src)?;
    // Directories first, in walk order (parents before children).
    for item in items
        .iter()
        .filter(|i| i.kind == Type::Dir && !i.rel.as_os_str().is_empty())
    {
        let target = dst.join(&item.rel);
        std::fs::DirBuilder::new()
            .mode(item.meta.mode() & 0o7777)
            .create(&target)
            .map_err(|e| io("creating", &target, e))?;
    }

    // Hard-linked inodes are copied once; their other names are linked after.
    let mut primary: HashMap<(u64, u64), usize> = HashMap::new();
    let mut copies = Vec::new();
    let mut links = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match item.kind {
            Type::Dir | Type::Socket => {}
            _ if item.meta.nlink() > 1 => match primary.entry((item.meta.dev(), item.meta.ino())) {
                std::collections::hash_map::Entry::Occupied(first) => links.push((index, *first.get())),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(index);
                    copies.push(index);
                }
            },
            _ => copies.push(index),
        }
    }

    let reflink = AtomicBool::new(true);
    let bytes = AtomicU64::new(0);
    // Workers take the next file as they finish one, so a few large files
    // do not leave the others idle; more workers than cores, as creating
    // inodes mostly waits.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() * 4)
        .unwrap_or(8)
        .clamp(2, 16)
        .min(copies.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (items, copies, reflink, bytes, next, failed) = (&items, &copies, &reflink, &bytes, &next, &failed);
                scope.spawn(move || -> Result<()> {
                    while !failed.load(Ordering::Relaxed) {
                        let Some(&index) = copies.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let item = &items[index];
                        let written = copy_entry(&src.join(&item.rel), &dst.join(&item.rel), item, reflink)
                            .inspect_err(|_| failed.store(true, Ordering::Relaxed))?;
                        bytes.fetch_add(written, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| Error::internal("a copy thread panicked"))??;
        }
        Ok(())
    })?;

    for (index, first) in links {
        let (from, to) = (dst.join(&items[first].rel), dst.join(&items[index].rel));
        std::fs::hard_link(&from, &to).map_err(|e| io("linking", &to, e))?;
    }

    // Directory attributes last, deepest first, so later writes do not
    // change the times just set.
    for item in items.iter().rev().filter(|i| i.kind == Type::Dir) {
        let (from, to) = (src.join(&item.rel), dst.join(&item.rel));
        set_attributes(&from, &to, &item.meta, false)?;
    }
    let sockets = items.iter().filter(|i| i.kind == Type::Socket).count();
    if sockets > 0 {
        tracing::debug!(sockets, "sockets are not copied");
    }
    Ok(CopyStats {
        entries: items.len() as u64,
        bytes: bytes.into_inner(),
        reflinked: reflink.into_inner() && !copies.is_empty(),
    })
}

fn scan(src: &Path) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = src.join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io("reading", &path, e))?;
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            Type::Dir
        } else if file_type.is_file() {
            Type::File
        } else if file_type.is_symlink() {
            Type::Symlink
        } else if std::os::unix::fs::FileTypeExt::is_socket(&file_type) {
            Type::Socket
        } else {
            Type::Special
        };
        if kind == Type::Dir {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| io("listing", &path, e))?
                .map(|entry| entry.map(|e| rel.join(e.file_name())))
                .collect::<std::io::Result<_>>()
                .map_err(|e| io("listing", &path, e))?;
            // Reverse so the stack yields them in name order.
            children.sort();
            stack.extend(children.into_iter().rev());
        }
        items.push(Item { rel, meta, kind });
    }
    Ok(items)
}

/// Copies one non-directory entry; returns bytes of data copied.
fn copy_entry(from: &Path, to: &Path, item: &Item, reflink: &AtomicBool) -> Result<u64> {
    let mut written = 0;
    match item.kind {
        Type::File => written = copy_file(from, to, &item.meta, reflink)?,
        Type::Symlink => {
            let target = std::fs::read_link(from).map_err(|e| io("reading link", from, e))?;
            std::os::unix::fs::symlink(&target, to).map_err(|e| io("creating link", to, e))?;
        }
        Type::Special => {
            let c = cpath(to)?;
            // SAFETY: c is a valid NUL-terminated path; mode and device come from lstat.
            let rc = unsafe { libc::mknod(c.as_ptr(), item.meta.mode(), item.meta.rdev()) };
            check(rc, "creating node", to)?;
        }
        Type::Dir | Type::Socket => return Ok(0),
    }
    set_attributes(from, to, &item.meta, item.kind == Type::Symlink)?;
    Ok(written)
}

fn copy_file(from: &Path, to: &Path, meta: &std::fs::Metadata, reflink: &AtomicBool) -> Result<u64> {
    let source = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(|e| io("opening", from, e))?;
    let target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| io("creating", to, e))?;
    let size = meta.len();
    if size == 0 {
        return Ok(0);
    }
    if reflink.load(Ordering::Relaxed) {
        // SAFETY: both descriptors are open for the duration of the call;
        // FICLONE takes the source fd as its argument.
        let rc = unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
        if rc == 0 {
            return Ok(size);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY | libc::ENOSYS) => {
                reflink.store(false, Ordering::Relaxed);
            }
            _ => return Err(io("reflinking", to, e)),
        }
    }
    let sparse = meta.blocks() * 512 < size;
    if sparse {
        copy_data_segments(&source, &target, size, to)?;
    } else {
        copy_range(&source, &target, 0, size, to)?;
    }
    Ok(size)
}

/// Copies only the data segments of a sparse file, keeping its holes.
fn copy_data_segments(source: &File, target: &File, size: u64, to: &Path) -> Result<()> {
    let mut offset: i64 = 0;
    let end = i64::try_from(size).unwrap_or(i64::MAX);
    while offset < end {
        // SAFETY: lseek on an open fd; returns -1 with ENXIO past the last data.
        let data = unsafe { libc::lseek(source.as_raw_fd(), offset, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(io("seeking data in", to, e));
        }
        // SAFETY: as above; SEEK_HOLE always finds a hole at the end of file.
        let hole = unsafe { libc::lseek(source.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io("seeking a hole in", to, std::io::Error::last_os_error()));
        }
        copy_range(source, target, data as u64, (hole - data) as u64, to)?;
        offset = hole;
    }
    target.set_len(size).map_err(|e| io("sizing", to, e))
}

/// Copies `len` bytes at `offset` with copy_file_range, falling back to
/// read/write where the kernel cannot.
fn copy_range(source: &File, target: &File, offset: u64, len: u64, to: &Path) -> Result<()> {
    let mut src_off = i64::try_from(offset).unwrap_or(i64::MAX);
    let mut dst_off = src_off;
    let mut left = len;
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        // SAFETY: both fds are open; the offsets are ours and advanced by the kernel.
        let n = unsafe {
            libc::copy_file_range(
                source.as_raw_fd(),
                &mut src_off,
                target.as_raw_fd(),
                &mut dst_off,
                chunk,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) {
                return copy_with_read_write(source, target, src_off as u64, dst_off as u64, left, to);
            }
            return Err(io("copying into", to, e));
        }
        if n == 0 {
            break; // the source is shorter than it was; copy what there is
        }
        left -= n as u64;
    }
    Ok(())
}

fn copy_with_read_write(source: &File, target: &File, src: u64, dst: u64, len: u64, to: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt as _;
    let mut buffer = vec![0u8; 1 << 20];
    let (mut src, mut dst, mut left) = (src, dst, len);
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buffer.len());
        let n = source
            .read_at(&mut buffer[..want], src)
            .map_err(|e| io("reading for", to, e))?;
        if n == 0 {
            break;
        }
        target
            .write_all_at(&buffer[..n], dst)
            .map_err(|e| io("writing", to, e))?;
        (src, dst, left) = (src + n as u64, dst + n as u64, left - n as u64);
    }
    Ok(())
}

/// Ownership, extended attributes, mode and times of `to` from `from`.
fn set_attributes(from: &Path, to: &Path, meta: &std::fs::Metadata, is_symlink: bool) -> Result<()> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid())).map_err(|e| io("chown", to, e))?;
    copy_xattrs(from, to)?;
    if !is_symlink {
        let c = cpath(to)?;
        // SAFETY: valid path; chmod after chown so set-id bits are kept.
        check(unsafe { libc::chmod(c.as_ptr(), meta.mode() & 0o7777) }, "chmod", to)?;
    }
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    let c = cpath(to)?;
    // SAFETY: valid path and a two-element timespec array; nofollow keeps symlinks' own times.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    check(rc, "setting times of", to)
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let (cfrom, cto) = (cpath(from)?, cpath(to)?);
    // SAFETY: a null buffer of size 0 asks for the size of the list.
    let size = unsafe { libc::llistxattr(cfrom.as_ptr(), std::ptr::null_mut(), 0) };
    if size <= 0 {
        return Ok(()); // none, or a filesystem without xattrs
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: names has `size` bytes for the kernel to fill.
    let size = unsafe { libc::llistxattr(cfrom.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size < 0 {
        return Err(io("listing xattrs of", from, std::io::Error::last_os_error()));
    }
    for name in names[..size as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| Error::internal("xattr name with NUL"))?;
        let mut value = vec![0u8; 64 << 10];
        // SAFETY: value has room for the largest xattr value Linux allows.
        let len = unsafe { libc::lgetxattr(cfrom.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len < 0 {
            return Err(io("reading xattrs of", from, std::io::Error::last_os_error()));
        }
        // SAFETY: value holds `len` bytes; the names are NUL-terminated.
        let rc = unsafe { libc::lsetxattr(cto.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), len as usize, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) {
                tracing::warn!(path = %to.display(), name = %OsStr::from_bytes(name).to_string_lossy(), "xattr not supported here; skipped");
                continue;
            }
            return Err(io("setting xattrs of", to, e));
        }
    }
    Ok(())
}
