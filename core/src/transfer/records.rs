//! Image records a transfer leaves: created, or pointed at the new target
//! when the name exists, with the event containerd publishes for each.

use berth_api::containerd::services::images::v1::{Image, ImageCreate, ImageUpdate};

use crate::error::{ErrorKind, Result};
use crate::events::Exchange;
use crate::metadata::{MetadataStore, images};

/// Creates `image` in `ns`, or updates the record of that name; publishes
/// `/images/create` or `/images/update`.
pub(crate) async fn record_image(meta: &MetadataStore, events: &Exchange, ns: &str, image: Image) -> Result<Image> {
    let name = image.name.clone();
    let n = ns.to_string();
    let (stored, created) = meta
        .write(move |txn| match images::create(txn, &n, image.clone()) {
            Ok(image) => Ok((image, true)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => images::update(txn, &n, image, &[]).map(|i| (i, false)),
            Err(e) => Err(e),
        })
        .await?;
    let labels = stored.labels.clone();
    let published = if created {
        events.publish(ns, "/images/create", &ImageCreate { name, labels })
    } else {
        events.publish(ns, "/images/update", &ImageUpdate { name, labels })
    };
    if let Err(e) = published {
        tracing::warn!(error = %e, "publishing an image event failed");
    }
    Ok(stored)
}
