//! The spec's mounts as runc makes them: in order, each seeing the ones
//! before it; bind sources followed through their symlinks; destinations
//! given as paths under the rootfs; read-only tmpfs and `/dev` made
//! read-only only once the tree (devices, console) is built. Run as root.

use berth_tests::bundle::Bundle;
use berth_tests::runc::{Runc, test_cgroup_path};

fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn bind(source: &std::path::Path, destination: &str, options: &str) -> serde_json::Value {
    serde_json::json!({
        "source": source, "destination": destination, "type": "bind",
        "options": options.split(',').collect::<Vec<_>>()
    })
}

#[test]
fn a_read_only_dev_is_read_only_once_its_devices_and_console_are_made() {
    let runc = Runc::new();
    let id = id("ro-dev");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "grep '^tmpfs /dev ' /proc/mounts; echo x >/dev/null && echo null-ok; touch /dev/new 2>&1; touch /tmp/ro-tmpfs/f 2>&1; true",
    ]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        let mounts = c["mounts"].as_array_mut().unwrap();
        for mount in mounts.iter_mut() {
            if mount["destination"] == "/dev" {
                mount["options"].as_array_mut().unwrap().push("ro".into());
            }
        }
        mounts.push(serde_json::json!({
            "destination": "/tmp/ro-tmpfs", "type": "tmpfs", "source": "tmpfs", "options": ["ro", "nosuid", "nodev"]
        }));
        mounts.push(serde_json::json!({
            "destination": "/tmp/ro-tmpfs/inner", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]
        }));
    });
    let out = runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let mut lines = out.lines();
    let dev = lines.next().unwrap_or_default();
    assert!(
        dev.split_whitespace().nth(3).is_some_and(|o| o.starts_with("ro,")),
        "{out}"
    );
    assert_eq!(lines.next(), Some("null-ok"), "{out}");
    // Both read-only after the tree was built: a mount point could be made
    // in the read-only tmpfs, a file cannot.
    assert!(
        lines.next().is_some_and(|l| l.contains("Read-only file system")),
        "{out}"
    );
    assert!(
        lines.next().is_some_and(|l| l.contains("Read-only file system")),
        "{out}"
    );
}

#[test]
fn mounts_see_the_ones_before_them_through_symlinked_sources_and_rootfs_paths() {
    let runc = Runc::new();
    let id = id("mount-order");
    let bundle = Bundle::busybox(&["cat", "/final/x/y/z/z/x/y/z/x/file"]);
    let rootfs = bundle.rootfs();
    std::fs::create_dir_all(rootfs.join("mnt")).unwrap();
    std::fs::create_dir_all(rootfs.join("final")).unwrap();
    let sources = tempfile::tempdir().unwrap();
    for sub in ["a/x", "b/y", "c/z"] {
        let dir = sources.path().join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file"), sub).unwrap();
        let top = sub.split('/').next().unwrap();
        std::os::unix::fs::symlink(top, sources.path().join(format!("sym-{top}"))).unwrap();
    }
    let src = |name: &str| sources.path().join(name);
    let under_rootfs = |path: &str| format!("{}{path}", rootfs.display());
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        let mounts = c["mounts"].as_array_mut().unwrap();
        // A tree of binds, two of them from symlinks to directories.
        mounts.push(bind(&src("a"), "/mnt", "bind"));
        mounts.push(bind(&src("sym-b"), "/mnt/x", "bind"));
        mounts.push(bind(&src("c"), "/mnt/x/y", "bind"));
        mounts.push(bind(&src("sym-a"), "/mnt/x/y/z", "bind"));
        // Sources in the tree built so far, destinations named by their
        // path under the rootfs.
        mounts.push(bind(
            std::path::Path::new(&under_rootfs("/mnt/x")),
            &under_rootfs("/mnt/x/y/z/x"),
            "rbind",
        ));
        mounts.push(bind(
            std::path::Path::new(&under_rootfs("/mnt/x/y")),
            &under_rootfs("/mnt/x/y/z"),
            "rbind",
        ));
        mounts.push(bind(
            std::path::Path::new(&under_rootfs("/mnt")),
            &under_rootfs("/final"),
            "rbind",
        ));
    });
    let out = runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(out, "a/x", "the last file comes from a/x");
    // Nothing was made at the rootfs path inside the rootfs.
    let nested = rootfs.join(rootfs.strip_prefix("/").unwrap());
    assert!(!nested.exists(), "{} was made", nested.display());
}

/// A bind of a mount the host made read-only stays read-only in a user
/// namespace, even for a root with CAP_SYS_ADMIN there: the kernel locks
/// the flags of mounts a less privileged namespace copied.
#[test]
fn a_host_read_only_mount_stays_read_only_from_a_user_namespace() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let host = tempfile::tempdir().unwrap();
    mount(
        Some("tmpfs"),
        host.path(),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(host.path().to_path_buf());
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, host.path(), None::<&str>, flags, None::<&str>).unwrap();

    let runc = Runc::new();
    let id = id("userns-ro");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "mount -o remount,bind,rw /mnt 2>&1; touch /mnt/x 2>&1; grep ' /mnt ' /proc/mounts",
    ]);
    // The namespace's root may not make it in the host root's rootfs.
    std::fs::create_dir_all(bundle.rootfs().join("mnt")).unwrap();
    let shifted = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    bundle.with_user_namespace(shifted.clone(), shifted);
    bundle.add_capability("CAP_SYS_ADMIN");
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(bind(host.path(), "/mnt", "bind"));
    });
    let out = runc.ok(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(out.contains("Read-only file system"), "the write is refused: {out}");
    let mnt = out.lines().last().unwrap_or_default();
    assert!(
        mnt.split_whitespace().nth(3).is_some_and(|o| o.starts_with("ro")),
        "{out}"
    );
    assert!(!host.path().join("x").exists());
}
