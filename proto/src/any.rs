//! `google.protobuf.Any` as containerd clients expect it.
//!
//! Go clients resolve an Any's type by the bare full name
//! (`containerd.events.TaskExit`); `ctr events` 1.6 cannot decode the
//! `type.googleapis.com/` form. So berth emits bare names and accepts both.

use std::sync::OnceLock;

use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use prost_types::Any;

/// The prefix some protobuf libraries put before a message's full name.
const GOOGLE_PREFIX: &str = "type.googleapis.com/";

/// The message name an Any type URL designates: the URL without the
/// `type.googleapis.com/` prefix. Other URLs (such as the JSON runtime-spec
/// types `types.containerd.io/opencontainers/runtime-spec/1/Spec`) are
/// returned unchanged, since their whole URL is the name.
pub fn type_name(type_url: &str) -> &str {
    type_url.strip_prefix(GOOGLE_PREFIX).unwrap_or(type_url)
}

/// Packs a message with its bare full name as the type URL.
pub fn pack<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::full_name(),
        value: message.encode_to_vec(),
    }
}

/// Unpacks `any` as `M`, or `None` when it names another type or does not decode.
pub fn unpack<M: Message + Name + Default>(any: &Any) -> Option<M> {
    if type_name(&any.type_url) != M::full_name() {
        return None;
    }
    M::decode(any.value.as_slice()).ok()
}

/// Every message type of this crate's protos, for decoding by name.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).expect("the descriptor set generated at build time decodes")
    })
}

/// Decodes an Any whose type is known to this crate into a dynamic message;
/// `None` when the type is unknown or the bytes do not decode.
pub fn decode_dynamic(any: &Any) -> Option<DynamicMessage> {
    let descriptor: MessageDescriptor = descriptor_pool().get_message_by_name(type_name(&any.type_url))?;
    DynamicMessage::decode(descriptor, any.value.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::events::NamespaceCreate;

    #[test]
    fn pack_uses_the_bare_full_name() {
        let any = pack(&NamespaceCreate {
            name: "n1".into(),
            labels: Default::default(),
        });
        assert_eq!(any.type_url, "containerd.events.NamespaceCreate");
    }

    #[test]
    fn unpack_accepts_both_url_forms() {
        let event = NamespaceCreate {
            name: "n1".into(),
            labels: [("a".to_string(), "b".to_string())].into(),
        };
        let mut any = pack(&event);
        assert_eq!(unpack::<NamespaceCreate>(&any), Some(event.clone()));
        any.type_url = format!("type.googleapis.com/{}", any.type_url);
        assert_eq!(unpack::<NamespaceCreate>(&any), Some(event));
    }

    #[test]
    fn unpack_refuses_another_type() {
        let any = pack(&NamespaceCreate::default());
        assert!(unpack::<crate::containerd::events::NamespaceDelete>(&any).is_none());
    }

    #[test]
    fn image_events_live_in_the_images_package() {
        use crate::containerd::services::images::v1::ImageCreate;
        assert_eq!(
            pack(&ImageCreate::default()).type_url,
            "containerd.services.images.v1.ImageCreate"
        );
    }

    #[test]
    fn dynamic_decoding_finds_fields_by_name() {
        let any = pack(&NamespaceCreate {
            name: "n1".into(),
            labels: Default::default(),
        });
        let message = decode_dynamic(&any).expect("known type");
        let name = message.get_field_by_name("name").expect("field");
        assert_eq!(name.as_str(), Some("n1"));
        let unknown = Any {
            type_url: "example.Unknown".into(),
            value: vec![],
        };
        assert!(decode_dynamic(&unknown).is_none());
    }
}
