//! Namespaces: create, label, list and remove namespaces (`ctr namespaces`).
//! Not itself namespaced: the header, when present, only says which
//! namespace the create and update events are published in.

use std::sync::Arc;

use berth_api::containerd::events::{NamespaceCreate, NamespaceDelete, NamespaceUpdate};
use berth_api::containerd::services::namespaces::v1::namespaces_server::{Namespaces, NamespacesServer};
use berth_api::containerd::services::namespaces::v1::{
    CreateNamespaceRequest, CreateNamespaceResponse, DeleteNamespaceRequest, GetNamespaceRequest, GetNamespaceResponse,
    ListNamespacesRequest, ListNamespacesResponse, Namespace, UpdateNamespaceRequest, UpdateNamespaceResponse,
};
use berth_core::Error;
use berth_core::events::Exchange;
use berth_core::labels::LabelUpdate;
use berth_core::metadata::MetadataStore;
use berth_core::metadata::namespaces;
use berth_core::plugin::{Registration, types};
use tonic::{Request, Response, Status};

use crate::namespace_header::{self, namespace_optional};
use crate::publish;

/// Answers the Namespaces service from the metadata store.
#[derive(Debug)]
pub struct NamespacesService {
    store: MetadataStore,
    events: Arc<Exchange>,
}

impl NamespacesService {
    /// A service over `store`, publishing on `events`.
    pub fn new(store: MetadataStore, events: Arc<Exchange>) -> Self {
        Self { store, events }
    }
}

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn get(&self, request: Request<GetNamespaceRequest>) -> Result<Response<GetNamespaceResponse>, Status> {
        let name = request.into_inner().name;
        namespaces::validate_name(&name)?;
        let lookup = name.clone();
        let record = self.store.read(move |txn| namespaces::get(txn, &lookup)).await?;
        // An unknown namespace reads as one with no labels, as with containerd:
        // clients call Get for the namespace they are about to create objects in.
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(Namespace {
                name,
                labels: record.map(|r| r.labels).unwrap_or_default(),
            }),
        }))
    }

    async fn list(&self, _request: Request<ListNamespacesRequest>) -> Result<Response<ListNamespacesResponse>, Status> {
        let records = self.store.read(namespaces::list).await?;
        let namespaces = records
            .into_iter()
            .map(|(name, record)| Namespace {
                name,
                labels: record.labels,
            })
            .collect();
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn create(
        &self,
        request: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let publish_in = namespace_header::optional(&request);
        let namespace = request
            .into_inner()
            .namespace
            .ok_or_else(|| Error::invalid_argument("namespace must be set"))?;
        let (name, labels) = (namespace.name.clone(), namespace.labels);
        let record = self
            .store
            .write(move |txn| namespaces::create(txn, &name, labels))
            .await?;
        let name = namespace.name;
        tracing::info!(namespace = %name, "namespace created");
        publish(
            &self.events,
            publish_in.as_deref().unwrap_or(&name),
            "/namespaces/create",
            &NamespaceCreate {
                name: name.clone(),
                labels: record.labels.clone(),
            },
        );
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(Namespace {
                name,
                labels: record.labels,
            }),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let publish_in = namespace_header::optional(&request);
        let request = request.into_inner();
        let namespace = request
            .namespace
            .ok_or_else(|| Error::invalid_argument("namespace must be set"))?;
        let name = namespace.name;
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let update = LabelUpdate::from_mask(&format!("namespace {name:?}"), namespace.labels, &paths)?;
        let target = name.clone();
        let record = self
            .store
            .write(move |txn| namespaces::update_labels(txn, &target, update))
            .await?;
        publish(
            &self.events,
            publish_in.as_deref().unwrap_or(&name),
            "/namespaces/update",
            &NamespaceUpdate {
                name: name.clone(),
                labels: record.labels.clone(),
            },
        );
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(Namespace {
                name,
                labels: record.labels,
            }),
        }))
    }

    async fn delete(&self, request: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        let name = request.into_inner().name;
        let target = name.clone();
        self.store.write(move |txn| namespaces::delete(txn, &target)).await?;
        tracing::info!(namespace = %name, "namespace deleted");
        // The delete event belongs to the namespace that went away.
        publish(
            &self.events,
            &name,
            "/namespaces/delete",
            &NamespaceDelete { name: name.clone() },
        );
        Ok(Response::new(()))
    }
}

/// `io.containerd.grpc.v1.namespaces`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "namespaces",
        requires: &[types::METADATA, types::EVENT],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let store: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let events: Arc<Exchange> = ctx.get(types::EVENT)?;
                routed_service!(
                    ctx,
                    NamespacesServer::new(NamespacesService::new((*store).clone(), events)),
                    namespace_optional
                )
            })
        }),
    }
}
