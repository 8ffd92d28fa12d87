//! Computing the layer that turns one tree into another.
//!
//! Both trees are walked together in name order. An entry only the upper
//! tree has, or whose type, mode, owner, size, times, device, link target
//! or extended attributes differ, is written; an entry only the lower tree
//! has becomes an OCI whiteout `.wh.<name>`; a directory present in both is
//! written only if its own metadata changed, then compared inside. Hard
//! links among written files stay hard links. Applying the result onto the
//! lower tree reproduces the upper one. As in containerd's layers, every
//! entry's parent directories come before it (so applying restores their
//! times too), times are whole seconds, and an unchanged file that shares
//! an inode with a written one is written as a hard link to it.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use berth_core::{Error, Result};

/// Writes the layer from `lower` to `upper` as a tar into `out`.
pub fn write_diff(lower: &Path, upper: &Path, out: impl Write) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    let mut walker = Walker {
        lower,
        upper,
        builder: &mut builder,
        links: HashMap::new(),
        unwritten_links: HashMap::new(),
        written_dirs: HashSet::new(),
    };
    walker.compare_dir(Path::new(""), true)?;
    builder.finish().map_err(|e| Error::io("finishing the layer", &e))
}

struct Walker<'a, W: Write> {
    lower: &'a Path,
    upper: &'a Path,
    builder: &'a mut tar::Builder<W>,
    /// (dev, ino) of written files with several links -> archive name.
    links: HashMap<(u64, u64), PathBuf>,
    /// Unchanged names of multiply linked inodes not written yet: if the
    /// inode is written later, they follow as links to it.
    unwritten_links: HashMap<(u64, u64), Vec<PathBuf>>,
    /// Directories already in the archive.
    written_dirs: HashSet<PathBuf>,
}

fn read_sorted(dir: &Path) -> Result<Vec<OsString>> {
    let mut names: Vec<OsString> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?;
    names.sort();
    Ok(names)
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    // SAFETY: null buffer of size 0 asks for the list's size.
    let size = unsafe { libc::llistxattr(cpath.as_ptr(), std::ptr::null_mut(), 0) };
    if size <= 0 {
        return Vec::new();
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: names has room for `size` bytes.
    let size = unsafe { libc::llistxattr(cpath.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in names[..size as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(key) = std::str::from_utf8(name) else { continue };
        // overlayfs's own bookkeeping is not part of the layer.
        if key.starts_with("trusted.overlay.") {
            continue;
        }
        let Ok(cname) = CString::new(name) else { continue };
        let mut value = vec![0u8; 64 << 10];
        // SAFETY: value has room for the largest xattr value.
        let len = unsafe { libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len >= 0 {
            value.truncate(len as usize);
            out.push((key.to_string(), value));
        }
    }
    out.sort();
    out
}

fn changed(lower: &Path, upper: &Path, l: &std::fs::Metadata, u: &std::fs::Metadata) -> Result<bool> {
    if l.file_type() != u.file_type()
        || l.mode() != u.mode()
        || l.uid() != u.uid()
        || l.gid() != u.gid()
        || l.rdev() != u.rdev()
        || (!u.is_dir() && l.len() != u.len())
        || (!u.is_dir() && (l.mtime(), l.mtime_nsec()) != (u.mtime(), u.mtime_nsec()))
    {
        return Ok(true);
    }
    if u.file_type().is_symlink() && std::fs::read_link(lower).ok() != std::fs::read_link(upper).ok() {
        return Ok(true);
    }
    if xattrs(lower) != xattrs(upper) {
        return Ok(true);
    }
    // Whole-second times (as layers carry them) cannot tell a rewrite in
    // the same second from no change: compare the bytes.
    if u.is_file() && u.mtime_nsec() == 0 && (l.dev(), l.ino()) != (u.dev(), u.ino()) {
        return Ok(!same_content(lower, upper)?);
    }
    Ok(false)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read as _;
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| Error::io(format!("reading {}", p.display()), &e));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| Error::io(format!("reading {}", a.display()), &e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| Error::io(format!("reading {}", b.display()), &e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }

    fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

impl<W: Write> Walker<'_, W> {
    fn compare_dir(&mut self, rel: &Path, lower_is_dir: bool) -> Result<()> {
        let upper_names = read_sorted(&self.upper.join(rel))?;
        let lower_names = if lower_is_dir {
            read_sorted(&self.lower.join(rel)).unwrap_or_default()
        } else {
            Vec::new()
        };
        let (mut i, mut j) = (0, 0);
        while i < upper_names.len() || j < lower_names.len() {
            let order = match (upper_names.get(i), lower_names.get(j)) {
                (Some(u), Some(l)) => u.cmp(l),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    self.added(&rel.join(&upper_names[i]))?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.whiteout(rel, &lower_names[j])?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    self.both(&rel.join(&upper_names[i]))?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn meta(path: &Path) -> Result<std::fs::Metadata> {
        std::fs::symlink_metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), &e))
    }

    /// An entry only the upper tree has: it, and all under it.
    fn added(&mut self, rel: &Path) -> Result<()> {
        let meta = Self::meta(&self.upper.join(rel))?;
        self.write_entry(rel, &meta)?;
        if meta.is_dir() {
            self.compare_dir(rel, false)?;
        }
        Ok(())
    }

    fn both(&mut self, rel: &Path) -> Result<()> {
        let (lower, upper) = (self.lower.join(rel), self.upper.join(rel));
        let (l, u) = (Self::meta(&lower)?, Self::meta(&upper)?);
        if u.is_dir() {
            let lower_is_dir = l.is_dir();
            if !lower_is_dir || changed(&lower, &upper, &l, &u)? {
                self.write_entry(rel, &u)?;
            }
            return self.compare_dir(rel, lower_is_dir);
        }
        if changed(&lower, &upper, &l, &u)? {
            self.write_entry(rel, &u)?;
        } else if u.nlink() > 1 {
            let key = (u.dev(), u.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                self.write_link(rel, &u, &first)?;
            } else {
                self.unwritten_links.entry(key).or_default().push(rel.to_path_buf());
            }
        }
        Ok(())
    }

    /// Writes the parent directories of `rel` not yet in the archive.
    fn include_parents(&mut self, rel: &Path) -> Result<()> {
        let Some(parent) = rel.parent() else { return Ok(()) };
        if parent.as_os_str().is_empty() || self.written_dirs.contains(parent) {
            return Ok(());
        }
        let parent = parent.to_path_buf();
        let meta = Self::meta(&self.upper.join(&parent))?;
        self.write_entry(&parent, &meta)
    }

    fn write_link(&mut self, rel: &Path, meta: &std::fs::Metadata, first: &Path) -> Result<()> {
        self.include_parents(rel)?;
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_entry_type(tar::EntryType::Link);
        header.set_size(0);
        self.builder
            .append_link(&mut header, rel, first)
            .map_err(|e| Error::io(format!("writing {} to the layer", rel.display()), &e))
    }

    fn whiteout(&mut self, parent: &Path, name: &OsString) -> Result<()> {
        let mut whiteout = OsString::from(".wh.");
        whiteout.push(name);
        let path = parent.join(whiteout);
        self.include_parents(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(0);
        header.set_mode(0o644);
        header.set_mtime(0);
        self.builder
            .append_data(&mut header, &path, io::empty())
            .map_err(|e| Error::io(format!("writing whiteout {}", path.display()), &e))
    }

    fn write_entry(&mut self, rel: &Path, meta: &std::fs::Metadata) -> Result<()> {
        self.include_parents(rel)?;
        let full = self.upper.join(rel);
        let fail = |e: io::Error| Error::io(format!("writing {} to the layer", rel.display()), &e);
        let attributes = xattrs(&full);
        if !attributes.is_empty() {
            let records: Vec<(String, Vec<u8>)> = attributes
                .into_iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v))
                .collect();
            self.builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(fail)?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        let file_type = meta.file_type();
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            let mut name = rel.as_os_str().to_os_string();
            name.push("/");
            self.written_dirs.insert(rel.to_path_buf());
            return self
                .builder
                .append_data(&mut header, Path::new(&name), io::empty())
                .map_err(fail);
        }
        if file_type.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            let target = std::fs::read_link(&full).map_err(fail)?;
            return self.builder.append_link(&mut header, rel, &target).map_err(fail);
        }
        let mut later_links = Vec::new();
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                return self.builder.append_link(&mut header, rel, &first).map_err(fail);
            }
            self.links.insert(key, rel.to_path_buf());
            later_links = self.unwritten_links.remove(&key).unwrap_or_default();
        }
        if file_type.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = std::fs::File::open(&full).map_err(fail)?;
            self.builder.append_data(&mut header, rel, file).map_err(fail)?;
            for link in later_links {
                self.write_link(&link, meta, rel)?;
            }
            return Ok(());
        }
        let entry_type = if file_type.is_char_device() {
            tar::EntryType::Char
        } else if file_type.is_block_device() {
            tar::EntryType::Block
        } else if file_type.is_fifo() {
            tar::EntryType::Fifo
        } else {
            tracing::debug!(path = %rel.display(), "sockets are not part of layers");
            return Ok(());
        };
        header.set_entry_type(entry_type);
        header.set_size(0);
        let rdev = meta.rdev();
        header.set_device_major(libc::major(rdev)).map_err(fail)?;
        header.set_device_minor(libc::minor(rdev)).map_err(fail)?;
        self.builder.append_data(&mut header, rel, io::empty()).map_err(fail)
    }
}
