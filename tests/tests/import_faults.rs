//! berthd killed in the middle of an import: nothing partial is visible
//! afterwards and the import can simply be run again.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use berth_tests::daemon::Daemon;
use berth_tests::images;
use sha2::Digest as _;

/// Every blob the daemon lists must be complete: its bytes hash to its
/// digest and its size is the listed size.
fn assert_listed_blobs_are_whole(daemon: &Daemon) {
    let out = daemon.ctr().ok(&["content", "ls"]);
    for line in out.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let digest = line.split_whitespace().next().unwrap();
        let bytes = daemon
            .ctr()
            .command(&["content", "get", digest])
            .output()
            .expect("ctr content get")
            .stdout;
        assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))), digest);
    }
    for entry in std::fs::read_dir(daemon.root.join("content/blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            path.file_name().unwrap().to_string_lossy(),
            "every blob file on disk is whole"
        );
    }
}

#[test]
fn sigkill_during_an_import_leaves_nothing_partial_and_the_import_can_be_retried() {
    let image = images::noise("docker.io/berth/noise:crash", 32 << 20);
    let mut daemon = Daemon::start();
    let data = std::fs::read(&image.oci_tar).unwrap();

    let mut import = daemon
        .ctr()
        .command(&["images", "import", "--no-unpack", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = import.stdin.take().unwrap();
    stdin.write_all(&data[..data.len() / 2]).unwrap();
    berth_tests::wait::until(Duration::from_secs(30), "the layer ingest", || {
        let out = daemon.ctr().ok(&["content", "active"]);
        out.lines()
            .any(|l| l.starts_with("tar-") && l.contains(image.layer_digest.trim_start_matches("sha256:")))
            .then_some(())
    });

    daemon.kill();
    drop(stdin);
    let _ = import.kill();
    let _ = import.wait();

    daemon.relaunch();
    let listed = daemon.ctr().ok(&["content", "ls"]);
    assert!(
        !listed.contains(&image.layer_digest),
        "no partial layer is listed:\n{listed}"
    );
    assert_listed_blobs_are_whole(&daemon);
    // The interrupted ingest is either still shown (held by ctr's lease) or gone.
    let active = daemon.ctr().ok(&["content", "active"]);
    for line in active.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        assert!(line.starts_with("tar-"), "only the import's ingests: {line}");
    }

    // Importing again succeeds and yields the whole image.
    daemon
        .ctr()
        .ok(&["images", "import", "--no-unpack", image.oci_tar.to_str().unwrap()]);
    let images = daemon.ctr().ok(&["images", "ls"]);
    assert!(
        images.contains(&image.name) && images.contains(&image.manifest_digest),
        "{images}"
    );
    assert!(daemon.ctr().ok(&["content", "ls"]).contains(&image.layer_digest));
    assert_listed_blobs_are_whole(&daemon);
    let active = daemon.ctr().ok(&["content", "active"]);
    assert!(
        !active.contains(image.layer_digest.trim_start_matches("sha256:")),
        "the retried import finished the layer ingest:\n{active}"
    );
}
