//! The ttrpc `Events.Forward` endpoint shims send their events to
//! (`TTRPC_ADDRESS`, `<grpc address>.ttrpc`). Envelopes go into the same
//! exchange as the gRPC service's, so `ctr events` sees shim events.

use std::sync::Arc;

use berth_api::any::type_name;
use berth_api::containerd::services::events::ttrpc::v1::ForwardRequest;
use berth_api::containerd::services::events::ttrpc::v1::events_ttrpc::Events;
use berth_api::containerd::services::events::v1::Envelope;
use berth_api::ttrpc::RequestContext;
use tonic::Status;

use super::Exchange;
use crate::error::Error;

/// Serves `containerd.services.events.ttrpc.v1.Events` over an exchange.
#[derive(Debug)]
pub struct TtrpcForwarder {
    exchange: Arc<Exchange>,
}

impl TtrpcForwarder {
    /// Forwards into `exchange`.
    pub fn new(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }
}

impl Events for TtrpcForwarder {
    async fn forward(&self, _context: RequestContext, request: ForwardRequest) -> Result<(), Status> {
        let envelope = request
            .envelope
            .ok_or_else(|| Error::invalid_argument("forward: envelope must be set"))?;
        let event = envelope.event.map(|mut any| {
            any.type_url = type_name(&any.type_url).to_string();
            any
        });
        self.exchange.forward(Envelope {
            timestamp: envelope.timestamp,
            namespace: envelope.namespace,
            topic: envelope.topic,
            event,
        })?;
        Ok(())
    }
}
