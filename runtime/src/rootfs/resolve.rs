//! Resolving a path inside the rootfs as the container will see it.
//!
//! A mount destination is a path in the container. Its components may be
//! symlinks the image made: an absolute link is read from the rootfs (as
//! after chroot), a relative one from where it sits. A link whose `..`
//! would climb above the rootfs is refused: the destination would escape.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::syscalls::{FileKind, Syscalls};

/// Symlinks followed at most, as the kernel's limit.
const MAX_LINKS: usize = 40;

/// The host path of `dest` (an absolute in-container path) under `rootfs`,
/// every symlink resolved within it. `field` names the spec field for
/// errors. Missing components are fine (they are created later).
pub fn resolve(sys: &dyn Syscalls, rootfs: &Path, dest: &Path, field: &str) -> Result<PathBuf> {
    let mut pending: VecDeque<OsString> = VecDeque::new();
    for component in dest.components() {
        match component {
            Component::Normal(name) => pending.push_back(name.to_os_string()),
            Component::ParentDir => {
                return Err(Error::invalid(field, format!("{} contains \"..\"", dest.display())));
            }
            _ => {}
        }
    }
    let mut current: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if current.pop().is_none() {
                return Err(Error::invalid(
                    field,
                    format!("{} escapes the rootfs through a symlink", dest.display()),
                ));
            }
            continue;
        }
        if name == "." {
            continue;
        }
        let candidate = current.iter().fold(rootfs.to_path_buf(), |p, c| p.join(c)).join(&name);
        if sys.kind_of(&candidate)? == Some(FileKind::Symlink) {
            links += 1;
            if links > MAX_LINKS {
                return Err(Error::invalid(
                    field,
                    format!("{}: too many levels of symbolic links", dest.display()),
                ));
            }
            let target = sys.read_link(&candidate)?;
            if target.is_absolute() {
                current.clear();
            }
            let mut parts: Vec<OsString> = Vec::new();
            for component in target.components() {
                match component {
                    Component::Normal(n) => parts.push(n.to_os_string()),
                    Component::ParentDir => parts.push(OsString::from("..")),
                    _ => {}
                }
            }
            for part in parts.into_iter().rev() {
                pending.push_front(part);
            }
            continue;
        }
        current.push(name);
    }
    Ok(current.iter().fold(rootfs.to_path_buf(), |p, c| p.join(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::fake::Recorder;

    fn tree() -> Recorder {
        let fs = Recorder::new();
        fs.dir("/r/run")
            .dir("/r/usr/lib")
            .link("/r/var/run", "/run")
            .link("/r/lib", "usr/lib")
            .link("/r/data/up", "../../../../etc")
            .link("/r/abs-up", "/..")
            .link("/r/loop", "loop");
        fs
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        let fs = tree();
        let r = Path::new("/r");
        let got = |dest: &str| resolve(&fs, r, Path::new(dest), "mounts[0].destination");
        assert_eq!(got("/proc").unwrap(), Path::new("/r/proc"));
        assert_eq!(got("/var/run/secrets").unwrap(), Path::new("/r/run/secrets"));
        assert_eq!(got("/lib/modules").unwrap(), Path::new("/r/usr/lib/modules"));
        for escaping in ["/data/up/x", "/abs-up"] {
            let err = got(escaping).unwrap_err();
            assert_eq!(err.subject.as_deref(), Some("mounts[0].destination"));
            assert!(err.to_string().contains("escapes the rootfs"), "{err}");
        }
        assert!(got("/loop/x").unwrap_err().to_string().contains("too many levels"));
    }
}
