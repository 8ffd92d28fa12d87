//! Events: publish, forward and subscribe (`ctr events`), over the exchange.

use std::pin::Pin;
use std::sync::Arc;

use berth_api::any::type_name;
use berth_api::containerd::services::events::v1::events_server::{Events, EventsServer};
use berth_api::containerd::services::events::v1::{Envelope, ForwardRequest, PublishRequest, SubscribeRequest};
use berth_core::Error;
use berth_core::events::Exchange;
use berth_core::filters::Filter;
use berth_core::plugin::{Registration, types};
use futures_util::{Stream, StreamExt};
use prost_types::Any;
use tonic::{Request, Response, Status};

use crate::namespace_header::{self, namespace_optional};

/// Answers the Events service.
#[derive(Debug)]
pub struct EventsService {
    exchange: Arc<Exchange>,
}

impl EventsService {
    /// A service over `exchange`.
    pub fn new(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }
}

/// Rewrites a `type.googleapis.com/` type URL to the bare name every Go
/// client can decode.
fn normalise(mut event: Any) -> Any {
    let bare = type_name(&event.type_url);
    if bare.len() != event.type_url.len() {
        event.type_url = bare.to_string();
    }
    event
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let namespace = namespace_header::required(&request)?;
        let request = request.into_inner();
        let event = request
            .event
            .ok_or_else(|| Error::invalid_argument(format!("event on {:?} must be set", request.topic)))?;
        self.exchange
            .publish_any(&namespace, &request.topic, normalise(event))?;
        Ok(Response::new(()))
    }

    async fn forward(&self, request: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let mut envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| Error::invalid_argument("forward: envelope must be set"))?;
        envelope.event = envelope.event.map(normalise);
        self.exchange.forward(envelope)?;
        Ok(Response::new(()))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<SubscribeStream>, Status> {
        let filter = Filter::parse_all(&request.into_inner().filters)?;
        let stream = self.exchange.subscribe(filter).map(|item| match item {
            Ok(envelope) => Ok(Arc::unwrap_or_clone(envelope)),
            Err(e) => Err(Status::from(e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// `io.containerd.grpc.v1.events`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "events",
        requires: &[types::EVENT],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let exchange: Arc<Exchange> = ctx.get(types::EVENT)?;
                routed_service!(ctx, EventsServer::new(EventsService::new(exchange)), namespace_optional)
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_type_urls_become_bare_names() {
        let any = Any {
            type_url: "type.googleapis.com/containerd.events.TaskExit".into(),
            value: vec![],
        };
        assert_eq!(normalise(any).type_url, "containerd.events.TaskExit");
        let json = Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: vec![],
        };
        assert_eq!(normalise(json.clone()).type_url, json.type_url);
    }
}
