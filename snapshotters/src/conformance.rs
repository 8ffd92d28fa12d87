//! The snapshotter conformance suite: what every backend (overlayfs,
//! native, a proxy) must do, checked by mounting what it returns.
//!
//! Each case gets a fresh backend from the caller's factory and a scratch
//! directory for mount points. Mounting needs root, so the suite runs from
//! the integration tests:
//! ```ignore
//! conformance::run_all("overlayfs", &|root| Ok(Arc::new(Overlay::open(root)?)), scratch);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;

use berth_core::ErrorKind;
use berth_core::mount::TempMount;
use berth_core::snapshots::{Kind, Snapshotter};
use berth_core::{Error, Result};

/// Makes a backend rooted at the given (empty) directory.
pub type Factory<'a> = dyn Fn(&Path) -> Result<Arc<dyn Snapshotter>> + 'a;

/// One conformance case.
pub struct Case {
    /// What it checks.
    pub name: &'static str,
    run: fn(&dyn Snapshotter, &Path) -> Result<()>,
}

/// Every case of the suite.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "errors_follow_containerd",
            run: errors_follow_containerd,
        },
        Case {
            name: "layering",
            run: layering,
        },
        Case {
            name: "deletes_across_layers",
            run: deletes_across_layers,
        },
        Case {
            name: "renames",
            run: renames,
        },
        Case {
            name: "hardlinks",
            run: hardlinks,
        },
        Case {
            name: "views_are_read_only",
            run: views_are_read_only,
        },
        Case {
            name: "removal_order",
            run: removal_order,
        },
        Case {
            name: "concurrent_prepares",
            run: concurrent_prepares,
        },
        Case {
            name: "many_layers",
            run: many_layers,
        },
        Case {
            name: "usage",
            run: usage,
        },
        Case {
            name: "labels_and_walk",
            run: labels_and_walk,
        },
        Case {
            name: "cleanup",
            run: cleanup,
        },
        Case {
            name: "close",
            run: close,
        },
    ]
}

/// Runs every case against fresh backends under `scratch`; returns the
/// failures as (case, error).
pub fn run_all(factory: &Factory<'_>, scratch: &Path) -> Vec<(&'static str, Error)> {
    let mut failures = Vec::new();
    for case in cases() {
        let root = scratch.join(case.name).join("root");
        let mounts = scratch.join(case.name).join("mnt");
        let outcome = std::fs::create_dir_all(&root)
            .and_then(|()| std::fs::create_dir_all(&mounts))
            .map_err(|e| Error::io("creating the case's directories", &e))
            .and_then(|()| factory(&root))
            .and_then(|backend| (case.run)(backend.as_ref(), &mounts));
        if let Err(e) = outcome {
            failures.push((case.name, e));
        }
    }
    failures
}

fn expect_kind<T: std::fmt::Debug>(result: Result<T>, kind: ErrorKind, what: &str) -> Result<()> {
    match result {
        Err(e) if e.kind() == kind => Ok(()),
        other => Err(Error::internal(format!("{what}: expected {kind:?}, got {other:?}"))),
    }
}

fn ensure(condition: bool, what: impl Into<String>) -> Result<()> {
    if condition {
        Ok(())
    } else {
        Err(Error::internal(what.into()))
    }
}

fn no_labels() -> HashMap<String, String> {
    HashMap::new()
}

/// Prepares `key` on `parent`, lets `write` change the mounted tree, and
/// commits it as `name`.
fn layer(
    sn: &dyn Snapshotter,
    scratch: &Path,
    name: &str,
    parent: &str,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    let key = format!("{name}-active");
    let mounts = sn.prepare(&key, parent, no_labels())?;
    {
        let mounted = TempMount::new(&mounts, scratch)?;
        write(mounted.path()).map_err(|e| Error::io(format!("writing layer {name}"), &e))?;
    }
    sn.commit(name, &key, no_labels())
}

/// The tree under `root` as path -> description (type, mode, owner, size,
/// content or link target).
fn tree(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("listing", &e))? {
            let entry = entry.map_err(|e| Error::io("listing", &e))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &e))?;
            let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            let kind = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if meta.file_type().is_symlink() {
                format!(
                    "link->{}",
                    std::fs::read_link(&path)
                        .map_err(|e| Error::io("readlink", &e))?
                        .display()
                )
            } else if meta.is_file() {
                format!(
                    "file:{}",
                    String::from_utf8_lossy(&std::fs::read(&path).map_err(|e| Error::io("read", &e))?)
                )
            } else {
                "special".to_string()
            };
            out.insert(
                rel,
                format!("{kind} {:o} {}:{}", meta.mode() & 0o7777, meta.uid(), meta.gid()),
            );
        }
    }
    Ok(out)
}

fn view_tree(sn: &dyn Snapshotter, scratch: &Path, key: &str, parent: &str) -> Result<BTreeMap<String, String>> {
    let mounts = sn.view(key, parent, no_labels())?;
    let mounted = TempMount::new(&mounts, scratch)?;
    tree(mounted.path())
}

fn errors_follow_containerd(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    sn.prepare("a", "", no_labels())?;
    expect_kind(
        sn.prepare("a", "", no_labels()),
        ErrorKind::AlreadyExists,
        "prepare of an existing key",
    )?;
    expect_kind(
        sn.prepare("b", "missing", no_labels()),
        ErrorKind::NotFound,
        "prepare on a missing parent",
    )?;
    expect_kind(
        sn.prepare("b", "a", no_labels()),
        ErrorKind::InvalidArgument,
        "prepare on an active parent",
    )?;
    expect_kind(sn.stat("missing"), ErrorKind::NotFound, "stat of a missing key")?;
    expect_kind(
        sn.commit("x", "missing", no_labels()),
        ErrorKind::NotFound,
        "commit of a missing key",
    )?;
    sn.commit("A", "a", no_labels())?;
    expect_kind(
        sn.commit("A2", "A", no_labels()),
        ErrorKind::FailedPrecondition,
        "commit of a committed snapshot",
    )?;
    sn.view("v", "A", no_labels())?;
    expect_kind(
        sn.commit("V", "v", no_labels()),
        ErrorKind::FailedPrecondition,
        "commit of a view",
    )?;
    layer(sn, scratch, "B", "A", |_| Ok(()))?;
    sn.prepare("c", "B", no_labels())?;
    expect_kind(
        sn.commit("A", "c", no_labels()),
        ErrorKind::AlreadyExists,
        "commit to an existing name",
    )?;
    expect_kind(sn.remove("missing"), ErrorKind::NotFound, "remove of a missing key")?;
    ensure(
        sn.stat("c")?.kind == Kind::Active,
        "c stays active after the failed commit",
    )?;
    Ok(())
}

fn layering(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    layer(sn, scratch, "base", "", |root| {
        std::fs::create_dir_all(root.join("etc"))?;
        std::fs::write(root.join("etc/hostname"), "base")?;
        std::fs::write(root.join("keep"), "kept")?;
        std::os::unix::fs::symlink("etc/hostname", root.join("link"))
    })?;
    layer(sn, scratch, "top", "base", |root| {
        std::fs::write(root.join("etc/hostname"), "top")?;
        std::fs::write(root.join("new"), "added")
    })?;
    let seen = view_tree(sn, scratch, "view", "top")?;
    let file = |content: &str| format!("file:{content} 644 0:0");
    ensure(
        seen.get("etc/hostname") == Some(&file("top")),
        format!("modified file: {seen:?}"),
    )?;
    ensure(
        seen.get("keep") == Some(&file("kept")),
        format!("inherited file: {seen:?}"),
    )?;
    ensure(seen.get("new") == Some(&file("added")), format!("added file: {seen:?}"))?;
    ensure(
        seen.get("link").is_some_and(|l| l.starts_with("link->etc/hostname")),
        format!("symlink: {seen:?}"),
    )?;
    ensure(seen.len() == 5, format!("nothing else: {seen:?}"))?;
    // The parent is unchanged.
    let base = view_tree(sn, scratch, "base-view", "base")?;
    ensure(
        base.get("etc/hostname") == Some(&file("base")),
        format!("parent unchanged: {base:?}"),
    )
}

fn deletes_across_layers(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    layer(sn, scratch, "l1", "", |root| {
        std::fs::create_dir_all(root.join("d/sub"))?;
        std::fs::write(root.join("d/a"), "a")?;
        std::fs::write(root.join("d/sub/b"), "b")?;
        std::fs::create_dir_all(root.join("gone"))?;
        std::fs::write(root.join("gone/x"), "x")
    })?;
    layer(sn, scratch, "l2", "l1", |root| {
        std::fs::remove_file(root.join("d/a"))?;
        std::fs::remove_dir_all(root.join("gone"))?;
        std::fs::remove_dir_all(root.join("d/sub"))
    })?;
    layer(sn, scratch, "l3", "l2", |root| {
        std::fs::create_dir_all(root.join("gone"))?;
        std::fs::write(root.join("gone/y"), "y")
    })?;
    let seen = view_tree(sn, scratch, "v", "l3")?;
    let keys: Vec<&str> = seen.keys().map(String::as_str).collect();
    ensure(
        keys == ["d", "gone", "gone/y"],
        format!("deleted entries stay deleted, recreated dir is fresh: {keys:?}"),
    )
}

fn renames(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    layer(sn, scratch, "l1", "", |root| {
        std::fs::create_dir_all(root.join("dir/inner"))?;
        std::fs::write(root.join("dir/inner/f"), "f")?;
        std::fs::write(root.join("file"), "content")
    })?;
    layer(sn, scratch, "l2", "l1", |root| {
        move_path(&root.join("file"), &root.join("renamed"))?;
        move_path(&root.join("dir"), &root.join("moved"))
    })?;
    let seen = view_tree(sn, scratch, "v", "l2")?;
    let keys: Vec<&str> = seen.keys().map(String::as_str).collect();
    ensure(
        keys == ["moved", "moved/inner", "moved/inner/f", "renamed"],
        format!("renames: {keys:?}"),
    )
}

/// Moves as `mv` does: rename, or copy and delete where the filesystem
/// answers EXDEV (overlayfs does for directories from lower layers unless
/// redirect_dir is on).
fn move_path(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_recursively(from, to)?;
            std::fs::remove_dir_all(from)
        }
        other => other,
    }
}

fn copy_recursively(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(from)?.is_dir() {
        std::fs::create_dir(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_recursively(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

fn hardlinks(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    layer(sn, scratch, "l1", "", |root| {
        std::fs::write(root.join("one"), "shared")?;
        std::fs::hard_link(root.join("one"), root.join("two"))
    })?;
    layer(sn, scratch, "l2", "l1", |root| std::fs::write(root.join("other"), "x"))?;
    let mounts = sn.view("v", "l2", no_labels())?;
    let mounted = TempMount::new(&mounts, scratch)?;
    let one = std::fs::metadata(mounted.path().join("one")).map_err(|e| Error::io("stat", &e))?;
    let two = std::fs::metadata(mounted.path().join("two")).map_err(|e| Error::io("stat", &e))?;
    ensure(
        one.ino() == two.ino() && one.nlink() == 2,
        "hard links stay one inode with two names",
    )
}

fn views_are_read_only(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    layer(sn, scratch, "l1", "", |root| std::fs::write(root.join("f"), "x"))?;
    layer(sn, scratch, "l2", "l1", |root| std::fs::write(root.join("g"), "y"))?;
    for (key, parent) in [("one-parent", "l1"), ("two-parents", "l2")] {
        let mounts = sn.view(key, parent, no_labels())?;
        let mounted = TempMount::new(&mounts, scratch)?;
        let err = std::fs::write(mounted.path().join("new"), "z").err();
        ensure(
            err.as_ref().and_then(std::io::Error::raw_os_error) == Some(libc::EROFS),
            format!("writing into view {key} fails with EROFS: {err:?}"),
        )?;
        ensure(sn.stat(key)?.kind == Kind::View, "views are views")?;
    }
    Ok(())
}

fn removal_order(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    layer(sn, scratch, "parent", "", |root| std::fs::write(root.join("f"), "x"))?;
    sn.prepare("child", "parent", no_labels())?;
    expect_kind(
        sn.remove("parent"),
        ErrorKind::FailedPrecondition,
        "remove of a parent with a child",
    )?;
    sn.remove("child")?;
    sn.remove("parent")?;
    expect_kind(sn.stat("parent"), ErrorKind::NotFound, "removed snapshots are gone")?;
    ensure(sn.walk()?.is_empty(), "nothing is left")
}

fn concurrent_prepares(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    layer(sn, scratch, "base", "", |root| std::fs::write(root.join("f"), "x"))?;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| scope.spawn(move || sn.prepare(&format!("k{}", i % 12), "base", no_labels()).map(|_| ())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::internal("panic"))))
            .collect()
    });
    let created = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.kind() == ErrorKind::AlreadyExists))
        .count();
    ensure(
        created == 12 && conflicts == 4,
        format!("12 keys made once each: {created} created, {conflicts} conflicts"),
    )?;
    ensure(sn.walk()?.len() == 13, "13 snapshots recorded")
}

fn many_layers(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    const LAYERS: usize = 130;
    let mut parent = String::new();
    for i in 0..LAYERS {
        let name = format!("layer-{i:03}");
        layer(sn, scratch, &name, &parent, |root| {
            std::fs::write(root.join(format!("f{i:03}")), i.to_string())
        })?;
        parent = name;
    }
    let seen = view_tree(sn, scratch, "top", &parent)?;
    ensure(
        seen.len() == LAYERS,
        format!("all {LAYERS} layers visible, saw {}", seen.len()),
    )?;
    // An active snapshot on top mounts too (upper + 130 lowers).
    let mounts = sn.prepare("work", &parent, no_labels())?;
    let mounted = TempMount::new(&mounts, scratch)?;
    std::fs::write(mounted.path().join("top"), "t").map_err(|e| Error::io("writing on 130 layers", &e))?;
    ensure(mounted.path().join("f000").exists(), "the deepest layer is visible")
}

fn usage(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    let mounts = sn.prepare("a", "", no_labels())?;
    {
        let mounted = TempMount::new(&mounts, scratch)?;
        std::fs::write(mounted.path().join("big"), vec![7u8; 1 << 20]).map_err(|e| Error::io("write", &e))?;
        std::fs::write(mounted.path().join("small"), "x").map_err(|e| Error::io("write", &e))?;
    }
    let active = sn.usage("a")?;
    ensure(
        active.size >= 1 << 20 && active.inodes >= 3,
        format!("active usage counts the data: {active:?}"),
    )?;
    sn.commit("A", "a", no_labels())?;
    let committed = sn.usage("A")?;
    ensure(
        committed == active,
        format!("committed usage is recorded: {committed:?} vs {active:?}"),
    )
}

fn labels_and_walk(sn: &dyn Snapshotter, _scratch: &Path) -> Result<()> {
    let labels: HashMap<String, String> = [("containerd.io/snapshot/x".to_string(), "1".to_string())].into();
    sn.prepare("a", "", labels.clone())?;
    ensure(sn.stat("a")?.labels == labels, "labels kept at prepare")?;
    let updated: HashMap<String, String> = [("containerd.io/snapshot/y".to_string(), "2".to_string())].into();
    let info = sn.update_labels("a", updated.clone())?;
    ensure(
        info.labels == updated && sn.stat("a")?.labels == updated,
        "labels replaced",
    )?;
    sn.commit("A", "a", no_labels())?;
    sn.prepare("b", "A", no_labels())?;
    let mut names: Vec<(String, String)> = sn.walk()?.into_iter().map(|i| (i.name, i.parent)).collect();
    names.sort();
    ensure(
        names == [("A".to_string(), String::new()), ("b".to_string(), "A".to_string())],
        format!("walk lists names and parents: {names:?}"),
    )
}

fn cleanup(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    layer(sn, scratch, "kept", "", |root| std::fs::write(root.join("f"), "x"))?;
    let mounts = sn.view("view", "kept", no_labels())?;
    let source = mounts.first().map(|m| m.source.clone()).unwrap_or_default();
    // A directory no record owns, as a crash mid-create leaves behind.
    let snapshots_dir = scratch.parent().map(|p| p.join("root/snapshots")).unwrap_or_default();
    let orphan = snapshots_dir.join("new-orphan");
    std::fs::create_dir_all(orphan.join("fs")).map_err(|e| Error::io("orphan", &e))?;
    sn.cleanup()?;
    ensure(!orphan.exists(), "the orphan directory is removed")?;
    ensure(Path::new(&source).exists(), "recorded snapshots stay")?;
    let seen = view_tree(sn, scratch, "again", "kept")?;
    ensure(seen.contains_key("f"), "and still read")
}

fn close(sn: &dyn Snapshotter, scratch: &Path) -> Result<()> {
    layer(sn, scratch, "base", "", |root| std::fs::write(root.join("f"), "x"))?;
    sn.close()?;
    expect_kind(
        sn.prepare("after", "base", no_labels()),
        ErrorKind::Unavailable,
        "prepare after close",
    )?;
    expect_kind(sn.stat("base"), ErrorKind::Unavailable, "stat after close")?;
    expect_kind(sn.remove("base"), ErrorKind::Unavailable, "remove after close")
}
