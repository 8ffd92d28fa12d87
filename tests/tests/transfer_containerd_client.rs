//! containerd's own Rust client (`containerd-client`, built from
//! containerd's protos, an implementation we did not write) pulls through
//! berthd's Transfer service with a progress stream over Streaming; a
//! multi-platform index picks the host's platform, or the one asked for,
//! a pull by digest records the same target, and a push of the index (its
//! host manifest) comes back by the same digest.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

use berth_tests::daemon::Daemon;
use berth_tests::images::{self, TestImage};
use berth_tests::registry::Registry;
use containerd_client::services::v1::{StreamInit, TransferOptions, TransferRequest};
use containerd_client::to_any;
use containerd_client::types::Platform;
use containerd_client::types::transfer::{ImageStore, OciRegistry, Progress, UnpackConfiguration};
use prost::Message as _;
use tonic::Request;

fn platform(architecture: &str) -> Platform {
    Platform {
        os: "linux".into(),
        architecture: architecture.into(),
        variant: String::new(),
        os_version: String::new(),
    }
}

/// Pulls `reference` with containerd-client: the progress it saw, or the
/// failed status.
async fn pull(socket: &Path, reference: &str, wanted: Option<Platform>) -> Result<Vec<Progress>, tonic::Status> {
    let channel = containerd_client::connect(socket).await.expect("connect");
    let mut streaming = containerd_client::services::v1::streaming_client::StreamingClient::new(channel.clone());
    let mut transfer = containerd_client::services::v1::transfer_client::TransferClient::new(channel);

    let id = format!("progress-{}", std::process::id());
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    sender.send(to_any(&StreamInit { id: id.clone() })).unwrap();
    let outgoing = tokio_stream::wrappers::UnboundedReceiverStream::new(receiver);
    let mut responses = streaming
        .stream(containerd_client::with_namespace!(outgoing, "default"))
        .await?
        .into_inner();
    // The ack that the stream is registered.
    responses.message().await?.expect("an ack");
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(message)) = responses.message().await {
            if message.type_url.ends_with("containerd.types.transfer.Progress") {
                seen.push(Progress::decode(message.value.as_slice()).expect("a Progress"));
            }
        }
        seen
    });

    let unpack = UnpackConfiguration {
        platform: wanted.clone(),
        snapshotter: "overlayfs".into(),
    };
    let destination = ImageStore {
        name: reference.to_string(),
        platforms: wanted.into_iter().collect(),
        unpacks: vec![unpack],
        ..Default::default()
    };
    let source = OciRegistry {
        reference: reference.to_string(),
        resolver: Default::default(),
    };
    let request = TransferRequest {
        source: Some(to_any(&source)),
        destination: Some(to_any(&destination)),
        options: Some(TransferOptions { progress_stream: id }),
    };
    let outcome = transfer
        .transfer(containerd_client::with_namespace!(request, "default"))
        .await;
    drop(sender);
    let seen = collector.await.expect("the progress reader");
    outcome.map(|_| seen)
}

/// An OCI archive whose index lists `amd64`'s manifest for linux/amd64 and
/// `other`'s for linux/arm64.
fn two_platform_archive(dir: &Path, amd64: &TestImage, other: &TestImage) -> std::path::PathBuf {
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    for image in [amd64, other] {
        let mut tar = tar::Archive::new(std::fs::File::open(&image.oci_tar).unwrap());
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            if let Some(hex) = path.trim_start_matches("./").strip_prefix("blobs/sha256/") {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                blobs.insert(hex.to_string(), data);
            }
        }
    }
    let entry = |image: &TestImage, architecture: &str| {
        let hex = image.manifest_digest.trim_start_matches("sha256:");
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest_digest,
            "size": blobs[hex].len(),
            "platform": {"os": "linux", "architecture": architecture},
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(amd64, "amd64"), entry(other, "arm64")],
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&index_bytes));
    let layout = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{index_hex}"),
            "size": index_bytes.len(),
        }],
    });
    blobs.insert(index_hex.clone(), index_bytes);
    let path = dir.join("two-platforms.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &serde_json::to_vec(&layout).unwrap());
    for (hex, data) in &blobs {
        add(&format!("blobs/sha256/{hex}"), data);
    }
    builder.finish().unwrap();
    drop(builder);
    path
}

/// A push of image `name` (only `platforms` of it, when any) to `to`.
fn push_request(name: &str, platforms: Vec<Platform>, to: &str) -> TransferRequest {
    TransferRequest {
        source: Some(to_any(&ImageStore {
            name: name.to_string(),
            platforms,
            ..Default::default()
        })),
        destination: Some(to_any(&OciRegistry {
            reference: to.to_string(),
            resolver: Default::default(),
        })),
        options: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_client_pulls_and_platforms_are_picked_from_an_index() {
    assert_eq!(images::oci_arch(), "amd64", "the index below names amd64 as the host's");
    let registry = Registry::start();
    let busybox = images::busybox();
    let layered = images::layered();
    let dir = tempfile::tempdir().unwrap();
    let archive = two_platform_archive(dir.path(), &busybox, &layered);
    registry.push_oci_archive_all(&archive, "multi:1");
    let daemon = Daemon::start();
    let ctr = daemon.ctr();

    // The host's platform: busybox's manifest.
    let reference = format!("{}/multi:1", registry.address);
    let progress = pull(&daemon.socket, &reference, None).await.expect("pull");
    assert!(
        progress.iter().any(|p| p.event.starts_with("Completed pull")),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|p| p.event == "complete" && p.desc.as_ref().is_some_and(|d| d.digest == busybox.layer_digests[0])),
        "{progress:?}"
    );
    let listed = ctr.ok(&["images", "ls"]);
    let row: Vec<&str> = listed.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row.get(1), Some(&"application/vnd.oci.image.index.v1+json"), "{listed}");
    // The registry's copy of the index (re-serialised on push).
    let index_digest = row[2].to_string();
    let snapshots = ctr.ok(&["snapshot", "ls"]);
    assert!(snapshots.contains(&busybox.chain_id), "{snapshots}");
    assert!(
        !snapshots.contains(&layered.chain_id),
        "the other platform was unpacked: {snapshots}"
    );
    let content = ctr.ok(&["content", "ls", "-q"]);
    assert!(
        !content.contains(&layered.layer_digests[1]),
        "the other platform's layers were fetched"
    );

    // Asked for linux/arm64: the other manifest, by digest this time.
    let by_digest = format!("{}/multi@{index_digest}", registry.address);
    pull(&daemon.socket, &by_digest, Some(platform("arm64")))
        .await
        .expect("pull arm64");
    let snapshots = ctr.ok(&["snapshot", "ls"]);
    assert!(snapshots.contains(&layered.chain_id), "{snapshots}");
    let listed = ctr.ok(&["images", "ls"]);
    assert!(listed.contains(&by_digest), "{listed}");

    // Pushed with containerd-client under a new repository (both platforms
    // are held now), and a fresh daemon pulls that by digest.
    let channel = containerd_client::connect(&daemon.socket).await.unwrap();
    let mut transfer = containerd_client::services::v1::transfer_client::TransferClient::new(channel);
    let pushed = format!("{}/pushed:1", registry.address);
    transfer
        .transfer(containerd_client::with_namespace!(
            push_request(&reference, Vec::new(), &pushed),
            "default"
        ))
        .await
        .expect("push");
    let fresh = Daemon::start();
    let back = format!("{}/pushed@{index_digest}", registry.address);
    pull(&fresh.socket, &back, None).await.expect("pull the pushed index");
    assert!(fresh.ctr().ok(&["snapshot", "ls"]).contains(&busybox.chain_id));

    // A platform the index lacks names itself.
    let status = pull(&daemon.socket, &reference, Some(platform("s390x")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(status.message().contains("linux/s390x"), "{status:?}");

    // One platform of the index pushed: a new index naming only it, which
    // the registry takes and a fresh daemon pulls.
    let reduced = format!("{}/reduced:1", registry.address);
    let push_platforms = |wanted: Platform, to: &str| push_request(&reference, vec![wanted], to);
    transfer
        .transfer(containerd_client::with_namespace!(
            push_platforms(platform("amd64"), &reduced),
            "default"
        ))
        .await
        .expect("push one platform");
    pull(&fresh.socket, &reduced, None)
        .await
        .expect("pull the reduced index");
    let listed = fresh.ctr().ok(&["images", "ls"]);
    let row: Vec<&str> = listed
        .lines()
        .find(|l| l.starts_with(&reduced))
        .unwrap_or_else(|| panic!("{listed}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1], "application/vnd.oci.image.index.v1+json", "{listed}");
    let index: serde_json::Value = serde_json::from_str(&fresh.ctr().ok(&["content", "get", row[2]])).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(manifests[0]["platform"]["architecture"], "amd64", "{index}");
    let status = transfer
        .transfer(containerd_client::with_namespace!(
            push_platforms(platform("s390x"), &reduced),
            "default"
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(status.message().contains("linux/s390x"), "{status:?}");

    // A source and destination the daemon cannot move between.
    let channel = containerd_client::connect(&daemon.socket).await.unwrap();
    let mut transfer = containerd_client::services::v1::transfer_client::TransferClient::new(channel);
    let store = to_any(&ImageStore::default());
    let request = TransferRequest {
        source: Some(store.clone()),
        destination: Some(store),
        options: None,
    };
    let status = transfer
        .transfer(containerd_client::with_namespace!(request, "default"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("ImageStore"), "{status:?}");
}
