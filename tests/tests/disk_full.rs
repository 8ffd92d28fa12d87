//! A full disk: an import into a root on a small tmpfs fails with a clear
//! error and leaves no partial blob; once space is freed the same import
//! succeeds without restarting the daemon. Run as root.

use std::path::{Path, PathBuf};

use berth_tests::daemon::Daemon;
use berth_tests::images;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// A tmpfs mounted for the test, detached when dropped.
struct SmallFilesystem(PathBuf);

impl SmallFilesystem {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0711").as_str()),
        )
        .expect("mount a tmpfs");
        Self(at.to_path_buf())
    }

    fn available(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.0).unwrap();
        stat.blocks_available() * stat.fragment_size()
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// Every blob the store lists is whole: its bytes hash to its name.
fn assert_blobs_whole(root: &Path) {
    let dir = root.join("content/blobs/sha256");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        assert_eq!(actual, entry.file_name().to_string_lossy(), "a partial blob is visible");
    }
}

#[test]
fn an_import_on_a_full_disk_fails_clearly_and_works_once_space_is_freed() {
    let image = images::noise("berth.test/noise-disk-full:1", 8 << 20);
    let mut daemon = Daemon::unstarted("version = 2\n", &[]);
    let small = SmallFilesystem::mount(&daemon.root, "48m");
    daemon.relaunch();
    let ctr = daemon.ctr();

    // Leave less room than the layer needs.
    let filler = daemon.root.join("filler");
    let room = 3 << 20;
    let fill = small.available().saturating_sub(room);
    std::fs::write(&filler, vec![0u8; usize::try_from(fill).unwrap()]).unwrap();

    let archive = image.oci_tar.to_str().unwrap();
    let out = ctr.run(&["images", "import", "--snapshotter", "overlayfs", archive]);
    assert!(!out.status.success(), "the import succeeded on a full disk");
    assert!(
        out.stderr.to_lowercase().contains("no space left on device"),
        "the error says why: {}",
        out.stderr
    );
    assert_blobs_whole(&daemon.root);
    let images_listed = ctr.ok(&["images", "ls", "-q"]);
    assert!(!images_listed.contains("noise-disk-full"), "{images_listed}");

    // Space comes back: the same daemon imports and unpacks the image.
    std::fs::remove_file(&filler).unwrap();
    ctr.import("overlayfs", &image.oci_tar);
    assert_blobs_whole(&daemon.root);
    let images_listed = ctr.ok(&["images", "ls", "-q"]);
    assert!(images_listed.contains("noise-disk-full"), "{images_listed}");
    let rootfs = ctr.ok(&["snapshot", "--snapshotter", "overlayfs", "ls"]);
    assert!(rootfs.contains("Committed"), "the layer is unpacked: {rootfs}");
    ctr.ok(&["images", "rm", "--sync", &image.name]);
    drop(daemon);
    drop(small);
}
