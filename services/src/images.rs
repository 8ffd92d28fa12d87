//! Images: named pointers to root descriptors (`ctr images`, import, pull).

use std::borrow::Cow;
use std::sync::Arc;

use berth_api::containerd::services::images::v1::images_server::{Images, ImagesServer};
use berth_api::containerd::services::images::v1::{
    CreateImageRequest, CreateImageResponse, DeleteImageRequest, GetImageRequest, GetImageResponse, Image, ImageCreate,
    ImageDelete, ImageUpdate, ListImagesRequest, ListImagesResponse, UpdateImageRequest, UpdateImageResponse,
};
use berth_core::Error;
use berth_core::events::Exchange;
use berth_core::filters::{Adaptor, Filter, label_field, string_field};
use berth_core::gc::GarbageCollector;
use berth_core::metadata::{MetadataStore, images};
use berth_core::plugin::{Registration, types};
use tonic::{Request, Response, Status};

use crate::namespace_header::{namespace_required, required};
use crate::publish;

/// Answers the Images service from the metadata store.
#[derive(Debug)]
pub struct ImagesService {
    meta: MetadataStore,
    events: Arc<Exchange>,
    gc: GarbageCollector,
}

impl ImagesService {
    /// A service over `meta`, publishing on `events`, collecting with `gc`.
    pub fn new(meta: MetadataStore, events: Arc<Exchange>, gc: GarbageCollector) -> Self {
        Self { meta, events, gc }
    }
}

/// Filter fields of an image: `name`, `target.digest`, `target.mediatype`,
/// `labels.<k>` and `annotations.<k>`, as containerd offers.
struct ImageFields<'a>(&'a Image);

impl Adaptor for ImageFields<'_> {
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        let image = self.0;
        match path.first()?.as_str() {
            "name" => string_field(&image.name),
            "target" => {
                let target = image.target.as_ref()?;
                match path.get(1)?.as_str() {
                    "digest" => string_field(&target.digest),
                    "mediatype" => string_field(&target.media_type),
                    _ => None,
                }
            }
            "labels" => label_field(&image.labels, &path[1..]),
            "annotations" => label_field(&image.target.as_ref()?.annotations, &path[1..]),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(&self, request: Request<GetImageRequest>) -> Result<Response<GetImageResponse>, Status> {
        let namespace = required(&request)?;
        let name = request.into_inner().name;
        let lookup = name.clone();
        let image = self
            .meta
            .read(move |txn| images::get(txn, &namespace, &lookup))
            .await?
            .ok_or_else(|| Error::not_found(format!("image {name:?}")))?;
        Ok(Response::new(GetImageResponse { image: Some(image) }))
    }

    async fn list(&self, request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        let namespace = required(&request)?;
        let filter = Filter::parse_all(&request.into_inner().filters)?;
        let all = self.meta.read(move |txn| images::list(txn, &namespace)).await?;
        let images = all.into_iter().filter(|i| filter.matches(&ImageFields(i))).collect();
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn create(&self, request: Request<CreateImageRequest>) -> Result<Response<CreateImageResponse>, Status> {
        let namespace = required(&request)?;
        let image = request
            .into_inner()
            .image
            .ok_or_else(|| Error::invalid_argument("image must be set"))?;
        let ns = namespace.clone();
        let image = self.meta.write(move |txn| images::create(txn, &ns, image)).await?;
        tracing::info!(namespace = %namespace, image = %image.name, "image created");
        publish(
            &self.events,
            &namespace,
            "/images/create",
            &ImageCreate {
                name: image.name.clone(),
                labels: image.labels.clone(),
            },
        );
        Ok(Response::new(CreateImageResponse { image: Some(image) }))
    }

    async fn update(&self, request: Request<UpdateImageRequest>) -> Result<Response<UpdateImageResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let image = request
            .image
            .ok_or_else(|| Error::invalid_argument("image must be set"))?;
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let ns = namespace.clone();
        let image = self
            .meta
            .write(move |txn| images::update(txn, &ns, image, &paths))
            .await?;
        publish(
            &self.events,
            &namespace,
            "/images/update",
            &ImageUpdate {
                name: image.name.clone(),
                labels: image.labels.clone(),
            },
        );
        Ok(Response::new(UpdateImageResponse { image: Some(image) }))
    }

    async fn delete(&self, request: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let (ns, name, target) = (namespace.clone(), request.name.clone(), request.target);
        self.meta
            .write(move |txn| {
                if let Some(want) = &target {
                    let current = images::delete(txn, &ns, &name)?;
                    if current.target.as_ref().map(|t| &t.digest) != Some(&want.digest) {
                        return Err(Error::failed_precondition(format!(
                            "image {name:?} no longer points at {}",
                            want.digest
                        )));
                    }
                    return Ok(());
                }
                images::delete(txn, &ns, &name).map(|_| ())
            })
            .await?;
        tracing::info!(namespace = %namespace, image = %request.name, "image deleted");
        publish(
            &self.events,
            &namespace,
            "/images/delete",
            &ImageDelete { name: request.name },
        );
        if request.sync {
            self.gc.collect().await?;
        } else {
            self.gc.schedule();
        }
        Ok(Response::new(()))
    }
}

/// `io.containerd.grpc.v1.images`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "images",
        requires: &[types::METADATA, types::GC, types::EVENT],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let gc: Arc<GarbageCollector> = ctx.get(types::GC)?;
                let events: Arc<Exchange> = ctx.get(types::EVENT)?;
                routed_service!(
                    ctx,
                    ImagesServer::new(ImagesService::new((*meta).clone(), events, (*gc).clone())),
                    namespace_required
                )
            })
        }),
    }
}
