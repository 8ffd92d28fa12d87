//! The rootfs plan, checked call by call against the recording fake.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::{RootfsConfig, seal, setup};
use crate::cgroups::CgroupMount;
use crate::spec::{default_spec_json, parse};
use crate::syscalls::fake::{Call, Recorder};

fn spec_with(edit: impl FnOnce(&mut serde_json::Value)) -> oci_spec::runtime::Spec {
    let mut value: serde_json::Value = serde_json::from_str(&default_spec_json()).unwrap();
    edit(&mut value);
    parse(&value.to_string()).unwrap()
}

fn cgroups() -> Vec<CgroupMount> {
    vec![
        CgroupMount {
            name: "memory".into(),
            host_dir: PathBuf::from("/sys/fs/cgroup/memory/default/c1"),
            fstype: "cgroup".into(),
            data: Some("memory".into()),
        },
        CgroupMount {
            name: "unified".into(),
            host_dir: PathBuf::from("/sys/fs/cgroup/unified/default/c1"),
            fstype: "cgroup2".into(),
            data: None,
        },
    ]
}

fn run(spec: &oci_spec::runtime::Spec, fs: &Recorder, cgroup_ns: bool, no_pivot: bool) -> crate::error::Result<()> {
    let cgroups = cgroups();
    let config = RootfsConfig {
        spec,
        rootfs: Path::new("/b/rootfs"),
        bundle: Path::new("/b"),
        cgroups: &cgroups,
        cgroup_ns,
        user_ns: false,
        no_pivot,
        host_binds: None,
    };
    let unsealed = setup(fs, &config, &mut || Ok(()))?;
    seal(fs, unsealed)
}

#[test]
fn the_default_spec_mounts_in_order_then_pivots_and_seals_the_root() {
    let spec = spec_with(|_| {});
    let fs = Recorder::new();
    fs.dir("/b/rootfs/bin");
    run(&spec, &fs, false, false).unwrap();
    let mounts = fs.mounts();
    let targets: Vec<&str> = mounts.iter().map(|m| m.0.to_str().unwrap()).collect();
    assert_eq!(
        targets,
        [
            "/",
            "/b/rootfs",
            "/b/rootfs/proc",
            "/b/rootfs/dev",
            "/b/rootfs/dev/pts",
            "/b/rootfs/dev/shm",
            "/b/rootfs/dev/mqueue",
            "/b/rootfs/sys",
            "/b/rootfs/sys/fs/cgroup",
            "/b/rootfs/sys/fs/cgroup/memory",
            "/b/rootfs/sys/fs/cgroup/memory",
            "/b/rootfs/sys/fs/cgroup/unified",
            "/b/rootfs/sys/fs/cgroup/unified",
            "/b/rootfs/sys/fs/cgroup/memory",
            "/b/rootfs/sys/fs/cgroup/unified",
            "/b/rootfs/sys/fs/cgroup",
            "/",
        ]
    );
    assert_eq!(mounts[0].2, MsFlags::MS_SLAVE | MsFlags::MS_REC, "/ becomes an rslave");
    assert_eq!(mounts[1].2, MsFlags::MS_BIND | MsFlags::MS_REC);
    assert_eq!(mounts[3].1.as_deref(), Some("tmpfs"));
    assert_eq!(mounts[3].3.as_deref(), Some("mode=755,size=65536k"));
    // Without a cgroup namespace the container's directories are bound in,
    // then remounted with the entry's flags, then read-only.
    assert_eq!(mounts[9].2, MsFlags::MS_BIND | MsFlags::MS_REC);
    assert!(mounts[10].2.contains(MsFlags::MS_NOSUID | MsFlags::MS_REMOUNT));
    assert!(!mounts[10].2.contains(MsFlags::MS_RDONLY));
    assert!(mounts[13].2.contains(MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT));
    assert_eq!(
        mounts[16].2,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        "the read-only root comes last, after pivot_root"
    );
    let calls = fs.calls();
    let pivot = calls
        .iter()
        .position(|c| *c == Call::PivotInto(PathBuf::from("/b/rootfs")))
        .unwrap();
    let null = calls
        .iter()
        .position(|c| matches!(c, Call::Mknod(p, _, 0o666, 1, 3) if p == Path::new("/b/rootfs/dev/null")))
        .unwrap();
    assert!(null < pivot, "devices are made before pivot_root");
    assert!(calls.contains(&Call::Symlink(
        PathBuf::from("/proc/self/fd"),
        PathBuf::from("/b/rootfs/dev/fd")
    )));
    assert!(calls.contains(&Call::Symlink(
        PathBuf::from("pts/ptmx"),
        PathBuf::from("/b/rootfs/dev/ptmx")
    )));
}

#[test]
fn a_cgroup_namespace_mounts_fresh_hierarchies_and_no_pivot_moves_the_root() {
    let spec = spec_with(|_| {});
    let fs = Recorder::new();
    run(&spec, &fs, true, true).unwrap();
    let mounts = fs.mounts();
    let memory = mounts
        .iter()
        .find(|m| m.0 == Path::new("/b/rootfs/sys/fs/cgroup/memory"))
        .unwrap();
    assert_eq!(memory.1.as_deref(), Some("cgroup"));
    assert_eq!(memory.3.as_deref(), Some("memory"));
    assert!(fs.calls().contains(&Call::MoveInto(PathBuf::from("/b/rootfs"))));
}

#[test]
fn bind_mounts_remount_for_their_flags_and_keep_propagation() {
    let spec = spec_with(|v| {
        v["mounts"] = serde_json::json!([
            {"destination": "/data", "type": "bind", "source": "/host/data", "options": ["rbind", "ro", "rprivate"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "hosts", "options": ["bind"]}
        ]);
    });
    let fs = Recorder::new();
    fs.dir("/host/data").file("/b/hosts");
    run(&spec, &fs, false, false).unwrap();
    let mounts = fs.mounts();
    assert_eq!(mounts[2].0, Path::new("/b/rootfs/data"));
    assert_eq!(mounts[2].2, MsFlags::MS_BIND | MsFlags::MS_REC);
    assert_eq!(mounts[3].2, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY);
    assert_eq!(mounts[4].2, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
    assert_eq!(mounts[5].0, Path::new("/b/rootfs/etc/hosts"));
    assert!(
        fs.calls()
            .contains(&Call::CreateFile(PathBuf::from("/b/rootfs/etc/hosts")))
    );
}

#[test]
fn bad_mounts_are_refused_naming_the_field() {
    let escape = spec_with(|v| {
        v["mounts"] = serde_json::json!([{"destination": "/etc/evil/x", "type": "tmpfs", "source": "tmpfs"}]);
    });
    let fs = Recorder::new();
    fs.link("/b/rootfs/etc/evil", "../../../../tmp");
    let err = run(&escape, &fs, false, false).unwrap_err();
    assert_eq!(err.subject.as_deref(), Some("mounts[0].destination"));
    assert!(
        fs.mounts().iter().all(|m| !m.0.starts_with("/tmp")),
        "nothing mounted outside"
    );

    let missing = spec_with(|v| {
        v["mounts"] = serde_json::json!([{"destination": "/data", "type": "bind", "source": "/nope"}]);
    });
    let err = run(&missing, &Recorder::new(), false, false).unwrap_err();
    assert_eq!(err.subject.as_deref(), Some("mounts[0].source"));

    let typeless = spec_with(|v| {
        v["mounts"] = serde_json::json!([{"destination": "/x", "source": "none"}]);
    });
    let err = run(&typeless, &Recorder::new(), false, false).unwrap_err();
    assert_eq!(err.subject.as_deref(), Some("mounts[0].type"));
}
