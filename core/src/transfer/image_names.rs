//! The names an imported archive's images are stored under, by the rules of
//! containerd's image store: the archive's index under the store's name
//! (and its extra references), each manifest the index lists under the
//! name its annotations carry, as the store's prefix references allow.

use std::collections::HashMap;
use std::time::SystemTime;

use berth_api::containerd::services::images::v1::Image;
use berth_api::containerd::types::Descriptor;
use berth_api::containerd::types::transfer::{ImageReference, ImageStore};

/// containerd's annotation with an image's full name.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation with an image's tag (or full name).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// The images to record for the archive's index `index`.
pub fn for_index(store: &ImageStore, index: &Descriptor) -> Vec<Image> {
    let mut images = Vec::new();
    if !store.name.is_empty() {
        images.push(image(&store.name, index, store.labels.clone()));
    }
    for reference in &store.extra_references {
        if reference.is_prefix && !reference.add_digest {
            continue;
        }
        let name = if reference.add_digest {
            format!("{}@{}", reference.name, index.digest)
        } else {
            reference.name.clone()
        };
        images.push(image(&name, index, extra_labels(store)));
    }
    images
}

/// The images to record for `manifest`, an entry of the archive's index.
pub fn for_entry(store: &ImageStore, manifest: &Descriptor) -> Vec<Image> {
    let mut images = Vec::new();
    for reference in store.extra_references.iter().filter(|r| r.is_prefix) {
        let digest_name = format!("{}@{}", reference.name, manifest.digest);
        match annotated_name(&manifest.annotations, reference) {
            None => {
                if reference.add_digest {
                    images.push(image(&digest_name, manifest, extra_labels(store)));
                }
            }
            Some(name) => {
                images.push(image(&name, manifest, extra_labels(store)));
                if reference.add_digest && !reference.skip_named_digest {
                    images.push(image(&digest_name, manifest, extra_labels(store)));
                }
            }
        }
    }
    images
}

fn image(name: &str, target: &Descriptor, labels: HashMap<String, String>) -> Image {
    Image {
        name: name.to_string(),
        labels,
        target: Some(target.clone()),
        created_at: None,
        updated_at: None,
    }
}

/// Labels of the images named by extra references: when the store names
/// the index too, they are tied to that image and expire with it.
fn extra_labels(store: &ImageStore) -> HashMap<String, String> {
    let mut labels = store.labels.clone();
    if !store.name.is_empty() {
        labels.insert("containerd.io/gc.bref.image".into(), store.name.clone());
        labels.insert(
            "containerd.io/gc.expire".into(),
            crate::timestamps::format_rfc3339(SystemTime::now()),
        );
    }
    labels
}

/// The name an entry's annotations give it under prefix `reference`: the
/// full name when it is one the prefix allows, else the tag appended to
/// the prefix.
fn annotated_name(annotations: &HashMap<String, String>, reference: &ImageReference) -> Option<String> {
    let translate = |name: &str| translated(&reference.name, name, !reference.allow_overwrite);
    if let Some(full) = annotations.get(IMAGE_NAME_ANNOTATION).filter(|n| !n.is_empty()) {
        // A full name is used as it is, or not at all.
        return (translate(full).as_deref() == Some(full.as_str())).then(|| full.clone());
    }
    annotations
        .get(REF_NAME_ANNOTATION)
        .filter(|n| !n.is_empty())
        .and_then(|name| translate(name))
}

/// `name` under `prefix`: a bare tag is appended to it; a full name is kept
/// (when `check_prefix`, only if it lies under the prefix).
fn translated(prefix: &str, name: &str, check_prefix: bool) -> Option<String> {
    if prefix.is_empty() {
        return None;
    }
    if name.contains(['/', ':', '@']) {
        if check_prefix && !lies_under(name, prefix) {
            return None;
        }
        return Some(name.to_string());
    }
    Some(format!("{prefix}:{name}"))
}

fn lies_under(name: &str, prefix: &str) -> bool {
    match name.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(['/', ':', '@']),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(annotations: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: "sha256:aa".into(),
            size: 1,
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn prefix(name: &str, allow_overwrite: bool, add_digest: bool) -> ImageReference {
        ImageReference {
            name: name.into(),
            is_prefix: true,
            allow_overwrite,
            add_digest,
            skip_named_digest: false,
        }
    }

    fn names(images: Vec<Image>) -> Vec<String> {
        images.into_iter().map(|i| i.name).collect()
    }

    #[test]
    fn a_tag_is_appended_to_the_prefix_and_a_full_name_must_lie_under_it() {
        let store = ImageStore {
            extra_references: vec![prefix("example.com/app", false, false)],
            ..Default::default()
        };
        assert_eq!(
            names(for_entry(&store, &entry(&[(REF_NAME_ANNOTATION, "v1")]))),
            ["example.com/app:v1"]
        );
        let inside = entry(&[(IMAGE_NAME_ANNOTATION, "example.com/app:v2")]);
        assert_eq!(names(for_entry(&store, &inside)), ["example.com/app:v2"]);
        let outside = entry(&[(IMAGE_NAME_ANNOTATION, "docker.io/library/busybox:latest")]);
        assert!(for_entry(&store, &outside).is_empty());
        let overwrite = ImageStore {
            extra_references: vec![prefix("example.com/app", true, false)],
            ..Default::default()
        };
        assert_eq!(
            names(for_entry(&overwrite, &outside)),
            ["docker.io/library/busybox:latest"]
        );
    }

    #[test]
    fn digest_references_name_unnamed_entries_and_the_index() {
        let store = ImageStore {
            name: "index".into(),
            extra_references: vec![prefix("import", false, true)],
            ..Default::default()
        };
        assert_eq!(names(for_entry(&store, &entry(&[]))), ["import@sha256:aa"]);
        assert_eq!(
            names(for_entry(&store, &entry(&[(REF_NAME_ANNOTATION, "v1")]))),
            ["import:v1", "import@sha256:aa"]
        );
        assert_eq!(names(for_index(&store, &entry(&[]))), ["index", "import@sha256:aa"]);
        let labels = &for_entry(&store, &entry(&[]))[0].labels;
        assert_eq!(
            labels.get("containerd.io/gc.bref.image").map(String::as_str),
            Some("index")
        );
    }
}
