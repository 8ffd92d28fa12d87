//! Containers: the records tasks are created from (`ctr containers`).

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;

use berth_api::containerd::events::{ContainerCreate, ContainerDelete, ContainerUpdate, container_create};
use berth_api::containerd::services::containers::v1::containers_server::{Containers, ContainersServer};
use berth_api::containerd::services::containers::v1::{
    Container, CreateContainerRequest, CreateContainerResponse, DeleteContainerRequest, GetContainerRequest,
    GetContainerResponse, ListContainerMessage, ListContainersRequest, ListContainersResponse, UpdateContainerRequest,
    UpdateContainerResponse,
};
use berth_core::Error;
use berth_core::events::Exchange;
use berth_core::filters::{Adaptor, Filter, label_field, string_field};
use berth_core::gc::GarbageCollector;
use berth_core::metadata::{MetadataStore, containers};
use berth_core::plugin::{Registration, types};
use berth_core::runtime::RuntimeManager;
use futures_util::Stream;
use tonic::{Request, Response, Status};

use crate::namespace_header::{namespace_required, required};
use crate::publish;

/// Answers the Containers service from the metadata store.
#[derive(Debug)]
pub struct ContainersService {
    meta: MetadataStore,
    events: Arc<Exchange>,
    gc: GarbageCollector,
    runtime: Option<Arc<RuntimeManager>>,
}

impl ContainersService {
    /// A service over `meta`, publishing on `events`, collecting with `gc`.
    pub fn new(meta: MetadataStore, events: Arc<Exchange>, gc: GarbageCollector) -> Self {
        Self {
            meta,
            events,
            gc,
            runtime: None,
        }
    }

    /// The same service refusing to delete containers with a live task.
    pub fn with_runtime(mut self, runtime: Arc<RuntimeManager>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    async fn matching(&self, namespace: String, filters: &[String]) -> Result<Vec<Container>, Status> {
        let filter = Filter::parse_all(filters)?;
        let all = self.meta.read(move |txn| containers::list(txn, &namespace)).await?;
        Ok(all
            .into_iter()
            .filter(|c| filter.matches(&ContainerFields(c)))
            .collect())
    }
}

/// Filter fields of a container: `id`, `image`, `runtime.name`,
/// `labels.<k>`, as containerd offers.
struct ContainerFields<'a>(&'a Container);

impl Adaptor for ContainerFields<'_> {
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        let container = self.0;
        match path.first()?.as_str() {
            "id" => string_field(&container.id),
            "image" => string_field(&container.image),
            "runtime" if path.get(1).is_some_and(|p| p == "name") => string_field(&container.runtime.as_ref()?.name),
            "labels" => label_field(&container.labels, &path[1..]),
            _ => None,
        }
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListContainerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn get(&self, request: Request<GetContainerRequest>) -> Result<Response<GetContainerResponse>, Status> {
        let namespace = required(&request)?;
        let id = request.into_inner().id;
        let lookup = id.clone();
        let container = self
            .meta
            .read(move |txn| containers::get(txn, &namespace, &lookup))
            .await?
            .ok_or_else(|| Error::not_found(format!("container {id:?}")))?;
        Ok(Response::new(GetContainerResponse {
            container: Some(container),
        }))
    }

    async fn list(&self, request: Request<ListContainersRequest>) -> Result<Response<ListContainersResponse>, Status> {
        let namespace = required(&request)?;
        let containers = self.matching(namespace, &request.into_inner().filters).await?;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    type ListStreamStream = ListStream;

    async fn list_stream(&self, request: Request<ListContainersRequest>) -> Result<Response<ListStream>, Status> {
        let namespace = required(&request)?;
        let containers = self.matching(namespace, &request.into_inner().filters).await?;
        let messages: Vec<Result<ListContainerMessage, Status>> = containers
            .into_iter()
            .map(|c| Ok(ListContainerMessage { container: Some(c) }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn create(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let namespace = required(&request)?;
        let container = request
            .into_inner()
            .container
            .ok_or_else(|| Error::invalid_argument("container must be set"))?;
        let ns = namespace.clone();
        let container = self
            .meta
            .write(move |txn| containers::create(txn, &ns, container))
            .await?;
        tracing::info!(namespace = %namespace, container = %container.id, "container created");
        berth_core::failpoint::check("containers.after-create")?;
        publish(
            &self.events,
            &namespace,
            "/containers/create",
            &ContainerCreate {
                id: container.id.clone(),
                image: container.image.clone(),
                runtime: container.runtime.as_ref().map(|r| container_create::Runtime {
                    name: r.name.clone(),
                    options: r.options.clone(),
                }),
            },
        );
        Ok(Response::new(CreateContainerResponse {
            container: Some(container),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let container = request
            .container
            .ok_or_else(|| Error::invalid_argument("container must be set"))?;
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let ns = namespace.clone();
        let container = self
            .meta
            .write(move |txn| containers::update(txn, &ns, container, &paths))
            .await?;
        publish(
            &self.events,
            &namespace,
            "/containers/update",
            &ContainerUpdate {
                id: container.id.clone(),
                image: container.image.clone(),
                labels: container.labels.clone(),
                snapshot_key: container.snapshot_key.clone(),
            },
        );
        Ok(Response::new(UpdateContainerResponse {
            container: Some(container),
        }))
    }

    async fn delete(&self, request: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let id = request.into_inner().id;
        if self.runtime.as_ref().is_some_and(|r| r.get(&namespace, &id).is_some()) {
            return Err(Error::failed_precondition(format!(
                "container {id}: cannot delete a container with an existing task"
            ))
            .into());
        }
        let (ns, target) = (namespace.clone(), id.clone());
        self.meta
            .write(move |txn| containers::delete(txn, &ns, &target).map(|_| ()))
            .await?;
        tracing::info!(namespace = %namespace, container = %id, "container deleted");
        publish(&self.events, &namespace, "/containers/delete", &ContainerDelete { id });
        self.gc.schedule();
        Ok(Response::new(()))
    }
}

/// `io.containerd.grpc.v1.containers`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "containers",
        requires: &[types::METADATA, types::GC, types::EVENT, types::RUNTIME_V2],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let gc: Arc<GarbageCollector> = ctx.get(types::GC)?;
                let events: Arc<Exchange> = ctx.get(types::EVENT)?;
                let mut service = ContainersService::new((*meta).clone(), events, (*gc).clone());
                if let Ok(runtime) = ctx.get::<RuntimeManager>(types::RUNTIME_V2) {
                    service = service.with_runtime(runtime);
                }
                routed_service!(ctx, ContainersServer::new(service), namespace_required)
            })
        }),
    }
}
