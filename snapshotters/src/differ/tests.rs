//! The differ against real trees: computed layers reproduce the changed
//! tree when applied, overlay whiteouts, and hostile archives that must not
//! touch anything outside the target.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// What a tree holds, path by path: type, mode, owner, whole-second mtime
/// (directories too, except the root), content or link target, and which
/// other paths share the inode.
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let meta = fs::symlink_metadata(&full).unwrap();
        let kind = meta.file_type();
        let body = if kind.is_dir() {
            for entry in fs::read_dir(&full).unwrap() {
                stack.push(rel.join(entry.unwrap().file_name()));
            }
            "dir".to_string()
        } else if kind.is_symlink() {
            format!("-> {}", fs::read_link(&full).unwrap().display())
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                inodes.entry(meta.ino()).or_default().push(rel.clone());
            }
            format!("file {:?}", String::from_utf8_lossy(&fs::read(&full).unwrap()))
        } else {
            format!("special {:x}", meta.rdev())
        };
        let mtime = if rel.as_os_str().is_empty() { 0 } else { meta.mtime() };
        let line = format!(
            "{body} mode={:o} owner={}:{} mtime={mtime}",
            meta.mode(),
            meta.uid(),
            meta.gid()
        );
        out.insert(rel, line);
    }
    for mut names in inodes.into_values() {
        names.sort();
        for name in &names {
            let line = out.get_mut(name).unwrap();
            line.push_str(&format!(" links={names:?}"));
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success());
}

fn set_mtime(path: &Path, seconds: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let times = [timespec(seconds), timespec(seconds)];
    // SAFETY: NUL-terminated path, two-element times array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

fn timespec(seconds: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    }
}

/// A lower tree as a layer would leave it: whole-second times.
fn lower_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    fs::create_dir_all(root.join("var/cache/deep")).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("etc/hostname"), "lower\n").unwrap();
    fs::write(root.join("etc/conf.d/a.conf"), "a=1\n").unwrap();
    fs::write(root.join("var/cache/deep/blob"), vec![7u8; 70_000]).unwrap();
    fs::write(root.join("bin/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("bin/same-second"), "AAAA").unwrap();
    symlink("tool", root.join("bin/alias")).unwrap();
    for path in [
        "etc/hostname",
        "etc/conf.d/a.conf",
        "var/cache/deep/blob",
        "bin/tool",
        "bin/same-second",
        "bin/alias",
        "etc/conf.d",
        "var/cache/deep",
        "var/cache",
        "etc",
        "var",
        "bin",
    ] {
        set_mtime(&root.join(path), 1_700_000_000);
    }
}

/// Adds, modifies and deletes files and directories.
fn change_tree(root: &Path) {
    fs::write(root.join("etc/hostname"), "upper\n").unwrap();
    fs::write(root.join("etc/new-file"), "new\n").unwrap();
    fs::create_dir_all(root.join("opt/app/lib")).unwrap();
    fs::write(root.join("opt/app/lib/x.so"), "elf").unwrap();
    fs::remove_file(root.join("etc/conf.d/a.conf")).unwrap();
    fs::remove_dir_all(root.join("var/cache")).unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_file(root.join("bin/alias")).unwrap();
    symlink("/bin/tool", root.join("bin/alias")).unwrap();
    fs::hard_link(root.join("bin/tool"), root.join("bin/tool-link")).unwrap();
    std::os::unix::fs::lchown(root.join("etc/new-file"), Some(1234), Some(5678)).unwrap();
    // Same size, same whole second as the lower file: only the bytes differ.
    fs::write(root.join("bin/same-second"), "BBBB").unwrap();
    set_mtime(&root.join("bin/same-second"), 1_700_000_000);
}

/// Three copies of the lower tree: `lower`, `upper` (to change) and
/// `applied` (to apply the computed layer onto).
struct Trees {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    applied: PathBuf,
}

fn trees() -> Trees {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper, applied) = (
        dir.path().join("lower"),
        dir.path().join("upper"),
        dir.path().join("applied"),
    );
    fs::create_dir(&lower).unwrap();
    lower_tree(&lower);
    copy_tree(&lower, &upper);
    copy_tree(&lower, &applied);
    Trees {
        _dir: dir,
        lower,
        upper,
        applied,
    }
}

fn layer_of(lower: &Path, upper: &Path) -> Vec<u8> {
    let mut layer = Vec::new();
    write_diff(lower, upper, &mut layer).unwrap();
    layer
}

#[test]
fn a_computed_layer_applied_to_the_lower_tree_reproduces_the_upper() {
    let Trees {
        lower, upper, applied, ..
    } = &trees();
    change_tree(upper);

    let layer = layer_of(lower, upper);
    let names: Vec<String> = tar::Archive::new(layer.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"var/.wh.cache".to_string()), "{names:?}");
    assert!(names.contains(&"etc/conf.d/.wh.a.conf".to_string()), "{names:?}");
    assert!(names.contains(&"bin/same-second".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("var/cache/")), "{names:?}");
    // Parents come before what is in them.
    let position = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(position("opt/") < position("opt/app/") && position("opt/app/lib/") < position("opt/app/lib/x.so"));

    apply(layer.as_slice(), &Target::directory(applied).unwrap()).unwrap();
    // Layers carry whole seconds, and describe() compares whole seconds.
    assert_eq!(describe(applied), describe(upper));
}

#[test]
fn identical_trees_give_an_empty_layer() {
    let Trees { lower, upper, .. } = &trees();
    let layer = layer_of(lower, upper);
    assert_eq!(tar::Archive::new(layer.as_slice()).entries().unwrap().count(), 0);
}

#[test]
fn an_unchanged_file_sharing_an_inode_with_a_new_one_is_linked() {
    let Trees {
        lower, upper, applied, ..
    } = &trees();
    // "etc/hostname" is unchanged; "zz-link" (walked after it) is new.
    fs::hard_link(upper.join("etc/hostname"), upper.join("zz-link")).unwrap();
    let layer = layer_of(lower, upper);
    apply(layer.as_slice(), &Target::directory(applied).unwrap()).unwrap();
    let (a, b) = (
        fs::metadata(applied.join("etc/hostname")).unwrap(),
        fs::metadata(applied.join("zz-link")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "the two names share one inode after apply");
    assert_eq!(describe(applied), describe(upper));
}

/// A tar entry written byte for byte, so names the tar crate would refuse
/// (`..`, absolute) can be built.
fn raw_entry(layer: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    layer.append(&header, data).unwrap();
}

struct HostileCase {
    name: &'static str,
    entries: Vec<(tar::EntryType, String, String, &'static [u8])>,
}

#[test]
fn hostile_layers_never_touch_anything_outside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let canary = outside.join("canary");
    fs::write(&canary, "untouched").unwrap();
    let out = outside.display().to_string();
    let rel_out = "../outside"; // from the target, which sits beside `outside`
    let regular = tar::EntryType::Regular;
    let cases = vec![
        HostileCase {
            name: "dot-dot",
            entries: vec![(regular, format!("{rel_out}/canary"), String::new(), b"owned")],
        },
        HostileCase {
            name: "deep dot-dot",
            entries: vec![(regular, "a/../../../../outside/canary".into(), String::new(), b"owned")],
        },
        HostileCase {
            name: "absolute",
            entries: vec![(regular, format!("{out}/canary"), String::new(), b"owned")],
        },
        HostileCase {
            name: "symlink out, then a file through it",
            entries: vec![
                (tar::EntryType::Symlink, "escape".into(), out.clone(), b""),
                (regular, "escape/canary".into(), String::new(), b"owned"),
            ],
        },
        HostileCase {
            name: "relative symlink out, then a file through it",
            entries: vec![
                (tar::EntryType::Symlink, "up".into(), "../../../..".into(), b""),
                (regular, format!("up{out}/canary"), String::new(), b"owned"),
            ],
        },
        HostileCase {
            name: "symlink to the canary, then a file of that name",
            entries: vec![
                (tar::EntryType::Symlink, "c".into(), format!("{out}/canary"), b""),
                (regular, "c".into(), String::new(), b"owned"),
            ],
        },
        HostileCase {
            name: "hard link to a host file",
            entries: vec![(tar::EntryType::Link, "stolen".into(), format!("{out}/canary"), b"")],
        },
        HostileCase {
            name: "hard link through dot-dot",
            entries: vec![(tar::EntryType::Link, "stolen".into(), format!("{rel_out}/canary"), b"")],
        },
        HostileCase {
            name: "hard link through a symlink out",
            entries: vec![
                (tar::EntryType::Symlink, "escape".into(), out.clone(), b""),
                (tar::EntryType::Link, "stolen".into(), "escape/canary".into(), b""),
            ],
        },
        HostileCase {
            name: "whiteout of ..",
            entries: vec![(regular, "sub/.wh...".into(), String::new(), b"")],
        },
        HostileCase {
            name: "whiteout through a symlink out",
            entries: vec![
                (tar::EntryType::Symlink, "escape".into(), out.clone(), b""),
                (regular, "escape/.wh.canary".into(), String::new(), b""),
            ],
        },
        HostileCase {
            name: "opaque directory through a symlink out",
            entries: vec![
                (tar::EntryType::Symlink, "escape".into(), out.clone(), b""),
                (regular, "escape/.wh..wh..opq".into(), String::new(), b""),
            ],
        },
    ];
    for case in cases {
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        let mut layer = tar::Builder::new(Vec::new());
        for (kind, name, link, data) in &case.entries {
            raw_entry(&mut layer, *kind, name, link, data);
        }
        let layer = layer.into_inner().unwrap();
        let result = apply(layer.as_slice(), &Target::directory(&target).unwrap());
        assert_eq!(
            fs::read_to_string(&canary).unwrap(),
            "untouched",
            "{}: canary changed",
            case.name
        );
        let outside_names: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside_names, ["canary"], "{}: something appeared outside", case.name);
        let beside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            beside.len(),
            2,
            "{}: something appeared beside the target: {beside:?}",
            case.name
        );
        match &result {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}: {e}", case.name);
                assert!(e.to_string().contains("layer entry"), "{}: {e}", case.name);
            }
            // Accepted: then what it wrote is inside the target.
            Ok(()) if case.entries.iter().any(|(_, _, _, data)| *data == b"owned") => {
                let found = describe(&target)
                    .values()
                    .any(|line| line.starts_with("file \"owned\""));
                assert!(
                    found,
                    "{}: the entry was accepted but is not inside the target",
                    case.name
                );
            }
            Ok(()) => {}
        }
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn whiteouts_in_an_overlay_upper_become_overlay_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper).unwrap();
    lower_tree(&lower);
    fs::set_permissions(lower.join("var/cache"), fs::Permissions::from_mode(0o710)).unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    raw_entry(&mut layer, tar::EntryType::Regular, "etc/.wh.hostname", "", b"");
    raw_entry(&mut layer, tar::EntryType::Regular, "var/cache/.wh..wh..opq", "", b"");
    let layer = layer.into_inner().unwrap();
    apply(
        layer.as_slice(),
        &Target::overlay_upper(&upper, std::slice::from_ref(&lower)).unwrap(),
    )
    .unwrap();

    let whiteout = fs::symlink_metadata(upper.join("etc/hostname")).unwrap();
    use std::os::unix::fs::FileTypeExt as _;
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    let mut value = [0u8; 4];
    let path = std::ffi::CString::new(upper.join("var/cache").as_os_str().as_encoded_bytes()).unwrap();
    let key = std::ffi::CString::new("trusted.overlay.opaque").unwrap();
    // SAFETY: NUL-terminated path and key, buffer of 4 bytes.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), key.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
    assert_eq!(&value[..n as usize], b"y");
    // The parent made in the upper copies the lower directory's attributes.
    let made = fs::metadata(upper.join("var/cache")).unwrap();
    assert_eq!(made.mode() & 0o7777, 0o710);
    assert_eq!(made.mtime(), 1_700_000_000);
}

#[test]
fn a_truncated_or_corrupt_layer_is_an_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    raw_entry(&mut layer, tar::EntryType::Regular, "file", "", &[1u8; 4096]);
    let mut layer = layer.into_inner().unwrap();
    layer.truncate(1024);
    let err = apply(layer.as_slice(), &Target::directory(dir.path()).unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let garbage = b"this is not a tar archive at all, not even close to one";
    let err = apply(&garbage[..], &Target::directory(dir.path()).unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

#[test]
fn a_file_written_twice_through_a_symlinked_directory_keeps_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    raw_entry(&mut layer, tar::EntryType::Directory, "usr/", "", b"");
    raw_entry(&mut layer, tar::EntryType::Directory, "usr/lib/", "", b"");
    raw_entry(&mut layer, tar::EntryType::Symlink, "lib", "usr/lib", b"");
    raw_entry(&mut layer, tar::EntryType::Regular, "usr/lib/x", "", b"first");
    raw_entry(&mut layer, tar::EntryType::Regular, "lib/x", "", b"second");
    // An absolute link resolves inside the root too.
    raw_entry(&mut layer, tar::EntryType::Symlink, "abs", "/usr/lib", b"");
    raw_entry(&mut layer, tar::EntryType::Regular, "usr/lib/y", "", b"first");
    raw_entry(&mut layer, tar::EntryType::Regular, "abs/y", "", b"second");
    let layer = layer.into_inner().unwrap();
    apply(layer.as_slice(), &Target::directory(dir.path()).unwrap()).unwrap();
    assert_eq!(read(&dir.path().join("usr/lib/x")), "second");
    assert_eq!(read(&dir.path().join("usr/lib/y")), "second");
    assert_eq!(fs::read_link(dir.path().join("lib")).unwrap(), Path::new("usr/lib"));
    assert_eq!(fs::read_link(dir.path().join("abs")).unwrap(), Path::new("/usr/lib"));
}

#[test]
fn the_same_path_twice_and_links_to_replaced_files_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    raw_entry(&mut layer, tar::EntryType::Regular, "twice", "", b"one");
    raw_entry(&mut layer, tar::EntryType::Regular, "twice", "", b"two");
    // A link made before its target is replaced keeps the old file...
    raw_entry(&mut layer, tar::EntryType::Regular, "f", "", b"old");
    raw_entry(&mut layer, tar::EntryType::Link, "kept", "f", b"");
    raw_entry(&mut layer, tar::EntryType::Regular, "f", "", b"new");
    // ...and one made after shares the new one.
    raw_entry(&mut layer, tar::EntryType::Link, "shared", "f", b"");
    // A link that is itself replaced by a file.
    raw_entry(&mut layer, tar::EntryType::Link, "was-link", "f", b"");
    raw_entry(&mut layer, tar::EntryType::Regular, "was-link", "", b"own");
    let layer = layer.into_inner().unwrap();
    apply(layer.as_slice(), &Target::directory(dir.path()).unwrap()).unwrap();
    let root = dir.path();
    assert_eq!(read(&root.join("twice")), "two");
    assert_eq!(read(&root.join("kept")), "old");
    assert_eq!(read(&root.join("f")), "new");
    assert_eq!(read(&root.join("shared")), "new");
    assert_eq!(read(&root.join("was-link")), "own");
    let ino = |p: &str| fs::metadata(root.join(p)).unwrap().ino();
    assert_eq!(ino("f"), ino("shared"));
    assert_ne!(ino("f"), ino("kept"));
    assert_ne!(ino("f"), ino("was-link"));
    assert_eq!(read(&root.join("f")), "new", "replacing the link left its target alone");
}

/// A layer whose GNU long name record is `size` bytes (compressed to
/// almost nothing: it is all one letter).
fn long_name_layer(kind: tar::EntryType, size: usize) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(size as u64);
    header.set_cksum();
    layer.append(&header, vec![b'a'; size].as_slice()).unwrap();
    raw_entry(&mut layer, tar::EntryType::Regular, "short", "", b"data");
    layer.into_inner().unwrap()
}

#[test]
fn header_records_past_1_mib_are_refused_and_smaller_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
        tar::EntryType::XHeader,
    ] {
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        let err = apply(
            long_name_layer(kind, 4 << 20).as_slice(),
            &Target::directory(&target).unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{kind:?}: {err}");
        assert!(err.to_string().contains("exceeds 1 MiB"), "{kind:?}: {err}");
        assert_eq!(
            fs::read_dir(&target).unwrap().count(),
            0,
            "{kind:?}: something was written"
        );
        fs::remove_dir_all(&target).unwrap();
    }
    // A long name of a few kilobytes is an ordinary name.
    let name = format!("{}/file", "d".repeat(200));
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(2);
    layer.append_data(&mut header, &name, &b"ok"[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    apply(layer.as_slice(), &Target::directory(dir.path()).unwrap()).unwrap();
    assert_eq!(read(&dir.path().join(&name)), "ok");
}
