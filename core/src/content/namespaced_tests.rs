//! Namespaced content and garbage collection over a real store on disk.

use std::collections::HashMap;
use std::sync::Arc;

use berth_api::containerd::services::images::v1::Image;
use berth_api::containerd::types::Descriptor;

use super::*;
use crate::error::ErrorKind;
use crate::gc::GarbageCollector;
use crate::metadata::{images, leases as lease_meta};
use crate::shutdown::ShutdownSignal;

struct Fixture {
    _dir: tempfile::TempDir,
    content: NamespacedContent,
    meta: MetadataStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let meta = MetadataStore::open(&dir.path().join("root")).unwrap();
    let store = Arc::new(ContentStore::open(&dir.path().join("root/content")).unwrap());
    Fixture {
        content: NamespacedContent::new(store, meta.clone()),
        meta,
        _dir: dir,
    }
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn put(f: &Fixture, ns: &str, data: &[u8], blob_labels: &[(&str, &str)]) -> Digest {
    let reference = format!("ref-{}", Digest::of(data).hex());
    let mut writer = f.content.writer(ns, &reference, 0, None, None).await.unwrap();
    writer.write(data.to_vec()).await.unwrap();
    match writer.commit(0, None, labels(blob_labels)).await {
        Ok(digest) => digest,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Digest::of(data),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn writes_commit_into_the_namespace_only() {
    let f = fixture();
    let digest = put(&f, "a", b"hello", &[("k", "v")]).await;
    let info = f.content.info("a", &digest).await.unwrap();
    assert_eq!((info.size, info.labels.get("k").map(String::as_str)), (5, Some("v")));
    let err = f.content.info("b", &digest).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.to_string(), format!("content {digest}: not found"));

    // The same bytes again in the same namespace: AlreadyExists at commit.
    let mut writer = f.content.writer("a", "again", 0, None, None).await.unwrap();
    writer.write(b"hello".to_vec()).await.unwrap();
    let err = writer.commit(0, None, HashMap::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}

#[tokio::test]
async fn an_expected_digest_the_namespace_holds_is_already_exists_at_once() {
    let f = fixture();
    let digest = put(&f, "a", b"data", &[]).await;
    let err = f
        .content
        .writer("a", "r", 4, Some(digest.clone()), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(f.content.list_statuses("a", Filter::always()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_blob_another_namespace_holds_commits_without_data() {
    let f = fixture();
    let digest = put(&f, "a", b"shared bytes", &[]).await;
    let writer = f
        .content
        .writer("b", "r", 12, Some(digest.clone()), None)
        .await
        .unwrap();
    let status = writer.status().unwrap();
    assert_eq!((status.offset, status.total), (12, 12), "nothing left to send");
    assert_eq!(
        writer.commit(12, Some(digest.clone()), HashMap::new()).await.unwrap(),
        digest
    );
    assert_eq!(f.content.info("b", &digest).await.unwrap().size, 12);
    assert_eq!(f.content.store().blobs().unwrap(), [digest]);
}

#[tokio::test]
async fn one_writer_per_ref() {
    let f = fixture();
    let _first = f.content.writer("a", "busy", 0, None, None).await.unwrap();
    let err = f.content.writer("a", "busy", 0, None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    // The same ref in another namespace is another write.
    f.content.writer("b", "busy", 0, None, None).await.unwrap();
}

#[tokio::test]
async fn a_wrong_digest_stores_nothing() {
    let f = fixture();
    let mut writer = f.content.writer("a", "r", 0, None, None).await.unwrap();
    writer.write(b"actual".to_vec()).await.unwrap();
    let err = writer
        .commit(0, Some(Digest::of(b"something else")), HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(f.content.list("a", Filter::always()).await.unwrap().is_empty());
    assert!(f.content.store().blobs().unwrap().is_empty());
    // The ingest is still there to resume or abort.
    let status = f.content.status("a", "r").await.unwrap();
    assert_eq!(status.status.offset, 6);
    f.content.abort("a", "r", None).await.unwrap();
    assert_eq!(
        f.content.status("a", "r").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(f.content.store().ingests().unwrap().is_empty());
}

#[tokio::test]
async fn leases_hold_ingests_then_content() {
    let f = fixture();
    f.meta
        .write(|txn| lease_meta::create(txn, "a", "l1", HashMap::new()).map(|_| ()))
        .await
        .unwrap();
    let mut writer = f.content.writer("a", "r", 0, None, Some("l1".into())).await.unwrap();
    let resources = f
        .meta
        .read(|txn| lease_meta::list_resources(txn, "a", "l1"))
        .await
        .unwrap();
    assert_eq!(resources, [("ingests".to_string(), "r".to_string())]);
    writer.write(b"leased".to_vec()).await.unwrap();
    let digest = writer.commit(0, None, HashMap::new()).await.unwrap();
    let resources = f
        .meta
        .read(|txn| lease_meta::list_resources(txn, "a", "l1"))
        .await
        .unwrap();
    assert_eq!(resources, [("content".to_string(), digest.to_string())]);

    let err = f
        .content
        .writer("a", "r2", 0, None, Some("nope".into()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(f.content.list_statuses("a", Filter::always()).await.unwrap().is_empty());
}

#[tokio::test]
async fn statuses_filter_on_ref() {
    let f = fixture();
    for reference in ["layer-1", "layer-2", "config-1"] {
        let mut w = f.content.writer("a", reference, 100, None, None).await.unwrap();
        w.write(vec![1, 2, 3]).await.unwrap();
    }
    let filter = Filter::parse_all(&["ref~=^layer-"]).unwrap();
    let mut refs: Vec<String> = f
        .content
        .list_statuses("a", filter)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.reference)
        .collect();
    refs.sort();
    assert_eq!(refs, ["layer-1", "layer-2"]);
    let status = f.content.status("a", "config-1").await.unwrap();
    assert_eq!((status.status.offset, status.status.total), (3, 100));
}

// --- garbage collection ---------------------------------------------------

fn collector(f: &Fixture) -> GarbageCollector {
    GarbageCollector::start(
        f.meta.clone(),
        Arc::clone(f.content.store()),
        Arc::new(crate::snapshots::Snapshotters::default()),
        ShutdownSignal::never(),
    )
}

async fn create_image(f: &Fixture, ns: &str, name: &str, target: &Digest, size: i64) {
    let image = Image {
        name: name.into(),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: target.to_string(),
            size,
            annotations: HashMap::new(),
        }),
        ..Default::default()
    };
    let ns = ns.to_string();
    f.meta
        .write(move |txn| images::create(txn, &ns, image).map(|_| ()))
        .await
        .unwrap();
}

async fn present(f: &Fixture, ns: &str, digest: &Digest) -> (bool, bool) {
    let record = f.content.info(ns, digest).await.is_ok();
    let file = f.content.store().blob_path(digest).exists();
    (record, file)
}

#[tokio::test]
async fn images_keep_what_they_reference_and_nothing_else() {
    let f = fixture();
    let layer = put(&f, "a", b"layer", &[]).await;
    let shared_layer = put(&f, "a", b"shared layer", &[]).await;
    let manifest = put(
        &f,
        "a",
        b"manifest 1",
        &[
            ("containerd.io/gc.ref.content.l.0", &layer.to_string()),
            ("containerd.io/gc.ref.content.l.1", &shared_layer.to_string()),
        ],
    )
    .await;
    let manifest2 = put(
        &f,
        "a",
        b"manifest 2",
        &[("containerd.io/gc.ref.content.l.0", &shared_layer.to_string())],
    )
    .await;
    let stray = put(&f, "a", b"stray", &[]).await;
    create_image(&f, "a", "one", &manifest, 10).await;
    create_image(&f, "a", "two", &manifest2, 10).await;

    let gc = collector(&f);
    gc.collect().await.unwrap();
    assert_eq!(present(&f, "a", &stray).await, (false, false));
    for kept in [&layer, &shared_layer, &manifest, &manifest2] {
        assert_eq!(present(&f, "a", kept).await, (true, true));
    }

    f.meta
        .write(|txn| images::delete(txn, "a", "one").map(|_| ()))
        .await
        .unwrap();
    gc.collect().await.unwrap();
    assert_eq!(present(&f, "a", &manifest).await, (false, false));
    assert_eq!(present(&f, "a", &layer).await, (false, false));
    assert_eq!(
        present(&f, "a", &shared_layer).await,
        (true, true),
        "still used by image two"
    );
}

#[tokio::test]
async fn a_blob_held_in_another_namespace_keeps_its_file() {
    let f = fixture();
    let digest = put(&f, "a", b"both", &[("containerd.io/gc.root", "1")]).await;
    put(&f, "b", b"both", &[]).await;
    let gc = collector(&f);
    gc.collect().await.unwrap();
    assert_eq!(
        present(&f, "b", &digest).await,
        (false, true),
        "b's record went, a's file stays"
    );
    assert_eq!(present(&f, "a", &digest).await, (true, true));
}

#[tokio::test]
async fn leases_hold_content_until_deleted_or_expired() {
    let f = fixture();
    f.meta
        .write(|txn| {
            lease_meta::create(txn, "a", "held", HashMap::new())?;
            lease_meta::create(
                txn,
                "a",
                "expired",
                labels(&[("containerd.io/gc.expire", "2000-01-01T00:00:00Z")]),
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let mut writer = f.content.writer("a", "r1", 0, None, Some("held".into())).await.unwrap();
    writer.write(b"kept".to_vec()).await.unwrap();
    let kept = writer.commit(0, None, HashMap::new()).await.unwrap();
    let mut writer = f
        .content
        .writer("a", "r2", 0, None, Some("expired".into()))
        .await
        .unwrap();
    writer.write(b"gone".to_vec()).await.unwrap();
    let gone = writer.commit(0, None, HashMap::new()).await.unwrap();

    let gc = collector(&f);
    gc.collect().await.unwrap();
    assert_eq!(present(&f, "a", &kept).await, (true, true));
    assert_eq!(present(&f, "a", &gone).await, (false, false));
    assert!(
        f.meta
            .read(|txn| lease_meta::get(txn, "a", "expired"))
            .await
            .unwrap()
            .is_none()
    );

    f.meta.write(|txn| lease_meta::delete(txn, "a", "held")).await.unwrap();
    gc.collect().await.unwrap();
    assert_eq!(present(&f, "a", &kept).await, (false, false));
}

#[tokio::test]
async fn flat_leases_do_not_follow_references() {
    let f = fixture();
    let layer = put(&f, "a", b"layer", &[]).await;
    let manifest = put(
        &f,
        "a",
        b"manifest",
        &[("containerd.io/gc.ref.content.l.0", &layer.to_string())],
    )
    .await;
    let m = manifest.to_string();
    f.meta
        .write(move |txn| {
            lease_meta::create(txn, "a", "flat", labels(&[("containerd.io/gc.flat", "1")]))?;
            lease_meta::add_resource(txn, "a", "flat", "content", &m)
        })
        .await
        .unwrap();
    let gc = collector(&f);
    gc.collect().await.unwrap();
    assert_eq!(present(&f, "a", &manifest).await, (true, true));
    assert_eq!(present(&f, "a", &layer).await, (false, false));
}

#[tokio::test]
async fn unleased_ingests_live_until_they_expire_and_orphans_go() {
    let f = fixture();
    let mut writer = f.content.writer("a", "fresh", 0, None, None).await.unwrap();
    writer.write(b"partial".to_vec()).await.unwrap();
    drop(writer);
    // An ingest whose expiry has passed.
    let mut writer = f.content.writer("a", "old", 0, None, None).await.unwrap();
    writer.write(b"stale".to_vec()).await.unwrap();
    drop(writer);
    f.meta
        .write(|txn| {
            let mut record = content::get_ingest_for_update(txn, "a", "old")?.unwrap();
            record.expire_at = Some(prost_types::Timestamp { seconds: 1, nanos: 0 });
            content::put_ingest(txn, "a", "old", &record)
        })
        .await
        .unwrap();
    // Files nobody recorded: a blob and an ingest directory.
    let orphan_blob = f.content.store().blob_path(&Digest::of(b"orphan"));
    std::fs::write(&orphan_blob, b"orphan").unwrap();
    let orphan_dir = f.content.store().root().join("ingest/deadbeef");
    std::fs::create_dir_all(&orphan_dir).unwrap();

    let gc = collector(&f);
    gc.collect().await.unwrap();
    assert!(f.content.status("a", "fresh").await.is_ok());
    assert_eq!(
        f.content.status("a", "old").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(!orphan_blob.exists());
    assert!(!orphan_dir.exists());
    assert_eq!(f.content.store().ingests().unwrap().len(), 1);
}

#[tokio::test]
async fn an_active_writer_survives_collection() {
    let f = fixture();
    let mut writer = f.content.writer("a", "busy", 0, None, None).await.unwrap();
    writer.write(b"half".to_vec()).await.unwrap();
    let gc = collector(&f);
    gc.collect().await.unwrap();
    writer.write(b" and half".to_vec()).await.unwrap();
    let digest = writer.commit(0, None, HashMap::new()).await.unwrap();
    assert_eq!(digest, Digest::of(b"half and half"));
    create_image(&f, "a", "img", &digest, 13).await;
    gc.collect().await.unwrap();
    assert_eq!(present(&f, "a", &digest).await, (true, true));
}

#[tokio::test]
async fn collection_runs_by_itself_when_a_lease_expires() {
    let f = fixture();
    let expiry = timestamps::format_rfc3339(SystemTime::now() + Duration::from_millis(700));
    f.meta
        .write(move |txn| {
            lease_meta::create(txn, "a", "short", labels(&[("containerd.io/gc.expire", &expiry)])).map(|_| ())
        })
        .await
        .unwrap();
    let mut writer = f.content.writer("a", "r", 0, None, Some("short".into())).await.unwrap();
    writer.write(b"until expiry".to_vec()).await.unwrap();
    let digest = writer.commit(0, None, HashMap::new()).await.unwrap();
    let _gc = collector(&f);
    // No one asks for a pass: the collector wakes at the expiry on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while present(&f, "a", &digest).await != (false, false) {
        assert!(std::time::Instant::now() < deadline, "the blob outlived its lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        f.meta
            .read(|txn| lease_meta::get(txn, "a", "short"))
            .await
            .unwrap()
            .is_none()
    );
}
