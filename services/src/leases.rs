//! Leases: hold resources against garbage collection (`ctr leases`, and
//! around every import, pull and unpack).

use std::borrow::Cow;
use std::sync::Arc;

use berth_api::containerd::services::leases::v1::leases_server::{Leases, LeasesServer};
use berth_api::containerd::services::leases::v1::{
    AddResourceRequest, CreateRequest, CreateResponse, DeleteRequest, DeleteResourceRequest, Lease, ListRequest,
    ListResourcesRequest, ListResourcesResponse, ListResponse, Resource,
};
use berth_core::Error;
use berth_core::filters::{Adaptor, Filter, label_field, string_field};
use berth_core::gc::GarbageCollector;
use berth_core::metadata::{MetadataStore, leases};
use berth_core::plugin::{Registration, types};
use tonic::{Request, Response, Status};

use crate::namespace_header::{namespace_required, required};

/// Answers the Leases service from the metadata store.
#[derive(Debug)]
pub struct LeasesService {
    meta: MetadataStore,
    gc: GarbageCollector,
}

impl LeasesService {
    /// A service over `meta`, collecting with `gc`.
    pub fn new(meta: MetadataStore, gc: GarbageCollector) -> Self {
        Self { meta, gc }
    }
}

/// A lease id for a Create that names none: the time and random bytes, in
/// the shape containerd clients make them.
fn random_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{nanos}-{}", &random[..8])
}

/// Filter fields of a lease: `id` and `labels.<k>`.
struct LeaseFields<'a>(&'a Lease);

impl Adaptor for LeaseFields<'_> {
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        match path.first()?.as_str() {
            "id" => string_field(&self.0.id),
            "labels" => label_field(&self.0.labels, &path[1..]),
            _ => None,
        }
    }
}

fn resource(resource: Option<Resource>) -> Result<Resource, Status> {
    resource.ok_or_else(|| Error::invalid_argument("resource must be set").into())
}

#[tonic::async_trait]
impl Leases for LeasesService {
    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let id = if request.id.is_empty() { random_id() } else { request.id };
        let lease = self
            .meta
            .write(move |txn| leases::create(txn, &namespace, &id, request.labels))
            .await?;
        Ok(Response::new(CreateResponse { lease: Some(lease) }))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let id = request.id;
        self.meta.write(move |txn| leases::delete(txn, &namespace, &id)).await?;
        if request.sync {
            self.gc.collect().await?;
        } else {
            self.gc.schedule();
        }
        Ok(Response::new(()))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let namespace = required(&request)?;
        let filter = Filter::parse_all(&request.into_inner().filters)?;
        let all = self.meta.read(move |txn| leases::list(txn, &namespace)).await?;
        let leases = all.into_iter().filter(|l| filter.matches(&LeaseFields(l))).collect();
        Ok(Response::new(ListResponse { leases }))
    }

    async fn add_resource(&self, request: Request<AddResourceRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let resource = resource(request.resource)?;
        let id = request.id;
        self.meta
            .write(move |txn| leases::add_resource(txn, &namespace, &id, &resource.r#type, &resource.id))
            .await?;
        Ok(Response::new(()))
    }

    async fn delete_resource(&self, request: Request<DeleteResourceRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let resource = resource(request.resource)?;
        let id = request.id;
        self.meta
            .write(move |txn| leases::delete_resource(txn, &namespace, &id, &resource.r#type, &resource.id))
            .await?;
        self.gc.schedule();
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        request: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let namespace = required(&request)?;
        let id = request.into_inner().id;
        let rows = self
            .meta
            .read(move |txn| leases::list_resources(txn, &namespace, &id))
            .await?;
        let resources = rows
            .into_iter()
            .map(|(kind, id)| Resource { id, r#type: kind })
            .collect();
        Ok(Response::new(ListResourcesResponse { resources }))
    }
}

/// `io.containerd.grpc.v1.leases`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "leases",
        requires: &[types::METADATA, types::GC],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let gc: Arc<GarbageCollector> = ctx.get(types::GC)?;
                routed_service!(
                    ctx,
                    LeasesServer::new(LeasesService::new((*meta).clone(), (*gc).clone())),
                    namespace_required
                )
            })
        }),
    }
}
