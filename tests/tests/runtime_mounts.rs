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
/// A tmpfs of the host's, in a temporary directory, unmounted on drop
/// (even when a test fails).
struct HostMount {
    dir: tempfile::TempDir,
}

impl HostMount {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Sets the mount's own flags, as `mount --bind -o remount,<options>`
    /// after a reset of the access-time mode (a remount naming relatime
    /// leaves a noatime mount as it is).
    fn set_flags(&self, options: &str) {
        for options in ["diratime,atime,strictatime", options] {
            let status = std::process::Command::new("mount")
                .args(["--bind", "-o", &format!("remount,{options}")])
                .arg(self.path())
                .status()
                .unwrap();
            assert!(status.success(), "mount -o remount,{options}");
        }
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A user namespace mapping 65536 ids from 100000.
fn shifted(bundle: &Bundle) {
    let shifted = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    bundle.with_user_namespace(shifted.clone(), shifted);
}

#[test]
fn a_host_read_only_mount_stays_read_only_from_a_user_namespace() {
    let host = HostMount::new();
    host.set_flags("ro");

    let runc = Runc::new();
    let id = id("userns-ro");
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "mount -o remount,bind,rw /mnt 2>&1; touch /mnt/x 2>&1; grep ' /mnt ' /proc/mounts",
    ]);
    // The namespace's root may not make it in the host root's rootfs.
    std::fs::create_dir_all(bundle.rootfs().join("mnt")).unwrap();
    shifted(&bundle);
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

/// Runs a container binding `host` on /mnt with `options`; its flags as
/// /proc/self/mounts shows them, or the error.
fn bind_flags(runc: &Runc, host: &HostMount, options: &str, user_namespace: bool) -> Result<Vec<String>, String> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = id(&format!(
        "bind-flags-{}",
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let bundle = Bundle::busybox(&["sh", "-c", "grep ' /mnt ' /proc/self/mounts"]);
    std::fs::create_dir_all(bundle.rootfs().join("mnt")).unwrap();
    if user_namespace {
        shifted(&bundle);
    }
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(bind(host.path(), "/mnt", options));
    });
    let out = runc.run(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags = line.split_whitespace().nth(3).unwrap_or_default();
    Ok(flags.split(',').map(str::to_string).collect())
}

#[test]
fn a_bind_gets_the_flags_asked_for_and_from_a_user_namespace_keeps_only_the_locked_ones_not_refused() {
    let runc = Runc::new();
    let host = HostMount::new();
    let has = |flags: &[String], flag: &str| flags.iter().any(|f| f == flag);

    // No user namespace: what the options name, nothing the source had.
    host.set_flags("ro,nodev,noexec");
    let flags = bind_flags(&runc, &host, "bind,nosuid", false).unwrap();
    assert!(has(&flags, "rw") && has(&flags, "nosuid"), "{flags:?}");
    assert!(!has(&flags, "nodev") && !has(&flags, "noexec"), "{flags:?}");
    // Naming none keeps them all.
    let flags = bind_flags(&runc, &host, "bind", false).unwrap();
    assert!(
        has(&flags, "ro") && has(&flags, "nodev") && has(&flags, "noexec"),
        "{flags:?}"
    );

    // Access time: kept unless a mode is named ("atime" names none).
    host.set_flags("rw,dev,exec,noatime");
    let flags = bind_flags(&runc, &host, "bind,atime", false).unwrap();
    assert!(has(&flags, "noatime"), "{flags:?}");
    let flags = bind_flags(&runc, &host, "bind,relatime", false).unwrap();
    assert!(has(&flags, "relatime") && !has(&flags, "noatime"), "{flags:?}");

    // A user namespace: the locked flags are repeated where the options
    // are silent about them...
    host.set_flags("ro,nodev,relatime");
    let flags = bind_flags(&runc, &host, "bind,nosuid", true).unwrap();
    assert!(
        has(&flags, "ro") && has(&flags, "nodev") && has(&flags, "nosuid"),
        "{flags:?}"
    );
    // ... and refused where they ask for the contrary.
    let err = bind_flags(&runc, &host, "bind,rw", true).unwrap_err();
    assert!(err.contains("mounts[") && err.contains("cannot clear ro"), "{err}");
    let err = bind_flags(&runc, &host, "bind,nosuid,noatime", true).unwrap_err();
    assert!(err.contains("access-time"), "{err}");
    // A clearing flag that is not set on the source changes nothing.
    host.set_flags("rw,noatime,nodiratime");
    let flags = bind_flags(&runc, &host, "bind,norelatime", true).unwrap();
    assert!(has(&flags, "noatime") && has(&flags, "nodiratime"), "{flags:?}");
}

#[test]
fn sources_closed_to_a_user_namespace_are_bound_for_it_and_keep_their_locked_flags() {
    use std::os::unix::fs::PermissionsExt as _;
    let host = HostMount::new();
    for n in [1, 2] {
        let closed = host.path().join(format!("closed-{n}"));
        std::fs::create_dir_all(closed.join("dir")).unwrap();
        std::fs::write(closed.join("dir/foo.txt"), format!("foo-{n}\n")).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    host.set_flags("ro");

    let runc = Runc::new();
    let id = id("userns-closed");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    for n in [1, 2] {
        std::fs::create_dir_all(bundle.rootfs().join(format!("tmp/mount-{n}"))).unwrap();
    }
    shifted(&bundle);
    bundle.add_capability("CAP_SYS_ADMIN");
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
        let mounts = c["mounts"].as_array_mut().unwrap();
        for n in [1, 2] {
            let source = host.path().join(format!("closed-{n}/dir"));
            mounts.push(bind(&source, &format!("/tmp/mount-{n}"), "bind"));
        }
    });
    // The namespace's root cannot reach them itself.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=100000", "--regid=100000", "--clear-groups", "stat"])
        .arg(host.path().join("closed-1/dir"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the test's source is not closed");

    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let script = "cat /tmp/mount-1/foo.txt /tmp/mount-2/foo.txt; \
                  touch /tmp/mount-1/x 2>&1; mount -o remount,bind,rw /tmp/mount-1 2>&1; \
                  grep ' /tmp/mount-1 ' /proc/self/mounts";
    let out = runc.run(&["exec", &id, "sh", "-c", script]);
    runc.ok(&["delete", "--force", &id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("foo-1"), "{stdout}");
    assert_eq!(lines.next(), Some("foo-2"), "{stdout}");
    assert!(stdout.contains("Read-only file system"), "{stdout}");
    let mount = stdout.lines().last().unwrap_or_default();
    assert!(
        mount.split_whitespace().nth(3).is_some_and(|o| o.starts_with("ro")),
        "the host's read-only flag stays locked: {stdout}"
    );
}
