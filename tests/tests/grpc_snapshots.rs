//! Snapshots and Diff over berth's own gRPC client: the error codes
//! containerd clients depend on, events, List batching and filters, label
//! updates, leases holding snapshots, and Diff refusing bad or hostile
//! input without touching anything.

use std::collections::HashMap;
use std::time::Duration;

use berth_api::any;
use berth_api::client::{LEASE_HEADER, namespaced};
use berth_api::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use berth_api::containerd::services::diff::v1::diff_client::DiffClient;
use berth_api::containerd::services::diff::v1::{ApplyRequest, DiffRequest};
use berth_api::containerd::services::events::v1::SubscribeRequest;
use berth_api::containerd::services::events::v1::events_client::EventsClient;
use berth_api::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_api::containerd::services::leases::v1::{CreateRequest, DeleteRequest};
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, Info, Kind, ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, StatSnapshotRequest, UpdateSnapshotRequest, UsageRequest, ViewSnapshotRequest,
};
use berth_api::containerd::types::{Descriptor, Mount};
use berth_tests::daemon::Daemon;
use futures_util::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const NS: &str = "default";

struct Snapshots {
    client: SnapshotsClient<Channel>,
    snapshotter: String,
}

impl Snapshots {
    fn new(channel: &Channel, snapshotter: &str) -> Self {
        Self {
            client: SnapshotsClient::new(channel.clone()),
            snapshotter: snapshotter.to_string(),
        }
    }

    async fn prepare(&mut self, key: &str, parent: &str) -> Result<Vec<Mount>, Status> {
        self.prepare_with(key, parent, HashMap::new(), None).await
    }

    async fn prepare_with(
        &mut self,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
        lease: Option<&str>,
    ) -> Result<Vec<Mount>, Status> {
        let mut request = namespaced(
            NS,
            PrepareSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.into(),
                parent: parent.into(),
                labels,
            },
        );
        if let Some(lease) = lease {
            request.metadata_mut().insert(LEASE_HEADER, lease.parse().unwrap());
        }
        self.client.prepare(request).await.map(|r| r.into_inner().mounts)
    }

    async fn view(&mut self, key: &str, parent: &str) -> Result<Vec<Mount>, Status> {
        let request = ViewSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
            parent: parent.into(),
            labels: HashMap::new(),
        };
        self.client
            .view(namespaced(NS, request))
            .await
            .map(|r| r.into_inner().mounts)
    }

    async fn commit(&mut self, name: &str, key: &str) -> Result<(), Status> {
        let request = CommitSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            name: name.into(),
            key: key.into(),
            labels: HashMap::new(),
        };
        self.client.commit(namespaced(NS, request)).await.map(|_| ())
    }

    async fn remove(&mut self, key: &str) -> Result<(), Status> {
        let request = RemoveSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
        };
        self.client.remove(namespaced(NS, request)).await.map(|_| ())
    }

    async fn stat(&mut self, key: &str) -> Result<Info, Status> {
        let request = StatSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
        };
        self.client
            .stat(namespaced(NS, request))
            .await
            .map(|r| r.into_inner().info.unwrap())
    }

    async fn mounts(&mut self, key: &str) -> Result<Vec<Mount>, Status> {
        let request = MountsRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
        };
        self.client
            .mounts(namespaced(NS, request))
            .await
            .map(|r| r.into_inner().mounts)
    }

    async fn list(&mut self, filters: &[&str]) -> Result<Vec<Vec<Info>>, Status> {
        let request = ListSnapshotsRequest {
            snapshotter: self.snapshotter.clone(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        };
        let mut stream = self.client.list(namespaced(NS, request)).await?.into_inner();
        let mut batches = Vec::new();
        while let Some(message) = stream.next().await {
            batches.push(message?.info);
        }
        Ok(batches)
    }

    async fn keys(&mut self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .list(&[])
            .await
            .unwrap()
            .into_iter()
            .flatten()
            .map(|i| i.name)
            .collect();
        keys.sort();
        keys
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    result.expect_err("the call should fail").code()
}

#[tokio::test]
async fn snapshot_errors_carry_the_codes_containerd_clients_expect() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    for snapshotter in ["overlayfs", "native"] {
        let mut s = Snapshots::new(&channel, snapshotter);
        s.prepare("base", "").await.unwrap();
        assert_eq!(code(s.prepare("base", "").await), Code::AlreadyExists);
        assert_eq!(code(s.prepare("orphan", "no-such-parent").await), Code::NotFound);
        assert_eq!(code(s.prepare("on-active", "base").await), Code::InvalidArgument);
        assert_eq!(code(s.prepare("", "").await), Code::InvalidArgument);
        s.commit("base-done", "base").await.unwrap();
        assert_eq!(code(s.commit("again", "base").await), Code::NotFound);
        s.view("look", "base-done").await.unwrap();
        assert_eq!(code(s.commit("from-view", "look").await), Code::FailedPrecondition);
        s.prepare("top", "base-done").await.unwrap();
        assert_eq!(code(s.commit("base-done", "top").await), Code::AlreadyExists);
        assert_eq!(code(s.remove("base-done").await), Code::FailedPrecondition);
        assert_eq!(code(s.remove("missing").await), Code::NotFound);
        assert_eq!(code(s.stat("missing").await), Code::NotFound);
        assert_eq!(code(s.mounts("missing").await), Code::NotFound);
        let usage = UsageRequest {
            snapshotter: snapshotter.into(),
            key: "missing".into(),
        };
        assert_eq!(code(s.client.usage(namespaced(NS, usage)).await), Code::NotFound);
        // Failed calls changed nothing.
        assert_eq!(s.keys().await, ["base-done", "look", "top"]);
        assert_eq!(s.stat("top").await.unwrap().kind, Kind::Active as i32);
        assert_eq!(s.stat("base-done").await.unwrap().kind, Kind::Committed as i32);
        assert_eq!(s.stat("look").await.unwrap().parent, "base-done");
    }
    for (name, message) in [
        ("zfs", "snapshotter not loaded: \"zfs\""),
        ("", "snapshotter argument missing"),
    ] {
        let err = Snapshots::new(&channel, name).prepare("k", "").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(message), "{}", err.message());
    }
    // No namespace: refused before anything is looked at.
    let err = SnapshotsClient::new(channel.clone())
        .stat(Request::new(StatSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "base-done".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn prepare_commit_and_remove_publish_events() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = EventsClient::new(channel.clone())
        .subscribe(SubscribeRequest {
            filters: vec![r#"topic~="^/snapshot/""#.into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut s = Snapshots::new(&channel, "native");
    s.prepare("k", "").await.unwrap();
    s.commit("c", "k").await.unwrap();
    s.prepare("k2", "c").await.unwrap();
    s.remove("k2").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let envelope = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        assert_eq!(envelope.namespace, NS);
        let event = envelope.event.unwrap();
        let described = match envelope.topic.as_str() {
            "/snapshot/prepare" => {
                let e: SnapshotPrepare = any::unpack(&event).unwrap();
                format!("prepare {} {} {}", e.key, e.parent, e.snapshotter)
            }
            "/snapshot/commit" => {
                let e: SnapshotCommit = any::unpack(&event).unwrap();
                format!("commit {} {} {}", e.key, e.name, e.snapshotter)
            }
            "/snapshot/remove" => {
                let e: SnapshotRemove = any::unpack(&event).unwrap();
                format!("remove {} {}", e.key, e.snapshotter)
            }
            other => panic!("unexpected topic {other}"),
        };
        seen.push(described);
    }
    assert_eq!(
        seen,
        [
            "prepare k  native",
            "commit k c native",
            "prepare k2 c native",
            "remove k2 native"
        ]
    );
}

#[tokio::test]
async fn list_streams_batches_of_100_and_filters() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut s = Snapshots::new(&channel, "native");
    for i in 0..250 {
        let labels: HashMap<String, String> = [(
            "parity".to_string(),
            (if i % 2 == 0 { "even" } else { "odd" }).to_string(),
        )]
        .into();
        s.prepare_with(&format!("k{i:03}"), "", labels, None).await.unwrap();
    }
    s.commit("committed", "k000").await.unwrap();
    let sizes: Vec<usize> = s.list(&[]).await.unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let count = |batches: Vec<Vec<Info>>| batches.into_iter().flatten().count();
    assert_eq!(count(s.list(&["kind==committed"]).await.unwrap()), 1);
    assert_eq!(count(s.list(&["kind==active"]).await.unwrap()), 249);
    assert_eq!(count(s.list(&["labels.parity==odd"]).await.unwrap()), 125);
    assert_eq!(
        count(s.list(&["labels.parity==odd", "name==committed"]).await.unwrap()),
        126
    );
    assert_eq!(count(s.list(&[r#"name~="^k00[1-3]$""#]).await.unwrap()), 3);
    assert_eq!(code(s.list(&["labels.parity=="]).await), Code::InvalidArgument);
    assert_eq!(code(s.list(&[r#"name~="(""#]).await), Code::InvalidArgument);
}

#[tokio::test]
async fn labels_update_by_mask_and_nothing_else_changes() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut s = Snapshots::new(&channel, "overlayfs");
    let labels: HashMap<String, String> =
        [("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())].into();
    s.prepare_with("k", "", labels, None).await.unwrap();
    let update = |info: Info, paths: &[&str]| UpdateSnapshotRequest {
        snapshotter: "overlayfs".into(),
        info: Some(info),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    let info = Info {
        name: "k".into(),
        labels: [
            ("a".to_string(), "changed".to_string()),
            ("c".to_string(), "3".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let updated = s
        .client
        .update(namespaced(NS, update(info.clone(), &["labels.a", "labels.b"])))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(updated.labels, [("a".to_string(), "changed".to_string())].into());
    let err = s
        .client
        .update(namespaced(
            NS,
            update(
                Info {
                    parent: "x".into(),
                    ..info.clone()
                },
                &["parent"],
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let missing = Info {
        name: "missing".into(),
        ..info
    };
    assert_eq!(
        code(s.client.update(namespaced(NS, update(missing, &[]))).await),
        Code::NotFound
    );
    let stat = s.stat("k").await.unwrap();
    assert_eq!(stat.labels, [("a".to_string(), "changed".to_string())].into());
    assert_eq!(stat.parent, "");
}

#[tokio::test]
async fn a_lease_holds_a_snapshot_until_it_is_deleted() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut leases = LeasesClient::new(channel.clone());
    let lease = leases
        .create(namespaced(
            NS,
            CreateRequest {
                id: "hold".into(),
                labels: HashMap::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap()
        .id;
    let mut s = Snapshots::new(&channel, "overlayfs");
    s.prepare_with("held", "", HashMap::new(), Some(&lease)).await.unwrap();
    s.prepare("loose", "").await.unwrap();
    let collect = |id: &'static str| {
        let mut leases = leases.clone();
        async move {
            leases
                .create(namespaced(
                    NS,
                    CreateRequest {
                        id: id.into(),
                        labels: HashMap::new(),
                    },
                ))
                .await
                .unwrap();
            leases
                .delete(namespaced(
                    NS,
                    DeleteRequest {
                        id: id.into(),
                        sync: true,
                    },
                ))
                .await
                .unwrap();
        }
    };
    collect("trigger-1").await;
    assert_eq!(
        s.keys().await,
        ["held"],
        "the unleased snapshot is collected, the leased one kept"
    );
    let dirs = || {
        std::fs::read_dir(daemon.root.join("snapshots/overlayfs/snapshots"))
            .unwrap()
            .count()
    };
    assert_eq!(dirs(), 1);
    leases
        .delete(namespaced(NS, DeleteRequest { id: lease, sync: true }))
        .await
        .unwrap();
    assert!(s.keys().await.is_empty());
    assert_eq!(dirs(), 0, "--sync returns once the snapshot's files are gone");
}

/// A tar entry as (type, name, link target, data).
type RawEntry = (tar::EntryType, String, String, &'static [u8]);

fn raw_tar_entry(out: &mut Vec<u8>, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

async fn apply(
    channel: &Channel,
    digest: &str,
    size: usize,
    media_type: &str,
    mounts: Vec<Mount>,
) -> Result<Descriptor, Status> {
    DiffClient::new(channel.clone())
        .apply(namespaced(
            NS,
            ApplyRequest {
                diff: Some(Descriptor {
                    media_type: media_type.into(),
                    digest: digest.into(),
                    size: size as i64,
                    annotations: HashMap::new(),
                }),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            },
        ))
        .await
        .map(|r| r.into_inner().applied.unwrap())
}

#[tokio::test]
async fn diff_refuses_bad_requests_and_hostile_layers_touch_nothing_outside() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let ctr = daemon.ctr();
    let outside = tempfile::tempdir().unwrap();
    let canary = outside.path().join("canary");
    std::fs::write(&canary, "untouched").unwrap();
    let out = outside.path().display().to_string();
    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

    for snapshotter in ["overlayfs", "native"] {
        let mut s = Snapshots::new(&channel, snapshotter);
        s.prepare("base", "").await.unwrap();
        s.commit("parent", "base").await.unwrap();
        let hostile: Vec<(&str, Vec<RawEntry>)> = vec![
            (
                "dot-dot",
                vec![(
                    tar::EntryType::Regular,
                    format!("../../../../../../..{out}/canary"),
                    String::new(),
                    b"owned",
                )],
            ),
            (
                "symlink out, then a file through it",
                vec![
                    (tar::EntryType::Symlink, "escape".into(), out.clone(), b""),
                    (tar::EntryType::Regular, "escape/canary".into(), String::new(), b"owned"),
                ],
            ),
            (
                "hard link to a host file",
                vec![(tar::EntryType::Link, "stolen".into(), format!("{out}/canary"), b"")],
            ),
            (
                "whiteout of ..",
                vec![(tar::EntryType::Regular, "a/.wh...".into(), String::new(), b"")],
            ),
        ];
        for (i, (name, entries)) in hostile.into_iter().enumerate() {
            let mut layer = Vec::new();
            for (kind, path, link, data) in entries {
                raw_tar_entry(&mut layer, kind, &path, &link, data);
            }
            layer.extend_from_slice(&[0u8; 1024]);
            let digest = ctr.ingest(&format!("hostile-{snapshotter}-{i}"), &layer);
            let key = format!("target-{i}");
            let mounts = s.prepare(&key, "parent").await.unwrap();
            let result = apply(&channel, &digest, layer.len(), TAR, mounts).await;
            assert_eq!(
                std::fs::read_to_string(&canary).unwrap(),
                "untouched",
                "{snapshotter}: {name}"
            );
            assert_eq!(
                std::fs::read_dir(outside.path()).unwrap().count(),
                1,
                "{snapshotter}: {name}"
            );
            if let Err(e) = result {
                assert_eq!(e.code(), Code::InvalidArgument, "{snapshotter}: {name}: {e}");
                assert!(
                    e.message().contains("layer entry"),
                    "{snapshotter}: {name}: {}",
                    e.message()
                );
            }
        }

        // Bad requests.
        let mounts = s.prepare("plain", "parent").await.unwrap();
        let mut good = Vec::new();
        raw_tar_entry(&mut good, tar::EntryType::Regular, "hello", "", b"hi\n");
        good.extend_from_slice(&[0u8; 1024]);
        let digest = ctr.ingest(&format!("good-{snapshotter}"), &good);
        let missing = format!("sha256:{}", "0".repeat(64));
        let cases: Vec<(&str, Result<Descriptor, Status>, Code)> = vec![
            (
                "unknown media type",
                apply(
                    &channel,
                    &digest,
                    good.len(),
                    "application/vnd.example.layer",
                    mounts.clone(),
                )
                .await,
                Code::Unimplemented,
            ),
            (
                "missing blob",
                apply(&channel, &missing, 10, TAR, mounts.clone()).await,
                Code::NotFound,
            ),
            (
                "malformed digest",
                apply(&channel, "sha256:xyz", 10, TAR, mounts.clone()).await,
                Code::InvalidArgument,
            ),
        ];
        for (what, result, expected) in cases {
            assert_eq!(result.expect_err(what).code(), expected, "{snapshotter}: {what}");
        }
        let no_descriptor = DiffClient::new(channel.clone())
            .apply(namespaced(
                NS,
                ApplyRequest {
                    diff: None,
                    mounts: mounts.clone(),
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
            ))
            .await;
        assert_eq!(code(no_descriptor), Code::InvalidArgument);
        let applied = apply(&channel, &digest, good.len(), TAR, mounts).await.unwrap();
        assert_eq!(applied.digest, digest, "an uncompressed layer is its own diff id");

        // Diff of the two: the one file, written gzip-compressed to the store.
        let lower = s.mounts("parent").await.unwrap_or_default();
        let upper = s.mounts("plain").await.unwrap();
        let written = DiffClient::new(channel.clone())
            .diff(namespaced(
                NS,
                DiffRequest {
                    left: lower.clone(),
                    right: upper.clone(),
                    media_type: String::new(),
                    r#ref: String::new(),
                    labels: [("containerd.io/gc.root".to_string(), "test".to_string())].into(),
                    source_date_epoch: None,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .diff
            .unwrap();
        assert_eq!(written.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
        let info = ctr.ok(&["content", "ls"]);
        let row = info
            .lines()
            .find(|l| l.starts_with(&written.digest))
            .expect("the diff is stored");
        assert!(row.contains("containerd.io/uncompressed=sha256:"), "{row}");
        let unsupported = DiffClient::new(channel.clone())
            .diff(namespaced(
                NS,
                DiffRequest {
                    left: lower,
                    right: upper,
                    media_type: "application/vnd.example.layer".into(),
                    r#ref: String::new(),
                    labels: HashMap::new(),
                    source_date_epoch: None,
                },
            ))
            .await;
        assert_eq!(code(unsupported), Code::Unimplemented);
    }
}

#[tokio::test]
async fn racing_prepares_of_one_key_make_one_snapshot() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    for snapshotter in ["overlayfs", "native"] {
        let mut base = Snapshots::new(&channel, snapshotter);
        base.prepare("base", "").await.unwrap();
        base.commit("parent", "base").await.unwrap();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let mut s = Snapshots::new(&channel, snapshotter);
                tokio::spawn(async move { s.prepare("contested", "parent").await.map(|_| ()) })
            })
            .collect();
        let mut codes = Vec::new();
        for racer in racers {
            codes.push(racer.await.unwrap().map_err(|e| e.code()));
        }
        assert_eq!(codes.iter().filter(|c| c.is_ok()).count(), 1, "{codes:?}");
        assert!(
            codes.iter().all(|c| matches!(c, Ok(()) | Err(Code::AlreadyExists))),
            "{codes:?}"
        );
        let dirs = std::fs::read_dir(daemon.root.join("snapshots").join(snapshotter).join("snapshots"))
            .unwrap()
            .count();
        assert_eq!(dirs, 2, "{snapshotter}: the parent and one prepared snapshot");
    }
}
