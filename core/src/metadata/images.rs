//! Image records: a name pointing at a root descriptor in the content store.

use berth_api::containerd::services::images::v1::Image;
use berth_api::containerd::types::Descriptor;
use redb::{ReadTransaction, WriteTransaction};

use super::records::Records;
use super::{namespaces, store_error};
use crate::content::Digest;
use crate::error::{Error, Result};
use crate::labels::{self, LabelUpdate};
use crate::timestamps;

/// (namespace, name) -> `containerd.services.images.v1.Image`.
pub(crate) const IMAGES: Records<Image> = Records::new("images", "image");

fn not_found(name: &str) -> Error {
    Error::not_found(format!("image {name:?}"))
}

/// Checks what every stored image must have: a name and a valid target.
pub fn validate(image: &Image) -> Result<()> {
    let name = &image.name;
    if name.is_empty() {
        return Err(Error::invalid_argument("image name must not be empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid_argument(format!(
            "image name {name:?} must not contain control characters"
        )));
    }
    let context = |e: Error| e.with_context(format!("image {name:?}"));
    labels::validate_all(&image.labels).map_err(context)?;
    let target = image
        .target
        .as_ref()
        .ok_or_else(|| Error::invalid_argument(format!("image {name:?}: target must be set")))?;
    Digest::parse(&target.digest).map_err(|e| context(e.with_context("target")))?;
    if target.size <= 0 {
        return Err(Error::invalid_argument(format!(
            "image {name:?}: target size must be greater than zero"
        )));
    }
    if target.media_type.is_empty() {
        return Err(Error::invalid_argument(format!(
            "image {name:?}: target media type must be set"
        )));
    }
    labels::validate_all(&target.annotations).map_err(|e| context(e.with_context("target annotation")))?;
    Ok(())
}

/// One image.
pub fn get(txn: &ReadTransaction, namespace: &str, name: &str) -> Result<Option<Image>> {
    let table = txn.open_table(IMAGES.def).map_err(store_error)?;
    IMAGES.get(&table, namespace, name)
}

/// Every image of a namespace, in name order.
pub fn list(txn: &ReadTransaction, namespace: &str) -> Result<Vec<Image>> {
    let table = txn.open_table(IMAGES.def).map_err(store_error)?;
    Ok(IMAGES
        .list(&table, namespace)?
        .into_iter()
        .map(|(_, image)| image)
        .collect())
}

/// Stores a new image; AlreadyExists when the name is taken.
pub fn create(txn: &WriteTransaction, namespace: &str, mut image: Image) -> Result<Image> {
    validate(&image)?;
    namespaces::ensure(txn, namespace)?;
    {
        let table = txn.open_table(IMAGES.def).map_err(store_error)?;
        if IMAGES.get(&table, namespace, &image.name)?.is_some() {
            return Err(Error::already_exists(format!("image {:?}", image.name)));
        }
    }
    let now = timestamps::now();
    image.created_at = Some(now);
    image.updated_at = Some(now);
    image.labels = labels::without_empty(image.labels);
    IMAGES.put(txn, namespace, &image.name.clone(), &image)?;
    Ok(image)
}

/// Changes an image as the field mask says (`labels`, `labels.<k>`,
/// `target`, `annotations`, `annotations.<k>`; empty = all of them).
pub fn update(txn: &WriteTransaction, namespace: &str, image: Image, paths: &[String]) -> Result<Image> {
    let name = image.name.clone();
    if name.is_empty() {
        return Err(Error::invalid_argument("image name is required for update"));
    }
    let mut updated = {
        let table = txn.open_table(IMAGES.def).map_err(store_error)?;
        IMAGES.get(&table, namespace, &name)?.ok_or_else(|| not_found(&name))?
    };
    let created_at = updated.created_at;
    if paths.is_empty() {
        updated = image;
    } else {
        let mut label_keys = Vec::new();
        for path in paths {
            if let Some(key) = path.strip_prefix("labels.") {
                label_keys.push((key.to_string(), image.labels.get(key).cloned().unwrap_or_default()));
                continue;
            }
            if let Some(key) = path.strip_prefix("annotations.") {
                let value = image
                    .target
                    .as_ref()
                    .and_then(|t| t.annotations.get(key).cloned())
                    .unwrap_or_default();
                let target = updated.target.get_or_insert_with(Descriptor::default);
                if value.is_empty() {
                    target.annotations.remove(key);
                } else {
                    target.annotations.insert(key.to_string(), value);
                }
                continue;
            }
            match path.as_str() {
                "labels" => updated.labels = image.labels.clone(),
                "target" => updated.target = image.target.clone(),
                "annotations" => {
                    let annotations = image.target.as_ref().map(|t| t.annotations.clone()).unwrap_or_default();
                    updated.target.get_or_insert_with(Descriptor::default).annotations = annotations;
                }
                _ => {
                    return Err(Error::invalid_argument(format!(
                        "image {name:?}: cannot update {path:?} field"
                    )));
                }
            }
        }
        LabelUpdate::Keys(label_keys)
            .apply(&mut updated.labels)
            .map_err(|e| e.with_context(format!("image {name:?}")))?;
    }
    updated.name = name.clone();
    updated.labels = labels::without_empty(std::mem::take(&mut updated.labels));
    validate(&updated)?;
    updated.created_at = created_at;
    updated.updated_at = Some(timestamps::now());
    IMAGES.put(txn, namespace, &name, &updated)?;
    Ok(updated)
}

/// Removes an image; NotFound when there is none.
pub fn delete(txn: &WriteTransaction, namespace: &str, name: &str) -> Result<Image> {
    IMAGES.remove(txn, namespace, name)?.ok_or_else(|| not_found(name))
}
