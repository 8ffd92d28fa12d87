//! Snapshots: copy-on-write filesystems for images and containers
//! (`ctr snapshot`, and every unpack and `ctr run`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use berth_api::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use berth_api::containerd::services::snapshots::v1::snapshots_server::{Snapshots, SnapshotsServer};
use berth_api::containerd::services::snapshots::v1::{
    CleanupRequest, CommitSnapshotRequest, Info, Kind as ProtoKind, ListSnapshotsRequest, ListSnapshotsResponse,
    MountsRequest, MountsResponse, PrepareSnapshotRequest, PrepareSnapshotResponse, RemoveSnapshotRequest,
    StatSnapshotRequest, StatSnapshotResponse, UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest,
    UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use berth_api::containerd::types::Mount;
use berth_core::Error;
use berth_core::events::Exchange;
use berth_core::filters::Filter;
use berth_core::gc::GarbageCollector;
use berth_core::labels::LabelUpdate;
use berth_core::metadata::MetadataStore;
use berth_core::plugin::{Registration, types};
use berth_core::snapshots::namespaced::NamespacedSnapshots;
use berth_core::snapshots::{self, Kind};
use berth_core::timestamps;
use futures_util::Stream;
use tonic::{Request, Response, Status};

use crate::lease_header::lease;
use crate::namespace_header::{namespace_required, required};
use crate::publish;

/// Snapshot infos per List message, as containerd batches them.
const LIST_BATCH: usize = 100;

/// Answers the Snapshots service over the loaded snapshotters.
#[derive(Debug)]
pub struct SnapshotsService {
    snapshots: NamespacedSnapshots,
    events: Arc<Exchange>,
    gc: GarbageCollector,
}

impl SnapshotsService {
    /// A service over `snapshots`, publishing on `events`, collecting with `gc`.
    pub fn new(snapshots: NamespacedSnapshots, events: Arc<Exchange>, gc: GarbageCollector) -> Self {
        Self { snapshots, events, gc }
    }
}

/// The snapshotter a request names; containerd refuses an empty one.
fn snapshotter(name: &str) -> Result<&str, Status> {
    if name.is_empty() {
        return Err(Error::invalid_argument("snapshotter argument missing").into());
    }
    Ok(name)
}

fn to_proto(info: snapshots::Info) -> Info {
    let kind = match info.kind {
        Kind::View => ProtoKind::View,
        Kind::Active => ProtoKind::Active,
        Kind::Committed => ProtoKind::Committed,
    };
    Info {
        name: info.name,
        parent: info.parent,
        kind: kind as i32,
        created_at: Some(timestamps::from_system_time(info.created)),
        updated_at: Some(timestamps::from_system_time(info.updated)),
        labels: info.labels,
    }
}

/// (snapshotter, key, parent, labels) of a Prepare or View.
type Creation = (String, String, String, HashMap<String, String>);

impl SnapshotsService {
    /// Prepare (active) or View: a prepare publishes `/snapshot/prepare`, a
    /// view publishes nothing, as with containerd.
    async fn create(
        &self,
        namespace: &str,
        kind: Kind,
        (snapshotter_name, key, parent, labels): Creation,
        lease: Option<String>,
    ) -> Result<Vec<Mount>, Status> {
        let sn = snapshotter(&snapshotter_name)?;
        let mounts = if kind == Kind::View {
            self.snapshots.view(namespace, sn, &key, &parent, labels, lease).await?
        } else {
            self.snapshots
                .prepare(namespace, sn, &key, &parent, labels, lease)
                .await?
        };
        if kind == Kind::Active {
            let event = SnapshotPrepare {
                key,
                parent,
                snapshotter: snapshotter_name,
            };
            publish(&self.events, namespace, "/snapshot/prepare", &event);
        }
        Ok(mounts)
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        request: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let namespace = required(&request)?;
        let lease = lease(&request)?;
        let r = request.into_inner();
        let mounts = self
            .create(
                &namespace,
                Kind::Active,
                (r.snapshotter, r.key, r.parent, r.labels),
                lease,
            )
            .await?;
        Ok(Response::new(PrepareSnapshotResponse { mounts }))
    }

    async fn view(&self, request: Request<ViewSnapshotRequest>) -> Result<Response<ViewSnapshotResponse>, Status> {
        let namespace = required(&request)?;
        let lease = lease(&request)?;
        let r = request.into_inner();
        let mounts = self
            .create(
                &namespace,
                Kind::View,
                (r.snapshotter, r.key, r.parent, r.labels),
                lease,
            )
            .await?;
        Ok(Response::new(ViewSnapshotResponse { mounts }))
    }

    async fn mounts(&self, request: Request<MountsRequest>) -> Result<Response<MountsResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let sn = snapshotter(&request.snapshotter)?;
        let mounts = self.snapshots.mounts(&namespace, sn, &request.key).await?;
        Ok(Response::new(MountsResponse { mounts }))
    }

    async fn commit(&self, request: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let lease = lease(&request)?;
        let request = request.into_inner();
        let sn = snapshotter(&request.snapshotter)?;
        self.snapshots
            .commit(&namespace, sn, &request.name, &request.key, request.labels, lease)
            .await?;
        let event = SnapshotCommit {
            key: request.key,
            name: request.name,
            snapshotter: request.snapshotter,
        };
        publish(&self.events, &namespace, "/snapshot/commit", &event);
        Ok(Response::new(()))
    }

    async fn remove(&self, request: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let lease = lease(&request)?;
        let request = request.into_inner();
        let sn = snapshotter(&request.snapshotter)?;
        self.snapshots.remove(&namespace, sn, &request.key, lease).await?;
        self.gc.schedule();
        let event = SnapshotRemove {
            key: request.key,
            snapshotter: request.snapshotter,
        };
        publish(&self.events, &namespace, "/snapshot/remove", &event);
        Ok(Response::new(()))
    }

    async fn stat(&self, request: Request<StatSnapshotRequest>) -> Result<Response<StatSnapshotResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let sn = snapshotter(&request.snapshotter)?;
        let info = self.snapshots.stat(&namespace, sn, &request.key).await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(to_proto(info)),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let sn = snapshotter(&request.snapshotter)?;
        let info = request
            .info
            .ok_or_else(|| Error::invalid_argument("snapshot info must be set"))?;
        if info.name.is_empty() {
            return Err(Error::invalid_argument("snapshot name must be set").into());
        }
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let update = LabelUpdate::from_mask(&format!("snapshot {:?}", info.name), info.labels, &paths)?;
        let info = self.snapshots.update_labels(&namespace, sn, &info.name, update).await?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(to_proto(info)),
        }))
    }

    type ListStream = ListStream;

    async fn list(&self, request: Request<ListSnapshotsRequest>) -> Result<Response<ListStream>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let sn = snapshotter(&request.snapshotter)?;
        let filter = Filter::parse_all(&request.filters)?;
        let infos = self.snapshots.list(&namespace, sn, filter).await?;
        let mut batches = Vec::with_capacity(infos.len().div_ceil(LIST_BATCH));
        let mut infos = infos.into_iter().map(to_proto).peekable();
        while infos.peek().is_some() {
            let info: Vec<Info> = infos.by_ref().take(LIST_BATCH).collect();
            batches.push(Ok(ListSnapshotsResponse { info }));
        }
        Ok(Response::new(Box::pin(futures_util::stream::iter(batches))))
    }

    async fn usage(&self, request: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let sn = snapshotter(&request.snapshotter)?;
        let usage = self.snapshots.usage(&namespace, sn, &request.key).await?;
        Ok(Response::new(UsageResponse {
            size: usage.size,
            inodes: usage.inodes,
        }))
    }

    async fn cleanup(&self, request: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        required(&request)?;
        let request = request.into_inner();
        let sn = snapshotter(&request.snapshotter)?;
        self.snapshots.cleanup(sn).await?;
        Ok(Response::new(()))
    }
}

/// `io.containerd.grpc.v1.snapshots`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "snapshots",
        requires: &[types::METADATA, types::GC, types::EVENT],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let gc: Arc<GarbageCollector> = ctx.get(types::GC)?;
                let events: Arc<Exchange> = ctx.get(types::EVENT)?;
                let snapshots = NamespacedSnapshots::new((*meta).clone(), Arc::clone(gc.snapshotters()));
                routed_service!(
                    ctx,
                    SnapshotsServer::new(SnapshotsService::new(snapshots, events, (*gc).clone())),
                    namespace_required
                )
            })
        }),
    }
}
