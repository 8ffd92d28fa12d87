//! Transfer: moves images between a source and a destination named by
//! `containerd.types.transfer` messages, in the daemon, as containerd 1.7+
//! does; clients in any language pull with one call.
//!
//! Served: OCIRegistry → ImageStore (pull, with unpack), ImageStore →
//! OCIRegistry (push), ImageImportStream → ImageStore (import of an
//! archive the client streams) and ImageStore → ImageExportStream (export).
//! Progress goes back over the Streaming stream the options name; a
//! resolver's `auth_stream` is asked for credentials when a registry
//! challenges; archives travel over their own streams.

use std::sync::Arc;

use berth_api::any::{self, type_name};
use berth_api::containerd::services::transfer::v1::TransferRequest;
use berth_api::containerd::services::transfer::v1::transfer_server::{Transfer, TransferServer};
use berth_api::containerd::types::transfer::{
    AuthRequest, AuthResponse, AuthType, ImageExportStream, ImageImportStream, ImageStore, OciRegistry,
};
use berth_core::content::ContentStore;
use berth_core::content::namespaced::NamespacedContent;
use berth_core::events::Exchange;
use berth_core::gc::GarbageCollector;
use berth_core::metadata::MetadataStore;
use berth_core::plugin::{Registration, types};
use berth_core::registry::auth::{Anonymous, Chain, CredentialsFuture, DockerConfig};
use berth_core::registry::{CredentialSource, Credentials};
use berth_core::snapshots::namespaced::NamespacedSnapshots;
use berth_core::transfer::{
    ExportRequest, Exporter, ImportRequest, Importer, LocalTransfer, ProgressSink, PullRequest, Puller, PushRequest,
    Pusher, Unpacker,
};
use berth_core::{Error, ErrorKind};
use tonic::{Request, Response, Status};

use crate::byte_stream;
use crate::namespace_header::{namespace_required, required};
use crate::streaming::{StreamHandle, Streams};

const OCI_REGISTRY: &str = "containerd.types.transfer.OCIRegistry";
const IMAGE_STORE: &str = "containerd.types.transfer.ImageStore";
const IMPORT_STREAM: &str = "containerd.types.transfer.ImageImportStream";
const EXPORT_STREAM: &str = "containerd.types.transfer.ImageExportStream";

/// Answers the Transfer service.
#[derive(Debug)]
pub struct TransferService {
    puller: Arc<Puller>,
    pusher: Arc<Pusher>,
    importer: Arc<Importer>,
    exporter: Arc<Exporter>,
    streams: Arc<Streams>,
    docker_config: Option<Arc<DockerConfig>>,
    collector: GarbageCollector,
}

impl TransferService {
    /// A service pulling with `puller`, reaching clients' streams in
    /// `streams`, with credentials from `docker_config` where given.
    pub fn new(transfer: &LocalTransfer, streams: Arc<Streams>, docker_config: Option<Arc<DockerConfig>>) -> Self {
        Self {
            puller: Arc::clone(&transfer.puller),
            pusher: Arc::clone(&transfer.pusher),
            importer: Arc::clone(&transfer.importer),
            exporter: Arc::clone(&transfer.exporter),
            streams,
            docker_config,
            collector: transfer.collector.clone(),
        }
    }

    /// The credentials and headers a resolver names.
    async fn resolver_parts(
        &self,
        namespace: &str,
        resolver: &berth_api::containerd::types::transfer::RegistryResolver,
    ) -> Result<(Arc<dyn CredentialSource>, Vec<(String, String)>), Error> {
        let mut sources: Vec<Arc<dyn CredentialSource>> = Vec::new();
        if !resolver.auth_stream.is_empty() {
            let stream = self.streams.take(namespace, &resolver.auth_stream).await?;
            sources.push(Arc::new(StreamCredentials {
                stream,
                turn: tokio::sync::Mutex::new(()),
            }));
        }
        if let Some(config) = &self.docker_config {
            sources.push(Arc::clone(config) as Arc<dyn CredentialSource>);
        }
        let credentials: Arc<dyn CredentialSource> = if sources.is_empty() {
            Arc::new(Anonymous)
        } else {
            Arc::new(Chain(sources))
        };
        let mut headers: Vec<(String, String)> = resolver.headers.clone().into_iter().collect();
        headers.sort();
        if !matches!(resolver.default_scheme.as_str(), "" | "http" | "https") {
            return Err(Error::invalid_argument(format!(
                "resolver default_scheme {:?} is neither http nor https",
                resolver.default_scheme
            )));
        }
        Ok((credentials, headers))
    }

    async fn push(
        &self,
        namespace: String,
        source: &prost_types::Any,
        destination: &prost_types::Any,
        progress: ProgressSink,
    ) -> Result<(), Error> {
        let store: ImageStore = decode(source, "source", IMAGE_STORE)?;
        let registry: OciRegistry = decode(destination, "destination", OCI_REGISTRY)?;
        if registry.reference.is_empty() {
            return Err(Error::invalid_argument(
                "destination OCIRegistry: the reference must be set",
            ));
        }
        if store.name.is_empty() {
            return Err(Error::invalid_argument("source ImageStore: the image name must be set"));
        }
        let resolver = registry.resolver.unwrap_or_default();
        let (credentials, headers) = self.resolver_parts(&namespace, &resolver).await?;
        let request = PushRequest {
            namespace,
            image: store.name,
            reference: registry.reference,
            platforms: store.platforms,
            default_scheme: resolver.default_scheme,
            headers,
            credentials,
        };
        self.pusher.push(request, progress).await.map(|_| ())
    }

    async fn import(
        &self,
        namespace: String,
        source: &prost_types::Any,
        destination: &prost_types::Any,
        progress: ProgressSink,
    ) -> Result<(), Error> {
        let archive: ImageImportStream = decode(source, "source", IMPORT_STREAM)?;
        let store: ImageStore = decode(destination, "destination", IMAGE_STORE)?;
        if archive.stream.is_empty() {
            return Err(Error::invalid_argument(
                "source ImageImportStream: the stream must be set",
            ));
        }
        let stream = self.streams.take(&namespace, &archive.stream).await?;
        let (reader, pump) = byte_stream::receive(stream);
        let request = ImportRequest {
            namespace,
            force_compress: archive.force_compress,
            store,
        };
        let outcome = self.importer.import(request, reader, progress).await;
        // Whatever the client still sends is not wanted now.
        pump.abort();
        outcome.map(|_| ())
    }

    async fn export(
        &self,
        namespace: String,
        source: &prost_types::Any,
        destination: &prost_types::Any,
        progress: ProgressSink,
    ) -> Result<(), Error> {
        let store: ImageStore = decode(source, "source", IMAGE_STORE)?;
        let archive: ImageExportStream = decode(destination, "destination", EXPORT_STREAM)?;
        if archive.stream.is_empty() {
            return Err(Error::invalid_argument(
                "destination ImageExportStream: the stream must be set",
            ));
        }
        let mut images = Vec::new();
        if !store.name.is_empty() {
            images.push(store.name.clone());
        }
        for reference in &store.extra_references {
            if reference.is_prefix {
                return Err(Error::not_implemented(format!(
                    "source ImageStore: export of the images under prefix {:?}",
                    reference.name
                )));
            }
            images.push(reference.name.clone());
        }
        if images.is_empty() {
            return Err(Error::invalid_argument("source ImageStore: name the image to export"));
        }
        let stream = self.streams.take(&namespace, &archive.stream).await?;
        let request = ExportRequest {
            namespace,
            images,
            platforms: archive.platforms,
            all_platforms: archive.all_platforms,
            skip_compatibility_manifest: archive.skip_compatibility_manifest,
            skip_non_distributable: archive.skip_non_distributable,
        };
        let event = |text: &str| {
            progress(berth_api::containerd::types::transfer::Progress {
                event: text.to_string(),
                ..Default::default()
            })
        };
        event("Exporting");
        let (chunks, receiver) = tokio::sync::mpsc::channel(8);
        let (written, sent) = tokio::join!(
            self.exporter.export(request, chunks),
            byte_stream::send(&stream, receiver)
        );
        written?;
        sent?;
        event("Completed export");
        Ok(())
    }

    async fn pull(
        &self,
        namespace: String,
        source: &prost_types::Any,
        destination: &prost_types::Any,
        progress: ProgressSink,
    ) -> Result<(), Error> {
        let registry: OciRegistry = decode(source, "source", OCI_REGISTRY)?;
        let store: ImageStore = decode(destination, "destination", IMAGE_STORE)?;
        if registry.reference.is_empty() {
            return Err(Error::invalid_argument("source OCIRegistry: the reference must be set"));
        }
        let resolver = registry.resolver.unwrap_or_default();
        let (credentials, headers) = self.resolver_parts(&namespace, &resolver).await?;
        let request = PullRequest {
            namespace,
            reference: registry.reference,
            name: store.name,
            labels: store.labels,
            platforms: store.platforms,
            unpacks: store
                .unpacks
                .into_iter()
                .map(|u| {
                    (
                        u.platform.unwrap_or_else(berth_core::transfer::platform::host),
                        u.snapshotter,
                    )
                })
                .collect(),
            default_scheme: resolver.default_scheme,
            headers,
            credentials,
        };
        self.puller.pull(request, progress).await.map(|_| ())
    }
}

#[tonic::async_trait]
impl Transfer for TransferService {
    async fn transfer(&self, request: Request<TransferRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let source = request
            .source
            .ok_or_else(|| Error::invalid_argument("the transfer's source must be set"))?;
        let destination = request
            .destination
            .ok_or_else(|| Error::invalid_argument("the transfer's destination must be set"))?;
        let progress_stream = request.options.map(|o| o.progress_stream).unwrap_or_default();
        let progress_handle = if progress_stream.is_empty() {
            None
        } else {
            Some(self.streams.take(&namespace, &progress_stream).await?)
        };
        let progress: ProgressSink = match &progress_handle {
            Some(handle) => {
                let handle = Arc::clone(handle);
                Arc::new(move |p| {
                    handle.send(any::pack(&p));
                })
            }
            None => Arc::new(|_| {}),
        };
        // A transfer that fails or is dropped half-way has released the
        // lease over what it wrote; a pass frees that now, not at the next
        // deletion.
        let unfinished = CollectUnlessFinished(Some(self.collector.clone()));
        let (from, to) = (type_name(&source.type_url), type_name(&destination.type_url));
        let outcome = match (from, to) {
            (OCI_REGISTRY, IMAGE_STORE) => self.pull(namespace, &source, &destination, progress).await,
            (IMAGE_STORE, OCI_REGISTRY) => self.push(namespace, &source, &destination, progress).await,
            (IMPORT_STREAM, IMAGE_STORE) => self.import(namespace, &source, &destination, progress).await,
            (IMAGE_STORE, EXPORT_STREAM) => self.export(namespace, &source, &destination, progress).await,
            _ => Err(Error::not_implemented(format!(
                "transfer from {from} to {to} is not supported"
            ))),
        };
        // Dropping the handle ends the progress stream for the client.
        drop(progress_handle);
        outcome?;
        unfinished.finished();
        Ok(Response::new(()))
    }
}

/// Schedules a garbage collection pass when dropped before
/// [`CollectUnlessFinished::finished`].
struct CollectUnlessFinished(Option<GarbageCollector>);

impl CollectUnlessFinished {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for CollectUnlessFinished {
    fn drop(&mut self) {
        if let Some(collector) = self.0.take() {
            collector.schedule();
        }
    }
}

/// The `role` (source or destination) of a transfer as its `type_name`.
fn decode<M: prost::Message + Default>(any: &prost_types::Any, role: &str, type_name: &str) -> Result<M, Error> {
    M::decode(any.value.as_slice()).map_err(|e| Error::invalid_argument(format!("{role} {type_name}: {e}")))
}

/// Credentials asked of the client over its auth stream, one question at
/// a time.
struct StreamCredentials {
    stream: Arc<StreamHandle>,
    turn: tokio::sync::Mutex<()>,
}

impl CredentialSource for StreamCredentials {
    fn credentials<'a>(&'a self, host: &'a str, reference: &'a str, challenges: &'a [String]) -> CredentialsFuture<'a> {
        Box::pin(async move {
            let _turn = self.turn.lock().await;
            let question = AuthRequest {
                host: host.to_string(),
                reference: reference.to_string(),
                wwwauthenticate: challenges.to_vec(),
            };
            if !self.stream.send(any::pack(&question)) {
                return Err(Error::unavailable(format!(
                    "the auth stream {:?} is closed",
                    self.stream.id
                )));
            }
            let answer =
                self.stream.recv().await.ok_or_else(|| {
                    Error::unavailable(format!("the auth stream {:?} closed unanswered", self.stream.id))
                })?;
            let answer: AuthResponse = any::unpack(&answer).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "the auth stream answered {}, not an AuthResponse",
                    type_name(&answer.type_url)
                ))
            })?;
            Ok(match AuthType::try_from(answer.auth_type).unwrap_or(AuthType::None) {
                AuthType::None => None,
                AuthType::Credentials => Some(Credentials::Basic {
                    username: answer.username,
                    secret: answer.secret,
                }),
                AuthType::Refresh => Some(Credentials::Refresh(answer.secret)),
                AuthType::Header => Some(Credentials::Header(answer.secret)),
            })
        })
    }
}

/// `io.containerd.transfer.v1.local`: the puller, over the daemon's stores.
pub fn local_registration() -> Registration {
    Registration {
        plugin_type: types::TRANSFER,
        id: "local",
        requires: &[types::METADATA, types::CONTENT, types::GC, types::EVENT, types::DIFFER],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let store: Arc<ContentStore> = ctx.get(types::CONTENT)?;
                let gc: Arc<GarbageCollector> = ctx.get(types::GC)?;
                let events: Arc<Exchange> = ctx.get(types::EVENT)?;
                let differs = berth_core::diff::loaded(&ctx.plugins());
                let content = NamespacedContent::new(store, (*meta).clone());
                let snapshots = NamespacedSnapshots::new((*meta).clone(), Arc::clone(gc.snapshotters()));
                let config = ctx.daemon.registry.clone();
                let unpacker = Unpacker::new(content.clone(), snapshots, differs);
                let downloads = config.max_concurrent_downloads;
                let pusher = Pusher::new(content.clone(), (*meta).clone(), config.clone());
                let importer = Importer::new(content.clone(), unpacker.clone(), (*meta).clone(), Arc::clone(&events));
                let exporter = Exporter::new(content.clone(), (*meta).clone());
                let puller = Puller::new(content, unpacker, (*meta).clone(), events, config, downloads);
                let transfer = LocalTransfer {
                    puller: Arc::new(puller),
                    pusher: Arc::new(pusher),
                    importer: Arc::new(importer),
                    exporter: Arc::new(exporter),
                    collector: (*gc).clone(),
                };
                Ok(Arc::new(transfer) as berth_core::plugin::Instance)
            })
        }),
    }
}

/// `io.containerd.grpc.v1.transfer`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "transfer",
        requires: &[types::TRANSFER, types::STREAMING],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let transfer: Arc<LocalTransfer> = ctx.get(types::TRANSFER)?;
                let streams: Arc<Streams> = ctx.get(types::STREAMING)?;
                let docker_config = match &ctx.daemon.registry.docker_config {
                    Some(path) => Some(Arc::new(DockerConfig::load(path).map_err(|e| {
                        Error::new(ErrorKind::InvalidArgument, format!("registry docker_config: {e}"))
                    })?)),
                    None => None,
                };
                routed_service!(
                    ctx,
                    TransferServer::new(TransferService::new(&transfer, streams, docker_config)),
                    namespace_required
                )
            })
        }),
    }
}
