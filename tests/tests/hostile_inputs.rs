//! Hostile and long-running inputs: ids past 2^31-1 never run as root,
//! header bombs in layers are refused with bounded memory, container
//! lifecycles leak no descriptors or threads, layers that write through a
//! symlinked directory apply in order, and shim sockets are private.
//! Run as root.

use std::io::Read as _;
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_tests::bundle::Bundle;
use berth_tests::daemon::Daemon;
use berth_tests::images::{self, Compression};
use berth_tests::runc::{Runc, test_cgroup_path};
use berth_tests::wait;

/// The range message runc gives, which berth gives too.
const RANGE: &str = "0-2147483647";
const OVERFLOW: u64 = 4_294_967_295;

fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// A field of `/proc/<pid>/status`, in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"))
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd dir").count()
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .count()
}

#[test]
fn berth_runc_refuses_ids_past_2_31_in_the_spec_and_in_exec() {
    let runc = Runc::new();
    for (field, edit) in [("uid", "uid"), ("gid", "gid"), ("additionalGids", "additionalGids")] {
        let id = id(&format!("overflow-{field}"));
        let bundle = Bundle::busybox(&["id"]);
        bundle.edit(|c| {
            c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into();
            c["process"]["user"][edit] = if edit == "additionalGids" {
                serde_json::json!([10, OVERFLOW])
            } else {
                OVERFLOW.into()
            };
        });
        let err = runc.fails(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
        assert!(err.contains(RANGE) && err.contains(field), "{field}: {err}");
        assert!(runc.ids().is_empty(), "{field}: nothing is left: {:?}", runc.ids());
    }

    // An id mapping whose container range runs past 2^31-1.
    let id_map = id("overflow-map");
    let bundle = Bundle::busybox(&["id"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = test_cgroup_path(&id_map).into();
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
        c["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536},
            {"containerID": 2147483647u64, "hostID": 300000, "size": 2}]);
        c["linux"]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let err = runc.fails(&["run", "--bundle", bundle.path().to_str().unwrap(), &id_map]);
    assert!(err.contains(RANGE) && err.contains("uidMappings[1]"), "{err}");
    assert!(runc.ids().is_empty());

    // exec --user and a process.json with the overflowing uid.
    let id = id("overflow-exec");
    let bundle = Bundle::busybox(&["sleep", "1000"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = test_cgroup_path(&id).into());
    runc.ok_detached(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let err = runc.fails(&["exec", "--user", &format!("{OVERFLOW}"), &id, "id", "-u"]);
    assert!(err.contains(RANGE), "{err}");
    let err = runc.fails(&["exec", "--user", &format!("0:{OVERFLOW}"), &id, "id", "-u"]);
    assert!(err.contains(RANGE), "{err}");
    let process = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        process.path(),
        serde_json::json!({"cwd": "/", "args": ["id", "-u"], "user": {"uid": OVERFLOW, "gid": 0},
            "env": ["PATH=/bin"]})
        .to_string(),
    )
    .unwrap();
    let err = runc.fails(&["exec", "-p", process.path().to_str().unwrap(), &id]);
    assert!(err.contains(RANGE), "{err}");
    // In range still works, and the container is untouched.
    assert_eq!(
        runc.ok(&["exec", "--user", "2147483647", &id, "id", "-u"]).trim(),
        "2147483647"
    );
    assert_eq!(runc.status(&id), "running");
    runc.ok(&["kill", &id, "KILL"]);
    wait::until(Duration::from_secs(10), "the container to stop", || {
        (runc.status(&id) == "stopped").then_some(())
    });
    runc.ok(&["delete", &id]);
}

#[test]
fn ctr_run_and_exec_with_an_overflowing_user_are_refused() {
    let (daemon, ctr, busybox) = Daemon::with_busybox();
    let no_leftovers = |what: &str| {
        assert!(
            ctr.ok(&["task", "ls", "-q"]).trim().is_empty(),
            "{what}: a task is left"
        );
        assert!(
            !daemon.dir().join("state/tasks/default/overflow").exists(),
            "{what}: bundle left"
        );
        wait::until(Duration::from_secs(10), "the shims to exit", || {
            (daemon.shims() == 0).then_some(())
        });
        let _ = ctr.run(&["containers", "rm", "overflow"]);
    };

    // An image whose config names the uid: ctr itself refuses it (it
    // takes a number past 2^31-1 for a user name), and nothing starts.
    let image = images::busybox_as_user("docker.io/berth/overflow-user:latest", &OVERFLOW.to_string());
    ctr.import("overlayfs", &image.oci_tar);
    let err = ctr.fails(&["run", "--rm", &image.name, "overflow", "id", "-u"]);
    assert!(err.contains("no users found"), "{err}");
    no_leftovers("image user");

    // A spec that names it (ctr run --config passes it as is): the
    // runtime refuses uid, gid and additional gids alike.
    let rootfs = Bundle::busybox(&["true"]);
    let spec_path = daemon.dir().join("overflow-spec.json");
    let base: serde_json::Value = serde_json::from_str(&ctr.ok(&["oci", "spec"])).unwrap();
    for field in ["uid", "gid", "additionalGids"] {
        let mut spec = base.clone();
        spec["root"] = serde_json::json!({"path": rootfs.rootfs(), "readonly": false});
        spec["process"]["args"] = serde_json::json!(["id", "-u"]);
        spec["process"]["user"][field] = if field == "additionalGids" {
            serde_json::json!([OVERFLOW])
        } else {
            OVERFLOW.into()
        };
        std::fs::write(&spec_path, spec.to_string()).unwrap();
        let err = ctr.fails(&["run", "--config", spec_path.to_str().unwrap(), "--rm", "overflow"]);
        assert!(err.contains(RANGE) && err.contains(field), "{field}: {err}");
        no_leftovers(field);
    }

    // Exec with the uid in the process spec (from a gRPC client: ctr's
    // --user refuses it before asking).
    ctr.ok(&["run", "-d", &busybox, "target", "sleep", "1000"]);
    let err = ctr.fails(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "--user",
        &OVERFLOW.to_string(),
        "target",
        "id",
    ]);
    assert!(err.contains("no users found"), "{err}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        use berth_api::containerd::services::tasks::v1::ExecProcessRequest;
        use berth_api::containerd::services::tasks::v1::tasks_client::TasksClient;
        let mut tasks = TasksClient::new(daemon.channel().await);
        let process = serde_json::json!({"cwd": "/", "args": ["id", "-u"], "env": ["PATH=/bin"],
            "user": {"uid": OVERFLOW, "gid": 0}});
        let request = ExecProcessRequest {
            container_id: "target".into(),
            exec_id: "e2".into(),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: process.to_string().into_bytes(),
            }),
            ..Default::default()
        };
        tasks
            .exec(berth_api::client::namespaced("default", request))
            .await
            .expect_err("the exec is refused")
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(RANGE), "{status:?}");
    assert_eq!(
        ctr.ok(&[
            "task",
            "exec",
            "--exec-id",
            "e3",
            "--user",
            "2147483647",
            "target",
            "id",
            "-u"
        ])
        .trim(),
        "2147483647"
    );
    assert_eq!(ctr.task_status("target"), "RUNNING");
    ctr.remove_all_tasks_and_containers();
}

/// A layer holding one GNU long-name record of `size` bytes before a file.
fn long_name_layer(size: u64) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_cksum();
    builder
        .append(&header, std::io::repeat(b'a').take(size))
        .expect("long name");
    append_file(&mut builder, "after", b"hi");
    builder.into_inner().unwrap()
}

/// Appends a regular file, mode 0644.
fn append_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, path, data).expect("tar file");
}

#[test]
fn a_64_mib_long_name_is_refused_naming_the_layer_with_memory_bounded() {
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    let bomb = images::custom("long-name-64m", "docker.io/berth/bomb:latest", None, || {
        vec![(Compression::Gzip, long_name_layer(64 << 20))]
    });
    let compressed = std::fs::metadata(&bomb.oci_tar).unwrap().len();
    assert!(compressed < 1 << 20, "the bomb is small: {compressed} bytes");
    let before = status_kb(daemon.pid(), "VmHWM:");
    let out = ctr.run(&[
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        bomb.oci_tar.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", out.stdout);
    let digest = bomb.layer_digest.trim_start_matches("sha256:");
    assert!(
        out.stderr.contains(digest) && out.stderr.contains("exceeds 1 MiB"),
        "the error names the layer: {}",
        out.stderr
    );
    let peak = status_kb(daemon.pid(), "VmHWM:");
    assert!(
        peak < before + 256 * 1024,
        "berthd's peak RSS grew from {before} kB to {peak} kB"
    );
    // The daemon still answers and left no snapshot of the layer.
    assert!(
        ctr.ok(&["snapshots", "--snapshotter", "overlayfs", "ls"])
            .lines()
            .count()
            <= 1
    );
    ctr.ok(&["version"]);

    // Under the cap the header is read: a 512 KiB name is then too long
    // for the filesystem, and the error quotes it cut short.
    let long = images::custom("long-name-512k", "docker.io/berth/long-name:latest", None, || {
        vec![(Compression::Gzip, long_name_layer(512 << 10))]
    });
    let out = ctr.run(&[
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        long.oci_tar.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr.len() < 4096 && out.stderr.contains("(524288 bytes)"),
        "{}",
        &out.stderr[..out.stderr.len().min(4096)]
    );
    // And 512 KiB of PAX records apply.
    let pax = images::custom("pax-512k", "docker.io/berth/pax:latest", None, || {
        vec![(Compression::Gzip, pax_layer(512 << 10))]
    });
    ctr.import("overlayfs", &pax.oci_tar);
}

/// A layer whose one file carries a PAX comment record of `size` bytes.
fn pax_layer(size: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let comment = vec![b'c'; size];
    builder
        .append_pax_extensions([("comment", comment.as_slice())])
        .expect("pax");
    append_file(&mut builder, "commented", b"hi");
    builder.into_inner().unwrap()
}

/// A layer that makes `lib -> usr/lib`, then writes `usr/lib/x` and
/// `lib/x` (the same file), the same path twice, and a hard link to a
/// file that a later entry replaces.
fn symlinked_dir_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let dir = |builder: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder.append_data(&mut header, path, std::io::empty()).unwrap();
    };
    let file = append_file;
    let link = |builder: &mut tar::Builder<Vec<u8>>, kind, path: &str, target: &str| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o777);
        header.set_size(0);
        builder.append_link(&mut header, path, target).unwrap();
    };
    dir(&mut builder, "usr/");
    dir(&mut builder, "usr/lib/");
    link(&mut builder, tar::EntryType::Symlink, "lib", "usr/lib");
    file(&mut builder, "usr/lib/x", b"first\n");
    file(&mut builder, "lib/x", b"second\n");
    file(&mut builder, "twice", b"one\n");
    file(&mut builder, "twice", b"two\n");
    file(&mut builder, "orig", b"old\n");
    link(&mut builder, tar::EntryType::Link, "hard", "orig");
    file(&mut builder, "orig", b"new\n");
    builder.into_inner().unwrap()
}

/// A layer of regular files.
fn files_layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        append_file(&mut builder, path, data);
    }
    builder.into_inner().unwrap()
}

/// Mounts a view of `chain_id` and reads what `read` wants of it.
fn inspect<T>(ctr: &berth_tests::ctr::Ctr, chain_id: &str, read: impl FnOnce(&Path) -> T) -> T {
    let mounts = tempfile::tempdir().unwrap();
    let target = mounts.path();
    let key = "inspect";
    // The mount is printed as the view is made: containerd may collect
    // an unreferenced view before a second request.
    let mount = ctr.ok(&[
        "snapshots",
        "--snapshotter",
        "overlayfs",
        "view",
        "--target",
        target.to_str().unwrap(),
        key,
        chain_id,
    ]);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(mount.trim())
        .status()
        .unwrap();
    assert!(status.success(), "{mount}");
    let result = read(target);
    nix::mount::umount(target).unwrap();
    let _ = ctr.run(&["snapshots", "--snapshotter", "overlayfs", "rm", key]);
    result
}

#[test]
fn a_layer_writing_through_a_lower_layers_symlinked_directory_unpacks_as_containerds() {
    // Layers are applied to the snapshot's own upper directory, as
    // containerd's overlay applier does: a name that runs through a
    // symlink of a lower layer is made a directory of the upper one.
    let image = images::custom(
        "symlinked-lower-v1",
        "docker.io/berth/symlinked-lower:latest",
        None,
        || {
            vec![
                (Compression::Gzip, symlinked_dir_layer()),
                (
                    Compression::Gzip,
                    files_layer(&[("lib/y", b"upper\n"), ("lib/x", b"third\n")]),
                ),
            ]
        },
    );
    let view = |ctr: &berth_tests::ctr::Ctr| {
        ctr.import("overlayfs", &image.oci_tar);
        inspect(ctr, &image.chain_id, |root| {
            let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| e.kind().to_string());
            (
                std::fs::symlink_metadata(root.join("lib"))
                    .map(|m| m.file_type().is_symlink())
                    .ok(),
                [read("lib/x"), read("lib/y"), read("usr/lib/x"), read("usr/lib/y")],
            )
        })
    };
    let daemon = Daemon::start();
    let containerd = berth_tests::containerd::Containerd::start();
    assert_eq!(view(&daemon.ctr()), view(&containerd.ctr()));
}

#[test]
fn a_layer_writing_one_file_through_a_symlinked_directory_applies_in_order() {
    let image = images::custom("symlinked-dir-v1", "docker.io/berth/symlinked:latest", None, || {
        vec![(Compression::Gzip, symlinked_dir_layer())]
    });
    let view = |ctr: &berth_tests::ctr::Ctr| {
        ctr.import("overlayfs", &image.oci_tar);
        inspect(ctr, &image.chain_id, |root| {
            let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| format!("{p}: {e}"));
            (
                std::fs::symlink_metadata(root.join("lib"))
                    .map(|m| m.file_type().is_symlink())
                    .ok(),
                [
                    read("usr/lib/x"),
                    read("lib/x"),
                    read("twice"),
                    read("orig"),
                    read("hard"),
                ],
            )
        })
    };
    let daemon = Daemon::start();
    let berth = view(&daemon.ctr());
    let want = ["second\n", "second\n", "two\n", "new\n", "old\n"].map(String::from);
    assert_eq!(berth, (Some(true), want));
    let containerd = berth_tests::containerd::Containerd::start();
    assert_eq!(berth, view(&containerd.ctr()), "as containerd unpacks it");
}

#[test]
fn three_hundred_lifecycles_leave_berthd_fds_and_threads_at_idle() {
    let (daemon, ctr, image) = Daemon::with_busybox();
    let pid = daemon.pid();
    // Warm up: the first lifecycle opens what stays open (the database,
    // the event bus, pooled threads).
    ctr.ok(&["run", "--rm", &image, "warm", "true"]);
    let settle = |what: &str, count: &dyn Fn() -> usize, limit: usize| {
        wait::until(Duration::from_secs(30), what, || (count() <= limit).then_some(()));
    };
    std::thread::sleep(Duration::from_secs(1));
    let idle_fds = fd_count(pid);
    let idle_threads = thread_count(pid);
    for i in 0..300 {
        let out = ctr.run(&["run", "--rm", &image, &format!("c{i}"), "true"]);
        assert!(out.status.success(), "lifecycle {i}: {}", out.stderr);
    }
    settle("berthd's fds to return to idle", &|| fd_count(pid), idle_fds + 2);
    settle(
        "berthd's threads to return to idle",
        &|| thread_count(pid),
        idle_threads.max(8) + 4,
    );
    wait::until(Duration::from_secs(10), "the shims to exit", || {
        (daemon.shims() == 0).then_some(())
    });
    // Garbage collection still works.
    ctr.ok(&["images", "rm", &image]);
    ctr.ok(&["content", "ls"]);
}

#[test]
fn shim_sockets_are_private_files_in_a_private_directory() {
    let (daemon, ctr, image) = Daemon::with_busybox();
    ctr.ok(&["run", "-d", &image, "private", "sleep", "1000"]);
    // Shims listen at <state>/s/<digest>.
    fn find(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_socket() && path.parent().is_some_and(|p| p.ends_with("s")) {
                found.push(path);
            } else if meta.is_dir() {
                find(&path, found);
            }
        }
    }
    let mut sockets = Vec::new();
    find(daemon.dir(), &mut sockets);
    assert_eq!(
        sockets.len(),
        1,
        "one shim socket under {}: {sockets:?}",
        daemon.dir().display()
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&sockets[0]), 0o600, "{}", sockets[0].display());
    let dir = sockets[0].parent().unwrap();
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    ctr.remove_all_tasks_and_containers();
}
