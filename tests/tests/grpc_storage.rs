//! Content, images, containers and leases over berth's own gRPC client:
//! the write protocol, error codes for bad input, leases holding content.

use std::collections::HashMap;
use std::time::Duration;

use berth_api::client::{LEASE_HEADER, namespaced};
use berth_api::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_api::containerd::services::containers::v1::{
    Container, CreateContainerRequest, ListContainersRequest, UpdateContainerRequest, container,
};
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::content::v1::{
    Info, InfoRequest, ReadContentRequest, StatusRequest, UpdateRequest, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use berth_api::containerd::services::images::v1::images_client::ImagesClient;
use berth_api::containerd::services::images::v1::{
    CreateImageRequest, DeleteImageRequest, Image, ListImagesRequest, UpdateImageRequest,
};
use berth_api::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_api::containerd::services::leases::v1::{CreateRequest, DeleteRequest};
use berth_api::containerd::types::Descriptor;
use berth_tests::daemon::Daemon;
use futures_util::StreamExt;
use sha2::Digest as _;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn write(action: WriteAction, reference: &str, offset: i64, data: &[u8], expected: &str) -> WriteContentRequest {
    WriteContentRequest {
        action: action as i32,
        r#ref: reference.into(),
        total: 0,
        expected: expected.into(),
        offset,
        data: data.to_vec(),
        labels: HashMap::new(),
    }
}

/// Sends the requests in one Write stream; returns the replies, or the error
/// the stream ended with.
async fn write_stream(
    channel: &Channel,
    namespace: &str,
    lease: Option<&str>,
    requests: Vec<WriteContentRequest>,
) -> Result<Vec<WriteContentResponse>, Status> {
    let mut client = ContentClient::new(channel.clone());
    let mut request = namespaced(namespace, tokio_stream::iter(requests));
    if let Some(lease) = lease {
        request.metadata_mut().insert(LEASE_HEADER, lease.parse().unwrap());
    }
    let mut replies = client.write(request).await?.into_inner();
    let mut out = Vec::new();
    while let Some(reply) = replies.next().await {
        out.push(reply?);
    }
    Ok(out)
}

async fn info(channel: &Channel, namespace: &str, digest: &str) -> Result<Info, Status> {
    ContentClient::new(channel.clone())
        .info(namespaced(namespace, InfoRequest { digest: digest.into() }))
        .await
        .map(|r| r.into_inner().info.unwrap())
}

#[tokio::test]
async fn the_write_protocol_is_lock_step() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let data = b"hello, lock-step world";
    let digest = digest_of(data);
    let replies = write_stream(
        &channel,
        "default",
        None,
        vec![
            WriteContentRequest {
                total: data.len() as i64,
                ..write(WriteAction::Stat, "r1", 0, b"", "")
            },
            write(WriteAction::Write, "r1", 0, &data[..5], ""),
            write(WriteAction::Write, "r1", 5, &data[5..], ""),
            write(WriteAction::Commit, "r1", data.len() as i64, b"", &digest),
        ],
    )
    .await
    .unwrap();
    assert_eq!(replies.len(), 4, "one reply per request");
    assert_eq!(
        (replies[0].action, replies[0].offset, replies[0].total),
        (0, 0, data.len() as i64)
    );
    assert!(replies[0].started_at.is_some());
    assert_eq!(replies[1].offset, 5);
    assert_eq!(replies[2].offset, data.len() as i64);
    assert_eq!(replies[3].digest, digest);
    assert_eq!(
        info(&channel, "default", &digest).await.unwrap().size,
        data.len() as i64
    );

    // Writing what the namespace holds, with its digest expected: AlreadyExists at once.
    let status = write_stream(
        &channel,
        "default",
        None,
        vec![write(WriteAction::Stat, "r2", 0, b"", &digest)],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    // Without an expected digest the daemon computes it.
    let replies = write_stream(
        &channel,
        "other",
        None,
        vec![write(WriteAction::Commit, "r3", 0, data, "")],
    )
    .await
    .unwrap();
    assert_eq!(replies[0].digest, digest);
}

#[tokio::test]
async fn a_wrong_digest_or_size_at_commit_stores_nothing() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let wrong = digest_of(b"not this");
    let status = write_stream(
        &channel,
        "default",
        None,
        vec![write(WriteAction::Commit, "bad", 0, b"this", &wrong)],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("unexpected commit digest"), "{status:?}");
    assert_eq!(
        info(&channel, "default", &digest_of(b"this")).await.unwrap_err().code(),
        Code::NotFound
    );
    let status = write_stream(
        &channel,
        "default",
        None,
        vec![WriteContentRequest {
            total: 99,
            ..write(WriteAction::Commit, "bad-size", 0, b"this", "")
        }],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("unexpected commit size"), "{status:?}");
    let blobs = std::fs::read_dir(daemon.root.join("content/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "no blob was stored");
}

#[tokio::test]
async fn a_write_at_the_wrong_offset_is_out_of_range_and_keeps_the_data() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let status = write_stream(
        &channel,
        "default",
        None,
        vec![
            write(WriteAction::Write, "off", 0, b"12345", ""),
            write(WriteAction::Write, "off", 9, b"xyz", ""),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("must occur at current offset 5"),
        "{status:?}"
    );
    let ingest = ContentClient::new(channel.clone())
        .status(namespaced("default", StatusRequest { r#ref: "off".into() }))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(ingest.offset, 5);
    // Resuming from the right offset completes the blob.
    let replies = write_stream(
        &channel,
        "default",
        None,
        vec![write(WriteAction::Commit, "off", 5, b"678", "")],
    )
    .await
    .unwrap();
    assert_eq!(replies[0].digest, digest_of(b"12345678"));
}

#[tokio::test]
async fn unknown_and_malformed_digests_and_labels_are_refused() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let unknown = digest_of(b"never written");
    let status = info(&channel, "default", &unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), format!("content {unknown}: not found"));
    let status = info(&channel, "default", "sha256:short").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("\"sha256:short\""), "{status:?}");
    let mut content = ContentClient::new(channel.clone());
    let status = content
        .read(namespaced(
            "default",
            ReadContentRequest {
                digest: unknown.clone(),
                offset: 0,
                size: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let data = b"labelled";
    let digest = digest_of(data);
    write_stream(
        &channel,
        "default",
        None,
        vec![write(WriteAction::Commit, "l", 0, data, "")],
    )
    .await
    .unwrap();
    let status = content
        .read(namespaced(
            "default",
            ReadContentRequest {
                digest: digest.clone(),
                offset: 100,
                size: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    let mut chunks = content
        .read(namespaced(
            "default",
            ReadContentRequest {
                digest: digest.clone(),
                offset: 3,
                size: 2,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let chunk = chunks.next().await.unwrap().unwrap();
    assert_eq!((chunk.offset, chunk.data.as_slice()), (3, &b"el"[..]));

    let status = content
        .update(namespaced(
            "default",
            UpdateRequest {
                info: Some(Info {
                    digest: digest.clone(),
                    labels: [("k".to_string(), "v".repeat(5000))].into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["labels.k".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        info(&channel, "default", &digest).await.unwrap().labels.is_empty(),
        "labels unchanged"
    );
}

#[tokio::test]
async fn one_writer_per_ref_and_namespaced_calls_need_a_namespace() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut first = ContentClient::new(channel.clone());
    let mut replies = first
        .write(namespaced("default", tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    tx.send(write(WriteAction::Write, "held", 0, b"abc", "")).await.unwrap();
    replies.next().await.unwrap().unwrap();
    let status = write_stream(
        &channel,
        "default",
        None,
        vec![write(WriteAction::Stat, "held", 0, b"", "")],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    drop(tx);

    let status = ImagesClient::new(channel.clone())
        .list(Request::new(ListImagesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "namespace is required: failed precondition");
}

#[tokio::test]
async fn leases_hold_content_until_they_go() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut leases = LeasesClient::new(channel.clone());
    leases
        .create(namespaced(
            "default",
            CreateRequest {
                id: "hold".into(),
                labels: HashMap::new(),
            },
        ))
        .await
        .unwrap();
    let data = b"kept by a lease";
    let digest = digest_of(data);
    write_stream(
        &channel,
        "default",
        Some("hold"),
        vec![write(WriteAction::Commit, "w", 0, data, "")],
    )
    .await
    .unwrap();
    let unleased = digest_of(b"kept by nothing");
    write_stream(
        &channel,
        "default",
        None,
        vec![write(WriteAction::Commit, "u", 0, b"kept by nothing", "")],
    )
    .await
    .unwrap();

    // A synchronous collection (deleting another lease) removes only the unleased blob.
    leases
        .create(namespaced(
            "default",
            CreateRequest {
                id: "other".into(),
                labels: HashMap::new(),
            },
        ))
        .await
        .unwrap();
    leases
        .delete(namespaced(
            "default",
            DeleteRequest {
                id: "other".into(),
                sync: true,
            },
        ))
        .await
        .unwrap();
    assert!(info(&channel, "default", &digest).await.is_ok());
    assert_eq!(
        info(&channel, "default", &unleased).await.unwrap_err().code(),
        Code::NotFound
    );

    leases
        .delete(namespaced(
            "default",
            DeleteRequest {
                id: "hold".into(),
                sync: true,
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        info(&channel, "default", &digest).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(
        !daemon
            .root
            .join("content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
            .exists()
    );

    // A lease header naming no lease is NotFound, and nothing is written.
    let status = write_stream(
        &channel,
        "default",
        Some("ghost"),
        vec![write(WriteAction::Commit, "g", 0, b"x", "")],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = leases
        .create(namespaced(
            "default",
            CreateRequest {
                id: "bad/id".into(),
                labels: HashMap::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = leases
        .create(namespaced(
            "default",
            CreateRequest {
                id: "badexpiry".into(),
                labels: [("containerd.io/gc.expire".to_string(), "tomorrow".to_string())].into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("tomorrow"), "{status:?}");
}

fn image(name: &str, digest: &str, size: i64) -> Image {
    Image {
        name: name.into(),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest.into(),
            size,
            annotations: HashMap::new(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn image_records_validate_and_report_codes() {
    let daemon = Daemon::start();
    let mut images = ImagesClient::new(daemon.channel().await);
    let digest = digest_of(b"manifest");
    images
        .create(namespaced(
            "default",
            CreateImageRequest {
                image: Some(image("a:1", &digest, 8)),
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap();
    let status = images
        .create(namespaced(
            "default",
            CreateImageRequest {
                image: Some(image("a:1", &digest, 8)),
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    for (bad, why) in [
        (image("b:1", "sha256:nope", 8), "target"),
        (image("b:1", &digest, 0), "size"),
        (image("", &digest, 8), "name"),
    ] {
        let status = images
            .create(namespaced(
                "default",
                CreateImageRequest {
                    image: Some(bad),
                    source_date_epoch: None,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{why}");
    }
    let status = images
        .update(namespaced(
            "default",
            UpdateImageRequest {
                image: Some(image("missing", &digest, 8)),
                update_mask: None,
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let updated = images
        .update(namespaced(
            "default",
            UpdateImageRequest {
                image: Some(Image {
                    labels: [("k".to_string(), "v".to_string())].into(),
                    ..image("a:1", &digest, 8)
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["labels.k".into()],
                }),
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(updated.labels.get("k").map(String::as_str), Some("v"));
    let status = images
        .delete(namespaced(
            "default",
            DeleteImageRequest {
                name: "missing".into(),
                sync: false,
                target: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let list = images
        .list(namespaced(
            "default",
            ListImagesRequest {
                filters: vec!["labels.k==v".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(list.len(), 1);
}

fn spec() -> prost_types::Any {
    prost_types::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
        value: br#"{"ociVersion":"1.1.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}"#.to_vec(),
    }
}

fn container(id: &str) -> Container {
    Container {
        id: id.into(),
        image: "docker.io/berth/busybox:latest".into(),
        runtime: Some(container::Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        }),
        spec: Some(spec()),
        ..Default::default()
    }
}

#[tokio::test]
async fn containers_made_by_grpc_are_shown_and_changed_by_ctr() {
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    let events = ctr.subscribe(&[]);
    let mut containers = ContainersClient::new(daemon.channel().await);
    containers
        .create(namespaced(
            "default",
            CreateContainerRequest {
                container: Some(container("c1")),
            },
        ))
        .await
        .unwrap();
    let listed = ctr.ok(&["containers", "ls"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with("c1 "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        row.contains("docker.io/berth/busybox:latest") && row.contains("io.containerd.runc.v2"),
        "{row}"
    );
    let info = ctr.ok(&["containers", "info", "c1"]);
    let json: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(json["ID"], "c1");
    assert_eq!(json["Spec"]["process"]["args"][0], "sh", "{info}");

    ctr.ok(&["containers", "label", "c1", "tier=web"]);
    let got = containers
        .list(namespaced(
            "default",
            ListContainersRequest {
                filters: vec!["labels.tier==web".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(got.len(), 1);

    ctr.ok(&["containers", "rm", "c1"]);
    assert!(!ctr.ok(&["containers", "ls", "-q"]).contains("c1"));
    for topic in ["/containers/create", "/containers/update", "/containers/delete"] {
        let line = events.wait_for_line(&[topic, "c1"], Duration::from_secs(20));
        assert!(line.contains('{'), "{line}");
    }
}

#[tokio::test]
async fn container_records_refuse_bad_input_and_change_nothing() {
    let daemon = Daemon::start();
    let mut containers = ContainersClient::new(daemon.channel().await);
    let create = |c: Container| namespaced("default", CreateContainerRequest { container: Some(c) });
    let long = "x".repeat(77);
    for (bad, why) in [
        (container(&long), "over-long id"),
        (container("bad id"), "invalid id"),
        (
            Container {
                spec: None,
                ..container("nospec")
            },
            "no spec",
        ),
        (
            Container {
                runtime: None,
                ..container("noruntime")
            },
            "no runtime",
        ),
        (
            Container {
                snapshot_key: "k".into(),
                ..container("nosnapshotter")
            },
            "key without snapshotter",
        ),
        (
            Container {
                labels: [("k".to_string(), "v".repeat(5000))].into(),
                ..container("biglabel")
            },
            "label too long",
        ),
    ] {
        let status = containers.create(create(bad)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{why}: {status:?}");
    }
    let status = containers.create(create(container(&long))).await.unwrap_err();
    assert!(status.message().contains(&long), "names the id: {status:?}");
    let all = containers
        .list(namespaced("default", ListContainersRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(all.is_empty(), "nothing stored: {all:?}");

    containers.create(create(container("c1"))).await.unwrap();
    assert_eq!(
        containers.create(create(container("c1"))).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    let status = containers
        .update(namespaced(
            "default",
            UpdateContainerRequest {
                container: Some(Container {
                    runtime: Some(container::Runtime {
                        name: "io.containerd.other.v1".into(),
                        options: None,
                    }),
                    ..container("c1")
                }),
                update_mask: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("immutable"), "{status:?}");
    let status = containers
        .update(namespaced(
            "default",
            UpdateContainerRequest {
                container: Some(container("c1")),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["runtime".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}
