//! What event filters can look at: `namespace`, `topic` and `event.<path>`.
//!
//! `event.<path>` reads the event body, which is only known by its Any type
//! name; the body is decoded through the descriptor pool of berth's protos.
//! As in containerd, string fields are present when non-empty, string maps
//! are indexed by the rest of the path (`event.labels.a`), nested messages
//! are followed, and other field types are never present.

use std::borrow::Cow;

use berth_api::any::decode_dynamic;
use berth_api::containerd::services::events::v1::Envelope;
use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use crate::filters::{Adaptor, string_field};

/// An envelope seen through a filter; decodes the body at most once.
pub(super) struct EnvelopeFields<'a> {
    envelope: &'a Envelope,
    body: std::cell::OnceCell<Option<DynamicMessage>>,
}

impl<'a> EnvelopeFields<'a> {
    pub(super) fn new(envelope: &'a Envelope) -> Self {
        Self {
            envelope,
            body: std::cell::OnceCell::new(),
        }
    }

    fn body(&self) -> Option<&DynamicMessage> {
        self.body
            .get_or_init(|| self.envelope.event.as_ref().and_then(decode_dynamic))
            .as_ref()
    }
}

impl Adaptor for EnvelopeFields<'_> {
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        match path.first()?.as_str() {
            "namespace" => string_field(&self.envelope.namespace),
            "topic" => string_field(&self.envelope.topic),
            "event" => message_field(self.body()?, &path[1..]).map(Cow::Owned),
            _ => None,
        }
    }
}

fn message_field(message: &DynamicMessage, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let descriptor = message.descriptor().get_field_by_name(first)?;
    let value = message.get_field(&descriptor);
    match value.as_ref() {
        Value::String(s) if rest.is_empty() => (!s.is_empty()).then(|| s.clone()),
        Value::Message(inner) if !rest.is_empty() => {
            // An unset message field reads as absent, not as its defaults.
            if !message.has_field(&descriptor) {
                return None;
            }
            message_field(inner, rest)
        }
        Value::Map(map) if !rest.is_empty() => {
            let key = prost_reflect::MapKey::String(rest.join("."));
            match map.get(&key)? {
                Value::String(s) => Some(s.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::any::pack;
    use berth_api::containerd::events::{ContainerCreate, NamespaceCreate, TaskExit, container_create};

    fn fields_of(envelope: &Envelope, path: &str) -> Option<String> {
        let path: Vec<String> = path.split('.').map(str::to_string).collect();
        EnvelopeFields::new(envelope).field(&path).map(|v| v.into_owned())
    }

    fn envelope(event: prost_types::Any) -> Envelope {
        Envelope {
            timestamp: None,
            namespace: "default".into(),
            topic: "/x".into(),
            event: Some(event),
        }
    }

    #[test]
    fn envelope_fields() {
        let e = envelope(pack(&TaskExit::default()));
        assert_eq!(fields_of(&e, "namespace").as_deref(), Some("default"));
        assert_eq!(fields_of(&e, "topic").as_deref(), Some("/x"));
        assert_eq!(fields_of(&e, "timestamp"), None);
    }

    #[test]
    fn event_strings_maps_and_nested_messages() {
        let e = envelope(pack(&NamespaceCreate {
            name: "n1".into(),
            labels: [("a.b".to_string(), "c".to_string())].into(),
        }));
        assert_eq!(fields_of(&e, "event.name").as_deref(), Some("n1"));
        assert_eq!(fields_of(&e, "event.labels.a.b").as_deref(), Some("c"));
        assert_eq!(fields_of(&e, "event.labels.x"), None);
        assert_eq!(fields_of(&e, "event.nope"), None);
        let e = envelope(pack(&ContainerCreate {
            id: "c1".into(),
            image: String::new(),
            runtime: Some(container_create::Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
        }));
        assert_eq!(
            fields_of(&e, "event.runtime.name").as_deref(),
            Some("io.containerd.runc.v2")
        );
        assert_eq!(fields_of(&e, "event.image"), None, "empty strings are absent");
        let no_runtime = envelope(pack(&ContainerCreate::default()));
        assert_eq!(fields_of(&no_runtime, "event.runtime.name"), None);
    }

    #[test]
    fn numbers_and_unknown_bodies_are_absent() {
        let e = envelope(pack(&TaskExit {
            container_id: "c".into(),
            pid: 7,
            ..Default::default()
        }));
        assert_eq!(fields_of(&e, "event.pid"), None);
        assert_eq!(fields_of(&e, "event.container_id").as_deref(), Some("c"));
        let unknown = envelope(prost_types::Any {
            type_url: "example.Unknown".into(),
            value: vec![1, 2, 3],
        });
        assert_eq!(fields_of(&unknown, "event.x"), None);
    }
}
