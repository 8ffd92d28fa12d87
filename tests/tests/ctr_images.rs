//! Images, content and leases through Debian's ctr, against berthd and a
//! private stock containerd side by side.

use std::path::Path;
use std::time::Duration;

use berth_tests::containerd::Containerd;
use berth_tests::ctr::Ctr;
use berth_tests::daemon::Daemon;
use berth_tests::images::{self, TestImage};

const EVENT_WAIT: Duration = Duration::from_secs(20);

/// `ctr content ls` rows as (digest, size, sorted labels), without the age.
fn content_rows(ctr: &Ctr) -> Vec<(String, String, String)> {
    let out = ctr.ok(&["content", "ls"]);
    let mut rows: Vec<(String, String, String)> = out
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').filter(|c| !c.is_empty()).collect();
            let mut labels: Vec<&str> = cols.last().unwrap_or(&"-").split(',').collect();
            labels.sort_unstable();
            (cols[0].to_string(), cols[1].to_string(), labels.join(","))
        })
        .collect();
    rows.sort();
    rows
}

/// Total bytes of committed blobs and ingests under a daemon's content dir.
fn content_bytes(root: &Path) -> u64 {
    fn walk(path: &Path) -> u64 {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::read_dir(path)
                .map(|entries| entries.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    walk(&root.join("content"))
}

fn import(ctr: &Ctr, archive: &Path) {
    ctr.ok(&["images", "import", "--no-unpack", archive.to_str().unwrap()]);
}

#[test]
fn imports_list_exactly_as_containerd_lists_them() {
    let image = images::busybox();
    let berth = Daemon::start();
    let containerd = Containerd::start();
    for (namespace, archive) in [("oci", &image.oci_tar), ("docker", &image.docker_tar)] {
        let (ours, theirs) = (
            berth.ctr().in_namespace(namespace),
            containerd.ctr().in_namespace(namespace),
        );
        import(&ours, archive);
        import(&theirs, archive);
        let listed = ours.ok(&["images", "ls"]);
        assert_eq!(
            listed,
            theirs.ok(&["images", "ls"]),
            "ctr images ls differs in {namespace}"
        );
        assert!(listed.contains(&image.name), "{listed}");
        assert!(listed.contains(&format!("linux/{}", images::oci_arch())), "{listed}");
        // containerd collects the import's temporary blobs (the index a
        // docker archive is wrapped in) a moment after the import returns;
        // berth collects them before. Compare once containerd's GC ran.
        let ours_rows = content_rows(&ours);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut theirs_rows = content_rows(&theirs);
        while theirs_rows != ours_rows && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            theirs_rows = content_rows(&theirs);
        }
        assert_eq!(ours_rows, theirs_rows, "ctr content ls differs in {namespace}");
    }
    let oci = berth.ctr().in_namespace("oci").ok(&["images", "ls"]);
    assert!(oci.contains(&image.manifest_digest), "{oci}");
    assert!(oci.contains("application/vnd.oci.image.manifest.v1+json"), "{oci}");
}

#[test]
fn content_get_label_and_remove() {
    let image = images::busybox();
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    let events = ctr.subscribe(&[]);
    import(&ctr, &image.oci_tar);

    // The blob ctr reads back is byte for byte the layer in the archive.
    let out = ctr
        .command(&["content", "get", &image.layer_digest])
        .output()
        .expect("ctr content get");
    assert!(out.status.success());
    let mut archive = tar::Archive::new(std::fs::File::open(&image.oci_tar).unwrap());
    let wanted = format!("blobs/sha256/{}", image.layer_digest.trim_start_matches("sha256:"));
    let layer = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some(wanted.as_str()))
        .map(|mut e| {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            data
        })
        .expect("layer in the archive");
    assert_eq!(out.stdout, layer);

    ctr.ok(&["content", "label", &image.config_digest, "team=berth"]);
    let rows = content_rows(&ctr);
    let config = rows.iter().find(|r| r.0 == image.config_digest).unwrap();
    assert_eq!(config.2, "team=berth");

    // Removing a blob publishes /content/delete and it is gone from the listing.
    ctr.ok(&["content", "rm", &image.config_digest]);
    events.wait_for_line(&["/content/delete", &image.config_digest], EVENT_WAIT);
    assert!(!content_rows(&ctr).iter().any(|r| r.0 == image.config_digest));
    let err = ctr.fails(&["content", "get", &image.config_digest]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn content_active_shows_an_import_in_progress() {
    let image = images::noise("docker.io/berth/noise:active", 8 << 20);
    let daemon = Daemon::start();
    let mut child = daemon
        .ctr()
        .command(&["images", "import", "--no-unpack", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let data = std::fs::read(&image.oci_tar).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Send half the archive: the big layer is then being written.
    std::io::Write::write_all(&mut stdin, &data[..data.len() / 2]).unwrap();
    let active = berth_tests::wait::until(Duration::from_secs(30), "an active ingest", || {
        let out = daemon.ctr().ok(&["content", "active"]);
        out.lines().any(|l| l.starts_with("tar-")).then_some(out)
    });
    assert!(active.contains("tar-blobs/sha256/"), "{active}");
    std::io::Write::write_all(&mut stdin, &data[data.len() / 2..]).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(daemon.ctr().ok(&["images", "ls", "-q"]).contains(&image.name));
    let active = daemon.ctr().ok(&["content", "active"]);
    assert!(
        !active.lines().any(|l| l.starts_with("tar-")),
        "nothing left active: {active}"
    );
}

#[test]
fn exported_archives_import_into_containerd_with_the_same_manifest() {
    let image = images::busybox();
    let daemon = Daemon::start();
    import(&daemon.ctr(), &image.docker_tar);
    let listed = daemon.ctr().ok(&["images", "ls"]);
    let digest = listed
        .lines()
        .find(|l| l.starts_with(&image.name))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("digest column")
        .to_string();
    let out = daemon.dir().join("export.tar");
    daemon
        .ctr()
        .ok(&["images", "export", out.to_str().unwrap(), &image.name]);

    let containerd = Containerd::start();
    import(&containerd.ctr(), &out);
    let theirs = containerd.ctr().ok(&["images", "ls"]);
    assert!(theirs.contains(&digest), "same manifest digest {digest}:\n{theirs}");
    // And the export imports back into berthd too.
    let again = Daemon::start();
    import(&again.ctr(), &out);
    assert!(again.ctr().ok(&["images", "ls"]).contains(&digest));
}

#[test]
fn rm_sync_frees_what_the_image_alone_held() {
    let busybox = images::busybox();
    let noise = images::noise("docker.io/berth/noise:gc", 1 << 20);
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    let events = ctr.subscribe(&[]);
    let before = content_bytes(&daemon.root);

    import(&ctr, &busybox.oci_tar);
    ctr.ok(&["images", "tag", &busybox.name, "docker.io/berth/busybox:copy"]);
    import(&ctr, &noise.oci_tar);
    let with_everything = content_bytes(&daemon.root);
    assert!(with_everything > before + (1 << 20));

    // The copy still points at busybox's blobs: removing the original frees nothing of them.
    ctr.ok(&["images", "rm", "--sync", &busybox.name]);
    let rows = content_rows(&ctr);
    for digest in [&busybox.manifest_digest, &busybox.config_digest, &busybox.layer_digest] {
        assert!(rows.iter().any(|r| &r.0 == digest), "{digest} survives: {rows:?}");
    }
    ctr.ok(&["images", "rm", "--sync", "docker.io/berth/busybox:copy"]);
    let rows = content_rows(&ctr);
    assert!(!rows.iter().any(|r| r.0 == busybox.layer_digest), "{rows:?}");
    assert!(
        rows.iter().any(|r| r.0 == noise.layer_digest),
        "the other image keeps its blobs"
    );

    ctr.ok(&["images", "rm", "--sync", &noise.name]);
    assert!(content_rows(&ctr).is_empty());
    assert_eq!(
        content_bytes(&daemon.root),
        before,
        "the content dir is back to its size"
    );
    for topic in ["/images/create", "/images/delete"] {
        events.wait_for_line(&[topic], EVENT_WAIT);
    }
}

#[test]
fn leases_create_list_and_remove() {
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    let created = ctr.ok(&["leases", "create", "--id", "l1", "--expires", "1h", "owner=test"]);
    assert_eq!(created.trim(), "l1");
    let listed = ctr.ok(&["leases", "ls"]);
    let row = listed.lines().find(|l| l.starts_with("l1 ")).expect("l1 listed");
    assert!(
        row.contains("owner=test") && row.contains("containerd.io/gc.expire="),
        "{row}"
    );
    let err = ctr.fails(&["leases", "create", "--id", "l1"]);
    assert!(err.contains("already exists"), "{err}");
    ctr.ok(&["leases", "rm", "l1"]);
    assert!(!ctr.ok(&["leases", "ls"]).contains("l1 "));
    let err = ctr.fails(&["leases", "rm", "l1"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn removing_a_namespace_that_holds_an_image_is_refused() {
    let image = images::busybox();
    let daemon = Daemon::start();
    let ctr = daemon.ctr().in_namespace("full");
    import(&ctr, &image.oci_tar);
    let err = ctr.fails(&["namespaces", "rm", "full"]);
    assert!(err.contains("must be empty") && err.contains("images"), "{err}");
    assert!(
        ctr.ok(&["images", "ls", "-q"]).contains(&image.name),
        "nothing was removed"
    );
    assert!(!content_rows(&ctr).is_empty());
    ctr.ok(&["images", "rm", "--sync", &image.name]);
    ctr.ok(&["namespaces", "rm", "full"]);
    assert!(!daemon.ctr().ok(&["namespaces", "ls", "-q"]).contains("full"));
}

#[test]
fn docker_archives_and_oci_layouts_of_one_image_share_nothing_but_names() {
    let image: TestImage = images::busybox();
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    import(&ctr, &image.oci_tar);
    import(&ctr, &image.docker_tar);
    // Same name: the second import repoints it; the first manifest is garbage now.
    let listed = ctr.ok(&["images", "ls"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{listed}"
    );
}
