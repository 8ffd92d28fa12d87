//! Every snapshotter backend passes the one conformance suite.

use std::sync::Arc;

use berth_core::snapshots::Snapshotter;
use berth_snapshotters::conformance;
use berth_snapshotters::native::Native;
use berth_snapshotters::overlay::Overlay;

fn assert_passes(name: &str, factory: &conformance::Factory<'_>) {
    let scratch = tempfile::Builder::new().prefix("berth-conformance").tempdir().unwrap();
    let failures = conformance::run_all(factory, scratch.path());
    let report: Vec<String> = failures.iter().map(|(case, e)| format!("{case}: {e}")).collect();
    assert!(report.is_empty(), "{name} fails:\n{}", report.join("\n"));
}

#[test]
fn overlayfs_passes_the_conformance_suite() {
    assert_passes("overlayfs", &|root| {
        Ok(Arc::new(Overlay::open(root)?) as Arc<dyn Snapshotter>)
    });
}

#[test]
fn native_passes_the_conformance_suite() {
    assert_passes("native", &|root| {
        Ok(Arc::new(Native::open(root)?) as Arc<dyn Snapshotter>)
    });
}

#[test]
fn native_reflinks_on_xfs_and_still_passes_the_suite() {
    let xfs = berth_tests::loopfs::LoopFs::new(1024, &["mkfs.xfs", "-q", "-m", "reflink=1"]);
    // A copy on XFS shares extents instead of copying data.
    let src = xfs.path().join("src");
    let dst = xfs.path().join("dst");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/data"), vec![3u8; 4 << 20]).unwrap();
    std::fs::create_dir(&dst).unwrap();
    let stats = berth_snapshotters::copy::copy_tree(&src, &dst).unwrap();
    assert!(stats.reflinked, "{stats:?}");
    assert_eq!(std::fs::read(dst.join("d/data")).unwrap(), vec![3u8; 4 << 20]);

    let scratch = tempfile::Builder::new()
        .prefix("berth-conformance")
        .tempdir_in(xfs.path())
        .unwrap();
    let failures = conformance::run_all(
        &|root| Ok(Arc::new(Native::open(root)?) as Arc<dyn Snapshotter>),
        scratch.path(),
    );
    let report: Vec<String> = failures.iter().map(|(case, e)| format!("{case}: {e}")).collect();
    assert!(report.is_empty(), "native on XFS fails:\n{}", report.join("\n"));
}

#[test]
fn native_copies_keep_holes_links_devices_xattrs_and_owners() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(src.join("sub")).unwrap();
    // A sparse file: 64 MiB with one byte of data at the end.
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"x", (64 << 20) - 1).unwrap();
    std::fs::write(src.join("sub/linked"), "same inode").unwrap();
    std::fs::hard_link(src.join("sub/linked"), src.join("other-name")).unwrap();
    std::os::unix::fs::symlink("sub/linked", src.join("link")).unwrap();
    let status = std::process::Command::new("mknod")
        .arg(src.join("null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(src.join("suid"), "x").unwrap();
    std::os::unix::fs::chown(src.join("suid"), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(src.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let status = std::process::Command::new(berth_tests::binaries::host("setfattr"))
        .args(["-n", "user.note", "-v", "kept"])
        .arg(src.join("sub/linked"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir(&dst).unwrap();
    berth_snapshotters::copy::copy_tree(&src, &dst).unwrap();

    let meta = |p: &str| std::fs::symlink_metadata(dst.join(p)).unwrap();
    assert_eq!(meta("sparse").len(), 64 << 20);
    assert!(meta("sparse").blocks() * 512 < 1 << 20, "the hole stays a hole");
    assert_eq!(
        meta("sub/linked").ino(),
        meta("other-name").ino(),
        "hard links stay linked"
    );
    assert_eq!(
        std::fs::read_link(dst.join("link")).unwrap().to_str(),
        Some("sub/linked")
    );
    assert_eq!(
        meta("null").rdev(),
        std::fs::symlink_metadata(src.join("null")).unwrap().rdev()
    );
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &meta("null").file_type()
    ));
    assert_eq!((meta("suid").uid(), meta("suid").gid()), (1000, 1000));
    assert_eq!(meta("suid").mode() & 0o7777, 0o4755, "set-id bits survive the chown");
    assert_eq!(meta("sub").mtime(), std::fs::metadata(src.join("sub")).unwrap().mtime());
    let out = std::process::Command::new(berth_tests::binaries::host("getfattr"))
        .args(["-n", "user.note", "--only-values"])
        .arg(dst.join("sub/linked"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept");
}
