//! Image archives through berthd's Transfer service: import
//! (ImageImportStream → ImageStore) and export (ImageStore →
//! ImageExportStream), the archive travelling over a Streaming stream with
//! containerd's flow control. Driven by containerd's own Rust client
//! (`containerd-client`) and by Python's grpcio; what comes out is read by
//! the stock `ctr`; bad archives are refused with errors naming what is
//! wrong and leave no image, no ingest and no lease behind.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

use berth_tests::clients;
use berth_tests::daemon::Daemon;
use berth_tests::images::{self, BUSYBOX_NAME};
use containerd_client::services::v1::{StreamInit, TransferOptions, TransferRequest};
use containerd_client::to_any;
use containerd_client::types::transfer::{
    Data, ImageExportStream, ImageImportStream, ImageReference, ImageStore, Progress, UnpackConfiguration, WindowUpdate,
};
use prost::Message as _;
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Request;

const MAX_DATA: usize = 32 * 1024;

/// Opens Streaming stream `id`: the sender of the client's messages and
/// the daemon's answers (after its ack).
async fn open_stream(
    channel: &tonic::transport::Channel,
    id: &str,
) -> (mpsc::UnboundedSender<Any>, tonic::Streaming<Any>) {
    let mut streaming = containerd_client::services::v1::streaming_client::StreamingClient::new(channel.clone());
    let (sender, receiver) = mpsc::unbounded_channel();
    sender.send(to_any(&StreamInit { id: id.to_string() })).unwrap();
    let mut responses = streaming
        .stream(containerd_client::with_namespace!(
            UnboundedReceiverStream::new(receiver),
            "default"
        ))
        .await
        .expect("open a stream")
        .into_inner();
    responses.message().await.expect("the ack").expect("an ack");
    (sender, responses)
}

/// Runs one Transfer with a progress stream; the progress seen.
async fn transfer(
    channel: &tonic::transport::Channel,
    source: Any,
    destination: Any,
) -> Result<Vec<Progress>, tonic::Status> {
    let id = format!("progress-{}", rand_id());
    let (progress_sender, mut progress) = open_stream(channel, &id).await;
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(message)) = progress.message().await {
            if message.type_url.ends_with("containerd.types.transfer.Progress") {
                seen.push(Progress::decode(message.value.as_slice()).expect("a Progress"));
            }
        }
        seen
    });
    let mut client = containerd_client::services::v1::transfer_client::TransferClient::new(channel.clone());
    let request = TransferRequest {
        source: Some(source),
        destination: Some(destination),
        options: Some(TransferOptions { progress_stream: id }),
    };
    let outcome = client
        .transfer(containerd_client::with_namespace!(request, "default"))
        .await;
    drop(progress_sender);
    let seen = collector.await.expect("the progress reader");
    outcome.map(|_| seen)
}

fn rand_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Imports `archive` into `store` with containerd-client, sending the
/// bytes only within the windows the daemon grants.
async fn import(socket: &Path, archive: Vec<u8>, store: ImageStore) -> Result<Vec<Progress>, tonic::Status> {
    let channel = containerd_client::connect(socket).await.expect("connect");
    let id = format!("import-{}", rand_id());
    let (sender, mut grants) = open_stream(&channel, &id).await;
    let feeder = tokio::spawn(async move {
        let mut window: i64 = 0;
        let mut rest = archive.as_slice();
        while !rest.is_empty() {
            while window <= 0 {
                match grants.message().await {
                    Ok(Some(message)) => {
                        window += i64::from(
                            WindowUpdate::decode(message.value.as_slice())
                                .expect("a WindowUpdate")
                                .update,
                        )
                    }
                    // The daemon stopped reading: nothing more goes.
                    _ => return,
                }
            }
            let n = rest.len().min(MAX_DATA).min(window as usize);
            let (chunk, after) = rest.split_at(n);
            if sender.send(to_any(&Data { data: chunk.to_vec() })).is_err() {
                return;
            }
            window -= n as i64;
            rest = after;
        }
        // Dropping the sender closes the client's side: the end of the
        // archive. The stream stays open (as containerd's client keeps it)
        // until the daemon ends it: dropping it now would cancel the call
        // and lose what is still queued to go.
        drop(sender);
        while let Ok(Some(_)) = grants.message().await {}
    });
    let source = ImageImportStream {
        stream: id,
        media_type: String::new(),
        force_compress: false,
    };
    let outcome = transfer(&channel, to_any(&source), to_any(&store)).await;
    feeder.abort();
    outcome
}

/// Exports with containerd-client: the archive's bytes.
async fn export(
    socket: &Path,
    store: ImageStore,
    mut destination: ImageExportStream,
) -> Result<Vec<u8>, tonic::Status> {
    let channel = containerd_client::connect(socket).await.expect("connect");
    let id = format!("export-{}", rand_id());
    let (sender, mut data) = open_stream(&channel, &id).await;
    let window = 64 * 1024i64;
    let reader = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let mut outstanding = window;
        sender.send(to_any(&WindowUpdate { update: window as i32 })).unwrap();
        while let Ok(Some(message)) = data.message().await {
            let chunk = Data::decode(message.value.as_slice()).expect("Data");
            assert!(
                chunk.data.len() <= MAX_DATA,
                "a Data message of {} bytes",
                chunk.data.len()
            );
            outstanding -= chunk.data.len() as i64;
            assert!(outstanding >= 0, "the daemon sent beyond its window");
            bytes.extend_from_slice(&chunk.data);
            if outstanding < window {
                let _ = sender.send(to_any(&WindowUpdate { update: window as i32 }));
                outstanding += window;
            }
        }
        bytes
    });
    destination.stream = id;
    transfer(&channel, to_any(&store), to_any(&destination)).await?;
    Ok(reader.await.expect("the export reader"))
}

/// The files of a tar, by path.
fn tar_files(bytes: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut files = HashMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    files
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written by hand: the tar crate refuses to write `..` itself.
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn unpack_here() -> UnpackConfiguration {
    UnpackConfiguration {
        platform: None,
        snapshotter: "overlayfs".into(),
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data)))
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_client_imports_an_oci_archive_and_exports_it_for_ctr() {
    let busybox = images::busybox();
    let daemon = Daemon::start();
    let ctr = daemon.ctr();

    // The archive's own name kept (allow_overwrite), the index named too,
    // unpacked for the host.
    let store = ImageStore {
        name: "archive-index".into(),
        extra_references: vec![ImageReference {
            name: "docker.io/berth/busybox".into(),
            is_prefix: true,
            allow_overwrite: true,
            add_digest: false,
            skip_named_digest: false,
        }],
        unpacks: vec![unpack_here()],
        ..Default::default()
    };
    let archive = std::fs::read(&busybox.oci_tar).unwrap();
    let progress = import(&daemon.socket, archive, store).await.expect("import");
    assert!(progress.iter().any(|p| p.event == "Completed import"), "{progress:?}");
    assert!(
        progress.iter().any(|p| p.event == "saved" && p.name == BUSYBOX_NAME),
        "{progress:?}"
    );
    let listed = ctr.ok(&["images", "ls"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with(&format!("{BUSYBOX_NAME} ")))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains(&busybox.manifest_digest), "{row}");
    assert!(listed.lines().any(|l| l.starts_with("archive-index ")), "{listed}");
    assert!(ctr.ok(&["snapshot", "ls"]).contains(&busybox.chain_id));
    let ran = ctr.ok(&["run", "--rm", BUSYBOX_NAME, "imported-run", "echo", "imported"]);
    assert_eq!(ran.trim(), "imported");
    assert!(
        !ctr.ok(&["leases", "ls"]).contains("transfer-import"),
        "the import's lease outlived it"
    );

    // Exported for the host's platform: an OCI layout with every blob,
    // each under its digest, and the docker manifest.
    let bytes = export(
        &daemon.socket,
        ImageStore {
            name: BUSYBOX_NAME.into(),
            ..Default::default()
        },
        ImageExportStream::default(),
    )
    .await
    .expect("export");
    let files = tar_files(&bytes);
    assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    for digest in [&busybox.manifest_digest, &busybox.config_digest, &busybox.layer_digest] {
        let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        assert_eq!(&sha256(&files[&path]), digest, "{path}");
    }
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], busybox.manifest_digest.as_str());
    assert_eq!(entry["annotations"]["io.containerd.image.name"], BUSYBOX_NAME);
    assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], "latest");
    let compat: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(compat[0]["RepoTags"][0], "berth/busybox:latest");

    // The stock client imports the export into a fresh daemon, which runs it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exported.tar");
    std::fs::write(&path, &bytes).unwrap();
    let fresh = Daemon::start();
    fresh.ctr().ok(&["images", "import", path.to_str().unwrap()]);
    let listed = fresh.ctr().ok(&["images", "ls"]);
    assert!(
        listed.contains(BUSYBOX_NAME) && listed.contains(&busybox.manifest_digest),
        "{listed}"
    );
    let ran = fresh
        .ctr()
        .ok(&["run", "--rm", BUSYBOX_NAME, "exported-run", "echo", "exported"]);
    assert_eq!(ran.trim(), "exported");

    // An export without the docker manifest, and of an unknown image.
    let bytes = export(
        &daemon.socket,
        ImageStore {
            name: BUSYBOX_NAME.into(),
            ..Default::default()
        },
        ImageExportStream {
            skip_compatibility_manifest: true,
            ..Default::default()
        },
    )
    .await
    .expect("export without manifest.json");
    assert!(!tar_files(&bytes).contains_key("manifest.json"));
    let status = export(
        &daemon.socket,
        ImageStore {
            name: "docker.io/berth/nothing:here".into(),
            ..Default::default()
        },
        ImageExportStream::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(status.message().contains("docker.io/berth/nothing:here"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_archives_are_refused_by_name_and_leave_nothing() {
    // What a failed import stored was only held by its lease: collected
    // once the import failed (soon, not at some later deletion).
    fn collected(ctr: &berth_tests::ctr::Ctr, digest: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ctr.ok(&["content", "ls", "-q"]).contains(digest) {
            assert!(
                std::time::Instant::now() < deadline,
                "{digest}, stored by a failed import, was never collected"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    let busybox = images::busybox();
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    let good = tar_files(&std::fs::read(&busybox.oci_tar).unwrap());
    let store = || ImageStore {
        name: "bad-import".into(),
        extra_references: vec![ImageReference {
            name: "docker.io/berth/busybox".into(),
            is_prefix: true,
            allow_overwrite: true,
            ..Default::default()
        }],
        unpacks: vec![unpack_here()],
        ..Default::default()
    };
    let config_path = format!("blobs/sha256/{}", busybox.config_digest.trim_start_matches("sha256:"));
    let layer_path = format!("blobs/sha256/{}", busybox.layer_digest.trim_start_matches("sha256:"));
    let with = |replace: &str, data: Option<&[u8]>| -> Vec<u8> {
        let mut files: Vec<(&str, &[u8])> = Vec::new();
        for (path, bytes) in &good {
            if path == replace {
                if let Some(data) = data {
                    files.push((path.as_str(), data));
                }
            } else {
                files.push((path.as_str(), bytes.as_slice()));
            }
        }
        // The layer first, so a later bad entry fails an import that has
        // already stored something.
        files.sort_by_key(|(path, _)| (*path != layer_path, path.to_string()));
        tar_of(&files)
    };

    // A manifest whose layer the archive lacks (and the store does
    // not hold).
    let status = import(&daemon.socket, with(&layer_path, None), store())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(&busybox.layer_digest), "{status:?}");
    collected(&ctr, &busybox.config_digest);

    // A blob whose bytes are not the ones its name says.
    let mut lying = good[&config_path].clone();
    lying[0] ^= 0x20;
    let status = import(&daemon.socket, with(&config_path, Some(&lying)), store())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(&config_path) && status.message().contains("do not match"),
        "{status:?}"
    );
    assert!(!ctr.ok(&["content", "ls", "-q"]).contains(&sha256(&lying)));
    collected(&ctr, &busybox.layer_digest);

    // A path that climbs out of the archive; bytes that are no tar at all.
    let escaping = tar_of(&[("../escape", b"x")]);
    let status = import(&daemon.socket, escaping, store()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("../escape"), "{status:?}");
    let status = import(&daemon.socket, vec![0x42; 4096], store()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("archive"), "{status:?}");

    // None of it left an image, an ingest or a lease.
    let listed = ctr.ok(&["images", "ls", "-q"]);
    assert!(listed.trim().is_empty(), "{listed}");
    let active = ctr.ok(&["content", "active"]);
    assert!(active.lines().count() <= 1, "{active}");
    assert!(!ctr.ok(&["leases", "ls"]).contains("transfer-import"));

    // The good archive still imports afterwards.
    import(&daemon.socket, std::fs::read(&busybox.oci_tar).unwrap(), store())
        .await
        .expect("import");
    assert!(ctr.ok(&["images", "ls", "-q"]).contains(BUSYBOX_NAME));
}

#[test]
fn python_imports_a_docker_archive_and_exports_it() {
    let busybox = images::busybox();
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    let target = format!("unix://{}", daemon.socket.display());

    // `docker save` output, its layer gzipped on the way in, named by its
    // RepoTags under the prefix.
    let out = clients::python_script(
        "transfer_archive.py",
        &[
            "--target",
            &target,
            "--import",
            busybox.docker_tar.to_str().unwrap(),
            "--prefix",
            "docker.io/berth/busybox",
            "--unpack",
            "overlayfs",
            "--compress",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events: Vec<&str> = report["progress"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["event"].as_str())
        .collect();
    assert!(events.contains(&"Completed import"), "{report}");
    let listed = ctr.ok(&["images", "ls"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with(&format!("{BUSYBOX_NAME} ")))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        row.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{row}"
    );
    // The layer went in gzipped: a new blob that says what it holds.
    let content = ctr.ok(&["content", "ls"]);
    assert!(
        content
            .lines()
            .any(|l| l.contains(&format!("containerd.io/uncompressed={}", busybox.diff_id))),
        "{content}"
    );
    assert!(ctr.ok(&["snapshot", "ls"]).contains(&busybox.chain_id));
    let ran = ctr.ok(&["run", "--rm", BUSYBOX_NAME, "docker-run", "echo", "from-docker"]);
    assert_eq!(ran.trim(), "from-docker");

    // Exported from Python and imported by the stock client elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("from-python.tar");
    let out = clients::python_script(
        "transfer_archive.py",
        &[
            "--target",
            &target,
            "--export",
            BUSYBOX_NAME,
            "--out",
            path.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["received"], true, "{report}");
    let files = tar_files(&std::fs::read(&path).unwrap());
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        BUSYBOX_NAME
    );
    let fresh = Daemon::start();
    fresh.ctr().ok(&["images", "import", path.to_str().unwrap()]);
    let ran = fresh
        .ctr()
        .ok(&["run", "--rm", BUSYBOX_NAME, "python-run", "echo", "again"]);
    assert_eq!(ran.trim(), "again");

    // An archive the daemon cannot read fails the call with its reason.
    let bad = dir.path().join("bad.tar");
    std::fs::write(&bad, tar_of(&[("manifest.json", b"{not json")])).unwrap();
    let out = clients::python_script(
        "transfer_archive.py",
        &["--target", &target, "--import", bad.to_str().unwrap(), "--prefix", "x"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["code"], "INVALID_ARGUMENT", "{report}");
    assert!(
        report["details"].as_str().unwrap().contains("manifest.json"),
        "{report}"
    );
}
