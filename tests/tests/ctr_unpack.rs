//! Image unpack through Debian's ctr: the trees berthd's snapshotters hold
//! after `ctr images import` are, file by file, the trees containerd makes
//! from the same archives; `ctr images check` sees them unpacked; and
//! `ctr images rm --sync` frees them.

use std::path::Path;

use berth_tests::containerd::Containerd;
use berth_tests::ctr::Ctr;
use berth_tests::daemon::Daemon;
use berth_tests::images::{self, TestImage};
use berth_tests::tree::{Describe, MountedSnapshot, describe, differences};

const SNAPSHOTTERS: [&str; 2] = ["overlayfs", "native"];

fn import(ctr: &Ctr, snapshotter: &str, image: &TestImage) {
    ctr.import(snapshotter, &image.oci_tar);
}

/// The tree of the image's top snapshot, seen through a new active
/// snapshot on it (`ctr snapshot prepare` marks it a GC root, so neither
/// daemon collects it while it is read; a view is not and may go).
fn unpacked_tree(ctr: &Ctr, snapshotter: &str, image: &TestImage) -> std::collections::BTreeMap<String, String> {
    let key = format!("read-{snapshotter}");
    ctr.ok(&[
        "snapshot",
        "--snapshotter",
        snapshotter,
        "prepare",
        &key,
        &image.chain_id,
    ]);
    // containerd's native snapshotter copies a parent without keeping its
    // directories' times (berth keeps them): compare those only on overlayfs.
    let options = Describe {
        skip_dir_mtimes: snapshotter == "native",
    };
    let tree = {
        let mounted = MountedSnapshot::new(ctr, snapshotter, &key);
        describe(mounted.path(), options)
    };
    ctr.ok(&["snapshot", "--snapshotter", snapshotter, "rm", &key]);
    tree
}

fn assert_same_unpack(image: &TestImage) {
    let berth = Daemon::start();
    let containerd = Containerd::start();
    for snapshotter in SNAPSHOTTERS {
        let (ours, theirs) = (berth.ctr(), containerd.ctr());
        import(&ours, snapshotter, image);
        import(&theirs, snapshotter, image);
        let (a, b) = (
            unpacked_tree(&ours, snapshotter, image),
            unpacked_tree(&theirs, snapshotter, image),
        );
        let diff = differences(&a, &b);
        assert!(
            diff.is_empty(),
            "{snapshotter}: {} entries differ from containerd's unpack:\n{}",
            diff.len(),
            diff.join("\n")
        );
        assert!(a.len() > 100, "the tree holds the image ({} entries)", a.len());
    }
}

#[test]
fn busybox_unpacks_to_the_tree_containerd_makes() {
    assert_same_unpack(&images::busybox());
}

#[test]
fn layered_image_with_whiteouts_unpacks_to_the_tree_containerd_makes() {
    let image = images::layered();
    assert_same_unpack(&image);
    // And the tree is what the layers say, not merely what both agree on.
    let berth = Daemon::start();
    import(&berth.ctr(), "overlayfs", &image);
    let tree = unpacked_tree(&berth.ctr(), "overlayfs", &image);
    let has = |path: &str| tree.contains_key(path);
    for gone in [
        "data/a/one",
        "data/a/two",
        "data/b/inner",
        "data/new",
        "data/small/d00",
        "data/small/d01/f00",
        "data/small/d02/f00",
    ] {
        assert!(!has(gone), "{gone} was deleted by a later layer");
    }
    for kept in [
        "data/a/three",
        "data/c/now-a-directory",
        "data/small/d01/only",
        "data/small/d02/f01",
        "data/small/d19/f49",
    ] {
        assert!(has(kept), "{kept} is in the image");
    }
    assert!(tree["data/b"].starts_with("file "), "{}", tree["data/b"]);
    assert!(
        tree["data/special/null"].starts_with("char 103 "),
        "{}",
        tree["data/special/null"]
    );
    assert!(
        tree["data/modes/setuid"].contains(" mode=4755 "),
        "{}",
        tree["data/modes/setuid"]
    );
    assert!(
        tree["data/modes/sticky"].contains(" mode=1777 "),
        "{}",
        tree["data/modes/sticky"]
    );
    assert!(
        tree["data/modes/owned"].contains(" owner=1000:1001"),
        "{}",
        tree["data/modes/owned"]
    );
    assert!(
        tree["data/xattr"].contains("xattr:user.berth.test=796573"),
        "{}",
        tree["data/xattr"]
    );
    assert!(
        tree["data/links/h1"].contains("links=data/links/h1,data/links/h2"),
        "{}",
        tree["data/links/h1"]
    );
}

#[test]
fn images_check_reports_an_unpacked_image_and_snapshots_list_like_containerd() {
    let image = images::layered();
    let berth = Daemon::start();
    let containerd = Containerd::start();
    for snapshotter in SNAPSHOTTERS {
        let ours = berth.ctr().in_namespace(snapshotter);
        let theirs = containerd.ctr().in_namespace(snapshotter);
        import(&ours, snapshotter, &image);
        import(&theirs, snapshotter, &image);
        let check = ours.ok(&["images", "check", "--snapshotter", snapshotter]);
        assert_eq!(check, theirs.ok(&["images", "check", "--snapshotter", snapshotter]));
        assert!(check.contains("complete (4/4)"), "{check}");
        let unpacked = check
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_default();
        assert_eq!(unpacked, "true", "{check}");
        for args in [
            ["snapshot", "--snapshotter", snapshotter, "ls"],
            ["snapshot", "--snapshotter", snapshotter, "tree"],
        ] {
            assert_eq!(ours.ok(&args), theirs.ok(&args), "ctr {}", args.join(" "));
        }
        let ours_content = ours.ok(&["content", "ls", "-q"]);
        assert_eq!(ours_content, theirs.ok(&["content", "ls", "-q"]));
        // The layers carry their diff ids, the config its snapshot.
        let info = ours.ok(&["content", "ls"]);
        for diff_id in &image.diff_ids {
            assert!(
                info.contains(&format!("containerd.io/uncompressed={diff_id}")),
                "{info}"
            );
        }
        assert!(
            info.contains(&format!(
                "containerd.io/gc.ref.snapshot.{snapshotter}={}",
                image.chain_id
            )),
            "{info}"
        );
    }
}

fn backend_snapshot_dirs(root: &Path, snapshotter: &str) -> usize {
    std::fs::read_dir(root.join("snapshots").join(snapshotter).join("snapshots"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn images_rm_sync_frees_the_snapshots_too() {
    let image = images::layered();
    let berth = Daemon::start();
    for snapshotter in SNAPSHOTTERS {
        let ctr = berth.ctr().in_namespace(snapshotter);
        import(&ctr, snapshotter, &image);
        assert_eq!(backend_snapshot_dirs(&berth.root, snapshotter), 3);
        ctr.ok(&["images", "rm", "--sync", &image.name]);
        // --sync returns once the files are gone.
        assert_eq!(
            ctr.ok(&["snapshot", "--snapshotter", snapshotter, "ls"])
                .lines()
                .count(),
            1
        );
        assert_eq!(backend_snapshot_dirs(&berth.root, snapshotter), 0, "{snapshotter}");
        assert_eq!(ctr.ok(&["content", "ls", "-q"]).trim(), "");
    }
}
