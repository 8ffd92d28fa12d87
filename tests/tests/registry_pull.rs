//! `ctr images pull --plain-http` from a private Debian docker-registry on
//! a loopback port: berthd stores and unpacks what it pulls exactly as
//! containerd does from the same registry.

use berth_tests::containerd::Containerd;
use berth_tests::daemon::Daemon;
use berth_tests::images;
use berth_tests::registry::Registry;
use berth_tests::tree::{Describe, MountedSnapshot, describe, differences};

#[test]
fn pull_from_a_local_registry_unpacks_like_containerd() {
    let registry = Registry::start();
    let busybox = images::busybox();
    let layered = images::layered();
    registry.push_oci_archive(&busybox.oci_tar, "busybox:latest");
    registry.push_oci_archive(&layered.oci_tar, "layered:latest");
    let berth = Daemon::start();
    let containerd = Containerd::start();
    for (repository, image) in [("busybox", &busybox), ("layered", &layered)] {
        let reference = format!("{}/{repository}:latest", registry.address);
        for snapshotter in ["overlayfs", "native"] {
            let (ours, theirs) = (
                berth.ctr().in_namespace(snapshotter),
                containerd.ctr().in_namespace(snapshotter),
            );
            for ctr in [&ours, &theirs] {
                let out = ctr.run(&[
                    "images",
                    "pull",
                    "--plain-http",
                    "--snapshotter",
                    snapshotter,
                    &reference,
                ]);
                assert!(
                    out.status.success(),
                    "pull {reference} failed: {}{}\nregistry log:\n{}",
                    out.stdout,
                    out.stderr,
                    registry.log()
                );
            }
            let check = ["images", "check", "--snapshotter", snapshotter];
            let listed = ours.ok(&check);
            assert_eq!(listed, theirs.ok(&check));
            assert!(listed.contains(&reference), "{listed}");
            assert!(
                listed.lines().nth(1).is_some_and(|l| l.trim_end().ends_with("true")),
                "{listed}"
            );
            assert_eq!(ours.ok(&["content", "ls", "-q"]), theirs.ok(&["content", "ls", "-q"]));

            let mut trees = Vec::new();
            for ctr in [&ours, &theirs] {
                ctr.ok(&[
                    "snapshot",
                    "--snapshotter",
                    snapshotter,
                    "prepare",
                    "pulled",
                    &image.chain_id,
                ]);
                let mounted = MountedSnapshot::new(ctr, snapshotter, "pulled");
                trees.push(describe(
                    mounted.path(),
                    Describe {
                        skip_dir_mtimes: snapshotter == "native",
                    },
                ));
                drop(mounted);
                ctr.ok(&["snapshot", "--snapshotter", snapshotter, "rm", "pulled"]);
            }
            let diff = differences(&trees[0], &trees[1]);
            assert!(diff.is_empty(), "{repository} on {snapshotter}:\n{}", diff.join("\n"));
            for ctr in [&ours, &theirs] {
                ctr.ok(&["images", "rm", "--sync", &reference]);
            }
            assert_eq!(
                ours.ok(&["snapshot", "--snapshotter", snapshotter, "ls"])
                    .lines()
                    .count(),
                1
            );
        }
    }
}
