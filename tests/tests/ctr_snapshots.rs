//! `ctr snapshot` against berthd and a private containerd side by side, for
//! both snapshotters: the same commands succeed or fail alike and print the
//! same; `ctr snapshot diff` yields a layer that, applied onto the parent in
//! a fresh snapshot, reproduces the changed tree.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;

use berth_api::client::namespaced;
use berth_api::containerd::services::diff::v1::ApplyRequest;
use berth_api::containerd::services::diff::v1::diff_client::DiffClient;
use berth_api::containerd::services::snapshots::v1::MountsRequest;
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::types::Descriptor;
use berth_tests::containerd::Containerd;
use berth_tests::ctr::Ctr;
use berth_tests::daemon::Daemon;
use berth_tests::images::{self, TestImage};
use berth_tests::tree::{Describe, MountedSnapshot, describe, differences};
use sha2::Digest as _;

const SNAPSHOTTERS: [&str; 2] = ["overlayfs", "native"];

/// Mount sources differ only in where each daemon keeps its snapshots:
/// `<anything>/snapshots/<id>/<rest>` becomes `SNAPSHOT<id>/<rest>`; and
/// times become `TIME`.
fn normalise_paths(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_inclusive([' ', ',', '=', ':', '\n']) {
        match word.find("/snapshots/") {
            Some(at) if word.starts_with('/') => {
                let rest = &word[at + "/snapshots/".len()..];
                // The overlayfs root holds `snapshots/`; so do berth's
                // per-snapshotter roots: keep only what follows the last one.
                let rest = rest.rsplit_once("/snapshots/").map_or(rest, |(_, r)| r);
                out.push_str("SNAPSHOT");
                // berth's native trees sit in `<id>/fs`, containerd's in `<id>`.
                match rest.split_once("/fs") {
                    Some((id, tail)) if !tail.starts_with(|c: char| c.is_alphanumeric()) => {
                        out.push_str(id);
                        out.push_str(tail);
                    }
                    _ => out.push_str(rest),
                }
            }
            _ => out.push_str(word),
        }
    }
    // `gc.root` labels hold the time ctr ran.
    let time = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").unwrap();
    time.replace_all(&out, "TIME").into_owned()
}

/// Runs the same ctr command against both daemons; they must both succeed
/// with the same output, or both fail.
fn same(ours: &Ctr, theirs: &Ctr, args: &[&str]) -> String {
    let (a, b) = (ours.run(args), theirs.run(args));
    assert_eq!(
        a.status.success(),
        b.status.success(),
        "ctr {}: berthd {} ({}{}), containerd {} ({}{})",
        args.join(" "),
        a.status,
        a.stdout,
        a.stderr,
        b.status,
        b.stdout,
        b.stderr
    );
    // ctr prints label sets in Go's random map order: compare them sorted.
    let printed = |text: &str| {
        let text = normalise_paths(text);
        if args.contains(&"label") {
            let mut labels: Vec<&str> = text.trim().split(',').collect();
            labels.sort_unstable();
            labels.join(",")
        } else {
            text
        }
    };
    assert_eq!(
        printed(&a.stdout),
        printed(&b.stdout),
        "ctr {} prints differently",
        args.join(" ")
    );
    if !a.status.success() {
        assert!(
            !a.stderr.trim().is_empty(),
            "ctr {}: berthd failed without a message",
            args.join(" ")
        );
    }
    a.stdout
}

#[test]
fn snapshot_commands_behave_as_against_containerd() {
    let image = images::busybox();
    let berth = Daemon::start();
    let containerd = Containerd::start();
    let mount_dir = tempfile::tempdir().unwrap();
    let target = mount_dir.path().to_str().unwrap();
    for snapshotter in SNAPSHOTTERS {
        let ours = berth.ctr().in_namespace(snapshotter);
        let theirs = containerd.ctr().in_namespace(snapshotter);
        for ctr in [&ours, &theirs] {
            ctr.import(snapshotter, &image.oci_tar);
            // A synchronous collection now, so no pass scheduled by the
            // import runs in the middle of what follows.
            let lease = ctr.ok(&["leases", "create"]);
            ctr.ok(&["leases", "rm", "--sync", lease.trim()]);
        }
        let top = image.chain_id.as_str();
        let s = |args: &[&str]| {
            let mut full = vec!["snapshot", "--snapshotter", snapshotter];
            full.extend_from_slice(args);
            same(&ours, &theirs, &full)
        };
        s(&["prepare", "work", top]);
        s(&["prepare", "work", top]); // exists
        s(&["prepare", "orphan", "no-such-parent"]);
        s(&["prepare", "on-active", "work"]); // parent not committed
        s(&["prepare", "--target", target, "printed", top]);
        s(&["view", "--target", target, "looked-at", top]);
        s(&["ls"]);
        s(&["tree"]);
        s(&["mounts", target, "work"]);
        s(&["mounts", target, "looked-at"]);
        s(&["mounts", target, "missing"]);
        s(&["commit", "done", "work"]);
        s(&["commit", "done", "work"]); // no longer exists
        s(&["commit", "again", "looked-at"]); // not active
        s(&["prepare", "child", "done"]);
        s(&["commit", "done", "child"]); // name taken
        s(&["label", "child", "team=web"]);
        s(&["label", "child", "team="]);
        s(&["ls"]);
        s(&["tree"]);
        s(&["usage", "done"]);
        s(&["usage", "child"]);
        s(&["usage", "missing"]);
        s(&["rm", "done"]); // has a child
        // The view first: it is no GC root, so either daemon may collect it
        // as soon as anything else is removed.
        s(&["rm", "looked-at", "child", "printed"]);
        s(&["rm", "done"]);
        s(&["rm", "missing"]);
        s(&["ls"]);
        s(&["info", "missing"]);
        for ctr in [&ours, &theirs] {
            let info = ctr.ok(&["snapshot", "--snapshotter", snapshotter, "info", top]);
            assert!(info.contains("\"Kind\": \"Committed\""), "{info}");
        }
        // Unknown snapshotters are refused alike.
        same(&ours, &theirs, &["snapshot", "--snapshotter", "zfs", "ls"]);
        same(
            &ours,
            &theirs,
            &["snapshot", "--snapshotter", "zfs", "prepare", "k", top],
        );
    }
}

/// Makes the changes the diff must carry: add, modify, delete a file and a
/// directory, change a mode, replace a symlink, add a directory tree.
fn change(root: &Path) {
    std::fs::write(root.join("etc/added"), "added\n").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::remove_file(root.join("etc/group")).unwrap();
    std::fs::remove_dir_all(root.join("var/www")).unwrap();
    std::fs::set_permissions(root.join("root"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::remove_file(root.join("bin/ls")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/ls")).unwrap();
    std::fs::create_dir_all(root.join("opt/app/conf")).unwrap();
    std::fs::write(root.join("opt/app/conf/app.toml"), "port = 8080\n").unwrap();
    std::fs::hard_link(root.join("opt/app/conf/app.toml"), root.join("opt/app/app.toml")).unwrap();
    std::os::unix::fs::lchown(root.join("opt/app/conf"), Some(33), Some(33)).unwrap();
}

fn snapshot_mounts(
    rt: &tokio::runtime::Runtime,
    daemon: &Daemon,
    snapshotter: &str,
    key: &str,
) -> Vec<berth_api::containerd::types::Mount> {
    rt.block_on(async {
        let channel = daemon.channel().await;
        SnapshotsClient::new(channel)
            .mounts(namespaced(
                "default",
                MountsRequest {
                    snapshotter: snapshotter.into(),
                    key: key.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .mounts
    })
}

#[test]
fn a_diff_applied_onto_the_parent_reproduces_the_changed_tree() {
    let image: TestImage = images::busybox();
    let berth = Daemon::start();
    let ctr = berth.ctr();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for snapshotter in SNAPSHOTTERS {
        let sn = |args: &[&str]| {
            let mut full = vec!["snapshot", "--snapshotter", snapshotter];
            full.extend_from_slice(args);
            ctr.ok(&full)
        };
        ctr.import(snapshotter, &image.oci_tar);
        sn(&["prepare", "work", &image.chain_id]);
        {
            let mounted = MountedSnapshot::new(&ctr, snapshotter, "work");
            change(mounted.path());
        }

        // The layer, as `ctr snapshot diff` prints it.
        let output = ctr
            .command(&["snapshot", "--snapshotter", snapshotter, "diff", "work"])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(output.status.success(), "ctr snapshot diff failed");
        let layer = output.stdout;
        assert_eq!(&layer[..2], &[0x1f, 0x8b], "a gzip layer");
        let names: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for wanted in [
            "etc/added",
            "etc/passwd",
            "etc/.wh.group",
            "var/.wh.www",
            "bin/ls",
            "opt/app/conf/app.toml",
        ] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n == "bin/busybox"),
            "unchanged files stay out: {names:?}"
        );

        // Store it, and apply it onto the same parent in a fresh snapshot.
        let digest = ctr.ingest(&format!("diff-{snapshotter}"), &layer);
        sn(&["prepare", "fresh", &image.chain_id]);
        let mounts = snapshot_mounts(&rt, &berth, snapshotter, "fresh");
        let applied = rt.block_on(async {
            DiffClient::new(berth.channel().await)
                .apply(namespaced(
                    "default",
                    ApplyRequest {
                        diff: Some(Descriptor {
                            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                            digest: digest.clone(),
                            size: layer.len() as i64,
                            annotations: Default::default(),
                        }),
                        mounts,
                        payloads: Default::default(),
                        sync_fs: true,
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .applied
                .unwrap()
        });
        assert_eq!(applied.media_type, "application/vnd.oci.image.layer.v1.tar");
        let uncompressed = {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(layer.as_slice())
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        assert_eq!(
            applied.digest,
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&uncompressed)))
        );

        let (changed, reproduced) = {
            let work = MountedSnapshot::new(&ctr, snapshotter, "work");
            let fresh = MountedSnapshot::new(&ctr, snapshotter, "fresh");
            (
                describe(work.path(), Describe::default()),
                describe(fresh.path(), Describe::default()),
            )
        };
        let diff = differences(&reproduced, &changed);
        assert!(
            diff.is_empty(),
            "{snapshotter}: the applied diff differs:\n{}",
            diff.join("\n")
        );
        assert!(changed["etc/added"].starts_with("file "));
        assert!(!changed.contains_key("var/www"));
        assert!(
            changed["opt/app/conf"].contains("owner=33:33"),
            "{}",
            changed["opt/app/conf"]
        );
        sn(&["rm", "work"]);
        sn(&["rm", "fresh"]);
    }
}
