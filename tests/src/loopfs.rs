//! Small loop-mounted filesystems for tests that need another filesystem
//! (XFS with reflinks, a tiny one that fills up). Unmounted on drop; the
//! loop device goes with the mount (autoclear).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::binaries;

/// A filesystem image mounted on a temporary directory.
#[derive(Debug)]
pub struct LoopFs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl LoopFs {
    /// Makes a `size_mib` image with `mkfs` (e.g. `["mkfs.xfs", "-m", "reflink=1"]`) and mounts it.
    pub fn new(size_mib: u64, mkfs: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-loopfs")
            .tempdir()
            .expect("temp dir");
        let image = dir.path().join("image");
        let file = std::fs::File::create(&image).expect("image file");
        file.set_len(size_mib << 20).expect("size the image");
        let status = Command::new(binaries::host(mkfs[0]))
            .args(&mkfs[1..])
            .arg(&image)
            .output()
            .expect("run mkfs");
        assert!(
            status.status.success(),
            "{mkfs:?}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("mount point");
        let status = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount)
            .output()
            .expect("run mount");
        assert!(
            status.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        Self { _dir: dir, mount }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Anything still mounted inside goes first, then the filesystem.
        let inner: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|p| p.starts_with(&format!("{}/", self.mount.display())))
            .collect();
        for path in inner.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(path).status();
        }
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}
